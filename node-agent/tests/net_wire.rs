//! What goes on the wire, in private network namespaces (root only): VRRP packets over a veth
//! pair (IPv4 and IPv6, multicast and unicast, TTL/hop limit, TOS/traffic class, addresses),
//! and gratuitous ARP / unsolicited NA frames checked byte by byte.

mod net_lab;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use agent::net::{Family, Gratuitous, Netlink, ReceivedPacket, VrrpSocket, VrrpSockets};
use net_lab::{Capture, Lab, MAC_A};

const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// A VRRPv3 advert for VRID 51, priority 100, 1 s, one address. The checksum field holds an
/// arbitrary marker: the shell must deliver the message untouched (checksums are the core's).
fn advert(addr: IpAddr) -> Vec<u8> {
    let mut m = vec![0x31, 51, 100, 1, 0x00, 100, 0xbe, 0xef];
    match addr {
        IpAddr::V4(a) => m.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => m.extend_from_slice(&a.octets()),
    }
    m
}

async fn recv(sock: &VrrpSocket) -> ReceivedPacket {
    tokio::time::timeout(RECV_TIMEOUT, sock.recv())
        .await
        .expect("no VRRP packet arrived")
        .unwrap()
}

fn ip4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse::<Ipv4Addr>().unwrap())
}

fn ip6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse::<Ipv6Addr>().unwrap())
}

fn is_vrrp_v4(f: &[u8]) -> bool {
    f.len() > 34 && f[12..14] == [0x08, 0x00] && f[23] == 112
}

fn is_vrrp_v6(f: &[u8]) -> bool {
    f.len() > 54 && f[12..14] == [0x86, 0xdd] && f[20] == 112
}

