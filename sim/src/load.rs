//! `cache-sim load`: real clients running a scenario's plans against a real
//! engine (`cache-sim serve`), then the metrics-first leak triage.
//!
//! Each client task runs rounds: round `r` runs the plan of scenario `S`
//! and seed `seed + r`, as plan client `i mod n` (HELLO names the scenario
//! and seed, so the engine generates the same plan; see
//! [`crate::protocol`]). The client host's code is the simulation's
//! ([`crate::client::run_ops`]) on tokio sockets. The faults that exist for
//! real: cancellations and reconnects (as the plan says), abrupt
//! disconnects (a seeded coin per check, and every client still in a round
//! when `--duration` ends is cut off). Plan times are real ms.
//!
//! Then the triage (O-1, O-3): scrape `/metrics` until
//! `dagger_connected_clients` is 0, then require every
//! `dagger_dagql_cache_*entries` gauge to reach 0 within the drain bound;
//! otherwise name the leak class from the buckets (exit 1).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cache_core::machine::LeakClass;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::client::{run_ops, ClientHost};
use crate::plan::Plan;
use crate::protocol::Request;
use crate::rng::Rng;
use crate::scenario::Scenario;
use crate::transport::TcpConnector;

/// What `cache-sim load` was asked for.
#[derive(Clone, Debug)]
pub struct LoadArgs {
    /// `--connect`: the engine's address.
    pub connect: String,
    /// `--metrics-url`: `http://HOST:PORT/metrics`.
    pub metrics_url: String,
    /// `--clients`: concurrent client tasks.
    pub clients: usize,
    /// `--duration`: how long clients start new rounds (`5s`, `800ms`).
    pub duration: String,
    /// `--scenario`: a named scenario.
    pub scenario: String,
    /// `--seed`: the first round's seed.
    pub seed: u64,
    /// `--drain`: how long the gauges get to reach 0 after the last client.
    pub drain: String,
    /// `--disconnect-rate`: chance per check that a client drops its
    /// connection abruptly.
    pub disconnect_rate: f64,
}

/// How `load` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoadVerdict {
    /// Every gauge reached 0.
    Clean,
    /// Some gauge stayed up: the leak classes named from the buckets.
    Leak(Vec<String>),
}

/// Parses `5s`, `800ms`, `2m` or a bare number of seconds.
pub fn parse_duration(flag: &str, s: &str) -> Result<Duration, String> {
    let bad = || format!("bad {flag} {s:?}: expected a duration like 5s, 800ms or 2m");
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(bad()),
    }
}

/// A parsed `http://HOST:PORT/PATH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsUrl {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `HOST:PORT` as written (the Host header).
    pub host: String,
    /// The path, `/` at least.
    pub path: String,
}

