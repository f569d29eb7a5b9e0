//! The container image (`kube-vrrp:dev`, built by `deploy/build-image.sh`) run the way the chart
//! runs it: three agent containers in standalone mode on a private Docker network with
//! documentation addresses, each with exactly the chart's security context (`--cap-drop ALL
//! --cap-add NET_ADMIN --cap-add NET_RAW --read-only --security-opt no-new-privileges`, uid 0,
//! Docker's default seccomp profile) and the chart's mounts (the state directory as a host
//! directory, a tmpfs on /tmp, keepalived.conf read-only). They elect one master, fail over on
//! `docker kill`, take the VIP back on restart and hand over on `docker stop`; a keepalived
//! container built the same way (`deploy/build-image.sh --keepalived-peer`) interoperates with
//! them. The operator binary starts in the image.
//!
//! The master is read from each agent's `/status` (`--metrics-addr 0.0.0.0:9741`), fetched from
//! the host over the Docker bridge (a documentation address on a local bridge).
//!
//! Needs a Docker daemon and both images; without them each test prints `SKIPPED: …` and fails
//! unless skips are allowed (see `lab::skip_or_fail`); `tests/run.sh` builds the images when
//! Docker answers and otherwise leaves these tests out of the run, so nextest counts them as
//! skipped. Only containers and networks this test created are removed, by ID.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use lab::{AgentStatus, Instance, KeepalivedConf, wait_until};

const METRICS_PORT: u16 = 9741;
/// Documentation subnets, tried in turn: another run may hold one, and the host itself may sit
/// on one (then the host could not reach the containers on it).
const SUBNETS: [&str; 3] = ["203.0.113", "198.51.100", "192.0.2"];

/// Whether the host already has an address in `prefix.0/24` (outside Docker's bridges).
fn host_uses(prefix: &str) -> bool {
    let out = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .any(|l| l.contains(&format!(" inet {prefix}."))),
        Err(_) => false,
    }
}

fn image() -> String {
    std::env::var("KUBE_VRRP_IMAGE").unwrap_or_else(|_| "kube-vrrp:dev".into())
}

