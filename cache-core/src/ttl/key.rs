//! The pure storage-key decision of T-2 and T-7.
//!
//! Given the store's answer for a call key, [`choose_storage_key`] decides
//! which storage key the call uses and, for a fresh key, which write to make
//! after the call succeeded (T-3). It never touches a store, a clock or a
//! random source: same inputs, same output.

use sha2::{Digest, Sha256};

use super::{StoreError, TtlRow};

/// Tag of the fresh (persistable) session-scoped key construction.
const TAG_FRESH: &str = "ttl-fresh";
/// Tag of the degraded (store failed, never persisted) key construction.
const TAG_DEGRADED: &str = "ttl-degraded";

/// The compare-and-upsert to make after the call succeeded and its result is
/// safe to persist (T-3, T-4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedWrite {
    /// The call key the row is written under.
    pub call_key: String,
    /// The row to write: the fresh storage key and `now + ttl` (saturating).
    pub row: TtlRow,
    /// The compare value for [`TtlStore::compare_and_upsert`](super::TtlStore::compare_and_upsert):
    /// the previous (expired) row's storage key, or `None` when there was no row.
    pub compare: Option<String>,
}

/// Which storage key a TTL'd call uses (T-2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageKeyChoice {
    /// A live row: share its storage key across sessions.
    Live {
        /// The live row's storage key.
        storage_key: String,
    },
    /// No row, or an expired one: a fresh session-scoped key and the write to
    /// make after success (T-3).
    Fresh {
        /// The fresh, session-scoped storage key (equal to `write.row.storage_key`).
        storage_key: String,
        /// The write to make once the call succeeded and is safe to persist.
        write: PreparedWrite,
    },
    /// The store failed: a session-scoped key, nothing persisted (T-2 last
    /// bullet). The caller counts and logs `error`; it never fails the call.
    Degraded {
        /// The session-scoped storage key (never the bare call key).
        storage_key: String,
        /// What the store said.
        error: StoreError,
    },
}

impl StorageKeyChoice {
    /// The storage key the call uses, whichever the variant.
    pub fn storage_key(&self) -> &str {
        match self {
            StorageKeyChoice::Live { storage_key }
            | StorageKeyChoice::Fresh { storage_key, .. }
            | StorageKeyChoice::Degraded { storage_key, .. } => storage_key,
        }
    }
}

/// Choose the storage key for `call_key` in session `session_id` at time
/// `now` (ms since the epoch), for a key with TTL `ttl_ms`, given the store's
/// `answer` to [`TtlStore::select`](super::TtlStore::select).
///
/// - `Err(_)`: [`StorageKeyChoice::Degraded`] with a session-scoped key
///   (tag `ttl-degraded`), never the bare call key.
/// - `Ok(Some(row))` with `row.expiration >= now`: [`StorageKeyChoice::Live`].
/// - `Ok(None)`, or a row with `row.expiration < now`:
///   [`StorageKeyChoice::Fresh`] with key
///   `"sha256:" + hex(SHA-256(len-prefixed("ttl-fresh", call_key, session_id, ⌊now / ttl_ms⌋)))`:
///   different per session, stable within one TTL window of one session.
///   If that key equals the expired row's key (a backwards clock jump into
///   the same window, T-7), it is derived again mixing in the expired key and
///   a counter until it differs. The prepared write is
///   `(call_key → fresh key, now + ttl_ms)` (saturating) with the expired key
///   (or `None`) as compare value.
///
/// The caller only calls this for `ttl_ms > 0`; `0` is treated as `1` (no
/// panic, no division by zero).
pub fn choose_storage_key(
    call_key: &str,
    session_id: &str,
    now: i64,
    ttl_ms: u64,
    answer: Result<Option<TtlRow>, StoreError>,
) -> StorageKeyChoice {
    let ttl_ms = ttl_ms.max(1);
    let window = ttl_window(now, ttl_ms);
    match answer {
        Err(error) => StorageKeyChoice::Degraded {
            storage_key: derive_key(TAG_DEGRADED, call_key, session_id, window, None),
            error,
        },
        Ok(Some(row)) if row.expiration >= now => StorageKeyChoice::Live {
            storage_key: row.storage_key,
        },
        Ok(previous) => {
            let expired = previous.map(|row| row.storage_key);
            let mut storage_key = derive_key(TAG_FRESH, call_key, session_id, window, None);
            if let Some(expired) = expired.as_deref() {
                let mut round = 0u64;
                while storage_key == expired {
                    round = round.wrapping_add(1);
                    storage_key = derive_key(
                        TAG_FRESH,
                        call_key,
                        session_id,
                        window,
                        Some((expired, round)),
                    );
                }
            }
            let expiration = now.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
            StorageKeyChoice::Fresh {
                storage_key: storage_key.clone(),
                write: PreparedWrite {
                    call_key: call_key.to_owned(),
                    row: TtlRow {
                        storage_key,
                        expiration,
                    },
                    compare: expired,
                },
            }
        }
    }
}

