//! `track_file`: report the integer in a file whenever it changes.
//!
//! keepalived re-reads the file on inotify events (close after write, delete, move) in its
//! directory. We watch the directory with inotify too (any event there triggers a re-read, which
//! also catches Kubernetes ConfigMap/Secret volumes that swap a `..data` symlink), and re-read
//! every [`TrackerOptions::file_poll_interval`] as a safety net (directory created later,
//! inotify limits reached, filesystems without inotify).
//!
//! A writer doing `echo 5 > file` truncates before it writes, so a read can land in between and
//! see an empty file. A value that differs from the last one reported is therefore confirmed by
//! a second read [`SETTLE`] later before it is sent.
//!
//! Values: keepalived reads the file with `strtol(…, 0)`; we accept the same forms (decimal,
//! `0x` hex, leading-`0` octal, optional sign, whitespace around) but the whole content must be
//! one number. Missing, unreadable, empty or non-numeric ⇒ `None` (keepalived would use 0; the
//! core decides what `None` means).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crds::vrrpnode::ResolvedTrackFile;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Observation, TrackerOptions};
use crate::Error;

/// Delay between the two reads that confirm a changed value.
pub const SETTLE: Duration = Duration::from_millis(25);

/// Bytes of the file that are read (a number never needs more).
const READ_CAP: u64 = 4096;

/// What a `track_file` reads (weight/reverse belong to the core).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// The `track_file` name.
    pub name: String,
    /// The file.
    pub path: PathBuf,
}

impl FileSpec {
    /// Validate a resolved `track_file`.
    pub fn from_resolved(f: &ResolvedTrackFile) -> Result<Self, Error> {
        if f.name.is_empty() {
            return Err(Error::Config(
                "track.files[].name: must not be empty".into(),
            ));
        }
        if f.path.is_empty() {
            return Err(Error::Config(format!(
                "track.files[{}].path: must not be empty",
                f.name
            )));
        }
        Ok(Self {
            name: f.name.clone(),
            path: PathBuf::from(&f.path),
        })
    }
}

/// Parse a file's content the way `strtol(s, NULL, 0)` would, but only if the whole (trimmed)
/// content is the number.
pub fn parse_value(content: &str) -> Option<i64> {
    let t = content.trim();
    let (neg, rest) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) =
        if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
            (16, hex)
        } else if rest.len() > 1 && rest.starts_with('0') {
            (8, &rest[1..])
        } else {
            (10, rest)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i64::from_str_radix(digits, radix).ok()?;
    if neg {
        magnitude.checked_neg()
    } else {
        Some(magnitude)
    }
}

/// Read and parse the file once.
pub async fn read_value(path: &Path) -> Option<i64> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await.ok()?;
    let mut buf = Vec::new();
    file.take(READ_CAP).read_to_end(&mut buf).await.ok()?;
    parse_value(std::str::from_utf8(&buf).ok()?)
}

/// Read until two reads [`SETTLE`] apart agree (at most a few tries), unless the first read
/// equals `last`.
async fn read_settled(path: &Path, last: Option<Option<i64>>) -> Option<i64> {
    let mut value = read_value(path).await;
    if Some(value) == last {
        return value;
    }
    for _ in 0..4 {
        tokio::time::sleep(SETTLE).await;
        let again = read_value(path).await;
        if again == value {
            return value;
        }
        value = again;
    }
    value
}

/// `Inotify` with the `AsRawFd` that `AsyncFd` wants.
struct InotifyFd(Inotify);

impl std::os::fd::AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// An inotify watch on the file's directory.
struct DirWatch {
    fd: AsyncFd<InotifyFd>,
}

impl DirWatch {
    fn new(file: &Path) -> std::io::Result<Self> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            &dir,
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )?;
        // SAFETY: `inotify` owns its descriptor and moves into the AsyncFd, which keeps it
        // open (and registered) until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(InotifyFd(inotify))? };
        Ok(Self { fd })
    }

    /// Wait for events. Returns false when the watch is gone (directory deleted or moved).
    async fn changed(&mut self) -> bool {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return false;
            };
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => {
                    let gone = events.iter().any(|e| {
                        e.mask.intersects(
                            AddWatchFlags::IN_IGNORED
                                | AddWatchFlags::IN_DELETE_SELF
                                | AddWatchFlags::IN_MOVE_SELF,
                        )
                    });
                    return !gone;
                }
                Ok(Err(_)) => return false,
                Err(_would_block) => continue,
            }
        }
    }
}

/// The tracker task: sends the first value at once, then every change (and every
/// `refresh_interval`). Ends when the receiver is gone.
pub async fn run_tracker(spec: FileSpec, opts: TrackerOptions, tx: mpsc::Sender<Observation>) {
    let mut watch = DirWatch::new(&spec.path).ok();
    let mut last: Option<Option<i64>> = None;
    let mut last_sent = Instant::now();
    loop {
        let value = read_settled(&spec.path, last).await;
        let changed = last != Some(value);
        if changed || last_sent.elapsed() >= opts.refresh_interval {
            if changed {
                match value {
                    Some(v) => {
                        tracing::info!(tracker = %spec.name, path = %spec.path.display(), value = v, "tracked file value changed")
                    }
                    None => {
                        tracing::warn!(tracker = %spec.name, path = %spec.path.display(), "tracked file is missing or does not hold a number")
                    }
                }
            }
            if tx
                .send(Observation::FileValue {
                    tracker: spec.name.clone(),
                    value,
                })
                .await
                .is_err()
            {
                return;
            }
            last = Some(value);
            last_sent = Instant::now();
        }
        let poll = tokio::time::sleep(opts.file_poll_interval);
        match watch.as_mut() {
            Some(w) => {
                tokio::select! {
                    alive = w.changed() => if !alive { watch = None },
                    _ = poll => {}
                }
            }
            None => {
                poll.await;
                // The directory may exist now.
                watch = DirWatch::new(&spec.path).ok();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_like_strtol_base_0() {
        assert_eq!(parse_value("5"), Some(5));
        assert_eq!(parse_value("  -20\n"), Some(-20));
        assert_eq!(parse_value("+7"), Some(7));
        assert_eq!(parse_value("0"), Some(0));
        assert_eq!(parse_value("0x1f"), Some(31));
        assert_eq!(parse_value("-0X10"), Some(-16));
        assert_eq!(parse_value("010"), Some(8));
        assert_eq!(parse_value(""), None);
        assert_eq!(parse_value(" \n"), None);
        assert_eq!(parse_value("abc"), None);
        assert_eq!(parse_value("12abc"), None);
        assert_eq!(parse_value("1 2"), None);
        assert_eq!(parse_value("--1"), None);
        assert_eq!(parse_value("+-1"), None);
        assert_eq!(parse_value("08"), None);
        assert_eq!(parse_value("0x"), None);
        assert_eq!(parse_value("-"), None);
        assert_eq!(parse_value("99999999999999999999"), None);
    }

    #[test]
    fn spec_validation() {
        let e = FileSpec::from_resolved(&ResolvedTrackFile {
            name: "f".into(),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("track.files[f].path"), "{e}");
    }
}
