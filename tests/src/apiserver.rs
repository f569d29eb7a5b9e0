//! A real kube-apiserver (and etcd, optionally kube-controller-manager) for end-to-end tests,
//! following envtest's convention: `KUBEBUILDER_ASSETS=<dir>` names a directory holding
//! `kube-apiserver` and `etcd`, optionally `kube-controller-manager` and `kubectl` (else
//! `kubectl` from `PATH`). Without it [`ApiServer::start`] returns `Ok(None)` and the test
//! prints `SKIPPED: no API server (set KUBEBUILDER_ASSETS)` ([`skip_unless_api!`]).
//!
//! Everything listens on 127.0.0.1 on free ports of its own; certificates (CA, serving cert
//! for 127.0.0.1/localhost, an admin client cert in `system:masters`, the service-account
//! signing key) are generated with rcgen into a temporary directory that also holds etcd's
//! data, the logs and the kubeconfigs. Dropping the [`ApiServer`] kills what it started, by
//! PID, and removes that directory (also during a panic unwind, when it first prints the tail
//! of the API server's log).
//!
//! Also here: [`NodeSim`], a stand-in kubelet (a Node with addresses and a Ready condition,
//! and a Lease in `kube-node-lease` renewed from a background thread), and
//! [`NetnsForward`], which makes the API server reachable at the same `127.0.0.1:<port>` from
//! inside a network namespace (whose loopback is its own) without touching any interface but
//! that namespace's `lo`.
//!
//! Gotchas: without kube-controller-manager nothing creates the `default` ServiceAccount of a
//! namespace, so the ServiceAccount admission plugin rejects Pods until a test creates it;
//! one `ApiServer` per test (a `static` one is never dropped, and its processes outlive the
//! test binary); `/readyz` does not notice a dead etcd, see [`ApiServer::etcd_healthy`].

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::{LabError, Result};
use crate::netns;
use crate::proc::{ProcGuard, ProcRegistry};
use crate::wait::wait_until;
pub use crate::wait::{holds_every, wait_every};

/// The line a test prints (to stderr) when there is no API server to run.
pub const SKIP_LINE: &str = "SKIPPED: no API server (set KUBEBUILDER_ASSETS)";

/// The environment variable naming the directory with the binaries.
pub const ASSETS_ENV: &str = "KUBEBUILDER_ASSETS";

/// The service CIDR handed to the API server (documentation range; only an allocation range).
pub const SERVICE_CIDR: &str = "192.0.2.0/24";

/// The service-account issuer (and default audience) of the test server.
pub const SA_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// Starts an [`ApiServer`] (default options, or the given [`ApiServerOptions`]) and evaluates
/// to it; without one, prints [`SKIP_LINE`] to stderr and fails the test, or returns from it
/// when `KUBE_VRRP_ALLOW_SKIP=1` ([`print_skip_for`]). A start that fails for another reason
/// panics.
///
/// ```ignore
/// let api = lab::skip_unless_api!();
/// let api = lab::skip_unless_api!(ApiServerOptions { controller_manager: true, ..Default::default() });
/// ```
#[macro_export]
macro_rules! skip_unless_api {
    () => {
        $crate::skip_unless_api!($crate::apiserver::ApiServerOptions::default())
    };
    ($opts:expr) => {{
        let opts: $crate::apiserver::ApiServerOptions = $opts;
        match $crate::apiserver::ApiServer::start_with(opts.clone()) {
            Ok(Some(api)) => api,
            Ok(None) => {
                $crate::apiserver::print_skip_for(&opts);
                return;
            }
            Err(e) => panic!("starting the API server: {e}"),
        }
    }};
}
pub use crate::skip_unless_api;

/// Prints [`SKIP_LINE`] straight to fd 2 (the test harness hides captured prints), plus, when
/// `KUBEBUILDER_ASSETS` is set but incomplete, a second line saying what is missing.
pub fn print_skip() {
    print_skip_for(&ApiServerOptions::default());
}

/// Like [`print_skip`], also naming a missing kube-controller-manager if `opts` asks for one.
pub fn print_skip_for(opts: &ApiServerOptions) {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{SKIP_LINE}");
    if std::env::var_os(ASSETS_ENV).is_some() {
        match Assets::find() {
            Err(why) => {
                let _ = writeln!(err, "  ({why})");
            }
            Ok(a) if opts.controller_manager && a.controller_manager.is_none() => {
                let _ = writeln!(err, "  ({ASSETS_ENV}: no kube-controller-manager)");
            }
            Ok(_) => {}
        }
    }
    // Like the root-only tests (`crate::skip_or_fail`): a skip is never a silent pass.
    // tests/run.sh leaves these tests out when there is no API server, so nextest counts them
    // as skipped; run by hand, they fail unless skips are allowed.
    if std::env::var_os("KUBE_VRRP_ALLOW_SKIP").is_some_and(|v| v == "1") {
        return;
    }
    panic!(
        "this test needs a real API server: set {ASSETS_ENV} to a directory with kube-apiserver \
         and etcd, run it through tests/run.sh (which counts it as skipped), or set \
         KUBE_VRRP_ALLOW_SKIP=1 to skip it (it then shows as passed)"
    );
}

