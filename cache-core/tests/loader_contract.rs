//! The loader's backend contract suites (`cache_core::loader::contract`)
//! run against the in-memory remote and bus; the next phase runs the very
//! same suites against Redis.

use std::sync::Arc;

use cache_core::facade::ManualClock;
use cache_core::loader::contract::{remote_check, run_bus, run_remote, REMOTE_CHECKS};
use cache_core::loader::{MemoryBus, MemoryRemote, Remote};

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn memory_remote_passes_the_remote_contract() {
    let clock = ManualClock::new(1_000);
    let advance = {
        let clock = clock.clone();
        move |ms: u64| -> futures::future::BoxFuture<'static, ()> {
            clock.advance(ms as i64);
            Box::pin(async {})
        }
    };
    let mut make = {
        let clock = clock.clone();
        move || -> Box<dyn Remote> { Box::new(MemoryRemote::new(Arc::new(clock.clone()))) }
    };
    run_remote(&mut make, &advance).await.unwrap();
}

/// The suite can fail: a remote that forgets what it was told breaks it.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_remote_contract_catches_a_remote_that_ignores_ttls() {
    let clock = ManualClock::new(1_000);
    let frozen = ManualClock::new(1_000); // the remote's clock never moves
    let advance = {
        let clock = clock.clone();
        move |ms: u64| -> futures::future::BoxFuture<'static, ()> {
            clock.advance(ms as i64);
            Box::pin(async {})
        }
    };
    let remote = MemoryRemote::new(Arc::new(frozen));
    let got = remote_check("ttl_expires", &remote, &advance)
        .await
        .unwrap_err();
    assert_eq!(got.check, "ttl_expires");
    assert!(REMOTE_CHECKS.contains(&"lock_is_exclusive_until_its_ttl"));
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn memory_bus_passes_the_bus_contract() {
    let bus = MemoryBus::new(42);
    let settle = |ms: u64| -> futures::future::BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    };
    run_bus(&bus, &settle).await.unwrap();
    let s = bus.stats();
    assert_eq!(
        (s.published, s.copies, s.delivered, s.dropped),
        (4, 8, 8, 0)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn the_bus_contract_catches_a_lossy_bus() {
    let bus = MemoryBus::new(42);
    bus.set_faults(cache_core::loader::BusFaults {
        drop_per_mille: 1000,
        ..Default::default()
    });
    let settle = |ms: u64| -> futures::future::BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(std::time::Duration::from_millis(ms)))
    };
    let got = run_bus(&bus, &settle).await.unwrap_err();
    assert_eq!(got.check, "publish_reaches_every_subscriber_intact");
    let s = bus.stats();
    assert_eq!(
        s.copies,
        s.delivered + s.dropped + s.in_flight,
        "L-11 conservation"
    );
}
