//! rtnetlink: the node's interfaces and addresses, VIP add/remove, link and address events.
//!
//! [`Netlink`] wraps one rtnetlink connection (its socket lives in the network namespace of
//! the thread that created it; the connection task runs on the current tokio runtime).
//!
//! VIPs ([`Vip`]) are added with replace semantics (`NLM_F_CREATE | NLM_F_REPLACE`, so adding
//! a VIP that is already there succeeds) and removed with "already gone" counted as success.
//! [`Netlink::add_vips`] / [`Netlink::remove_vips`] pipeline their requests: all messages of a
//! window are queued on the socket in order before any acknowledgement is awaited, so the
//! kernel applies them in the given order and hundreds of VIPs cost a few round trips.
//!
//! **Never await VIP changes inside the protocol loop.** Adding or removing many addresses
//! takes the kernel's RTNL lock and can take milliseconds per address on a busy host; the
//! driver should `tokio::spawn` the change (a [`Netlink`] is cheap to clone) and feed the
//! result back as an event, so adverts keep their cadence.
//!
//! Note on IPv4: when the kernel deletes the *primary* address of a subnet it also deletes the
//! secondaries of that subnet unless `net.ipv4.conf.<if>.promote_secondaries` is 1. VIPs that
//! share a subnet with one another but not with the interface's own address are affected;
//! `/32` VIPs (or VIPs inside the interface's subnet) are not.
//!
//! Events ([`Netlink::events`]) come from the kernel's multicast groups (`RTNLGRP_LINK`, and
//! optionally the IPv4/IPv6 address groups); nothing is polled.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use crds::resolve::{InterfaceFacts, NodeFacts};
use futures::channel::mpsc::UnboundedReceiver;
use futures::{Stream, StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage, State};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use rtnetlink::sys::AsyncSocket;
use rtnetlink::{MulticastGroup, new_connection, new_multicast_connection};
use tokio::task::JoinHandle;

use crate::Error;

/// Requests queued before waiting for their acknowledgements (keeps the kernel's replies well
/// inside the socket's receive buffer).
const PIPELINE_WINDOW: usize = 128;

/// Receive buffer asked for the event socket (the kernel caps it at `net.core.rmem_max`).
const EVENTS_RCVBUF: usize = 4 << 20;

/// Longest interface name / address label the kernel accepts (IFNAMSIZ − 1).
const IFNAMSIZ_MAX: usize = 15;

/// `EADDRNOTAVAIL`: the address to delete is not there.
const EADDRNOTAVAIL: i32 = libc::EADDRNOTAVAIL;
/// `ENODEV`: no such interface.
const ENODEV: i32 = libc::ENODEV;

/// A handle on one rtnetlink connection. Cheap to clone; clones share the connection.
#[derive(Clone, Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
}

/// The operational state of a link (RFC 2863, as the kernel reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OperState {
    /// Unknown (e.g. loopback, dummy: drivers that do not report it).
    Unknown,
    /// A component is missing.
    NotPresent,
    /// Down.
    Down,
    /// Down because a lower layer is down (e.g. the veth peer or the cable).
    LowerLayerDown,
    /// In a test mode.
    Testing,
    /// Waiting for an external event.
    Dormant,
    /// Up.
    Up,
    /// A value this build does not know.
    Other(u8),
}

impl From<&State> for OperState {
    fn from(s: &State) -> Self {
        match s {
            State::Unknown => OperState::Unknown,
            State::NotPresent => OperState::NotPresent,
            State::Down => OperState::Down,
            State::LowerLayerDown => OperState::LowerLayerDown,
            State::Testing => OperState::Testing,
            State::Dormant => OperState::Dormant,
            State::Up => OperState::Up,
            State::Other(v) => OperState::Other(*v),
            _ => OperState::Unknown,
        }
    }
}

/// Whether a link can carry VRRP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkState {
    /// Administratively up (`IFF_UP`).
    pub admin_up: bool,
    /// Operationally up (`IFF_RUNNING`): up with carrier.
    pub running: bool,
    /// The lower layer (carrier) is up (`IFF_LOWER_UP`).
    pub lower_up: bool,
    /// The kernel's operational state.
    pub oper: OperState,
}

