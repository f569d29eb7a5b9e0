//! The cluster admin's script policy: whether a VirtualIP may make the agents run commands.
//!
//! In keepalived only the host's administrator writes `vrrp_script` and `notify*` lines. In a
//! cluster whoever may create a VirtualIP writes them, and the agents run them as root on every
//! node they are placed on. So in cluster mode commands run only where this policy, set by the
//! cluster admin (chart values `agent.scripts.*`, operator flags `--scripts-*`), allows them:
//!
//! - `allowed: false` (the default): no VirtualIP may carry a command.
//! - `allowed: true`, plus two optional allow-lists:
//!   - `namespaces`: the VirtualIP's namespace must be listed (empty: any namespace);
//!   - `paths`: every command must run a listed program directly: its first word is an
//!     absolute path equal to an entry, or under an entry that ends in `/`, with no `.` or `..`
//!     component, and the line holds no shell syntax or quoting at all, so the agent executes
//!     that file with plain arguments and no shell in between (empty: any command).
//!
//! Commands are `track.scripts[].script`, `notify.*` and `syncGroupNotify.*`. `track.http`
//! (a GET from the node, only its status code is used), `track.files` (a number read from a
//! file) and the other trackers run no program and are not covered.
//!
//! The decision is pure ([`ScriptPolicy::check`]); the operator refuses a VirtualIP that fails
//! it (condition reason [`REASON_SCRIPTS_NOT_ALLOWED`], deployed to no node), the chart's
//! ValidatingAdmissionPolicy refuses it at apply time when scripts are disallowed, and the agent
//! refuses to run any command in cluster mode unless it was started with `--allow-scripts`.

use crate::validate::Problems;
use crate::virtualip::{Notify, VirtualIPSpec};

/// Condition reason of a VirtualIP refused by the policy.
pub const REASON_SCRIPTS_NOT_ALLOWED: &str = "ScriptsNotAllowed";

/// Characters that make the agent hand a command line to `/bin/sh`, or that quote: none may
/// appear in a command checked against the path allow-list.
const SHELL_CHARS: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', ']', '{', '}', '\'', '"', '\\',
    '#', '~', '\n', '\r', '!',
];

/// What the cluster admin allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScriptPolicy {
    /// Commands may run at all.
    pub allowed: bool,
    /// Namespaces whose VirtualIPs may carry commands (empty: all).
    pub namespaces: Vec<String>,
    /// Programs commands may run: absolute paths, an entry ending in `/` allows everything
    /// under that directory (empty: any command).
    pub paths: Vec<String>,
}

impl ScriptPolicy {
    /// A policy that allows every command (standalone mode, tests).
    pub fn allow_all() -> Self {
        Self {
            allowed: true,
            namespaces: Vec::new(),
            paths: Vec::new(),
        }
    }

    /// Every reason the VirtualIP `namespace`/`spec` breaks the policy, each naming the field.
    /// Empty when it carries no command or every command is allowed.
    pub fn check(&self, namespace: &str, spec: &VirtualIPSpec) -> Problems {
        let mut problems = Problems::default();
        let commands = commands(spec);
        if commands.is_empty() {
            return problems;
        }
        if !self.allowed {
            for (path, _) in &commands {
                problems.push(
                    path.clone(),
                    "commands are not allowed in this cluster (the admin sets agent.scripts.allowed); the VirtualIP is not deployed",
                );
            }
            return problems;
        }
        if !self.namespaces.is_empty() && !self.namespaces.iter().any(|n| n == namespace) {
            for (path, _) in &commands {
                problems.push(
                    path.clone(),
                    format!(
                        "commands are not allowed in namespace {namespace:?} (agent.scripts.allowedNamespaces); the VirtualIP is not deployed"
                    ),
                );
            }
            return problems;
        }
        if !self.paths.is_empty() {
            for (path, cmd) in &commands {
                if let Err(why) = self.program_allowed(cmd) {
                    problems.push(
                        path.clone(),
                        format!("{why}; the VirtualIP is not deployed"),
                    );
                }
            }
        }
        problems
    }

    /// Whether `cmd` runs an allowed program directly.
    fn program_allowed(&self, cmd: &str) -> Result<(), String> {
        if let Some(c) = cmd.chars().find(|c| SHELL_CHARS.contains(c)) {
            return Err(format!(
                "{c:?} is shell syntax or quoting, which agent.scripts.allowedPaths does not allow"
            ));
        }
        let program = cmd.split_whitespace().next().unwrap_or_default();
        if !program.starts_with('/') {
            return Err(format!(
                "the program {program:?} is not an absolute path (agent.scripts.allowedPaths)"
            ));
        }
        if program.split('/').any(|c| c == "." || c == "..") {
            return Err(format!(
                "the program {program:?} has a . or .. component (agent.scripts.allowedPaths)"
            ));
        }
        let listed = self.paths.iter().any(|p| {
            if p.ends_with('/') {
                program.starts_with(p.as_str()) && program.len() > p.len()
            } else {
                program == p
            }
        });
        if listed {
            Ok(())
        } else {
            Err(format!(
                "the program {program:?} is not in agent.scripts.allowedPaths"
            ))
        }
    }
}

