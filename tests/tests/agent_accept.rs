//! keepalived's `accept` / `no_accept`, enforced: a master that is not the address owner and
//! runs with `no_accept` holds the VIP (it answers ARP and is master on the wire) but drops
//! packets addressed to it, through the agent's nftables rules; with `accept`, or as the
//! address owner (priority 255), it answers. Stopping the agent removes its rules.

use std::net::IpAddr;
use std::time::Duration;

use lab::{Agent, LabBuilder, VrrpDaemon};

const VIP: &str = "192.0.2.81";

fn conf(priority: u8, accept: &str) -> String {
    format!(
        "vrrp_instance VI_1 {{\n  state MASTER\n  interface eth0\n  virtual_router_id 81\n  priority {priority}\n  version 3\n  advert_int 0.1\n  {accept}\n  virtual_ipaddress {{\n    {VIP}/24\n  }}\n}}\n"
    )
}

fn answers(lab: &lab::Lab) -> bool {
    let addr: IpAddr = VIP.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    (0..3).any(|_| {
        lab::ping::ping_once(&lab.client().netns, addr, Duration::from_millis(300))
            .ok()
            .flatten()
            .is_some()
    })
}

/// Runs `conf` on the only host until it holds the VIP; returns whether the VIP answers
/// pings from the client, and stops the agent.
fn run(lab: &lab::Lab, conf: &str) -> bool {
    let host = lab.host(0).clone();
    let mut agent = Agent::start(lab, &host, conf).expect("agent");
    lab.wait_holder(&format!("{VIP}/24"), 0, Duration::from_secs(10))
        .expect("VIP bound");
    let ok = answers(lab);
    agent.terminate().expect("SIGTERM");
    agent.wait_stopped().expect("exit 0");
    ok
}

#[test]
fn no_accept_drops_traffic_to_the_vip_of_a_non_owner_master() {
    lab::skip_unless_root!("no_accept_drops_traffic_to_the_vip_of_a_non_owner_master");
    let lab = LabBuilder::default().hosts(1).build().expect("lab");
    assert!(
        !run(&lab, &conf(150, "no_accept")),
        "a non-owner master with no_accept answered pings to its VIP"
    );
    assert!(
        run(&lab, &conf(150, "accept")),
        "a master with accept did not answer"
    );
    assert!(
        run(&lab, &conf(255, "no_accept")),
        "the address owner always accepts"
    );
    // keepalived's default outside strict mode is accept; vrrp_strict turns it off.
    assert!(run(&lab, &conf(150, "")), "the default is accept");
    assert!(
        !run(
            &lab,
            &format!("global_defs {{\n  vrrp_strict\n}}\n{}", conf(150, ""))
        ),
        "strict mode defaults to no_accept"
    );
    // After the agent stopped, nothing of its rules is left: a VIP added by hand answers.
    let host = lab.host(0).clone();
    let out = lab::netns::command_in(
        &host.netns,
        &["ip", "addr", "add", "192.0.2.81/24", "dev", "eth0"],
    )
    .output()
    .expect("ip addr add");
    assert!(out.status.success(), "{out:?}");
    assert!(answers(&lab), "rules were left behind after SIGTERM");
}
