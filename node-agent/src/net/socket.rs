//! Raw VRRP sockets (IP protocol 112), one per (interface, address family).
//!
//! A [`VrrpSocket`] is shared by every VRRP instance on its interface and family; the core's
//! router demultiplexes received adverts by VRID. The socket only moves bytes:
//!
//! - **Send**: the caller hands over a complete VRRP message (header, addresses, auth data,
//!   checksum already filled in) plus the source and destination address. The kernel adds the
//!   IP header: TTL / hop limit 255 (multicast, and unicast unless `unicast_ttl` asks for
//!   another, which goes with the packet as a control message), IPv4 TOS / IPv6 traffic class
//!   `0xc0`, no DF bit on IPv4 (like keepalived). The source address is forced per packet with
//!   an `IP_PKTINFO` / `IPV6_PKTINFO` control message, so instances with different
//!   `unicast_src_ip` values can share the socket.
//! - **Receive**: [`ReceivedPacket`] carries the source and destination address, the TTL / hop
//!   limit from the `IP_TTL` / `IPV6_HOPLIMIT` control message, the arrival interface and the
//!   VRRP message alone (the IPv4 header is stripped; IPv6 raw sockets never see it).
//!
//! **Checksums are the core's job.** The VRRP checksum (v2: the message only; v3: the message
//! plus the IPv4 or IPv6 pseudo-header) is computed and verified in user space by the codec,
//! which gets the source/destination addresses from here. This module deliberately does *not*
//! set `IPV6_CHECKSUM`, so the kernel neither fills in nor checks the checksum of outgoing or
//! incoming IPv6 packets; a VRRP message is sent exactly as given.
//!
//! Multicast: the socket joins 224.0.0.18 / ff02::12 on its interface (by ifindex), sends
//! multicast out of that interface, and has multicast loopback off, so an agent never hears
//! its own adverts. It is also bound to the interface (`SO_BINDTODEVICE`), so it only sees
//! packets that arrived there; unicast adverts addressed to any local address on the
//! interface are received too.

use std::collections::HashMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use nix::sys::socket::{
    self as nixsock, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6,
    SockaddrStorage, sockopt,
};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::Error;

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: i32 = 112;
/// The IPv4 multicast group of VRRP (224.0.0.18).
pub const VRRP_GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// The IPv6 multicast group of VRRP (ff02::12).
pub const VRRP_GROUP_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// TTL / hop limit of every VRRP packet we send (and the only one accepted for multicast).
pub const VRRP_TTL: u8 = 255;
/// IPv4 TOS / IPv6 traffic class of VRRP packets (DSCP CS6, like keepalived).
pub const VRRP_TOS: u8 = 0xc0;

/// Largest datagram read: the biggest VRRP message (v2 with 255 IPv4 addresses and auth data,
/// 1036 bytes) plus a maximal IPv4 header fits comfortably; larger packets are reported
/// truncated.
const RECV_BUFFER: usize = 4096;

/// Receive buffer asked for each VRRP socket.
const RECV_SOCKET_BUFFER: usize = 1 << 20;

/// Address family of a socket: the core's [`vrrp::Family`] (VRRP instances are single-family).
pub use vrrp::Family;

/// One received VRRP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedPacket {
    /// Interface index the packet arrived on.
    pub ifindex: u32,
    /// Source address (from the IPv4 header / the IPv6 sender address). The core uses it for
    /// the pseudo-header checksum, the unicast peer check and the address tie-break.
    pub src: IpAddr,
    /// Destination address (from the IPv4 header / `IPV6_PKTINFO`): the VRRP group or one of
    /// our unicast addresses. Needed for the pseudo-header checksum.
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6) the packet arrived with.
    pub ttl: u8,
    /// The VRRP message, starting at the version/type byte.
    pub payload: Vec<u8>,
    /// The datagram was longer than the receive buffer and was cut; the core should drop it.
    pub truncated: bool,
}

/// A raw protocol-112 socket bound to one interface and family. See the module docs.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    family: Family,
    ifindex: u32,
    ifname: String,
}