#[test]
fn net_vrrp_ipv4_multicast_and_unicast() {
    net_lab::run(
        "net_vrrp_ipv4_multicast_and_unicast",
        |lab: Lab| async move {
            lab.veth();
            let a_idx = lab.home.ifindex("eth0");
            let b_idx = lab.peer.ifindex("eth0");
            let tx = VrrpSocket::open("eth0", a_idx, Family::V4).unwrap();
            let rx = lab
                .peer
                .within(|| VrrpSocket::open("eth0", b_idx, Family::V4).unwrap());
            let cap = lab.peer.within(|| Capture::open(b_idx));
            assert_eq!(
                (tx.family(), tx.ifindex(), tx.ifname()),
                (Family::V4, a_idx, "eth0")
            );
            // The per-agent set opens one socket per (interface, family) and shares it.
            let mut set = VrrpSockets::new();
            let (s1, opened1) = set.get_or_open("eth0", a_idx, Family::V4).unwrap();
            let (s2, opened2) = set.get_or_open("eth0", a_idx, Family::V4).unwrap();
            let (s3, opened3) = set.get_or_open("eth0", a_idx, Family::V6).unwrap();
            assert!(opened1 && !opened2 && opened3);
            assert!(std::sync::Arc::ptr_eq(&s1, &s2) && !std::sync::Arc::ptr_eq(&s1, &s3));
            assert_eq!(set.iter().count(), 2);
            assert!(set.close(a_idx, Family::V6).is_some() && set.get(a_idx, Family::V6).is_none());
            // Opening on an interface that does not exist fails with a clear error.
            let err = VrrpSocket::open("nosuch0", 999, Family::V4)
                .unwrap_err()
                .to_string();
            assert!(err.contains("VRRP IPv4 socket on nosuch0"), "{err}");
            let msg = advert(ip4("192.0.2.100"));

            // Multicast from the primary address.
            tx.send(ip4("192.0.2.1"), ip4("224.0.0.18"), &msg)
                .await
                .unwrap();
            let p = recv(&rx).await;
            assert_eq!(
                p,
                ReceivedPacket {
                    ifindex: b_idx,
                    src: ip4("192.0.2.1"),
                    dst: ip4("224.0.0.18"),
                    ttl: 255,
                    payload: msg.clone(),
                    truncated: false,
                }
            );
            // On the wire: keepalived's header fields.
            let frames = cap.collect(1, RECV_TIMEOUT, is_vrrp_v4);
            assert_eq!(frames.len(), 1, "no VRRP frame captured");
            let f = &frames[0];
            assert_eq!(
                f[0..6],
                [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12],
                "multicast MAC"
            );
            assert_eq!(f[6..12], MAC_A, "source MAC");
            let ip = &f[14..];
            assert_eq!(ip[0], 0x45, "IPv4, no options");
            assert_eq!(ip[1], 0xc0, "TOS");
            assert_eq!(
                u16::from_be_bytes([ip[2], ip[3]]) as usize,
                20 + msg.len(),
                "total length"
            );
            assert_eq!(ip[6] & 0x40, 0, "DF must be clear");
            assert_eq!(ip[8], 255, "TTL");
            assert_eq!(ip[9], 112, "protocol");
            assert_eq!(ip[12..16], [192, 0, 2, 1]);
            assert_eq!(ip[16..20], [224, 0, 0, 18]);
            assert_eq!(&ip[20..], &msg[..]);
            // Multicast loopback is off: the sender does not hear itself.
            assert_eq!(tx.try_recv().unwrap(), None);

            // Unicast to the peer.
            tx.send(ip4("192.0.2.1"), ip4("192.0.2.2"), &msg)
                .await
                .unwrap();
            let p = recv(&rx).await;
            assert_eq!(
                (p.src, p.dst, p.ttl),
                (ip4("192.0.2.1"), ip4("192.0.2.2"), 255)
            );
            assert_eq!(p.payload, msg);
            let frames = cap.collect(1, RECV_TIMEOUT, is_vrrp_v4);
            assert_eq!(frames[0][14 + 1], 0xc0, "TOS on unicast");
            assert_eq!(frames[0][14 + 8], 255, "TTL on unicast");

            // Several unicast peers: one packet each, results in order.
            lab.peer.sh("ip addr add 192.0.2.3/24 dev eth0");
            let peers = [ip4("192.0.2.2"), ip4("192.0.2.3")];
            for r in tx.send_each(ip4("192.0.2.1"), &peers, &msg).await {
                r.unwrap();
            }
            let mut dsts = vec![recv(&rx).await.dst, recv(&rx).await.dst];
            dsts.sort();
            assert_eq!(dsts, peers);

            // An explicit unicast_src_ip other than the primary address.
            lab.home.sh("ip addr add 192.0.2.50/24 dev eth0");
            tx.send(ip4("192.0.2.50"), ip4("192.0.2.2"), &msg)
                .await
                .unwrap();
            let p = recv(&rx).await;
            assert_eq!((p.src, p.dst), (ip4("192.0.2.50"), ip4("192.0.2.2")));
            // ... and to the group from it.
            tx.send(ip4("192.0.2.50"), ip4("224.0.0.18"), &msg)
                .await
                .unwrap();
            let p = recv(&rx).await;
            assert_eq!(
                (p.src, p.dst, p.ttl),
                (ip4("192.0.2.50"), ip4("224.0.0.18"), 255)
            );

            // The received TTL is the one on the packet, not a constant: send with TTL 64.
            let raw = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(112)),
            )
            .unwrap();
            raw.bind_device(Some(b"eth0")).unwrap();
            raw.set_ttl_v4(64).unwrap();
            raw.set_multicast_ttl_v4(64).unwrap();
            let dst: std::net::SocketAddr = "192.0.2.2:0".parse().unwrap();
            raw.send_to(&msg, &dst.into()).unwrap();
            let p = recv(&rx).await;
            assert_eq!((p.src, p.ttl), (ip4("192.0.2.1"), 64));

            // Family mismatch is refused with a clear error.
            let err = tx
                .send(ip6("fe80::a"), ip6("ff02::12"), &msg)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("must be IPv4"), "{err}");
        },
    );
}

