//! Self-tests of the lab library: topology, cleanup (also on panic), partition/heal, link
//! down/up, pings, the ping monitor's gap measurement, captures and process guards.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use lab::{Lab, can_run, wait_until};

fn ns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .contains("State:\tZ")
}

const T: Duration = Duration::from_secs(5);

#[test]
fn topology_addresses_and_cleanup() {
    if !can_run("topology_addresses_and_cleanup") {
        return;
    }
    let lab = Lab::builder().hosts(3).build().unwrap();
    let names: Vec<String> = lab.namespaces().to_vec();
    assert_eq!(names.len(), 5, "switch + 3 hosts + client");
    for n in &names {
        assert!(ns_exists(n), "{n} exists");
        assert!(n.len() < 64);
    }
    // Fixed MACs and addresses, interface named like a real NIC.
    let h1 = lab.host(0);
    let link = lab
        .exec(h1, &["ip", "-o", "link", "show", "dev", "eth0"])
        .unwrap();
    assert!(link.contains("02:00:00:00:00:11"), "{link}");
    let addrs = lab.addresses(h1).unwrap();
    assert!(
        addrs.contains(&"192.0.2.11".parse::<IpAddr>().unwrap()),
        "{addrs:?}"
    );
    assert!(
        addrs.contains(&"2001:db8::11".parse::<IpAddr>().unwrap()),
        "{addrs:?}"
    );
    // Settings that matter for VRRP.
    let dad = lab
        .exec(h1, &["sysctl", "-n", "net.ipv6.conf.eth0.accept_dad"])
        .unwrap();
    assert_eq!(dad.trim(), "0");
    let sw6 = lab
        .exec(
            &lab::Node {
                netns: lab.switch_ns().to_string(),
                ..h1.clone()
            },
            &["sysctl", "-n", "net.ipv6.conf.all.disable_ipv6"],
        )
        .unwrap();
    assert_eq!(sw6.trim(), "1");
    // Every host answers the client over IPv4 and IPv6.
    for h in lab.hosts() {
        for a in [IpAddr::V4(h.ipv4), IpAddr::V6(h.ipv6)] {
            assert!(
                lab.ping_once(lab.client(), a, T).unwrap().is_some(),
                "{a} answers"
            );
        }
    }
    // An address nobody holds does not answer.
    let nobody: IpAddr = "192.0.2.250".parse().unwrap();
    assert_eq!(
        lab.ping_once(lab.client(), nobody, Duration::from_millis(300))
            .unwrap(),
        None
    );
    let guard = lab.spawn(lab.host(1), &["sleep", "600"], None).unwrap();
    let pid = guard.pid();
    std::mem::forget(guard); // the lab must still kill it
    assert!(pid_alive(pid));
    drop(lab);
    for n in &names {
        assert!(!ns_exists(n), "{n} removed");
    }
    assert!(!pid_alive(pid), "process {pid} killed by the lab");
}