impl VrrpSocket {
    /// Opens the socket for `family` on interface `ifname` (index `ifindex`), joins the VRRP
    /// group there and sets all send/receive options. Needs `CAP_NET_RAW`, and a running
    /// tokio runtime (the fd is registered with its reactor).
    pub fn open(ifname: &str, ifindex: u32, family: Family) -> Result<Self, Error> {
        let what = |step: &str| format!("VRRP {family} socket on {ifname}: {step}");
        let domain = match family {
            Family::V4 => Domain::IPV4,
            Family::V6 => Domain::IPV6,
        };
        let sock = Socket::new(
            domain,
            Type::RAW.cloexec(),
            Some(Protocol::from(IPPROTO_VRRP)),
        )
        .map_err(|e| Error::io(what("create"), e))?;
        sock.set_nonblocking(true)
            .map_err(|e| Error::io(what("set non-blocking"), e))?;
        // Room for bursts (many instances, short intervals); the kernel caps it at rmem_max.
        if let Err(e) = sock.set_recv_buffer_size(RECV_SOCKET_BUFFER) {
            tracing::debug!(error = %e, "cannot enlarge the VRRP socket's receive buffer");
        }
        sock.bind_device(Some(ifname.as_bytes()))
            .map_err(|e| Error::io(what("SO_BINDTODEVICE"), e))?;
        match family {
            Family::V4 => {
                configure_v4(&sock, ifindex).map_err(|(step, e)| Error::io(what(step), e))?
            }
            Family::V6 => {
                configure_v6(&sock, ifindex).map_err(|(step, e)| Error::io(what(step), e))?
            }
        }
        // SAFETY: `sock` owns its file descriptor, which stays open and unchanged until the
        // `AsyncFd` (which takes ownership of `sock`) is dropped.
        let fd = unsafe {
            AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::WRITABLE)
        }
        .map_err(|e| {
            let (_, err) = e.into_parts();
            Error::io(what("register with the tokio reactor"), err)
        })?;
        Ok(VrrpSocket {
            fd,
            family,
            ifindex,
            ifname: ifname.to_owned(),
        })
    }

    /// The socket's address family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The interface index the socket is bound to.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The interface name the socket is bound to.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Waits for and returns the next VRRP packet. Cancel-safe (dropping the future loses no
    /// packet). Datagrams too short to hold an IPv4 header are skipped. An error concerns this
    /// call only; the socket stays usable (log it and call again).
    pub async fn recv(&self) -> Result<ReceivedPacket, Error> {
        loop {
            let res = self
                .fd
                .async_io(Interest::READABLE, |sock| recv_one(sock, self.family))
                .await;
            match res {
                Ok(Some(pkt)) => return Ok(pkt),
                Ok(None) => continue,
                Err(e) => {
                    return Err(Error::io(
                        format!(
                            "receiving on the VRRP {} socket of {}",
                            self.family, self.ifname
                        ),
                        e,
                    ));
                }
            }
        }
    }

    /// Receives one packet if one is queued, without waiting (`Ok(None)` when none is).
    pub fn try_recv(&self) -> Result<Option<ReceivedPacket>, Error> {
        loop {
            let res = self
                .fd
                .try_io(Interest::READABLE, |sock| recv_one(sock, self.family));
            match res {
                Ok(Some(pkt)) => return Ok(Some(pkt)),
                Ok(None) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => {
                    return Err(Error::io(
                        format!(
                            "receiving on the VRRP {} socket of {}",
                            self.family, self.ifname
                        ),
                        e,
                    ));
                }
            }
        }
    }

    /// Sends one VRRP message (`payload`, checksum already set) from `src` to `dst` (the VRRP
    /// group or a unicast peer). `src` must be a local address of this family: the
    /// interface's primary IPv4 address / link-local IPv6 address, or `unicast_src_ip`.
    pub async fn send(&self, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Result<(), Error> {
        self.send_with_ttl(src, dst, payload, VRRP_TTL).await
    }

    /// [`VrrpSocket::send`] with the TTL / hop limit `ttl` (keepalived `unicast_ttl`; only
    /// unicast adverts may use another value than 255), set per packet with an `IP_TTL` /
    /// `IPV6_HOPLIMIT` control message.
    pub async fn send_with_ttl(
        &self,
        src: IpAddr,
        dst: IpAddr,
        payload: &[u8],
        ttl: u8,
    ) -> Result<(), Error> {
        let context = || {
            format!(
                "sending a VRRP advert from {src} to {dst} on {}",
                self.ifname
            )
        };
        if Family::of(&src) != self.family || Family::of(&dst) != self.family {
            return Err(Error::io(
                context(),
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("addresses must be {} like the socket", self.family),
                ),
            ));
        }
        let sent = self
            .fd
            .async_io(Interest::WRITABLE, |sock| {
                send_one(sock, self.ifindex, src, dst, payload, ttl)
            })
            .await
            .map_err(|e| Error::io(context(), e))?;
        if sent != payload.len() {
            return Err(Error::io(
                context(),
                io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("sent {sent} of {} bytes", payload.len()),
                ),
            ));
        }
        Ok(())
    }

    /// Sends the same message from `src` to each destination in `dsts` (unicast peers), one
    /// packet each; a failure for one peer does not stop the others. Returns one result per
    /// destination, in order.
    pub async fn send_each(
        &self,
        src: IpAddr,
        dsts: &[IpAddr],
        payload: &[u8],
    ) -> Vec<Result<(), Error>> {
        let mut out = Vec::with_capacity(dsts.len());
        for dst in dsts {
            out.push(self.send(src, *dst, payload).await);
        }
        out
    }
}

