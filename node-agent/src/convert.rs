//! The `convert` command: keepalived.conf → VirtualIP (and Secret) YAML.
//!
//! YAML goes to stdout, warnings (and the renames of instances to DNS-1123 names) to stderr as
//! `file:line:column: warning: message`. With any error nothing is printed on stdout, every error
//! is listed as `file:line:column: message`, and the exit status is non-zero.

use std::path::{Path, PathBuf};

use keepalived::cluster::{NodeConfig, convert_cluster};
use keepalived::convert::{ConvertOptions, convert, dns1123_label, to_yaml};
use keepalived::{Config, Diagnostics, FileSource, Parsed, RealFs, parse_with};

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

impl Output {
    fn failed(stderr: String) -> Self {
        Output {
            stdout: String::new(),
            stderr,
            success: false,
        }
    }
}

/// Run `convert` for the parsed command line.
pub fn run(args: &ConvertArgs) -> Output {
    let files: Vec<(String, Option<String>)> = args
        .files
        .iter()
        .map(|f| (f.display().to_string(), None))
        .collect();
    convert_files(
        &args.files,
        &files,
        &RealFs,
        args.node.as_deref(),
        &args.node_names,
        args.namespace.as_deref(),
    )
}

/// Convert configuration text named `name` (includes come from `fs`); what [`run`] does for
/// one file after reading it.
pub fn convert_text(
    name: &str,
    text: &str,
    fs: &dyn FileSource,
    node: Option<&str>,
    namespace: Option<&str>,
) -> Output {
    convert_files(
        &[PathBuf::from(name)],
        &[(name.to_string(), Some(text.to_string()))],
        fs,
        node,
        &[],
        namespace,
    )
}

/// [`convert_text`] with includes from the file system.
pub fn convert_str(name: &str, text: &str, node: Option<&str>, namespace: Option<&str>) -> Output {
    convert_text(name, text, &RealFs, node, namespace)
}

/// Several nodes' files given as (name, text), includes from `fs`.
pub fn convert_many(
    files: &[(&str, &str)],
    fs: &dyn FileSource,
    node_names: &[String],
    namespace: Option<&str>,
) -> Output {
    let paths: Vec<PathBuf> = files.iter().map(|(n, _)| PathBuf::from(n)).collect();
    let texts: Vec<(String, Option<String>)> = files
        .iter()
        .map(|(n, t)| (n.to_string(), Some(t.to_string())))
        .collect();
    convert_files(&paths, &texts, fs, None, node_names, namespace)
}

/// A Kubernetes node name: a DNS-1123 subdomain (lowercase letters, digits, `-` and `.`,
/// at most 253 characters, alphanumeric at both ends).
fn valid_node_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 253
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `texts` holds each file's name and text, or `None` to read it from the file system.
fn convert_files(
    paths: &[PathBuf],
    texts: &[(String, Option<String>)],
    fs: &dyn FileSource,
    node: Option<&str>,
    node_names: &[String],
    namespace: Option<&str>,
) -> Output {
    let mut stderr = String::new();
    let mut bad_args = false;
    if let Some(ns) = namespace
        && dns1123_label(ns) != ns
    {
        stderr.push_str(&format!(
            "--namespace: {ns:?} is not a valid namespace name (lowercase letters, digits and '-', at most 63)\n"
        ));
        bad_args = true;
    }
    for n in node
        .iter()
        .copied()
        .chain(node_names.iter().map(String::as_str))
    {
        if !valid_node_name(n) {
            stderr.push_str(&format!(
                "--node/--node-names: {n:?} is not a valid node name (lowercase letters, digits, '-' and '.', at most 253)\n"
            ));
            bad_args = true;
        }
    }
    if !node_names.is_empty() && node_names.len() != paths.len() {
        stderr.push_str(&format!(
            "--node-names: {} names for {} files; give one node name per file, in order\n",
            node_names.len(),
            paths.len()
        ));
        bad_args = true;
    }
    if node.is_some() && paths.len() > 1 {
        stderr.push_str(
            "--node names one node: with several files, name each with --node-names n1,n2,...\n",
        );
        bad_args = true;
    }
    let unique: std::collections::BTreeSet<&String> = node_names.iter().collect();
    if unique.len() != node_names.len() {
        stderr.push_str("--node-names: a node name is given twice\n");
        bad_args = true;
    }

    let parsed: Vec<Parsed> = paths
        .iter()
        .zip(texts)
        .map(|(path, (name, text))| match text {
            None => keepalived::parse_file(path),
            Some(text) => parse_with(name, text, fs),
        })
        .collect();
    let mut diags = Diagnostics::default();
    for p in &parsed {
        diags.extend(p.diagnostics.clone());
    }
    if diags.has_errors() || bad_args {
        stderr.push_str(&diags.to_string());
        return Output::failed(stderr);
    }
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();

    let conversion = if paths.len() == 1 {
        let opts = ConvertOptions {
            namespace: namespace.map(str::to_string),
            node: node
                .map(str::to_string)
                .or_else(|| node_names.first().cloned()),
        };
        convert(&parsed[0].config, &opts)
    } else {
        let names = match node_names_for(&shown, &parsed, node_names, &mut diags) {
            Some(n) => n,
            None => {
                stderr.push_str(&diags.to_string());
                return Output::failed(stderr);
            }
        };
        let nodes: Vec<NodeConfig<'_>> = names
            .iter()
            .zip(&parsed)
            .map(|(n, p)| NodeConfig {
                node: n,
                config: &p.config,
            })
            .collect();
        convert_cluster(&nodes, namespace)
    };
    diags.extend(conversion.diagnostics);
    stderr.push_str(&diags.to_string());
    if diags.has_errors() {
        return Output::failed(stderr);
    }
    match to_yaml(&conversion.items) {
        Ok(yaml) => Output {
            stdout: format!(
                "# Converted from {} by kube-vrrp-agent convert\n{yaml}",
                shown.join(", ")
            ),
            stderr,
            success: true,
        },
        Err(e) => {
            stderr.push_str(&format!("cannot render YAML: {e}\n"));
            Output::failed(stderr)
        }
    }
}

