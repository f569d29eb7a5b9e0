//! `track.http`: a GET of a URL every `interval`, made by the agent itself (no shell, no curl).
//!
//! Scheduling is a `vrrp_script`'s: the first check starts at once, later ones on a fixed
//! `interval` grid, and a grid point that falls while a check is still going is skipped. A
//! check succeeds when the response's status code is `expect_status` and arrives within
//! `timeout`; anything else fails: another code, a name that does not resolve, a refused or
//! reset connection, a TLS or certificate error, the timeout. Redirects are not followed (the
//! first response decides), and the body is never read: the connection is closed once the
//! status line and headers are in. Every check is a new connection (`Connection: close`), so
//! a server that stopped accepting is noticed at once.
//!
//! TLS (`https://`) uses rustls with the ring provider. The server certificate is checked
//! against the CA certificates in `ca_file` (re-read when the file changes) or, without one,
//! the system's trusted roots (loaded once), for the name `server_name` or else the URL's host
//! (an IP address is checked against the certificate's IP SANs). `insecure_skip_verify`
//! accepts any certificate, like curl's `-k`; the handshake signatures are still verified.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crds::validate::{HttpUrl, parse_http_url};
use crds::vrrpnode::ResolvedTrackHttp;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::Observation;
use crate::Error;

/// What an HTTP check requests and how it judges the answer (rise/fall/weight belong to the
/// core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSpec {
    /// Tracker name.
    pub name: String,
    /// The URL as configured (for logs).
    pub url: String,
    /// The URL, parsed.
    pub target: HttpUrl,
    /// The status code that counts as success.
    pub expect_status: u16,
    /// Time between check starts.
    pub interval: Duration,
    /// Give up on a check after this long.
    pub timeout: Duration,
    /// How the server's certificate is checked (`https://` only).
    pub tls: Option<TlsTrust>,
}

/// How an `https://` check trusts the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsTrust {
    /// The system's trusted roots, for `name`.
    System {
        /// The name the certificate must carry.
        name: String,
    },
    /// The CA certificates in a PEM file, for `name`.
    CaFile {
        /// The PEM file.
        path: PathBuf,
        /// The name the certificate must carry.
        name: String,
    },
    /// Any certificate (curl's `-k`); `name` is only sent as SNI.
    Insecure {
        /// Sent as SNI.
        name: String,
    },
}

impl TlsTrust {
    fn name(&self) -> &str {
        match self {
            TlsTrust::System { name }
            | TlsTrust::CaFile { name, .. }
            | TlsTrust::Insecure { name } => name,
        }
    }
}

impl HttpSpec {
    /// Validate a resolved HTTP check; errors name the field.
    pub fn from_resolved(h: &ResolvedTrackHttp) -> Result<Self, Error> {
        let field = |f: &str| format!("track.http[{}].{f}", h.name);
        if h.name.is_empty() {
            return Err(Error::Config("track.http[].name: must not be empty".into()));
        }
        let target = parse_http_url(&h.url)
            .map_err(|why| Error::Config(format!("{}: {:?} {why}", field("url"), h.url)))?;
        if !(100..=599).contains(&h.expect_status) {
            return Err(Error::Config(format!(
                "{}: {} is not an HTTP status code (100-599)",
                field("expectStatus"),
                h.expect_status
            )));
        }
        if h.interval_ms == 0 {
            return Err(Error::Config(format!(
                "{}: must be greater than 0",
                field("intervalMs")
            )));
        }
        let interval = Duration::from_millis(u64::from(h.interval_ms));
        let timeout = if h.timeout_ms == 0 {
            interval
        } else {
            Duration::from_millis(u64::from(h.timeout_ms))
        };
        let tls = if target.https {
            let name = h.server_name.clone().unwrap_or_else(|| target.host.clone());
            if ServerName::try_from(name.clone()).is_err() {
                return Err(Error::Config(format!(
                    "{}: {name:?} is not a DNS name or IP address",
                    field("serverName")
                )));
            }
            Some(match (&h.ca_file, h.insecure_skip_verify) {
                (_, true) => TlsTrust::Insecure { name },
                (Some(path), false) => TlsTrust::CaFile {
                    path: PathBuf::from(path),
                    name,
                },
                (None, false) => TlsTrust::System { name },
            })
        } else {
            for (f, set) in [
                ("caFile", h.ca_file.is_some()),
                ("serverName", h.server_name.is_some()),
                ("insecureSkipVerify", h.insecure_skip_verify),
            ] {
                if set {
                    return Err(Error::Config(format!(
                        "{}: is only used with an https:// url",
                        field(f)
                    )));
                }
            }
            None
        };
        Ok(Self {
            name: h.name.clone(),
            url: h.url.clone(),
            target,
            expect_status: h.expect_status,
            interval,
            timeout,
            tls,
        })
    }
}

