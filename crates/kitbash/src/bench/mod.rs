//! `kitbash bench SUITE [--json]`: each figure is reported as a ratio to a baseline measured in
//! the same run (see docs/BENCHMARKS.md). With `--json`, stdout carries one JSON object per
//! figure and nothing else: `{"suite","metric","value","unit","baseline","ratio",…}`.

pub mod archive;
pub mod bridge;
pub mod client;
pub(crate) mod commandstats;
pub mod entity;
pub mod feynman;
pub mod memory;
pub(crate) mod openloop;
pub mod redis;
pub mod reflex;
pub(crate) mod rng;
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

    /// `value / baseline`; `None` when the baseline is missing (0, negative or not finite) —
    /// never a ratio of 0.
    pub fn ratio(&self) -> Option<f64> {
        (self.baseline.is_finite() && self.baseline > 0.0).then(|| self.value / self.baseline)
    }

    /// Refuses a record without a usable value or baseline.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.value.is_finite(),
            "{} {}: the value is not a number ({})",
            self.suite,
            self.metric,
            self.value
        );
        anyhow::ensure!(
            self.ratio().is_some(),
            "{} {}: no baseline was measured (baseline {}); a ratio needs one",
            self.suite,
            self.metric,
            self.baseline
        );
        Ok(())
    }

    /// The JSON line: numbers tidied (see [`tidy`]), the machine's CPU model and kernel
    /// release added (`cpu_model`, `os_kernel`).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("suite".into(), self.suite.into());
        m.insert("metric".into(), self.metric.clone().into());
        m.insert("value".into(), tidy(self.value));
        m.insert("unit".into(), self.unit.clone().into());
        m.insert("baseline".into(), tidy(self.baseline));
        m.insert("ratio".into(), self.ratio().map_or(Value::Null, tidy));
        for (k, v) in &self.extra {
            m.insert(k.clone(), tidy_value(v));
        }
        let (cpu, kernel) = machine();
        m.entry("cpu_model").or_insert_with(|| cpu.into());
        m.entry("os_kernel").or_insert_with(|| kernel.into());
        Value::Object(m)
    }
}

/// A number as people read it: integers (`3.0` → `3`) as integers; other values rounded to
/// 4 significant digits below 1000 and to whole units from 1000 up, so no float noise
/// (`6.3500000000000005` → `6.35`). Not finite → `null`.
pub fn tidy(x: f64) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    let rounded = if x.abs() >= 1000.0 {
        x.round()
    } else {
        // 10^k with k ≥ 0, so the division is correctly rounded: the shortest printout of
        // the result is the rounded decimal.
        let digits = 3 - x.abs().log10().floor().clamp(-12.0, 2.0) as i32;
        let scale = 10f64.powi(digits);
        (x * scale).round() / scale
    };
    if rounded.fract() == 0.0 && rounded.abs() < 9.0e15 {
        Value::from(rounded as i64)
    } else {
        Value::from(rounded)
    }
}

/// [`tidy`] applied to every float inside `v`.
fn tidy_value(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => n.as_f64().map_or(Value::Null, tidy),
        Value::Array(a) => Value::Array(a.iter().map(tidy_value).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), tidy_value(v))).collect())
        }
        other => other.clone(),
    }
}

/// CPU model (`/proc/cpuinfo`'s `model name`) and kernel release, read once.
pub fn machine() -> (String, String) {
    static MACHINE: std::sync::OnceLock<(String, String)> = std::sync::OnceLock::new();
    MACHINE
        .get_or_init(|| {
            let cpu = std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, v)| v.trim().to_owned())
                })
                .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
            let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| std::env::consts::OS.to_owned());
            (cpu, kernel)
        })
        .clone()
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
pub const SUITES: &[&str] = &[
    "redis", "ternary", "feynman", "memory", "client", "entity", "reflex", "archive", "bridge",
];

