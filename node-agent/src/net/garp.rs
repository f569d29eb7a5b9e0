//! Gratuitous ARP (IPv4) and unsolicited Neighbor Advertisements (IPv6) for VIPs.
//!
//! Both are written as complete Ethernet frames on one `AF_PACKET` socket (protocol 0, so it
//! never receives anything), the way keepalived does it:
//!
//! - ARP: broadcast frame from the interface MAC, an ARP *request* "who-has VIP tell VIP"
//!   (sender = target = the VIP, sender hardware address = interface MAC, target hardware
//!   address all-ones as keepalived writes it).
//! - NA: to 33:33:00:00:00:01 / ff02::1 from the VIP itself, hop limit 255, Override flag set,
//!   Router flag set when IPv6 forwarding is on for the interface, target = VIP, a Target
//!   Link-Layer Address option with the interface MAC, ICMPv6 checksum computed here.
//!
//! Timing (how many rounds, the repeat after `garp_master_delay`, refresh) is the core's
//! decision; [`Gratuitous::send_gratuitous`] sends what it is told at once.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::Error;
use crate::net::netlink::Netlink;

/// Ethernet broadcast address.
pub const ETH_BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet address of the IPv6 all-nodes group ff02::1.
pub const ETH_ALL_NODES: [u8; 6] = [0x33, 0x33, 0, 0, 0, 1];
/// IPv6 all-nodes multicast address, destination of unsolicited NAs.
pub const IPV6_ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of a gratuitous ARP frame (Ethernet header + ARP for Ethernet/IPv4).
pub const ARP_FRAME_LEN: usize = 14 + 28;
/// Length of an unsolicited NA frame (Ethernet + IPv6 + NA + target link-layer option).
pub const NA_FRAME_LEN: usize = 14 + 40 + 24 + 8;