/// What to start besides etcd and kube-apiserver.
#[derive(Debug, Clone)]
pub struct ApiServerOptions {
    /// Also start kube-controller-manager (GC, namespace deletion, node lifecycle, service
    /// accounts). When asked for but the binary is missing, [`ApiServer::start_with`] returns
    /// `Ok(None)` (skip).
    pub controller_manager: bool,
    /// Extra kube-apiserver flags (`--name=value`), after the harness's own.
    pub apiserver_args: Vec<String>,
    /// Extra kube-controller-manager flags, after the harness's own (e.g.
    /// `--node-monitor-grace-period=20s`).
    pub controller_manager_args: Vec<String>,
    /// How long to wait for `/readyz` (also on restart).
    pub ready_timeout: Duration,
}

impl Default for ApiServerOptions {
    fn default() -> Self {
        ApiServerOptions {
            controller_manager: false,
            apiserver_args: Vec::new(),
            controller_manager_args: Vec::new(),
            ready_timeout: Duration::from_secs(90),
        }
    }
}

/// The binaries found through `KUBEBUILDER_ASSETS`.
#[derive(Debug, Clone)]
pub struct Assets {
    /// `kube-apiserver`.
    pub apiserver: PathBuf,
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kube-controller-manager`, if present.
    pub controller_manager: Option<PathBuf>,
    /// `kubectl` from the assets directory, else from `PATH`.
    pub kubectl: PathBuf,
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| executable(p))
}

impl Assets {
    /// Looks the binaries up; the error says what is missing.
    pub fn find() -> std::result::Result<Assets, String> {
        let dir = std::env::var_os(ASSETS_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("{ASSETS_ENV} is not set"))?;
        let need = |name: &str| {
            let p = dir.join(name);
            if executable(&p) {
                Ok(p)
            } else {
                Err(format!("{ASSETS_ENV}={}: no {name}", dir.display()))
            }
        };
        let apiserver = need("kube-apiserver")?;
        let etcd = need("etcd")?;
        let controller_manager =
            Some(dir.join("kube-controller-manager")).filter(|p| executable(p));
        let kubectl = Some(dir.join("kubectl"))
            .filter(|p| executable(p))
            .or_else(|| in_path("kubectl"))
            .ok_or_else(|| format!("no kubectl in {} nor in PATH", dir.display()))?;
        Ok(Assets {
            apiserver,
            etcd,
            controller_manager,
            kubectl,
        })
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; the kernel will not hand it out again
/// right away).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|e| LabError::io("bind 127.0.0.1:0", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LabError::io("local_addr", e))
}

fn cert_err(what: &str) -> impl FnOnce(rcgen::Error) -> LabError + '_ {
    move |e| LabError::Command {
        cmd: format!("rcgen: {what}"),
        reason: e.to_string(),
    }
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| LabError::io(format!("write {}", path.display()), e))
}

/// The certificate files of one test cluster.
#[derive(Debug, Clone)]
pub struct Pki {
    /// CA certificate (also the client CA and the controller manager's signing CA).
    pub ca_cert: PathBuf,
    /// CA private key.
    pub ca_key: PathBuf,
    /// Serving certificate (SANs 127.0.0.1, localhost, kubernetes.default...).
    pub serving_cert: PathBuf,
    /// Serving key.
    pub serving_key: PathBuf,
    /// Admin client certificate (CN=kube-vrrp-admin, O=system:masters).
    pub admin_cert: PathBuf,
    /// Admin client key.
    pub admin_key: PathBuf,
    /// kube-controller-manager client certificate (CN=system:kube-controller-manager).
    pub kcm_cert: PathBuf,
    /// kube-controller-manager client key.
    pub kcm_key: PathBuf,
    /// Service-account signing key (private; the API server also verifies with it).
    pub sa_key: PathBuf,
    /// Service-account public key.
    pub sa_pub: PathBuf,
}

impl Pki {
    /// Generates all of it into `dir`.
    pub fn generate(dir: &Path) -> Result<Pki> {
        let not_before = rcgen::date_time_ymd(2020, 1, 1);
        let not_after = rcgen::date_time_ymd(2100, 1, 1);

        let ca_key = KeyPair::generate().map_err(cert_err("CA key"))?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(DnType::CommonName, "kube-vrrp-test-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = not_before;
        ca.not_after = not_after;
        let ca_cert = ca.self_signed(&ca_key).map_err(cert_err("CA cert"))?;
        let issuer = Issuer::new(ca, &ca_key);

        let leaf = |sans: Vec<String>,
                    cn: &str,
                    org: Option<&str>,
                    eku: ExtendedKeyUsagePurpose|
         -> Result<(String, String)> {
            let key = KeyPair::generate().map_err(cert_err("leaf key"))?;
            let mut p = CertificateParams::new(sans).map_err(cert_err("leaf params"))?;
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(DnType::CommonName, cn);
            if let Some(o) = org {
                p.distinguished_name.push(DnType::OrganizationName, o);
            }
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![eku];
            p.use_authority_key_identifier_extension = true;
            p.not_before = not_before;
            p.not_after = not_after;
            let cert = p.signed_by(&key, &issuer).map_err(cert_err(cn))?;
            Ok((cert.pem(), key.serialize_pem()))
        };

        let serving = leaf(
            vec![
                "127.0.0.1".into(),
                "localhost".into(),
                "kubernetes".into(),
                "kubernetes.default".into(),
                "kubernetes.default.svc".into(),
                "kubernetes.default.svc.cluster.local".into(),
            ],
            "kube-apiserver",
            None,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = leaf(
            vec![],
            "kube-vrrp-admin",
            Some("system:masters"),
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let kcm = leaf(
            vec![],
            "system:kube-controller-manager",
            None,
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let sa = KeyPair::generate().map_err(cert_err("service-account key"))?;

        let pki = Pki {
            ca_cert: dir.join("ca.crt"),
            ca_key: dir.join("ca.key"),
            serving_cert: dir.join("apiserver.crt"),
            serving_key: dir.join("apiserver.key"),
            admin_cert: dir.join("admin.crt"),
            admin_key: dir.join("admin.key"),
            kcm_cert: dir.join("kcm.crt"),
            kcm_key: dir.join("kcm.key"),
            sa_key: dir.join("sa.key"),
            sa_pub: dir.join("sa.pub"),
        };
        write_file(&pki.ca_cert, &ca_cert.pem())?;
        write_file(&pki.ca_key, &ca_key.serialize_pem())?;
        write_file(&pki.serving_cert, &serving.0)?;
        write_file(&pki.serving_key, &serving.1)?;
        write_file(&pki.admin_cert, &admin.0)?;
        write_file(&pki.admin_key, &admin.1)?;
        write_file(&pki.kcm_cert, &kcm.0)?;
        write_file(&pki.kcm_key, &kcm.1)?;
        write_file(&pki.sa_key, &sa.serialize_pem())?;
        write_file(&pki.sa_pub, &sa.public_key_pem())?;
        Ok(pki)
    }
}

/// Writes a kubeconfig (JSON, which kubeconfig readers accept) for `server` with the CA at
/// `ca` and the given user entry (`{"client-certificate": ..}` or `{"token": ..}`).
fn write_kubeconfig(path: &Path, server: &str, ca: &Path, user: serde_json::Value) -> Result<()> {
    let cfg = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": {
            "server": server,
            "certificate-authority": ca,
        }}],
        "users": [{"name": "user", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "user"}}],
        "current-context": "test",
    });
    let text = serde_json::to_string_pretty(&cfg).map_err(|e| LabError::Parse {
        what: "kubeconfig".into(),
        reason: e.to_string(),
    })?;
    write_file(path, &text)
}

/// `kubectl` bound to one kubeconfig. Cheap to clone; usable from any thread.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    cache_dir: PathBuf,
}

impl Kubectl {
    /// The same binary and cache with another kubeconfig (e.g. a token's).
    pub fn with_kubeconfig(&self, kubeconfig: impl Into<PathBuf>) -> Kubectl {
        Kubectl {
            kubeconfig: kubeconfig.into(),
            ..self.clone()
        }
    }

    /// The kubectl binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// The kubeconfig it uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A `Command` for `kubectl --kubeconfig K --cache-dir C --request-timeout=15s ARGS`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache_dir)
            .arg("--request-timeout=15s")
            .args(args);
        c
    }

    /// Runs kubectl and returns its stdout; a non-zero exit is an error carrying stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = netns::run(&mut self.command(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl with `stdin` as its standard input (`apply -f -`).
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Result<String> {
        let mut cmd = self.command(args);
        let line = format!("{cmd:?}");
        let fail = |reason: String| LabError::Command {
            cmd: line.clone(),
            reason,
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        if let Some(mut input) = child.stdin.take() {
            input
                .write_all(stdin.as_bytes())
                .map_err(|e| fail(format!("writing stdin: {e}")))?;
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        if !out.status.success() {
            return Err(fail(format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply -f -` of one JSON object.
    pub fn apply(&self, obj: &serde_json::Value) -> Result<String> {
        self.run_stdin(&["apply", "-f", "-"], &obj.to_string())
    }

