//! VRRP timer arithmetic, exactly per version.
//!
//! - v3 (RFC 9568 §6.1): `Skew_Time = ((256 − Priority) × Master_Adver_Interval) / 256`,
//!   `Master_Down_Interval = 3 × Master_Adver_Interval + Skew_Time`; the interval is in
//!   centiseconds and a backup learns it from the master.
//! - v2 (RFC 3768 §6.1): `Skew_Time = (256 − Priority) / 256` seconds,
//!   `Master_Down_Interval = 3 × Advertisement_Interval + Skew_Time`.
//!
//! Like keepalived we compute in microseconds, so the skew keeps its fraction
//! (priority 254 ⇒ 7.812 ms rather than 0 centiseconds).

use std::time::Duration;

use super::packet::{Interval, Version};

/// Skew_Time for a router of `priority` given the master's advert interval.
pub fn skew_time(version: Version, priority: u8, master_adver_interval: Interval) -> Duration {
    let p = 256 - u64::from(priority);
    let micros = match version {
        Version::V2 => p * 1_000_000 / 256,
        Version::V3 => p * master_adver_interval.micros() / 256,
    };
    Duration::from_micros(micros)
}

/// Master_Down_Interval for a router of `priority` given the master's advert interval.
pub fn master_down_interval(
    version: Version,
    priority: u8,
    master_adver_interval: Interval,
) -> Duration {
    master_adver_interval.duration() * 3 + skew_time(version, priority, master_adver_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // Priority 100 at 1 s: skew 156/256 s = 609.375 ms, MDI 3.609375 s (both versions).
        for v in [Version::V2, Version::V3] {
            assert_eq!(
                skew_time(v, 100, Interval(100)),
                Duration::from_micros(609_375)
            );
            assert_eq!(
                master_down_interval(v, 100, Interval(100)),
                Duration::from_micros(3_609_375)
            );
        }
        // Priority 254: 2/256 s = 7.8125 ms, truncated to whole microseconds.
        assert_eq!(
            skew_time(Version::V3, 254, Interval(100)),
            Duration::from_micros(7_812)
        );
        // Priority 200 (keepalived's measured 3.23 s first election).
        assert_eq!(
            master_down_interval(Version::V2, 200, Interval(100)),
            Duration::from_micros(3_218_750)
        );
        // v3 scales the skew with the interval; v2 does not.
        assert_eq!(
            skew_time(Version::V3, 100, Interval(10)),
            Duration::from_micros(60_937)
        );
        assert_eq!(
            skew_time(Version::V2, 100, Interval(300)),
            Duration::from_micros(609_375)
        );
        assert_eq!(
            master_down_interval(Version::V2, 100, Interval(300)),
            Duration::from_micros(9_609_375)
        );
        // Owner: skew 1/256 of the interval.
        assert_eq!(
            skew_time(Version::V3, 255, Interval(100)),
            Duration::from_micros(3_906)
        );
    }
}
