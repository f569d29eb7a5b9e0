//! The typed form of a keepalived.conf's VRRP part, as written (unset stays unset), with the
//! position of every item, plus keepalived's rules for the values it derives from them
//! (`effective_*`): default version, priority from state and state from priority, advert
//! interval rounding, preempt clearing, accept default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::diag::Span;
use crds::virtualip::InitialState;

/// keepalived's timer unit: values such as `advert_int 0.5` are kept in microseconds.
pub const TIMER_HZ: u32 = 1_000_000;

/// A whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// `global_defs` (the keys that change VRRP).
    pub global: GlobalDefs,
    /// `vrrp_script` blocks.
    pub scripts: Vec<VrrpScript>,
    /// `vrrp_track_process` blocks.
    pub processes: Vec<VrrpTrackProcess>,
    /// `track_file` / `vrrp_track_file` blocks.
    pub files: Vec<VrrpTrackFile>,
    /// `vrrp_sync_group` blocks.
    pub sync_groups: Vec<SyncGroup>,
    /// `vrrp_instance` blocks.
    pub instances: Vec<Instance>,
}

/// `global_defs` keys that change VRRP behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GlobalDefs {
    /// `router_id`.
    pub router_id: Option<String>,
    /// `vrrp_version` (default 2).
    pub vrrp_version: Option<u8>,
    /// `vrrp_garp_master_delay`, seconds.
    pub vrrp_garp_master_delay: Option<u32>,
    /// `vrrp_garp_master_repeat`.
    pub vrrp_garp_master_repeat: Option<u32>,
    /// `vrrp_garp_master_refresh`, seconds.
    pub vrrp_garp_master_refresh: Option<u32>,
    /// `vrrp_garp_master_refresh_repeat`.
    pub vrrp_garp_master_refresh_repeat: Option<u32>,
    /// `vrrp_mcast_group4`.
    pub vrrp_mcast_group4: Option<Ipv4Addr>,
    /// `vrrp_mcast_group6`.
    pub vrrp_mcast_group6: Option<Ipv6Addr>,
    /// `vrrp_strict`.
    pub vrrp_strict: bool,
    /// `vrrp_check_unicast_src` (every instance checks unicast sources).
    pub vrrp_check_unicast_src: bool,
}

/// `vrrp_script NAME { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VrrpScript {
    /// Name.
    pub name: String,
    /// Where the block starts.
    pub span: Span,
    /// `script` command line.
    pub script: Option<String>,
    /// `interval`, whole seconds (default 1).
    pub interval: Option<u32>,
    /// `timeout`, whole seconds (default: the interval).
    pub timeout: Option<u32>,
    /// `weight` (default 0).
    pub weight: Option<i16>,
    /// `weight N reverse`.
    pub reverse: bool,
    /// `rise` (default 1).
    pub rise: Option<u32>,
    /// `fall` (default 1).
    pub fall: Option<u32>,
    /// `user USER [GROUP]`.
    pub user: Option<String>,
}

/// `vrrp_track_process NAME { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VrrpTrackProcess {
    /// Name.
    pub name: String,
    /// Where the block starts.
    pub span: Span,
    /// `process` name.
    pub process: Option<String>,
    /// `weight` (default 0).
    pub weight: Option<i16>,
    /// `weight N reverse`.
    pub reverse: bool,
    /// `quorum` (default 1).
    pub quorum: Option<u32>,
}

/// `track_file NAME { ... }` (also spelled `vrrp_track_file`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VrrpTrackFile {
    /// Name.
    pub name: String,
    /// Where the block starts.
    pub span: Span,
    /// `file` path.
    pub file: Option<String>,
    /// `weight` (default 1).
    pub weight: Option<i16>,
    /// `weight N reverse`.
    pub reverse: bool,
}

/// `vrrp_sync_group NAME { group { ... } notify... }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncGroup {
    /// Name.
    pub name: String,
    /// Where the block starts.
    pub span: Span,
    /// Member instance names.
    pub group: Vec<Named>,
    /// Group notify scripts.
    pub notify: Notify,
    /// Group `track_interface`: tracked by every member.
    pub track_interface: Vec<TrackInterface>,
    /// Group `track_script`.
    pub track_script: Vec<TrackRef>,
    /// Group `track_process`.
    pub track_process: Vec<TrackRef>,
    /// Group `track_file`.
    pub track_file: Vec<TrackRef>,
    /// `sync_group_tracking_weight`: weights of the members' and the group's trackers apply
    /// (otherwise keepalived ignores them in a sync group).
    pub tracking_weight: bool,
}

