//! The planner's pacing and write memory (pure, time passed in): the coalescer plans a burst
//! once, the in-flight record keeps a lagging store from causing a second identical write, and
//! a re-placement triggers only the VirtualIPs whose placement changed.

use std::time::{Duration, Instant};

use operator::controller::placement_current;
use operator::planner::{Coalescer, InFlight, Placement, VipKey, VipPlacement, changed_vips};

const MS: Duration = Duration::from_millis(1);

#[test]
fn coalescer_waits_for_quiet_and_caps_the_delay() {
    let t0 = Instant::now();
    let mut c = Coalescer::new(300 * MS, 1500 * MS);
    assert_eq!(c.deadline(), None);
    assert!(!c.take_due(t0), "nothing pending is never due");
    c.change(t0);
    assert_eq!(c.deadline(), Some(t0 + 300 * MS));
    assert!(!c.take_due(t0 + 299 * MS));
    // A change within the quiet period pushes the deadline.
    c.change(t0 + 200 * MS);
    assert_eq!(c.deadline(), Some(t0 + 500 * MS));
    assert!(!c.take_due(t0 + 400 * MS));
    assert!(c.take_due(t0 + 500 * MS));
    assert_eq!(c.deadline(), None, "served changes are not planned again");
    assert!(!c.take_due(t0 + 600 * MS));
}

#[test]
fn a_steady_stream_of_changes_is_planned_after_the_max_delay() {
    let t0 = Instant::now();
    let mut c = Coalescer::new(300 * MS, 1500 * MS);
    let mut runs = Vec::new();
    // A change every 100 ms for 5 s: never quiet.
    for i in 0..=50u32 {
        let now = t0 + i * 100 * MS;
        c.change(now);
        if c.take_due(now) {
            runs.push(i * 100);
        }
    }
    assert_eq!(runs, vec![1500, 3100, 4700]);
}

#[test]
fn in_flight_write_is_not_repeated_while_the_store_lags() {
    let t0 = Instant::now();
    let mut w: InFlight<String> = InFlight::default();
    let n = "n1".to_string();
    assert!(!w.lagging(&n, Some("5"), Some(7), t0));
    w.wrote(n.clone(), vec![Some("5".into())], 7, t0);
    // The store still shows version 5: the same content is on its way.
    assert!(w.lagging(&n, Some("5"), Some(7), t0 + 100 * MS));
    assert!(w.lagging(&n, Some("5"), None, t0 + 100 * MS));
    // Different content must still be written.
    assert!(!w.lagging(&n, Some("5"), Some(8), t0 + 100 * MS));
    // A lagging event of the old version does not end it.
    w.observed(&n, Some("5"));
    assert!(w.lagging(&n, Some("5"), Some(7), t0 + 200 * MS));
    // The written version (or any later one) does.
    w.observed(&n, Some("6"));
    assert!(!w.lagging(&n, Some("5"), Some(7), t0 + 300 * MS));
    assert!(w.is_empty());
}

#[test]
fn in_flight_creation_ends_on_deletion_and_expires() {
    let t0 = Instant::now();
    let mut w: InFlight<String> = InFlight::default();
    let n = "n1".to_string();
    // Created: the store shows nothing until the watch delivers it.
    w.wrote(n.clone(), vec![None], 1, t0);
    assert!(w.lagging(&n, None, Some(1), t0));
    // Deleted by someone (a Delete event): compare again, so it is restored.
    w.observed(&n, None);
    assert!(!w.lagging(&n, None, Some(1), t0));
    // A write the watch never confirms is forgotten after the TTL.
    w.wrote(n.clone(), vec![Some("3".into()), Some("4".into())], 1, t0);
    assert!(w.lagging(&n, Some("4"), Some(1), t0 + InFlight::<String>::TTL - MS));
    assert!(!w.lagging(&n, Some("4"), Some(1), t0 + InFlight::<String>::TTL));
    assert!(
        !w.lagging(&n, Some("9"), Some(1), t0),
        "another version is not ours"
    );
}

fn key(name: &str) -> VipKey {
    VipKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

fn placed(vrid: u8) -> VipPlacement {
    VipPlacement {
        vrid: Some(vrid),
        ..Default::default()
    }
}

#[test]
fn only_vips_whose_placement_changed_are_triggered() {
    let mut a = Placement::default();
    a.virtual_ips.insert(key("same"), placed(1));
    a.virtual_ips.insert(key("moved"), placed(2));
    a.virtual_ips.insert(key("gone"), placed(3));
    let mut b = Placement::default();
    b.virtual_ips.insert(key("same"), placed(1));
    b.virtual_ips.insert(key("moved"), placed(4));
    b.virtual_ips.insert(key("new"), placed(5));
    let cases: [(Option<&Placement>, &Placement, Vec<&str>); 4] = [
        (None, &a, vec!["gone", "moved", "same"]),
        (Some(&a), &a, vec![]),
        (Some(&a), &b, vec!["gone", "moved", "new"]),
        (
            Some(&b),
            &Placement::default(),
            vec!["moved", "new", "same"],
        ),
    ];
    for (before, after, want) in cases {
        let want: Vec<VipKey> = want.into_iter().map(key).collect();
        assert_eq!(changed_vips(before, after), want);
    }
}

#[test]
fn status_is_written_only_from_a_current_placement() {
    // (fingerprint the placement saw, its infra generation, fingerprint now, infra now)
    let cases = [
        (Some(1), 3, 1, 3, true),
        (Some(1), 3, 2, 3, false), // the VirtualIP changed since
        (None, 3, 1, 3, false),    // not placed yet
        (Some(1), 3, 1, 4, false), // a Node or Secret changed since
    ];
    for (placed_print, placed_infra, print, infra, want) in cases {
        assert_eq!(
            placement_current(placed_print, placed_infra, print, infra),
            want,
            "{placed_print:?} {placed_infra} {print} {infra}"
        );
    }
}