impl LinkState {
    /// Usable for VRRP: administratively up and running (carrier present). This is the test
    /// keepalived applies (`IFF_UP` and `IFF_RUNNING`); down ⇒ the instances go to FAULT.
    pub fn is_up(&self) -> bool {
        self.admin_up && self.running
    }

    fn from_message(msg: &LinkMessage) -> LinkState {
        let flags = msg.header.flags;
        let oper = msg
            .attributes
            .iter()
            .find_map(|a| match a {
                LinkAttribute::OperState(s) => Some(OperState::from(s)),
                _ => None,
            })
            .unwrap_or(OperState::Unknown);
        LinkState {
            admin_up: flags.contains(LinkFlags::Up),
            running: flags.contains(LinkFlags::Running),
            lower_up: flags.contains(LinkFlags::LowerUp),
            oper,
        }
    }
}

/// One address configured on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    /// The address with its prefix length.
    pub address: IpNet,
    /// IPv4 label (`eth0:vip`), when one is set and differs from nothing.
    pub label: Option<String>,
    /// IPv4: a secondary address (another address of the same subnet came first).
    pub secondary: bool,
    /// IPv6: still undergoing duplicate address detection (cannot be used as a source yet).
    pub tentative: bool,
    /// IPv6: duplicate address detection failed.
    pub dad_failed: bool,
}

/// One interface of this host, as rtnetlink reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware (MAC) address, when the link has a 6-byte one.
    pub mac: Option<[u8; 6]>,
    /// A loopback interface.
    pub loopback: bool,
    /// Link state.
    pub state: LinkState,
    /// The link's MTU, when reported.
    pub mtu: Option<u32>,
    /// Addresses in the kernel's order (IPv4 primaries first within a subnet).
    pub addresses: Vec<InterfaceAddress>,
}

impl Interface {
    /// The interface's primary IPv4 address: the first non-secondary one (keepalived's
    /// default source of IPv4 adverts and the tie-break address).
    pub fn primary_ipv4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|a| match a.address.addr() {
            IpAddr::V4(v4) if !a.secondary => Some(v4),
            _ => None,
        })
    }

    /// The interface's usable link-local IPv6 address (source of IPv6 adverts).
    pub fn link_local_ipv6(&self) -> Option<Ipv6Addr> {
        self.addresses.iter().find_map(|a| match a.address.addr() {
            IpAddr::V6(v6) if v6.is_unicast_link_local() && !a.tentative && !a.dad_failed => {
                Some(v6)
            }
            _ => None,
        })
    }

    /// The facts the resolver needs about this interface.
    pub fn facts(&self) -> InterfaceFacts {
        InterfaceFacts {
            name: self.name.clone(),
            addresses: self.addresses.iter().map(|a| a.address).collect(),
        }
    }
}

impl From<&Interface> for InterfaceFacts {
    fn from(i: &Interface) -> Self {
        i.facts()
    }
}

/// The facts about this node for [`crds::resolve`]: every non-loopback interface with its
/// addresses, in interface-index order (so "the interface whose subnet holds the VIP" picks
/// the same one on every start).
pub fn node_facts(node_name: &str, interfaces: &[Interface]) -> NodeFacts {
    let mut ifs: Vec<&Interface> = interfaces.iter().filter(|i| !i.loopback).collect();
    ifs.sort_by_key(|i| i.index);
    NodeFacts {
        name: node_name.to_owned(),
        interfaces: ifs.into_iter().map(Interface::facts).collect(),
        addresses: Vec::new(),
    }
}

/// A virtual address to add to or remove from an interface. Built with [`Vip::new`], which
/// validates it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vip {
    ifname: String,
    ifindex: u32,
    address: IpNet,
    label: Option<String>,
}

