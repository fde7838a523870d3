//! The instance's Prometheus registry: counters, gauges and histograms with labels, kept by the
//! maintained `prometheus-client` crate and rendered by the admin endpoint in the OpenMetrics
//! text format ([`CONTENT_TYPE`]).
//!
//! Families are created on first use, by name, so a component needs no registration step:
//! [`Metrics::inc`] (counter), [`Metrics::set`] (gauge), [`Metrics::observe`] (histogram).
//! Updates happen per batch, not per entry: one short mutex hold to find the family, then the
//! library's own atomics and locks.
//!
//! Histogram buckets are chosen by the name's unit suffix, as Prometheus names carry it:
//! a name ending in `_seconds` gets [`LATENCY_BUCKETS`] (50 µs … 10 s), any other name
//! [`SIZE_BUCKETS`] (1 … 10,000, for counts such as batch sizes).
//!
//! Counter names keep their `_total` suffix at the call site (`kitbash_entries_acked_total`);
//! the library adds it when rendering, so it is stripped from the registered family name.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Upper bounds, in seconds, of the buckets of every `*_seconds` histogram: 50 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 17] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the buckets of every other histogram (counts, e.g. entries per batch).
pub const SIZE_BUCKETS: [f64; 13] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
];

/// A label set as the registry stores it, in the caller's order.
type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// One registered family.
#[derive(Clone)]
enum Handle {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge<f64, AtomicU64>>),
    Histogram(Family<Labels, Histogram, fn() -> Histogram>),
}

impl Handle {
    fn kind(&self) -> &'static str {
        match self {
            Handle::Counter(_) => "counter",
            Handle::Gauge(_) => "gauge",
            Handle::Histogram(_) => "histogram",
        }
    }
}

#[derive(Default)]
struct Inner {
    /// What `render` encodes. Families are registered into it on first use.
    registry: Registry,
    /// Families by the name the caller uses (counters with their `_total`).
    families: HashMap<String, Handle>,
}

/// What a histogram series holds so far (tests, status).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HistogramTotals {
    /// Number of observations.
    pub count: u64,
    /// Sum of the observed values.
    pub sum: f64,
}