    /// `kubectl create -f -` of one JSON object.
    pub fn create(&self, obj: &serde_json::Value) -> Result<String> {
        self.run_stdin(&["create", "-f", "-"], &obj.to_string())
    }
}

/// A running etcd + kube-apiserver (+ kube-controller-manager). See the module doc.
pub struct ApiServer {
    // Field order is drop order: the processes die before the directory is removed.
    kcm: Mutex<Option<ProcGuard>>,
    apiserver: Mutex<Option<ProcGuard>>,
    etcd: ProcGuard,
    procs: ProcRegistry,
    assets: Assets,
    opts: ApiServerOptions,
    pki: Pki,
    port: u16,
    etcd_port: u16,
    apiserver_argv: Vec<String>,
    kubectl: Kubectl,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiServer")
            .field("url", &self.url())
            .field("etcd_port", &self.etcd_port)
            .field("dir", &self.dir.path())
            .finish()
    }
}

fn log_files(path: &Path) -> Result<(std::fs::File, std::fs::File)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| LabError::io(format!("open log {}", path.display()), e))?;
    let f2 = f
        .try_clone()
        .map_err(|e| LabError::io(format!("dup log {}", path.display()), e))?;
    Ok((f, f2))
}

/// The last `n` lines of a file (for error messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Plain-HTTP GET on 127.0.0.1 (for etcd's /health); returns the body if the status is 200.
fn http_get_local(port: u16, path: &str, timeout: Duration) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

