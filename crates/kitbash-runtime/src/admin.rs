//! The per-instance admin endpoint: `/healthz` (the process runs), `/readyz` (Redis answers and
//! every component is in place, from state the daemon keeps) and `/metrics` (OpenMetrics text,
//! which Prometheus reads).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::error::RuntimeError;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::redis::Redis;

#[derive(Clone)]
struct AdminState {
    redis: Redis,
    health: Health,
    metrics: Metrics,
    kind: &'static str,
    instance: String,
    started: std::time::Instant,
}

/// Binds `addr` and serves until `shutdown`. Returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    redis: Redis,
    health: Health,
    metrics: Metrics,
    kind: &'static str,
    instance: String,
    shutdown: CancellationToken,
) -> Result<SocketAddr, RuntimeError> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let state = AdminState {
        redis,
        health,
        metrics,
        kind,
        instance,
        started: std::time::Instant::now(),
    };
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "admin endpoint stopped");
        }
    });
    tracing::info!(addr = %bound, "admin endpoint listening");
    Ok(bound)
}

/// Answers from the state the daemon keeps (the `redis` check is refreshed every 500 ms by the
/// daemon's watcher), never by asking Redis: a probe gets its answer at once even when Redis
/// hangs.
async fn readyz(State(s): State<AdminState>) -> impl IntoResponse {
    let (checks_ok, checks) = s.health.snapshot();
    let redis_ok = checks
        .iter()
        .find(|(k, _)| k == crate::health::REDIS_CHECK)
        .is_none_or(|(_, ok)| *ok);
    let _ = &s.redis;
    let body = serde_json::json!({
        "ready": redis_ok && checks_ok,
        "redis": redis_ok,
        "checks": checks.into_iter().map(|(k, v)| serde_json::json!({"name": k, "ok": v})).collect::<Vec<_>>(),
    });
    let code = if redis_ok && checks_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

async fn metrics_text(State(s): State<AdminState>) -> impl IntoResponse {
    let labels = [("kind", s.kind), ("instance", s.instance.as_str())];
    s.metrics.set(
        "kitbash_uptime_seconds",
        "Seconds since the instance started.",
        &labels,
        s.started.elapsed().as_secs_f64(),
    );
    s.metrics.set(
        "kitbash_ready",
        "1 when the instance is ready.",
        &labels,
        if s.health.ready() { 1.0 } else { 0.0 },
    );
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}
