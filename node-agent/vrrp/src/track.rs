//! Tracker semantics, exactly as keepalived applies them (pure; the I/O side only observes).
//!
//! The I/O side feeds raw [`Observation`]s (a script's exit, a process count, a file's integer,
//! a link state, a count of Ready pods); this module turns them into an [`Effect`] on the
//! instance:
//! - **weight 0** (keepalived's default for scripts and processes): failure means FAULT.
//! - **weight > 0**: added to the priority while the tracker is up.
//! - **weight < 0**: subtracted (added, being negative) while the tracker is down.
//! - **reverse** negates the contribution (and for weight 0 inverts which state is FAULT).
//! - **track_file**: the file's integer × weight (× −1 with reverse), clamped to −254..253;
//!   −254 means FAULT. With weight 0 a non-zero value means FAULT (a zero value with reverse).
//! - **vrrp_script rise/fall**: `rise` consecutive successes to become up, `fall` consecutive
//!   failures to become down; before its first result a script is in keepalived's init state
//!   where one result decides. HTTP checks count the same way.
//! - **process / pods**: up while the count is at least the quorum.
//!
//! A weight-0 tracker that has not reported yet holds its instance in INIT (keepalived keeps
//! instances whose scripts are still initialising out of the election). The effective
//! priority is computed by [`effective_priority`]: base + Σ contributions clamped to 1..=254;
//! an owner (255) is never changed and nobody is raised to 255.

/// What kind of thing a tracker watches (metric/status label via [`TrackerKind::label`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackerKind {
    /// `track_interface`.
    Interface,
    /// `vrrp_script` / `track_script`.
    Script,
    /// `vrrp_track_process`.
    Process,
    /// `track_file`.
    File,
    /// Ready pods (Kubernetes-native).
    Pods,
    /// An HTTP(S) check made by the agent (a `vrrp_script` without a process).
    Http,
}

impl TrackerKind {
    /// Status/metric label.
    pub fn label(self) -> &'static str {
        match self {
            TrackerKind::Interface => "interface",
            TrackerKind::Script => "script",
            TrackerKind::Process => "process",
            TrackerKind::File => "file",
            TrackerKind::Pods => "pods",
            TrackerKind::Http => "http",
        }
    }
}

impl std::fmt::Display for TrackerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// How observations become up/down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Up while the link is up.
    Link,
    /// Script results with rise/fall counting (both ≥ 1).
    Script {
        /// Successes to become up.
        rise: u32,
        /// Failures to become down.
        fall: u32,
    },
    /// Up while at least `quorum` processes run.
    Process {
        /// Needed count.
        quorum: u32,
    },
    /// The file's integer value times the weight.
    File,
    /// Up while at least `quorum` pods are Ready.
    Pods {
        /// Needed count.
        quorum: u32,
    },
    /// HTTP check results with rise/fall counting as for scripts (both ≥ 1).
    Http {
        /// Successes to become up.
        rise: u32,
        /// Failures to become down.
        fall: u32,
    },
}

impl Rule {
    /// The kind this rule belongs to.
    pub fn kind(&self) -> TrackerKind {
        match self {
            Rule::Link => TrackerKind::Interface,
            Rule::Script { .. } => TrackerKind::Script,
            Rule::Process { .. } => TrackerKind::Process,
            Rule::File => TrackerKind::File,
            Rule::Pods { .. } => TrackerKind::Pods,
            Rule::Http { .. } => TrackerKind::Http,
        }
    }
}

/// One tracker's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerSpec {
    /// Name (for interfaces: the interface name). Unique per kind within an instance.
    pub name: String,
    /// Weight, −254..=254; 0 ⇒ failure means FAULT.
    pub weight: i16,
    /// Reverse the effect.
    pub reverse: bool,
    /// Observation rule.
    pub rule: Rule,
}

impl TrackerSpec {
    /// The kind.
    pub fn kind(&self) -> TrackerKind {
        self.rule.kind()
    }
}

