//! The VRRP advertisement wire format, v2 (RFC 3768) and v3 (RFC 9568), IPv4 and IPv6.
//!
//! Two layers, as in smoltcp: [`Packet`] is a checked view over a byte buffer with field
//! accessors (and setters for a mutable buffer); [`Advert`] is the parsed representation with
//! [`Advert::parse`] and [`Advert::emit`]. Parsing never panics and never reads out of bounds;
//! every failure is one [`ParseError`] variant. The checksum is verified on receive in every
//! form a peer may use and the form found is reported ([`ChecksumKind`]).
//!
//! Layout after the common first four bytes (version/type, VRID, priority, address count):
//! - v2: auth type, advert interval in **seconds**, checksum, IPv4 addresses, 8 bytes of
//!   authentication data (the PASS password, NUL padded; zeros without authentication).
//! - v3: 4 reserved bits and a 12-bit max advert interval in **centiseconds**, checksum,
//!   IPv4 or IPv6 addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{ChecksumKind, Sum, V3Ipv4Checksum, pseudo_header};

/// Size of the fixed header (before the address list).
pub const HEADER_LEN: usize = 8;
/// Size of the VRRPv2 authentication data trailer.
pub const V2_AUTH_LEN: usize = 8;
/// Advertisement packet type (the only one defined).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// IPv4 multicast group for VRRP (224.0.0.18).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for VRRP (ff02::12).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Largest v3 interval (12 bits of centiseconds).
pub const V3_MAX_INTERVAL_CS: u16 = 0x0fff;

/// Protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// VRRPv2 (RFC 3768): IPv4 only, interval in seconds, optional PASS authentication.
    V2,
    /// VRRPv3 (RFC 5798 / RFC 9568): IPv4 and IPv6, interval in centiseconds.
    V3,
}

impl Version {
    /// The number carried in the version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.number())
    }
}

/// Address family of an instance (and of every address in its adverts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// Family of an address.
    pub fn of(addr: &IpAddr) -> Family {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Bytes per address.
    pub fn addr_len(self) -> usize {
        match self {
            Family::V4 => 4,
            Family::V6 => 16,
        }
    }

    /// The VRRP multicast group of this family.
    pub fn multicast_group(self) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(MULTICAST_V4),
            Family::V6 => IpAddr::V6(MULTICAST_V6),
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// VRRPv2 authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Auth {
    /// No authentication (type 0); v3 always.
    #[default]
    None,
    /// Simple text password (type 1), NUL padded to 8 bytes.
    Pass([u8; 8]),
}

impl Auth {
    /// The auth-type field value.
    pub fn type_code(&self) -> u8 {
        match self {
            Auth::None => 0,
            Auth::Pass(_) => 1,
        }
    }

    /// A PASS auth from a password of at most 8 bytes.
    pub fn pass(password: &[u8]) -> Option<Auth> {
        if password.is_empty() || password.len() > 8 {
            return None;
        }
        let mut data = [0u8; 8];
        data[..password.len()].copy_from_slice(password);
        Some(Auth::Pass(data))
    }
}

/// Why a received packet could not be parsed. One variant per failure; each has a
/// low-cardinality [`ParseError::label`] for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Shorter than the fixed header.
    #[error("truncated: {len} bytes, the VRRP header alone needs 8")]
    Truncated {
        /// Bytes received.
        len: usize,
    },
    /// Version field other than 2 or 3.
    #[error("unsupported VRRP version {0}")]
    UnsupportedVersion(u8),
    /// Type field other than 1 (advertisement).
    #[error("unknown VRRP packet type {0}")]
    UnknownType(u8),
    /// VRID 0 is reserved.
    #[error("virtual router id 0 is invalid")]
    InvalidVrid,
    /// VRRPv2 carried over IPv6.
    #[error("VRRPv2 is IPv4 only, received over IPv6")]
    V2OverIpv6,
    /// Source and destination addresses of different families.
    #[error("source and destination address families differ")]
    FamilyMismatch,
    /// The address count does not match the packet length.
    #[error("address count {count} needs {expected} bytes, packet has {actual}")]
    CountMismatch {
        /// Count field.
        count: u8,
        /// Length the count implies.
        expected: usize,
        /// Length received.
        actual: usize,
    },
    /// Advertisement interval of zero.
    #[error("advertisement interval is zero")]
    BadInterval,
    /// VRRPv2 auth type other than 0 (none) or 1 (PASS); 2 (IP AH) is not supported.
    #[error("unsupported VRRPv2 authentication type {0}")]
    UnsupportedAuthType(u8),
    /// Checksum did not verify in any accepted form.
    #[error("bad checksum 0x{found:04x}")]
    BadChecksum {
        /// Checksum field as received.
        found: u16,
    },
}