#[test]
fn cleanup_on_panic() {
    if !can_run("cleanup_on_panic") {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::panic::catch_unwind(move || {
        let lab = Lab::builder().hosts(1).build().unwrap();
        let g = lab.spawn(lab.host(0), &["sleep", "600"], None).unwrap();
        tx.send((lab.namespaces().to_vec(), g.pid())).unwrap();
        // A grandchild started through a shell, unknown to the registry.
        lab.exec(lab.host(0), &["sh", "-c", "sleep 600 >/dev/null 2>&1 &"])
            .unwrap();
        panic!("scenario failed");
    });
    assert!(r.is_err());
    let (names, pid) = rx.recv().unwrap();
    for n in &names {
        assert!(!ns_exists(n), "{n} removed after panic");
    }
    assert!(!pid_alive(pid));
}

#[test]
fn process_guard_kills_by_pid() {
    if !can_run("process_guard_kills_by_pid") {
        return;
    }
    let lab = Lab::builder().hosts(1).build().unwrap();
    let g = lab.spawn(lab.host(0), &["sleep", "600"], None).unwrap();
    let pid = g.pid();
    assert!(g.is_running());
    drop(g);
    assert!(!pid_alive(pid));
    // A short-lived command reports its exit.
    let g = lab.spawn(lab.host(0), &["true"], None).unwrap();
    assert!(g.wait_exit(T).unwrap().success());
    assert!(!g.signal(libc::SIGTERM).unwrap(), "no signal after exit");
}

#[test]
fn partition_heal_and_link_down_up() {
    if !can_run("partition_heal_and_link_down_up") {
        return;
    }
    let lab = Lab::builder().hosts(2).build().unwrap();
    let h1 = lab.host(0);
    let a = IpAddr::V4(h1.ipv4);
    let short = Duration::from_millis(300);
    assert!(lab.ping_once(lab.client(), a, T).unwrap().is_some());
    lab.partition(h1).unwrap();
    assert_eq!(lab.ping_once(lab.client(), a, short).unwrap(), None);
    // Carrier stays up during a partition.
    let link = lab
        .exec(h1, &["ip", "-o", "link", "show", "dev", "eth0"])
        .unwrap();
    assert!(link.contains("LOWER_UP"), "{link}");
    lab.heal(h1).unwrap();
    lab.wait_pingable(a, T).unwrap();
    lab.link_down(h1).unwrap();
    assert_eq!(lab.ping_once(lab.client(), a, short).unwrap(), None);
    // keep_addr_on_down keeps the IPv6 address.
    assert!(lab.addresses(h1).unwrap().contains(&IpAddr::V6(h1.ipv6)));
    lab.link_up(h1).unwrap();
    lab.wait_pingable(a, T).unwrap();
    lab.wait_pingable(IpAddr::V6(h1.ipv6), T).unwrap();
}

#[test]
fn ping_monitor_measures_a_gap() {
    if !can_run("ping_monitor_measures_a_gap") {
        return;
    }
    let lab = Lab::builder().hosts(1).build().unwrap();
    let h1 = lab.host(0);
    let a = IpAddr::V4(h1.ipv4);
    lab.wait_pingable(a, T).unwrap();
    let mon = lab.ping_monitor(a, Duration::from_millis(10)).unwrap();
    wait_until(T, "some answers", || (mon.answered() > 10).then_some(())).unwrap();
    lab.partition(h1).unwrap();
    let cut = Instant::now();
    // Hold the partition for a measured while (polling, no fixed sleep in the assertion).
    wait_until(T, "500 ms partition", || {
        (cut.elapsed() >= Duration::from_millis(500)).then_some(())
    })
    .unwrap();
    lab.heal(h1).unwrap();
    let healed = Instant::now();
    mon.wait_answered_after(healed, T).unwrap();
    let outage = cut.elapsed();
    let r = mon.stop();
    eprintln!("ping monitor: {r:?}");
    assert!(r.recovered);
    assert!(r.max_gap >= Duration::from_millis(500), "{r:?}");
    assert!(
        r.max_gap <= outage + Duration::from_millis(100),
        "{r:?} vs {outage:?}"
    );
    assert!(r.answered + 40 < r.sent, "probes were lost: {r:?}");
}

#[test]
fn capture_sees_icmp_and_stops() {
    if !can_run("capture_sees_icmp_and_stops") {
        return;
    }
    let lab = Lab::builder().hosts(1).build().unwrap();
    let h1 = lab.host(0);
    let mut cap = lab.capture(h1, "icmp or arp").unwrap();
    lab.wait_pingable(IpAddr::V4(h1.ipv4), T).unwrap();
    cap.wait_count("icmp.type == 0", 1, T).unwrap();
    cap.stop().unwrap();
    let rows = cap
        .fields("icmp.type == 0", &["eth.src", "ip.src"])
        .unwrap();
    assert!(!rows.is_empty());
    assert_eq!(
        rows[0],
        vec!["02:00:00:00:00:11".to_string(), "192.0.2.11".to_string()]
    );
}

#[test]
fn wait_until_times_out() {
    let start = Instant::now();
    let r = wait_until(Duration::from_millis(100), "never", || None::<()>);
    assert!(matches!(r, Err(lab::LabError::Timeout { .. })), "{r:?}");
    assert!(start.elapsed() >= Duration::from_millis(100));
}

/// The agent runner and the scenario code's /status checks, exercised with `fake-agent` (a
/// stand-in that runs keepalived and serves /healthz and /status) on two hosts next to a real
/// keepalived: readiness, /status parsing, agreement checks, SIGTERM exit code.
#[test]
fn agent_runner_with_a_stand_in() {
    if !can_run("agent_runner_with_a_stand_in") {
        return;
    }
    use lab::DaemonKind::{Agent, Keepalived};
    let mut c = lab::Cluster::new(
        &[Agent, Keepalived, Agent],
        lab::Variant::v3(Duration::from_millis(100)),
    )
    .unwrap();
    c.agent_bin = env!("CARGO_BIN_EXE_fake-agent").into();
    lab::suite::elect(&mut c).unwrap();
    let st = c.daemon(0).unwrap().status().unwrap().unwrap();
    let i = st.instance("VI_1").unwrap();
    assert_eq!((i.state.as_str(), i.effective_priority), ("MASTER", 200));
    assert_eq!(i.vips, vec![lab::VIP4.to_string()]);
    assert!(
        c.daemon(1).unwrap().status().is_none(),
        "keepalived has no /status"
    );
    c.stop(0).unwrap();
    c.wait_master(1, Duration::from_secs(5)).unwrap();
    let st = c.daemon(2).unwrap().status().unwrap().unwrap();
    assert_eq!(st.instances[0].state, "BACKUP");
}

#[test]
fn stale_namespaces_of_dead_runs_are_swept() {
    if !can_run("stale_namespaces_of_dead_runs_are_swept") {
        return;
    }
    // A PID above pid_max cannot be alive: a namespace named after it is an orphan.
    let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let name = format!("kvlab{}x0dead-h1", max + 1);
    std::process::Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .unwrap();
    assert!(ns_exists(&name));
    lab::topology::sweep_stale();
    assert!(!ns_exists(&name), "{name} swept");
}

fn csum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A one-packet pcap holding a VRRPv2 advert (VRID 51, priority 100, PASS "12345",
/// 192.0.2.200), with its VRRP checksum optionally broken.
fn advert_pcap(dir: &Path, name: &str, break_checksum: bool) -> std::path::PathBuf {
    let mut vrrp = vec![0x21, 51, 100, 1, 1, 1, 0, 0, 192, 0, 2, 200];
    vrrp.extend_from_slice(b"12345\0\0\0");
    let c = csum(&vrrp) ^ if break_checksum { 0x0101 } else { 0 };
    vrrp[6..8].copy_from_slice(&c.to_be_bytes());
    let total = (20 + vrrp.len()) as u16;
    let mut ip = vec![0x45, 0xc0];
    ip.extend_from_slice(&total.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0, 255, 112, 0, 0, 192, 0, 2, 11, 224, 0, 0, 18]);
    let ic = csum(&ip);
    ip[10..12].copy_from_slice(&ic.to_be_bytes());
    let mut frame = vec![
        0x01, 0x00, 0x5e, 0x00, 0x00, 0x12, 0x02, 0, 0, 0, 0, 0x11, 0x08, 0x00,
    ];
    frame.extend(ip);
    frame.extend(vrrp);
    let mut pcap = Vec::new();
    pcap.extend_from_slice(&0xa1b2c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    for v in [1u32, 0, frame.len() as u32, frame.len() as u32] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    pcap.extend(frame);
    let p = dir.join(name);
    std::fs::write(&p, pcap).unwrap();
    p
}

/// The advert validator passes a well-formed advert and rejects a bad checksum.
#[test]
fn vrrp_validator_rejects_a_bad_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let good = advert_pcap(dir.path(), "good.pcap", false);
    let text = lab::validate_vrrp_frame(&good, 1).unwrap();
    assert!(text.contains("Virtual Rtr ID: 51"), "{text}");
    let bad = advert_pcap(dir.path(), "bad.pcap", true);
    let err = lab::validate_vrrp_frame(&bad, 1).unwrap_err();
    assert!(
        err.to_string().contains("checksum") || err.to_string().contains("Bad"),
        "{err}"
    );
}
