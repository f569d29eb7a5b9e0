//! kube-vrrp's keepalived.conf reader: reading a keepalived configuration faithfully, writing
//! it back, converting it to `VirtualIP`s, and resolving it for this host (standalone mode).
//!
//! This crate owns everything about keepalived's file format. The API types it converts to and
//! the resolution of a `VirtualIP` for one node belong to `kube-vrrp-crds` (lib `crds`); the
//! agent's `convert` and `standalone` commands are its users.
//!
//! - [`lexer`] → [`syntax`] (statements and blocks, `include` expanded) → [`parser`] (the typed
//!   [`model::Config`], every problem reported as `file:line:column: message`).
//! - [`printer`]: the model back to keepalived.conf text.
//! - [`convert`]: the model → `VirtualIP` objects (and a `Secret` per PASS password); curl and
//!   wget health-check scripts become `track.http` where [`httpcheck`] can express them.
//! - [`standalone`]: the model × facts about this host → the [`crds::ResolvedInstance`]s the
//!   agent runs.
//!
//! Tests: every user configuration against golden output (`tests/`), a printer round-trip
//! property test, and a fuzz target (`fuzz/`).

pub mod cluster;
pub mod convert;
pub mod diag;
pub mod httpcheck;
pub mod lexer;
pub mod model;
pub mod parser;
pub mod printer;
pub mod standalone;
pub mod syntax;

use std::path::Path;

pub use diag::{Diagnostic, Diagnostics, Severity, Span};
pub use model::Config;
pub use syntax::{FileSource, MemFs, RealFs};

/// A configuration as read, with every error and warning found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// What could be read. Only trustworthy when `diagnostics` has no errors.
    pub config: Config,
    /// Errors and warnings, in the order found.
    pub diagnostics: Diagnostics,
}

impl Parsed {
    /// The configuration when there were no errors, else every diagnostic (warnings included).
    pub fn into_result(self) -> Result<(Config, Diagnostics), Diagnostics> {
        if self.diagnostics.has_errors() {
            Err(self.diagnostics)
        } else {
            Ok((self.config, self.diagnostics))
        }
    }
}

/// Read `path` from the file system (includes relative to it).
pub fn parse_file(path: &Path) -> Parsed {
    let name = path.display().to_string();
    match RealFs.read(path) {
        Ok(text) => parse_with(&name, &text, &RealFs),
        Err(e) => {
            let mut diagnostics = Diagnostics::default();
            let file: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
            diagnostics.error(&Span::new(&file, 1, 1), format!("cannot read {name}: {e}"));
            Parsed {
                config: Config::default(),
                diagnostics,
            }
        }
    }
}

/// Read configuration text named `name`; includes are read from the file system relative to
/// `name`'s directory.
pub fn parse_str(name: &str, text: &str) -> Parsed {
    parse_with(name, text, &RealFs)
}

/// Read configuration text named `name`, taking included files from `fs`.
pub fn parse_with(name: &str, text: &str, fs: &dyn FileSource) -> Parsed {
    let mut diagnostics = Diagnostics::default();
    let nodes = syntax::parse_tree(name, text, fs, &mut diagnostics);
    let config = parser::interpret(&nodes, &mut diagnostics);
    Parsed {
        config,
        diagnostics,
    }
}
