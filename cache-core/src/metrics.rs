//! Metrics of one engine, exported in Prometheus text format (O-1).
//!
//! The seven O-1 gauges keep the `dagger_` names so that dashboards built for
//! the original engine keep working: connected clients (S-6), the C-15
//! `entries()` total and one gauge per C-15 bucket. Three counters record
//! absorbed faults: TTL store failures (T-2), lost TTL writes (T-4) and
//! release hook errors (C-12).
//!
//! ```
//! use cache_core::machine::Buckets;
//! use cache_core::metrics::Metrics;
//!
//! let metrics = Metrics::new();
//! let buckets = Buckets {
//!     ongoing_calls: 1,
//!     completed_calls: 2,
//!     ..Buckets::default()
//! };
//! metrics.observe(&buckets, 3);
//! metrics.ttl_write_lost();
//!
//! let text = metrics.encode();
//! assert!(text.contains("dagger_dagql_cache_entries 3\n"));
//! assert!(text.contains("dagger_connected_clients 3\n"));
//! assert_eq!(metrics.ttl_writes_lost(), 1);
//! ```

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::machine::Buckets;

/// A gauge holding a count.
type CountGauge = Gauge<i64, AtomicI64>;
/// A monotonic event counter.
type EventCounter = Counter<u64, AtomicU64>;

/// Metrics of one engine, in Prometheus text format (O-1).
///
/// Gauges and counters share their value with the registry, so updating them
/// through `&self` is reflected in the next [`Metrics::encode`]. The registry
/// keeps registration order, so the encoding is deterministic.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    connected_clients: CountGauge,
    entries: CountGauge,
    ongoing_calls: CountGauge,
    completed_calls: CountGauge,
    completed_calls_by_content: CountGauge,
    ongoing_arbitrary: CountGauge,
    completed_arbitrary: CountGauge,
    ttl_store_failures: EventCounter,
    ttl_writes_lost: EventCounter,
    release_hook_errors: EventCounter,
}