fn peer_image() -> String {
    std::env::var("KUBE_VRRP_KEEPALIVED_IMAGE")
        .unwrap_or_else(|_| "kube-vrrp-keepalived:dev".into())
}

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Why the image tests cannot run here, if they cannot.
fn unavailable(images: &[String]) -> Option<String> {
    match Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
    {
        Err(e) => return Some(format!("docker is not installed ({e})")),
        Ok(o) if !o.status.success() => {
            return Some(format!(
                "no Docker daemon answers ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(_) => {}
    }
    for image in images {
        if !docker(&["image", "inspect", image]).status.success() {
            return Some(format!(
                "image {image} is missing: build it with `sudo deploy/build-image.sh{}` \
                 (tests/run.sh does)",
                if image.contains("keepalived") {
                    " --keepalived-peer"
                } else {
                    ""
                }
            ));
        }
    }
    None
}

macro_rules! skip_unless_docker {
    ($name:expr, $images:expr) => {
        if let Some(reason) = unavailable(&$images) {
            lab::skip_or_fail($name, &reason);
            return;
        }
    };
}

fn random_u16() -> u16 {
    let mut b = [0u8; 2];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut b);
    }
    u16::from_ne_bytes(b) ^ (std::process::id() as u16)
}

/// A private Docker network plus the containers on it; all removed (by ID) on drop.
struct Net {
    id: String,
    prefix: String,
    run: String,
    containers: Vec<(String, String)>,
    scratch: tempfile::TempDir,
}

impl Net {
    fn new() -> Net {
        let run = format!("kvimg-{}-{:04x}", std::process::id(), random_u16());
        let mut errors = Vec::new();
        for prefix in SUBNETS {
            if host_uses(prefix) {
                errors.push(format!("{prefix}.0/24 is in use on the host"));
                continue;
            }
            let out = docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &format!("{prefix}.0/24"),
                "--gateway",
                &format!("{prefix}.1"),
                "--label",
                "kube-vrrp-test=image",
                &run,
            ]);
            if out.status.success() {
                return Net {
                    id: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                    prefix: prefix.to_owned(),
                    run,
                    containers: Vec::new(),
                    scratch: tempfile::tempdir().expect("scratch dir"),
                };
            }
            errors.push(String::from_utf8_lossy(&out.stderr).trim().to_owned());
        }
        panic!("cannot create a Docker network on any documentation subnet: {errors:?}");
    }

    fn ip(&self, host: u8) -> String {
        format!("{}.{host}", self.prefix)
    }

    fn vip(&self) -> String {
        format!("{}.200/24", self.prefix)
    }

    /// Writes a keepalived.conf with one v3 100 ms instance for this network's VIP.
    fn conf(&self, role: &str, priority: u8) -> PathBuf {
        let mut inst = Instance::v3(priority, Duration::from_millis(100));
        inst.vips = vec![self.vip()];
        let path = self.scratch.path().join(format!("{role}.conf"));
        std::fs::write(&path, KeepalivedConf::single(inst).render()).expect("write conf");
        path
    }

    /// Starts an agent container exactly as the chart's DaemonSet runs the agent.
    fn agent(&mut self, role: &str, host: u8, priority: u8) -> String {
        let conf = self.conf(role, priority);
        let state = self.scratch.path().join(format!("{role}-state"));
        std::fs::create_dir_all(&state).expect("state dir");
        let name = format!("{}-{role}", self.run);
        let image = image();
        let args = [
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.run,
            "--ip",
            &self.ip(host),
            "--user",
            "0:0",
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "NET_RAW",
            "--read-only",
            "--security-opt",
            "no-new-privileges",
            "--tmpfs",
            "/tmp:size=16m",
            "-v",
            &format!("{}:/var/lib/kube-vrrp", state.display()),
            "-v",
            &format!("{}:/etc/keepalived/keepalived.conf:ro", conf.display()),
            "--label",
            "kube-vrrp-test=image",
            "--entrypoint",
            "/usr/bin/tini",
            &image,
            "-s",
            "--",
            "kube-vrrp-agent",
            "standalone",
            "--config",
            "/etc/keepalived/keepalived.conf",
            "--state-dir",
            "/var/lib/kube-vrrp",
            "--metrics-addr",
            "0.0.0.0:9741",
            "--log-format",
            "json",
        ];
        let id = docker_ok(&args);
        self.containers.push((role.to_owned(), id.clone()));
        id
    }

    /// Starts keepalived (Debian's, from the peer image) with the same capabilities.
    fn keepalived(&mut self, role: &str, host: u8, priority: u8) -> String {
        let conf = self.conf(role, priority);
        let name = format!("{}-{role}", self.run);
        let image = peer_image();
        let id = docker_ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &self.run,
            "--ip",
            &self.ip(host),
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--cap-add",
            "NET_RAW",
            "--read-only",
            "--security-opt",
            "no-new-privileges",
            "--tmpfs",
            "/run:size=16m",
            "--tmpfs",
            "/tmp:size=16m",
            "-v",
            &format!("{}:/etc/keepalived/keepalived.conf:ro", conf.display()),
            "--label",
            "kube-vrrp-test=image",
            &image,
            "keepalived",
            "--dont-fork",
            "--log-console",
            "--vrrp",
            "--use-file",
            "/etc/keepalived/keepalived.conf",
        ]);
        self.containers.push((role.to_owned(), id.clone()));
        id
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for (role, id) in &self.containers {
            let out = docker(&["logs", "--tail", "30", id]);
            s.push_str(&format!(
                "--- {role} ({id:.12}) ---\n{}{}\n",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        s
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (_, id) in &self.containers {
            let _ = docker(&["rm", "-f", "-v", id]);
        }
        let _ = docker(&["network", "rm", &self.id]);
    }
}

/// `GET /status` of the agent at `ip`, parsed; `None` while it does not answer.
fn status(ip: &str) -> Option<AgentStatus> {
    let addr: SocketAddr = format!("{ip}:{METRICS_PORT}").parse().ok()?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    s.write_all(format!("GET /status HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let body = text.split_once("\r\n\r\n")?.1;
    serde_json::from_str(body).ok()
}

/// The VRRP state of instance VI_1 at `ip` (None when not answering).
fn state(ip: &str) -> Option<String> {
    status(ip)?.instance("VI_1").map(|i| i.state.clone())
}

fn wait_state(net: &Net, ip: &str, want: &str, within: Duration) -> Duration {
    let start = Instant::now();
    wait_until(within, &format!("{ip} {want}"), || {
        (state(ip).as_deref() == Some(want)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; states now: {}\n{}", states(net), net.logs()));
    start.elapsed()
}

fn states(net: &Net) -> String {
    (10..=12)
        .map(|h| format!("{}={:?}", net.ip(h), state(&net.ip(h))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn report(line: &str) {
    // Straight to fd 2: the numbers show in the test output even when it passes.
    let _ = writeln!(std::io::stderr(), "image: {line}");
}

#[test]
fn image_agents_elect_fail_over_and_hand_over() {
    skip_unless_docker!("image_agents_elect_fail_over_and_hand_over", [image()]);
    let mut net = Net::new();
    let a = net.agent("a", 10, 150);
    net.agent("b", 11, 100);
    let c = net.agent("c", 12, 50);
    let (ip_a, ip_b, ip_c) = (net.ip(10), net.ip(11), net.ip(12));

    let took = wait_state(&net, &ip_a, "MASTER", Duration::from_secs(20));
    wait_state(&net, &ip_b, "BACKUP", Duration::from_secs(5));
    wait_state(&net, &ip_c, "BACKUP", Duration::from_secs(5));
    let st = status(&ip_a).expect("a answers");
    let vi = st.instance("VI_1").expect("VI_1");
    assert_eq!(vi.vips, [net.vip()], "the master holds the VIP");
    assert!(
        status(&ip_b)
            .and_then(|s| s.instance("VI_1").map(|i| i.vips.is_empty()))
            .unwrap_or(false),
        "a backup holds no VIP"
    );
    report(&format!(
        "one master (a), {took:?} after all three were started"
    ));

    // Crash: SIGKILL of the master's container; b (next priority) takes over.
    let killed = Instant::now();
    docker_ok(&["kill", &a]);
    wait_state(&net, &ip_b, "MASTER", Duration::from_secs(5));
    let failover = killed.elapsed();
    assert_eq!(state(&ip_c).as_deref(), Some("BACKUP"), "{}", states(&net));
    report(&format!(
        "docker kill of the master: b MASTER after {failover:?}"
    ));
    assert!(
        failover < Duration::from_secs(2),
        "failover took {failover:?} at 100 ms adverts"
    );

    // Restart on the same state directory: a preempts back.
    docker_ok(&["start", &a]);
    let restarted = Instant::now();
    wait_state(&net, &ip_a, "MASTER", Duration::from_secs(20));
    wait_state(&net, &ip_b, "BACKUP", Duration::from_secs(5));
    report(&format!(
        "restarted a preempts back after {:?}",
        restarted.elapsed()
    ));

    // Graceful stop, as `docker stop` (and the kubelet) does it: SIGTERM to tini, which passes
    // it on; the master sends priority 0 and b takes over at once, without a master-down wait.
    let stopped = Instant::now();
    docker_ok(&["kill", "--signal", "TERM", &a]);
    wait_state(&net, &ip_b, "MASTER", Duration::from_secs(5));
    let handover = stopped.elapsed();
    wait_until(Duration::from_secs(10), "a to exit after SIGTERM", || {
        (docker_ok(&["inspect", "--format", "{{.State.Running}}", &a]) == "false").then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", net.logs()));
    let exited = stopped.elapsed();
    let exit = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", &a]);
    assert_eq!(exit, "0", "the agent exits 0 on SIGTERM\n{}", net.logs());
    report(&format!(
        "SIGTERM (docker stop) of the master: b MASTER after {handover:?}, a exited 0 after {exited:?}"
    ));
    assert!(
        handover < Duration::from_secs(1),
        "handover took {handover:?}: no priority-0 advert?"
    );
    assert_eq!(state(&ip_c).as_deref(), Some("BACKUP"));

    // `docker stop` itself returns once the agent is gone (well inside its 10 s grace).
    let stop = Instant::now();
    docker_ok(&["stop", "--time", "10", &c]);
    let stop_took = stop.elapsed();
    report(&format!("docker stop of a backup took {stop_took:?}"));
    assert!(
        stop_took < Duration::from_secs(5),
        "docker stop took {stop_took:?}"
    );

    // The read-only root filesystem held: nothing but the mounts was written.
    // (Docker itself adds the mount point of keepalived.conf and its parents.)
    let diff = docker_ok(&["diff", &c]);
    let mount_points = [
        "C /etc",
        "A /etc/keepalived",
        "A /etc/keepalived/keepalived.conf",
    ];
    assert!(
        diff.lines().all(|l| mount_points.contains(&l.trim())),
        "container wrote to its image: {diff}"
    );
}

#[test]
fn image_agents_interoperate_with_keepalived() {
    skip_unless_docker!(
        "image_agents_interoperate_with_keepalived",
        [image(), peer_image()]
    );
    let mut net = Net::new();
    let k = net.keepalived("keepalived", 10, 200);
    net.agent("b", 11, 100);
    net.agent("c", 12, 50);
    let (ip_k, ip_b, ip_c) = (net.ip(10), net.ip(11), net.ip(12));

    // keepalived is master: both agents back off and see it as the master on the wire.
    for ip in [&ip_b, &ip_c] {
        wait_state(&net, ip, "BACKUP", Duration::from_secs(20));
    }
    wait_until(
        Duration::from_secs(10),
        "agents see keepalived as master",
        || {
            let seen = |ip: &str| {
                status(ip)
                    .and_then(|s| s.instance("VI_1").and_then(|i| i.master_address.clone()))
                    .is_some_and(|m| m == ip_k)
            };
            (seen(&ip_b) && seen(&ip_c)).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {}\n{}", states(&net), net.logs()));

    // keepalived crashes: the higher agent takes over.
    let killed = Instant::now();
    docker_ok(&["kill", &k]);
    wait_state(&net, &ip_b, "MASTER", Duration::from_secs(5));
    report(&format!(
        "docker kill of keepalived: agent b MASTER after {:?}",
        killed.elapsed()
    ));
    assert_eq!(state(&ip_c).as_deref(), Some("BACKUP"));

    // keepalived comes back with the higher priority: the agent yields to it.
    docker_ok(&["start", &k]);
    wait_state(&net, &ip_b, "BACKUP", Duration::from_secs(20));
    assert_eq!(state(&ip_c).as_deref(), Some("BACKUP"));
}

#[test]
fn image_runs_the_operator_and_holds_only_what_it_needs() {
    skip_unless_docker!(
        "image_runs_the_operator_and_holds_only_what_it_needs",
        [image()]
    );
    let image = image();
    let help = docker_ok(&["run", "--rm", &image, "kube-vrrp-operator", "--help"]);
    assert!(help.contains("crd") && help.contains("run"), "{help}");
    let crd = docker_ok(&[
        "run",
        "--rm",
        "--read-only",
        "--cap-drop",
        "ALL",
        &image,
        "kube-vrrp-operator",
        "crd",
    ]);
    assert!(crd.contains("kind: CustomResourceDefinition"), "{crd}");
    assert!(crd.contains("name: virtualips.kubevrrp.io"));
    assert!(crd.contains("name: vrrpnodes.kubevrrp.io"));
    let agent = docker_ok(&["run", "--rm", &image, "kube-vrrp-agent", "--help"]);
    assert!(agent.contains("standalone"), "{agent}");
    // Default user, shell, CA bundle, tini; no curl, ip, ps or package manager.
    let probe = docker_ok(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/sh",
        &image,
        "-c",
        "id -u; test -s /etc/ssl/certs/ca-certificates.crt && echo ca; \
         test -x /usr/bin/tini && echo tini; \
         for t in curl ip ps apt-get openssl; do command -v $t >/dev/null && echo has-$t; done; true",
    ]);
    assert_eq!(probe.lines().collect::<Vec<_>>(), ["65532", "ca", "tini"]);
    let size: u64 = docker_ok(&["image", "inspect", "--format", "{{.Size}}", &image])
        .parse()
        .expect("size");
    report(&format!("{image} is {} MiB", size / 1024 / 1024));
}