impl ApiServer {
    /// Starts etcd and kube-apiserver with default options; `Ok(None)` when
    /// `KUBEBUILDER_ASSETS` is unset or lacks a binary.
    pub fn start() -> Result<Option<ApiServer>> {
        Self::start_with(ApiServerOptions::default())
    }

    /// Like [`ApiServer::start`] with options.
    pub fn start_with(opts: ApiServerOptions) -> Result<Option<ApiServer>> {
        let Ok(assets) = Assets::find() else {
            return Ok(None);
        };
        if opts.controller_manager && assets.controller_manager.is_none() {
            return Ok(None);
        }
        let dir = tempfile::Builder::new()
            .prefix("kvapi-")
            .tempdir()
            .map_err(|e| LabError::io("create temp dir", e))?;
        let pki = Pki::generate(dir.path())?;
        let port = free_port()?;
        let etcd_port = free_port()?;
        let peer_port = free_port()?;
        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &url,
            &pki.ca_cert,
            serde_json::json!({
                "client-certificate": pki.admin_cert,
                "client-key": pki.admin_key,
            }),
        )?;
        let kubectl = Kubectl {
            bin: assets.kubectl.clone(),
            kubeconfig,
            cache_dir: dir.path().join("kubectl-cache"),
        };
        let procs = ProcRegistry::default();

        // etcd
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut cmd = Command::new(&assets.etcd);
        cmd.arg("--name=kvapi")
            .arg(format!("--data-dir={}", dir.path().join("etcd").display()))
            .arg(format!("--listen-client-urls={etcd_url}"))
            .arg(format!("--advertise-client-urls={etcd_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=kvapi={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--listen-metrics-urls=")
            .arg("--log-level=warn")
            .stdin(Stdio::null());
        let etcd_log = dir.path().join("etcd.log");
        let (o, e) = log_files(&etcd_log)?;
        cmd.stdout(o).stderr(e);
        let etcd = ProcGuard::spawn(&procs, cmd, "etcd")?;

        let apiserver_argv: Vec<String> = [
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={port}"),
            "--endpoint-reconciler-type=none".into(),
            "--shutdown-send-retry-after=true".into(),
            format!("--tls-cert-file={}", pki.serving_cert.display()),
            format!("--tls-private-key-file={}", pki.serving_key.display()),
            format!("--client-ca-file={}", pki.ca_cert.display()),
            format!("--service-account-issuer={SA_ISSUER}"),
            format!("--service-account-key-file={}", pki.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                pki.sa_key.display()
            ),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--authorization-mode=Node,RBAC".into(),
            format!("--cert-dir={}", dir.path().join("certs").display()),
            "--profiling=false".into(),
        ]
        .into_iter()
        .chain(opts.apiserver_args.iter().cloned())
        .collect();

        let api = ApiServer {
            kcm: Mutex::new(None),
            apiserver: Mutex::new(None),
            etcd,
            procs,
            assets,
            opts,
            pki,
            port,
            etcd_port,
            apiserver_argv,
            kubectl,
            dir,
        };
        wait_until(Duration::from_secs(30), "etcd /health", || {
            if !api.etcd.is_running() {
                return Some(Err(()));
            }
            api.etcd_healthy().then_some(Ok(()))
        })
        .map_err(|e| api.failure("etcd", &etcd_log, &e.to_string()))?
        .map_err(|()| api.failure("etcd", &etcd_log, "exited"))?;

        api.spawn_apiserver()?;
        api.wait_ready()?;
        // The system namespaces are created by a post-start hook; Nodes' Leases need one.
        wait_until(api.opts.ready_timeout, "namespace kube-node-lease", || {
            api.kubectl(&["get", "namespace", "kube-node-lease"]).ok()
        })
        .map_err(|e| api.failure("kube-apiserver", &api.apiserver_log(), &e.to_string()))?;
        if api.opts.controller_manager {
            api.spawn_controller_manager()?;
        }
        Ok(Some(api))
    }

