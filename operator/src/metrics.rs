//! Prometheus metrics of the operator and the HTTP endpoints that serve them.
//!
//! Owns the registry and the counters the executor bumps (reconciles, errors by low-cardinality
//! label, reconcile and planning duration, API writes by kind, events by reason, leadership),
//! and the axum router for `/metrics`, `/healthz` and `/readyz`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::Semaphore;

/// Label set with one `kind` label (what was written, what failed, which event).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The label value.
    pub kind: String,
}

/// Label set with one `resource` label (which watch).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResourceLabel {
    /// The watched resource (`virtualips`, `nodes`, `vrrpnodes`, `leases`, `secrets`).
    pub resource: String,
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
    /// Per watch: 1 while it delivers, 0 while it fails (API outage, expired resource
    /// version being re-listed, forbidden).
    pub watch_up: Family<ResourceLabel, Gauge>,
    /// 1 while the API server does not answer (the stall watchdog, [`apiclient::watchdog`]).
    pub api_stalled: Gauge,
    /// API stalls declared.
    pub api_stalls: Counter,
    ready: AtomicBool,
    stalled: AtomicBool,
    failing_watches: Mutex<BTreeSet<&'static str>>,
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
        let watch_up = Family::<ResourceLabel, Gauge>::default();
        let api_stalled = Gauge::default();
        let api_stalls = Counter::default();
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
        registry.register(
            "watch_up",
            "1 while the watch on a resource delivers, 0 while it fails",
            watch_up.clone(),
        );
        registry.register(
            "api_stalled",
            "1 while the Kubernetes API does not answer (no data for 1.5 s, then GET /version \
             unanswered for 3 s): every API connection is dropped and /readyz says not ready",
            api_stalled.clone(),
        );
        registry.register(
            "api_stalls",
            "Times the Kubernetes API stalled (stopped answering without closing connections)",
            api_stalls.clone(),
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
            watch_up,
            api_stalled,
            api_stalls,
            ready: AtomicBool::new(false),
            stalled: AtomicBool::new(false),
            failing_watches: Mutex::new(BTreeSet::new()),
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

    /// Whether `/readyz` answers 200: marked ready, the API answering and no watch failing
    /// (a leader whose watches fail or hang is not reconciling what the cluster holds now).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && !self.stalled.load(Ordering::Acquire)
            && self.failing_watches().is_empty()
    }

    /// Follow the stall watchdog's verdict.
    pub fn set_api_stalled(&self, stalled: bool) {
        if stalled && !self.stalled.swap(true, Ordering::AcqRel) {
            self.api_stalls.inc();
        } else if !stalled {
            self.stalled.store(false, Ordering::Release);
        }
        self.api_stalled.set(i64::from(stalled));
    }

    /// Note whether the watch on `resource` delivers (`up`) or fails. Returns true when this
    /// changes its state.
    pub fn watch_state(&self, resource: &'static str, up: bool) -> bool {
        self.watch_up
            .get_or_create(&ResourceLabel {
                resource: resource.into(),
            })
            .set(i64::from(up));
        let mut failing = self
            .failing_watches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if up {
            failing.remove(resource)
        } else {
            failing.insert(resource)
        }
    }

    /// The watches failing now.
    pub fn failing_watches(&self) -> Vec<&'static str> {
        self.failing_watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect()
    }

    /// Forget every watch (the controller stopped: a standby replica runs none).
    pub fn clear_watches(&self) {
        self.watch_up.clear();
        self.failing_watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
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

/// Resource limits of the HTTP server. The endpoints are reachable from the pod network, so
/// slow or half-open clients must not hold memory or starve the kubelet's probes: headers must
/// arrive within a deadline, a connection lives a bounded time, read buffers are bounded and at
/// most a fixed number of connections are served at once (the excess is closed immediately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A request's headers must be complete this long after reading them starts (this also
    /// closes idle keep-alive connections).
    pub header_read_timeout: Duration,
    /// A connection is closed this long after it was accepted.
    pub connection_timeout: Duration,
    /// Largest read buffer per connection, bytes (hyper's minimum is 8192).
    pub max_buf_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            header_read_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(60),
            max_buf_size: 16 * 1024,
        }
    }
}

