//! What the cache writes to its TTL store, judged row by row (T-2, T-4,
//! T-7): a row's expiry is never past the highest clock reading the cache
//! has seen plus the key's TTL (a window the cache has not reached), and a
//! row that replaces another expires later than it (a mapping is replaced
//! only once expired, so expiries never move backwards).
//!
//! Which result a row belongs to (T-3) needs the harness's own model of
//! results and is judged there.

use std::collections::BTreeMap;

use crate::ttl::{StoreError, TtlRow};

/// One row the store accepted.
#[derive(Clone, Copy, Debug)]
pub struct RowWrite<'a> {
    /// The call key the row is under.
    pub call_key: &'a str,
    /// How the harness names the key in messages (`k3`).
    pub label: &'a str,
    /// The storage key the row maps it to.
    pub storage_key: &'a str,
    /// The row's expiry.
    pub expiration: i64,
    /// The storage key it replaced (`None`: a new row).
    pub compare: Option<&'a str>,
    /// The key's TTL, ms.
    pub ttl_ms: i64,
    /// The highest clock reading the cache had seen when it wrote.
    pub high_water: i64,
}

/// One violation: the rule and what was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowViolation {
    /// The rule broken (`T-2` or `T-4`).
    pub rule: &'static str,
    /// What was seen.
    pub detail: String,
}

/// The row judge: remembers every row written.
#[derive(Debug, Default)]
pub struct RowCheck {
    rows: BTreeMap<(String, String), i64>,
}

impl RowCheck {
    /// A judge that has seen no row.
    pub fn new() -> Self {
        Self::default()
    }

    /// The expiry of the last row written under `call_key` mapping to
    /// `storage_key`, if any.
    pub fn expiry(&self, call_key: &str, storage_key: &str) -> Option<i64> {
        self.rows
            .get(&(call_key.to_string(), storage_key.to_string()))
            .copied()
    }

    /// The store accepted `w`.
    pub fn written(&mut self, w: RowWrite<'_>) -> Result<(), RowViolation> {
        let replaced = w
            .compare
            .and_then(|c| self.rows.get(&(w.call_key.to_string(), c.to_string())))
            .copied();
        self.rows.insert(
            (w.call_key.to_string(), w.storage_key.to_string()),
            w.expiration,
        );
        let bound = w.high_water.saturating_add(w.ttl_ms);
        if w.expiration > bound {
            return Err(RowViolation {
                rule: "T-2",
                detail: format!(
                    "{}'s TTL row expires at {}, past the highest clock reading {} plus its TTL {}",
                    w.label, w.expiration, w.high_water, w.ttl_ms
                ),
            });
        }
        if let Some(old) = replaced.filter(|&old| w.expiration <= old) {
            return Err(RowViolation {
                rule: "T-4",
                detail: format!(
                    "{}'s TTL row was replaced by one expiring at {}, not after the replaced row's {old}",
                    w.label, w.expiration
                ),
            });
        }
        Ok(())
    }
}

/// T-5: what one GC of the cache did to its store's rows, judged from the
/// rows before and after it (sorted by call key, as the stores list them)
/// and the time it judged by (`now`, the highest clock reading the cache
/// had seen). It never deletes a live row (`expiration >= now`) nor
/// changes one, failed or not; when it answers `Ok(n)`, no expired row is
/// left and `n` rows were deleted.
pub fn check_gc(
    before: &[(String, TtlRow)],
    after: &[(String, TtlRow)],
    now: i64,
    answer: Result<usize, &StoreError>,
) -> Result<(), RowViolation> {
    let fail = |detail: String| {
        Err(RowViolation {
            rule: "T-5",
            detail,
        })
    };
    let kept: BTreeMap<&str, &TtlRow> = after.iter().map(|(k, r)| (k.as_str(), r)).collect();
    for (key, row) in before.iter().filter(|(_, r)| r.expiration >= now) {
        if kept.get(key.as_str()) != Some(&row) {
            return fail(format!(
                "the GC at {now} removed or changed the live row of {key} (expires at {}): {:?}",
                row.expiration,
                kept.get(key.as_str())
            ));
        }
    }
    let Ok(deleted) = answer else {
        return Ok(());
    };
    if let Some((key, row)) = after.iter().find(|(_, r)| r.expiration < now) {
        return fail(format!(
            "the GC at {now} answered Ok({deleted}) but left {key}'s row, expired at {}",
            row.expiration
        ));
    }
    let gone = before.len().saturating_sub(after.len());
    if deleted != gone {
        return fail(format!(
            "the GC at {now} answered Ok({deleted}) but {gone} rows went"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(storage_key: &'a str, expiration: i64, compare: Option<&'a str>) -> RowWrite<'a> {
        RowWrite {
            call_key: "c",
            label: "k0",
            storage_key,
            expiration,
            compare,
            ttl_ms: 100,
            high_water: 1_000,
        }
    }

    #[test]
    fn t4_rows_move_forward() {
        let mut c = RowCheck::new();
        c.written(row("s1", 1_050, None)).unwrap();
        c.written(row("s2", 1_100, Some("s1"))).unwrap();
        assert_eq!(c.expiry("c", "s2"), Some(1_100));
        let back = c.written(row("s3", 1_100, Some("s2"))).unwrap_err();
        assert_eq!(back.rule, "T-4");
    }

    #[test]
    fn t2_no_row_past_the_window_reached() {
        let mut c = RowCheck::new();
        assert_eq!(c.written(row("s1", 1_101, None)).unwrap_err().rule, "T-2");
    }

    fn rows(expirations: &[(&str, i64)]) -> Vec<(String, TtlRow)> {
        expirations
            .iter()
            .map(|&(k, expiration)| {
                let row = TtlRow {
                    storage_key: format!("s-{k}"),
                    expiration,
                };
                (k.to_string(), row)
            })
            .collect()
    }

    #[test]
    fn t5_gc_deletes_every_expired_row_and_no_live_one() {
        let before = rows(&[("a", 900), ("b", 1_000), ("c", 1_100)]);
        let right = rows(&[("b", 1_000), ("c", 1_100)]);
        check_gc(&before, &right, 1_000, Ok(1)).unwrap();
        // A failed GC may have deleted some expired rows, or none.
        let failed = StoreError::Unavailable("injected".into());
        check_gc(&before, &before, 1_000, Err(&failed)).unwrap();
        // Planted: a live row gone (its expiry is exactly now: still live),
        // an expired row left behind, a miscount.
        let v = check_gc(&before, &rows(&[("c", 1_100)]), 1_000, Ok(2)).unwrap_err();
        assert!(v.detail.contains("live row of b"), "{v:?}");
        let v = check_gc(&before, &rows(&[("c", 1_100)]), 1_000, Err(&failed)).unwrap_err();
        assert_eq!(v.rule, "T-5");
        let v = check_gc(&before, &before, 1_000, Ok(0)).unwrap_err();
        assert!(v.detail.contains("left a's row"), "{v:?}");
        let v = check_gc(&before, &right, 1_000, Ok(0)).unwrap_err();
        assert!(v.detail.contains("1 rows went"), "{v:?}");
    }
}