impl ParseError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ParseError::Truncated { .. } => "truncated",
            ParseError::UnsupportedVersion(_) => "bad_version",
            ParseError::UnknownType(_) => "bad_type",
            ParseError::InvalidVrid => "bad_vrid",
            ParseError::V2OverIpv6 => "v2_over_ipv6",
            ParseError::FamilyMismatch => "family_mismatch",
            ParseError::CountMismatch { .. } => "count_mismatch",
            ParseError::BadInterval => "bad_interval",
            ParseError::UnsupportedAuthType(_) => "bad_auth_type",
            ParseError::BadChecksum { .. } => "bad_checksum",
        }
    }
}

/// Why an advert could not be emitted (a caller bug or an unrepresentable value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    /// The output buffer is too small.
    #[error("buffer of {have} bytes, need {need}")]
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// More than 255 addresses.
    #[error("{0} addresses, at most 255 fit")]
    TooManyAddresses(usize),
    /// An address, the source or the destination is not of the advert's family.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// VRRPv2 over IPv6.
    #[error("VRRPv2 is IPv4 only")]
    V2OverIpv6,
    /// Interval not representable in this version.
    #[error("interval {0} cs not representable")]
    BadInterval(u16),
    /// Authentication on a v3 advert.
    #[error("authentication is VRRPv2 only")]
    AuthOnV3,
}

