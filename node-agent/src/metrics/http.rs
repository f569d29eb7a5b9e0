//! The HTTP server behind `--metrics-addr` (axum, HTTP/1.1):
//!
//! - `GET /metrics` — OpenMetrics text (`application/openmetrics-text; version=1.0.0`).
//! - `GET /healthz` — 200 `ok` while the process is alive and serving.
//! - `GET /readyz` — 200 `ready` once the driver has called [`Telemetry::set_ready`] (config
//!   loaded, sockets open), 503 `not ready` before that or after it is withdrawn.
//! - `GET /status` — the [`StatusSnapshot`] as JSON.

use std::future::Future;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use super::{StatusSnapshot, Telemetry};
use crate::Error;

/// Content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The routes, for serving or for in-process tests.
pub fn router(telemetry: Telemetry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(telemetry)
}

async fn metrics(State(t): State<Telemetry>) -> Response {
    match t.metrics().encode() {
        Ok(body) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding metrics failed\n",
        )
            .into_response(),
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(t): State<Telemetry>) -> (StatusCode, &'static str) {
    if t.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn status(State(t): State<Telemetry>) -> axum::Json<StatusSnapshot> {
    axum::Json(t.status())
}

/// Bind the listening socket (separate from [`serve`] so a bind error surfaces at start-up and
/// tests can bind port 0).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("--metrics-addr {addr}: cannot listen"), e))
}

/// Serve the endpoints on `listener` until `shutdown` completes; in-flight requests finish
/// first (graceful shutdown).
pub async fn serve(
    listener: TcpListener,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz, /status");
    axum::serve(listener, router(telemetry))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| Error::io(format!("HTTP server on {addr}"), e))
}
