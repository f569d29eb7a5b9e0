//! Prometheus metrics of the operator and the HTTP endpoints that serve them.
//!
//! Owns the registry and the counters the executor bumps (reconciles, errors by low-cardinality
//! label, reconcile and planning duration, API writes by kind, events by reason, leadership),
//! and the axum router for `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set with one `kind` label (what was written, what failed, which event).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The label value.
    pub kind: String,
}

/// All operator metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reconciles started.
    pub reconciles: Counter,
    /// Failed reconciles by error kind ([`crate::Error::metric_label`]).
    pub errors: Family<KindLabel, Counter>,
    /// Reconcile duration, seconds.
    pub reconcile_duration: Histogram,
    /// Planner run duration, seconds.
    pub plan_duration: Histogram,
    /// API writes by kind: `vrrpnode`, `status`, `finalizer`.
    pub writes: Family<KindLabel, Counter>,
    /// Events published by reason.
    pub events: Family<KindLabel, Counter>,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered under the `kube_vrrp_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kube_vrrp_operator");
        let reconciles = Counter::default();
        let errors = Family::<KindLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let plan_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let writes = Family::<KindLabel, Counter>::default();
        let events = Family::<KindLabel, Counter>::default();
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "VirtualIP reconciles started",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            reconcile_duration.clone(),
        );
        registry.register(
            "plan_duration_seconds",
            "Planner run duration",
            plan_duration.clone(),
        );
        registry.register(
            "writes",
            "API writes by kind (vrrpnode, status, finalizer)",
            writes.clone(),
        );
        registry.register("events", "Events published by reason", events.clone());
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            reconcile_duration,
            plan_duration,
            writes,
            events,
            leader,
            ready: AtomicBool::new(false),
        }
    }

    /// Count one write of `kind`.
    pub fn write(&self, kind: &str) {
        self.writes
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Count one failed reconcile.
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    /// Mark the process ready (or not) for `/readyz`.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The router for `/metrics`, `/healthz` and `/readyz`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(serve_ready))
        .with_state(metrics)
}

async fn serve_metrics(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    match m.encode() {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}

async fn serve_ready(State(m): State<Arc<Metrics>>) -> impl IntoResponse {
    if m.is_ready() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Serve the router on `addr` until the future is dropped.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), crate::Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::Http { addr, source: e })?;
    axum::serve(listener, router(metrics))
        .await
        .map_err(|e| crate::Error::Http { addr, source: e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let m = Metrics::new();
        m.reconciles.inc();
        m.write("status");
        m.error("kube");
        let text = m.encode().unwrap();
        assert!(
            text.contains("kube_vrrp_operator_reconciles_total 1"),
            "{text}"
        );
        assert!(
            text.contains("kube_vrrp_operator_writes_total{kind=\"status\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kube_vrrp_operator_reconcile_errors_total{kind=\"kube\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("kube_vrrp_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let m = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(m.clone());
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        m.set_ready(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"));
        assert!(metrics.contains("kube_vrrp_operator_leader"));
        server.abort();
    }
}