/// The agent's VRRP sockets: at most one per (interface index, family), opened on first use
/// and shared (`Arc`) by every instance on that interface and family. One task should own the
/// receiving side of each socket (the router that demultiplexes by VRID); any task may send.
///
/// A socket stays bound to the interface index it was opened for: when netlink reports the link
/// deleted (or re-created under a new index), [`VrrpSockets::close`] it and open a new one.
#[derive(Debug, Default)]
pub struct VrrpSockets {
    open: HashMap<(u32, Family), Arc<VrrpSocket>>,
}

impl VrrpSockets {
    /// No sockets yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The socket for (`ifindex`, `family`), opening it (see [`VrrpSocket::open`]) if needed.
    /// The second value is true when the socket was opened by this call (the caller then
    /// starts a receive task for it).
    pub fn get_or_open(
        &mut self,
        ifname: &str,
        ifindex: u32,
        family: Family,
    ) -> Result<(Arc<VrrpSocket>, bool), Error> {
        if let Some(s) = self.open.get(&(ifindex, family)) {
            return Ok((Arc::clone(s), false));
        }
        let s = Arc::new(VrrpSocket::open(ifname, ifindex, family)?);
        self.open.insert((ifindex, family), Arc::clone(&s));
        Ok((s, true))
    }

    /// The socket for (`ifindex`, `family`), if open.
    pub fn get(&self, ifindex: u32, family: Family) -> Option<Arc<VrrpSocket>> {
        self.open.get(&(ifindex, family)).cloned()
    }

    /// Forgets the socket for (`ifindex`, `family`); it closes when the last `Arc` is dropped.
    pub fn close(&mut self, ifindex: u32, family: Family) -> Option<Arc<VrrpSocket>> {
        self.open.remove(&(ifindex, family))
    }

    /// All open sockets.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VrrpSocket>> {
        self.open.values()
    }
}

fn configure_v4(sock: &Socket, ifindex: u32) -> Result<(), (&'static str, io::Error)> {
    sock.join_multicast_v4_n(&VRRP_GROUP_V4, &InterfaceIndexOrAddress::Index(ifindex))
        .map_err(|e| ("join 224.0.0.18", e))?;
    set_multicast_if_v4_index(sock, ifindex).map_err(|e| ("IP_MULTICAST_IF", e))?;
    sock.set_multicast_loop_v4(false)
        .map_err(|e| ("IP_MULTICAST_LOOP", e))?;
    sock.set_multicast_ttl_v4(u32::from(VRRP_TTL))
        .map_err(|e| ("IP_MULTICAST_TTL", e))?;
    sock.set_ttl_v4(u32::from(VRRP_TTL))
        .map_err(|e| ("IP_TTL", e))?;
    sock.set_tos_v4(u32::from(VRRP_TOS))
        .map_err(|e| ("IP_TOS", e))?;
    // keepalived's adverts carry no DF bit; never let path-MTU discovery set it.
    set_int_opt(
        sock,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )
    .map_err(|e| ("IP_MTU_DISCOVER", e))?;
    nixsock::setsockopt(sock, sockopt::Ipv4RecvTtl, &true).map_err(|e| ("IP_RECVTTL", e.into()))?;
    nixsock::setsockopt(sock, sockopt::Ipv4PacketInfo, &true)
        .map_err(|e| ("IP_PKTINFO", e.into()))?;
    Ok(())
}