/// Converts a count to a gauge value, saturating at `i64::MAX`.
fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Creates the metrics and registers every gauge and counter.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let connected_clients = CountGauge::default();
        let entries = CountGauge::default();
        let ongoing_calls = CountGauge::default();
        let completed_calls = CountGauge::default();
        let completed_calls_by_content = CountGauge::default();
        let ongoing_arbitrary = CountGauge::default();
        let completed_arbitrary = CountGauge::default();
        let ttl_store_failures = EventCounter::default();
        let ttl_writes_lost = EventCounter::default();
        let release_hook_errors = EventCounter::default();

        registry.register(
            "dagger_connected_clients",
            "Number of connected clients (open sessions)",
            connected_clients.clone(),
        );
        registry.register(
            "dagger_dagql_cache_entries",
            "Total dagql cache index entries: the sum of every bucket below; an entry may count once per index it is in",
            entries.clone(),
        );
        registry.register(
            "dagger_dagql_cache_ongoing_calls_entries",
            "In-flight dagql calls registered for deduplication",
            ongoing_calls.clone(),
        );
        registry.register(
            "dagger_dagql_cache_completed_calls_entries",
            "Completed dagql calls, counted once per storage-key list membership",
            completed_calls.clone(),
        );
        registry.register(
            "dagger_dagql_cache_completed_calls_by_content_entries",
            "Completed dagql calls, counted once per content-key list membership",
            completed_calls_by_content.clone(),
        );
        registry.register(
            "dagger_dagql_cache_ongoing_arbitrary_entries",
            "Arbitrary cache entries still being initialised",
            ongoing_arbitrary.clone(),
        );
        registry.register(
            "dagger_dagql_cache_completed_arbitrary_entries",
            "Arbitrary cache entries completed",
            completed_arbitrary.clone(),
        );
        registry.register(
            "cache_ttl_store_failures",
            "TTL store failures absorbed by falling back to a session-scoped key",
            ttl_store_failures.clone(),
        );
        registry.register(
            "cache_ttl_writes_lost",
            "Prepared TTL writes that lost their compare-and-upsert race",
            ttl_writes_lost.clone(),
        );
        registry.register(
            "cache_release_hook_errors",
            "Release hooks that returned an error",
            release_hook_errors.clone(),
        );

        Self {
            registry,
            connected_clients,
            entries,
            ongoing_calls,
            completed_calls,
            completed_calls_by_content,
            ongoing_arbitrary,
            completed_arbitrary,
            ttl_store_failures,
            ttl_writes_lost,
            release_hook_errors,
        }
    }

    /// Sets every cache gauge from the buckets, plus connected clients (S-6).
    ///
    /// `dagger_dagql_cache_entries` is set to [`Buckets::total`] (C-15).
    pub fn observe(&self, buckets: &Buckets, connected_clients: usize) {
        self.connected_clients.set(gauge_value(connected_clients));
        self.entries.set(gauge_value(buckets.total()));
        self.ongoing_calls.set(gauge_value(buckets.ongoing_calls));
        self.completed_calls
            .set(gauge_value(buckets.completed_calls));
        self.completed_calls_by_content
            .set(gauge_value(buckets.completed_calls_by_content));
        self.ongoing_arbitrary
            .set(gauge_value(buckets.ongoing_arbitrary));
        self.completed_arbitrary
            .set(gauge_value(buckets.completed_arbitrary));
    }

    /// T-2: a TTL store failure was absorbed (the call went on with a
    /// session-scoped key).
    pub fn ttl_store_failure(&self) {
        self.ttl_store_failures.inc();
    }

    /// T-4: a prepared TTL write lost its compare-and-upsert race.
    pub fn ttl_write_lost(&self) {
        self.ttl_writes_lost.inc();
    }

    /// C-12: a release hook returned an error.
    pub fn release_hook_error(&self) {
        self.release_hook_errors.inc();
    }

    /// How many TTL store failures were absorbed (T-2).
    pub fn ttl_store_failures(&self) -> u64 {
        self.ttl_store_failures.get()
    }

    /// How many prepared TTL writes lost their race (T-4).
    pub fn ttl_writes_lost(&self) -> u64 {
        self.ttl_writes_lost.get()
    }

    /// How many release hooks returned an error (C-12).
    pub fn release_hook_errors(&self) -> u64 {
        self.release_hook_errors.get()
    }

    /// The OpenMetrics/Prometheus text exposition, in registration order,
    /// ending with `# EOF`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, and none of our metrics
        // produce an encoding error.
        encode(&mut out, &self.registry).expect("encoding metrics into a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAUGES: [&str; 7] = [
        "dagger_connected_clients",
        "dagger_dagql_cache_entries",
        "dagger_dagql_cache_ongoing_calls_entries",
        "dagger_dagql_cache_completed_calls_entries",
        "dagger_dagql_cache_completed_calls_by_content_entries",
        "dagger_dagql_cache_ongoing_arbitrary_entries",
        "dagger_dagql_cache_completed_arbitrary_entries",
    ];

    /// The value of an unlabelled sample line `<name> <value>`.
    fn sample(text: &str, name: &str) -> Option<i64> {
        text.lines().find_map(|line| {
            let (n, v) = line.split_once(' ')?;
            if n == name {
                v.parse().ok()
            } else {
                None
            }
        })
    }

    #[test]
    fn metrics_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn o1_metric_names_exact() {
        let text = Metrics::new().encode();
        for name in GAUGES {
            assert!(
                text.lines().any(|l| l == format!("# TYPE {name} gauge")),
                "missing `# TYPE {name} gauge` in:\n{text}"
            );
            assert!(
                text.lines()
                    .any(|l| l.starts_with(&format!("# HELP {name} ")) && l.len() > name.len() + 8),
                "missing HELP for {name} in:\n{text}"
            );
            assert_eq!(sample(&text, name), Some(0), "{name} sample in:\n{text}");
        }
        // No other gauge is exported, and nothing got a suffix.
        let gauge_types = text
            .lines()
            .filter(|l| l.starts_with("# TYPE ") && l.ends_with(" gauge"))
            .count();
        assert_eq!(gauge_types, GAUGES.len(), "{text}");
        for name in [
            "cache_ttl_store_failures",
            "cache_ttl_writes_lost",
            "cache_release_hook_errors",
        ] {
            assert!(
                text.lines().any(|l| l == format!("# TYPE {name} counter")),
                "missing counter {name} in:\n{text}"
            );
            assert!(
                text.lines().any(|l| l == format!("{name}_total 0")),
                "missing sample {name}_total in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn o1_observe_sets_every_bucket_and_entries_total() {
        let metrics = Metrics::new();
        let buckets = Buckets {
            ongoing_calls: 1,
            completed_calls: 2,
            completed_calls_by_content: 3,
            ongoing_arbitrary: 4,
            completed_arbitrary: 5,
        };
        metrics.observe(&buckets, 6);
        let text = metrics.encode();
        let expect = [
            ("dagger_connected_clients", 6),
            ("dagger_dagql_cache_entries", 15),
            ("dagger_dagql_cache_ongoing_calls_entries", 1),
            ("dagger_dagql_cache_completed_calls_entries", 2),
            ("dagger_dagql_cache_completed_calls_by_content_entries", 3),
            ("dagger_dagql_cache_ongoing_arbitrary_entries", 4),
            ("dagger_dagql_cache_completed_arbitrary_entries", 5),
        ];
        for (name, value) in expect {
            assert_eq!(sample(&text, name), Some(value), "{name} in:\n{text}");
        }
        assert_eq!(
            sample(&text, "dagger_dagql_cache_entries"),
            Some(buckets.total() as i64)
        );

        // A later observation replaces, not accumulates; back to quiescence.
        metrics.observe(&Buckets::default(), 0);
        let text = metrics.encode();
        for name in GAUGES {
            assert_eq!(sample(&text, name), Some(0), "{name} in:\n{text}");
        }
    }

    #[test]
    fn counters_count() {
        let metrics = Metrics::default();
        assert_eq!(metrics.ttl_store_failures(), 0);
        assert_eq!(metrics.ttl_writes_lost(), 0);
        assert_eq!(metrics.release_hook_errors(), 0);

        metrics.ttl_store_failure();
        metrics.ttl_write_lost();
        metrics.ttl_write_lost();
        for _ in 0..3 {
            metrics.release_hook_error();
        }
        assert_eq!(metrics.ttl_store_failures(), 1);
        assert_eq!(metrics.ttl_writes_lost(), 2);
        assert_eq!(metrics.release_hook_errors(), 3);

        let text = metrics.encode();
        assert_eq!(sample(&text, "cache_ttl_store_failures_total"), Some(1));
        assert_eq!(sample(&text, "cache_ttl_writes_lost_total"), Some(2));
        assert_eq!(sample(&text, "cache_release_hook_errors_total"), Some(3));
        // Counters do not touch the gauges.
        assert_eq!(sample(&text, "dagger_dagql_cache_entries"), Some(0));
    }

    #[test]
    fn encode_is_deterministic() {
        let build = || {
            let metrics = Metrics::new();
            metrics.observe(
                &Buckets {
                    ongoing_calls: 7,
                    completed_calls: 1,
                    completed_calls_by_content: 0,
                    ongoing_arbitrary: 2,
                    completed_arbitrary: 9,
                },
                4,
            );
            metrics.ttl_store_failure();
            metrics.release_hook_error();
            metrics
        };
        let a = build();
        let first = a.encode();
        for _ in 0..10 {
            assert_eq!(a.encode(), first);
        }
        assert_eq!(build().encode(), first);

        // Same order of metric families every time: registration order.
        let names: Vec<&str> = first
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut expected: Vec<&str> = GAUGES.to_vec();
        expected.extend([
            "cache_ttl_store_failures",
            "cache_ttl_writes_lost",
            "cache_release_hook_errors",
        ]);
        assert_eq!(names, expected);
    }
}