/// Runs `suite`; progress goes to stderr. Fails when a figure has no baseline.
pub async fn run(suite: &str, opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    let records = run_suite(suite, opts).await?;
    for r in &records {
        r.check()?;
    }
    Ok(records)
}

async fn run_suite(suite: &str, opts: &BenchOptions) -> anyhow::Result<Vec<Record>> {
    match suite {
        "redis" => redis::run(opts).await,
        "feynman" => feynman::run(opts).await,
        "memory" => memory::run(opts).await,
        "client" => client::run(opts).await,
        "entity" => entity::run(opts).await,
        "reflex" => reflex::run(opts).await,
        "archive" => archive::run(opts).await,
        "bridge" => bridge::run(opts).await,
        "ternary" => Ok(tokio::task::spawn_blocking({
            let opts = opts.clone();
            move || ternary::run(&opts)
        })
        .await?),
        // Internal: what `client` runs under callgrind to count the client's instructions.
        probe if probe.starts_with("client-probe:") => client::probe(probe, opts).await,
        other => anyhow::bail!("unknown suite {other:?}; suites: {}", SUITES.join(", ")),
    }
}

/// Waits (up to 30 s) until each of `partitions` partitions of the family `stream` has a lease
/// holder: the daemons under test own their work before a timed phase starts.
pub async fn wait_partitions_leased(
    client: &fred::prelude::Client,
    keys: &kitbash_schema::Keys,
    stream: fn(u32) -> kitbash_schema::StreamName,
    partitions: u32,
    who: &str,
) -> anyhow::Result<()> {
    use fred::prelude::KeysInterface;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut owned = 0;
        for p in 0..partitions {
            let o: Option<String> = client.get(keys.lease(stream(p))).await?;
            owned += u32::from(o.is_some());
        }
        if owned == partitions {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{who} did not take their partitions within 30 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
            r.ratio().unwrap_or(f64::NAN)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_tidied() {
        let t = |x: f64| tidy(x).to_string();
        assert_eq!(t(6.3500000000000005), "6.35");
        assert_eq!(t(3.0), "3");
        assert_eq!(t(241_354.7), "241355");
        assert_eq!(t(0.055_123_4), "0.05512");
        assert_eq!(t(63.128_9), "63.13");
        assert_eq!(t(331.44), "331.4");
        assert_eq!(t(-1.234_56), "-1.235");
        assert_eq!(t(0.1 + 0.2), "0.3");
        assert_eq!(t(0.0), "0");
        assert_eq!(t(f64::NAN), "null");
    }

    #[test]
    fn extras_are_tidied_and_the_machine_named() {
        let r = Record::new("s", "m", 2.0, "x", 4.0)
            .with("kernel", 3.0)
            .with("p50_ms", 6.3500000000000005)
            .with(
                "nested",
                serde_json::json!({"a": [1.0, 0.30000000000000004]}),
            );
        let j = r.to_json();
        assert_eq!(j["value"].to_string(), "2");
        assert_eq!(j["ratio"].to_string(), "0.5");
        assert_eq!(j["kernel"].to_string(), "3");
        assert_eq!(j["p50_ms"].to_string(), "6.35");
        assert_eq!(j["nested"].to_string(), r#"{"a":[1,0.3]}"#);
        assert!(j["cpu_model"].is_string());
        assert!(j["os_kernel"].is_string());
    }

    #[test]
    fn a_missing_baseline_is_an_error_not_a_ratio_of_zero() {
        let r = Record::new("s", "m", 2.0, "x", 0.0);
        assert_eq!(r.ratio(), None);
        let err = r.check().expect_err("no baseline");
        assert!(err.to_string().contains("no baseline"), "{err}");
        assert!(Record::new("s", "m", 2.0, "x", f64::NAN).check().is_err());
        assert!(Record::new("s", "m", f64::NAN, "x", 1.0).check().is_err());
        assert!(Record::new("s", "m", 2.0, "x", 1.0).check().is_ok());
        assert_eq!(r.to_json()["ratio"], Value::Null);
    }
}