/// A name with its position (a reference to something defined elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Named {
    /// The name.
    pub name: String,
    /// Where it is written.
    pub span: Span,
}

/// Notify scripts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Notify {
    /// `notify` (gets INSTANCE|GROUP, name, state, priority appended).
    pub any: Option<String>,
    /// `notify_master`.
    pub master: Option<String>,
    /// `notify_backup`.
    pub backup: Option<String>,
    /// `notify_fault`.
    pub fault: Option<String>,
    /// `notify_stop`.
    pub stop: Option<String>,
}

impl Notify {
    /// True when no script is set.
    pub fn is_empty(&self) -> bool {
        self.any.is_none()
            && self.master.is_none()
            && self.backup.is_none()
            && self.fault.is_none()
            && self.stop.is_none()
    }
}

/// `auth_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    /// Clear-text password.
    Pass,
    /// IPsec AH (deprecated; not supported by kube-vrrp).
    Ah,
}

/// `authentication { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Authentication {
    /// Where the block starts.
    pub span: Span,
    /// `auth_type`.
    pub auth_type: Option<AuthType>,
    /// `auth_pass`, already truncated to 8 bytes as keepalived does.
    pub auth_pass: Option<String>,
}

/// One line of `virtual_ipaddress` / `virtual_ipaddress_excluded`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualAddress {
    /// The address.
    pub addr: IpAddr,
    /// `/len` when written.
    pub prefix: Option<u8>,
    /// `dev IF`.
    pub dev: Option<String>,
    /// `label L`.
    pub label: Option<String>,
    /// Where it is written.
    pub span: Span,
}

impl VirtualAddress {
    /// `IP` or `IP/len`, as written.
    pub fn cidr(&self) -> String {
        match self.prefix {
            Some(p) => format!("{}/{p}", self.addr),
            None => self.addr.to_string(),
        }
    }
}

/// `track_interface` entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackInterface {
    /// Interface name.
    pub name: String,
    /// `weight N` (default 0).
    pub weight: Option<i16>,
    /// `weight N reverse`.
    pub reverse: bool,
    /// Where it is written.
    pub span: Span,
}

/// A `track_script` / `track_process` / `track_file` entry: a name, optionally overriding the
/// weight of what it names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackRef {
    /// Name of the vrrp_script / vrrp_track_process / track_file.
    pub name: String,
    /// `weight N` override.
    pub weight: Option<i16>,
    /// `reverse` / `noreverse` override.
    pub reverse: Option<bool>,
    /// Where it is written.
    pub span: Span,
}

/// `vrrp_instance NAME { ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Instance {
    /// Name.
    pub name: String,
    /// Where the block starts.
    pub span: Span,
    /// `state`.
    pub state: Option<InitialState>,
    /// `interface`.
    pub interface: Option<String>,
    /// `virtual_router_id`.
    pub virtual_router_id: Option<u8>,
    /// `priority`.
    pub priority: Option<u8>,
    /// `advert_int`, microseconds.
    pub advert_int: Option<u32>,
    /// `version`.
    pub version: Option<u8>,
    /// `preempt` (true) / `nopreempt` (false).
    pub preempt: Option<bool>,
    /// `preempt_delay`, microseconds.
    pub preempt_delay: Option<u32>,
    /// `accept` (true) / `no_accept` (false).
    pub accept: Option<bool>,
    /// `strict_mode`.
    pub strict_mode: Option<bool>,
    /// `authentication`.
    pub authentication: Option<Authentication>,
    /// `virtual_ipaddress`.
    pub virtual_ipaddress: Vec<VirtualAddress>,
    /// `virtual_ipaddress_excluded`.
    pub virtual_ipaddress_excluded: Vec<VirtualAddress>,
    /// `unicast_src_ip` (or `mcast_src_ip`: keepalived reads both into the advert source).
    pub unicast_src_ip: Option<IpAddr>,
    /// `unicast_peer`.
    pub unicast_peer: Vec<IpAddr>,
    /// `unicast_ttl` (TTL of the unicast adverts sent).
    pub unicast_ttl: Option<u8>,
    /// `check_unicast_src` (or a peer's `min_ttl` / `max_ttl`, which turn it on).
    pub check_unicast_src: bool,
    /// `track_interface`.
    pub track_interface: Vec<TrackInterface>,
    /// `track_script`.
    pub track_script: Vec<TrackRef>,
    /// `track_process`.
    pub track_process: Vec<TrackRef>,
    /// `track_file`.
    pub track_file: Vec<TrackRef>,
    /// `garp_master_delay`, seconds.
    pub garp_master_delay: Option<u32>,
    /// `garp_master_repeat`.
    pub garp_master_repeat: Option<u32>,
    /// `garp_master_refresh`, seconds.
    pub garp_master_refresh: Option<u32>,
    /// `garp_master_refresh_repeat`.
    pub garp_master_refresh_repeat: Option<u32>,
    /// `notify*`.
    pub notify: Notify,
    /// `dont_track_primary`.
    pub dont_track_primary: bool,
    /// `use_vmac [NAME]`: `Some(None)` without a name.
    pub use_vmac: Option<Option<String>>,
    /// `vmac_xmit_base`.
    pub vmac_xmit_base: bool,
    /// Where each keyword of the block is written (the last time it is given), so a value can
    /// be traced back to its line.
    pub spans: std::collections::BTreeMap<String, Span>,
}

