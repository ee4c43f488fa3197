//! The remote tier and the event bus over turmoil TCP pass the same
//! contract suites as the in-memory and Redis ones (`run_remote`,
//! `run_bus`), and fail as errors, never hangs or panics, when the network
//! or the peer misbehaves.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cache_core::facade::ManualClock;
use cache_core::loader::contract::{run_bus, run_remote};
use cache_core::loader::{EventBus, MemoryRemote, Remote, RemoteError};
use sim::loader_net::bus::{serve_bus, Healthy, NetBus};
use sim::loader_net::frame::write_frame;
use sim::loader_net::remote::{serve_remote, NetRemote, REMOTE_PORT};

const T0: i64 = 1_704_067_200_000;

fn sim() -> turmoil::Sim<'static> {
    turmoil::Builder::new()
        .simulation_duration(Duration::from_secs(600))
        .build()
}

fn remote_host(sim: &mut turmoil::Sim<'_>, name: &str, backend: MemoryRemote) {
    sim.host(name, move || serve_remote(backend.clone(), |_, _| {}));
}

#[test]
fn net_remote_passes_the_remote_contract() {
    let mut sim = sim();
    let clock = ManualClock::new(T0);
    let n = cache_core::loader::contract::REMOTE_CHECKS.len();
    // One host per check: each check wants an empty remote.
    for i in 0..n {
        remote_host(
            &mut sim,
            &format!("remote{i}"),
            MemoryRemote::new(Arc::new(clock.clone())),
        );
    }
    let verdict = Arc::new(Mutex::new(None));
    let v = verdict.clone();
    sim.client("test", async move {
        let next = Mutex::new(0usize);
        let mut make = move || -> Box<dyn Remote> {
            let mut i = next.lock().unwrap();
            let r = NetRemote::new(&format!("remote{i}"), Duration::from_secs(1));
            *i += 1;
            Box::new(r)
        };
        let advance = move |ms: u64| -> sim::loader_net::BoxFuture<'static, ()> {
            clock.advance(ms as i64);
            Box::pin(async {})
        };
        *v.lock().unwrap() = Some(run_remote(&mut make, &advance).await);
        Ok(())
    });
    sim.run().unwrap();
    let got = verdict.lock().unwrap().take().expect("the suite ran");
    assert_eq!(got, Ok(()));
}

#[test]
fn net_bus_passes_the_bus_contract() {
    let mut sim = sim();
    sim.host("bus", || serve_bus(Arc::new(Healthy)));
    let verdict = Arc::new(Mutex::new(None));
    let v = verdict.clone();
    sim.client("test", async move {
        let bus = NetBus::new("bus", Duration::from_secs(1));
        let settle = |ms: u64| -> sim::loader_net::BoxFuture<'static, ()> {
            Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
        };
        *v.lock().unwrap() = Some(run_bus(&bus, &settle).await);
        Ok(())
    });
    sim.run().unwrap();
    let got = verdict.lock().unwrap().take().expect("the suite ran");
    assert_eq!(got, Ok(()));
}

#[test]
fn a_held_link_is_a_timeout_and_a_repaired_one_reconnects() {
    let mut sim = sim();
    let clock = ManualClock::new(T0);
    remote_host(&mut sim, "remote", MemoryRemote::new(Arc::new(clock)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    sim.client("test", async move {
        let r = NetRemote::new("remote", Duration::from_millis(500));
        let got = r.set("k", b"1".to_vec(), 60_000).await;
        s.lock().unwrap().push(got);
        turmoil::partition("test", "remote");
        let got = r.set("k", b"2".to_vec(), 60_000).await;
        s.lock().unwrap().push(got);
        turmoil::repair("test", "remote");
        let got = r.set("k", b"3".to_vec(), 60_000).await;
        s.lock().unwrap().push(got);
        let got = r.get("k").await;
        assert_eq!(got, Ok(Some(b"3".to_vec())));
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], Ok(()));
    assert!(
        matches!(seen[1], Err(RemoteError::Timeout { op: "set", .. })),
        "{:?}",
        seen[1]
    );
    assert_eq!(seen[2], Ok(()));
}

#[test]
fn a_malformed_reply_is_a_protocol_error() {
    let mut sim = sim();
    // A "remote" that answers every request with a frame that is no reply,
    // then one whose length prefix is absurd.
    sim.host("remote", || async {
        let l = turmoil::net::TcpListener::bind(("0.0.0.0", REMOTE_PORT)).await?;
        let mut n = 0;
        loop {
            let (mut s, _) = l.accept().await?;
            n += 1;
            let bad: &[u8] = if n == 1 { b"{\"nonsense\":1}" } else { b"" };
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let mut buf = [0u8; 4];
                let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
                if bad.is_empty() {
                    let _ = s.write_all(&u32::MAX.to_be_bytes()).await;
                } else {
                    let _ = write_frame(&mut s, bad).await;
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            });
        }
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    sim.client("test", async move {
        let r = NetRemote::new("remote", Duration::from_millis(500));
        let got = r.get("k").await;
        s.lock().unwrap().push(got);
        let got = r.get("k").await;
        s.lock().unwrap().push(got);
        Ok(())
    });
    sim.run().unwrap();
    let seen = seen.lock().unwrap();
    for got in seen.iter() {
        assert!(
            matches!(got, Err(RemoteError::Protocol { op: "get", .. })),
            "{got:?}"
        );
    }
    assert_eq!(seen.len(), 2);
}

#[test]
fn a_lost_subscription_reconnects_and_resyncs() {
    let mut sim = sim();
    sim.host("bus", || serve_bus(Arc::new(Healthy)));
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    sim.client("node", async move {
        let bus = NetBus::new("bus", Duration::from_millis(500));
        let mut rx = bus.subscribe("node");
        bus.ready().await;
        turmoil::partition("node", "bus");
        tokio::time::sleep(Duration::from_secs(2)).await;
        turmoil::repair("node", "bus");
        tokio::time::sleep(Duration::from_secs(2)).await;
        while let Ok(e) = rx.try_recv() {
            g.lock().unwrap().push(e.is_resync());
        }
        assert!(
            bus.stats()
                .resyncs
                .load(std::sync::atomic::Ordering::SeqCst)
                >= 1
        );
        Ok(())
    });
    sim.run().unwrap();
    let got = got.lock().unwrap();
    assert!(
        got.contains(&true),
        "no resync marker after the lost connection: {got:?}"
    );
}