/// `⌊now / ttl_ms⌋` (floor, also for negative `now`); `ttl_ms >= 1`.
fn ttl_window(now: i64, ttl_ms: u64) -> i64 {
    // In i128: `ttl_ms` may not fit an i64. |window| <= |now| because
    // ttl_ms >= 1, so the result always fits back: the cast is lossless
    // (a saturating fallback here would be code that can never run).
    let window = i128::from(now).div_euclid(i128::from(ttl_ms));
    window as i64
}

/// SHA-256 over a length-prefixed serialisation of the fields, as
/// `"sha256:" + hex`. Each field is its length as a big-endian `u64`
/// followed by its bytes, so no two field lists collide by concatenation.
fn derive_key(
    tag: &str,
    call_key: &str,
    session_id: &str,
    window: i64,
    avoid: Option<(&str, u64)>,
) -> String {
    fn field(hasher: &mut Sha256, bytes: &[u8]) {
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    let mut hasher = Sha256::new();
    field(&mut hasher, tag.as_bytes());
    field(&mut hasher, call_key.as_bytes());
    field(&mut hasher, session_id.as_bytes());
    field(&mut hasher, &window.to_be_bytes());
    if let Some((expired, round)) = avoid {
        field(&mut hasher, expired.as_bytes());
        field(&mut hasher, &round.to_be_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;
    const TTL: u64 = 60_000;

    fn fresh(choice: StorageKeyChoice) -> (String, PreparedWrite) {
        match choice {
            StorageKeyChoice::Fresh { storage_key, write } => (storage_key, write),
            other => panic!("expected Fresh, got {other:?}"),
        }
    }

    #[test]
    fn t2_no_row_is_fresh_with_no_compare() {
        let (key, write) = fresh(choose_storage_key("ck", "s1", NOW, TTL, Ok(None)));
        assert!(key.starts_with("sha256:"));
        assert_eq!(key.len(), "sha256:".len() + 64);
        assert_ne!(key, "ck");
        assert_eq!(
            write,
            PreparedWrite {
                call_key: "ck".into(),
                row: TtlRow {
                    storage_key: key,
                    expiration: NOW + TTL as i64,
                },
                compare: None,
            }
        );
    }

    #[test]
    fn t2_live_row_is_shared() {
        for expiration in [NOW, NOW + 1, i64::MAX] {
            let row = TtlRow {
                storage_key: "shared".into(),
                expiration,
            };
            let choice = choose_storage_key("ck", "s2", NOW, TTL, Ok(Some(row)));
            assert_eq!(
                choice,
                StorageKeyChoice::Live {
                    storage_key: "shared".into()
                }
            );
            assert_eq!(choice.storage_key(), "shared");
        }
    }

    #[test]
    fn t2_expired_row_is_fresh_with_old_key_as_compare() {
        for expiration in [NOW - 1, i64::MIN] {
            let row = TtlRow {
                storage_key: "old".into(),
                expiration,
            };
            let (key, write) = fresh(choose_storage_key("ck", "s1", NOW, TTL, Ok(Some(row))));
            assert_ne!(key, "old");
            assert_eq!(write.compare.as_deref(), Some("old"));
            assert_eq!(write.row.storage_key, key);
            assert_eq!(write.row.expiration, NOW + TTL as i64);
        }
    }

    #[test]
    fn t2_two_sessions_get_different_fresh_keys() {
        let (a, _) = fresh(choose_storage_key("ck", "s1", NOW, TTL, Ok(None)));
        let (b, _) = fresh(choose_storage_key("ck", "s2", NOW, TTL, Ok(None)));
        assert_ne!(a, b);
        // Concatenation-ambiguous inputs do not collide either.
        let (c, _) = fresh(choose_storage_key("ab", "c", NOW, TTL, Ok(None)));
        let (d, _) = fresh(choose_storage_key("a", "bc", NOW, TTL, Ok(None)));
        assert_ne!(c, d);
        // Different call keys, same session: different keys.
        let (e, _) = fresh(choose_storage_key("ck2", "s1", NOW, TTL, Ok(None)));
        assert_ne!(a, e);
    }

    #[test]
    fn t2_same_session_same_window_same_key() {
        let start = (NOW / TTL as i64) * TTL as i64;
        let (a, _) = fresh(choose_storage_key("ck", "s1", start, TTL, Ok(None)));
        let (b, _) = fresh(choose_storage_key(
            "ck",
            "s1",
            start + TTL as i64 - 1,
            TTL,
            Ok(None),
        ));
        assert_eq!(a, b);
        // Also stable when the store answers with the same expired row.
        let old = TtlRow {
            storage_key: "old".into(),
            expiration: start - 5,
        };
        let (c, _) = fresh(choose_storage_key(
            "ck",
            "s1",
            start + 3,
            TTL,
            Ok(Some(old.clone())),
        ));
        let (d, _) = fresh(choose_storage_key(
            "ck",
            "s1",
            start + 9,
            TTL,
            Ok(Some(old)),
        ));
        assert_eq!(c, d);
        assert_eq!(a, c);
    }

    #[test]
    fn t2_next_window_different_key() {
        let start = (NOW / TTL as i64) * TTL as i64;
        let (a, _) = fresh(choose_storage_key("ck", "s1", start, TTL, Ok(None)));
        let (b, _) = fresh(choose_storage_key(
            "ck",
            "s1",
            start + TTL as i64,
            TTL,
            Ok(None),
        ));
        assert_ne!(a, b);
        // Negative times floor correctly: -1 and 0 are different windows.
        let (c, _) = fresh(choose_storage_key("ck", "s1", -1, TTL, Ok(None)));
        let (d, _) = fresh(choose_storage_key("ck", "s1", 0, TTL, Ok(None)));
        let (e, _) = fresh(choose_storage_key("ck", "s1", -(TTL as i64), TTL, Ok(None)));
        assert_ne!(c, d);
        assert_eq!(c, e);
    }

    #[test]
    fn t2_store_error_is_degraded_and_session_scoped() {
        let err = StoreError::Unavailable("injected".into());
        let a = choose_storage_key("ck", "s1", NOW, TTL, Err(err.clone()));
        let b = choose_storage_key("ck", "s2", NOW, TTL, Err(err.clone()));
        let a_again = choose_storage_key("ck", "s1", NOW + 1, TTL, Err(err.clone()));
        let (ka, kb) = match (&a, &b) {
            (
                StorageKeyChoice::Degraded {
                    storage_key: ka,
                    error: ea,
                },
                StorageKeyChoice::Degraded {
                    storage_key: kb, ..
                },
            ) => {
                assert_eq!(ea, &err);
                (ka.clone(), kb.clone())
            }
            other => panic!("expected Degraded, got {other:?}"),
        };
        assert_ne!(ka, "ck");
        assert_ne!(kb, "ck");
        assert_ne!(ka, kb);
        assert_eq!(a_again.storage_key(), ka);
        // Never the key a healthy store would have handed out for persisting.
        let (fresh_key, _) = fresh(choose_storage_key("ck", "s1", NOW, TTL, Ok(None)));
        assert_ne!(ka, fresh_key);
    }

    #[test]
    fn t7_backwards_clock_never_reuses_expired_key() {
        // The session made key K in this window; the row says it has expired
        // (e.g. the clock jumped back into the same window after a TTL change).
        let (k, _) = fresh(choose_storage_key("ck", "s1", NOW, TTL, Ok(None)));
        let expired = TtlRow {
            storage_key: k.clone(),
            expiration: NOW - 1,
        };
        let (k2, write) = fresh(choose_storage_key(
            "ck",
            "s1",
            NOW,
            TTL,
            Ok(Some(expired.clone())),
        ));
        assert_ne!(k2, k);
        assert_eq!(write.compare.as_deref(), Some(k.as_str()));
        assert_eq!(write.row.storage_key, k2);
        // Deterministic: the same inputs give the same re-derived key.
        let (k3, _) = fresh(choose_storage_key("ck", "s1", NOW, TTL, Ok(Some(expired))));
        assert_eq!(k2, k3);
        // And walking the clock back repeatedly over a chain of expired keys
        // never hands out the expired one.
        let mut previous = k;
        for step in 0..20 {
            let now = NOW - step;
            let row = TtlRow {
                storage_key: previous.clone(),
                expiration: now - 1,
            };
            let (next, _) = fresh(choose_storage_key("ck", "s1", now, TTL, Ok(Some(row))));
            assert_ne!(next, previous);
            previous = next;
        }
    }

    #[test]
    fn t2_ttl_zero_does_not_panic() {
        let (a, write) = fresh(choose_storage_key("ck", "s1", NOW, 0, Ok(None)));
        assert_eq!(write.row.expiration, NOW + 1);
        let (b, _) = fresh(choose_storage_key("ck", "s1", NOW, 1, Ok(None)));
        assert_eq!(a, b);
        let _ = choose_storage_key("ck", "s1", i64::MIN, 0, Ok(None));
        let _ = choose_storage_key("ck", "s1", i64::MAX, 0, Err(StoreError::Sql("x".into())));
    }

    #[test]
    fn t2_extreme_times_and_ttls_saturate() {
        let (_, w) = fresh(choose_storage_key("ck", "s1", i64::MAX, TTL, Ok(None)));
        assert_eq!(w.row.expiration, i64::MAX);
        let (_, w) = fresh(choose_storage_key("ck", "s1", NOW, u64::MAX, Ok(None)));
        assert_eq!(w.row.expiration, i64::MAX);
        let (_, w) = fresh(choose_storage_key("ck", "s1", i64::MIN, u64::MAX, Ok(None)));
        assert_eq!(w.row.expiration, -1);
    }

    /// The window is the floor of now / ttl, for negative times and
    /// TTLs beyond i64 too, and never overflows.
    #[test]
    fn t2_the_window_is_the_floor_of_now_over_ttl() {
        for (now, ttl, window) in [
            (7, 2, 3),
            (-7, 2, -4),
            (-1, 1000, -1),
            (0, u64::MAX, 0),
            (-1, u64::MAX, -1),
            (i64::MAX, u64::MAX, 0),
            (i64::MIN, u64::MAX, -1),
            (i64::MAX, 1, i64::MAX),
            (i64::MIN, 1, i64::MIN),
        ] {
            assert_eq!(ttl_window(now, ttl), window, "{now} / {ttl}");
        }
    }
}
