//! Placing a resolved instance on this host: which interface, which ifindex, which source
//! address. Pure: the interfaces come from netlink, the answer feeds the core's config.

use std::net::IpAddr;

use crds::ResolvedInstance;
use crds::validate::parse_address;

use crate::net::{Family, Interface};

/// Where an instance runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Interface name.
    pub ifname: String,
    /// Interface index.
    pub ifindex: u32,
    /// Address family of the VIPs (and of the adverts).
    pub family: Family,
    /// Source address of adverts: `unicast_src_ip`, else the interface's primary IPv4 or its
    /// IPv6 link-local address.
    pub primary: IpAddr,
    /// Whether the link is up now.
    pub link_up: bool,
    /// Interface the VIPs are bound on and announced from: the same as `ifname`, or the
    /// virtual MAC interface.
    pub vip_ifname: String,
    /// Its index.
    pub vip_ifindex: u32,
}

/// The virtual MAC of a VRID (RFC 9568 §7.3): 00-00-5E-00-01-{VRID}, IPv6 00-00-5E-00-02-{VRID}.
pub fn virtual_mac(family: Family, vrid: u8) -> [u8; 6] {
    let f = match family {
        Family::V4 => 1,
        Family::V6 => 2,
    };
    [0x00, 0x00, 0x5e, 0x00, f, vrid]
}

/// Name of the virtual MAC interface of a VRID (keepalived's `vrrp.VRID`; `vrrp6.VRID` for
/// IPv6, so both families may use one VRID).
pub fn vmac_name(family: Family, vrid: u8) -> String {
    match family {
        Family::V4 => format!("vrrp.{vrid}"),
        Family::V6 => format!("vrrp6.{vrid}"),
    }
}

/// [`place`] for an instance on its virtual MAC (`vmac`, already created on the base
/// interface): adverts go from the virtual MAC (or from the base interface with
/// `vmacXmitBase`), the VIPs are bound on it. The IPv4 source is the base interface's
/// primary address; IPv6 adverts come from the virtual MAC's link-local address.
pub fn place_vmac(base: Placement, vmac: &Interface, xmit_base: bool) -> Result<Placement, String> {
    let primary = match (base.family, vmac.link_local_ipv6()) {
        (Family::V6, Some(ll)) if !xmit_base => IpAddr::V6(ll),
        _ => base.primary,
    };
    Ok(if xmit_base {
        Placement {
            vip_ifname: vmac.name.clone(),
            vip_ifindex: vmac.index,
            ..base
        }
    } else {
        Placement {
            ifname: vmac.name.clone(),
            ifindex: vmac.index,
            family: base.family,
            primary,
            link_up: vmac.state.is_up(),
            vip_ifname: vmac.name.clone(),
            vip_ifindex: vmac.index,
        }
    })
}

/// Find the interface and source address for `ri`, or say why there is none.
pub fn place(ri: &ResolvedInstance, interfaces: &[Interface]) -> Result<Placement, String> {
    let first = ri
        .addresses
        .first()
        .and_then(|a| parse_address(a))
        .ok_or_else(|| "the instance has no valid virtual address".to_string())?;
    let family = Family::of(&first.addr());
    let iface = match &ri.interface {
        Some(name) => interfaces
            .iter()
            .find(|i| &i.name == name)
            .ok_or_else(|| format!("interface {name} does not exist on this host"))?,
        None => interfaces
            .iter()
            .filter(|i| !i.loopback)
            .find(|i| {
                i.addresses
                    .iter()
                    .any(|a| a.address.contains(&first.addr()))
            })
            .ok_or_else(|| {
                format!(
                    "no interface given and no interface has a subnet holding {}",
                    first.addr()
                )
            })?,
    };
    let primary = match &ri.unicast_source {
        Some(s) => s
            .parse::<IpAddr>()
            .map_err(|_| format!("unicast source {s:?} is not an IP address"))?,
        None => match family {
            Family::V4 => iface.primary_ipv4().map(IpAddr::V4).ok_or_else(|| {
                format!(
                    "interface {} has no IPv4 address to send adverts from",
                    iface.name
                )
            })?,
            Family::V6 => iface.link_local_ipv6().map(IpAddr::V6).ok_or_else(|| {
                format!(
                    "interface {} has no IPv6 link-local address to send adverts from",
                    iface.name
                )
            })?,
        },
    };
    Ok(Placement {
        ifname: iface.name.clone(),
        ifindex: iface.index,
        family,
        primary,
        link_up: iface.state.is_up(),
        vip_ifname: iface.name.clone(),
        vip_ifindex: iface.index,
    })
}

/// The unicast peers of `ri` split into real peers and this host's own addresses (its
/// interfaces' addresses and the advert source), each as written.
pub fn split_own_peers(
    ri: &ResolvedInstance,
    placement: &Placement,
    interfaces: &[Interface],
) -> (Vec<String>, Vec<String>) {
    ri.unicast_peers.iter().cloned().partition(|p| {
        let Ok(addr) = p.parse::<IpAddr>() else {
            // Not an address: left for the core's validation to name.
            return true;
        };
        addr != placement.primary
            && !interfaces
                .iter()
                .flat_map(|i| i.addresses.iter())
                .any(|a| a.address.addr() == addr)
    })
}

