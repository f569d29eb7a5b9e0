//! `track_file`: report the integer in a file whenever it changes.
//!
//! keepalived re-reads the file on inotify events (close after write, delete, move) in its
//! directory. We watch the directory for the same events, for the file's name and for `..*`
//! entries (Kubernetes ConfigMap/Secret volumes swap a `..data` symlink), and also re-read every
//! [`TrackerOptions::file_poll_interval`] as a safety net (directory created later, inotify
//! limits reached, filesystems without inotify).
//!
//! A writer doing `echo 5 > file` truncates before it writes, so a read can land in between and
//! see an empty file. Reads after an inotify event for the file (the writer closed it, or it was
//! renamed into place or deleted) are taken as they are, except that a number turning into an
//! empty file is believed only if the file stays empty for [`EMPTY_CONFIRM`] (a slow writer may
//! already be between truncate and write again). Reads by the poll timer are confirmed by a
//! second read [`SETTLE`] later when they differ from the last value, and while the watch works
//! an empty file seen by polling is ignored (the writer's close event will follow).
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

/// What one read of the file found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRead {
    /// The file holds this number.
    Number(i64),
    /// The file exists and is empty (or only whitespace).
    Empty,
    /// The file holds something that is not one number.
    NotNumber,
    /// The file cannot be opened or read.
    Unreadable,
}

impl FileRead {
    /// The value reported to the driver.
    pub fn value(self) -> Option<i64> {
        match self {
            FileRead::Number(v) => Some(v),
            _ => None,
        }
    }
}

/// Read and parse the file once.
pub async fn read_file(path: &Path) -> FileRead {
    use tokio::io::AsyncReadExt;
    let Ok(file) = tokio::fs::File::open(path).await else {
        return FileRead::Unreadable;
    };
    let mut buf = Vec::new();
    if file.take(READ_CAP).read_to_end(&mut buf).await.is_err() {
        return FileRead::Unreadable;
    }
    let Ok(text) = std::str::from_utf8(&buf) else {
        return FileRead::NotNumber;
    };
    if text.trim().is_empty() {
        return FileRead::Empty;
    }
    parse_value(text).map_or(FileRead::NotNumber, FileRead::Number)
}

/// Read until two reads [`SETTLE`] apart agree (at most a few tries), unless the first read
/// gives the value `last` reported.
async fn read_settled(path: &Path, last: Option<Option<i64>>) -> FileRead {
    let mut read = read_file(path).await;
    if Some(read.value()) == last {
        return read;
    }
    for _ in 0..4 {
        tokio::time::sleep(SETTLE).await;
        let again = read_file(path).await;
        if again == read {
            return read;
        }
        read = again;
    }
    read
}

/// How long an empty file must stay empty before a number it held is reported gone.
pub const EMPTY_CONFIRM: Duration = Duration::from_millis(200);

/// Re-read an empty file for [`EMPTY_CONFIRM`]; the first non-empty read wins, else `Empty`.
async fn confirm_empty(path: &Path) -> FileRead {
    let until = Instant::now() + EMPTY_CONFIRM;
    while Instant::now() < until {
        tokio::time::sleep(SETTLE).await;
        let read = read_file(path).await;
        if read != FileRead::Empty {
            return read;
        }
    }
    FileRead::Empty
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
    file_name: std::ffi::OsString,
}

impl DirWatch {
    fn new(file: &Path) -> std::io::Result<Self> {
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = file
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            &dir,
            // Like keepalived: react when a writer closes the file, or on deletes and renames,
            // not on every write (a half-written file would be read).
            AddWatchFlags::IN_CLOSE_WRITE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVE
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF,
        )?;
        // SAFETY: `inotify` owns its descriptor and moves into the AsyncFd, which keeps it
        // open (and registered) until the AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(InotifyFd(inotify))? };
        Ok(Self { fd, file_name })
    }

    /// Wait for an event about our file (or a `..name` entry, as Kubernetes volumes swap a
    /// `..data` symlink). Returns false when the watch is gone (directory deleted or moved).
    async fn changed(&mut self) -> bool {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return false;
            };
            match guard.try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => {
                    let gone = AddWatchFlags::IN_IGNORED
                        | AddWatchFlags::IN_DELETE_SELF
                        | AddWatchFlags::IN_MOVE_SELF;
                    if events.iter().any(|e| e.mask.intersects(gone)) {
                        return false;
                    }
                    let ours = events.iter().any(|e| {
                        e.name.as_ref().is_some_and(|n| {
                            *n == self.file_name || n.as_encoded_bytes().starts_with(b"..")
                        })
                    });
                    if ours {
                        return true;
                    }
                }
                Ok(Err(_)) => return false,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Why the file is being read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// First read.
    Start,
    /// inotify reported a close-after-write, delete or rename: the content is complete.
    Event,
    /// The poll timer.
    Poll,
}

/// The tracker task: sends the first value at once, then every change (and every
/// `refresh_interval`). Ends when the receiver is gone.
pub async fn run_tracker(spec: FileSpec, opts: TrackerOptions, tx: mpsc::Sender<Observation>) {
    let mut watch = DirWatch::new(&spec.path).ok();
    let mut last: Option<Option<i64>> = None;
    let mut last_sent = Instant::now();
    let mut trigger = Trigger::Start;
    loop {
        let read = match trigger {
            Trigger::Event => read_file(&spec.path).await,
            Trigger::Start | Trigger::Poll => read_settled(&spec.path, last).await,
        };
        // With a live watch, an empty file seen by polling is most likely a writer between
        // truncate and write; its close event will tell. Without a watch, polling decides.
        let transient = trigger == Trigger::Poll && watch.is_some() && read == FileRead::Empty;
        let read = if !transient && read == FileRead::Empty && matches!(last, Some(Some(_))) {
            // A number turning into an empty file: a slow writer may be between truncate and
            // write (even after a close event, when the next write has begun). Believe it only
            // if it stays empty for EMPTY_CONFIRM.
            confirm_empty(&spec.path).await
        } else {
            read
        };
        let value = if transient {
            last.flatten()
        } else {
            read.value()
        };
        let changed = last != Some(value);
        if changed || last_sent.elapsed() >= opts.refresh_interval {
            if changed {
                match value {
                    Some(v) => {
                        tracing::info!(tracker = %spec.name, path = %spec.path.display(), value = v, "tracked file value changed")
                    }
                    None => tracing::warn!(
                        tracker = %spec.name, path = %spec.path.display(), read = ?read,
                        "tracked file is missing or does not hold a number"
                    ),
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
        trigger = match watch.as_mut() {
            Some(w) => {
                tokio::select! {
                    alive = w.changed() => {
                        if !alive {
                            watch = None;
                        }
                        Trigger::Event
                    }
                    _ = poll => Trigger::Poll,
                }
            }
            None => {
                poll.await;
                // The directory may exist now.
                watch = DirWatch::new(&spec.path).ok();
                Trigger::Poll
            }
        };
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