/// The node name of each file: `--node-names`, else every file's `router_id` when each has a
/// distinct one that is a valid node name, else the file names without extension.
fn node_names_for(
    shown: &[String],
    parsed: &[Parsed],
    given: &[String],
    d: &mut Diagnostics,
) -> Option<Vec<String>> {
    if !given.is_empty() {
        return Some(given.to_vec());
    }
    let router_ids: Vec<Option<String>> = parsed
        .iter()
        .map(|p| router_id(&p.config).filter(|r| valid_node_name(r)))
        .collect();
    let distinct: std::collections::BTreeSet<&Option<String>> = router_ids.iter().collect();
    let (names, from): (Vec<String>, &str) =
        if router_ids.iter().all(Option::is_some) && distinct.len() == router_ids.len() {
            (
                router_ids.into_iter().flatten().collect(),
                "global_defs router_id",
            )
        } else {
            (
                shown
                    .iter()
                    .map(|f| {
                        let stem = Path::new(f)
                            .file_stem()
                            .map(|s| s.to_string_lossy().to_string())
                            .unwrap_or_default();
                        dns1123_label(&stem)
                    })
                    .collect(),
                "file name",
            )
        };
    let unique: std::collections::BTreeSet<&String> = names.iter().collect();
    let first_span =
        |i: usize| keepalived::Span::new(&std::sync::Arc::from(shown[i].as_str()), 1, 1);
    if unique.len() != names.len() {
        d.error(
            &first_span(0),
            "cannot tell the nodes apart (their router_id or file names are the same): name them with --node-names n1,n2,...",
        );
        return None;
    }
    for (i, n) in names.iter().enumerate() {
        d.warning(
            &first_span(i),
            format!("this file is node {n} (from its {from}); name the nodes with --node-names n1,n2,... if that is not the Kubernetes node name"),
        );
    }
    Some(names)
}

fn router_id(c: &Config) -> Option<String> {
    c.global.router_id.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = "vrrp_instance VI_1 {\n  state MASTER\n  interface eth0\n  virtual_router_id 51\n  priority 150\n  virtual_ipaddress {\n    192.0.2.200/24\n  }\n}\n";

    #[test]
    fn converts_with_defaults_and_reports_the_rename() {
        let out = convert_str("k.conf", BASIC, None, None);
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
        let out = convert_str("k.conf", BASIC, Some("node-a"), Some("web"));
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
            None,
        );
        assert!(!out.success);
        assert!(out.stdout.is_empty());
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(
            lines,
            vec![
                "bad.conf:2:12: `priority` must be an integer from 1 to 255, not \"300\"",
                "bad.conf:3:3: warning: unknown keyword `bogus` in vrrp_instance A; ignored, as keepalived ignores keywords it does not know",
                "bad.conf:1:1: vrrp_instance A has no virtual_router_id",
                "bad.conf:1:1: vrrp_instance A has no virtual_ipaddress; at least one address is needed",
            ]
        );
    }

    #[test]
    fn bad_namespace_is_rejected() {
        let out = convert_str("k.conf", BASIC, None, Some("Bad_NS"));
        assert!(!out.success);
        assert!(out.stdout.is_empty());
        assert!(
            out.stderr
                .starts_with("--namespace: \"Bad_NS\" is not a valid namespace name")
        );
    }
}
