//! What the demo sees of each host: the agent's `GET /status` (plain HTTP/1.1 over a socket
//! opened inside the host's namespace), keepalived's state (from its notify script's file), and
//! whether eth0 is up and the VIP is bound there (getifaddrs inside the namespace).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use super::lab::{STATUS_ADDR, VIP, in_ns};
use crate::Error;
use crate::metrics::StatusSnapshot;

/// One host as seen at one instant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostView {
    /// Whether its daemon process is running.
    pub running: bool,
    /// Whether its eth0 is up.
    pub link_up: bool,
    /// Whether the VIP is bound on its eth0.
    pub vip_held: bool,
    /// VRRP state word (MASTER, BACKUP, FAULT, INIT), when the daemon answered.
    pub state: Option<String>,
    /// Priority advertised now.
    pub priority: Option<u8>,
    /// Configured priority.
    pub base_priority: Option<u8>,
    /// When the state was entered (RFC 3339).
    pub since: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Names of trackers that are down.
    pub trackers_down: Vec<String>,
}

impl HostView {
    /// Whether this host is master and holds the VIP.
    pub fn is_master(&self) -> bool {
        self.state.as_deref() == Some("MASTER") && self.vip_held
    }
}

/// Look at a host running the agent.
pub fn agent(ns: &str) -> Result<HostView, Error> {
    in_ns(ns, || {
        let mut view = HostView::default();
        (view.link_up, view.vip_held) = link_and_vip();
        if let Ok(status) = get_status()
            && let Some(i) = status.instances.first()
        {
            view.state = Some(i.state.to_string());
            view.priority = Some(i.effective_priority);
            view.base_priority = Some(i.base_priority);
            view.since = i.since.clone();
            view.reason = i.reason.clone();
            view.trackers_down = i
                .trackers
                .iter()
                .filter(|t| !t.up)
                .map(|t| format!("{} {}", t.kind, t.name))
                .collect();
        }
        Ok(view)
    })
}

/// Look at a host running keepalived, whose notify script writes "STATE PRIORITY" to `file`.
pub fn keepalived(ns: &str, file: &Path, base_priority: u8) -> Result<HostView, Error> {
    let mut view = in_ns(ns, || {
        let mut view = HostView::default();
        (view.link_up, view.vip_held) = link_and_vip();
        Ok(view)
    })?;
    view.base_priority = Some(base_priority);
    if let Ok(text) = std::fs::read_to_string(file) {
        let mut words = text.split_whitespace();
        view.state = words.next().map(str::to_owned);
        view.priority = words.next().and_then(|p| p.parse().ok());
        view.reason = Some("from keepalived's notify script".into());
    }
    Ok(view)
}

/// (eth0 is up, the VIP is on eth0) in the calling thread's namespace.
fn link_and_vip() -> (bool, bool) {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return (false, false);
    };
    let (mut up, mut vip) = (false, false);
    for a in addrs.filter(|a| a.interface_name == "eth0") {
        if a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP) {
            up = true;
        }
        if a.address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .is_some_and(|s| s.ip() == VIP)
        {
            vip = true;
        }
    }
    (up, vip)
}

/// `GET /status` from the agent in the calling thread's namespace.
fn get_status() -> Result<StatusSnapshot, io::Error> {
    let addr: SocketAddr = STATUS_ADDR
        .parse()
        .map_err(|_| io::Error::other("bad status address"))?;
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(300))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.set_write_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(b"GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::other("no HTTP header end"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(io::Error::other(format!(
            "status answered {}",
            head.lines().next().unwrap_or("")
        )));
    }
    serde_json::from_str(body).map_err(io::Error::other)
}
