//! What to do when the desired instances change: start, stop, update in place, or restart.
//!
//! Shared by in-cluster mode (a new `VRRPNode.spec`) and standalone mode (SIGHUP reload). Pure:
//! the old and new instance lists in, a sorted list of [`Change`]s out. An instance whose
//! configuration did not change gets no change at all, so it never flaps.
//!
//! Only what VRRP cannot change on a running router forces a restart: the identity of the
//! virtual router on the wire (VRID, version, interface, source address). Everything else —
//! priority, trackers, peers, timers, GARP, notify, authentication, and the virtual and
//! excluded addresses — is applied in place. An address change on a master binds the new
//! addresses (with a gratuitous burst for them) and removes the old ones without leaving
//! MASTER, so a router carrying many Services' addresses never flaps when one Service comes
//! or goes; the next adverts carry the new list (peers running the old list for a moment
//! accept it, as keepalived does). Only a change of the advertised family still restarts the
//! router (the core reports it and the daemon restarts).

use std::collections::BTreeMap;

use crds::vrrpnode::ResolvedInstance;

/// One step to bring the running instances to the desired ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A new instance: start it.
    Start(ResolvedInstance),
    /// An instance that is no longer wanted: leave (priority 0 if master), remove its VIPs.
    Stop {
        /// Instance name.
        name: String,
    },
    /// Apply without touching the VRRP state or the VIPs.
    UpdateInPlace {
        /// The new configuration.
        new: ResolvedInstance,
        /// The fields that changed (camelCase, as in the API).
        fields: Vec<&'static str>,
    },
    /// Stop and start again, because a field changed that a running router cannot change.
    Restart {
        /// The new configuration.
        new: ResolvedInstance,
        /// The fields that force the restart.
        fields: Vec<&'static str>,
    },
}

impl Change {
    /// The instance this change is about.
    pub fn name(&self) -> &str {
        match self {
            Change::Start(i) => &i.name,
            Change::Stop { name } => name,
            Change::UpdateInPlace { new, .. } | Change::Restart { new, .. } => &new.name,
        }
    }
}

/// Fields a running router cannot change.
fn restart_fields(a: &ResolvedInstance, b: &ResolvedInstance) -> Vec<&'static str> {
    let mut f = Vec::new();
    let mut check = |changed: bool, name: &'static str| {
        if changed {
            f.push(name);
        }
    };
    check(
        a.virtual_router_id != b.virtual_router_id,
        "virtualRouterID",
    );
    check(a.version != b.version, "version");
    check(a.interface != b.interface, "interface");
    check(a.unicast_source != b.unicast_source, "unicastSource");
    check(a.use_vmac != b.use_vmac, "useVmac");
    check(a.vmac_xmit_base != b.vmac_xmit_base, "vmacXmitBase");
    f
}

/// Fields applied in place.
fn in_place_fields(a: &ResolvedInstance, b: &ResolvedInstance) -> Vec<&'static str> {
    let mut f = Vec::new();
    let mut check = |changed: bool, name: &'static str| {
        if changed {
            f.push(name);
        }
    };
    check(a.virtual_ip != b.virtual_ip, "virtualIP");
    check(a.priority != b.priority, "priority");
    check(a.initial_state != b.initial_state, "initialState");
    check(
        a.advert_interval_ms != b.advert_interval_ms,
        "advertIntervalMs",
    );
    check(a.preempt != b.preempt, "preempt");
    check(a.preempt_delay_ms != b.preempt_delay_ms, "preemptDelayMs");
    check(a.accept != b.accept, "accept");
    check(a.addresses != b.addresses, "addresses");
    check(
        a.excluded_addresses != b.excluded_addresses,
        "excludedAddresses",
    );
    check(a.unicast_peers != b.unicast_peers, "unicastPeers");
    check(a.allow_lower_ttl != b.allow_lower_ttl, "allowLowerTtl");
    check(a.unicast_ttl != b.unicast_ttl, "unicastTtl");
    check(a.auth_pass != b.auth_pass, "authPass");
    check(a.track != b.track, "track");
    check(a.garp != b.garp, "garp");
    check(a.notify != b.notify, "notify");
    check(a.sync_group != b.sync_group, "syncGroup");
    check(
        a.sync_group_notify != b.sync_group_notify,
        "syncGroupNotify",
    );
    f
}