/// How one check ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HttpOutcome {
    /// A response with this status code arrived.
    Status(u16),
    /// No response within the timeout.
    TimedOut,
    /// No response: why (connection refused, certificate error, ...).
    Failed(String),
}

impl std::fmt::Display for HttpOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpOutcome::Status(code) => write!(f, "status {code}"),
            HttpOutcome::TimedOut => f.write_str("timed out"),
            HttpOutcome::Failed(why) => f.write_str(why),
        }
    }
}

/// Details of one check, for logs, metrics and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpDetail {
    /// How it ended.
    pub outcome: HttpOutcome,
    /// How long it took.
    pub duration: Duration,
}

/// The TLS client settings of one tracker, built once; a CA file is re-read when its size or
/// modification time changes.
struct Tls {
    trust: TlsTrust,
    config: Option<Arc<ClientConfig>>,
    ca_stamp: Option<(u64, SystemTime)>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(roots: Option<RootCertStore>) -> Result<ClientConfig, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let mut config = match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(match found.errors.first() {
            Some(e) => format!("no trusted system CA certificates: {e}"),
            None => "no trusted system CA certificates".into(),
        });
    }
    Ok(roots)
}

fn file_roots(path: &std::path::Path) -> Result<RootCertStore, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("cannot read caFile {shown}: {e}"))?;
    let mut roots = RootCertStore::empty();
    let mut n = 0;
    for cert in CertificateDer::pem_slice_iter(&pem) {
        // Say which file and why, never what it holds.
        let cert = cert.map_err(|_| format!("caFile {shown} is not valid PEM"))?;
        roots
            .add(cert)
            .map_err(|e| format!("caFile {shown} holds an unusable certificate: {e}"))?;
        n += 1;
    }
    if n == 0 {
        return Err(format!("caFile {shown} holds no PEM certificate"));
    }
    Ok(roots)
}

impl Tls {
    fn new(trust: TlsTrust) -> Self {
        Self {
            trust,
            config: None,
            ca_stamp: None,
        }
    }

    fn config(&mut self) -> Result<Arc<ClientConfig>, String> {
        let stamp = match &self.trust {
            TlsTrust::CaFile { path, .. } => {
                let meta = std::fs::metadata(path)
                    .map_err(|e| format!("cannot read caFile {}: {e}", path.display()))?;
                Some((
                    meta.len(),
                    meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                ))
            }
            _ => None,
        };
        if let Some(c) = &self.config
            && stamp == self.ca_stamp
        {
            return Ok(Arc::clone(c));
        }
        let roots = match &self.trust {
            TlsTrust::System { .. } => Some(system_roots()?),
            TlsTrust::CaFile { path, .. } => Some(file_roots(path)?),
            TlsTrust::Insecure { .. } => None,
        };
        let c = Arc::new(client_config(roots)?);
        self.config = Some(Arc::clone(&c));
        self.ca_stamp = stamp;
        Ok(c)
    }
}