impl Vip {
    /// A VIP `address` (with its prefix length; host bits are kept) on interface `ifname`
    /// (index `ifindex`), with an optional IPv4 `label`. The label must start with the
    /// interface name (keepalived's `eth0:vip` convention, also enforced by the kernel) and be
    /// at most 15 bytes; IPv6 addresses cannot carry one.
    pub fn new(
        ifname: &str,
        ifindex: u32,
        address: IpNet,
        label: Option<String>,
    ) -> Result<Vip, Error> {
        if ifname.is_empty() || ifname.len() > IFNAMSIZ_MAX {
            return Err(Error::Config(format!(
                "interface name {ifname:?}: must be 1 to {IFNAMSIZ_MAX} bytes"
            )));
        }
        if let Some(l) = &label {
            if address.addr().is_ipv6() {
                return Err(Error::Config(format!(
                    "label {l:?} on {address}: the kernel supports address labels for IPv4 only"
                )));
            }
            if !l.starts_with(ifname) {
                return Err(Error::Config(format!(
                    "label {l:?} on {address}: must start with the interface name {ifname:?}"
                )));
            }
            if l.len() > IFNAMSIZ_MAX {
                return Err(Error::Config(format!(
                    "label {l:?} on {address}: longer than {IFNAMSIZ_MAX} bytes"
                )));
            }
        }
        Ok(Vip {
            ifname: ifname.to_owned(),
            ifindex,
            address,
            label,
        })
    }

    /// Interface name.
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Address and prefix length.
    pub fn address(&self) -> IpNet {
        self.address
    }

    /// IPv4 label.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    fn message(&self, with_label: bool) -> AddressMessage {
        let mut msg = AddressMessage::default();
        msg.header.index = self.ifindex;
        msg.header.prefix_len = self.address.prefix_len();
        let addr = self.address.addr();
        msg.header.family = match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        };
        msg.attributes.push(AddressAttribute::Local(addr));
        msg.attributes.push(AddressAttribute::Address(addr));
        if with_label {
            if let Some(l) = &self.label {
                msg.attributes.push(AddressAttribute::Label(l.clone()));
            }
            if addr.is_ipv6() {
                // Like keepalived: a VIP is usable at once, no duplicate address detection
                // (VRRP itself decides who holds it).
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
        msg
    }
}

impl std::fmt::Display for Vip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dev {}", self.address, self.ifname)?;
        if let Some(l) = &self.label {
            write!(f, " label {l}")?;
        }
        Ok(())
    }
}

/// What happened to the network, from the kernel's multicast notifications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetEvent {
    /// A link appeared, or its state or name changed (only reported when they differ from
    /// the last ones reported for that index on this stream).
    Link {
        /// Interface index.
        ifindex: u32,
        /// Interface name.
        ifname: String,
        /// New state.
        state: LinkState,
    },
    /// A link was deleted.
    LinkRemoved {
        /// Interface index.
        ifindex: u32,
        /// Interface name, when the kernel said.
        ifname: String,
    },
    /// An address was added to an interface (only with address events enabled).
    AddressAdded {
        /// Interface index.
        ifindex: u32,
        /// Address and prefix.
        address: IpNet,
    },
    /// An address was removed (only with address events enabled).
    AddressRemoved {
        /// Interface index.
        ifindex: u32,
        /// Address and prefix.
        address: IpNet,
    },
    /// The kernel dropped notifications (the socket buffer overflowed): re-read the state with
    /// [`Netlink::interfaces`].
    Overrun,
}

/// A stream of [`NetEvent`]s. Subscribe *before* reading the initial state with
/// [`Netlink::interfaces`] so no change falls between the two. The stream ends only if the
/// netlink socket fails; dropping it closes the subscription.
pub struct NetEvents {
    rx: UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    connection: JoinHandle<()>,
    last: HashMap<u32, (String, LinkState)>,
    _handle: rtnetlink::Handle,
}

impl std::fmt::Debug for NetEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetEvents")
            .field("links_seen", &self.last.len())
            .finish()
    }
}

impl Drop for NetEvents {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl NetEvents {
    /// The next event; `None` when the subscription has ended.
    pub async fn next_event(&mut self) -> Option<NetEvent> {
        self.next().await
    }

