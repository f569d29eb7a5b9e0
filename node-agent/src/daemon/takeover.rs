//! Takeover telemetry: how this node became MASTER after a BACKUP spell, measured on its own
//! monotonic clock — last advert heard from the old master → the decision (master down timer
//! expiry, or a priority-0 advert's Skew_Time) → VIPs bound → first gratuitous ARP / NA.
//!
//! The result goes into the instance's status (`previousMaster`, `takeover`), from where the
//! operator copies it into `VirtualIP.status.lastFailover`, and into the
//! `kube_vrrp_takeover_seconds` histogram.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crds::vrrpnode::TakeoverTiming;

use super::vips::Milestone;

/// One takeover being measured, or measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Takeover {
    /// The master heard last before taking over.
    pub previous_master: Option<IpAddr>,
    decided: Instant,
    silence: Option<Duration>,
    bound: Option<Duration>,
    announced: Option<Duration>,
}

impl Takeover {
    /// As reported in the instance status.
    pub fn timing(&self) -> TakeoverTiming {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        TakeoverTiming {
            silence_ms: self.silence.map(ms),
            bind_ms: self.bound.map(ms),
            announce_ms: self.announced.map(ms),
        }
    }
}

/// The takeovers of every instance currently MASTER after one.
#[derive(Debug, Default)]
pub struct Takeovers {
    by_instance: BTreeMap<String, Takeover>,
}

impl Takeovers {
    /// `instance` went BACKUP → MASTER at `decided`; `last_heard` is the core's last master
    /// heard (address, when).
    pub fn start(
        &mut self,
        instance: &str,
        decided: Instant,
        last_heard: Option<(IpAddr, Instant)>,
    ) {
        self.by_instance.insert(
            instance.to_string(),
            Takeover {
                previous_master: last_heard.map(|(a, _)| a),
                decided,
                silence: last_heard.map(|(_, at)| decided.saturating_duration_since(at)),
                bound: None,
                announced: None,
            },
        );
    }

    /// `instance` left MASTER (or never took over): forget its takeover.
    pub fn end(&mut self, instance: &str) {
        self.by_instance.remove(instance);
    }

    /// Whether a milestone of `instance` is still to be measured.
    pub fn measuring(&self, instance: &str, m: Milestone) -> bool {
        self.by_instance.get(instance).is_some_and(|t| match m {
            Milestone::Bound => t.bound.is_none(),
            Milestone::Announced => t.announced.is_none(),
        })
    }

    /// Record a milestone reached `at`. Returns the whole takeover (last advert heard → first
    /// announcement) when this completes it.
    pub fn reached(&mut self, instance: &str, m: Milestone, at: Instant) -> Option<Duration> {
        let t = self.by_instance.get_mut(instance)?;
        let since = at.saturating_duration_since(t.decided);
        match m {
            Milestone::Bound if t.bound.is_none() => t.bound = Some(since),
            Milestone::Announced if t.announced.is_none() => {
                t.announced = Some(since);
                return Some(since + t.silence.unwrap_or_default());
            }
            _ => {}
        }
        None
    }

    /// The takeover of `instance`, if it is MASTER after one.
    pub fn get(&self, instance: &str) -> Option<&Takeover> {
        self.by_instance.get(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_is_measured_from_the_last_advert_heard() {
        let heard = Instant::now();
        let decided = heard + Duration::from_millis(3_610);
        let old: IpAddr = "192.0.2.1".parse().unwrap();
        let mut t = Takeovers::default();
        t.start("ns/v", decided, Some((old, heard)));
        assert!(t.measuring("ns/v", Milestone::Bound));
        assert_eq!(
            t.reached("ns/v", Milestone::Bound, decided + Duration::from_millis(2)),
            None
        );
        assert!(!t.measuring("ns/v", Milestone::Bound));
        let total = t.reached(
            "ns/v",
            Milestone::Announced,
            decided + Duration::from_millis(3),
        );
        assert_eq!(total, Some(Duration::from_millis(3_613)));
        // Later announcements (delayed, refresh) change nothing.
        assert_eq!(
            t.reached(
                "ns/v",
                Milestone::Announced,
                decided + Duration::from_secs(5)
            ),
            None
        );
        let got = t.get("ns/v").unwrap();
        assert_eq!(got.previous_master, Some(old));
        assert_eq!(
            got.timing(),
            TakeoverTiming {
                silence_ms: Some(3_610),
                bind_ms: Some(2),
                announce_ms: Some(3),
            }
        );
        t.end("ns/v");
        assert!(t.get("ns/v").is_none());
        assert!(!t.measuring("ns/v", Milestone::Announced));
    }
}
