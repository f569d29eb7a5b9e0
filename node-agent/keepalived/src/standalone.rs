//! Standalone mode's input: a keepalived.conf resolved for this host into the
//! [`ResolvedInstance`]s the agent runs, with no cluster involved.
//!
//! The path is the same as in a cluster: the configuration becomes VirtualIP specs
//! ([`super::convert`], with this host as the node, so its priority and state are this host's),
//! then [`crds::resolve::resolve`] applies the remaining defaults against the host's interfaces.
//! Members of a `vrrp_sync_group` carry the group's name in `sync_group`.

use std::path::Path;

use super::convert::{ConvertOptions, convert_for};
use super::diag::Diagnostics;
use super::model::Config;
use super::parse_file;
use crds::resolve::{NodeFacts, ResolveInput, resolve};
use crds::vrrpnode::ResolvedInstance;

/// The instances of `cfg` as this host runs them, in file order, with the warnings noticed; or
/// every problem (errors and warnings) when any instance cannot run.
pub fn resolve_config(
    cfg: &Config,
    host: &NodeFacts,
) -> Result<(Vec<ResolvedInstance>, Diagnostics), Diagnostics> {
    let opts = ConvertOptions {
        namespace: None,
        node: Some(host.name.clone()),
    };
    let conversion = convert_for(cfg, &opts, false);
    let mut d = conversion.diagnostics;
    let mut out = Vec::new();
    for (item, inst) in conversion.items.iter().zip(&cfg.instances) {
        let input = ResolveInput {
            instance_name: inst.name.clone(),
            virtual_ip: None,
            spec: &item.virtual_ip.spec,
            allocated_vrid: None,
            node: host,
            default_priority: None,
            peer_node_addresses: Vec::new(),
            auth_pass: item.auth_pass.clone().map(Into::into),
        };
        match resolve(&input) {
            Ok(r) => out.push(r),
            Err(problems) => {
                for p in problems.iter() {
                    d.error(
                        &inst.span,
                        format!("vrrp_instance {}: {}: {}", inst.name, p.path, p.message),
                    );
                }
            }
        }
    }
    if d.has_errors() { Err(d) } else { Ok((out, d)) }
}

/// Read `path` and resolve it for `host`: what `kube-vrrp-agent standalone --config FILE` runs.
/// Parse warnings are returned with the instances; any error fails the whole file.
pub fn load(
    path: &Path,
    host: &NodeFacts,
) -> Result<(Vec<ResolvedInstance>, Diagnostics), Diagnostics> {
    let (cfg, mut warnings) = parse_file(path).into_result()?;
    match resolve_config(&cfg, host) {
        Ok((instances, more)) => {
            warnings.extend(more);
            Ok((instances, warnings))
        }
        Err(errors) => {
            warnings.extend(errors);
            Err(warnings)
        }
    }
}