    fn failure(&self, what: &str, log: &Path, reason: &str) -> LabError {
        LabError::Daemon {
            daemon: what.into(),
            reason: format!("{reason}\n--- {} ---\n{}", log.display(), tail(log, 30)),
        }
    }

    fn apiserver_log(&self) -> PathBuf {
        self.dir.path().join("kube-apiserver.log")
    }

    /// The log of kube-controller-manager (empty unless started).
    pub fn controller_manager_log(&self) -> PathBuf {
        self.dir.path().join("kube-controller-manager.log")
    }

    fn spawn_apiserver(&self) -> Result<()> {
        let mut cmd = Command::new(&self.assets.apiserver);
        cmd.args(&self.apiserver_argv).stdin(Stdio::null());
        let (o, e) = log_files(&self.apiserver_log())?;
        cmd.stdout(o).stderr(e);
        let guard = ProcGuard::spawn(&self.procs, cmd, "kube-apiserver")?;
        *lock(&self.apiserver) = Some(guard);
        Ok(())
    }

    fn spawn_controller_manager(&self) -> Result<()> {
        let Some(bin) = &self.assets.controller_manager else {
            return Ok(());
        };
        let kubeconfig = self.dir.path().join("kcm.kubeconfig");
        write_kubeconfig(
            &kubeconfig,
            &self.url(),
            &self.pki.ca_cert,
            serde_json::json!({
                "client-certificate": self.pki.kcm_cert,
                "client-key": self.pki.kcm_key,
            }),
        )?;
        let port = free_port()?;
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={port}"))
            .arg(format!(
                "--cert-dir={}",
                self.dir.path().join("kcm-certs").display()
            ))
            .arg("--use-service-account-credentials")
            .arg(format!(
                "--service-account-private-key-file={}",
                self.pki.sa_key.display()
            ))
            .arg(format!("--root-ca-file={}", self.pki.ca_cert.display()))
            .arg(format!(
                "--cluster-signing-cert-file={}",
                self.pki.ca_cert.display()
            ))
            .arg(format!(
                "--cluster-signing-key-file={}",
                self.pki.ca_key.display()
            ))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--leader-elect=false")
            .arg("--allocate-node-cidrs=false")
            .arg("--profiling=false")
            .args(&self.opts.controller_manager_args)
            .stdin(Stdio::null());
        let (o, e) = log_files(&self.controller_manager_log())?;
        cmd.stdout(o).stderr(e);
        let guard = ProcGuard::spawn(&self.procs, cmd, "kube-controller-manager")?;
        *lock(&self.kcm) = Some(guard);
        // Serving once its secure port accepts connections (it answers /healthz there with a
        // self-signed certificate; a TCP connect is enough to know it is up).
        wait_every(
            Duration::from_millis(100),
            self.opts.ready_timeout,
            "kube-controller-manager to listen",
            || {
                if !lock(&self.kcm).as_ref().is_some_and(ProcGuard::is_running) {
                    return Some(Err(()));
                }
                TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    Duration::from_millis(200),
                )
                .ok()
                .map(|_| Ok(()))
            },
        )
        .map_err(|e| {
            self.failure(
                "kube-controller-manager",
                &self.controller_manager_log(),
                &e.to_string(),
            )
        })?
        .map_err(|()| {
            self.failure(
                "kube-controller-manager",
                &self.controller_manager_log(),
                "exited",
            )
        })
    }

    /// Waits (up to the options' `ready_timeout`) for `/readyz` to say `ok`.
    pub fn wait_ready(&self) -> Result<()> {
        wait_every(
            KUBECTL_POLL,
            self.opts.ready_timeout,
            "kube-apiserver /readyz",
            || {
                if !self.apiserver_running() {
                    return Some(Err(()));
                }
                self.is_ready().then_some(Ok(()))
            },
        )
        .map_err(|e| self.failure("kube-apiserver", &self.apiserver_log(), &e.to_string()))?
        .map_err(|()| self.failure("kube-apiserver", &self.apiserver_log(), "exited"))
    }

    /// Whether `/readyz` answers `ok` right now.
    pub fn is_ready(&self) -> bool {
        self.kubectl
            .run(&["get", "--raw", "/readyz", "--request-timeout=2s"])
            .is_ok_and(|s| s.trim() == "ok")
    }

    /// Whether etcd's `/health` says healthy (`/readyz` does not notice a stopped etcd).
    pub fn etcd_healthy(&self) -> bool {
        http_get_local(self.etcd_port, "/health", Duration::from_secs(2))
            .is_some_and(|b| b.contains("\"health\":\"true\""))
    }

    /// Whether the kube-apiserver process is running.
    pub fn apiserver_running(&self) -> bool {
        lock(&self.apiserver)
            .as_ref()
            .is_some_and(ProcGuard::is_running)
    }

    /// The kube-apiserver PID, while it runs.
    pub fn apiserver_pid(&self) -> Option<u32> {
        lock(&self.apiserver)
            .as_ref()
            .filter(|g| g.is_running())
            .map(ProcGuard::pid)
    }

    /// SIGKILLs kube-apiserver (an API outage; etcd and its data stay).
    pub fn kill_apiserver(&self) {
        if let Some(g) = lock(&self.apiserver).take() {
            g.kill();
        }
    }

    /// Starts kube-apiserver again (killing it first if it runs) on the same port against the
    /// same etcd, and waits for `/readyz`.
    pub fn restart_apiserver(&self) -> Result<()> {
        self.kill_apiserver();
        self.spawn_apiserver()?;
        self.wait_ready()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The API server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// etcd's client URL.
    pub fn etcd_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.etcd_port)
    }

    /// The admin kubeconfig (client cert in `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        self.kubectl.kubeconfig()
    }

    /// The CA certificate (PEM file) clients must trust.
    pub fn ca_path(&self) -> &Path {
        &self.pki.ca_cert
    }

    /// All certificate and key files.
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The temporary directory (logs, kubeconfigs, etcd data); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The binaries in use.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// A kubectl bound to the admin kubeconfig.
    pub fn kubectl_client(&self) -> Kubectl {
        self.kubectl.clone()
    }

    /// Runs `kubectl ARGS` as admin; returns stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl.run(args)
    }

    /// Writes `<dir>/<name>.kubeconfig` that authenticates with a bearer token and returns
    /// its path.
    pub fn write_token_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        write_kubeconfig(
            &path,
            &self.url(),
            &self.pki.ca_cert,
            serde_json::json!({ "token": token }),
        )?;
        Ok(path)
    }

    /// Creates (if needed) namespace `ns` and service account `sa` in it and returns a token
    /// for it (`kubectl create token`, valid for `duration`, e.g. "1h").
    pub fn service_account_token(&self, ns: &str, sa: &str, duration: &str) -> Result<String> {
        self.kubectl.apply(&serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
        }))?;
        self.kubectl.apply(&serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": sa, "namespace": ns}
        }))?;
        let tok = self.kubectl(&["create", "token", sa, "-n", ns, "--duration", duration])?;
        Ok(tok.trim().to_string())
    }

    /// Makes the API server reachable from inside network namespace `netns` at the same
    /// `127.0.0.1:<port>` (so the same kubeconfig works there). See [`NetnsForward`].
    pub fn expose_in_netns(&self, netns: &str) -> Result<NetnsForward> {
        NetnsForward::start(
            netns,
            self.port,
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)),
        )
    }

    /// Makes the API server reachable in the root namespace through a [`NetnsForward`] on a
    /// port of its own; returns it and a copy of the admin kubeconfig that goes through it.
    pub fn expose_via_forward(&self, name: &str) -> Result<(NetnsForward, PathBuf)> {
        let port = free_port()?;
        let fwd =
            NetnsForward::start_local(port, SocketAddr::from((Ipv4Addr::LOCALHOST, self.port)))?;
        let path = self.dir.path().join(format!("{name}.kubeconfig"));
        write_kubeconfig(
            &path,
            &format!("https://127.0.0.1:{port}"),
            &self.pki.ca_cert,
            serde_json::json!({
                "client-certificate": self.pki.admin_cert,
                "client-key": self.pki.admin_key,
            }),
        )?;
        Ok((fwd, path))
    }

    /// A stand-in kubelet for Node `name` (see [`NodeSim::create`]).
    pub fn node_sim(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        addresses: &[IpAddr],
    ) -> Result<NodeSim> {
        NodeSim::create(self.kubectl_client(), name, labels, addresses)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.apiserver_log();
            let _ = writeln!(
                std::io::stderr(),
                "--- tail of {} ---\n{}",
                log.display(),
                tail(&log, 20)
            );
        }
        if let Some(g) = lock(&self.kcm).take() {
            g.kill();
        }
        self.kill_apiserver();
        self.etcd.kill();
        self.procs.kill_all();
        // `dir` (a TempDir) is removed after this, when the fields drop.
    }
}

