//! The lab's error type.

use std::time::Duration;

/// Everything that can go wrong while building or driving a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started or failed.
    #[error("command `{cmd}` failed: {reason}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and stderr, or the spawn error.
        reason: String,
    },
    /// An I/O error with context.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A condition was not met before its deadline.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// The awaited condition.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// A daemon exited or misbehaved.
    #[error("{daemon}: {reason}")]
    Daemon {
        /// Which daemon (kind and node).
        daemon: String,
        /// What happened, with the tail of its log.
        reason: String,
    },
    /// A condition that had to keep holding stopped holding.
    #[error("{what} stopped holding after {after:?}")]
    Violated {
        /// The condition.
        what: String,
        /// When it was first seen false.
        after: Duration,
    },
    /// Output of a tool could not be understood.
    #[error("cannot parse {what}: {reason}")]
    Parse {
        /// What was parsed.
        what: String,
        /// Why it failed.
        reason: String,
    },
}

/// Result with [`LabError`].
pub type Result<T, E = LabError> = std::result::Result<T, E>;

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}
