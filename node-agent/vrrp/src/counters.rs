//! Per-instance (and per-router, for packets no instance claims) counters.
//!
//! Every received packet that is not acted on is counted under exactly one [`DropReason`];
//! [`DropReason::label`] is the metric label. A few accepted-but-noteworthy events (an address
//! list that differs from ours, a checksum in the other v3 IPv4 form) have their own counters.

use super::packet::ParseError;

/// Why a received packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Shorter than the header.
    Truncated,
    /// Version other than 2/3.
    BadVersion,
    /// Type other than advertisement.
    BadType,
    /// VRID 0.
    BadVrid,
    /// VRRPv2 over IPv6.
    V2OverIpv6,
    /// Source/destination families differ, or not the instance's family.
    FamilyMismatch,
    /// Address count does not match the length.
    CountMismatch,
    /// Interval zero.
    BadInterval,
    /// Unsupported v2 auth type.
    BadAuthType,
    /// Checksum failed.
    BadChecksum,
    /// No instance with this VRID (and family) on the interface.
    UnknownVrid,
    /// Version differs from the instance's.
    VersionMismatch,
    /// TTL / hop limit not 255.
    Ttl,
    /// Our own advert looped back.
    OwnAdvert,
    /// Unicast source not in the peer list.
    UnknownPeer,
    /// v2 authentication differs from ours.
    AuthMismatch,
    /// v2 advert interval differs from ours.
    IntervalMismatch,
    /// Instance not running (INIT, FAULT or stopped).
    NotRunning,
}

impl DropReason {
    /// Every reason, in label order of declaration.
    pub const ALL: [DropReason; 18] = [
        DropReason::Truncated,
        DropReason::BadVersion,
        DropReason::BadType,
        DropReason::BadVrid,
        DropReason::V2OverIpv6,
        DropReason::FamilyMismatch,
        DropReason::CountMismatch,
        DropReason::BadInterval,
        DropReason::BadAuthType,
        DropReason::BadChecksum,
        DropReason::UnknownVrid,
        DropReason::VersionMismatch,
        DropReason::Ttl,
        DropReason::OwnAdvert,
        DropReason::UnknownPeer,
        DropReason::AuthMismatch,
        DropReason::IntervalMismatch,
        DropReason::NotRunning,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::BadVersion => "bad_version",
            DropReason::BadType => "bad_type",
            DropReason::BadVrid => "bad_vrid",
            DropReason::V2OverIpv6 => "v2_over_ipv6",
            DropReason::FamilyMismatch => "family_mismatch",
            DropReason::CountMismatch => "count_mismatch",
            DropReason::BadInterval => "bad_interval",
            DropReason::BadAuthType => "bad_auth_type",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::UnknownVrid => "unknown_vrid",
            DropReason::VersionMismatch => "version_mismatch",
            DropReason::Ttl => "ttl",
            DropReason::OwnAdvert => "own_advert",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::AuthMismatch => "auth_mismatch",
            DropReason::IntervalMismatch => "interval_mismatch",
            DropReason::NotRunning => "not_running",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<&ParseError> for DropReason {
    fn from(e: &ParseError) -> Self {
        match e {
            ParseError::Truncated { .. } => DropReason::Truncated,
            ParseError::UnsupportedVersion(_) => DropReason::BadVersion,
            ParseError::UnknownType(_) => DropReason::BadType,
            ParseError::InvalidVrid => DropReason::BadVrid,
            ParseError::V2OverIpv6 => DropReason::V2OverIpv6,
            ParseError::FamilyMismatch => DropReason::FamilyMismatch,
            ParseError::CountMismatch { .. } => DropReason::CountMismatch,
            ParseError::BadInterval => DropReason::BadInterval,
            ParseError::UnsupportedAuthType(_) => DropReason::BadAuthType,
            ParseError::BadChecksum { .. } => DropReason::BadChecksum,
        }
    }
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Counters of one instance (or of a router's unclaimed packets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Adverts accepted for processing.
    pub adverts_received: u64,
    /// Adverts sent (one per destination).
    pub adverts_sent: u64,
    /// Priority-0 adverts accepted.
    pub priority_zero_received: u64,
    /// Priority-0 adverts sent.
    pub priority_zero_sent: u64,
    /// Transitions to MASTER.
    pub became_master: u64,
    /// Accepted adverts whose address list differs from ours (keepalived warns, accepts).
    pub address_list_mismatch: u64,
    /// Accepted v3 IPv4 adverts whose checksum used the form we do not send.
    pub checksum_other_form: u64,
    /// Lower-priority adverts a preempting backup ignored.
    pub lower_priority_ignored: u64,
    /// Lower-priority adverts (or equal priority from a lower address) a master discarded
    /// without replying: its one immediate advert per interval was already spent.
    pub lower_priority_discarded: u64,
    /// Priority-0 adverts a master did not answer at once: its one immediate advert per
    /// interval was already spent (the next scheduled advert follows within an interval).
    pub priority_zero_rate_limited: u64,
    /// Gratuitous ARP/NA bursts held back because another burst went out less than one
    /// advert interval earlier (coalesced into one burst at the end of that interval).
    pub gratuitous_deferred: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Counters {
    /// Count one drop.
    pub fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }

    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// All drops.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// `(reason, count)` for every reason, zeros included (for metrics export).
    pub fn drop_counts(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|r| (*r, self.drops[r.index()]))
    }
}
