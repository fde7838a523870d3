//! `kitbash bench SUITE [--json]`: each figure is reported as a ratio to a baseline measured in
//! the same run (see docs/BENCHMARKS.md). With `--json`, stdout carries one JSON object per
//! figure and nothing else: `{"suite","metric","value","unit","baseline","ratio",…}`.

pub mod client;
pub mod feynman;
pub mod memory;
pub mod redis;
pub mod ternary;

use serde_json::{Map, Value};

/// One measured figure.
#[derive(Clone, Debug)]
pub struct Record {
    /// Suite name (`redis`, `ternary`, …).
    pub suite: &'static str,
    /// Metric name (`top3_10k_4096`).
    pub metric: String,
    /// Measured value.
    pub value: f64,
    /// Unit (`ms`, `ops/s`).
    pub unit: String,
    /// Baseline measured in the same run (or a documented reference figure).
    pub baseline: f64,
    /// Extra fields (clients, p50, …).
    pub extra: Map<String, Value>,
}

impl Record {
    /// A record without extras.
    pub fn new(
        suite: &'static str,
        metric: impl Into<String>,
        value: f64,
        unit: impl Into<String>,
        baseline: f64,
    ) -> Self {
        Self {
            suite,
            metric: metric.into(),
            value,
            unit: unit.into(),
            baseline,
            extra: Map::new(),
        }
    }

    /// Adds an extra field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// `value / baseline` (0 when the baseline is 0).
    pub fn ratio(&self) -> f64 {
        if self.baseline == 0.0 {
            0.0
        } else {
            self.value / self.baseline
        }
    }

    /// The JSON line.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("suite".into(), self.suite.into());
        m.insert("metric".into(), self.metric.clone().into());
        m.insert("value".into(), round(self.value).into());
        m.insert("unit".into(), self.unit.clone().into());
        m.insert("baseline".into(), round(self.baseline).into());
        m.insert("ratio".into(), round(self.ratio()).into());
        for (k, v) in &self.extra {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

fn round(x: f64) -> f64 {
    if x.is_finite() {
        let mag = 10f64.powi(6 - x.abs().log10().ceil().max(0.0) as i32);
        (x * mag).round() / mag
    } else {
        0.0
    }
}

/// Options shared by every suite.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Run longer for steadier figures.
    pub long: bool,
    /// Use this Redis instead of starting one (`KITBASH__REDIS__URL`).
    pub redis_url: Option<String>,
}

/// Suites `kitbash bench` knows.
pub const SUITES: &[&str] = &["redis", "ternary", "feynman", "memory", "client"];

/// Runs `suite`; progress goes to stderr.
pub async fn run(suite: &str, opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    match suite {
        "redis" => redis::run(opts).await,
        "feynman" => feynman::run(opts).await,
        "memory" => memory::run(opts).await,
        "client" => client::run(opts).await,
        "ternary" => Ok(tokio::task::spawn_blocking({
            let opts = opts.clone();
            move || ternary::run(&opts)
        })
        .await?),
        other => anyhow::bail!("unknown suite {other:?}; suites: {}", SUITES.join(", ")),
    }
}

/// Prints records as a table.
pub fn render_table(records: &[Record]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<10} {:<28} {:>14} {:<6} {:>14} {:>8}",
        "suite", "metric", "value", "unit", "baseline", "ratio"
    );
    for r in records {
        let _ = writeln!(
            out,
            "{:<10} {:<28} {:>14.4} {:<6} {:>14.4} {:>8.3}",
            r.suite,
            r.metric,
            r.value,
            r.unit,
            r.baseline,
            r.ratio()
        );
    }
    out
}
