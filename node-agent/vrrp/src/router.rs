//! A node's set of VRRP instances: packet demultiplexing, sync groups, aggregated polling.
//!
//! [`Router`] holds every instance the node runs (on any interface). Received packets are
//! parsed once and handed to the instance configured for (interface, family, VRID); packets
//! no instance claims are counted in [`Router::unclaimed_counters`], parse failures of a
//! claimed VRID in that instance's counters. Actions come out tagged with the
//! [`InstanceId`] they belong to.
//!
//! Sync groups (keepalived `vrrp_sync_group`, named by `InstanceConfig::sync_group`):
//! - when a member becomes MASTER, the other members in BACKUP follow it;
//! - when a member leaves MASTER for BACKUP, the other masters follow it;
//! - while any member has a fault condition of its own (interface down, weight-0 tracker
//!   failed), every member is held in FAULT; when the last one clears, all go to BACKUP.
//!
//! Driving: after every call, drain [`Router::poll_action`] and sleep until
//! [`Router::poll_timeout`], then call [`Router::handle_timeout`].

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Instant;

use super::config::{ConfigError, InstanceConfig};
use super::counters::{Counters, DropReason};
use super::instance::{Action, ConfigUpdate, Inheritance, Instance, Reason, RxInfo, State};
use super::packet::{Advert, Family};
use super::track::{Observation, TrackerKind};

/// Handle of an instance inside a [`Router`] (stable until removed; not reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub usize);

/// A received packet's metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Received<'a> {
    /// Ingress interface name.
    pub interface: &'a str,
    /// IP source.
    pub src: IpAddr,
    /// IP destination.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
}

/// What became of a received packet ([`Router::handle_packet`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by this instance: it passed the receive checks and is counted in the
    /// instance's `adverts_received` (whatever the state machine then did with it).
    Accepted(InstanceId),
    /// Dropped, and counted under `reason` in this instance's counters, or in
    /// [`Router::unclaimed_counters`] when `instance` is `None` (no instance is configured
    /// for the packet's interface, family and VRID).
    Dropped {
        /// The instance configured for the packet's VRID, if any.
        instance: Option<InstanceId>,
        /// Why.
        reason: DropReason,
    },
}

/// An action for one instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouterAction {
    /// Which instance.
    pub instance: InstanceId,
    /// What to do.
    pub action: Action,
}

/// All VRRP instances of a node.
#[derive(Debug, Default)]
pub struct Router {
    slots: Vec<Option<Instance>>,
    actions: VecDeque<RouterAction>,
    unclaimed: Counters,
}

impl Router {
    /// An empty router.
    pub fn new() -> Router {
        Router::default()
    }

    /// Add an instance (not started: call [`Router::start`]). Rejects a duplicate name or a
    /// second instance with the same (interface, family, VRID).
    pub fn add(&mut self, cfg: InstanceConfig) -> Result<InstanceId, ConfigError> {
        self.check_conflicts(&cfg, None)?;
        let inst = Instance::new(cfg)?;
        self.slots.push(Some(inst));
        Ok(InstanceId(self.slots.len() - 1))
    }

    /// Shut an instance down (priority-0 advert and VIP removal at once if master, see
    /// [`Instance::shutdown_at_once`]; the actions are queued) and remove it.
    pub fn remove(&mut self, now: Instant, id: InstanceId) -> Option<Instance> {
        let mut inst = self.slots.get_mut(id.0)?.take()?;
        inst.shutdown_at_once(now);
        while let Some(action) = inst.poll_action() {
            self.actions.push_back(RouterAction {
                instance: id,
                action,
            });
        }
        if let Some(g) = inst.config().sync_group.clone() {
            let t = self.sync_holds(now, &g);
            self.propagate(now, &g, t);
        }
        Some(inst)
    }

    /// Update an instance's configuration in place (see [`Instance::update_config`]).
    pub fn update(
        &mut self,
        now: Instant,
        id: InstanceId,
        cfg: InstanceConfig,
    ) -> Result<ConfigUpdate, ConfigError> {
        self.check_conflicts(&cfg, Some(id))?;
        let old_group = self.get(id).and_then(|i| i.config().sync_group.clone());
        let new_group = cfg.sync_group.clone();
        let Some(inst) = self.slots.get_mut(id.0).and_then(Option::as_mut) else {
            return Err(ConfigError {
                instance: cfg.name.clone(),
                field: "name".into(),
                reason: "no such instance in this router".into(),
            });
        };
        let r = inst.update_config(now, cfg)?;
        self.settle(now, id.0);
        for g in [old_group, new_group].into_iter().flatten() {
            let t = self.sync_holds(now, &g);
            self.propagate(now, &g, t);
        }
        Ok(r)
    }

    /// Hand an instance over to another process on this host and remove it: no priority-0
    /// advert, its VIPs stay bound ([`Instance::hand_over`]). Returns what the successor
    /// needs, or `None` for an unknown id.
    pub fn hand_over(&mut self, now: Instant, id: InstanceId) -> Option<Inheritance> {
        let mut inst = self.slots.get_mut(id.0)?.take()?;
        let inheritance = inst.hand_over(now);
        while let Some(action) = inst.poll_action() {
            self.actions.push_back(RouterAction {
                instance: id,
                action,
            });
        }
        if let Some(g) = inst.config().sync_group.clone() {
            let t = self.sync_holds(now, &g);
            self.propagate(now, &g, t);
        }
        Some(inheritance)
    }

