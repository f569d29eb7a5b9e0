//! `fake-agent`: a stand-in for `kube-vrrp-agent standalone` used only by the lab's
//! self-tests, to exercise the agent runner (readiness, `/status`, SIGTERM exit code) before
//! the real agent exists. It runs keepalived on the given config and derives `/status` from
//! the config and the addresses on the interface. Not a VRRP implementation.
//!
//! Usage: `fake-agent standalone --config FILE --state-dir DIR --metrics-addr ADDR`

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

struct Conf {
    name: String,
    interface: String,
    priority: u32,
    vips: Vec<String>,
}

fn parse(text: &str) -> Conf {
    let mut c = Conf {
        name: String::new(),
        interface: "eth0".into(),
        priority: 100,
        vips: Vec::new(),
    };
    let mut in_vips = false;
    for line in text.lines().map(str::trim) {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["vrrp_instance", name, ..] => c.name = name.to_string(),
            ["interface", i] => c.interface = i.to_string(),
            ["priority", p] => c.priority = p.parse().unwrap_or(100),
            ["virtual_ipaddress", "{"] => in_vips = true,
            ["}"] => in_vips = false,
            [addr] if in_vips => c.vips.push(addr.to_string()),
            _ => {}
        }
    }
    c
}

fn status(c: &Conf) -> String {
    let out = Command::new("ip")
        .args(["-o", "addr", "show", "dev", &c.interface])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let held: Vec<&String> = c
        .vips
        .iter()
        .filter(|v| out.contains(&format!(" {v} ")) || out.contains(&format!(" {v}\n")))
        .collect();
    let state = if !c.vips.is_empty() && held.len() == c.vips.len() {
        "MASTER"
    } else {
        "BACKUP"
    };
    let vips: Vec<String> = held.iter().map(|v| format!("\"{v}\"")).collect();
    format!(
        "{{\"instances\":[{{\"name\":\"{}\",\"state\":\"{state}\",\"effectivePriority\":{},\"vips\":[{}],\"masterAddress\":null}}]}}",
        c.name,
        c.priority,
        vips.join(",")
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let (Some(config), Some(state), Some(addr)) =
        (get("--config"), get("--state-dir"), get("--metrics-addr"))
    else {
        eprintln!("fake-agent: usage: standalone --config F --state-dir D --metrics-addr A");
        std::process::exit(2);
    };
    let conf = parse(&std::fs::read_to_string(&config).unwrap_or_default());
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
    }
    let pid = |n: &str| format!("{state}/{n}");
    let mut ka = match Command::new("keepalived")
        .args([
            "-n",
            "-l",
            "-G",
            "-P",
            "-f",
            &config,
            "-p",
            &pid("k.pid"),
            "-r",
        ])
        .arg(pid("v.pid"))
        .args(["-c", &pid("c.pid"), "-b", &pid("b.pid")])
        .stdin(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("fake-agent: keepalived: {e}");
            std::process::exit(1);
        }
    };
    let listener = match TcpListener::bind(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-agent: bind {addr}: {e}");
            let _ = ka.kill();
            std::process::exit(1);
        }
    };
    let _ = listener.set_nonblocking(true);
    eprintln!("fake-agent: serving on {addr}");
    while !TERM.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]);
                let body = if req.starts_with("GET /status") {
                    status(&conf)
                } else {
                    "ok".to_string()
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    // Graceful: keepalived sends priority 0 and removes the VIPs.
    // SAFETY: signalling our own unreaped child.
    unsafe { libc::kill(ka.id() as libc::pid_t, libc::SIGTERM) };
    let ok = ka.wait().map(|s| s.success()).unwrap_or(false);
    std::process::exit(if ok { 0 } else { 1 });
}
