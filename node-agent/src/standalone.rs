//! Standalone mode's configuration: a keepalived.conf resolved for this host.
//!
//! Parsing and resolution live in the `keepalived` crate (`node-agent/keepalived/`); this
//! reports warnings to the log and turns errors (every one, as `file:line:column: message`)
//! into one [`Error`].

use std::path::Path;

use crds::ResolvedInstance;
use crds::resolve::NodeFacts;

use crate::Error;

/// Read `path` and resolve its instances for `host`.
pub fn load(path: &Path, host: &NodeFacts) -> Result<Vec<ResolvedInstance>, Error> {
    match keepalived::standalone::load(path, host) {
        Ok((instances, warnings)) => {
            for w in warnings.warnings() {
                tracing::warn!("{w}");
            }
            Ok(instances)
        }
        Err(diags) => {
            let lines: Vec<String> = diags.errors().map(ToString::to_string).collect();
            Err(Error::Config(format!(
                "{} is not usable:\n{}",
                path.display(),
                lines.join("\n")
            )))
        }
    }
}