    fn translate(&mut self, msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<NetEvent> {
        match msg.payload {
            NetlinkPayload::Overrun(_) => {
                self.last.clear();
                Some(NetEvent::Overrun)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                let ifindex = link.header.index;
                let state = LinkState::from_message(&link);
                let ifname = link_name(&link).unwrap_or_default();
                let seen = (ifname.clone(), state);
                if self.last.get(&ifindex) == Some(&seen) {
                    return None;
                }
                self.last.insert(ifindex, seen);
                Some(NetEvent::Link {
                    ifindex,
                    ifname,
                    state,
                })
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                let ifindex = link.header.index;
                self.last.remove(&ifindex);
                Some(NetEvent::LinkRemoved {
                    ifindex,
                    ifname: link_name(&link).unwrap_or_default(),
                })
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewAddress(a)) => {
                let ifindex = a.header.index;
                parse_address(&a).map(|ia| NetEvent::AddressAdded {
                    ifindex,
                    address: ia.address,
                })
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(a)) => {
                let ifindex = a.header.index;
                parse_address(&a).map(|ia| NetEvent::AddressRemoved {
                    ifindex,
                    address: ia.address,
                })
            }
            _ => None,
        }
    }
}

impl Stream for NetEvents {
    type Item = NetEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<NetEvent>> {
        loop {
            match self.rx.poll_next_unpin(cx) {
                Poll::Ready(Some((msg, _))) => {
                    if let Some(ev) = self.translate(msg) {
                        return Poll::Ready(Some(ev));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Netlink {
    /// Opens an rtnetlink connection in the calling thread's network namespace and spawns its
    /// I/O task on the current tokio runtime (panics outside a runtime, like `tokio::spawn`).
    pub fn new() -> Result<Netlink, Error> {
        let (connection, handle, _unsolicited) =
            new_connection().map_err(|e| Error::io("opening an rtnetlink socket", e))?;
        tokio::spawn(connection);
        Ok(Netlink { handle })
    }

    /// Subscribes to link events (and, with `addresses`, IPv4/IPv6 address events) on a
    /// dedicated netlink socket. See [`NetEvents`].
    pub fn events(&self, addresses: bool) -> Result<NetEvents, Error> {
        let mut groups = vec![MulticastGroup::Link];
        if addresses {
            groups.push(MulticastGroup::Ipv4Ifaddr);
            groups.push(MulticastGroup::Ipv6Ifaddr);
        }
        let (mut connection, handle, rx) = new_multicast_connection(&groups)
            .map_err(|e| Error::io("subscribing to rtnetlink link/address events", e))?;
        // Bursts (hundreds of VIPs changing at once) must not overflow the socket.
        if let Err(e) = connection
            .socket_mut()
            .socket_mut()
            .set_rx_buf_sz(EVENTS_RCVBUF)
        {
            tracing::warn!(error = %e, "cannot enlarge the netlink event socket's receive buffer");
        }
        let connection = tokio::spawn(connection);
        Ok(NetEvents {
            rx,
            connection,
            last: HashMap::new(),
            _handle: handle,
        })
    }

    /// Every interface with its state and addresses.
    pub async fn interfaces(&self) -> Result<Vec<Interface>, Error> {
        let links: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::io("listing interfaces", nl_io(e)))?;
        let addrs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::io("listing addresses", nl_io(e)))?;
        let mut out: Vec<Interface> = links.iter().map(interface_from).collect();
        for a in &addrs {
            if let (Some(i), Some(ia)) = (
                out.iter_mut().find(|i| i.index == a.header.index),
                parse_address(a),
            ) {
                i.addresses.push(ia);
            }
        }
        Ok(out)
    }

    /// Create the macvlan interface `name` on `lower` (private mode, MAC `mac`) and bring it
    /// up: keepalived's virtual MAC interface. An existing one of that name is kept.
    pub async fn add_macvlan(&self, name: &str, lower: u32, mac: [u8; 6]) -> Result<(), Error> {
        use rtnetlink::LinkMacVlan;
        use rtnetlink::packet_route::link::MacVlanMode;
        let msg = LinkMacVlan::new(name, lower, MacVlanMode::Private)
            .address(mac.to_vec())
            .up()
            .build();
        match self.handle.link().add(msg).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_io(e);
                if e.raw_os_error() == Some(libc::EEXIST) {
                    Ok(())
                } else {
                    Err(Error::io(format!("creating macvlan {name}"), e))
                }
            }
        }
    }

    /// Delete the link with index `ifindex` (a missing one is not an error).
    pub async fn delete_link(&self, ifindex: u32) -> Result<(), Error> {
        match self.handle.link().del(ifindex).execute().await {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = nl_io(e);
                if e.raw_os_error() == Some(libc::ENODEV) {
                    Ok(())
                } else {
                    Err(Error::io(format!("deleting link {ifindex}"), e))
                }
            }
        }
    }

    /// The interface with index `ifindex`, if it exists.
    pub async fn interface_by_index(&self, ifindex: u32) -> Result<Option<Interface>, Error> {
        Ok(self
            .interfaces()
            .await?
            .into_iter()
            .find(|i| i.index == ifindex))
    }

    /// The interface named `name`, if it exists.
    pub async fn interface_by_name(&self, name: &str) -> Result<Option<Interface>, Error> {
        Ok(self
            .interfaces()
            .await?
            .into_iter()
            .find(|i| i.name == name))
    }

    /// The link (without addresses) with index `ifindex`: one cheap request, used on hot
    /// paths such as gratuitous ARP.
    pub async fn link(&self, ifindex: u32) -> Result<Option<Interface>, Error> {
        let mut stream = self.handle.link().get().match_index(ifindex).execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(interface_from(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == ENODEV => Ok(None),
            Err(e) => Err(Error::io(format!("reading link {ifindex}"), nl_io(e))),
        }
    }

    /// Adds (or replaces) one VIP.
    pub async fn add_vip(&self, vip: &Vip) -> Result<(), Error> {
        self.add_vips(std::slice::from_ref(vip))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Removes one VIP; a VIP that is not there counts as removed.
    pub async fn remove_vip(&self, vip: &Vip) -> Result<(), Error> {
        self.remove_vips(std::slice::from_ref(vip))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Adds (or replaces) VIPs, applied by the kernel in the given order, pipelined. Returns
    /// one result per VIP, in order.
    pub async fn add_vips(&self, vips: &[Vip]) -> Vec<Result<(), Error>> {
        self.pipeline(vips, true).await
    }

    /// Removes VIPs in the given order, pipelined; absent VIPs count as removed. Returns one
    /// result per VIP, in order.
    pub async fn remove_vips(&self, vips: &[Vip]) -> Vec<Result<(), Error>> {
        self.pipeline(vips, false).await
    }

    async fn pipeline(&self, vips: &[Vip], add: bool) -> Vec<Result<(), Error>> {
        let mut results = Vec::with_capacity(vips.len());
        for window in vips.chunks(PIPELINE_WINDOW) {
            // Queue the whole window first (in order), then collect the acknowledgements.
            let mut pending = Vec::with_capacity(window.len());
            for vip in window {
                let (payload, flags) = if add {
                    (
                        RouteNetlinkMessage::NewAddress(vip.message(true)),
                        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                    )
                } else {
                    (
                        RouteNetlinkMessage::DelAddress(vip.message(false)),
                        NLM_F_REQUEST | NLM_F_ACK,
                    )
                };
                let mut req = NetlinkMessage::from(payload);
                req.header.flags = flags;
                let mut handle = self.handle.clone();
                pending.push(handle.request(req));
            }
            let acks = pending.into_iter().map(|resp| async move {
                let mut resp = resp.map_err(nl_io)?;
                while let Some(msg) = resp.next().await {
                    if let NetlinkPayload::Error(e) = msg.payload
                        && e.code.is_some()
                    {
                        return Err(e.to_io());
                    }
                }
                Ok(())
            });
            for (vip, res) in window.iter().zip(futures::future::join_all(acks).await) {
                results.push(match res {
                    Ok(()) => Ok(()),
                    Err(e) if !add && e.raw_os_error() == Some(EADDRNOTAVAIL) => Ok(()),
                    Err(e) => Err(Error::io(
                        format!("{} VIP {vip}", if add { "adding" } else { "removing" }),
                        e,
                    )),
                });
            }
        }
        results
    }
}

fn nl_io(e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn link_name(msg: &LinkMessage) -> Option<String> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn interface_from(msg: &LinkMessage) -> Interface {
    let mac = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    });
    Interface {
        index: msg.header.index,
        name: link_name(msg).unwrap_or_default(),
        mac,
        loopback: msg.header.flags.contains(LinkFlags::Loopback),
        state: LinkState::from_message(msg),
        mtu: msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        }),
        addresses: Vec::new(),
    }
}

fn parse_address(msg: &AddressMessage) -> Option<InterfaceAddress> {
    let mut local = None;
    let mut address = None;
    let mut label = None;
    let mut flags = None;
    for a in &msg.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Label(l) => label = Some(l.clone()),
            AddressAttribute::Flags(f) => flags = Some(*f),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point
    // links); IPv6 usually sends only IFA_ADDRESS.
    let ip = local.or(address)?;
    let net = IpNet::new(ip, msg.header.prefix_len).ok()?;
    let flags =
        flags.unwrap_or_else(|| AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits())));
    Some(InterfaceAddress {
        address: net,
        label,
        secondary: flags.contains(AddressFlags::Secondary),
        tentative: flags.contains(AddressFlags::Tentative),
        dad_failed: flags.contains(AddressFlags::Dadfailed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn vip_label_rules() {
        assert!(Vip::new("eth0", 2, net("192.0.2.10/24"), Some("eth0:vip".into())).is_ok());
        let e = Vip::new("eth0", 2, net("192.0.2.10/24"), Some("eth1:vip".into())).unwrap_err();
        assert!(
            e.to_string().contains("must start with the interface name"),
            "{e}"
        );
        let e = Vip::new(
            "eth0",
            2,
            net("192.0.2.10/24"),
            Some("eth0:waytoolonglabel".into()),
        )
        .unwrap_err();
        assert!(e.to_string().contains("longer than 15"), "{e}");
        let e = Vip::new("eth0", 2, net("2001:db8::10/64"), Some("eth0:v6".into())).unwrap_err();
        assert!(e.to_string().contains("IPv4 only"), "{e}");
        assert!(Vip::new("", 2, net("192.0.2.10/24"), None).is_err());
    }

    #[test]
    fn vip_message_has_prefix_label_and_nodad() {
        let v4 = Vip::new("eth0", 7, net("192.0.2.10/24"), Some("eth0:vip".into())).unwrap();
        let m = v4.message(true);
        assert_eq!(m.header.index, 7);
        assert_eq!(m.header.prefix_len, 24);
        assert!(
            m.attributes
                .contains(&AddressAttribute::Label("eth0:vip".into()))
        );
        assert!(
            !v4.message(false)
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Label(_)))
        );
        let v6 = Vip::new("eth0", 7, net("2001:db8::10/64"), None).unwrap();
        assert!(
            v6.message(true)
                .attributes
                .contains(&AddressAttribute::Flags(AddressFlags::Nodad))
        );
        assert_eq!(v6.to_string(), "2001:db8::10/64 dev eth0");
        assert_eq!(v4.to_string(), "192.0.2.10/24 dev eth0 label eth0:vip");
    }

    #[test]
    fn primary_and_link_local_selection() {
        let addr = |s: &str, secondary: bool, tentative: bool| InterfaceAddress {
            address: net(s),
            label: None,
            secondary,
            tentative,
            dad_failed: false,
        };
        let i = Interface {
            index: 3,
            name: "eth0".into(),
            mac: None,
            loopback: false,
            state: LinkState {
                admin_up: true,
                running: true,
                lower_up: true,
                oper: OperState::Up,
            },
            mtu: Some(1500),
            addresses: vec![
                addr("fe80::1/64", false, true),
                addr("192.0.2.5/24", true, false),
                addr("192.0.2.1/24", false, false),
                addr("fe80::2/64", false, false),
            ],
        };
        assert_eq!(i.primary_ipv4(), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(i.link_local_ipv6(), Some("fe80::2".parse().unwrap()));
        let lo = Interface {
            index: 1,
            name: "lo".into(),
            loopback: true,
            ..i.clone()
        };
        let facts = node_facts("n1", &[i, lo]);
        assert_eq!(facts.interfaces.len(), 1);
        assert_eq!(facts.interfaces[0].name, "eth0");
        assert_eq!(facts.interfaces[0].addresses.len(), 4);
    }

    #[test]
    fn link_state_up_needs_admin_and_running() {
        let s = |admin_up, running| LinkState {
            admin_up,
            running,
            lower_up: running,
            oper: OperState::Up,
        };
        assert!(s(true, true).is_up());
        assert!(!s(true, false).is_up());
        assert!(!s(false, true).is_up());
    }
}
