//! Counters of one loader node (L-15) and their Prometheus text export.
//!
//! The machine keeps plain numbers (it is pure); [`encode_prometheus`]
//! builds a registry from a snapshot. Every metric has exactly one label,
//! `cache` (the cache's name, chosen by the service, not by callers), so the
//! label set is bounded; no error text ever becomes a label.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

/// A snapshot of one node's counters (L-15).
///
/// Conservation (LINV-6): `hit == local_hit + remote_hit`,
/// `load_failures <= loads`, and `loads` equals the number of loader calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads served from a tier (local or remote).
    pub hit: u64,
    /// Reads that found no live record in any tier consulted and went to the loader
    /// (counted once per foreground flight).
    pub miss: u64,
    /// Local tier hits.
    pub local_hit: u64,
    /// Local tier misses.
    pub local_miss: u64,
    /// Remote tier hits (once per flight that read the remote).
    pub remote_hit: u64,
    /// Remote tier misses (absent or expired).
    pub remote_miss: u64,
    /// Loader calls: foreground, refresh and batch.
    pub loads: u64,
    /// Loader calls that failed (not-found is not a failure).
    pub load_failures: u64,
    /// Remote reads that failed (each degraded to the loader, L-4).
    pub remote_read_failures: u64,
    /// Remote writes that failed (each reported as a warning, L-4).
    pub remote_write_failures: u64,
    /// Reads that found a live placeholder (L-6).
    pub placeholder_hits: u64,
    /// Refresh loads started (L-9).
    pub refreshes: u64,
    /// Refresh loads that failed (the old value stays, L-10).
    pub refresh_failures: u64,
    /// Refreshes that joined a flight already in progress instead of loading (L-1).
    pub refresh_joins: u64,
    /// Refresh tasks not created because `refresh_tasks_max` was reached (L-9).
    pub refresh_tasks_rejected: u64,
    /// Callers that joined a flight someone else led (L-2).
    pub flight_joins: u64,
    /// Records that failed to decode and were deleted (L-14).
    pub codec_errors: u64,
    /// Events this node published (L-11).
    pub events_emitted: u64,
    /// Events from other nodes this node applied (L-11).
    pub events_delivered: u64,
    /// Events this node could not publish (the bus failed) (L-11).
    pub events_dropped: u64,
    /// Events from this node itself, ignored (L-11).
    pub events_ignored: u64,
}

impl Counters {
    /// The L-15 conservation rules that hold on the counters alone.
    pub fn check(&self) -> Result<(), String> {
        if self.hit != self.local_hit + self.remote_hit {
            return Err(format!(
                "hit {} != local_hit {} + remote_hit {} (L-15)",
                self.hit, self.local_hit, self.remote_hit
            ));
        }
        if self.load_failures > self.loads {
            return Err(format!(
                "load_failures {} > loads {} (L-15)",
                self.load_failures, self.loads
            ));
        }
        if self.refresh_failures > self.refreshes {
            return Err(format!(
                "refresh_failures {} > refreshes {} (L-15)",
                self.refresh_failures, self.refreshes
            ));
        }
        Ok(())
    }

    /// Every counter by its metric name, in a fixed order.
    pub fn named(&self) -> [(&'static str, &'static str, u64); 21] {
        [
            ("loader_hit", "Reads served from a tier", self.hit),
            ("loader_miss", "Reads that went to the loader", self.miss),
            ("loader_local_hit", "Local tier hits", self.local_hit),
            ("loader_local_miss", "Local tier misses", self.local_miss),
            ("loader_remote_hit", "Remote tier hits", self.remote_hit),
            ("loader_remote_miss", "Remote tier misses", self.remote_miss),
            ("loader_loads", "Loader calls", self.loads),
            (
                "loader_load_failures",
                "Loader calls that failed",
                self.load_failures,
            ),
            (
                "loader_remote_read_failures",
                "Remote reads that failed",
                self.remote_read_failures,
            ),
            (
                "loader_remote_write_failures",
                "Remote writes that failed",
                self.remote_write_failures,
            ),
            (
                "loader_placeholder_hits",
                "Reads that found a placeholder",
                self.placeholder_hits,
            ),
            ("loader_refreshes", "Refresh loads", self.refreshes),
            (
                "loader_refresh_failures",
                "Refresh loads that failed",
                self.refresh_failures,
            ),
            (
                "loader_refresh_joins",
                "Refreshes that joined a flight",
                self.refresh_joins,
            ),
            (
                "loader_refresh_tasks_rejected",
                "Refresh tasks refused at the limit",
                self.refresh_tasks_rejected,
            ),
            (
                "loader_flight_joins",
                "Callers that joined a flight",
                self.flight_joins,
            ),
            (
                "loader_codec_errors",
                "Records that failed to decode",
                self.codec_errors,
            ),
            (
                "loader_events_emitted",
                "Events published",
                self.events_emitted,
            ),
            (
                "loader_events_delivered",
                "Events from other nodes applied",
                self.events_delivered,
            ),
            (
                "loader_events_dropped",
                "Events that could not be published",
                self.events_dropped,
            ),
            (
                "loader_events_ignored",
                "Own events ignored",
                self.events_ignored,
            ),
        ]
    }
}

/// The counters in Prometheus text format, each labelled `cache="<name>"`.
///
/// ```
/// use cache_core::loader::counters::{encode_prometheus, Counters};
/// let text = encode_prometheus("users", &Counters { hit: 3, local_hit: 3, ..Counters::default() });
/// assert!(text.contains("loader_hit_total{cache=\"users\"} 3\n"));
/// ```
pub fn encode_prometheus(cache: &str, counters: &Counters) -> String {
    let mut registry =
        Registry::with_labels(std::iter::once(("cache".into(), cache.to_string().into())));
    for (name, help, value) in counters.named() {
        let counter: Counter = Counter::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    }
    let mut out = String::new();
    // Writing into a String cannot fail; an error here would be a bug in
    // the encoder, and an empty export is the safe answer.
    if encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}
