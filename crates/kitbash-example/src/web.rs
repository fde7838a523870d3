//! The example's served router: `GET /tally/{text}` → `{"text": …, "count": n}`.
//!
//! Served by [`kitbash_runtime::Components::serve`] on `[example] listen`: readiness
//! `listening tally`, the bound address in the heartbeat's `serves`, requests in flight drained
//! on shutdown.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use fred::prelude::*;
use kitbash_runtime::DaemonContext;

#[derive(Clone)]
struct Tally {
    client: Client,
    key: String,
}

/// The router (its state: the daemon's command connection and the tally key).
pub fn router(ctx: &DaemonContext) -> axum::Router {
    let state = Tally {
        client: ctx.redis.client.clone(),
        key: ctx.keys.example_tally(),
    };
    axum::Router::new()
        .route("/tally/{text}", get(count))
        .with_state(state)
}

async fn count(
    State(t): State<Tally>,
    Path(text): Path<String>,
) -> Result<Json<serde_json::Value>, (StatusCode, String)> {
    match t.client.hget::<Option<i64>, _, _>(&t.key, &text).await {
        Ok(n) => Ok(Json(
            serde_json::json!({ "text": text, "count": n.unwrap_or(0) }),
        )),
        Err(e) => Err((StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}"))),
    }
}
