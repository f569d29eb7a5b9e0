//! Event names that stay valid for any object name.
//!
//! kube's `events::Recorder` names an Event `{object name}.{nanoseconds in hex}`. Object names
//! may be 253 characters long, the limit for an Event name too, so for a name longer than
//! [`RECORDER_NAME_LIMIT`] the API server refuses the Event. Such Events are built here
//! instead ([`event`]), named by a shortened prefix, a hash of the whole name and the time
//! ([`event_name`]); they point at the object by its full name as usual.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;

/// The longest object name in a Kubernetes object name.
pub const MAX_NAME: usize = 253;

/// The longest object name for which the Recorder's `{name}.{nanos:x}` fits in [`MAX_NAME`]
/// (16 hex digits of nanoseconds, until the year 2554).
pub const RECORDER_NAME_LIMIT: usize = MAX_NAME - 1 - 16;

/// Whether kube's Recorder can name an Event about an object called `name`.
pub fn recorder_can_name(name: &str) -> bool {
    name.len() <= RECORDER_NAME_LIMIT
}

/// An Event name for an object called `name` at `nanos`: the Recorder's form when it fits,
/// else `{prefix}-{hash}.{nanos:x}` within [`MAX_NAME`], where the prefix is the start of the
/// name (ending in a letter or digit, as a DNS subdomain must) and the hash tells apart long
/// names that share it.
pub fn event_name(name: &str, nanos: u64) -> String {
    let time = format!("{nanos:x}");
    if name.len() + 1 + time.len() <= MAX_NAME {
        return format!("{name}.{time}");
    }
    let hash = fnv1a(name.as_bytes());
    let room = MAX_NAME - 1 - time.len() - 1 - 16;
    let mut prefix = &name[..floor_boundary(name, room)];
    prefix = prefix.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        format!("e{hash:016x}.{time}")
    } else {
        format!("{prefix}-{hash:016x}.{time}")
    }
}

/// An events.k8s.io/v1 Event about `regarding`, as the Recorder would write it, under
/// [`event_name`].
#[allow(clippy::too_many_arguments)]
pub fn event(
    regarding: &ObjectReference,
    warning: bool,
    reason: &str,
    note: Option<&str>,
    action: &str,
    controller: &str,
    instance: &str,
    now: Timestamp,
) -> Event {
    let name = regarding.name.as_deref().unwrap_or(controller);
    let nanos = u64::try_from(now.as_nanosecond()).unwrap_or_default();
    Event {
        action: Some(action.into()),
        reason: Some(reason.into()),
        event_time: Some(MicroTime(now)),
        regarding: Some(regarding.clone()),
        note: note.map(str::to_owned),
        metadata: ObjectMeta {
            namespace: regarding.namespace.clone(),
            name: Some(event_name(name, nanos)),
            ..Default::default()
        },
        reporting_controller: Some(controller.into()),
        reporting_instance: Some(instance.into()),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        ..Default::default()
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dns_subdomain(s: &str) -> bool {
        s.len() <= MAX_NAME
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    }

    #[test]
    fn short_names_keep_the_recorders_form() {
        assert_eq!(event_name("vip-a", 0x17f3), "vip-a.17f3");
        assert!(recorder_can_name(&"a".repeat(RECORDER_NAME_LIMIT)));
        assert!(!recorder_can_name(&"a".repeat(RECORDER_NAME_LIMIT + 1)));
    }

    #[test]
    fn names_up_to_253_characters_give_valid_distinct_event_names() {
        let nanos = 0x1877_0000_0000_0000; // 16 hex digits, as in 2026
        for len in [200, 236, 237, 240, 252, 253] {
            let a = format!("{}-x", "v".repeat(len - 2));
            let b = format!("{}-y", "v".repeat(len - 2));
            let (ea, eb) = (event_name(&a, nanos), event_name(&b, nanos));
            assert!(dns_subdomain(&ea), "{len}: {ea} ({} chars)", ea.len());
            assert_ne!(ea, eb, "{len}: same prefix, different names");
        }
        // A prefix cut just after a '-' or '.' still ends in a letter or digit.
        let dotted = format!("{}.{}", "a".repeat(219), "b".repeat(33));
        assert!(dns_subdomain(&event_name(&dotted, nanos)));
    }

    #[test]
    fn the_event_points_at_the_full_name() {
        let long = "v".repeat(253);
        let r = ObjectReference {
            name: Some(long.clone()),
            namespace: Some("ns".into()),
            ..Default::default()
        };
        let e = event(
            &r,
            true,
            "Fault",
            Some("note"),
            "Transition",
            "kube-vrrp",
            "n1",
            Timestamp::from_second(1_800_000_000).unwrap(),
        );
        assert_eq!(e.regarding.unwrap().name.as_deref(), Some(long.as_str()));
        assert!(e.metadata.name.unwrap().len() <= MAX_NAME);
        assert_eq!(e.metadata.namespace.as_deref(), Some("ns"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
    }
}