/// A raw observation from the I/O side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// Link state of a tracked interface.
    Link(bool),
    /// One script run: `true` for exit code 0; `false` for non-zero, a signal or a timeout.
    ScriptResult(bool),
    /// Number of matching processes running.
    ProcessCount(u32),
    /// Integer read from a tracked file (a missing or unreadable file reads as 0).
    FileValue(i64),
    /// Number of Ready pods.
    PodsReady(u32),
    /// One HTTP check: `true` when the expected status arrived in time.
    HttpResult(bool),
}

impl Observation {
    /// The tracker kind this observation is for.
    pub fn kind(&self) -> TrackerKind {
        match self {
            Observation::Link(_) => TrackerKind::Interface,
            Observation::ScriptResult(_) => TrackerKind::Script,
            Observation::ProcessCount(_) => TrackerKind::Process,
            Observation::FileValue(_) => TrackerKind::File,
            Observation::PodsReady(_) => TrackerKind::Pods,
            Observation::HttpResult(_) => TrackerKind::Http,
        }
    }
}

/// A tracker's effect on its instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Weight-0 tracker with no result yet: holds the instance in INIT.
    Pending,
    /// Add this to the base priority (may be 0 or negative).
    Delta(i32),
    /// The instance must be in FAULT.
    Fault,
}

/// keepalived's clamp for a file tracker's contribution; the low end means FAULT.
const FILE_FAULT: i64 = -254;
const FILE_MAX: i64 = 253;

/// A tracker and its current state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    spec: TrackerSpec,
    /// Up/down; `None` before the first observation.
    up: Option<bool>,
    /// keepalived's script `result` counter: 0..rise-1 down, rise..rise+fall-1 up.
    script_result: u32,
    /// Last file value.
    file_value: Option<i64>,
}

impl Tracker {
    /// A tracker that has not observed anything yet.
    pub fn new(spec: TrackerSpec) -> Tracker {
        let script_result = match spec.rule {
            Rule::Script { rise, .. } | Rule::Http { rise, .. } => rise.saturating_sub(1),
            _ => 0,
        };
        Tracker {
            spec,
            up: None,
            script_result,
            file_value: None,
        }
    }

    /// The configuration.
    pub fn spec(&self) -> &TrackerSpec {
        &self.spec
    }

    /// Change weight and reverse in place (config update), keeping the observed state.
    pub(crate) fn set_spec_weights(&mut self, weight: i16, reverse: bool) {
        self.spec.weight = weight;
        self.spec.reverse = reverse;
    }

    /// Up (`Some(true)`), down, or not yet known. For files: not FAULT.
    pub fn is_up(&self) -> Option<bool> {
        match self.spec.rule {
            Rule::File => self.file_value.map(|_| self.effect() != Effect::Fault),
            _ => self.up,
        }
    }

    /// Feed an observation; returns `true` when the effect changed. An observation of the
    /// wrong kind is ignored (returns `false`).
    pub fn observe(&mut self, obs: Observation) -> bool {
        let before = (self.effect(), self.is_up());
        match (self.spec.rule, obs) {
            (Rule::Link, Observation::Link(up)) => self.up = Some(up),
            (Rule::Process { quorum }, Observation::ProcessCount(n)) => self.up = Some(n >= quorum),
            (Rule::Pods { quorum }, Observation::PodsReady(n)) => self.up = Some(n >= quorum),
            (Rule::File, Observation::FileValue(v)) => self.file_value = Some(v),
            (Rule::Script { rise, fall }, Observation::ScriptResult(ok))
            | (Rule::Http { rise, fall }, Observation::HttpResult(ok)) => {
                self.script_step(rise, fall, ok)
            }
            _ => return false,
        }
        before != (self.effect(), self.is_up())
    }