/// curl's `-k`: any certificate is accepted; the handshake signature must still be made with
/// the key of the certificate presented.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The `Host` header value: `host[:port]` with IPv6 in brackets, the port only when not the
/// scheme's default.
fn host_header(u: &HttpUrl) -> String {
    let host = if u.host.contains(':') {
        format!("[{}]", u.host)
    } else {
        u.host.clone()
    };
    let default = if u.https { 443 } else { 80 };
    if u.port == default {
        host
    } else {
        format!("{host}:{}", u.port)
    }
}

/// One check without the timeout (the caller bounds it).
async fn check(spec: &HttpSpec, tls: Option<&mut Tls>) -> HttpOutcome {
    let u = &spec.target;
    let tcp = match u.host.parse::<IpAddr>() {
        Ok(ip) => TcpStream::connect((ip, u.port)).await,
        Err(_) => TcpStream::connect((u.host.as_str(), u.port)).await,
    };
    let tcp = match tcp {
        Ok(s) => s,
        Err(e) => return HttpOutcome::Failed(format!("cannot connect to {}: {e}", host_header(u))),
    };
    let _ = tcp.set_nodelay(true);
    let request = match hyper::Request::get(u.path.as_str())
        .header(hyper::header::HOST, host_header(u))
        .header(
            hyper::header::USER_AGENT,
            concat!("kube-vrrp-agent/", env!("CARGO_PKG_VERSION")),
        )
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return HttpOutcome::Failed(format!("cannot build the request: {e}")),
    };
    match tls {
        None => send(TokioIo::new(tcp), request).await,
        Some(tls) => {
            let config = match tls.config() {
                Ok(c) => c,
                Err(why) => return HttpOutcome::Failed(why),
            };
            let name = match ServerName::try_from(tls.trust.name().to_string()) {
                Ok(n) => n,
                Err(e) => return HttpOutcome::Failed(format!("TLS server name: {e}")),
            };
            let connector = tokio_rustls::TlsConnector::from(config);
            match connector.connect(name, tcp).await {
                Ok(stream) => send(TokioIo::new(stream), request).await,
                Err(e) => HttpOutcome::Failed(format!("TLS handshake failed: {e}")),
            }
        }
    }
}

async fn send<T>(io: TokioIo<T>, request: hyper::Request<Empty<Bytes>>) -> HttpOutcome
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(x) => x,
        Err(e) => return HttpOutcome::Failed(format!("HTTP: {e}")),
    };
    // Drives the connection until the response head is in; dropped (closing it) after.
    let driver = tokio::spawn(conn);
    let outcome = match sender.send_request(request).await {
        Ok(resp) => HttpOutcome::Status(resp.status().as_u16()),
        Err(e) => HttpOutcome::Failed(format!("HTTP: {e}")),
    };
    driver.abort();
    outcome
}

/// The state one tracker keeps between checks.
pub struct Checker {
    spec: HttpSpec,
    tls: Option<Tls>,
}

impl Checker {
    /// A checker for `spec`.
    pub fn new(spec: HttpSpec) -> Self {
        let tls = spec.tls.clone().map(Tls::new);
        Self { spec, tls }
    }

    /// Run one check, bounded by the timeout.
    pub async fn check_once(&mut self) -> HttpDetail {
        let start = Instant::now();
        let outcome =
            match tokio::time::timeout(self.spec.timeout, check(&self.spec, self.tls.as_mut()))
                .await
            {
                Ok(o) => o,
                Err(_) => HttpOutcome::TimedOut,
            };
        HttpDetail {
            outcome,
            duration: start.elapsed(),
        }
    }
}