/// Every command a VirtualIP carries, with its field path.
pub fn commands(spec: &VirtualIPSpec) -> Vec<(String, &str)> {
    let mut out: Vec<(String, &str)> = Vec::new();
    if let Some(t) = &spec.track {
        for (i, s) in t.scripts.iter().enumerate() {
            out.push((format!("spec.track.scripts[{i}].script"), s.script.as_str()));
        }
    }
    notify_commands("spec.notify", spec.notify.as_ref(), &mut out);
    notify_commands(
        "spec.syncGroupNotify",
        spec.sync_group_notify.as_ref(),
        &mut out,
    );
    out
}

fn notify_commands<'a>(prefix: &str, n: Option<&'a Notify>, out: &mut Vec<(String, &'a str)>) {
    let Some(n) = n else { return };
    for (field, v) in [
        ("master", &n.master),
        ("backup", &n.backup),
        ("fault", &n.fault),
        ("stop", &n.stop),
        ("any", &n.any),
    ] {
        if let Some(cmd) = v {
            out.push((format!("{prefix}.{field}"), cmd.as_str()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtualip::{Track, TrackScript};

    fn spec_with(scripts: &[&str], notify_master: Option<&str>) -> VirtualIPSpec {
        let mut s: VirtualIPSpec = serde_json::from_value(serde_json::json!({
            "addresses": ["192.0.2.10/24"],
        }))
        .unwrap();
        if !scripts.is_empty() {
            s.track = Some(Track {
                scripts: scripts
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        serde_json::from_value::<TrackScript>(serde_json::json!({
                            "name": format!("s{i}"),
                            "script": c,
                        }))
                        .unwrap()
                    })
                    .collect(),
                ..Default::default()
            });
        }
        if let Some(m) = notify_master {
            s.notify = Some(Notify {
                master: Some(m.into()),
                ..Default::default()
            });
        }
        s
    }

    fn paths(p: &Problems) -> Vec<String> {
        p.iter().map(|p| p.path.clone()).collect()
    }

    #[test]
    fn no_command_is_always_fine() {
        let s = spec_with(&[], None);
        assert!(ScriptPolicy::default().check("team-a", &s).is_empty());
    }

    #[test]
    fn disallowed_refuses_every_command_naming_its_field() {
        let s = spec_with(&["/bin/true", "/bin/false"], Some("/bin/echo hi"));
        let p = ScriptPolicy::default().check("team-a", &s);
        assert_eq!(
            paths(&p),
            [
                "spec.track.scripts[0].script",
                "spec.track.scripts[1].script",
                "spec.notify.master"
            ]
        );
        assert!(p.to_string().contains("agent.scripts.allowed"), "{p}");
        // syncGroupNotify counts too.
        let mut s = spec_with(&[], None);
        s.sync_group = Some("g".into());
        s.sync_group_notify = Some(Notify {
            any: Some("/bin/true".into()),
            ..Default::default()
        });
        assert_eq!(
            paths(&ScriptPolicy::default().check("team-a", &s)),
            ["spec.syncGroupNotify.any"]
        );
    }

    #[test]
    fn allowed_without_lists_allows_anything() {
        let s = spec_with(&["/bin/sh -c 'id > /tmp/x'"], Some("logger $STATE"));
        assert!(ScriptPolicy::allow_all().check("team-a", &s).is_empty());
    }

    #[test]
    fn namespace_list() {
        let pol = ScriptPolicy {
            allowed: true,
            namespaces: vec!["infra".into()],
            paths: vec![],
        };
        let s = spec_with(&["/bin/true"], None);
        assert!(pol.check("infra", &s).is_empty());
        let p = pol.check("team-a", &s);
        assert_eq!(paths(&p), ["spec.track.scripts[0].script"]);
        assert!(p.to_string().contains("\"team-a\""), "{p}");
    }

    #[test]
    fn path_list_table() {
        let pol = ScriptPolicy {
            allowed: true,
            namespaces: vec![],
            paths: vec!["/etc/kube-vrrp/scripts/".into(), "/usr/bin/true".into()],
        };
        let ok = [
            "/usr/bin/true",
            "/etc/kube-vrrp/scripts/check_api",
            "/etc/kube-vrrp/scripts/check_api --port=6443 -v",
            "/etc/kube-vrrp/scripts/sub/dir/x",
        ];
        for c in ok {
            assert!(
                pol.check("any", &spec_with(&[c], None)).is_empty(),
                "{c} should be allowed"
            );
        }
        let refused = [
            ("/bin/sh -c id", "not in agent.scripts.allowedPaths"),
            ("/usr/bin/true; id", "shell syntax"),
            ("/usr/bin/true && id", "shell syntax"),
            ("/usr/bin/true $(id)", "shell syntax"),
            ("/usr/bin/true `id`", "shell syntax"),
            ("/usr/bin/true > /etc/passwd", "shell syntax"),
            ("'/usr/bin/true'", "shell syntax"),
            ("/usr/bin/true\nid", "shell syntax"),
            ("true", "not an absolute path"),
            ("/etc/kube-vrrp/scripts/../../../bin/sh", ". or .."),
            (
                "/etc/kube-vrrp/scripts/",
                "not in agent.scripts.allowedPaths",
            ),
            (
                "/etc/kube-vrrp/scriptsX",
                "not in agent.scripts.allowedPaths",
            ),
            ("/usr/bin/true2", "not in agent.scripts.allowedPaths"),
            ("X=1 /usr/bin/true", "not an absolute path"),
        ];
        for (c, why) in refused {
            let p = pol.check("any", &spec_with(&[], Some(c)));
            assert_eq!(paths(&p), ["spec.notify.master"], "{c}");
            assert!(p.to_string().contains(why), "{c}: {p}");
        }
    }
}