/// Checked view of a VRRP packet buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wrap without checking; accessors may then panic on a short buffer. Use
    /// [`Packet::new_checked`] for received data.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wrap and check that every accessor is in bounds for `family`: header present, known
    /// version, and a length matching the address count.
    pub fn new_checked(buffer: T, family: Family) -> Result<Self, ParseError> {
        let p = Packet { buffer };
        p.check_len(family)?;
        Ok(p)
    }

    /// The length checks behind [`Packet::new_checked`].
    pub fn check_len(&self, family: Family) -> Result<(), ParseError> {
        let data = self.buffer.as_ref();
        if data.len() < HEADER_LEN {
            return Err(ParseError::Truncated { len: data.len() });
        }
        let version = self.version_field();
        let trailer = match version {
            2 => {
                if family == Family::V6 {
                    return Err(ParseError::V2OverIpv6);
                }
                V2_AUTH_LEN
            }
            3 => 0,
            v => return Err(ParseError::UnsupportedVersion(v)),
        };
        let count = self.count();
        let expected = HEADER_LEN + usize::from(count) * family.addr_len() + trailer;
        if data.len() != expected {
            return Err(ParseError::CountMismatch {
                count,
                expected,
                actual: data.len(),
            });
        }
        Ok(())
    }

    /// The whole buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Version field (high nibble of byte 0).
    pub fn version_field(&self) -> u8 {
        self.b()[0] >> 4
    }

    /// Type field (low nibble of byte 0).
    pub fn kind(&self) -> u8 {
        self.b()[0] & 0x0f
    }

    /// Virtual router id.
    pub fn vrid(&self) -> u8 {
        self.b()[1]
    }

    /// Priority.
    pub fn priority(&self) -> u8 {
        self.b()[2]
    }

    /// Count of addresses.
    pub fn count(&self) -> u8 {
        self.b()[3]
    }

    /// v2 auth type (byte 4).
    pub fn v2_auth_type(&self) -> u8 {
        self.b()[4]
    }

    /// v2 advert interval in seconds (byte 5).
    pub fn v2_advert_interval(&self) -> u8 {
        self.b()[5]
    }

    /// v3 max advert interval in centiseconds (low 12 bits of bytes 4–5).
    pub fn v3_max_advert_interval(&self) -> u16 {
        u16::from_be_bytes([self.b()[4], self.b()[5]]) & V3_MAX_INTERVAL_CS
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        u16::from_be_bytes([self.b()[6], self.b()[7]])
    }

    /// Address number `i` (requires a checked packet of this family and `i < count`).
    pub fn address(&self, family: Family, i: usize) -> IpAddr {
        let start = HEADER_LEN + i * family.addr_len();
        let d = self.b();
        match family {
            Family::V4 => IpAddr::V4(Ipv4Addr::new(
                d[start],
                d[start + 1],
                d[start + 2],
                d[start + 3],
            )),
            Family::V6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(&d[start..start + 16]);
                IpAddr::V6(Ipv6Addr::from(o))
            }
        }
    }

    /// v2 authentication data (the last 8 bytes).
    pub fn v2_auth_data(&self) -> &[u8] {
        let d = self.b();
        &d[d.len() - V2_AUTH_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Set version and type.
    pub fn set_version_kind(&mut self, version: u8, kind: u8) {
        self.bm()[0] = (version << 4) | (kind & 0x0f);
    }

    /// Set the VRID.
    pub fn set_vrid(&mut self, v: u8) {
        self.bm()[1] = v;
    }

    /// Set the priority.
    pub fn set_priority(&mut self, v: u8) {
        self.bm()[2] = v;
    }

    /// Set the address count.
    pub fn set_count(&mut self, v: u8) {
        self.bm()[3] = v;
    }

    /// Set the v2 auth type and interval in seconds.
    pub fn set_v2_auth_interval(&mut self, auth_type: u8, secs: u8) {
        self.bm()[4] = auth_type;
        self.bm()[5] = secs;
    }

    /// Set the v3 interval (reserved bits zero).
    pub fn set_v3_max_advert_interval(&mut self, cs: u16) {
        let v = (cs & V3_MAX_INTERVAL_CS).to_be_bytes();
        self.bm()[4] = v[0];
        self.bm()[5] = v[1];
    }

    /// Set the checksum field.
    pub fn set_checksum(&mut self, v: u16) {
        self.bm()[6..8].copy_from_slice(&v.to_be_bytes());
    }

    /// Set address number `i`.
    pub fn set_address(&mut self, i: usize, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => {
                let s = HEADER_LEN + i * 4;
                self.bm()[s..s + 4].copy_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                let s = HEADER_LEN + i * 16;
                self.bm()[s..s + 16].copy_from_slice(&a.octets());
            }
        }
    }

    /// Set the v2 authentication data.
    pub fn set_v2_auth_data(&mut self, data: &[u8; 8]) {
        let len = self.b().len();
        self.bm()[len - V2_AUTH_LEN..].copy_from_slice(data);
    }
}

/// Advertisement interval, in centiseconds (v2 values are whole seconds × 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Interval(pub u16);

impl Interval {
    /// From whole seconds (v2).
    pub fn from_secs(secs: u8) -> Interval {
        Interval(u16::from(secs) * 100)
    }

    /// As a duration.
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_millis(u64::from(self.0) * 10)
    }

    /// Microseconds.
    pub fn micros(self) -> u64 {
        u64::from(self.0) * 10_000
    }
}

/// A parsed advertisement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    /// Protocol version.
    pub version: Version,
    /// Virtual router id, 1–255.
    pub vrid: u8,
    /// Sender's priority (0 = master leaving, 255 = address owner).
    pub priority: u8,
    /// Advertisement interval (v2: whole seconds).
    pub interval: Interval,
    /// Virtual addresses, all of one family.
    pub addresses: Vec<IpAddr>,
    /// v2 authentication ([`Auth::None`] for v3).
    pub auth: Auth,
}

