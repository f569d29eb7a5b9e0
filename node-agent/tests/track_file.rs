//! track_file against real files: values, missing file, garbage, a directory that appears
//! later, and no repeats of unchanged values.

use std::path::Path;
use std::time::Duration;

use agent::track::{Observation, TrackerOptions, TrackerSet, Trackers};
use crds::vrrpnode::{ResolvedInstance, ResolvedTrackFile};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(10);

fn start(path: &Path, poll: Duration) -> (Trackers, mpsc::Receiver<Observation>) {
    let mut inst = ResolvedInstance {
        name: "VI_1".into(),
        ..Default::default()
    };
    inst.track.files = vec![ResolvedTrackFile {
        name: "tf".into(),
        path: path.display().to_string(),
        weight: 10,
        reverse: false,
    }];
    let set = TrackerSet::from_instances(&[inst]).unwrap();
    let (tx, rx) = mpsc::channel(64);
    let opts = TrackerOptions {
        file_poll_interval: poll,
        ..Default::default()
    };
    let mut trackers = Trackers::new(tx, opts);
    trackers.apply(&set);
    (trackers, rx)
}

/// The next observation must be `want` (no other value may come first).
async fn expect(rx: &mut mpsc::Receiver<Observation>, want: Option<i64>) {
    let obs = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {want:?}"))
        .expect("channel open");
    assert_eq!(
        obs,
        Observation::FileValue {
            tracker: "tf".into(),
            value: want
        }
    );
}

/// Write through a temporary file and a rename, as careful writers do.
fn write_atomic(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Values in sequence, with a long poll interval so inotify must do the work.
#[tokio::test]
async fn values_missing_and_garbage_via_inotify() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prio");
    let (_t, mut rx) = start(&path, Duration::from_secs(3600));
    expect(&mut rx, None).await; // missing at start
    std::fs::write(&path, "5\n").unwrap(); // truncate + write in place
    expect(&mut rx, Some(5)).await;
    write_atomic(&path, "  -3 \n");
    expect(&mut rx, Some(-3)).await;
    std::fs::write(&path, "garbage").unwrap();
    expect(&mut rx, None).await;
    std::fs::write(&path, "0x10").unwrap();
    expect(&mut rx, Some(16)).await;
    std::fs::remove_file(&path).unwrap();
    expect(&mut rx, None).await;
    std::fs::write(&path, "").unwrap();
    // Empty is also None: no change to report. Then a value again.
    std::fs::write(&path, "7").unwrap();
    expect(&mut rx, Some(7)).await;
    // Emptied for good: reported once it stays empty.
    std::fs::write(&path, "").unwrap();
    expect(&mut rx, None).await;
}

/// Unchanged content (even rewritten) is not re-sent before the refresh interval.
#[tokio::test]
async fn unchanged_value_is_not_resent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prio");
    std::fs::write(&path, "42").unwrap();
    let (_t, mut rx) = start(&path, Duration::from_millis(20));
    expect(&mut rx, Some(42)).await;
    std::fs::write(&path, "42\n").unwrap();
    let extra = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await;
    assert!(extra.is_err(), "unchanged value re-sent: {extra:?}");
}

/// A file whose directory does not exist yet is picked up by polling once it appears.
#[tokio::test]
async fn directory_created_later() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("later");
    let path = sub.join("prio");
    let (_t, mut rx) = start(&path, Duration::from_millis(20));
    expect(&mut rx, None).await;
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(&path, "9").unwrap();
    expect(&mut rx, Some(9)).await;
    // The watch set up after the directory appeared works too.
    std::fs::write(&path, "10").unwrap();
    expect(&mut rx, Some(10)).await;
}

/// In-place rewrites (`echo N > file`: truncate, then write) never surface the empty moment
/// between truncate and write.
#[tokio::test]
async fn in_place_rewrites_do_not_flap_to_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prio");
    std::fs::write(&path, "1").unwrap();
    let (_t, mut rx) = start(&path, Duration::from_millis(5));
    expect(&mut rx, Some(1)).await;
    let writer = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            for i in 0..25 {
                std::fs::write(&path, if i % 2 == 0 { "2" } else { "1" }).unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
            std::fs::write(&path, "3").unwrap();
        }
    });
    let mut values = Vec::new();
    loop {
        let obs = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .expect("an observation")
            .unwrap();
        let Observation::FileValue { value, .. } = obs else {
            panic!("{obs:?}")
        };
        values.push(value);
        if value == Some(3) {
            break;
        }
    }
    writer.await.unwrap();
    assert!(
        values.iter().all(|v| v.is_some()),
        "a transient empty read was reported: {values:?}"
    );
}
