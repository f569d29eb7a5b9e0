//! `track.http` against real HTTP(S) servers on loopback: status codes, certificate checks
//! (CA file, server name, `insecureSkipVerify`, the wrong CA), a CA file replaced while the
//! tracker runs, a server that never answers (timeout), one that is gone (refused), and the
//! tracker task's reports on its interval grid.
//!
//! The servers are in this process: hyper behind tokio-rustls, with certificates made by rcgen
//! for `127.0.0.1` and `kubernetes` (like kubeadm's API server certificate, which is not for
//! 127.0.0.1 in practice: `serverName` covers that).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::time::Duration;

use agent::track::http::{Checker, HttpSpec, run_tracker};
use agent::track::{HttpOutcome, Observation};
use crds::vrrpnode::ResolvedTrackHttp;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(cn: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name.push(DnType::CommonName, cn);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".into(), "kubernetes".into()]).unwrap();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A test server: answers every request with `status`, or never when `hang` is set.
struct Server {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hang: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn server(tls: Option<&Pki>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(200));
    let hang = Arc::new(AtomicBool::new(false));
    let acceptor = tls.map(|p| {
        let certs = vec![CertificateDer::from_pem_slice(p.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(p.key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg))
    });
    let (st, hg) = (Arc::clone(&status), Arc::clone(&hang));
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (st, hg, acceptor) = (Arc::clone(&st), Arc::clone(&hg), acceptor.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |_req: hyper::Request<Incoming>| {
                    let (st, hg) = (Arc::clone(&st), Arc::clone(&hg));
                    async move {
                        if hg.load(Ordering::SeqCst) {
                            std::future::pending::<()>().await;
                        }
                        let mut resp = hyper::Response::new(http_body_util::Empty::<
                            hyper::body::Bytes,
                        >::new());
                        *resp.status_mut() =
                            hyper::StatusCode::from_u16(st.load(Ordering::SeqCst)).unwrap();
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(s) = a.accept(tcp).await {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(TokioIo::new(tcp), svc).await;
                    }
                }
            });
        }
    });
    Server {
        addr,
        status,
        hang,
        task,
    }
}

fn check(url: String) -> ResolvedTrackHttp {
    ResolvedTrackHttp {
        name: "readyz".into(),
        url,
        expect_status: 200,
        interval_ms: 200,
        timeout_ms: 500,
        rise: 1,
        fall: 1,
        ..Default::default()
    }
}

async fn once(h: &ResolvedTrackHttp) -> HttpOutcome {
    let mut c = Checker::new(HttpSpec::from_resolved(h).unwrap());
    c.check_once().await.outcome
}

#[tokio::test]
async fn plain_http_status_codes() {
    let s = server(None).await;
    let h = check(format!("http://{}/healthz", s.addr));
    assert_eq!(once(&h).await, HttpOutcome::Status(200));
    s.status.store(503, Ordering::SeqCst);
    assert_eq!(once(&h).await, HttpOutcome::Status(503));
    let mut h204 = h.clone();
    h204.expect_status = 503;
    assert_eq!(once(&h204).await, HttpOutcome::Status(503));
}