impl Advert {
    /// Parse a VRRP message received from `src` to `dst` (the IP header's addresses; they
    /// select the family and feed the pseudo-header). Returns the advert and the checksum
    /// form it carried.
    pub fn parse(
        data: &[u8],
        src: IpAddr,
        dst: IpAddr,
    ) -> Result<(Advert, ChecksumKind), ParseError> {
        let family = Family::of(&src);
        if Family::of(&dst) != family {
            return Err(ParseError::FamilyMismatch);
        }
        let p = Packet::new_checked(data, family)?;
        let version = match p.version_field() {
            2 => Version::V2,
            _ => Version::V3,
        };
        if p.kind() != TYPE_ADVERTISEMENT {
            return Err(ParseError::UnknownType(p.kind()));
        }
        if p.vrid() == 0 {
            return Err(ParseError::InvalidVrid);
        }
        let (interval, auth) = match version {
            Version::V2 => {
                let auth = match p.v2_auth_type() {
                    0 => Auth::None,
                    1 => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(p.v2_auth_data());
                        Auth::Pass(a)
                    }
                    t => return Err(ParseError::UnsupportedAuthType(t)),
                };
                (Interval::from_secs(p.v2_advert_interval()), auth)
            }
            Version::V3 => (Interval(p.v3_max_advert_interval()), Auth::None),
        };
        if interval.0 == 0 {
            return Err(ParseError::BadInterval);
        }
        let kind = verify_checksum(data, version, src, dst)?;
        let addresses = (0..usize::from(p.count()))
            .map(|i| p.address(family, i))
            .collect();
        Ok((
            Advert {
                version,
                vrid: p.vrid(),
                priority: p.priority(),
                interval,
                addresses,
                auth,
            },
            kind,
        ))
    }

    /// Length of the emitted message.
    pub fn buffer_len(&self) -> usize {
        let family = self.addresses.first().map(Family::of).unwrap_or(Family::V4);
        self.buffer_len_for(family)
    }

    fn buffer_len_for(&self, family: Family) -> usize {
        HEADER_LEN
            + self.addresses.len() * family.addr_len()
            + if self.version == Version::V2 {
                V2_AUTH_LEN
            } else {
                0
            }
    }

    /// Write the advert into `buf` with the checksum for `src` → `dst`; `mode` picks the v3
    /// IPv4 form. Returns the number of bytes written.
    pub fn emit(
        &self,
        buf: &mut [u8],
        src: IpAddr,
        dst: IpAddr,
        mode: V3Ipv4Checksum,
    ) -> Result<usize, EmitError> {
        let family = Family::of(&src);
        if Family::of(&dst) != family || self.addresses.iter().any(|a| Family::of(a) != family) {
            return Err(EmitError::FamilyMismatch);
        }
        if self.addresses.len() > 255 {
            return Err(EmitError::TooManyAddresses(self.addresses.len()));
        }
        let (ver, time_field) = match self.version {
            Version::V2 => {
                if family == Family::V6 {
                    return Err(EmitError::V2OverIpv6);
                }
                if self.interval.0 == 0
                    || !self.interval.0.is_multiple_of(100)
                    || self.interval.0 > 25500
                {
                    return Err(EmitError::BadInterval(self.interval.0));
                }
                (2u8, self.interval.0 / 100)
            }
            Version::V3 => {
                if self.auth != Auth::None {
                    return Err(EmitError::AuthOnV3);
                }
                if self.interval.0 == 0 || self.interval.0 > V3_MAX_INTERVAL_CS {
                    return Err(EmitError::BadInterval(self.interval.0));
                }
                (3u8, self.interval.0)
            }
        };
        let len = self.buffer_len_for(family);
        if buf.len() < len {
            return Err(EmitError::BufferTooSmall {
                need: len,
                have: buf.len(),
            });
        }
        let buf = &mut buf[..len];
        let mut p = Packet::new_unchecked(&mut *buf);
        p.set_version_kind(ver, TYPE_ADVERTISEMENT);
        p.set_vrid(self.vrid);
        p.set_priority(self.priority);
        p.set_count(self.addresses.len() as u8);
        match self.version {
            Version::V2 => {
                p.set_v2_auth_interval(self.auth.type_code(), time_field as u8);
                match &self.auth {
                    Auth::None => p.set_v2_auth_data(&[0; 8]),
                    Auth::Pass(d) => p.set_v2_auth_data(d),
                }
            }
            Version::V3 => p.set_v3_max_advert_interval(time_field),
        }
        p.set_checksum(0);
        for (i, a) in self.addresses.iter().enumerate() {
            p.set_address(i, *a);
        }
        let sum = match (self.version, family, mode) {
            (Version::V2, ..) | (Version::V3, Family::V4, V3Ipv4Checksum::WithoutPseudoHeader) => {
                Sum::default()
            }
            _ => pseudo_header(src, dst, len).unwrap_or_default(),
        };
        let c = sum.add_bytes(buf).finish();
        buf[6..8].copy_from_slice(&c.to_be_bytes());
        Ok(len)
    }

    /// Emit into a new vector.
    pub fn to_bytes(
        &self,
        src: IpAddr,
        dst: IpAddr,
        mode: V3Ipv4Checksum,
    ) -> Result<Vec<u8>, EmitError> {
        let mut v = vec![0u8; self.buffer_len_for(Family::of(&src))];
        let n = self.emit(&mut v, src, dst, mode)?;
        v.truncate(n);
        Ok(v)
    }
}

