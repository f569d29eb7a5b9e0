//! The `convert` command: keepalived.conf → VirtualIP (and Secret) YAML.
//!
//! YAML goes to stdout, warnings (and the renames of instances to DNS-1123 names) to stderr as
//! `file:line:column: warning: message`. With any error nothing is printed on stdout, every error
//! is listed as `file:line:column: message`, and the exit status is non-zero.

use std::path::Path;

use keepalived::convert::{ConvertOptions, convert, dns1123_label, to_yaml};
use keepalived::{FileSource, Parsed, RealFs, parse_file, parse_with};

use crate::cli::ConvertArgs;

/// What the command prints and whether it succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// YAML (empty on failure).
    pub stdout: String,
    /// Diagnostics, one per line.
    pub stderr: String,
    /// False when there was at least one error.
    pub success: bool,
}

/// Run `convert` for the parsed command line.
pub fn run(args: &ConvertArgs) -> Output {
    let parsed = parse_file(&args.file);
    finish(&args.file, parsed, args.node.as_deref(), &args.namespace)
}

/// Convert configuration text named `name` (includes come from `fs`); what [`run`] does after
/// reading the file.
pub fn convert_text(
    name: &str,
    text: &str,
    fs: &dyn FileSource,
    node: Option<&str>,
    namespace: &str,
) -> Output {
    finish(Path::new(name), parse_with(name, text, fs), node, namespace)
}

/// [`convert_text`] with includes from the file system.
pub fn convert_str(name: &str, text: &str, node: Option<&str>, namespace: &str) -> Output {
    convert_text(name, text, &RealFs, node, namespace)
}

fn finish(file: &Path, parsed: Parsed, node: Option<&str>, namespace: &str) -> Output {
    let mut stderr = String::new();
    let mut bad_args = false;
    if dns1123_label(namespace) != namespace {
        stderr.push_str(&format!(
            "--namespace: {namespace:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)\n"
        ));
        bad_args = true;
    }
    if let Some(n) = node
        && (n.is_empty() || n.len() > 253)
    {
        stderr.push_str(&format!(
            "--node: {n:?} is not a valid node name (1 to 253 characters)\n"
        ));
        bad_args = true;
    }
    let mut diags = parsed.diagnostics;
    if !diags.has_errors() {
        let opts = ConvertOptions {
            namespace: namespace.to_string(),
            node: node.map(str::to_string),
        };
        let conversion = convert(&parsed.config, &opts);
        diags.extend(conversion.diagnostics);
        if !diags.has_errors() && !bad_args {
            return match to_yaml(&conversion.items) {
                Ok(yaml) => {
                    stderr.push_str(&diags.to_string());
                    Output {
                        stdout: format!(
                            "# Converted from {} by kube-vrrp-agent convert\n{yaml}",
                            file.display()
                        ),
                        stderr,
                        success: true,
                    }
                }
                Err(e) => {
                    stderr.push_str(&format!("{}: cannot render YAML: {e}\n", file.display()));
                    Output {
                        stdout: String::new(),
                        stderr,
                        success: false,
                    }
                }
            };
        }
    }
    stderr.push_str(&diags.to_string());
    Output {
        stdout: String::new(),
        stderr,
        success: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = "vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 51\n  priority 150\n  virtual_ipaddress {\n    192.0.2.200/24\n  }\n}\n";

    #[test]
    fn converts_with_defaults_and_reports_the_rename() {
        let out = convert_str("k.conf", BASIC, None, "default");
        assert!(out.success, "{}", out.stderr);
        assert!(
            out.stdout
                .starts_with("# Converted from k.conf by kube-vrrp-agent convert\n---\n")
        );
        assert!(out.stdout.contains("name: vi-1\n"));
        assert!(out.stdout.contains("  priority: 150\n  state: MASTER\n"));
        assert!(out.stdout.contains("  version: 2\n"));
        assert!(!out.stdout.contains("nodes:"));
        assert_eq!(
            out.stderr,
            "k.conf:1:1: warning: vrrp_instance VI_1 becomes VirtualIP vi-1 (Kubernetes names are DNS-1123 labels)\n"
        );
    }

    #[test]
    fn node_flag_turns_priority_and_state_into_an_override() {
        let out = convert_str("k.conf", BASIC, Some("node-a"), "web");
        assert!(out.success, "{}", out.stderr);
        assert!(out.stdout.contains("  namespace: web\n"));
        assert!(
            out.stdout
                .contains("  nodes:\n  - name: node-a\n    priority: 150\n    state: MASTER\n")
        );
        assert!(!out.stdout.contains("\n  priority: 150"));
    }

    #[test]
    fn errors_are_listed_with_positions_and_nothing_is_printed() {
        let out = convert_str(
            "bad.conf",
            "vrrp_instance A {\n  priority 300\n  bogus 1\n}\n",
            None,
            "default",
        );
        assert!(!out.success);
        assert!(out.stdout.is_empty());
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines,
            vec![
                "bad.conf:2:12: `priority` must be an integer from 1 to 255, not \"300\"",
                "bad.conf:3:3: unknown keyword `bogus` in vrrp_instance A",
                "bad.conf:1:1: vrrp_instance A has no virtual_router_id",
                "bad.conf:1:1: vrrp_instance A has no virtual_ipaddress; at least one address is needed",
            ]
        );
    }

    #[test]
    fn bad_namespace_is_rejected() {
        let out = convert_str("k.conf", BASIC, None, "Bad_NS");
        assert!(!out.success);
        assert!(out.stdout.is_empty());
        assert!(
            out.stderr
                .starts_with("--namespace: \"Bad_NS\" is not a valid namespace name")
        );
    }
}