/// keepalived's rule for an advert that would not fit the link's MTU: the addresses beyond
/// what fits are moved to the excluded ones (bound, not advertised). Returns those moved.
pub fn fit_advert(ri: &mut ResolvedInstance, family: Family, mtu: u32) -> Vec<String> {
    let max = crds::validate::max_advertised_addresses(family == Family::V4, ri.version, mtu);
    if ri.addresses.len() <= max {
        return Vec::new();
    }
    let moved = ri.addresses.split_off(max);
    let mut excluded = moved.clone();
    excluded.append(&mut ri.excluded_addresses);
    ri.excluded_addresses = excluded;
    moved
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::net::{InterfaceAddress, LinkState, OperState};

    /// An up interface with these addresses (also used by the VIP record's tests).
    pub(crate) fn iface(name: &str, index: u32, addrs: &[&str]) -> Interface {
        Interface {
            index,
            name: name.into(),
            mac: Some([2, 0, 0, 0, 0, index as u8]),
            loopback: name == "lo",
            state: LinkState {
                admin_up: true,
                running: true,
                lower_up: true,
                oper: OperState::Up,
            },
            mtu: Some(1500),
            addresses: addrs
                .iter()
                .map(|a| InterfaceAddress {
                    address: a.parse().unwrap(),
                    label: None,
                    secondary: false,
                    tentative: false,
                    dad_failed: false,
                })
                .collect(),
        }
    }

    fn ri(addr: &str, interface: Option<&str>) -> ResolvedInstance {
        ResolvedInstance {
            name: "VI_1".into(),
            addresses: vec![addr.into()],
            interface: interface.map(Into::into),
            ..Default::default()
        }
    }

    fn host() -> Vec<Interface> {
        vec![
            iface("lo", 1, &["127.0.0.1/8"]),
            iface(
                "eth0",
                2,
                &["192.0.2.11/24", "fe80::1/64", "2001:db8::11/64"],
            ),
            iface("eth1", 3, &["198.51.100.11/24"]),
        ]
    }

    #[test]
    fn interface_by_subnet_and_primary_address() {
        let p = place(&ri("198.51.100.200/24", None), &host()).unwrap();
        assert_eq!(
            (p.ifname.as_str(), p.ifindex, p.primary),
            ("eth1", 3, "198.51.100.11".parse().unwrap())
        );
        let p = place(&ri("2001:db8::200/64", None), &host()).unwrap();
        assert_eq!(
            (p.ifname.as_str(), p.family, p.primary),
            ("eth0", Family::V6, "fe80::1".parse().unwrap())
        );
    }

    #[test]
    fn explicit_interface_and_unicast_source_win() {
        let mut r = ri("203.0.113.5/24", Some("eth0"));
        assert_eq!(
            place(&r, &host()).unwrap().primary,
            "192.0.2.11".parse::<IpAddr>().unwrap()
        );
        r.unicast_source = Some("192.0.2.99".into());
        assert_eq!(
            place(&r, &host()).unwrap().primary,
            "192.0.2.99".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn own_addresses_are_not_peers() {
        let mut r = ri("192.0.2.200/24", None);
        r.unicast_peers = vec![
            "192.0.2.11".into(),
            "192.0.2.12".into(),
            "198.51.100.11".into(),
            "192.0.2.99".into(),
        ];
        r.unicast_source = Some("192.0.2.99".into());
        let p = place(&r, &host()).unwrap();
        let (peers, own) = split_own_peers(&r, &p, &host());
        assert_eq!(peers, vec!["192.0.2.12"]);
        assert_eq!(own, vec!["192.0.2.11", "198.51.100.11", "192.0.2.99"]);
    }

    #[test]
    fn addresses_beyond_the_mtu_become_excluded() {
        let mut r = ri("2001:db8::1/64", None);
        r.version = 3;
        r.addresses = (1..=100).map(|i| format!("2001:db8::{i:x}/64")).collect();
        r.excluded_addresses = vec!["192.0.2.9/24".into()];
        let moved = fit_advert(&mut r, Family::V6, 1500);
        assert_eq!(r.addresses.len(), 89);
        assert_eq!(moved.len(), 11);
        assert_eq!(moved[0], "2001:db8::5a/64");
        assert_eq!(r.excluded_addresses.len(), 12);
        assert_eq!(r.excluded_addresses.last().unwrap(), "192.0.2.9/24");
        // Jumbo frames carry them all.
        let mut r2 = ri("2001:db8::1/64", None);
        r2.version = 3;
        r2.addresses = (1..=100).map(|i| format!("2001:db8::{i:x}/64")).collect();
        assert!(fit_advert(&mut r2, Family::V6, 9000).is_empty());
        assert_eq!(r2.addresses.len(), 100);
    }

    #[test]
    fn failures_say_why() {
        assert_eq!(
            place(&ri("192.0.2.200/24", Some("eth9")), &host()).unwrap_err(),
            "interface eth9 does not exist on this host"
        );
        assert!(
            place(&ri("203.0.113.5/24", None), &host())
                .unwrap_err()
                .contains("no interface has a subnet holding 203.0.113.5")
        );
        assert!(
            place(&ri("2001:db8::5/64", Some("eth1")), &host())
                .unwrap_err()
                .contains("no IPv6 link-local")
        );
    }
}