/// How often the harness re-runs a check that spawns kubectl (each run costs a process).
pub const KUBECTL_POLL: Duration = Duration::from_millis(200);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Now as a Kubernetes MicroTime / Time string (RFC 3339, UTC).
pub fn micro_time_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

fn time_now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A stand-in kubelet: a Node object (labels, `InternalIP` addresses, a Ready condition) and
/// its Lease in `kube-node-lease`, renewed from a background thread while the heartbeat runs.
/// Dropping it stops the heartbeat (the Node and Lease stay).
#[derive(Debug)]
pub struct NodeSim {
    name: String,
    kubectl: Kubectl,
    addresses: Vec<IpAddr>,
    heartbeat: Option<Heartbeat>,
    renewals: Arc<AtomicU64>,
}

#[derive(Debug)]
struct Heartbeat {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

/// The Lease duration a NodeSim writes (the kubelet's default).
pub const LEASE_SECONDS: u32 = 40;

impl NodeSim {
    /// Creates (or updates) Node `name` with `labels` and `addresses` (as `InternalIP`) and a
    /// Ready=True condition, and its Lease. The heartbeat is not running yet: call
    /// [`NodeSim::start_heartbeat`].
    pub fn create(
        kubectl: Kubectl,
        name: &str,
        labels: &[(&str, &str)],
        addresses: &[IpAddr],
    ) -> Result<NodeSim> {
        let mut all_labels = serde_json::Map::new();
        all_labels.insert("kubernetes.io/hostname".into(), name.into());
        all_labels.insert("kubernetes.io/os".into(), "linux".into());
        for (k, v) in labels {
            all_labels.insert((*k).into(), (*v).into());
        }
        kubectl.apply(&serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": all_labels},
        }))?;
        let sim = NodeSim {
            name: name.to_string(),
            kubectl,
            addresses: addresses.to_vec(),
            heartbeat: None,
            renewals: Arc::new(AtomicU64::new(0)),
        };
        sim.set_ready(true)?;
        let uid = sim
            .kubectl
            .run(&["get", "node", name, "-o", "jsonpath={.metadata.uid}"])?;
        sim.kubectl.apply(&serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "namespace": "kube-node-lease",
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Node", "name": name, "uid": uid.trim(),
                }],
            },
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": micro_time_now(),
            },
        }))?;
        Ok(sim)
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets the Node's status: the addresses and a Ready condition True or False (the
    /// condition's heartbeat and transition times are now).
    pub fn set_ready(&self, ready: bool) -> Result<()> {
        let mut addrs: Vec<serde_json::Value> = self
            .addresses
            .iter()
            .map(|a| serde_json::json!({"type": "InternalIP", "address": a.to_string()}))
            .collect();
        addrs.push(serde_json::json!({"type": "Hostname", "address": self.name}));
        let now = time_now();
        let (status, reason, message) = if ready {
            (
                "True",
                "KubeletReady",
                "kubelet is posting ready status (NodeSim)",
            )
        } else {
            ("False", "KubeletNotReady", "NodeSim set Ready=False")
        };
        let patch = serde_json::json!({
            "status": {
                "addresses": addrs,
                "conditions": [{
                    "type": "Ready",
                    "status": status,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }],
            }
        });
        self.kubectl.run(&[
            "patch",
            "node",
            &self.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ])?;
        Ok(())
    }

    /// Renews the Lease once (renewTime = now).
    pub fn renew_lease(&self) -> Result<()> {
        renew(&self.kubectl, &self.name)?;
        self.renewals.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// How many renewals succeeded so far (manual and heartbeat).
    pub fn renewals(&self) -> u64 {
        self.renewals.load(Ordering::Relaxed)
    }

    /// Starts renewing the Lease every `every` from a background thread (renewal failures,
    /// e.g. during an API outage, are retried at the next tick). Restarts it if running.
    pub fn start_heartbeat(&mut self, every: Duration) {
        self.stop_heartbeat();
        let (stop, rx) = mpsc::channel::<()>();
        let kubectl = self.kubectl.clone();
        let name = self.name.clone();
        let renewals = Arc::clone(&self.renewals);
        let thread = std::thread::spawn(move || {
            loop {
                if renew(&kubectl, &name).is_ok() {
                    renewals.fetch_add(1, Ordering::Relaxed);
                }
                match rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    _ => return,
                }
            }
        });
        self.heartbeat = Some(Heartbeat { stop, thread });
    }

    /// Stops renewing the Lease (a dead kubelet); waits for the thread to finish.
    pub fn stop_heartbeat(&mut self) {
        if let Some(hb) = self.heartbeat.take() {
            let _ = hb.stop.send(());
            let _ = hb.thread.join();
        }
    }

    /// Whether the heartbeat thread runs.
    pub fn heartbeat_running(&self) -> bool {
        self.heartbeat.is_some()
    }
}

