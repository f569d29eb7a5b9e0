//! kube's client stack, rebuilt on [`TrackedConnector`].
//!
//! kube 5's `ClientBuilder::try_from(Config)` creates its `HttpConnector` inside and offers no
//! hook to wrap it, so this assembles the same stack from kube's public pieces
//! ([`ConfigExt`]): its rustls connector (the kubeconfig's CA, client certificate, server
//! name), hyper-timeout's connect/read/write timeouts from the [`kube::Config`], the base-URI,
//! auth (token files and exec credentials, refreshed as kube does), extra-headers and (when
//! `default_retry` is set) retry layers, and a `TraceLayer` with kube's `HTTP` span. What it
//! leaves out: proxies (kube's `http-proxy`/`socks5` features are not enabled here either),
//! gzip (likewise) and the exec-certificate expiry kube records on the `Client`
//! (`Client::valid_until`, which nothing in kube-vrrp reads).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::{Body, ClientBuilder, ConfigExt, DynBody};
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};
use tower_http::ServiceExt as _;
use tower_http::trace::TraceLayer;

use crate::Error;
use crate::conn::{Liveness, TrackedConnector};

/// The boxed service a [`ClientBuilder`] from [`client_builder`] starts with.
pub type ApiService = BoxService<Request<Body>, Response<Box<DynBody>>, BoxError>;

/// Idle time before the first TCP keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Time between TCP keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// Unanswered keepalive probes before the kernel drops the connection.
pub const KEEPALIVE_RETRIES: u32 = 3;
/// `TCP_USER_TIMEOUT`: sent data unacknowledged this long drops the connection.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`ClientBuilder`] for `config` whose connections report to `live` (add layers, then
/// `.build()`).
pub fn client_builder(
    config: &kube::Config,
    live: Arc<Liveness>,
) -> Result<ClientBuilder<ApiService>, Error> {
    if let Some(proxy) = &config.proxy_url {
        return Err(Error::Unsupported(format!(
            "proxy {proxy} in the kubeconfig: API proxies are not supported"
        )));
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(KEEPALIVE_IDLE));
    http.set_keepalive_interval(Some(KEEPALIVE_INTERVAL));
    http.set_keepalive_retries(Some(KEEPALIVE_RETRIES));
    http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    let https = config.rustls_https_connector_with_connector(TrackedConnector::new(http, live))?;
    let mut connector = TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let hyper_client: hyper_util::client::legacy::Client<_, Body> =
        hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);

    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<Body>| {
                    tracing::debug_span!(
                        "HTTP",
                        http.method = %req.method(),
                        http.url = %req.uri(),
                        http.status_code = tracing::field::Empty,
                        otel.name = req.extensions().get::<&'static str>().unwrap_or(&"HTTP"),
                        otel.kind = "client",
                        otel.status_code = tracing::field::Empty,
                    )
                })
                .on_request(|_: &Request<Body>, _: &tracing::Span| tracing::debug!("requesting"))
                .on_response(
                    |res: &Response<hyper::body::Incoming>, _: Duration, span: &tracing::Span| {
                        let status = res.status();
                        span.record("http.status_code", status.as_u16());
                        if status.is_client_error() || status.is_server_error() {
                            span.record("otel.status_code", "ERROR");
                        }
                    },
                )
                .on_body_chunk(())
                .on_eos(
                    |_: Option<&http::HeaderMap>, _: Duration, _: &tracing::Span| {
                        tracing::debug!("stream closed")
                    },
                )
                // The callers log failures once per outage themselves.
                .on_failure(
                    |ec: tower_http::classify::ServerErrorsFailureClass,
                     _: Duration,
                     span: &tracing::Span| {
                        span.record("otel.status_code", "ERROR");
                        tracing::debug!("failed: {ec}");
                    },
                ),
        )
        .map_err(BoxError::from)
        .service(hyper_client);
    let service = service
        .map_response_body(|body| {
            Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>
        })
        .boxed();
    Ok(ClientBuilder::new(
        service,
        config.default_namespace.clone(),
    ))
}
