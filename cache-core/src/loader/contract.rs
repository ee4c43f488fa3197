//! The contract suites every [`Remote`] and every [`EventBus`] must pass,
//! written once against the traits so the in-memory ones, a Redis remote
//! with pub/sub and a simulated remote host run the very same checks.
//!
//! Each check expects an **empty, healthy** backend and returns a
//! [`ContractViolation`] naming the check instead of panicking. Time is
//! moved by the caller's `advance` (a manual clock for the in-memory
//! remote; a real sleep against Redis), so TTL checks work for both.

use std::fmt;

use futures::future::BoxFuture;

use super::bus::{Event, EventBus, EventKind};
use super::remote::Remote;

/// A backend broke its contract: which check, and what it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractViolation {
    /// The failed check's name.
    pub check: &'static str,
    /// What went wrong.
    pub detail: String,
}

impl fmt::Display for ContractViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loader backend contract violated in {}: {}",
            self.check, self.detail
        )
    }
}

impl std::error::Error for ContractViolation {}

/// The outcome of one check.
pub type ContractResult = Result<(), ContractViolation>;

/// Moves the backend's time on by so many milliseconds.
pub type Advance<'a> = &'a (dyn Fn(u64) -> BoxFuture<'static, ()> + Sync);

fn fail(check: &'static str, detail: impl Into<String>) -> ContractViolation {
    ContractViolation {
        check,
        detail: detail.into(),
    }
}

fn expect<T: PartialEq + fmt::Debug>(
    check: &'static str,
    what: &str,
    got: T,
    want: T,
) -> ContractResult {
    if got == want {
        Ok(())
    } else {
        Err(fail(check, format!("{what}: got {got:?}, want {want:?}")))
    }
}

macro_rules! ok {
    ($check:expr, $e:expr) => {
        $e.map_err(|e| fail($check, format!("unexpected error: {e}")))?
    };
}

/// Every remote check, by name.
pub const REMOTE_CHECKS: &[&str] = &[
    "get_missing_is_none",
    "set_then_get_roundtrips_bytes",
    "set_overwrites",
    "set_if_absent_writes_only_when_absent",
    "set_if_present_writes_only_when_present",
    "delete_removes_and_reports",
    "multi_get_keeps_order",
    "multi_set_writes_each_with_its_ttl",
    "ttl_expires",
    "lock_is_exclusive_until_its_ttl",
];

/// Runs the remote check `name` on `remote` (empty, healthy).
pub async fn remote_check(name: &str, remote: &dyn Remote, advance: Advance<'_>) -> ContractResult {
    const HOUR: u64 = 3_600_000;
    match name {
        "get_missing_is_none" => {
            let c = "get_missing_is_none";
            expect(
                c,
                "get of a missing key",
                ok!(c, remote.get("k").await),
                None,
            )
        }
        "set_then_get_roundtrips_bytes" => {
            let c = "set_then_get_roundtrips_bytes";
            for (k, v) in [
                ("a", vec![]),
                ("b", vec![0u8, 255, 10, 13]),
                ("ü", b"x".to_vec()),
            ] {
                ok!(c, remote.set(k, v.clone(), HOUR).await);
                expect(c, k, ok!(c, remote.get(k).await), Some(v))?;
            }
            Ok(())
        }
        "set_overwrites" => {
            let c = "set_overwrites";
            ok!(c, remote.set("k", b"1".to_vec(), HOUR).await);
            ok!(c, remote.set("k", b"2".to_vec(), HOUR).await);
            expect(
                c,
                "after two sets",
                ok!(c, remote.get("k").await),
                Some(b"2".to_vec()),
            )
        }
        "set_if_absent_writes_only_when_absent" => {
            let c = "set_if_absent_writes_only_when_absent";
            expect(
                c,
                "first NX",
                ok!(c, remote.set_if_absent("k", b"1".to_vec(), HOUR).await),
                true,
            )?;
            expect(
                c,
                "second NX",
                ok!(c, remote.set_if_absent("k", b"2".to_vec(), HOUR).await),
                false,
            )?;
            expect(
                c,
                "value",
                ok!(c, remote.get("k").await),
                Some(b"1".to_vec()),
            )
        }
        "set_if_present_writes_only_when_present" => {
            let c = "set_if_present_writes_only_when_present";
            expect(
                c,
                "XX on absent",
                ok!(c, remote.set_if_present("k", b"1".to_vec(), HOUR).await),
                false,
            )?;
            expect(
                c,
                "absent stays absent",
                ok!(c, remote.get("k").await),
                None,
            )?;
            ok!(c, remote.set("k", b"1".to_vec(), HOUR).await);
            expect(
                c,
                "XX on present",
                ok!(c, remote.set_if_present("k", b"2".to_vec(), HOUR).await),
                true,
            )?;
            expect(
                c,
                "value",
                ok!(c, remote.get("k").await),
                Some(b"2".to_vec()),
            )
        }
        "delete_removes_and_reports" => {
            let c = "delete_removes_and_reports";
            ok!(c, remote.set("k", b"1".to_vec(), HOUR).await);
            expect(c, "delete present", ok!(c, remote.delete("k").await), true)?;
            expect(c, "delete absent", ok!(c, remote.delete("k").await), false)?;
            expect(c, "after delete", ok!(c, remote.get("k").await), None)
        }
        "multi_get_keeps_order" => {
            let c = "multi_get_keeps_order";
            ok!(c, remote.set("b", b"B".to_vec(), HOUR).await);
            ok!(c, remote.set("a", b"A".to_vec(), HOUR).await);
            let keys = ["b", "x", "a", "b"];
            expect(
                c,
                "multi_get [b, x, a, b]",
                ok!(c, remote.multi_get(&keys).await),
                vec![
                    Some(b"B".to_vec()),
                    None,
                    Some(b"A".to_vec()),
                    Some(b"B".to_vec()),
                ],
            )
        }
        "multi_set_writes_each_with_its_ttl" => {
            let c = "multi_set_writes_each_with_its_ttl";
            ok!(
                c,
                remote
                    .multi_set(vec![
                        ("a".into(), b"A".to_vec(), 1_000),
                        ("b".into(), b"B".to_vec(), HOUR)
                    ])
                    .await
            );
            expect(c, "a", ok!(c, remote.get("a").await), Some(b"A".to_vec()))?;
            advance(1_500).await;
            expect(c, "a after its ttl", ok!(c, remote.get("a").await), None)?;
            expect(
                c,
                "b within its ttl",
                ok!(c, remote.get("b").await),
                Some(b"B".to_vec()),
            )
        }
        "ttl_expires" => {
            let c = "ttl_expires";
            ok!(c, remote.set("k", b"1".to_vec(), 1_000).await);
            advance(500).await;
            expect(
                c,
                "within ttl",
                ok!(c, remote.get("k").await),
                Some(b"1".to_vec()),
            )?;
            advance(1_000).await;
            expect(c, "past ttl", ok!(c, remote.get("k").await), None)?;
            expect(
                c,
                "NX past ttl",
                ok!(c, remote.set_if_absent("k", b"2".to_vec(), HOUR).await),
                true,
            )
        }
        "lock_is_exclusive_until_its_ttl" => {
            let c = "lock_is_exclusive_until_its_ttl";
            expect(
                c,
                "first lock",
                ok!(c, remote.lock("l", "n1", 1_000).await),
                true,
            )?;
            expect(
                c,
                "second lock, other owner",
                ok!(c, remote.lock("l", "n2", 1_000).await),
                false,
            )?;
            expect(
                c,
                "second lock, same owner",
                ok!(c, remote.lock("l", "n1", 1_000).await),
                false,
            )?;
            advance(1_500).await;
            expect(
                c,
                "lock after its ttl",
                ok!(c, remote.lock("l", "n2", 1_000).await),
                true,
            )
        }
        other => Err(fail("remote_check", format!("no check named {other:?}"))),
    }
}

/// Runs every remote check, each on a new empty remote from `make_empty`,
/// stopping at the first violation.
pub async fn run_remote(
    make_empty: &mut (dyn FnMut() -> Box<dyn Remote> + Send),
    advance: Advance<'_>,
) -> ContractResult {
    for name in REMOTE_CHECKS {
        let remote = make_empty();
        remote_check(name, remote.as_ref(), advance).await?;
    }
    Ok(())
}

/// Runs every bus check on a healthy `bus` (no other subscribers): each
/// published event reaches every subscriber, its source's own included,
/// with its fields intact. `settle` lets delayed deliveries land.
pub async fn run_bus(bus: &dyn EventBus, settle: Advance<'_>) -> ContractResult {
    let c = "publish_reaches_every_subscriber_intact";
    let mut a = bus.subscribe("a");
    let mut b = bus.subscribe("b");
    let event = Event {
        source: "a".into(),
        kind: EventKind::Batch,
        keys: vec!["1:c1:x".into(), "1:c1:y".into()],
    };
    ok!(c, bus.publish(event.clone()).await);
    settle(1_000).await;
    for (name, rx) in [("a (the source)", &mut a), ("b", &mut b)] {
        match rx.try_recv() {
            Ok(got) => expect(c, name, got, event.clone())?,
            Err(e) => return Err(fail(c, format!("subscriber {name} got nothing: {e}"))),
        }
        if let Ok(extra) = rx.try_recv() {
            return Err(fail(
                c,
                format!("subscriber {name} got a second event {extra:?}"),
            ));
        }
    }
    let c = "events_arrive_in_publish_order_without_faults";
    for i in 0..3 {
        let e = Event {
            source: "b".into(),
            kind: EventKind::Set,
            keys: vec![format!("k{i}")],
        };
        ok!(c, bus.publish(e).await);
    }
    settle(1_000).await;
    for i in 0..3 {
        match a.try_recv() {
            Ok(got) => expect(c, "key", got.keys, vec![format!("k{i}")])?,
            Err(e) => return Err(fail(c, format!("event {i} missing: {e}"))),
        }
    }
    Ok(())
}