/// The gratuitous ARP frame keepalived sends for `vip` from an interface with MAC `mac`.
pub fn arp_announcement(mac: [u8; 6], vip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    let mut f = [0u8; ARP_FRAME_LEN];
    f[0..6].copy_from_slice(&ETH_BROADCAST);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let arp = &mut f[14..];
    arp[0..2].copy_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    arp[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // protocol type: IPv4
    arp[4] = 6; // hardware address length
    arp[5] = 4; // protocol address length
    arp[6..8].copy_from_slice(&1u16.to_be_bytes()); // operation: request
    arp[8..14].copy_from_slice(&mac); // sender hardware address
    arp[14..18].copy_from_slice(&vip.octets()); // sender protocol address
    arp[18..24].copy_from_slice(&ETH_BROADCAST); // target hardware address
    arp[24..28].copy_from_slice(&vip.octets()); // target protocol address
    f
}

/// The unsolicited Neighbor Advertisement frame for `vip` from an interface with MAC `mac`;
/// `router` sets the Router flag (the interface forwards IPv6).
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr, router: bool) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    f[0..6].copy_from_slice(&ETH_ALL_NODES);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    let payload_len: u16 = 24 + 8;
    {
        let ip = &mut f[14..54];
        ip[0] = 0x60; // version 6, traffic class 0, flow label 0
        ip[4..6].copy_from_slice(&payload_len.to_be_bytes());
        ip[6] = 58; // next header: ICMPv6
        ip[7] = 255; // hop limit (RFC 4861 requires 255)
        ip[8..24].copy_from_slice(&vip.octets());
        ip[24..40].copy_from_slice(&IPV6_ALL_NODES.octets());
    }
    {
        let na = &mut f[54..];
        na[0] = 136; // Neighbor Advertisement
        na[1] = 0; // code
        na[4] = 0x20 | if router { 0x80 } else { 0 }; // Override (+ Router)
        na[8..24].copy_from_slice(&vip.octets()); // target address
        na[24] = 2; // option: Target Link-Layer Address
        na[25] = 1; // length in units of 8 bytes
        na[26..32].copy_from_slice(&mac);
    }
    let sum = icmpv6_checksum(&vip, &IPV6_ALL_NODES, &f[54..]);
    f[56..58].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The ICMPv6 checksum of `msg` (checksum field zero) between `src` and `dst` (RFC 4443 §2.3:
/// one's-complement sum over the IPv6 pseudo-header and the message).
pub fn icmpv6_checksum(src: &Ipv6Addr, dst: &Ipv6Addr, msg: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u32::from(u16::from_be_bytes([*last, 0]));
        }
    };
    add(&src.octets());
    add(&dst.octets());
    let len = u32::try_from(msg.len()).unwrap_or(u32::MAX);
    add(&len.to_be_bytes());
    add(&[0, 0, 0, 58]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends gratuitous ARPs / unsolicited NAs. One per agent; shares a [`Netlink`] handle to
/// look up interface MACs.
#[derive(Debug)]
pub struct Gratuitous {
    fd: AsyncFd<Socket>,
    netlink: Netlink,
}

impl Gratuitous {
    /// Opens the `AF_PACKET` socket (needs `CAP_NET_RAW` and a tokio runtime).
    pub fn new(netlink: Netlink) -> Result<Gratuitous, Error> {
        let sock = Socket::new(Domain::PACKET, Type::RAW.cloexec(), None)
            .map_err(|e| Error::io("opening the AF_PACKET socket for gratuitous ARP/NA", e))?;
        sock.set_nonblocking(true)
            .map_err(|e| Error::io("AF_PACKET socket: set non-blocking", e))?;
        // SAFETY: `sock` owns its descriptor, which stays open and unchanged until the AsyncFd
        // that takes ownership of it is dropped.
        let fd =
            unsafe { AsyncFd::register_with_interest(sock, Interest::WRITABLE) }.map_err(|e| {
                Error::io(
                    "AF_PACKET socket: register with the tokio reactor",
                    e.into_parts().1,
                )
            })?;
        Ok(Gratuitous { fd, netlink })
    }

    /// Sends `count` rounds of one gratuitous ARP (IPv4) or unsolicited NA (IPv6) per address
    /// in `addrs`, out of interface `ifindex`, back to back. Returns the number of frames sent.
    /// Fails if the interface is gone, has no MAC address, or a send fails.
    pub async fn send_gratuitous(
        &self,
        ifindex: u32,
        addrs: &[IpAddr],
        count: u32,
    ) -> Result<usize, Error> {
        if addrs.is_empty() || count == 0 {
            return Ok(0);
        }
        let link = self.netlink.link(ifindex).await?.ok_or_else(|| {
            Error::io(
                format!("gratuitous ARP/NA on interface {ifindex}"),
                io::Error::from_raw_os_error(libc::ENODEV),
            )
        })?;
        let mac = link.mac.ok_or_else(|| {
            Error::io(
                format!("gratuitous ARP/NA on {}", link.name),
                io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the interface has no Ethernet address",
                ),
            )
        })?;
        let router = addrs.iter().any(IpAddr::is_ipv6) && ipv6_forwarding(&link.name);
        let frames: Vec<(IpAddr, Vec<u8>)> = addrs
            .iter()
            .map(|a| match a {
                IpAddr::V4(v4) => (*a, arp_announcement(mac, *v4).to_vec()),
                IpAddr::V6(v6) => (*a, unsolicited_na(mac, *v6, router).to_vec()),
            })
            .collect();
        let mut sent = 0;
        for _ in 0..count {
            for (addr, frame) in &frames {
                self.send_frame(ifindex, frame).await.map_err(|e| {
                    let what = if addr.is_ipv4() {
                        "gratuitous ARP"
                    } else {
                        "unsolicited NA"
                    };
                    Error::io(format!("sending {what} for {addr} on {}", link.name), e)
                })?;
                sent += 1;
            }
        }
        tracing::debug!(ifname = %link.name, count, addresses = addrs.len(), "sent gratuitous ARP/NA");
        Ok(sent)
    }

    async fn send_frame(&self, ifindex: u32, frame: &[u8]) -> io::Result<()> {
        let ifindex = libc::c_int::try_from(ifindex).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range")
        })?;
        let mut dest = [0u8; 8];
        dest[..6].copy_from_slice(&frame[0..6]);
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = u16::from_be_bytes([frame[12], frame[13]]).to_be();
        sll.sll_ifindex = ifindex;
        sll.sll_halen = 6;
        sll.sll_addr = dest;
        let n = self
            .fd
            .async_io(Interest::WRITABLE, |sock| {
                // SAFETY: `frame` and `sll` are live for the call and their lengths are exact.
                let rc = unsafe {
                    libc::sendto(
                        sock.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&sll as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if rc < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(rc as usize)
                }
            })
            .await?;
        if n != frame.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("sent {n} of {} bytes", frame.len()),
            ));
        }
        Ok(())
    }
}

/// Whether IPv6 forwarding is on for `ifname` (read from the calling thread's namespace).
fn ipv6_forwarding(ifname: &str) -> bool {
    std::fs::read_to_string(format!("/proc/sys/net/ipv6/conf/{ifname}/forwarding"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmpv6_checksum_verifies_to_zero() {
        let mac = [0x02, 0, 0, 0, 0, 0x0a];
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = unsolicited_na(mac, vip, false);
        // Summing the message including its checksum must give 0 (i.e. !0xffff).
        assert_eq!(icmpv6_checksum(&vip, &IPV6_ALL_NODES, &f[54..]), 0);
    }

    #[test]
    fn icmpv6_checksum_odd_length_pads_with_zero() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8::2".parse().unwrap();
        // Same sum whether the odd byte is padded by us or given explicitly (length differs,
        // so compare against a hand computation instead).
        let odd = icmpv6_checksum(&a, &b, &[0x12]);
        let mut sum: u32 = 0x2001 + 0x0db8 + 0x0001 + 0x2001 + 0x0db8 + 0x0002 + 1 + 58 + 0x1200;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        assert_eq!(odd, !(sum as u16));
    }

    #[test]
    fn router_flag_is_the_top_bit() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        assert_eq!(unsolicited_na(mac, vip, true)[58], 0xa0);
        assert_eq!(unsolicited_na(mac, vip, false)[58], 0x20);
    }
}
