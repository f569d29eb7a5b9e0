//! The HTTP server behind `--metrics-addr` (axum, HTTP/1.1):
//!
//! - `GET /metrics` — OpenMetrics text (`application/openmetrics-text; version=1.0.0`).
//! - `GET /healthz` — 200 `ok` while the process is alive and serving.
//! - `GET /readyz` — 200 `ready` once the driver has called [`Telemetry::set_ready`] (config
//!   loaded, sockets open), 503 `not ready` before that or after it is withdrawn.
//! - `GET /status` — the [`StatusSnapshot`] as JSON.
//!
//! Only GET/HEAD routes exist: nothing here accepts writes (other methods get 405).
//!
//! The endpoints are reachable from the pod network, so the server is hardened against slow or
//! half-open clients (see [`Limits`]): headers must arrive within a deadline, a connection lives
//! at most a bounded time, read buffers are bounded, and at most a fixed number of connections
//! are served at once; connections beyond that are closed at once instead of queueing.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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

/// Resource limits of the HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; a connection accepted beyond this is closed immediately.
    pub max_connections: usize,
    /// A request's headers must be complete this long after the server starts reading them
    /// (this also closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// A connection is closed this long after it was accepted, whatever it does.
    pub connection_timeout: Duration,
    /// Largest read buffer per connection, bytes (hyper's minimum is 8192).
    pub max_buf_size: usize,
    /// How long graceful shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    /// 256 connections × 16 KiB buffers: a few MiB at most, however many clients connect.
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(60),
            max_buf_size: 16 * 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Serve the endpoints on `listener` with the default [`Limits`] until `shutdown` completes;
/// in-flight requests finish first (graceful shutdown).
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
    serve_router(listener, router(telemetry), Limits::default(), shutdown).await;
    Ok(())
}

/// Serve `app` on `listener` under `limits` until `shutdown` completes. Accept errors (such as
/// running out of file descriptors) are logged and retried, never fatal.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf_size.max(8192));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(
                limit = limits.max_connections,
                "HTTP server: too many connections, closing a new one"
            );
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        let lifetime = limits.connection_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(lifetime, conn).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(error = %e, "HTTP connection ended"),
                Err(_) => tracing::debug!("HTTP connection closed after its lifetime"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("HTTP server: in-flight requests cut off at shutdown");
    }
}
