//! The HTTP endpoints over a real TCP connection: /metrics, /healthz, /readyz (flipping),
//! /status, unknown paths, and graceful shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use agent::metrics::{InstanceSnapshot, Telemetry, TrackerSnapshot, bind, serve};
use crds::vrrpnode::VrrpState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const DEADLINE: Duration = Duration::from_secs(10);

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`.
async fn get(addr: SocketAddr, path: &str) -> Reply {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.unwrap();
        String::from_utf8(raw).unwrap()
    };
    let raw = tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("reply in time");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body separator");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_owned(), v.trim().to_owned())
        })
        .collect::<Vec<_>>();
    let reply = Reply {
        status,
        headers,
        body: body.to_owned(),
    };
    assert!(
        reply.header("transfer-encoding").is_none(),
        "bodies are sent with a length"
    );
    reply
}

async fn start(
    t: Telemetry,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), agent::Error>>,
) {
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, t, async {
        let _ = stopped.await;
    }));
    (addr, stop, server)
}

#[tokio::test]
async fn endpoints() {
    let t = Telemetry::new();
    t.metrics().transition(
        "VI_1",
        VrrpState::Backup,
        VrrpState::Master,
        "master_down_timer",
    );
    t.metrics().set_effective_priority("VI_1", 254);
    let (addr, stop, server) = start(t.clone()).await;

    let m = get(addr, "/metrics").await;
    assert_eq!(m.status, 200);
    assert_eq!(
        m.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(
        m.body
            .contains("kube_vrrp_instance_state{instance=\"VI_1\",state=\"MASTER\"} 1\n"),
        "{}",
        m.body
    );
    assert!(
        m.body
            .contains("kube_vrrp_effective_priority{instance=\"VI_1\"} 254\n"),
        "{}",
        m.body
    );
    assert!(
        m.body.contains("# TYPE kube_vrrp_transitions counter\n"),
        "{}",
        m.body
    );
    assert!(m.body.ends_with("# EOF\n"), "{}", m.body);

    let h = get(addr, "/healthz").await;
    assert_eq!((h.status, h.body.as_str()), (200, "ok\n"));
    assert!(h.header("content-type").unwrap().starts_with("text/plain"));

    let r = get(addr, "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (503, "not ready\n"));
    t.set_ready(true);
    let r = get(addr, "/readyz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ready\n"));
    t.set_ready(false);
    assert_eq!(get(addr, "/readyz").await.status, 503);

    let s = get(addr, "/status").await;
    assert_eq!(s.status, 200);
    assert_eq!(s.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&s.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"instances": [], "version": env!("CARGO_PKG_VERSION")})
    );

    t.set_instances(vec![InstanceSnapshot {
        name: "VI_1".into(),
        state: VrrpState::Backup,
        effective_priority: 100,
        base_priority: 100,
        vips: vec![],
        master_address: Some("192.0.2.11".into()),
        trackers: vec![TrackerSnapshot {
            kind: "script".into(),
            name: "chk".into(),
            up: false,
        }],
        since: None,
        reason: None,
    }]);
    let json: serde_json::Value = serde_json::from_str(&get(addr, "/status").await.body).unwrap();
    let inst = &json["instances"][0];
    assert_eq!(inst["name"], "VI_1");
    assert_eq!(inst["state"], "BACKUP");
    assert_eq!(inst["effectivePriority"], 100);
    assert_eq!(inst["basePriority"], 100);
    assert_eq!(inst["masterAddress"], "192.0.2.11");
    assert_eq!(
        inst["trackers"][0],
        serde_json::json!({"kind": "script", "name": "chk", "up": false})
    );
    assert!(inst["since"].is_null());

    assert_eq!(get(addr, "/nope").await.status, 404);

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "still listening after shutdown"
    );
}

#[tokio::test]
async fn bind_error_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = bind(addr).await.unwrap_err().to_string();
    assert!(
        err.contains("--metrics-addr") && err.contains(&addr.to_string()),
        "{err}"
    );
}

/// One raw request, `Connection: close`; the whole reply as text.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .expect("reply in time")
}

#[tokio::test]
async fn only_reads_are_accepted() {
    let (addr, stop, server) = start(Telemetry::new()).await;
    for path in ["/healthz", "/readyz", "/metrics", "/status"] {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let reply = raw(
                addr,
                &format!(
                    "{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                ),
            )
            .await;
            assert!(
                reply.starts_with("HTTP/1.1 405"),
                "{method} {path}: {reply}"
            );
        }
    }
    let head = raw(
        addr,
        "HEAD /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stop.send(()).unwrap();
    let _ = tokio::time::timeout(DEADLINE, server).await;
}

/// Raise the soft fd limit to the hard one (the flood below needs a few thousand sockets).
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_neither_starve_nor_linger() {
    const HALF_OPEN: usize = 2000;
    let header_timeout = Duration::from_secs(1);
    assert!(
        raise_fd_limit() >= 2 * HALF_OPEN as u64 + 100,
        "fd limit too low"
    );
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = agent::metrics::Limits {
        header_read_timeout: header_timeout,
        ..Default::default()
    };
    assert_eq!(limits.max_connections, 256);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(agent::metrics::serve_router(
        listener,
        agent::metrics::router(Telemetry::new()),
        limits,
        async {
            let _ = stopped.await;
        },
    ));

    // Slowloris: a partial request line on each connection, never finished.
    let started = tokio::time::Instant::now();
    let mut held = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let _ = s.write_all(b"GET /heal").await;
        held.push(s);
    }

    // A normal client still gets its answer, at the latest once the header timeout has freed
    // the slots the flood holds.
    let deadline = started + header_timeout + Duration::from_secs(5);
    let answered = loop {
        let reply = raw(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
        if reply.starts_with("HTTP/1.1 200") {
            break tokio::time::Instant::now();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer to GET /healthz under a half-open flood: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(answered < deadline);

    // Every half-open connection is closed by the server (over the limit: at once; within it:
    // after the header timeout), not left to hold memory.
    let close_deadline = started + header_timeout + Duration::from_secs(5);
    for (i, s) in held.iter_mut().enumerate() {
        let mut buf = [0u8; 512];
        let closed = loop {
            match tokio::time::timeout_at(close_deadline, s.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(_)) => continue,
            }
        };
        assert!(closed, "half-open connection {i} still open");
    }

    // An idle connection within the limit is closed after the header timeout, not before.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let mut buf = [0u8; 512];
    loop {
        match tokio::time::timeout(DEADLINE, idle.read(&mut buf)).await {
            Err(_) => panic!("idle half-open connection not closed"),
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(_)) => continue,
        }
    }
    let lived = t0.elapsed();
    assert!(
        lived >= header_timeout.mul_f32(0.8) && lived < header_timeout * 3,
        "closed after {lived:?}"
    );

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("server stops")
        .unwrap();
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

/// The attack: 10,000 half-open requests (8,000 took an unhardened agent from 13 to
/// 165 MB). Server and clients share this process, so its RSS bounds the server's: it must stay
/// below 64 MiB while the flood is held, and a probe is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_half_open_connections_leave_rss_below_64_mib() {
    const HALF_OPEN: usize = 10_000;
    const RSS_LIMIT: u64 = 64 * 1024 * 1024;
    assert!(
        raise_fd_limit() >= HALF_OPEN as u64 + 1000,
        "fd limit too low for {HALF_OPEN} connections"
    );
    let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(agent::metrics::serve_router(
        listener,
        agent::metrics::router(Telemetry::new()),
        agent::metrics::Limits::default(),
        async {
            let _ = stopped.await;
        },
    ));
    let before = rss_bytes();
    let mut held = Vec::with_capacity(HALF_OPEN);
    let mut peak = before;
    for i in 0..HALF_OPEN {
        // The server may already have closed earlier ones; a refused connect counts as held.
        if let Ok(mut s) = TcpStream::connect(addr).await {
            let _ = s
                .write_all(b"GET /status HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .await;
            held.push(s);
        }
        if i % 1000 == 999 {
            peak = peak.max(rss_bytes());
        }
    }
    let reply = raw(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    peak = peak.max(rss_bytes());
    println!(
        "RSS before {:.1} MiB, peak with {} half-open connections {:.1} MiB",
        before as f64 / 1048576.0,
        held.len(),
        peak as f64 / 1048576.0
    );
    assert!(
        peak < RSS_LIMIT,
        "RSS {peak} bytes with {HALF_OPEN} half-open connections"
    );
    // The default header timeout (5 s) may pass before a slot frees: the probe is answered
    // by then at the latest.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut reply = reply;
    while !reply.starts_with("HTTP/1.1 200") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer under the flood: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        reply = raw(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await;
    }
    drop(held);
    stop.send(()).unwrap();
    let _ = tokio::time::timeout(DEADLINE, server).await;
}
