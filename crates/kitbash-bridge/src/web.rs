//! The bridge's HTTP router: the WebSocket endpoint at `[bridge] path` (Centrifugo's
//! `/connection/websocket` by default) and the live dashboard at `/` — one page, its script and
//! style, and the vendored Centrifugo browser SDK, all compiled into the binary
//! (`assets/`, no network at run time). The page is a plain client of the WebSocket endpoint.
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
        .route(
            "/assets/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/assets/app.css",
            get(|| asset("text/css; charset=utf-8", APP_CSS)),
        )
        .route(
            "/assets/centrifuge-5.8.0.js",
            get(|| asset("text/javascript; charset=utf-8", CENTRIFUGE_JS)),
        )
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

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");
const CENTRIFUGE_JS: &str = include_str!("../assets/vendor/centrifuge-5.8.0.js");

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn index(State(sh): State<Shared>) -> Html<String> {
    // The WebSocket path is the one setting the page needs; it is a validated path (no quotes).
    Html(INDEX_HTML.replace("{{WS_PATH}}", &sh.cfg.path))
}
