//! Source positions and diagnostics (errors and warnings) of the keepalived.conf reader.

use std::fmt;
use std::sync::Arc;

/// A position in a configuration file: file name, 1-based line and 1-based column (counted in
/// characters, so a remark in Chinese does not skew the column of what follows it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Span {
    /// The file as it was named (the top-level path, or an include target).
    pub file: Arc<str>,
    /// Line, from 1.
    pub line: u32,
    /// Column, from 1.
    pub column: u32,
}

impl Span {
    /// A position in `file`.
    pub fn new(file: &Arc<str>, line: u32, column: u32) -> Self {
        Span {
            file: Arc::clone(file),
            line,
            column,
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// How serious a diagnostic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Accepted, but probably not what the author meant, or changed the way keepalived changes it.
    Warning,
    /// The configuration cannot be used.
    Error,
}

/// One problem found in a configuration, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Diagnostic {
    /// Where.
    pub span: Span,
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, in one line.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    /// Errors print as `file:line:column: message`, warnings as
    /// `file:line:column: warning: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.severity {
            Severity::Error => write!(f, "{}: {}", self.span, self.message),
            Severity::Warning => write!(f, "{}: warning: {}", self.span, self.message),
        }
    }
}

/// Everything reported while reading one configuration, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Record an error.
    pub fn error(&mut self, span: &Span, message: impl Into<String>) {
        self.0.push(Diagnostic {
            span: span.clone(),
            severity: Severity::Error,
            message: message.into(),
        });
    }
    /// Record a warning.
    pub fn warning(&mut self, span: &Span, message: impl Into<String>) {
        self.0.push(Diagnostic {
            span: span.clone(),
            severity: Severity::Warning,
            message: message.into(),
        });
    }
    /// True when at least one error was recorded.
    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }
    /// The errors.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }
    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Warning)
    }
    /// Append all of `other`.
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
}

impl fmt::Display for Diagnostics {
    /// One diagnostic per line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}