/// Serve the router on `addr` until the future is dropped. Only GET/HEAD routes exist;
/// nothing accepts writes.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<(), crate::Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| crate::Error::Http { addr, source: e })?;
    serve_router(listener, router(metrics), Limits::default()).await;
    Ok(())
}

/// Serve `app` on `listener` under `limits` until the future is dropped. Accept errors (such
/// as running out of file descriptors) are logged and retried, never fatal.
pub async fn serve_router(listener: tokio::net::TcpListener, app: Router, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_buf_size.max(8192));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "HTTP server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
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

    #[test]
    fn a_stalled_api_makes_the_operator_unready_and_is_counted_once_per_stall() {
        let m = Metrics::new();
        m.set_ready(true);
        assert!(m.is_ready());
        m.set_api_stalled(true);
        m.set_api_stalled(true);
        assert!(!m.is_ready());
        let text = m.encode().unwrap();
        assert!(text.contains("kube_vrrp_operator_api_stalled 1"), "{text}");
        assert!(
            text.contains("kube_vrrp_operator_api_stalls_total 1"),
            "{text}"
        );
        m.set_api_stalled(false);
        assert!(m.is_ready());
        assert!(
            m.encode()
                .unwrap()
                .contains("kube_vrrp_operator_api_stalled 0")
        );
    }

    #[tokio::test]
    async fn endpoints_answer() {
        let m = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(m.clone());
        let limits = Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_millis(500),
            ..Limits::default()
        };
        let server = tokio::spawn(serve_router(listener, app, limits));
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

        // No endpoint accepts writes.
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for path in ["/metrics", "/healthz", "/readyz"] {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 405"), "POST {path}: {out}");
        }

        // Half-open connections fill the 4 slots, are closed after the header timeout, and
        // then a normal request is served again.
        let mut held = Vec::new();
        for _ in 0..20 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = s.write_all(b"GET /hea").await;
            held.push(s);
        }
        for s in &mut held {
            let mut buf = [0u8; 256];
            let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0) | Err(_))),
                "half-open connection not closed: {read:?}"
            );
        }
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        server.abort();
    }

    /// Resident set size of this process in bytes (`VmRSS` in /proc/self/status).
    fn rss_bytes() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    /// Raise the soft fd limit to the hard one.
    fn raise_fd_limit() -> u64 {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: plain syscalls on a local struct.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
        lim.rlim_cur
    }

    /// 10,000 half-open requests (the issue measured 56 → 106 MB on the unhardened server):
    /// this process, server and clients together, stays below 64 MiB, and /healthz is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ten_thousand_half_open_connections_leave_rss_below_64_mib() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const HALF_OPEN: usize = 10_000;
        const RSS_LIMIT: u64 = 64 * 1024 * 1024;
        assert!(
            raise_fd_limit() >= HALF_OPEN as u64 + 1000,
            "fd limit too low"
        );
        let m = Arc::new(Metrics::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_router(listener, router(m), Limits::default()));
        let before = rss_bytes();
        let mut peak = before;
        let mut held = Vec::with_capacity(HALF_OPEN);
        for i in 0..HALF_OPEN {
            if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
                let _ = s
                    .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .await;
                held.push(s);
            }
            if i % 1000 == 999 {
                peak = peak.max(rss_bytes());
            }
        }
        let get = || async move {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let _ = s
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let mut out = String::new();
            let _ = s.read_to_string(&mut out).await;
            out
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            peak = peak.max(rss_bytes());
            if get().await.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no answer under the flood"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "RSS before {:.1} MiB, peak with {} half-open connections {:.1} MiB",
            before as f64 / 1048576.0,
            held.len(),
            peak as f64 / 1048576.0
        );
        assert!(peak < RSS_LIMIT, "RSS {peak} bytes");
        drop(held);
        server.abort();
    }
}
