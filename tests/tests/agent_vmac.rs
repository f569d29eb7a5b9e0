//! keepalived's `use_vmac`: the VIP lives on a macvlan `vrrp.VRID` with the RFC's virtual MAC
//! 00-00-5E-00-01-{VRID}, so a client's neighbour entry for the VIP keeps the same MAC across
//! a failover; with real keepalived (also `use_vmac`) on the other host, the two interoperate.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use lab::{Agent, Keepalived, Lab, LabBuilder, VrrpDaemon};

const VIP: &str = "192.0.2.91";
const VRID: u8 = 91;
const VMAC: &str = "00:00:5e:00:01:5b";

fn conf(priority: u8, state: &str) -> String {
    format!(
        "vrrp_instance VI_VMAC {{\n  state {state}\n  interface eth0\n  virtual_router_id {VRID}\n  priority {priority}\n  version 3\n  advert_int 0.1\n  use_vmac\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
    )
}

fn ip_json(ns: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-n", ns, "-j"])
        .args(args)
        .output()
        .expect("ip");
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// Whether host `i` has the VIP on any interface.
fn holds(lab: &Lab, i: usize) -> bool {
    ip_json(&lab.host(i).netns, &["addr", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .any(|a| a["local"] == VIP)
}

/// The MAC and name of the interface holding the VIP on host `i`.
fn vip_interface(lab: &Lab, i: usize) -> Option<(String, String)> {
    ip_json(&lab.host(i).netns, &["addr", "show"])
        .as_array()?
        .iter()
        .find(|l| {
            l["addr_info"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["local"] == VIP))
        })
        .map(|l| {
            (
                l["ifname"].as_str().unwrap_or_default().to_string(),
                l["address"].as_str().unwrap_or_default().to_string(),
            )
        })
}

/// The client's neighbour entry for the VIP, after making it ping the VIP.
fn client_mac(lab: &Lab) -> Option<String> {
    let vip: IpAddr = VIP.parse().ok()?;
    let answered = (0..10).any(|_| {
        lab::ping::ping_once(&lab.client().netns, vip, Duration::from_millis(300))
            .ok()
            .flatten()
            .is_some()
    });
    if !answered {
        return None;
    }
    ip_json(&lab.client().netns, &["neigh", "show", VIP])
        .as_array()?
        .first()?["lladdr"]
        .as_str()
        .map(str::to_string)
}

/// Waits until host `i` holds the VIP, and (`alone`) the other host does not: a crashed
/// master keeps its VIP bound behind its downed link.
fn wait_holder(lab: &Lab, i: usize, alone: bool) {
    let other = 1 - i;
    lab::wait_until(Duration::from_secs(15), "the VIP on one host", || {
        (holds(lab, i) && !(alone && holds(lab, other))).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: host {i} should hold {VIP}"));
}

/// Kill the master and take its link down (it no longer answers anything).
fn kill(lab: &Lab, d: &mut dyn VrrpDaemon, i: usize) {
    d.crash().expect("crash");
    lab.link_down(lab.host(i)).expect("link down");
}

#[test]
fn the_client_keeps_the_virtual_mac_across_a_failover() {
    lab::skip_unless_root!("the_client_keeps_the_virtual_mac_across_a_failover");
    let lab = LabBuilder::default().hosts(2).build().expect("lab");
    let dir = lab.node_dir(lab.client()).expect("client dir");
    let mut cap = lab::Capture::start(&lab, &lab.client().netns, "eth0", "vrrp or arp", &dir)
        .expect("capture");
    let mut a = Agent::start(&lab, &lab.host(0).clone(), &conf(200, "MASTER")).expect("agent a");
    let mut b = Agent::start(&lab, &lab.host(1).clone(), &conf(100, "BACKUP")).expect("agent b");
    wait_holder(&lab, 0, true);
    assert_eq!(
        vip_interface(&lab, 0),
        Some((format!("vrrp.{VRID}"), VMAC.to_string())),
        "the VIP is on the virtual MAC interface"
    );
    let before = client_mac(&lab).expect("the VIP answers");
    assert_eq!(before, VMAC);
    // The master's periodic adverts reach the client from the virtual MAC.
    cap.wait_count(
        &format!(
            "vrrp && eth.src == {VMAC} && ip.src == {}",
            lab.host(0).ipv4
        ),
        5,
        Duration::from_secs(5),
    )
    .expect("adverts from the virtual MAC");
    // The backup hears them on its own virtual MAC interface and stays backup.
    lab::wait::holds_for(Duration::from_millis(500), "one master", || !holds(&lab, 1))
        .expect("the backup stays backup");

    kill(&lab, &mut a, 0);
    wait_holder(&lab, 1, false);
    assert_eq!(
        vip_interface(&lab, 1),
        Some((format!("vrrp.{VRID}"), VMAC.to_string()))
    );
    let after = client_mac(&lab).expect("the VIP answers after the failover");
    assert_eq!(
        after, VMAC,
        "the client's neighbour entry kept the virtual MAC"
    );

    // Adverts and gratuitous ARPs of both masters came from the virtual MAC.
    cap.stop().expect("stop capture");
    let adverts = cap.adverts().expect("adverts");
    assert!(
        adverts.len() > 5,
        "{adverts:?} {:?}",
        cap.fields("", &["eth.src", "ip.src", "ip.proto", "arp.opcode"])
    );
    assert!(
        adverts.iter().all(|a| a.vrid == VRID && a.eth_src == VMAC),
        "{adverts:?}"
    );
    let garps = cap.garps().expect("garps");
    assert!(garps.len() >= 10, "two takeovers, 5 each: {garps:?}");
    assert!(garps.iter().all(|g| g.eth_src == VMAC), "{garps:?}");

    // A graceful stop removes the interface it created.
    b.stop().expect("SIGTERM");
    let links = ip_json(&lab.host(1).netns, &["link", "show"]);
    assert!(
        !links
            .as_array()
            .into_iter()
            .flatten()
            .any(|l| l["ifname"] == format!("vrrp.{VRID}").as_str()),
        "vrrp.{VRID} left behind: {links}"
    );
}

#[test]
fn interoperates_with_keepalived_on_a_virtual_mac() {
    lab::skip_unless_root!("interoperates_with_keepalived_on_a_virtual_mac");
    let lab = LabBuilder::default().hosts(2).build().expect("lab");
    // What the agent sets on its base interface, set by hand for keepalived: the host's own
    // ARP requests name its own address, not the VIP (else a client that pinged the VIP
    // learns the base MAC for it from the host's request for the client's address).
    let out = lab::netns::command_in(
        &lab.host(0).netns,
        &["sysctl", "-q", "-w", "net.ipv4.conf.eth0.arp_announce=2"],
    )
    .output()
    .expect("sysctl");
    assert!(out.status.success(), "{out:?}");
    let mut k =
        Keepalived::start(&lab, &lab.host(0).clone(), &conf(200, "MASTER")).expect("keepalived");
    let mut agent = Agent::start(&lab, &lab.host(1).clone(), &conf(100, "BACKUP")).expect("agent");
    wait_holder(&lab, 0, true);
    assert_eq!(
        client_mac(&lab).as_deref(),
        Some(VMAC),
        "keepalived answers from the virtual MAC"
    );
    // The agent stays backup (it hears keepalived's adverts on its virtual MAC interface).
    lab::wait::holds_for(Duration::from_secs(1), "the agent stays backup", || {
        !holds(&lab, 1)
    })
    .expect("backup");

    kill(&lab, &mut k, 0);
    wait_holder(&lab, 1, false);
    assert_eq!(
        client_mac(&lab).as_deref(),
        Some(VMAC),
        "the same MAC after the agent took over from keepalived"
    );
    agent.stop().expect("SIGTERM");
}