/// The tracker task: checks `spec` forever on its interval grid, sending an
/// [`Observation::Http`] after each check. Ends when the receiver is gone.
pub async fn run_tracker(spec: HttpSpec, tx: mpsc::Sender<Observation>) {
    let mut checker = Checker::new(spec.clone());
    let start = Instant::now();
    let step = spec.interval.as_nanos().max(1);
    let mut k: u128 = 0;
    let mut last: Option<(bool, HttpOutcome)> = None;
    loop {
        let due = start + Duration::from_nanos(u64::try_from(k * step).unwrap_or(u64::MAX));
        tokio::time::sleep_until(due).await;
        let detail = checker.check_once().await;
        // The next grid point after now: checks never overlap (as scripts).
        k = (k + 1).max(start.elapsed().as_nanos().div_ceil(step));
        let success = detail.outcome == HttpOutcome::Status(spec.expect_status);
        // Log changes of verdict and of the reason, not every check.
        let key = (success, detail.outcome.clone());
        if last.as_ref() != Some(&key) {
            let name = &spec.name;
            if success {
                tracing::info!(tracker = %name, url = %spec.url, "HTTP check `{name}` now succeeding ({})", detail.outcome);
            } else {
                tracing::warn!(tracker = %name, url = %spec.url, "HTTP check `{name}` now failing: {} (expected status {})", detail.outcome, spec.expect_status);
            }
            last = Some(key);
        }
        if tx
            .send(Observation::Http {
                tracker: spec.name.clone(),
                success,
                detail,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(url: &str) -> ResolvedTrackHttp {
        ResolvedTrackHttp {
            name: "readyz".into(),
            url: url.into(),
            expect_status: 200,
            interval_ms: 1000,
            timeout_ms: 0,
            rise: 1,
            fall: 1,
            ..Default::default()
        }
    }

    #[test]
    fn spec_validation_names_the_field() {
        let s = HttpSpec::from_resolved(&resolved("https://127.0.0.1:6443/readyz")).unwrap();
        assert_eq!(
            s.timeout,
            Duration::from_secs(1),
            "timeout defaults to interval"
        );
        assert_eq!(
            s.tls,
            Some(TlsTrust::System {
                name: "127.0.0.1".into()
            })
        );
        let mut r = resolved("https://127.0.0.1:6443/readyz");
        r.ca_file = Some("/etc/kubernetes/pki/ca.crt".into());
        r.server_name = Some("kubernetes".into());
        assert_eq!(
            HttpSpec::from_resolved(&r).unwrap().tls,
            Some(TlsTrust::CaFile {
                path: "/etc/kubernetes/pki/ca.crt".into(),
                name: "kubernetes".into()
            })
        );
        type Mutation = fn(&mut ResolvedTrackHttp);
        let cases: [(Mutation, &str); 5] = [
            (|r| r.url = "gopher://x/".into(), "track.http[readyz].url"),
            (|r| r.expect_status = 42, "track.http[readyz].expectStatus"),
            (|r| r.interval_ms = 0, "track.http[readyz].intervalMs"),
            (
                |r| {
                    r.url = "http://127.0.0.1/".into();
                    r.insecure_skip_verify = true;
                },
                "track.http[readyz].insecureSkipVerify",
            ),
            (
                |r| r.server_name = Some("bad name".into()),
                "track.http[readyz].serverName",
            ),
        ];
        for (mutate, field) in cases {
            let mut r = resolved("https://127.0.0.1:6443/readyz");
            mutate(&mut r);
            let e = HttpSpec::from_resolved(&r).unwrap_err().to_string();
            assert!(e.contains(field), "{field}: {e}");
        }
    }

    #[test]
    fn host_header_brackets_v6_and_drops_default_ports() {
        let h = |u: &str| host_header(&parse_http_url(u).unwrap());
        assert_eq!(h("https://127.0.0.1:6443/readyz"), "127.0.0.1:6443");
        assert_eq!(h("https://example.com/"), "example.com");
        assert_eq!(h("http://[2001:db8::1]:8080/"), "[2001:db8::1]:8080");
        assert_eq!(h("http://[2001:db8::1]/"), "[2001:db8::1]");
    }

    #[test]
    fn ca_file_problems_say_which_file_not_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = file_roots(&missing).unwrap_err();
        assert!(
            e.contains("cannot read caFile") && e.contains("missing.pem"),
            "{e}"
        );
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "secret-token-123\n").unwrap();
        let e = file_roots(&junk).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        assert!(!e.contains("secret-token-123"), "{e}");
    }
}
