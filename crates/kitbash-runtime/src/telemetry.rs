//! Structured logging: text for people, JSON for log shippers, filtered by `[telemetry] level`
//! or `RUST_LOG`. The filter can be swapped at run time (SIGHUP reloads it).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogFormat, TelemetryConfig};

/// The handle that swaps the filter, set by the first [`init`].
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter(level: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(level).map_err(|e| format!("telemetry.level {level:?}: {e}"))
}

/// Installs the global tracing subscriber. Safe to call more than once (later calls are no-ops),
/// which in-process tests rely on.
pub fn init(cfg: &TelemetryConfig) {
    let initial = EnvFilter::try_from_default_env()
        .or_else(|_| filter(&cfg.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(initial);
    let text = (cfg.format == LogFormat::Text).then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(true)
    });
    let json = (cfg.format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
    });
    if tracing_subscriber::registry()
        .with(layer)
        .with(text)
        .with(json)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the log filter (`RUST_LOG`, when set, still wins at start-up only).
pub fn set_level(level: &str) -> Result<(), String> {
    let f = filter(level)?;
    match FILTER.get() {
        Some(h) => h.reload(f).map_err(|e| e.to_string()),
        None => Err("telemetry is not initialised".into()),
    }
}