/// Shared metric registry; clones share the same families and values.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Metrics {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The family `name`, registered with `make` on first use. `None` (and a warning) when the
    /// name is already taken by another kind of metric: the update is dropped, never misfiled.
    fn family(&self, name: &str, help: &str, make: impl FnOnce() -> Handle) -> Option<Handle> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = inner.families.get(name) {
            return Some(h.clone());
        }
        let handle = make();
        match &handle {
            Handle::Counter(f) => {
                let base = name.strip_suffix("_total").unwrap_or(name);
                inner.registry.register(base, help, f.clone());
            }
            Handle::Gauge(f) => inner.registry.register(name, help, f.clone()),
            Handle::Histogram(f) => inner.registry.register(name, help, f.clone()),
        }
        inner.families.insert(name.to_owned(), handle.clone());
        Some(handle)
    }

    fn mismatch(name: &str, wanted: &'static str, found: &Handle) {
        tracing::warn!(
            metric = name,
            wanted,
            found = found.kind(),
            "metric name already used by another kind of metric; update dropped"
        );
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &str, help: &str, labels: &[(&str, &str)], by: u64) {
        match self.family(name, help, || Handle::Counter(Family::default())) {
            Some(Handle::Counter(f)) => {
                f.get_or_create(&owned(labels)).inc_by(by);
            }
            Some(other) => Self::mismatch(name, "counter", &other),
            None => {}
        }
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        match self.family(name, help, || Handle::Gauge(Family::default())) {
            Some(Handle::Gauge(f)) => {
                f.get_or_create(&owned(labels)).set(value);
            }
            Some(other) => Self::mismatch(name, "gauge", &other),
            None => {}
        }
    }

    /// Records one observation in a histogram: seconds for a `*_seconds` name
    /// ([`LATENCY_BUCKETS`]), a count otherwise ([`SIZE_BUCKETS`]).
    pub fn observe(&self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        let make = || {
            let constructor: fn() -> Histogram = if name.ends_with("_seconds") {
                latency_histogram
            } else {
                size_histogram
            };
            Handle::Histogram(Family::new_with_constructor(constructor))
        };
        match self.family(name, help, make) {
            Some(Handle::Histogram(f)) => f.get_or_create(&owned(labels)).observe(value),
            Some(other) => Self::mismatch(name, "histogram", &other),
            None => {}
        }
    }

    /// Records one processed batch of a stream: its processing time since `started`
    /// (`kitbash_batch_seconds`) and its size (`kitbash_batch_entries`). Every reader of a
    /// stream (consumer groups, partition workers) records under these names, labelled
    /// `stream` (logical name) and `group`.
    pub fn observe_batch(&self, labels: &[(&str, &str)], started: Instant, entries: usize) {
        self.observe(
            "kitbash_batch_seconds",
            "Time to process one batch read from a stream (decode, handle, commit).",
            labels,
            started.elapsed().as_secs_f64(),
        );
        self.observe(
            "kitbash_batch_entries",
            "Entries per batch read from a stream.",
            labels,
            entries as f64,
        );
    }

    fn handle(&self, name: &str) -> Option<Handle> {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.families.get(name).cloned()
    }

    /// Reads a counter or gauge series (tests, status); 0 when absent. For a histogram, its
    /// observation count.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels = owned(labels);
        match self.handle(name) {
            Some(Handle::Counter(f)) => f.get(&labels).map_or(0.0, |c| c.get() as f64),
            Some(Handle::Gauge(f)) => f.get(&labels).map_or(0.0, |g| g.get()),
            Some(Handle::Histogram(f)) => f.get(&labels).map_or(0.0, |h| h.count() as f64),
            None => 0.0,
        }
    }

    /// Count and sum of a histogram series (tests, status); `None` when it has none.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<HistogramTotals> {
        match self.handle(name)? {
            Handle::Histogram(f) => f.get(&owned(labels)).map(|h| HistogramTotals {
                count: h.count(),
                sum: h.sum(),
            }),
            _ => None,
        }
    }

    /// The OpenMetrics text exposition ([`CONTENT_TYPE`]), ending with `# EOF`.
    pub fn render(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &inner.registry) {
            // Only a failing writer can fail, and a String never does.
            tracing::warn!(error = %e, "cannot render metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_gauges() {
        let m = Metrics::new();
        m.inc(
            "kitbash_entries_total",
            "Entries.",
            &[("stream", "q\"x")],
            2,
        );
        m.inc(
            "kitbash_entries_total",
            "Entries.",
            &[("stream", "q\"x")],
            3,
        );
        m.set("kitbash_ready", "Ready.", &[], 1.0);
        let text = m.render();
        assert!(text.contains("# TYPE kitbash_entries counter"), "{text}");
        assert!(text.contains("# HELP kitbash_entries Entries."), "{text}");
        assert!(
            text.contains("kitbash_entries_total{stream=\"q\\\"x\"} 5\n"),
            "{text}"
        );
        assert!(text.contains("kitbash_ready 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(m.get("kitbash_entries_total", &[("stream", "q\"x")]), 5.0);
        assert_eq!(m.get("kitbash_ready", &[]), 1.0);
        assert_eq!(m.get("kitbash_absent", &[]), 0.0);
    }

    #[test]
    fn histograms_render_buckets_with_their_labels() {
        let m = Metrics::new();
        let labels = [("stream", "queries"), ("group", "decay")];
        for s in [0.000_2, 0.003, 0.003, 12.0] {
            m.observe("kitbash_batch_seconds", "Batch time.", &labels, s);
        }
        m.observe("kitbash_batch_entries", "Batch size.", &labels, 100.0);
        m.observe("kitbash_batch_entries", "Batch size.", &labels, 101.0);
        let text = m.render();
        assert!(
            text.contains("# TYPE kitbash_batch_seconds histogram"),
            "{text}"
        );
        let bucket = |name: &str, le: &str| {
            // The library writes `le` first, then the series' labels in the caller's order.
            let prefix =
                format!("{name}_bucket{{le=\"{le}\",stream=\"queries\",group=\"decay\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .unwrap_or_else(|| panic!("no {prefix} in {text}"))
                .to_owned()
        };
        // Cumulative counts: 50 µs holds none, 250 µs one, 5 ms three, 10 s three, +Inf four.
        assert_eq!(bucket("kitbash_batch_seconds", "0.00005"), "0");
        assert_eq!(bucket("kitbash_batch_seconds", "0.00025"), "1");
        assert_eq!(bucket("kitbash_batch_seconds", "0.005"), "3");
        assert_eq!(bucket("kitbash_batch_seconds", "10.0"), "3");
        assert_eq!(bucket("kitbash_batch_seconds", "+Inf"), "4");
        // Size buckets for a name without a unit suffix.
        assert_eq!(bucket("kitbash_batch_entries", "100.0"), "1");
        assert_eq!(bucket("kitbash_batch_entries", "200.0"), "2");
        assert_eq!(bucket("kitbash_batch_entries", "10000.0"), "2");
        let totals = m
            .histogram("kitbash_batch_seconds", &labels)
            .expect("series");
        assert_eq!(totals.count, 4);
        assert!((totals.sum - 12.0062).abs() < 1e-12, "{totals:?}");
        assert_eq!(
            m.histogram("kitbash_batch_entries", &labels),
            Some(HistogramTotals {
                count: 2,
                sum: 201.0
            })
        );
        assert_eq!(m.get("kitbash_batch_entries", &labels), 2.0);
        assert_eq!(m.histogram("kitbash_batch_entries", &[]), None);
    }

    #[test]
    fn a_name_keeps_its_first_kind() {
        let m = Metrics::new();
        m.inc("kitbash_x_total", "X.", &[], 1);
        m.set("kitbash_x_total", "X.", &[], 9.0);
        m.observe("kitbash_x_total", "X.", &[], 9.0);
        assert_eq!(m.get("kitbash_x_total", &[]), 1.0);
        assert_eq!(m.histogram("kitbash_x_total", &[]), None);
    }

    #[test]
    fn clones_share_values() {
        let m = Metrics::new();
        let c = m.clone();
        c.inc("kitbash_y_total", "Y.", &[("a", "b")], 4);
        assert_eq!(m.get("kitbash_y_total", &[("a", "b")]), 4.0);
    }
}
