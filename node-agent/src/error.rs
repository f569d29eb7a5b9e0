//! The agent crate's one error type.

/// Everything that can go wrong in the agent outside the sans-IO core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation failed; the context says which.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error("configuration error: {0}")]
    Config(String),
}

impl Error {
    /// Wrap an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