impl MetricsUrl {
    /// Parses `--metrics-url` (plain `http`, a numeric address).
    pub fn parse(s: &str) -> Result<MetricsUrl, String> {
        let bad = |why: &str| format!("bad --metrics-url {s:?}: {why}");
        let rest = s
            .strip_prefix("http://")
            .ok_or_else(|| bad("must start with http://"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        let addr = host
            .parse()
            .map_err(|e| bad(&format!("{e} (expected http://IP:PORT/metrics)")))?;
        Ok(MetricsUrl {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

/// One GET over HTTP/1.1 (`Connection: close`): the body of a 200 answer.
pub async fn http_get(url: &MetricsUrl) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(url.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", url.addr))?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        url.path, url.host
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {}: {e}", url.addr))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("cannot read from {}: {e}", url.addr))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("GET {}: {status}", url.path));
    }
    if head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"))
    {
        return Err("chunked answers are not supported".into());
    }
    Ok(body.to_string())
}

/// The gauges of a Prometheus text exposition (name → value; labels are
/// not used by O-1's gauges).
pub fn gauges(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// The O-3 leak classes the entry gauges point at.
pub fn leak_classes(g: &BTreeMap<String, f64>) -> Vec<String> {
    let v = |n: &str| g.get(n).copied().unwrap_or(0.0);
    let mut classes = Vec::new();
    let completed = v("dagger_dagql_cache_completed_calls_entries")
        + v("dagger_dagql_cache_completed_calls_by_content_entries");
    if completed > 0.0 {
        classes.push(LeakClass::CompletedRefs);
    }
    if v("dagger_dagql_cache_ongoing_calls_entries") > 0.0 {
        classes.push(LeakClass::StuckInFlight);
    }
    if v("dagger_dagql_cache_ongoing_arbitrary_entries")
        + v("dagger_dagql_cache_completed_arbitrary_entries")
        > 0.0
    {
        classes.push(LeakClass::Arbitrary);
    }
    if classes.is_empty() && v("dagger_dagql_cache_entries") > 0.0 {
        classes.push(LeakClass::Unindexed);
    }
    classes.iter().map(|c| c.to_string()).collect()
}

/// The entry gauges (O-1) not at 0.
fn entries_up(g: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    g.iter()
        .filter(|(n, v)| {
            n.starts_with("dagger_dagql_cache_") && n.ends_with("entries") && **v != 0.0
        })
        .map(|(n, v)| (n.clone(), *v))
        .collect()
}

/// The real clients' host: real sockets, counters, a seeded coin for
/// abrupt disconnects.
#[derive(Clone)]
struct LoadHost {
    connector: TcpConnector,
    scenario: String,
    seed: u64,
    shared: Arc<Shared>,
    coin: Arc<Mutex<Rng>>,
}

struct Shared {
    counters: Mutex<BTreeMap<String, u64>>,
    disconnect_rate: f64,
    verbose: AtomicBool,
}

impl ClientHost for LoadHost {
    type Connector = TcpConnector;
    fn connector(&self) -> &TcpConnector {
        &self.connector
    }
    fn hello(&self, c: usize) -> Request {
        Request::Hello(c, Some((self.scenario.clone(), self.seed)))
    }
    fn trace(&self, who: &str, what: impl AsRef<str>) {
        if self.shared.verbose.load(Ordering::Relaxed) {
            eprintln!("{who:<8} seed {} {}", self.seed, what.as_ref());
        }
    }
    fn count(&self, what: &str) {
        let mut c = self
            .shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *c.entry(what.to_string()).or_default() += 1;
    }
    fn take_drop_flag(&self, _c: usize) -> bool {
        let drop = self
            .coin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .chance(self.shared.disconnect_rate);
        if drop {
            self.count("abrupt-disconnects");
        }
        drop
    }
    fn note_sent(&self) {
        self.count("requests");
    }
}

/// Runs the load and the triage. `Err` is a usage or connection error
/// (exit 2); a leak is `Ok(LoadVerdict::Leak)` (exit 1).
pub fn load(args: &LoadArgs) -> Result<LoadVerdict, String> {
    let connect: SocketAddr = args
        .connect
        .parse()
        .map_err(|e| format!("bad --connect {:?}: {e} (expected IP:PORT)", args.connect))?;
    let url = MetricsUrl::parse(&args.metrics_url)?;
    if args.clients == 0 || args.clients > 1024 {
        return Err(format!(
            "bad --clients {}: must be in 1..=1024",
            args.clients
        ));
    }
    if !(0.0..=1.0).contains(&args.disconnect_rate) {
        return Err(format!(
            "bad --disconnect-rate {}: must be in 0..=1",
            args.disconnect_rate
        ));
    }
    let duration = parse_duration("--duration", &args.duration)?;
    let drain = parse_duration("--drain", &args.drain)?;
    let scenario = Scenario::named(&args.scenario).map_err(|e| format!("bad --scenario: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        // Fail early and clearly when nothing listens.
        tokio::net::TcpStream::connect(connect)
            .await
            .map_err(|e| format!("cannot connect to --connect {connect}: {e}"))?;
        http_get(&url).await?;
        let shared = Arc::new(Shared {
            counters: Mutex::new(BTreeMap::new()),
            disconnect_rate: args.disconnect_rate,
            verbose: AtomicBool::new(std::env::var_os("CACHE_SIM_LOAD_VERBOSE").is_some()),
        });
        let start = Instant::now();
        let deadline = start + duration;
        let mut tasks = Vec::new();
        for i in 0..args.clients {
            let (shared, scenario) = (shared.clone(), scenario.clone());
            let base = args.seed;
            tasks.push(tokio::spawn(async move {
                let coin = Arc::new(Mutex::new(Rng::new(base.wrapping_add(i as u64), "load")));
                let mut round = 0u64;
                while Instant::now() < deadline {
                    let seed = base.wrapping_add(round);
                    let plan = Plan::generate(seed, &scenario);
                    let c = i % plan.clients.len();
                    let host = LoadHost {
                        connector: TcpConnector(connect),
                        scenario: scenario.name.clone(),
                        seed,
                        shared: shared.clone(),
                        coin: coin.clone(),
                    };
                    let ops = plan.clients[c].clone();
                    // Cut off at the deadline: dropping the round drops its
                    // socket, an abrupt disconnect the engine must clean up
                    // after (S-6).
                    let left = deadline.saturating_duration_since(Instant::now());
                    if tokio::time::timeout(left, run_ops(host.clone(), c, ops, 0))
                        .await
                        .is_err()
                    {
                        host.count("cut-at-deadline");
                    } else {
                        host.count("rounds");
                    }
                    round += 1;
                }
            }));
        }
        for t in tasks {
            t.await.map_err(|e| format!("a client task failed: {e}"))?;
        }
        let counters = shared
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let list: Vec<String> = counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "load: {} clients for {:.1}s: {}",
            args.clients,
            start.elapsed().as_secs_f64(),
            list.join(" ")
        );
        triage(&url, drain).await
    })
}

/// Metrics first: wait for `dagger_connected_clients` to reach 0, then
/// for every entry gauge; name the leak class if one stays up.
pub async fn triage(url: &MetricsUrl, drain: Duration) -> Result<LoadVerdict, String> {
    let until = Instant::now() + drain;
    let mut g;
    loop {
        g = gauges(&http_get(url).await?);
        let clients = g.get("dagger_connected_clients").copied();
        if clients.is_none() {
            return Err(format!(
                "{} has no dagger_connected_clients gauge (O-1)",
                url.path
            ));
        }
        if clients == Some(0.0) {
            break;
        }
        if Instant::now() >= until {
            println!(
                "triage: dagger_connected_clients still {} after {:?}: sessions not closed (S-6)",
                clients.unwrap_or_default(),
                drain
            );
            return Ok(LoadVerdict::Leak(vec!["sessions not closed".into()]));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("triage: dagger_connected_clients 0");
    loop {
        let up = entries_up(&g);
        if up.is_empty() {
            println!("triage: every dagger_dagql_cache_*entries gauge is 0: no leak");
            return Ok(LoadVerdict::Clean);
        }
        if Instant::now() >= until {
            let classes = leak_classes(&g);
            println!("triage: LEAK after {drain:?} with no client connected:");
            for (n, v) in &up {
                println!("  {n} {v}");
            }
            for c in &classes {
                println!("  leak class: {c}");
            }
            return Ok(LoadVerdict::Leak(classes));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        g = gauges(&http_get(url).await?);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_urls_parse_or_name_the_flag() {
        assert_eq!(
            parse_duration("--duration", "3s"),
            Ok(Duration::from_secs(3))
        );
        assert_eq!(
            parse_duration("--duration", "250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            parse_duration("--duration", "2"),
            Ok(Duration::from_secs(2))
        );
        assert!(parse_duration("--duration", "3h")
            .unwrap_err()
            .contains("--duration"));
        let u = MetricsUrl::parse("http://127.0.0.1:9/metrics").unwrap();
        assert_eq!(
            (u.host.as_str(), u.path.as_str()),
            ("127.0.0.1:9", "/metrics")
        );
        assert!(MetricsUrl::parse("https://x/metrics")
            .unwrap_err()
            .contains("--metrics-url"));
    }

    #[test]
    fn leak_classes_follow_the_buckets() {
        let g = gauges(
            "# TYPE x gauge\ndagger_dagql_cache_entries 2\n\
             dagger_dagql_cache_completed_calls_entries 1\n\
             dagger_dagql_cache_ongoing_calls_entries 1\n",
        );
        assert_eq!(
            leak_classes(&g),
            vec![
                LeakClass::CompletedRefs.to_string(),
                LeakClass::StuckInFlight.to_string()
            ]
        );
        assert_eq!(entries_up(&g).len(), 3);
        assert!(leak_classes(&gauges("dagger_dagql_cache_entries 0\n")).is_empty());
    }
}