#[test]
fn net_vrrp_ipv6_multicast_and_unicast() {
    net_lab::run(
        "net_vrrp_ipv6_multicast_and_unicast",
        |lab: Lab| async move {
            lab.veth();
            let a_idx = lab.home.ifindex("eth0");
            let b_idx = lab.peer.ifindex("eth0");
            let tx = VrrpSocket::open("eth0", a_idx, Family::V6).unwrap();
            let rx = lab
                .peer
                .within(|| VrrpSocket::open("eth0", b_idx, Family::V6).unwrap());
            let cap = lab.peer.within(|| Capture::open(b_idx));
            let msg = advert(ip6("2001:db8::100"));

            // Multicast from the link-local address.
            tx.send(ip6("fe80::a"), ip6("ff02::12"), &msg)
                .await
                .unwrap();
            let p = recv(&rx).await;
            assert_eq!(
                p,
                ReceivedPacket {
                    ifindex: b_idx,
                    src: ip6("fe80::a"),
                    dst: ip6("ff02::12"),
                    ttl: 255,
                    payload: msg.clone(),
                    truncated: false,
                }
            );
            let frames = cap.collect(1, RECV_TIMEOUT, is_vrrp_v6);
            assert_eq!(frames.len(), 1, "no VRRP frame captured");
            let f = &frames[0];
            assert_eq!(f[0..6], [0x33, 0x33, 0, 0, 0, 0x12], "multicast MAC");
            assert_eq!(f[6..12], MAC_A);
            let ip = &f[14..];
            assert_eq!(ip[0], 0x6c, "version 6, traffic class 0xc0 (high nibble)");
            assert_eq!(ip[1] & 0xf0, 0x00, "traffic class 0xc0 (low nibble)");
            assert_eq!(
                u16::from_be_bytes([ip[4], ip[5]]) as usize,
                msg.len(),
                "payload length"
            );
            assert_eq!(ip[6], 112, "next header");
            assert_eq!(ip[7], 255, "hop limit");
            assert_eq!(ip[8..24], "fe80::a".parse::<Ipv6Addr>().unwrap().octets());
            assert_eq!(ip[24..40], "ff02::12".parse::<Ipv6Addr>().unwrap().octets());
            assert_eq!(
                &ip[40..],
                &msg[..],
                "message untouched (no kernel checksum)"
            );
            assert_eq!(
                tx.try_recv().unwrap(),
                None,
                "multicast loopback must be off"
            );

            // Unicast, global addresses (unicast_src_ip).
            tx.send(ip6("2001:db8::a"), ip6("2001:db8::b"), &msg)
                .await
                .unwrap();
            let p = recv(&rx).await;
            assert_eq!(
                (p.src, p.dst, p.ttl),
                (ip6("2001:db8::a"), ip6("2001:db8::b"), 255)
            );
            assert_eq!(p.payload, msg);
            let frames = cap.collect(1, RECV_TIMEOUT, is_vrrp_v6);
            assert_eq!(frames[0][14 + 7], 255, "hop limit on unicast");
            assert_eq!(frames[0][14], 0x6c, "traffic class on unicast");

            // Unicast between link-local addresses (needs the scope of the interface).
            tx.send(ip6("fe80::a"), ip6("fe80::b"), &msg).await.unwrap();
            let p = recv(&rx).await;
            assert_eq!((p.src, p.dst, p.ttl), (ip6("fe80::a"), ip6("fe80::b"), 255));

            // A foreign hop limit is reported as is.
            let raw = socket2::Socket::new(
                socket2::Domain::IPV6,
                socket2::Type::RAW,
                Some(socket2::Protocol::from(112)),
            )
            .unwrap();
            raw.bind_device(Some(b"eth0")).unwrap();
            raw.set_unicast_hops_v6(7).unwrap();
            let dst = std::net::SocketAddrV6::new("2001:db8::b".parse().unwrap(), 0, 0, 0);
            raw.send_to(&msg, &dst.into()).unwrap();
            let p = recv(&rx).await;
            assert_eq!((p.src, p.ttl), (ip6("2001:db8::a"), 7));
        },
    );
}

