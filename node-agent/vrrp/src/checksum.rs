//! The Internet checksum (RFC 1071) and the pseudo-headers VRRP uses.
//!
//! VRRPv2 sums the VRRP message alone. VRRPv3 over IPv6 prefixes the IPv6 pseudo-header
//! (RFC 8200 §8.1). VRRPv3 over IPv4 is the ambiguous case: keepalived and FRR prefix an IPv4
//! pseudo-header, RFC 9568 and most router vendors do not; [`V3Ipv4Checksum`] names the two.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of VRRP.
pub const IPPROTO_VRRP: u8 = 112;

/// How the VRRPv3 checksum is computed over IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum V3Ipv4Checksum {
    /// Include the IPv4 pseudo-header (keepalived's default, FRR).
    #[default]
    WithPseudoHeader,
    /// VRRP message only (RFC 9568, Cisco, Juniper).
    WithoutPseudoHeader,
}

/// Which checksum form a received packet carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    /// VRRPv2: message only.
    V2,
    /// VRRPv3 over IPv4 with the IPv4 pseudo-header.
    V3Ipv4WithPseudoHeader,
    /// VRRPv3 over IPv4 without a pseudo-header.
    V3Ipv4WithoutPseudoHeader,
    /// VRRPv3 over IPv6 (always with the IPv6 pseudo-header).
    V3Ipv6,
}

/// Running one's-complement sum of 16-bit big-endian words (not yet folded or inverted).
#[derive(Clone, Copy, Debug, Default)]
pub struct Sum(u64);

impl Sum {
    /// Add bytes; an odd trailing byte is padded with zero (only valid as the last chunk).
    pub fn add_bytes(mut self, data: &[u8]) -> Self {
        let mut chunks = data.chunks_exact(2);
        for c in &mut chunks {
            self.0 += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            self.0 += u64::from(*last) << 8;
        }
        self
    }

    /// Add one 16-bit word.
    pub fn add_u16(mut self, w: u16) -> Self {
        self.0 += u64::from(w);
        self
    }

    /// Fold the carries and return the one's complement (the value written on the wire).
    pub fn finish(self) -> u16 {
        let mut s = self.0;
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }
}

/// Sum of the IPv4 pseudo-header: source, destination, zero, protocol, length.
pub fn ipv4_pseudo_header(src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> Sum {
    Sum::default()
        .add_bytes(&src.octets())
        .add_bytes(&dst.octets())
        .add_u16(u16::from(IPPROTO_VRRP))
        .add_u16(len as u16)
}

/// Sum of the IPv6 pseudo-header: source, destination, 32-bit length, zeros, next header.
pub fn ipv6_pseudo_header(src: Ipv6Addr, dst: Ipv6Addr, len: usize) -> Sum {
    let len = len as u32;
    Sum::default()
        .add_bytes(&src.octets())
        .add_bytes(&dst.octets())
        .add_u16((len >> 16) as u16)
        .add_u16(len as u16)
        .add_u16(u16::from(IPPROTO_VRRP))
}

/// Pseudo-header sum for a (source, destination) pair of one family; `None` if the
/// families differ.
pub fn pseudo_header(src: IpAddr, dst: IpAddr, len: usize) -> Option<Sum> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => Some(ipv4_pseudo_header(s, d, len)),
        (IpAddr::V6(s), IpAddr::V6(d)) => Some(ipv6_pseudo_header(s, d, len)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 example words 0001 f203 f4f5 f6f7 sum to ddf2 (before inversion).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Sum::default().add_bytes(&data).finish(), !0xddf2);
    }

    #[test]
    fn odd_length_is_zero_padded() {
        assert_eq!(
            Sum::default().add_bytes(&[0x12]).finish(),
            Sum::default().add_bytes(&[0x12, 0]).finish()
        );
    }

    #[test]
    fn summing_with_checksum_in_place_gives_zero() {
        let mut data = vec![
            0x31, 0x33, 0x64, 0x01, 0x00, 0x64, 0x00, 0x00, 192, 0, 2, 100,
        ];
        let c = Sum::default().add_bytes(&data).finish();
        data[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(Sum::default().add_bytes(&data).finish(), 0);
    }
}