    /// keepalived's rise/fall counter.
    fn script_step(&mut self, rise: u32, fall: u32, ok: bool) {
        let top = rise + fall - 1;
        if ok {
            if self.script_result + 1 < rise {
                // Still down (the init state starts at rise-1, so it never lands here).
                self.script_result += 1;
            } else {
                self.script_result = top;
                self.up = Some(true);
            }
        } else if self.script_result > rise && self.up == Some(true) {
            self.script_result -= 1;
        } else {
            self.script_result = 0;
            self.up = Some(false);
        }
    }

    /// What this tracker has observed, for a successor that takes over the instance
    /// ([`crate::Instance::hand_over`]).
    pub fn memory(&self) -> TrackerMemory {
        TrackerMemory {
            kind: self.spec.kind(),
            name: self.spec.name.clone(),
            up: self.up,
            script_result: self.script_result,
            file_value: self.file_value,
        }
    }

    /// Continue from what a predecessor observed. Ignored (returns `false`) when the memory
    /// is of another kind, or its counter does not fit this tracker's rise/fall.
    pub fn restore(&mut self, m: &TrackerMemory) -> bool {
        if m.kind != self.spec.kind() {
            return false;
        }
        if let Rule::Script { rise, fall } | Rule::Http { rise, fall } = self.spec.rule
            && m.script_result > rise + fall - 1
        {
            return false;
        }
        self.up = m.up;
        self.script_result = m.script_result;
        self.file_value = m.file_value;
        true
    }

    /// The current effect.
    pub fn effect(&self) -> Effect {
        let w = i32::from(self.spec.weight);
        let mult = if self.spec.reverse { -1 } else { 1 };
        if let Rule::File = self.spec.rule {
            let Some(v) = self.file_value else {
                return if w == 0 {
                    Effect::Pending
                } else {
                    Effect::Delta(0)
                };
            };
            if w == 0 {
                return if (v != 0) != self.spec.reverse {
                    Effect::Fault
                } else {
                    Effect::Delta(0)
                };
            }
            let s = (i128::from(v) * i128::from(w) * i128::from(mult))
                .clamp(i128::from(FILE_FAULT), i128::from(FILE_MAX));
            return if s as i64 == FILE_FAULT {
                Effect::Fault
            } else {
                Effect::Delta(s as i32)
            };
        }
        match self.up {
            None if w == 0 => Effect::Pending,
            None => Effect::Delta(0),
            Some(up) if w == 0 => {
                if up != self.spec.reverse {
                    Effect::Delta(0)
                } else {
                    Effect::Fault
                }
            }
            Some(up) => Effect::Delta(if up { w.max(0) } else { w.min(0) } * mult),
        }
    }
}

/// What a tracker has observed so far ([`Tracker::memory`]), keyed by kind and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackerMemory {
    /// Kind.
    pub kind: TrackerKind,
    /// Name.
    pub name: String,
    /// Up/down; `None` before the first observation.
    pub up: Option<bool>,
    /// The rise/fall counter of scripts and HTTP checks.
    pub script_result: u32,
    /// The last value of a file tracker.
    pub file_value: Option<i64>,
}