fn configure_v6(sock: &Socket, ifindex: u32) -> Result<(), (&'static str, io::Error)> {
    sock.join_multicast_v6(&VRRP_GROUP_V6, ifindex)
        .map_err(|e| ("join ff02::12", e))?;
    sock.set_multicast_if_v6(ifindex)
        .map_err(|e| ("IPV6_MULTICAST_IF", e))?;
    sock.set_multicast_loop_v6(false)
        .map_err(|e| ("IPV6_MULTICAST_LOOP", e))?;
    sock.set_multicast_hops_v6(u32::from(VRRP_TTL))
        .map_err(|e| ("IPV6_MULTICAST_HOPS", e))?;
    sock.set_unicast_hops_v6(u32::from(VRRP_TTL))
        .map_err(|e| ("IPV6_UNICAST_HOPS", e))?;
    sock.set_tclass_v6(u32::from(VRRP_TOS))
        .map_err(|e| ("IPV6_TCLASS", e))?;
    nixsock::setsockopt(sock, sockopt::Ipv6RecvHopLimit, &true)
        .map_err(|e| ("IPV6_RECVHOPLIMIT", e.into()))?;
    nixsock::setsockopt(sock, sockopt::Ipv6RecvPacketInfo, &true)
        .map_err(|e| ("IPV6_RECVPKTINFO", e.into()))?;
    // IPV6_CHECKSUM is intentionally left unset: the core computes the VRRP checksum.
    Ok(())
}

fn set_int_opt(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: passes a pointer to a live c_int and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `IP_MULTICAST_IF` by interface index (socket2 only offers the by-address form).
fn set_multicast_if_v4_index(sock: &Socket, ifindex: u32) -> io::Result<()> {
    let index = libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range"))?;
    let mreqn = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: index,
    };
    // SAFETY: passes a pointer to a live ip_mreqn and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            (&mreqn as *const libc::ip_mreqn).cast(),
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reads one datagram. `Ok(None)`: a datagram was consumed but is unusable (skipped).
fn recv_one(sock: &Socket, family: Family) -> io::Result<Option<ReceivedPacket>> {
    let mut buf = [0u8; RECV_BUFFER];
    let mut cmsg_space = nix::cmsg_space!(
        libc::in6_pktinfo,
        libc::c_int,
        libc::in_pktinfo,
        libc::c_int
    );
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = nixsock::recvmsg::<SockaddrStorage>(
        sock.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut cmsg_space),
        MsgFlags::MSG_TRUNC,
    )?;
    let len = msg.bytes;
    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC) || len > RECV_BUFFER;
    let mut ttl: Option<u8> = None;
    let mut ifindex: u32 = 0;
    let mut dst_v6: Option<Ipv6Addr> = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            match cmsg {
                ControlMessageOwned::Ipv4Ttl(t) => ttl = u8::try_from(t).ok(),
                ControlMessageOwned::Ipv6HopLimit(h) => ttl = u8::try_from(h).ok(),
                ControlMessageOwned::Ipv4PacketInfo(info) => {
                    ifindex = u32::try_from(info.ipi_ifindex).unwrap_or(0)
                }
                ControlMessageOwned::Ipv6PacketInfo(info) => {
                    ifindex = info.ipi6_ifindex;
                    dst_v6 = Some(Ipv6Addr::from(info.ipi6_addr.s6_addr));
                }
                _ => {}
            }
        }
    }
    let src_sockaddr = msg.address;
    let data = &buf[..len.min(RECV_BUFFER)];
    match family {
        Family::V4 => {
            let Some(ip) = Ipv4Header::parse(data) else {
                tracing::debug!(len, "dropping a datagram without a valid IPv4 header");
                return Ok(None);
            };
            let end = if truncated {
                data.len()
            } else {
                ip.total_len.clamp(ip.header_len, data.len())
            };
            Ok(Some(ReceivedPacket {
                ifindex,
                src: IpAddr::V4(ip.src),
                dst: IpAddr::V4(ip.dst),
                ttl: ttl.unwrap_or(ip.ttl),
                payload: data[ip.header_len..end].to_vec(),
                truncated,
            }))
        }
        Family::V6 => {
            let Some(src) = src_sockaddr
                .as_ref()
                .and_then(|s| s.as_sockaddr_in6())
                .map(|s| s.ip())
            else {
                tracing::debug!("dropping an IPv6 datagram without a sender address");
                return Ok(None);
            };
            let (Some(dst), Some(ttl)) = (dst_v6, ttl) else {
                tracing::debug!(%src, "dropping an IPv6 datagram without IPV6_PKTINFO/IPV6_HOPLIMIT");
                return Ok(None);
            };
            Ok(Some(ReceivedPacket {
                ifindex,
                src: IpAddr::V6(src),
                dst: IpAddr::V6(dst),
                ttl,
                payload: data.to_vec(),
                truncated,
            }))
        }
    }
}