#[tokio::test]
async fn https_with_ca_file_server_name_and_insecure() {
    let p = pki("kube-vrrp-test-ca");
    let other = pki("some-other-ca");
    let s = server(Some(&p)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &p.ca_pem).unwrap();
    let wrong = dir.path().join("wrong.crt");
    std::fs::write(&wrong, &other.ca_pem).unwrap();

    let mut h = check(format!("https://127.0.0.1:{}/readyz", s.addr.port()));
    h.ca_file = Some(ca.display().to_string());
    assert_eq!(once(&h).await, HttpOutcome::Status(200), "IP SAN checked");

    let mut by_name = h.clone();
    by_name.server_name = Some("kubernetes".into());
    assert_eq!(
        once(&by_name).await,
        HttpOutcome::Status(200),
        "serverName checked"
    );

    let mut wrong_name = h.clone();
    wrong_name.server_name = Some("etcd".into());
    match once(&wrong_name).await {
        HttpOutcome::Failed(why) => assert!(why.contains("TLS handshake failed"), "{why}"),
        other => panic!("a certificate for another name must fail: {other:?}"),
    }

    let mut wrong_ca = h.clone();
    wrong_ca.ca_file = Some(wrong.display().to_string());
    match once(&wrong_ca).await {
        HttpOutcome::Failed(why) => assert!(why.contains("certificate"), "{why}"),
        other => panic!("the wrong CA must fail: {other:?}"),
    }

    // System roots do not know the test CA.
    let mut system = h.clone();
    system.ca_file = None;
    assert!(matches!(once(&system).await, HttpOutcome::Failed(_)));

    let mut insecure = system.clone();
    insecure.insecure_skip_verify = true;
    assert_eq!(once(&insecure).await, HttpOutcome::Status(200), "curl -k");
}

#[tokio::test]
async fn a_replaced_ca_file_is_read_again() {
    let p = pki("kube-vrrp-test-ca");
    let other = pki("some-other-ca");
    let s = server(Some(&p)).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &other.ca_pem).unwrap();
    let mut h = check(format!("https://127.0.0.1:{}/readyz", s.addr.port()));
    h.ca_file = Some(ca.display().to_string());
    let mut c = Checker::new(HttpSpec::from_resolved(&h).unwrap());
    assert!(matches!(
        c.check_once().await.outcome,
        HttpOutcome::Failed(_)
    ));
    // Rotation: the file now holds both CAs (a different length, so a change is seen).
    std::fs::write(&ca, format!("{}{}", other.ca_pem, p.ca_pem)).unwrap();
    assert_eq!(c.check_once().await.outcome, HttpOutcome::Status(200));
    std::fs::remove_file(&ca).unwrap();
    match c.check_once().await.outcome {
        HttpOutcome::Failed(why) => assert!(why.contains("cannot read caFile"), "{why}"),
        other => panic!("a missing CA file fails the check: {other:?}"),
    }
}

#[tokio::test]
async fn timeouts_and_refused_connections_fail() {
    let s = server(None).await;
    s.hang.store(true, Ordering::SeqCst);
    let mut h = check(format!("http://{}/", s.addr));
    h.timeout_ms = 150;
    let mut c = Checker::new(HttpSpec::from_resolved(&h).unwrap());
    let d = c.check_once().await;
    assert_eq!(d.outcome, HttpOutcome::TimedOut);
    assert!(
        d.duration >= Duration::from_millis(150) && d.duration < Duration::from_secs(2),
        "{:?}",
        d.duration
    );
    let addr = s.addr;
    drop(s);
    // The listener is gone once the aborted task is dropped.
    let h = check(format!("http://{addr}/"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match once(&h).await {
            HttpOutcome::Failed(why) => {
                assert!(why.contains("cannot connect"), "{why}");
                break;
            }
            _ if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            other => panic!("expected a refused connection: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_tracker_reports_every_check_on_its_interval() {
    let s = server(None).await;
    let h = check(format!("http://{}/", s.addr));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let task = tokio::spawn(run_tracker(HttpSpec::from_resolved(&h).unwrap(), tx));
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    for i in 0..4 {
        if i == 2 {
            s.status.store(500, Ordering::SeqCst);
        }
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Observation::Http {
                tracker, success, ..
            })) => {
                assert_eq!(tracker, "readyz");
                got.push(success);
            }
            other => panic!("no observation: {other:?}"),
        }
    }
    let took = t0.elapsed();
    task.abort();
    assert_eq!(got[..2], [true, true]);
    assert!(!got[3], "{got:?}");
    // Four checks on a 200 ms grid: the first at once, the fourth at 600 ms.
    assert!(
        took >= Duration::from_millis(550) && took < Duration::from_secs(3),
        "{took:?}"
    );
}