/// Independent ICMPv6 checksum check: the one's-complement sum over pseudo-header and message
/// (checksum included) must be 0xffff.
fn icmpv6_sum_ok(src: &[u8], dst: &[u8], msg: &[u8]) -> bool {
    let mut words: Vec<u32> = Vec::new();
    let mut push = |b: &[u8]| {
        for c in b.chunks(2) {
            words.push(u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)));
        }
    };
    push(src);
    push(dst);
    push(&(msg.len() as u32).to_be_bytes());
    push(&[0, 0, 0, 58]);
    push(msg);
    let mut s: u32 = words.iter().sum();
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// Writes frames as a classic pcap (Ethernet) file.
fn write_pcap(path: &std::path::Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn net_gratuitous_arp_and_unsolicited_na() {
    net_lab::run(
        "net_gratuitous_arp_and_unsolicited_na",
        |lab: Lab| async move {
            lab.veth();
            let a_idx = lab.home.ifindex("eth0");
            let b_idx = lab.peer.ifindex("eth0");
            let cap = lab.peer.within(|| Capture::open(b_idx));
            let g = Gratuitous::new(Netlink::new().unwrap()).unwrap();
            let vip4 = ip4("192.0.2.100");
            let vip6 = ip6("2001:db8::100");

            let sent = g.send_gratuitous(a_idx, &[vip4, vip6], 3).await.unwrap();
            assert_eq!(sent, 6);

            #[rustfmt::skip]
        let expected_arp: [u8; 42] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  0x02, 0, 0, 0, 0, 0x0a,  0x08, 0x06,
            0x00, 0x01,  0x08, 0x00,  6, 4,  0x00, 0x01,
            0x02, 0, 0, 0, 0, 0x0a,  192, 0, 2, 100,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,  192, 0, 2, 100,
        ];
            let vip6_bytes = "2001:db8::100".parse::<Ipv6Addr>().unwrap().octets();
            let all_nodes = "ff02::1".parse::<Ipv6Addr>().unwrap().octets();
            let is_our_arp = |f: &[u8]| {
                f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[28..32] == [192, 0, 2, 100]
            };
            let is_our_na = |f: &[u8]| {
                f.len() >= 86
                    && f[12..14] == [0x86, 0xdd]
                    && f[20] == 58
                    && f[54] == 136
                    && f[62..78] == vip6_bytes
            };
            // Both kinds arrive interleaved (one round = ARP then NA): capture all, then split.
            let frames = cap.collect(6, RECV_TIMEOUT, |f| is_our_arp(f) || is_our_na(f));
            let arps: Vec<Vec<u8>> = frames.iter().filter(|f| is_our_arp(f)).cloned().collect();
            let nas: Vec<Vec<u8>> = frames.iter().filter(|f| is_our_na(f)).cloned().collect();
            assert_eq!(arps.len(), 3, "want 3 gratuitous ARPs");
            for f in &arps {
                assert_eq!(f[..], expected_arp[..]);
            }

            assert_eq!(nas.len(), 3, "want 3 unsolicited NAs");
            let mut expected_na = Vec::new();
            expected_na
                .extend_from_slice(&[0x33, 0x33, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 0x0a, 0x86, 0xdd]);
            expected_na.extend_from_slice(&[0x60, 0, 0, 0, 0, 32, 58, 255]);
            expected_na.extend_from_slice(&vip6_bytes);
            expected_na.extend_from_slice(&all_nodes);
            expected_na.extend_from_slice(&[
                136, 0, 0xff, 0xff, /* checksum, compared apart */
                0x20, 0, 0, 0,
            ]);
            expected_na.extend_from_slice(&vip6_bytes);
            expected_na.extend_from_slice(&[2, 1, 0x02, 0, 0, 0, 0, 0x0a]);
            for f in &nas {
                let mut masked = f.clone();
                masked[56] = 0xff;
                masked[57] = 0xff;
                assert_eq!(masked, expected_na);
                assert!(
                    icmpv6_sum_ok(&vip6_bytes, &all_nodes, &f[54..]),
                    "bad ICMPv6 checksum"
                );
            }

            // With IPv6 forwarding on, the Router flag is set too.
            lab.home.sh("sysctl -qw net.ipv6.conf.eth0.forwarding=1");
            g.send_gratuitous(a_idx, &[vip6], 1).await.unwrap();
            let na = cap.collect(1, RECV_TIMEOUT, is_our_na);
            assert_eq!(na[0][58], 0xa0, "Router + Override");
            assert!(icmpv6_sum_ok(&vip6_bytes, &all_nodes, &na[0][54..]));

            // Wireshark agrees: no malformed packets, ICMPv6 checksum good.
            match std::process::Command::new("tshark")
                .arg("--version")
                .output()
            {
                Ok(_) => {
                    let dir = tempfile::tempdir().unwrap();
                    let pcap = dir.path().join("garp.pcap");
                    let mut all = arps.clone();
                    all.extend(nas.iter().cloned());
                    all.extend(na.iter().cloned());
                    // A control: the same NA with a broken checksum must be flagged bad.
                    let mut broken = na[0].clone();
                    broken[57] ^= 0x01;
                    all.push(broken);
                    write_pcap(&pcap, &all);
                    let out = std::process::Command::new("tshark")
                        .args(["-n", "-r"])
                        .arg(&pcap)
                        .args([
                            "-T",
                            "fields",
                            "-e",
                            "frame.protocols",
                            "-e",
                            "icmpv6.checksum.status",
                            "-e",
                            "_ws.malformed",
                            "-e",
                            "_ws.expert.severity",
                        ])
                        .output()
                        .unwrap();
                    let text = String::from_utf8_lossy(&out.stdout);
                    let lines: Vec<&str> = text.lines().collect();
                    assert_eq!(lines.len(), 8, "tshark output: {text}");
                    for l in &lines[..3] {
                        assert!(l.starts_with("eth:ethertype:arp"), "{l}");
                    }
                    // Wireshark's checksum status: 0 = bad, 1 = good.
                    assert!(
                        lines[7].split('\t').nth(1) == Some("0"),
                        "control: {}",
                        lines[7]
                    );
                    for l in &lines[3..7] {
                        let cols: Vec<&str> = l.split('\t').collect();
                        assert!(cols[0].starts_with("eth:ethertype:ipv6:icmpv6"), "{l}");
                        assert_eq!(cols[1], "1", "ICMPv6 checksum status: {l}");
                        assert!(cols.get(2).is_none_or(|c| c.is_empty()), "malformed: {l}");
                    }
                }
                Err(_) => {
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIPPED: tshark cross-check: tshark not installed"
                    );
                }
            }

            // Nothing to send is not an error; a missing interface is, with a clear message.
            assert_eq!(g.send_gratuitous(a_idx, &[], 5).await.unwrap(), 0);
            let err = g
                .send_gratuitous(4242, &[vip4], 1)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("interface 4242"), "{err}");
        },
    );
}