/// The changes that turn `old` into `new`, sorted by instance name (stops first within a name
/// never happen: names are unique). Instances equal in both lists produce nothing.
pub fn diff(old: &[ResolvedInstance], new: &[ResolvedInstance]) -> Vec<Change> {
    let old: BTreeMap<&str, &ResolvedInstance> = old.iter().map(|i| (i.name.as_str(), i)).collect();
    let new_map: BTreeMap<&str, &ResolvedInstance> =
        new.iter().map(|i| (i.name.as_str(), i)).collect();
    let mut changes = Vec::new();
    for (name, o) in &old {
        if !new_map.contains_key(name) {
            changes.push(Change::Stop {
                name: (*name).to_string(),
            });
        } else if let Some(n) = new_map.get(name) {
            if o == n {
                continue;
            }
            let restart = restart_fields(o, n);
            if restart.is_empty() {
                changes.push(Change::UpdateInPlace {
                    new: (*n).clone(),
                    fields: in_place_fields(o, n),
                });
            } else {
                changes.push(Change::Restart {
                    new: (*n).clone(),
                    fields: restart,
                });
            }
        }
    }
    for (name, n) in &new_map {
        if !old.contains_key(name) {
            changes.push(Change::Start((*n).clone()));
        }
    }
    changes.sort_by(|a, b| a.name().cmp(b.name()));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::vrrpnode::{ResolvedTrack, ResolvedTrackScript};

    fn inst(name: &str, vrid: u8) -> ResolvedInstance {
        ResolvedInstance {
            name: name.into(),
            virtual_router_id: vrid,
            version: 3,
            interface: Some("eth0".into()),
            priority: 100,
            advert_interval_ms: 1000,
            preempt: true,
            addresses: vec!["192.0.2.200/24".into()],
            ..Default::default()
        }
    }

    #[test]
    fn unchanged_instances_produce_no_change() {
        let a = vec![inst("a", 1), inst("b", 2)];
        assert_eq!(diff(&a, &a.clone()), vec![]);
        // Order of the list does not matter.
        let reversed: Vec<_> = a.iter().rev().cloned().collect();
        assert_eq!(diff(&a, &reversed), vec![]);
    }

    #[test]
    fn added_and_removed_instances_start_and_stop() {
        let old = vec![inst("a", 1), inst("b", 2)];
        let new = vec![inst("b", 2), inst("c", 3)];
        assert_eq!(
            diff(&old, &new),
            vec![
                Change::Stop { name: "a".into() },
                Change::Start(inst("c", 3))
            ]
        );
    }

    #[test]
    fn protocol_tunables_are_applied_in_place() {
        let old = vec![inst("a", 1)];
        let mut n = inst("a", 1);
        n.priority = 150;
        n.unicast_peers = vec!["192.0.2.12".into()];
        n.garp.master_repeat = 3;
        n.track = ResolvedTrack {
            scripts: vec![ResolvedTrackScript {
                name: "chk".into(),
                script: "/bin/true".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        n.notify.master = Some("/bin/true".into());
        n.advert_interval_ms = 100;
        assert_eq!(
            diff(&old, std::slice::from_ref(&n)),
            vec![Change::UpdateInPlace {
                new: n,
                fields: vec![
                    "priority",
                    "advertIntervalMs",
                    "unicastPeers",
                    "track",
                    "garp",
                    "notify"
                ]
            }]
        );
    }

    #[test]
    fn identity_changes_restart_and_say_which_fields() {
        let old = vec![inst("a", 1)];
        let mut n = inst("a", 2);
        n.interface = Some("eth1".into());
        n.addresses.push("192.0.2.201/24".into());
        n.priority = 50; // also changed, but the restart covers it
        assert_eq!(
            diff(&old, std::slice::from_ref(&n)),
            vec![Change::Restart {
                new: n,
                fields: vec!["virtualRouterID", "interface"]
            }]
        );
    }

    #[test]
    fn address_changes_are_applied_in_place() {
        let old = vec![inst("a", 1)];
        let mut n = inst("a", 1);
        n.addresses.push("192.0.2.201/32".into());
        n.excluded_addresses = vec!["2001:db8::201/128".into()];
        assert_eq!(
            diff(&old, std::slice::from_ref(&n)),
            vec![Change::UpdateInPlace {
                new: n,
                fields: vec!["addresses", "excludedAddresses"]
            }]
        );
    }

    #[test]
    fn a_change_to_one_instance_leaves_the_others_alone() {
        let old = vec![inst("a", 1), inst("b", 2), inst("c", 3)];
        let mut new = old.clone();
        new[1].version = 2;
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].name(), "b");
        assert!(
            matches!(&changes[0], Change::Restart { fields, .. } if fields == &vec!["version"])
        );
    }
}