/// Effective priority: owners stay 255; others base + Σ deltas clamped to 1..=254.
pub fn effective_priority(base: u8, trackers: &[Tracker]) -> u8 {
    if base == 255 {
        return 255;
    }
    let sum: i32 = trackers
        .iter()
        .map(|t| match t.effect() {
            Effect::Delta(d) => d,
            _ => 0,
        })
        .sum();
    (i32::from(base) + sum).clamp(1, 254) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(rule: Rule, weight: i16, reverse: bool) -> Tracker {
        Tracker::new(TrackerSpec {
            name: "x".into(),
            weight,
            reverse,
            rule,
        })
    }

    #[test]
    fn weight_table() {
        // (weight, reverse, up) -> effect, for a link tracker.
        let cases = [
            (0, false, true, Effect::Delta(0)),
            (0, false, false, Effect::Fault),
            (0, true, true, Effect::Fault),
            (0, true, false, Effect::Delta(0)),
            (5, false, true, Effect::Delta(5)),
            (5, false, false, Effect::Delta(0)),
            (-5, false, true, Effect::Delta(0)),
            (-5, false, false, Effect::Delta(-5)),
            (5, true, true, Effect::Delta(-5)),
            (5, true, false, Effect::Delta(0)),
            (-5, true, true, Effect::Delta(0)),
            (-5, true, false, Effect::Delta(5)),
        ];
        for (w, rev, up, want) in cases {
            let mut tr = t(Rule::Link, w, rev);
            tr.observe(Observation::Link(up));
            assert_eq!(tr.effect(), want, "weight {w} reverse {rev} up {up}");
        }
    }

    #[test]
    fn pending_until_first_observation() {
        assert_eq!(t(Rule::Link, 0, false).effect(), Effect::Pending);
        assert_eq!(t(Rule::Link, 10, false).effect(), Effect::Delta(0));
        assert_eq!(t(Rule::File, 0, false).effect(), Effect::Pending);
    }

    #[test]
    fn file_rules() {
        let cases = [
            (0, false, 0, Effect::Delta(0)),
            (0, false, 7, Effect::Fault),
            (0, true, 0, Effect::Fault),
            (0, true, 7, Effect::Delta(0)),
            (10, false, 3, Effect::Delta(30)),
            (10, true, 3, Effect::Delta(-30)),
            (-10, false, 3, Effect::Delta(-30)),
            (10, false, 100, Effect::Delta(253)),
            (10, false, -25, Effect::Delta(-250)),
            (10, false, -26, Effect::Fault),
            (1, false, i64::MIN, Effect::Fault),
            (254, false, i64::MAX, Effect::Delta(253)),
        ];
        for (w, rev, v, want) in cases {
            let mut tr = t(Rule::File, w, rev);
            tr.observe(Observation::FileValue(v));
            assert_eq!(tr.effect(), want, "weight {w} reverse {rev} value {v}");
        }
    }

    #[test]
    fn rise_fall_three() {
        let mut tr = t(Rule::Script { rise: 3, fall: 3 }, 0, false);
        // Init state: one success decides up.
        assert!(tr.observe(Observation::ScriptResult(true)));
        assert_eq!(tr.is_up(), Some(true));
        // Two failures keep it up, the third takes it down.
        assert!(!tr.observe(Observation::ScriptResult(false)));
        assert!(!tr.observe(Observation::ScriptResult(false)));
        assert_eq!(tr.is_up(), Some(true));
        assert!(tr.observe(Observation::ScriptResult(false)));
        assert_eq!(tr.effect(), Effect::Fault);
        // Two successes keep it down, the third brings it up.
        assert!(!tr.observe(Observation::ScriptResult(true)));
        assert!(!tr.observe(Observation::ScriptResult(true)));
        assert_eq!(tr.is_up(), Some(false));
        assert!(tr.observe(Observation::ScriptResult(true)));
        assert_eq!(tr.is_up(), Some(true));
        // A success in between resets the failure count.
        tr.observe(Observation::ScriptResult(false));
        tr.observe(Observation::ScriptResult(false));
        tr.observe(Observation::ScriptResult(true));
        tr.observe(Observation::ScriptResult(false));
        tr.observe(Observation::ScriptResult(false));
        assert_eq!(tr.is_up(), Some(true));
    }

    #[test]
    fn script_first_failure_decides_down() {
        let mut tr = t(Rule::Script { rise: 3, fall: 3 }, 0, false);
        assert!(tr.observe(Observation::ScriptResult(false)));
        assert_eq!(tr.effect(), Effect::Fault);
        tr.observe(Observation::ScriptResult(true));
        tr.observe(Observation::ScriptResult(true));
        assert_eq!(tr.is_up(), Some(false));
        tr.observe(Observation::ScriptResult(true));
        assert_eq!(tr.is_up(), Some(true));
    }

    #[test]
    fn rise_fall_one() {
        let mut tr = t(Rule::Script { rise: 1, fall: 1 }, -20, false);
        tr.observe(Observation::ScriptResult(true));
        assert_eq!(tr.effect(), Effect::Delta(0));
        tr.observe(Observation::ScriptResult(false));
        assert_eq!(tr.effect(), Effect::Delta(-20));
        tr.observe(Observation::ScriptResult(true));
        assert_eq!(tr.effect(), Effect::Delta(0));
    }

    #[test]
    fn http_counts_like_a_script_and_ignores_script_results() {
        let mut tr = t(Rule::Http { rise: 2, fall: 2 }, 0, false);
        assert_eq!(tr.spec().kind(), TrackerKind::Http);
        assert!(!tr.observe(Observation::ScriptResult(true)), "other kind");
        assert_eq!(tr.effect(), Effect::Pending);
        assert!(tr.observe(Observation::HttpResult(true)));
        assert!(!tr.observe(Observation::HttpResult(false)));
        assert!(tr.observe(Observation::HttpResult(false)));
        assert_eq!(tr.effect(), Effect::Fault);
        assert!(!tr.observe(Observation::HttpResult(true)));
        assert!(tr.observe(Observation::HttpResult(true)));
        assert_eq!(tr.effect(), Effect::Delta(0));
    }

    #[test]
    fn memory_restores_the_counter() {
        let mut a = t(Rule::Http { rise: 3, fall: 3 }, -10, false);
        a.observe(Observation::HttpResult(true));
        a.observe(Observation::HttpResult(false));
        let mem = a.memory();
        assert_eq!((mem.up, mem.script_result), (Some(true), 4));
        let mut b = t(Rule::Http { rise: 3, fall: 3 }, -10, false);
        assert!(b.restore(&mem));
        assert_eq!((b.is_up(), b.effect()), (a.is_up(), a.effect()));
        // Two more failures take both down at the same moment.
        for tr in [&mut a, &mut b] {
            tr.observe(Observation::HttpResult(false));
            tr.observe(Observation::HttpResult(false));
        }
        assert_eq!(b.effect(), Effect::Delta(-10));
        assert_eq!(a, b);
        // A counter beyond this tracker's rise + fall, or another kind, is not taken.
        let mut small = t(Rule::Http { rise: 1, fall: 1 }, 0, false);
        assert!(!small.restore(&mem));
        let mut link = t(Rule::Link, 0, false);
        assert!(!link.restore(&mem));
        assert_eq!(link.effect(), Effect::Pending);
    }

    #[test]
    fn quorum() {
        let mut tr = t(Rule::Process { quorum: 2 }, 10, false);
        tr.observe(Observation::ProcessCount(1));
        assert_eq!(tr.effect(), Effect::Delta(0));
        tr.observe(Observation::ProcessCount(2));
        assert_eq!(tr.effect(), Effect::Delta(10));
        let mut p = t(Rule::Pods { quorum: 1 }, 0, false);
        p.observe(Observation::PodsReady(0));
        assert_eq!(p.effect(), Effect::Fault);
        // Wrong-kind observations are ignored.
        assert!(!p.observe(Observation::Link(true)));
        assert_eq!(p.effect(), Effect::Fault);
    }

    #[test]
    fn effective_priority_clamps_and_owner() {
        let mut up = t(Rule::Link, 100, false);
        up.observe(Observation::Link(true));
        let mut down = t(Rule::Link, -254, false);
        down.observe(Observation::Link(false));
        assert_eq!(effective_priority(244, std::slice::from_ref(&up)), 254);
        assert_eq!(effective_priority(254, std::slice::from_ref(&up)), 254);
        assert_eq!(effective_priority(100, std::slice::from_ref(&down)), 1);
        assert_eq!(effective_priority(255, &[up.clone(), down.clone()]), 255);
        let mut p = t(Rule::Process { quorum: 1 }, 10, false);
        p.observe(Observation::ProcessCount(1));
        assert_eq!(effective_priority(244, &[p]), 254);
    }
}