    /// Start one instance, not yet started, in the state another process handed over
    /// ([`Instance::start_inherited`]). Call it before [`Router::start`], which would start
    /// the instance from INIT.
    pub fn start_inherited(&mut self, now: Instant, id: InstanceId, inheritance: &Inheritance) {
        if let Some(inst) = self.slots.get_mut(id.0).and_then(Option::as_mut) {
            inst.start_inherited(now, inheritance);
            self.settle(now, id.0);
        }
    }

    /// Start every instance not yet started (idempotent; call again after adding).
    pub fn start(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if let Some(inst) = self.slots[i].as_mut() {
                inst.start(now);
                self.settle(now, i);
            }
        }
    }

    /// Handle one received VRRP message, and say what became of it (every drop is also
    /// counted, see [`Delivery`]).
    pub fn handle_packet(&mut self, now: Instant, rx: &Received<'_>, bytes: &[u8]) -> Delivery {
        let family = Family::of(&rx.src);
        let idx = bytes
            .get(1)
            .and_then(|vrid| self.lookup(rx.interface, family, *vrid));
        let instance = idx.map(InstanceId);
        let dropped = |reason| Delivery::Dropped { instance, reason };
        match Advert::parse(bytes, rx.src, rx.dst) {
            Err(e) => {
                let reason = DropReason::from(&e);
                match idx.and_then(|i| self.slots[i].as_mut()) {
                    Some(inst) => inst.count_drop(reason),
                    None => self.unclaimed.drop(reason),
                }
                dropped(reason)
            }
            Ok((advert, checksum)) => {
                let claimed = idx.and_then(|i| self.slots[i].as_mut().map(|inst| (i, inst)));
                let Some((i, inst)) = claimed else {
                    self.unclaimed.drop(DropReason::UnknownVrid);
                    return dropped(DropReason::UnknownVrid);
                };
                let info = RxInfo {
                    src: rx.src,
                    dst: rx.dst,
                    ttl: rx.ttl,
                    checksum,
                };
                let result = inst.handle_advert(now, &info, &advert);
                self.settle(now, i);
                match result {
                    Ok(()) => Delivery::Accepted(InstanceId(i)),
                    Err(reason) => dropped(reason),
                }
            }
        }
    }

    /// Handle expired timers of every instance.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            let due = self.slots[i]
                .as_ref()
                .and_then(Instance::poll_timeout)
                .is_some_and(|t| t <= now);
            if due {
                if let Some(inst) = self.slots[i].as_mut() {
                    inst.handle_timeout(now);
                }
                self.settle(now, i);
            }
        }
    }

    /// Feed a tracker observation to every instance tracking `(obs.kind(), name)`.
    /// Returns how many instances track it.
    pub fn handle_tracker(&mut self, now: Instant, name: &str, obs: Observation) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            if let Some(inst) = self.slots[i].as_mut()
                && inst.handle_tracker(now, name, obs)
            {
                n += 1;
                self.settle(now, i);
            }
        }
        n
    }

    /// An interface's link changed: instances running on it go to / leave FAULT, and
    /// `track_interface` trackers of that name observe it.
    pub fn handle_link(&mut self, now: Instant, interface: &str, up: bool) {
        for i in 0..self.slots.len() {
            if let Some(inst) = self.slots[i].as_mut() {
                if inst.config().interface == interface {
                    inst.handle_link(now, up);
                }
                inst.handle_tracker(now, interface, Observation::Link(up));
                self.settle(now, i);
            }
        }
    }

    /// Shut every instance down (keepalived on SIGTERM, see [`Instance::shutdown`]): masters
    /// send priority 0 and keep their VIPs until a successor speaks, bounded. Keep feeding
    /// packets and timers until [`Router::poll_timeout`] is `None`: then every VIP is gone.
    pub fn shutdown(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if let Some(inst) = self.slots[i].as_mut() {
                inst.shutdown(now);
                self.drain(i);
            }
        }
    }

    /// Earliest deadline of any instance.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(Instance::poll_timeout)
            .min()
    }

    /// Next action.
    pub fn poll_action(&mut self) -> Option<RouterAction> {
        self.actions.pop_front()
    }

    /// An instance.
    pub fn get(&self, id: InstanceId) -> Option<&Instance> {
        self.slots.get(id.0).and_then(Option::as_ref)
    }

    /// Find an instance by name.
    pub fn find(&self, name: &str) -> Option<InstanceId> {
        self.iter()
            .find(|(_, i)| i.name() == name)
            .map(|(id, _)| id)
    }

    /// Every instance.
    pub fn iter(&self) -> impl Iterator<Item = (InstanceId, &Instance)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (InstanceId(i), s)))
    }

    /// Drops of packets no instance claimed (unknown VRID, unparseable without a VRID match).
    pub fn unclaimed_counters(&self) -> &Counters {
        &self.unclaimed
    }

    /// Whether any instance tracks `(kind, name)` (lets the I/O side start only needed
    /// trackers).
    pub fn tracks(&self, kind: TrackerKind, name: &str) -> bool {
        self.iter().any(|(_, i)| {
            i.trackers()
                .iter()
                .any(|t| t.spec().kind() == kind && t.spec().name == name)
        })
    }

    // ---- internals ----

    fn check_conflicts(
        &self,
        cfg: &InstanceConfig,
        except: Option<InstanceId>,
    ) -> Result<(), ConfigError> {
        for (id, other) in self.iter() {
            if Some(id) == except {
                continue;
            }
            let o = other.config();
            if o.name == cfg.name {
                return Err(ConfigError {
                    instance: cfg.name.clone(),
                    field: "name".into(),
                    reason: "an instance of this name already exists".into(),
                });
            }
            if o.interface == cfg.interface && o.family() == cfg.family() && o.vrid == cfg.vrid {
                return Err(ConfigError {
                    instance: cfg.name.clone(),
                    field: "virtualRouterID".into(),
                    reason: format!(
                        "VRID {} ({}) on {} is already used by instance {:?}",
                        cfg.vrid,
                        cfg.family(),
                        cfg.interface,
                        o.name
                    ),
                });
            }
        }
        Ok(())
    }

    fn lookup(&self, interface: &str, family: Family, vrid: u8) -> Option<usize> {
        self.slots.iter().position(|s| {
            s.as_ref().is_some_and(|i| {
                let c = i.config();
                c.vrid == vrid && c.family() == family && c.interface == interface
            })
        })
    }

    /// Move an instance's actions to the router queue; return its transitions.
    fn drain(&mut self, i: usize) -> Vec<(State, State, Reason)> {
        let mut transitions = Vec::new();
        if let Some(inst) = self.slots[i].as_mut() {
            while let Some(action) = inst.poll_action() {
                if let Action::StateChanged {
                    from, to, reason, ..
                } = &action
                {
                    transitions.push((*from, *to, reason.clone()));
                }
                self.actions.push_back(RouterAction {
                    instance: InstanceId(i),
                    action,
                });
            }
        }
        transitions
    }

    fn members(&self, group: &str) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|i| {
                self.slots[*i]
                    .as_ref()
                    .is_some_and(|s| s.config().sync_group.as_deref() == Some(group))
            })
            .collect()
    }

    /// After an input to instance `i`: collect its actions and apply its sync group.
    fn settle(&mut self, now: Instant, i: usize) {
        let transitions: Vec<_> = self
            .drain(i)
            .into_iter()
            .map(|(f, t, r)| (i, f, t, r))
            .collect();
        let Some(group) = self.slots[i]
            .as_ref()
            .and_then(|s| s.config().sync_group.clone())
        else {
            return;
        };
        let mut all = transitions;
        all.extend(self.sync_holds(now, &group));
        self.propagate(now, &group, all);
    }

    /// Recompute the FAULT hold of every member; returns the transitions it caused.
    fn sync_holds(&mut self, now: Instant, group: &str) -> Vec<(usize, State, State, Reason)> {
        let members = self.members(group);
        let faults: Vec<(usize, String)> = members
            .iter()
            .filter_map(|m| {
                self.slots[*m]
                    .as_ref()
                    .filter(|s| s.own_fault_cause().is_some())
                    .map(|s| (*m, s.name().to_string()))
            })
            .collect();
        let mut out = Vec::new();
        for m in members {
            let hold = faults
                .iter()
                .find(|(f, _)| *f != m)
                .map(|(_, name)| Reason::SyncGroup {
                    group: group.to_string(),
                    member: name.clone(),
                    state: State::Fault,
                });
            if let Some(inst) = self.slots[m].as_mut() {
                inst.set_sync_hold(now, hold);
            }
            out.extend(self.drain(m).into_iter().map(|(f, t, r)| (m, f, t, r)));
        }
        out
    }

    /// Make the other members follow MASTER / BACKUP transitions not caused by the group.
    fn propagate(
        &mut self,
        now: Instant,
        group: &str,
        transitions: Vec<(usize, State, State, Reason)>,
    ) {
        for (origin, from, to, reason) in transitions {
            if matches!(reason, Reason::SyncGroup { .. }) {
                continue;
            }
            let follow = match (from, to) {
                (_, State::Master) => State::Master,
                (State::Master, State::Backup) => State::Backup,
                _ => continue,
            };
            let member = self.slots[origin]
                .as_ref()
                .map(|s| s.name().to_string())
                .unwrap_or_default();
            for m in self.members(group) {
                if m == origin {
                    continue;
                }
                if let Some(inst) = self.slots[m].as_mut() {
                    let r = Reason::SyncGroup {
                        group: group.to_string(),
                        member: member.clone(),
                        state: to,
                    };
                    inst.follow(now, follow, r);
                }
                // Followers' transitions carry a SyncGroup reason and do not propagate.
                self.drain(m);
            }
        }
    }
}
