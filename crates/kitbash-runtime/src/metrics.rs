//! A small Prometheus registry: counters and gauges with labels, rendered in the text
//! exposition format by the admin endpoint. Updated per batch, not per entry, so a mutex is
//! cheap enough.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

#[derive(Default)]
struct Family {
    help: String,
    kind: Option<Kind>,
    /// Rendered label set (`{stream="queries"}`) → value.
    series: BTreeMap<String, f64>,
}

/// Shared metric registry; clones share the same values.
#[derive(Clone, Default)]
pub struct Metrics {
    families: Arc<Mutex<BTreeMap<String, Family>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn labels_key(labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = write!(s, "{k}=\"{v}\"");
    }
    s.push('}');
    s
}

impl Metrics {
    /// A new, empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn update(
        &self,
        name: &str,
        kind: Kind,
        help: &str,
        labels: &[(&str, &str)],
        f: impl FnOnce(&mut f64),
    ) {
        let mut fams = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let fam = fams.entry(name.to_owned()).or_default();
        if fam.kind.is_none() {
            fam.kind = Some(kind);
            fam.help = help.to_owned();
        }
        f(fam.series.entry(labels_key(labels)).or_insert(0.0));
    }

    /// Adds `by` to a counter.
    pub fn inc(&self, name: &str, help: &str, labels: &[(&str, &str)], by: u64) {
        self.update(name, Kind::Counter, help, labels, |v| *v += by as f64);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.update(name, Kind::Gauge, help, labels, |v| *v = value);
    }

    /// Records one observation of a distribution (interim: count and sum; histograms come
    /// with the metrics library).
    pub fn observe(&self, name: &str, help: &str, labels: &[(&str, &str)], value: f64) {
        self.update(&format!("{name}_count"), Kind::Counter, help, labels, |v| {
            *v += 1.0
        });
        self.update(&format!("{name}_sum"), Kind::Counter, help, labels, |v| {
            *v += value
        });
    }

    /// Reads a series (tests, status).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let fams = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        fams.get(name)
            .and_then(|f| f.series.get(&labels_key(labels)).copied())
            .unwrap_or(0.0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let fams = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (name, fam) in fams.iter() {
            let kind = match fam.kind {
                Some(Kind::Counter) => "counter",
                _ => "gauge",
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, v) in &fam.series {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
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
        assert!(text.contains("# TYPE kitbash_entries_total counter"));
        assert!(text.contains("kitbash_entries_total{stream=\"q\\\"x\"} 5"));
        assert!(text.contains("kitbash_ready 1"));
        assert_eq!(m.get("kitbash_entries_total", &[("stream", "q\"x")]), 5.0);
    }
}