fn renew(kubectl: &Kubectl, name: &str) -> Result<()> {
    let patch = serde_json::json!({"spec": {
        "holderIdentity": name,
        "leaseDurationSeconds": LEASE_SECONDS,
        "renewTime": micro_time_now(),
    }});
    kubectl.run(&[
        "patch",
        "lease",
        name,
        "-n",
        "kube-node-lease",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ])?;
    Ok(())
}

impl Drop for NodeSim {
    fn drop(&mut self) {
        self.stop_heartbeat();
    }
}

/// A TCP forwarder from `127.0.0.1:<port>` inside a network namespace to the API server in
/// the root namespace. The listening socket is created by a thread that joined the namespace
/// (`setns(2)`), so it lives there; accepting and connecting upstream happen on root-namespace
/// threads. Its `lo` is brought up first. Dropping it stops accepting and shuts down every
/// forwarded connection. [`NetnsForward::start_local`] makes one in the root namespace (for
/// the operator). [`NetnsForward::set_blackhole`] makes the path silent: connections stay
/// open but no byte passes either way, and new ones are accepted but never answered (a peer
/// whose packets are dropped); bytes held meanwhile pass once it is lifted.
#[derive(Debug)]
pub struct NetnsForward {
    netns: String,
    port: u16,
    stop: Arc<AtomicBool>,
    blackhole: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl NetnsForward {
    /// Listens on 127.0.0.1:`port` inside `netns` and forwards to `upstream` (root namespace).
    pub fn start(netns: &str, port: u16, upstream: SocketAddr) -> Result<NetnsForward> {
        netns::ip(netns, &["link", "set", "lo", "up"])?;
        let listener = netns::in_netns(netns, move || {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        Ok(Self::run(netns, port, listener, upstream))
    }

    /// Listens on 127.0.0.1:`port` in the root namespace and forwards to `upstream`.
    pub fn start_local(port: u16, upstream: SocketAddr) -> Result<NetnsForward> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| LabError::io(format!("listen on 127.0.0.1:{port}"), e))?;
        Ok(Self::run("", port, l, upstream))
    }

    fn run(netns: &str, port: u16, listener: TcpListener, upstream: SocketAddr) -> NetnsForward {
        let stop = Arc::new(AtomicBool::new(false));
        let blackhole = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, conns, accepted) = (stop.clone(), conns.clone(), accepted.clone());
            let blackhole = blackhole.clone();
            std::thread::spawn(move || {
                accept_loop(listener, upstream, &stop, &blackhole, &conns, &accepted)
            })
        };
        NetnsForward {
            netns: netns.to_string(),
            port,
            stop,
            blackhole,
            conns,
            accepted,
            thread: Some(thread),
        }
    }

    /// The namespace it listens in ("" for the root namespace).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The port it listens on (127.0.0.1 inside the namespace).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Silences the path (`true`) or lets bytes pass again.
    pub fn set_blackhole(&self, on: bool) {
        self.blackhole.store(on, Ordering::Relaxed);
    }
}

fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    stop: &AtomicBool,
    blackhole: &Arc<AtomicBool>,
    conns: &Mutex<Vec<TcpStream>>,
    accepted: &AtomicU64,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                accepted.fetch_add(1, Ordering::Relaxed);
                if client.set_nonblocking(false).is_err() {
                    continue;
                }
                // Connect from this (root-namespace) thread; a refused upstream (API server
                // down) just closes the client's connection, like a refused connect would.
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let pair = (client.try_clone(), server.try_clone());
                let (Ok(c2), Ok(s2)) = pair else {
                    continue;
                };
                {
                    let mut list = lock(conns);
                    list.retain(|s| s.peer_addr().is_ok());
                    if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                        list.push(a);
                        list.push(b);
                    }
                }
                let (b1, b2) = (blackhole.clone(), blackhole.clone());
                std::thread::spawn(move || pipe(client, s2, &b1));
                std::thread::spawn(move || pipe(server, c2, &b2));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(crate::wait::POLL);
            }
            Err(_) => std::thread::sleep(crate::wait::POLL),
        }
    }
}

/// Copies `from` to `to` until EOF or error, then half-closes `to`. While `blackhole` is set
/// nothing is read or written (a byte read just before is held until it is lifted).
fn pipe(mut from: TcpStream, mut to: TcpStream, blackhole: &AtomicBool) {
    let hold = || {
        while blackhole.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        hold();
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        hold();
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Drop for NetnsForward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.blackhole.store(false, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for s in lock(&self.conns).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}