impl Instance {
    /// True when the (first) virtual address is IPv6, which makes keepalived use VRRPv3.
    pub fn is_ipv6(&self) -> bool {
        self.virtual_ipaddress
            .first()
            .is_some_and(|v| v.addr.is_ipv6())
    }

    /// keepalived's version: as written; else 3 for IPv6; else `global_defs vrrp_version`; else 2.
    pub fn effective_version(&self, global: &GlobalDefs) -> u8 {
        self.version.unwrap_or_else(|| {
            if self.is_ipv6() {
                3
            } else {
                global.vrrp_version.unwrap_or(2)
            }
        })
    }

    /// keepalived's priority: as written; else 255 with `state MASTER`; else 100.
    pub fn effective_priority(&self) -> u8 {
        self.priority
            .unwrap_or(if self.state == Some(InitialState::Master) {
                255
            } else {
                100
            })
    }

    /// keepalived's initial state: as written; else MASTER for priority 255; else BACKUP.
    pub fn effective_state(&self) -> InitialState {
        self.state.unwrap_or(if self.effective_priority() == 255 {
            InitialState::Master
        } else {
            InitialState::Backup
        })
    }

    /// keepalived clears `nopreempt` for an address owner (255) and for initial state MASTER.
    pub fn effective_preempt(&self) -> bool {
        self.preempt.unwrap_or(true)
            || self.effective_priority() == 255
            || self.effective_state() == InitialState::Master
    }

    /// Preempt delay in microseconds; keepalived clears it with initial state MASTER or nopreempt.
    pub fn effective_preempt_delay(&self) -> u32 {
        if self.effective_state() == InitialState::Master || !self.effective_preempt() {
            0
        } else {
            self.preempt_delay.unwrap_or(0)
        }
    }

    /// Whether strict mode applies (the instance's `strict_mode`, else `vrrp_strict`).
    pub fn effective_strict(&self, global: &GlobalDefs) -> bool {
        self.strict_mode.unwrap_or(global.vrrp_strict)
    }

    /// keepalived's accept mode: as written, else on unless in strict mode.
    pub fn effective_accept(&self, global: &GlobalDefs) -> bool {
        self.accept.unwrap_or(!self.effective_strict(global))
    }

    /// The advert interval keepalived uses, in microseconds, and whether it had to round.
    pub fn effective_advert_int(&self, version: u8) -> (u32, bool) {
        round_advert_int(self.advert_int.unwrap_or(TIMER_HZ), version)
    }

    /// `garp_master_delay` in seconds (instance, else global, else 5).
    pub fn effective_garp_delay(&self, global: &GlobalDefs) -> u32 {
        self.garp_master_delay
            .or(global.vrrp_garp_master_delay)
            .unwrap_or(5)
    }
    /// `garp_master_repeat` (instance, else global, else 5).
    pub fn effective_garp_repeat(&self, global: &GlobalDefs) -> u32 {
        self.garp_master_repeat
            .or(global.vrrp_garp_master_repeat)
            .unwrap_or(5)
    }
    /// `garp_master_refresh` in seconds (instance, else global, else 0 = off).
    pub fn effective_garp_refresh(&self, global: &GlobalDefs) -> u32 {
        self.garp_master_refresh
            .or(global.vrrp_garp_master_refresh)
            .unwrap_or(0)
    }
    /// `garp_master_refresh_repeat` (instance, else global, else 1).
    pub fn effective_garp_refresh_repeat(&self, global: &GlobalDefs) -> u32 {
        self.garp_master_refresh_repeat
            .or(global.vrrp_garp_master_refresh_repeat)
            .unwrap_or(1)
    }
}

