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