/// Verify the checksum of a length-checked message; v3 over IPv4 tries keepalived's form
/// (with pseudo-header) first, then RFC 9568's.
fn verify_checksum(
    data: &[u8],
    version: Version,
    src: IpAddr,
    dst: IpAddr,
) -> Result<ChecksumKind, ParseError> {
    let found = u16::from_be_bytes([data[6], data[7]]);
    let plain_ok = || Sum::default().add_bytes(data).finish() == 0;
    match (version, Family::of(&src)) {
        (Version::V2, _) => plain_ok().then_some(ChecksumKind::V2),
        (Version::V3, Family::V6) => {
            let ok = pseudo_header(src, dst, data.len())
                .is_some_and(|s| s.add_bytes(data).finish() == 0);
            ok.then_some(ChecksumKind::V3Ipv6)
        }
        (Version::V3, Family::V4) => {
            if pseudo_header(src, dst, data.len()).is_some_and(|s| s.add_bytes(data).finish() == 0)
            {
                Some(ChecksumKind::V3Ipv4WithPseudoHeader)
            } else {
                plain_ok().then_some(ChecksumKind::V3Ipv4WithoutPseudoHeader)
            }
        }
    }
    .ok_or(ParseError::BadChecksum { found })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const DST: IpAddr = IpAddr::V4(MULTICAST_V4);

    fn v2() -> Advert {
        Advert {
            version: Version::V2,
            vrid: 51,
            priority: 244,
            interval: Interval::from_secs(1),
            addresses: vec![IpAddr::V4(Ipv4Addr::new(192, 0, 2, 200))],
            auth: Auth::pass(b"12345").unwrap(),
        }
    }

    fn v3() -> Advert {
        Advert {
            version: Version::V3,
            auth: Auth::None,
            ..v2()
        }
    }

    #[test]
    fn v2_layout_matches_keepalived() {
        let b = v2()
            .to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader)
            .unwrap();
        assert_eq!(b.len(), 8 + 4 + 8);
        assert_eq!(&b[..6], &[0x21, 51, 244, 1, 1, 1]);
        assert_eq!(&b[8..12], &[192, 0, 2, 200]);
        assert_eq!(&b[12..], b"12345\0\0\0");
        // v2 checksum covers the message only: summing it (checksum included) gives zero.
        assert_eq!(Sum::default().add_bytes(&b).finish(), 0);
        assert_eq!(
            Advert::parse(&b, SRC, DST).unwrap(),
            (v2(), ChecksumKind::V2)
        );
        // …and is independent of the addresses in the IP header.
        let other = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        assert!(Advert::parse(&b, other, DST).is_ok());
    }

    #[test]
    fn v2_without_auth_carries_eight_zero_bytes() {
        let a = Advert {
            auth: Auth::None,
            ..v2()
        };
        let b = a
            .to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader)
            .unwrap();
        assert_eq!(b[4], 0);
        assert_eq!(&b[12..], &[0; 8]);
    }

    #[test]
    fn v3_ipv4_both_checksum_forms() {
        let with = v3()
            .to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader)
            .unwrap();
        let without = v3()
            .to_bytes(SRC, DST, V3Ipv4Checksum::WithoutPseudoHeader)
            .unwrap();
        assert_eq!(&with[..6], &[0x31, 51, 244, 1, 0x00, 100]);
        assert_ne!(with[6..8], without[6..8]);
        assert_eq!(
            Advert::parse(&with, SRC, DST).unwrap().1,
            ChecksumKind::V3Ipv4WithPseudoHeader
        );
        assert_eq!(
            Advert::parse(&without, SRC, DST).unwrap().1,
            ChecksumKind::V3Ipv4WithoutPseudoHeader
        );
        // The pseudo-header form binds the addresses: another source fails.
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(
            Advert::parse(&with, other, DST).unwrap_err(),
            ParseError::BadChecksum {
                found: u16::from_be_bytes([with[6], with[7]])
            }
        );
    }

    #[test]
    fn v3_ipv6_uses_the_ipv6_pseudo_header() {
        let src = IpAddr::V6("fe80::1".parse().unwrap());
        let dst = IpAddr::V6(MULTICAST_V6);
        let a = Advert {
            addresses: vec![IpAddr::V6("2001:db8::200".parse().unwrap())],
            ..v3()
        };
        let b = a
            .to_bytes(src, dst, V3Ipv4Checksum::WithoutPseudoHeader)
            .unwrap();
        assert_eq!(b.len(), 8 + 16);
        assert_eq!(
            Advert::parse(&b, src, dst).unwrap(),
            (a, ChecksumKind::V3Ipv6)
        );
        let sum = ipv6_sum_check(&b, src, dst);
        assert_eq!(sum, 0);
        assert!(Advert::parse(&b, IpAddr::V6("fe80::2".parse().unwrap()), dst).is_err());
    }

    fn ipv6_sum_check(b: &[u8], src: IpAddr, dst: IpAddr) -> u16 {
        pseudo_header(src, dst, b.len())
            .unwrap()
            .add_bytes(b)
            .finish()
    }

    #[test]
    fn v3_reserved_bits_ignored_on_receive() {
        let mut b = v3()
            .to_bytes(SRC, DST, V3Ipv4Checksum::WithoutPseudoHeader)
            .unwrap();
        b[4] |= 0xf0;
        b[6] = 0;
        b[7] = 0;
        let c = Sum::default().add_bytes(&b).finish();
        b[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            Advert::parse(&b, SRC, DST).unwrap().0.interval,
            Interval(100)
        );
    }

    /// Fix the checksum (message-only form) after mangling a v2/v3 IPv4 packet.
    fn refix(b: &mut [u8]) {
        b[6] = 0;
        b[7] = 0;
        let c = Sum::default().add_bytes(b).finish();
        b[6..8].copy_from_slice(&c.to_be_bytes());
    }

    #[test]
    fn every_parse_error() {
        let good = v2()
            .to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader)
            .unwrap();
        let v6src = IpAddr::V6("fe80::1".parse().unwrap());
        let cases: Vec<(Vec<u8>, IpAddr, IpAddr, ParseError)> = vec![
            (vec![], SRC, DST, ParseError::Truncated { len: 0 }),
            (
                good[..7].to_vec(),
                SRC,
                DST,
                ParseError::Truncated { len: 7 },
            ),
            (
                {
                    let mut b = good.clone();
                    b[0] = 0x11;
                    refix(&mut b);
                    b
                },
                SRC,
                DST,
                ParseError::UnsupportedVersion(1),
            ),
            (
                {
                    let mut b = good.clone();
                    b[0] = 0x22;
                    refix(&mut b);
                    b
                },
                SRC,
                DST,
                ParseError::UnknownType(2),
            ),
            (
                {
                    let mut b = good.clone();
                    b[1] = 0;
                    refix(&mut b);
                    b
                },
                SRC,
                DST,
                ParseError::InvalidVrid,
            ),
            (
                good.clone(),
                v6src,
                IpAddr::V6(MULTICAST_V6),
                ParseError::V2OverIpv6,
            ),
            (good.clone(), v6src, DST, ParseError::FamilyMismatch),
            (
                {
                    let mut b = good.clone();
                    b[3] = 2;
                    b
                },
                SRC,
                DST,
                ParseError::CountMismatch {
                    count: 2,
                    expected: 24,
                    actual: 20,
                },
            ),
            (
                good[..19].to_vec(),
                SRC,
                DST,
                ParseError::CountMismatch {
                    count: 1,
                    expected: 20,
                    actual: 19,
                },
            ),
            (
                {
                    let mut b = good.clone();
                    b[5] = 0;
                    refix(&mut b);
                    b
                },
                SRC,
                DST,
                ParseError::BadInterval,
            ),
            (
                {
                    let mut b = good.clone();
                    b[4] = 2;
                    refix(&mut b);
                    b
                },
                SRC,
                DST,
                ParseError::UnsupportedAuthType(2),
            ),
            (
                {
                    let mut b = good.clone();
                    b[2] ^= 0x40;
                    b
                },
                SRC,
                DST,
                ParseError::BadChecksum {
                    found: u16::from_be_bytes([good[6], good[7]]),
                },
            ),
        ];
        for (bytes, src, dst, want) in cases {
            assert_eq!(Advert::parse(&bytes, src, dst), Err(want), "{want}");
            // Display and label exist for every variant.
            assert!(!want.to_string().is_empty());
            assert!(!want.label().is_empty());
        }
    }

    #[test]
    fn emit_errors() {
        let mut small = [0u8; 10];
        assert_eq!(
            v2().emit(&mut small, SRC, DST, V3Ipv4Checksum::WithPseudoHeader),
            Err(EmitError::BufferTooSmall { need: 20, have: 10 })
        );
        let v6 = IpAddr::V6("fe80::1".parse().unwrap());
        assert_eq!(
            v2().to_bytes(v6, v6, V3Ipv4Checksum::WithPseudoHeader),
            Err(EmitError::FamilyMismatch)
        );
        let bad = Advert {
            interval: Interval(150),
            ..v2()
        };
        assert_eq!(
            bad.to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader),
            Err(EmitError::BadInterval(150))
        );
        let bad = Advert {
            interval: Interval(4096),
            ..v3()
        };
        assert_eq!(
            bad.to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader),
            Err(EmitError::BadInterval(4096))
        );
        let bad = Advert {
            auth: Auth::pass(b"x").unwrap(),
            ..v3()
        };
        assert_eq!(
            bad.to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader),
            Err(EmitError::AuthOnV3)
        );
        let many = Advert {
            addresses: vec![SRC; 256],
            ..v3()
        };
        assert_eq!(
            many.to_bytes(SRC, DST, V3Ipv4Checksum::WithPseudoHeader),
            Err(EmitError::TooManyAddresses(256))
        );
        assert_eq!(Auth::pass(b""), None);
        assert_eq!(Auth::pass(b"123456789"), None);
    }
}