/// keepalived's rounding of an advert interval (microseconds): VRRPv2 carries whole seconds
/// (round half up, at least 1 s, at most 255 s); VRRPv3 carries centiseconds (round half up, at
/// least 10 ms, at most 40.95 s). Returns the value used and whether it differs.
pub fn round_advert_int(us: u32, version: u8) -> (u32, bool) {
    let (unit, max) = if version == 2 {
        (TIMER_HZ, 255 * TIMER_HZ)
    } else {
        (TIMER_HZ / 100, 4095 * (TIMER_HZ / 100))
    };
    if us > max {
        return (max, true);
    }
    if us.is_multiple_of(unit) {
        return (us.max(unit), us == 0);
    }
    let up = us.saturating_add(unit / 2);
    let rounded = (up - up % unit).clamp(unit, max);
    (rounded, true)
}

/// Format microseconds the way keepalived reads them back (`1`, `0.5`, `2.25`).
pub fn format_seconds(us: u32) -> String {
    let whole = us / TIMER_HZ;
    let frac = us % TIMER_HZ;
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:06}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

impl Config {
    /// The same configuration with every position cleared, so two configurations read from
    /// different text can be compared by content.
    pub fn without_spans(&self) -> Config {
        let mut c = self.clone();
        let z = Span::default;
        for s in &mut c.scripts {
            s.span = z();
        }
        for p in &mut c.processes {
            p.span = z();
        }
        for f in &mut c.files {
            f.span = z();
        }
        for g in &mut c.sync_groups {
            g.span = z();
            for m in &mut g.group {
                m.span = z();
            }
            for t in &mut g.track_interface {
                t.span = z();
            }
            for t in g
                .track_script
                .iter_mut()
                .chain(g.track_process.iter_mut())
                .chain(g.track_file.iter_mut())
            {
                t.span = z();
            }
        }
        for i in &mut c.instances {
            i.span = z();
            if let Some(a) = &mut i.authentication {
                a.span = z();
            }
            for v in i
                .virtual_ipaddress
                .iter_mut()
                .chain(i.virtual_ipaddress_excluded.iter_mut())
            {
                v.span = z();
            }
            for t in &mut i.track_interface {
                t.span = z();
            }
            i.spans.clear();
            for t in i
                .track_script
                .iter_mut()
                .chain(i.track_process.iter_mut())
                .chain(i.track_file.iter_mut())
            {
                t.span = z();
            }
        }
        c
    }

    /// The vrrp_script named `name`.
    pub fn script(&self, name: &str) -> Option<&VrrpScript> {
        self.scripts.iter().find(|s| s.name == name)
    }
    /// The vrrp_track_process named `name`.
    pub fn process(&self, name: &str) -> Option<&VrrpTrackProcess> {
        self.processes.iter().find(|s| s.name == name)
    }
    /// The track_file named `name`.
    pub fn file(&self, name: &str) -> Option<&VrrpTrackFile> {
        self.files.iter().find(|s| s.name == name)
    }
    /// The sync group `instance` belongs to.
    pub fn sync_group_of(&self, instance: &str) -> Option<&SyncGroup> {
        self.sync_groups
            .iter()
            .find(|g| g.group.iter().any(|m| m.name == instance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_rounding_matches_keepalived() {
        assert_eq!(round_advert_int(1_000_000, 2), (1_000_000, false));
        assert_eq!(round_advert_int(1_500_000, 2), (2_000_000, true));
        assert_eq!(round_advert_int(1_499_999, 2), (1_000_000, true));
        assert_eq!(round_advert_int(300_000, 2), (1_000_000, true));
        assert_eq!(round_advert_int(10_000, 3), (10_000, false));
        assert_eq!(round_advert_int(15_000, 3), (20_000, true));
        assert_eq!(round_advert_int(41_000_000, 3), (40_950_000, true));
        assert_eq!(round_advert_int(255_000_000, 2), (255_000_000, false));
    }

    #[test]
    fn seconds_format() {
        assert_eq!(format_seconds(1_000_000), "1");
        assert_eq!(format_seconds(500_000), "0.5");
        assert_eq!(format_seconds(2_250_000), "2.25");
        assert_eq!(format_seconds(1), "0.000001");
    }
}
