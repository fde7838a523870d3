//! The bridge's HTTP router: the WebSocket endpoint at `[bridge] path` (Centrifugo's
//! `/connection/websocket` by default) and the page at `/`.
//!
//! The upgrade checks the `Origin` of browser connections (`[bridge] allowed_origins`; no
//! `Origin` header — an SDK outside a browser — is allowed) and sizes tungstenite's buffers
//! from config: its 128 KiB default read buffer per connection would be most of an idle
//! client's memory. JSON clients ask for no subprotocol; a protobuf client's
//! `centrifuge-protobuf` is not selected (the bridge speaks JSON only).

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;

use crate::conn::{self, Shared};

/// The router.
pub fn router(sh: Shared) -> axum::Router {
    let path = sh.cfg.path.clone();
    axum::Router::new()
        .route(&path, get(upgrade))
        .route("/", get(index))
        .with_state(sh)
}

fn origin_ok(sh: &Shared, headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return true;
    };
    let allowed = &sh.cfg.allowed_origins;
    if allowed.iter().any(|a| a == "*" || a == origin) {
        return true;
    }
    if !allowed.is_empty() {
        return false;
    }
    // Same origin: the Origin's host[:port] equals the Host the request was sent to.
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .split_once("://")
        .map(|(_, h)| h.trim_end_matches('/'));
    host.is_some() && origin_host == host
}

async fn upgrade(State(sh): State<Shared>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    if !origin_ok(&sh, &headers) {
        sh.metrics.inc(
            "kitbash_bridge_refused_total",
            "Upgrades refused, by reason.",
            &[("reason", "origin")],
            1,
        );
        return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
    }
    let cfg = sh.cfg.clone();
    ws.read_buffer_size(cfg.read_buffer_bytes)
        .write_buffer_size(cfg.write_buffer_bytes)
        .max_message_size(cfg.max_frame_bytes)
        .max_frame_size(cfg.max_frame_bytes)
        .on_upgrade(move |socket| conn::serve(socket, sh))
}

async fn index(State(sh): State<Shared>) -> Html<String> {
    Html(format!(
        "<!doctype html><meta charset=utf-8><title>kitbash bridge</title>\
         <p>kitbash bridge: Centrifugo client protocol v2 (JSON) at <code>{}</code>.",
        sh.cfg.path
    ))
}