fn send_one(
    sock: &Socket,
    ifindex: u32,
    src: IpAddr,
    dst: IpAddr,
    payload: &[u8],
    ttl: u8,
) -> io::Result<usize> {
    let iov = [IoSlice::new(payload)];
    let fd = sock.as_raw_fd();
    // The socket's own TTL is 255; another one travels with the packet.
    let ttl_value = libc::c_int::from(ttl);
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let info = libc::in_pktinfo {
                ipi_ifindex: libc::c_int::try_from(ifindex).map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidInput, "interface index out of range")
                })?,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(src.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let addr = SockaddrIn::from(SocketAddrV4::new(dst, 0));
            let info_msg = ControlMessage::Ipv4PacketInfo(&info);
            let ttl_msg = ControlMessage::Ipv4Ttl(&ttl_value);
            let cmsgs: &[ControlMessage<'_>] = if ttl == VRRP_TTL {
                &[info_msg]
            } else {
                &[info_msg, ttl_msg]
            };
            Ok(nixsock::sendmsg(
                fd,
                &iov,
                cmsgs,
                MsgFlags::empty(),
                Some(&addr),
            )?)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: src.octets(),
                },
                ipi6_ifindex: ifindex,
            };
            // Link-local and multicast destinations need the scope; global ones ignore it.
            let scope = if needs_scope(&dst) { ifindex } else { 0 };
            let addr = SockaddrIn6::from(SocketAddrV6::new(dst, 0, 0, scope));
            let info_msg = ControlMessage::Ipv6PacketInfo(&info);
            let hops_msg = ControlMessage::Ipv6HopLimit(&ttl_value);
            let cmsgs: &[ControlMessage<'_>] = if ttl == VRRP_TTL {
                &[info_msg]
            } else {
                &[info_msg, hops_msg]
            };
            Ok(nixsock::sendmsg(
                fd,
                &iov,
                cmsgs,
                MsgFlags::empty(),
                Some(&addr),
            )?)
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "source and destination families differ",
        )),
    }
}

fn needs_scope(addr: &Ipv6Addr) -> bool {
    addr.is_unicast_link_local() || addr.is_multicast()
}

/// The fields of an IPv4 header the shell needs.
struct Ipv4Header {
    header_len: usize,
    total_len: usize,
    ttl: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
}

impl Ipv4Header {
    fn parse(data: &[u8]) -> Option<Ipv4Header> {
        let first = *data.first()?;
        if first >> 4 != 4 {
            return None;
        }
        let header_len = usize::from(first & 0x0f) * 4;
        if header_len < 20 || data.len() < header_len {
            return None;
        }
        Some(Ipv4Header {
            header_len,
            total_len: usize::from(u16::from_be_bytes([data[2], data[3]])),
            ttl: data[8],
            src: Ipv4Addr::new(data[12], data[13], data[14], data[15]),
            dst: Ipv4Addr::new(data[16], data[17], data[18], data[19]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_parse_reads_fields_and_options_length() {
        let mut pkt = vec![0u8; 28];
        pkt[0] = 0x46; // version 4, IHL 6 (24 bytes, one option word)
        pkt[2..4].copy_from_slice(&28u16.to_be_bytes());
        pkt[8] = 255;
        pkt[9] = 112;
        pkt[12..16].copy_from_slice(&[192, 0, 2, 1]);
        pkt[16..20].copy_from_slice(&[224, 0, 0, 18]);
        let h = Ipv4Header::parse(&pkt).unwrap();
        assert_eq!(h.header_len, 24);
        assert_eq!(h.total_len, 28);
        assert_eq!(h.ttl, 255);
        assert_eq!(h.src, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(h.dst, VRRP_GROUP_V4);
    }

    #[test]
    fn ipv4_header_parse_rejects_garbage() {
        assert!(Ipv4Header::parse(&[]).is_none());
        assert!(Ipv4Header::parse(&[0x45; 10]).is_none());
        assert!(Ipv4Header::parse(&[0x65; 40]).is_none());
        assert!(Ipv4Header::parse(&[0x44; 40]).is_none()); // IHL below 5
    }

    #[test]
    fn scope_is_needed_for_link_local_and_multicast_only() {
        assert!(needs_scope(&VRRP_GROUP_V6));
        assert!(needs_scope(&"fe80::1".parse().unwrap()));
        assert!(!needs_scope(&"2001:db8::1".parse().unwrap()));
    }
}
