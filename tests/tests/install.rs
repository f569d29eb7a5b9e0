//! Offline checks of the install story: the Helm chart (`charts/kube-vrrp`), the plain manifests
//! and kustomization (`deploy/`), the control-plane static pod and its VirtualIP
//! (`deploy/control-plane/`), the image build files, and the CRDs they ship.
//!
//! Uses the real tools, pinned: helm 4.3.1, kubectl 1.37.1 (its built-in kustomize) and
//! `kubernetes-validate` (strict, the schemas of the oldest supported Kubernetes, 1.31, and of the
//! newest it knows, 1.37). Install them first with
//! `bash tests/tools/install-helm.sh` (into `tests/tools/bin`, or set `KUBE_VRRP_TOOLS_DIR`);
//! without them every test here fails and says so.
//!
//! Regenerate `deploy/manifests/kube-vrrp.yaml` after a chart change with
//! `UPDATE_MANIFESTS=1 cargo test -p kube-vrrp-tests --test install`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize as _;
use serde_yaml::Value;

/// Release name and namespace used for every render (and for `deploy/`).
const RELEASE: &str = "kube-vrrp";
const NAMESPACE: &str = "kube-vrrp";
/// Kubernetes version the chart is rendered for and the objects are validated against: the
/// oldest the chart supports (Chart.yaml `kubeVersion`). Not 1.30: the CRDs' CEL rules use the
/// IP/CIDR library (`isIP`, `isCIDR`, `ip()`, `cidr()`), which API servers accept in new CRDs
/// only from 1.31 on.
const KUBE_VERSION: &str = "1.31.0";
/// The newest Kubernetes the pinned kubernetes-validate has schemas for.
const NEWEST_KUBE_VERSION: &str = "1.37.0";
const INSTALL_HINT: &str = "run `bash tests/tools/install-helm.sh` first: it installs the pinned \
     helm 4.3.1, kubectl 1.37.1 and kubernetes-validate into tests/tools/bin (or set \
     KUBE_VRRP_TOOLS_DIR to a directory holding them)";
const MANIFEST_HEADER: &str = "# Generated from charts/kube-vrrp with default values — do not edit.\n\
# Regenerate: UPDATE_MANIFESTS=1 cargo test -p kube-vrrp-tests --test install\n\
# Equivalent to: helm template kube-vrrp charts/kube-vrrp --namespace kube-vrrp --include-crds \
--kube-version 1.31.0\n";

// ---------------------------------------------------------------------------------------------
// Tools and rendering

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts/kube-vrrp")
}

/// Finds a pinned tool: `$KUBE_VRRP_TOOLS_DIR`, then `tests/tools/bin`, then `PATH`.
fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("KUBE_VRRP_TOOLS_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(repo_root().join("tests/tools/bin"));
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("`{name}` not found in KUBE_VRRP_TOOLS_DIR, tests/tools/bin or PATH: {INSTALL_HINT}");
}

fn run(program: &Path, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", program.display()))
}

/// helm, checked to be the pinned major version (error texts and schema handling differ).
fn helm() -> PathBuf {
    let helm = tool("helm");
    let out = run(&helm, &["version", "--short"]);
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && version.starts_with("v4."),
        "{} is not helm 4 (`helm version` said {version:?}): {INSTALL_HINT}",
        helm.display()
    );
    helm
}

/// `helm template` of the chart with extra arguments; panics with helm's stderr on failure.
fn render_text(extra: &[&str]) -> String {
    let out = try_render(extra);
    assert!(
        out.status.success(),
        "helm template {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("helm output is UTF-8")
}

fn try_render(extra: &[&str]) -> Output {
    try_render_for(KUBE_VERSION, extra)
}

fn try_render_for(kube_version: &str, extra: &[&str]) -> Output {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().expect("UTF-8 path"),
        "--namespace",
        NAMESPACE,
        "--kube-version",
        kube_version,
    ];
    args.extend_from_slice(extra);
    run(&helm(), &args)
}

fn parse_docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("rendered YAML parses"))
        .filter(|v| !v.is_null())
        .collect()
}

/// `helm template` for another Kubernetes version; panics with helm's stderr on failure.
fn render_for(kube_version: &str, extra: &[&str]) -> Vec<Value> {
    let out = try_render_for(kube_version, extra);
    assert!(
        out.status.success(),
        "helm template --kube-version {kube_version} {extra:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_docs(&String::from_utf8_lossy(&out.stdout))
}

fn render(extra: &[&str]) -> Vec<Value> {
    parse_docs(&render_text(extra))
}

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or("")
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or("")
}

fn find<'a>(objs: &'a [Value], k: &str, n: &str) -> &'a Value {
    objs.iter()
        .find(|o| kind(o) == k && name(o) == n)
        .unwrap_or_else(|| panic!("no {k}/{n} rendered; got {:?}", summary(objs)))
}

fn all_of<'a>(objs: &'a [Value], k: &str) -> Vec<&'a Value> {
    objs.iter().filter(|o| kind(o) == k).collect()
}

fn summary(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| format!("{}/{}", kind(o), name(o)))
        .collect()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A scratch file under Cargo's per-target tmp dir, unique per process and call.
fn scratch(label: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "install-{label}-{}-{}.yaml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, contents).expect("write scratch file");
    path
}

/// Runs kubernetes-validate (strict, Kubernetes `version`) over the documents and returns the
/// number of objects it validated. Kinds it has no schema for are an error except those in
/// `no_schema_ok` (checked by the caller instead).
fn kubernetes_validate(objs: &[Value], no_schema_ok: &[&str]) -> usize {
    kubernetes_validate_for(KUBE_VERSION, objs, no_schema_ok)
}

fn kubernetes_validate_for(version: &str, objs: &[Value], no_schema_ok: &[&str]) -> usize {
    let text: String = objs
        .iter()
        .map(|o| format!("---\n{}", serde_yaml::to_string(o).expect("serialise")))
        .collect();
    let path = scratch("validate", &text);
    let kv = tool("kubernetes-validate");
    let out = run(
        &kv,
        &[
            "--kubernetes-version",
            version,
            "--strict",
            path.to_str().expect("UTF-8 path"),
        ],
    );
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report = format!("{stdout}{stderr}");
    assert!(
        out.status.success() && !report.contains("ERROR"),
        "kubernetes-validate rejected the rendered objects:\n{report}"
    );
    let mut expected_passes = 0;
    for obj in objs {
        if no_schema_ok.contains(&kind(obj)) {
            continue;
        }
        expected_passes += 1;
        let line = format!(
            "passed for resource {}/{}",
            kind(obj).to_lowercase(),
            name(obj)
        );
        assert!(
            report.contains(&line),
            "kubernetes-validate did not validate {}/{}:\n{report}",
            kind(obj),
            name(obj)
        );
    }
    for line in report.lines().filter(|l| l.contains("WARN")) {
        assert!(
            no_schema_ok
                .iter()
                .any(|k| line.contains(&format!("kind {k} "))),
            "unexpected kubernetes-validate warning: {line}"
        );
    }
    expected_passes
}

// ---------------------------------------------------------------------------------------------
// CRDs

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn chart_crds_are_copies_of_the_generated_crds() {
    let names = |dir: &str| -> BTreeSet<String> {
        std::fs::read_dir(repo_root().join(dir))
            .unwrap_or_else(|e| panic!("cannot list {dir}: {e}"))
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    let generated = names("crds");
    assert_eq!(
        names("charts/kube-vrrp/crds"),
        generated,
        "charts/kube-vrrp/crds must hold exactly the CRD files of crds/"
    );
    assert!(generated.contains("virtualip.yaml") && generated.contains("vrrpnode.yaml"));
    for file in &generated {
        assert!(
            read(&format!("crds/{file}")) == read(&format!("charts/kube-vrrp/crds/{file}")),
            "charts/kube-vrrp/crds/{file} differs from crds/{file}: copy it with \
             `cp crds/*.yaml charts/kube-vrrp/crds/`"
        );
    }
}

/// Keys a structural (apiextensions.k8s.io/v1) schema node may carry.
const SCHEMA_KEYS: &[&str] = &[
    "description",
    "type",
    "format",
    "title",
    "default",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "nullable",
    "example",
    "externalDocs",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];
const TYPES: &[&str] = &["object", "array", "string", "integer", "number", "boolean"];
const JUNCTORS: &[&str] = &["allOf", "anyOf", "oneOf", "not"];

fn is_true(v: &Value) -> bool {
    v.as_bool() == Some(true)
}

/// Checks one schema node (and its children) against the Kubernetes structural-schema rules
/// and the placement rules of the `x-kubernetes-*` extensions. `in_junctor`: inside
/// allOf/anyOf/oneOf/not, where types, defaults and descriptions are forbidden.
fn check_schema(node: &Value, path: &str, in_junctor: bool, errors: &mut Vec<String>) {
    let Some(map) = node.as_mapping() else {
        errors.push(format!("{path}: schema node is not a mapping"));
        return;
    };
    for key in map.keys() {
        let key = key.as_str().unwrap_or("<non-string>");
        if !SCHEMA_KEYS.contains(&key) {
            errors.push(format!("{path}: `{key}` is not allowed in a CRD schema"));
        }
    }
    let ty = node["type"].as_str();
    let int_or_string = is_true(&node["x-kubernetes-int-or-string"]);
    let preserve = is_true(&node["x-kubernetes-preserve-unknown-fields"]);
    if in_junctor {
        for key in [
            "type",
            "description",
            "default",
            "additionalProperties",
            "nullable",
        ] {
            if map.contains_key(key) {
                errors.push(format!(
                    "{path}: `{key}` inside allOf/anyOf/oneOf/not (not structural)"
                ));
            }
        }
    } else if let Some(t) = ty {
        if !TYPES.contains(&t) {
            errors.push(format!("{path}: unknown type `{t}`"));
        }
        if int_or_string {
            errors.push(format!(
                "{path}: x-kubernetes-int-or-string must not have a type"
            ));
        }
    } else if !int_or_string && !preserve {
        errors.push(format!(
            "{path}: no `type` (structural schemas need one on every field and item)"
        ));
    }
    if node.get("properties").is_some() && node.get("additionalProperties").is_some() {
        errors.push(format!(
            "{path}: properties and additionalProperties are mutually exclusive"
        ));
    }
    if let Some(list_type) = node.get("x-kubernetes-list-type") {
        if !in_junctor && ty != Some("array") {
            errors.push(format!("{path}: x-kubernetes-list-type on a non-array"));
        }
        match list_type.as_str() {
            Some("atomic") | Some("set") => {
                if node.get("x-kubernetes-list-map-keys").is_some() {
                    errors.push(format!(
                        "{path}: x-kubernetes-list-map-keys needs x-kubernetes-list-type: map"
                    ));
                }
            }
            Some("map") => {
                let keys = strs(&node["x-kubernetes-list-map-keys"]);
                if keys.is_empty() {
                    errors.push(format!(
                        "{path}: x-kubernetes-list-type: map needs x-kubernetes-list-map-keys"
                    ));
                }
                let items = &node["items"];
                if items["type"].as_str() != Some("object") {
                    errors.push(format!("{path}: list-map items must be objects"));
                }
                let required = strs(&items["required"]);
                for key in keys {
                    let field = &items["properties"][key];
                    if field.is_null() {
                        errors.push(format!("{path}: list-map key `{key}` is not an item field"));
                    } else if !matches!(
                        field["type"].as_str(),
                        Some("string") | Some("integer") | Some("number") | Some("boolean")
                    ) {
                        errors.push(format!("{path}: list-map key `{key}` is not a scalar"));
                    }
                    if !required.contains(&key) && field.get("default").is_none() {
                        errors.push(format!(
                            "{path}: list-map key `{key}` must be required or defaulted"
                        ));
                    }
                }
            }
            other => errors.push(format!("{path}: bad x-kubernetes-list-type {other:?}")),
        }
    } else if node.get("x-kubernetes-list-map-keys").is_some() {
        errors.push(format!(
            "{path}: x-kubernetes-list-map-keys without x-kubernetes-list-type: map"
        ));
    }
    if let Some(map_type) = node.get("x-kubernetes-map-type") {
        if !in_junctor && ty != Some("object") {
            errors.push(format!("{path}: x-kubernetes-map-type on a non-object"));
        }
        if !matches!(map_type.as_str(), Some("atomic") | Some("granular")) {
            errors.push(format!("{path}: bad x-kubernetes-map-type {map_type:?}"));
        }
    }
    if is_true(&node["x-kubernetes-embedded-resource"])
        && (ty != Some("object") || (node.get("properties").is_none() && !preserve))
    {
        errors.push(format!(
            "{path}: x-kubernetes-embedded-resource needs type object with properties or \
             x-kubernetes-preserve-unknown-fields"
        ));
    }
    if let Some(rules) = node.get("x-kubernetes-validations") {
        match rules.as_sequence() {
            None => errors.push(format!("{path}: x-kubernetes-validations is not a list")),
            Some(rules) => {
                for (i, rule) in rules.iter().enumerate() {
                    if rule["rule"].as_str().is_none_or(|r| r.trim().is_empty()) {
                        errors.push(format!("{path}: x-kubernetes-validations[{i}] has no rule"));
                    }
                    for key in rule.as_mapping().into_iter().flat_map(|m| m.keys()) {
                        let key = key.as_str().unwrap_or("");
                        if ![
                            "rule",
                            "message",
                            "messageExpression",
                            "reason",
                            "fieldPath",
                            "optionalOldSelf",
                        ]
                        .contains(&key)
                        {
                            errors.push(format!(
                                "{path}: x-kubernetes-validations[{i}] has unknown key `{key}`"
                            ));
                        }
                    }
                    if let Some(reason) = rule.get("reason")
                        && !matches!(
                            reason.as_str(),
                            Some("FieldValueInvalid")
                                | Some("FieldValueForbidden")
                                | Some("FieldValueRequired")
                                | Some("FieldValueDuplicate")
                        )
                    {
                        errors.push(format!(
                            "{path}: x-kubernetes-validations[{i}] has bad reason {reason:?}"
                        ));
                    }
                }
            }
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_mapping) {
        for (k, child) in props {
            let k = k.as_str().unwrap_or("<non-string>");
            check_schema(child, &format!("{path}.{k}"), in_junctor, errors);
        }
    }
    if let Some(required) = node.get("required") {
        let props = node.get("properties").and_then(Value::as_mapping);
        for r in strs(required) {
            if !in_junctor && !props.is_some_and(|p| p.contains_key(r)) && !preserve {
                errors.push(format!("{path}: required field `{r}` is not in properties"));
            }
        }
    }
    match node.get("additionalProperties") {
        Some(Value::Bool(_)) | None => {}
        Some(child) => check_schema(child, &format!("{path}.*"), in_junctor, errors),
    }
    if let Some(items) = node.get("items") {
        if !in_junctor && ty != Some("array") {
            errors.push(format!("{path}: items on a non-array"));
        }
        check_schema(items, &format!("{path}[]"), in_junctor, errors);
    } else if ty == Some("array") && !in_junctor {
        errors.push(format!("{path}: array without items"));
    }
    for j in JUNCTORS {
        let branches: Vec<&Value> = match node.get(*j) {
            None => continue,
            Some(Value::Sequence(s)) => s.iter().collect(),
            Some(v) => vec![v],
        };
        for (i, b) in branches.into_iter().enumerate() {
            // int-or-string's own pattern (anyOf [{type: integer}, {type: string}]) is allowed.
            let is_ios_branch = int_or_string
                && *j == "anyOf"
                && matches!(b["type"].as_str(), Some("integer") | Some("string"))
                && b.as_mapping().is_some_and(|m| m.len() == 1);
            if !is_ios_branch {
                check_schema(b, &format!("{path}.{j}[{i}]"), true, errors);
            }
            // Fields named in a junctor must also be specified outside it.
            if let Some(bp) = b.get("properties").and_then(Value::as_mapping) {
                for k in bp.keys() {
                    let k = k.as_str().unwrap_or("");
                    if node["properties"].get(k).is_none() {
                        errors.push(format!(
                            "{path}.{j}[{i}]: field `{k}` is only specified inside {j}"
                        ));
                    }
                }
            }
        }
    }
}

/// All structural and CRD-level problems of one CRD object.
fn crd_problems(crd: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let spec = &crd["spec"];
    let plural = spec["names"]["plural"].as_str().unwrap_or("");
    let group = spec["group"].as_str().unwrap_or("");
    if name(crd) != format!("{plural}.{group}") {
        errors.push(format!(
            "metadata.name {} is not <plural>.<group> ({plural}.{group})",
            name(crd)
        ));
    }
    let versions = spec["versions"].as_sequence().cloned().unwrap_or_default();
    if versions.is_empty() {
        errors.push("no versions".into());
    }
    let storage = versions.iter().filter(|v| is_true(&v["storage"])).count();
    if storage != 1 {
        errors.push(format!("{storage} storage versions (need exactly 1)"));
    }
    for v in &versions {
        let vname = v["name"].as_str().unwrap_or("?");
        let schema = &v["schema"]["openAPIV3Schema"];
        if schema.is_null() {
            errors.push(format!("{vname}: no openAPIV3Schema"));
            continue;
        }
        if schema["type"].as_str() != Some("object") {
            errors.push(format!("{vname}: root schema type must be object"));
        }
        let metadata = &schema["properties"]["metadata"];
        if let Some(m) = metadata.as_mapping() {
            // Only restrictions of metadata.name / generateName are allowed.
            for (k, _) in m {
                if !["type", "properties"].contains(&k.as_str().unwrap_or("")) {
                    errors.push(format!("{vname}: metadata schema sets {k:?}"));
                }
            }
            for k in metadata["properties"]
                .as_mapping()
                .into_iter()
                .flat_map(|p| p.keys())
            {
                if !["name", "generateName"].contains(&k.as_str().unwrap_or("")) {
                    errors.push(format!("{vname}: metadata schema restricts {k:?}"));
                }
            }
        }
        check_schema(schema, vname, false, &mut errors);
        if let Some(status) = v["subresources"].get("status")
            && !status.as_mapping().is_some_and(|m| m.is_empty())
        {
            errors.push(format!("{vname}: subresources.status must be {{}}"));
        }
        // Printer columns must point at fields the schema has.
        for col in v["additionalPrinterColumns"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            let jp = col["jsonPath"].as_str().unwrap_or("");
            if jp == ".metadata.creationTimestamp" {
                continue;
            }
            let mut node = schema;
            for seg in jp.trim_start_matches('.').split('.') {
                let (field, indexed) = match seg.find('[') {
                    Some(i) => (&seg[..i], true),
                    None => (seg, false),
                };
                node = &node["properties"][field];
                if indexed {
                    node = &node["items"];
                }
            }
            if node.is_null() {
                errors.push(format!(
                    "{vname}: printer column {:?} points at {jp}, which the schema lacks",
                    col["name"]
                ));
            }
        }
    }
    errors
}

#[test]
fn crds_are_structural_and_valid() {
    for file in [
        "crds/virtualip.yaml",
        "crds/vrrpnode.yaml",
        "crds/virtualippool.yaml",
    ] {
        let crd: Value = serde_yaml::from_str(&read(file)).expect("CRD parses");
        assert_eq!(kind(&crd), "CustomResourceDefinition", "{file}");
        let problems = crd_problems(&crd);
        assert!(
            problems.is_empty(),
            "{file} is not a valid structural CRD:\n{}",
            problems.join("\n")
        );
        assert_eq!(kubernetes_validate(&[crd], &[]), 1, "{file}");
    }
}

#[test]
fn structural_check_catches_broken_schemas() {
    let crd: Value = serde_yaml::from_str(
        r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: things.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {plural: things, singular: thing, kind: Thing}
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - {name: Master, type: string, jsonPath: .status.nope}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              untyped: {description: no type here}
              tags:
                type: object
                x-kubernetes-list-type: set
              peers:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [node]
                items:
                  type: object
                  properties:
                    node: {type: string}
              either:
                type: string
                anyOf:
                - type: string
                  description: not allowed here
              ref: {$ref: '#/definitions/x'}
            x-kubernetes-validations:
            - {message: missing the rule}
"#,
    )
    .expect("fixture parses");
    let problems = crd_problems(&crd).join("\n");
    for expected in [
        "v1.spec.untyped: no `type`",
        "v1.spec.tags: x-kubernetes-list-type on a non-array",
        "list-map key `node` must be required or defaulted",
        "`description` inside allOf/anyOf/oneOf/not",
        "`$ref` is not allowed",
        "x-kubernetes-validations[0] has no rule",
        "printer column",
    ] {
        assert!(
            problems.contains(expected),
            "structural check missed {expected:?}; it reported:\n{problems}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Chart: lint, schema validation of values, rendered objects

#[test]
fn helm_lint_passes_for_default_and_non_default_values() {
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for extra in [
        &[][..],
        &[
            "--set",
            "agent.processTracking=true,agent.podTracking=true,serviceMonitor.enabled=true,\
             agent.tolerateControlPlane=true,operator.secretNamespaces={team-a,team-b}",
        ][..],
    ] {
        let mut args = vec![
            "lint",
            "--strict",
            chart,
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
        ];
        args.extend_from_slice(extra);
        let out = run(&helm(), &args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "helm lint {extra:?} failed:\n{text}");
        assert!(
            text.contains("1 chart(s) linted, 0 chart(s) failed"),
            "unexpected helm lint output:\n{text}"
        );
        assert!(
            !text.contains("[WARNING]") && !text.contains("[ERROR]"),
            "helm lint {extra:?} reported problems:\n{text}"
        );
    }
}

#[test]
fn bad_values_are_rejected_by_the_schema_with_a_clear_message() {
    // (--set argument, text the error must contain)
    let cases: &[(&str, &[&str])] = &[
        (
            "agent.terminationGracePeriodSeconds=5",
            &["/agent/terminationGracePeriodSeconds", "minimum"],
        ),
        (
            "agent.procesTracking=true",
            &["/agent", "procesTracking", "not allowed"],
        ),
        ("operator.replicas=0", &["/operator/replicas", "minimum"]),
        (
            "operator.replicas=two",
            &["/operator/replicas", "want integer"],
        ),
        (
            "operator.logFormat=xml",
            &["/operator/logFormat", "json", "text"],
        ),
        (
            "image.pullPolicy=Sometimes",
            &["/image/pullPolicy", "IfNotPresent"],
        ),
        ("image.digest=latest", &["/image/digest", "sha256"]),
        ("image.repository=", &["/image/repository", "minLength"]),
        ("agent.stateDir=relative/dir", &["/agent/stateDir"]),
        (
            "agent.metricsPort=70000",
            &["/agent/metricsPort", "maximum"],
        ),
        ("agent.maxUnavailable=0", &["/agent/maxUnavailable"]),
        (
            "agent.podTracking=maybe",
            &["/agent/podTracking", "want boolean"],
        ),
        (
            "operator.secretNamespaces={Team_A}",
            &["/operator/secretNamespaces/0"],
        ),
        (
            "serviceMonitor.interval=often",
            &["/serviceMonitor/interval"],
        ),
        ("rbac.create=yes", &["/rbac/create", "want boolean"]),
    ];
    for (set, expected) in cases {
        let out = try_render(&["--set", set]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "helm template --set {set} was accepted but must be rejected"
        );
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "--set {set}: rejected, but not by values.schema.json:\n{stderr}"
        );
        for text in *expected {
            assert!(
                stderr.contains(text),
                "--set {set}: the error does not mention {text:?}:\n{stderr}"
            );
        }
    }
}

#[test]
fn default_render_validates_against_kubernetes_1_31_and_1_37() {
    let objs = render(&["--include-crds"]);
    let kinds: BTreeMap<&str, usize> = objs.iter().fold(BTreeMap::new(), |mut m, o| {
        *m.entry(kind(o)).or_default() += 1;
        m
    });
    let expected: BTreeMap<&str, usize> = [
        ("CustomResourceDefinition", 3),
        ("ServiceAccount", 2),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("Role", 5),
        ("RoleBinding", 5),
        ("Service", 2),
        ("Deployment", 1),
        ("DaemonSet", 1),
        ("PodDisruptionBudget", 1),
        ("ValidatingAdmissionPolicy", 2),
        ("ValidatingAdmissionPolicyBinding", 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(kinds, expected, "objects rendered with default values");
    assert_eq!(kubernetes_validate(&objs, &[]), objs.len());
    let newest = render_for(NEWEST_KUBE_VERSION, &["--include-crds"]);
    assert_eq!(
        kubernetes_validate_for(NEWEST_KUBE_VERSION, &newest, &[]),
        newest.len()
    );
    for o in &objs {
        let cluster_scoped = matches!(
            kind(o),
            "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding"
        );
        let ns = o["metadata"]["namespace"].as_str();
        let cluster_scoped = cluster_scoped
            || matches!(
                kind(o),
                "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding"
            );
        if cluster_scoped {
            assert_eq!(ns, None, "{}/{} is cluster-scoped", kind(o), name(o));
        } else {
            assert_eq!(ns, Some(NAMESPACE), "{}/{} namespace", kind(o), name(o));
        }
    }
}

#[test]
fn non_default_render_validates_against_kubernetes_1_31() {
    let objs = render(&[
        "--set",
        "agent.processTracking=true,agent.podTracking=true,serviceMonitor.enabled=true,\
         agent.tolerateControlPlane=true,operator.secretNamespaces={team-a,team-b},\
         image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef,\
         operator.replicas=3,agent.terminationGracePeriodSeconds=60",
    ]);
    let validated = kubernetes_validate(&objs, &["ServiceMonitor"]);
    assert_eq!(validated, objs.len() - 2, "all but the 2 ServiceMonitors");
    let ds = find(&objs, "DaemonSet", "kube-vrrp-agent");
    let image = ds["spec"]["template"]["spec"]["containers"][0]["image"].as_str();
    assert_eq!(
        image,
        Some(
            "ghcr.io/kube-vrrp/kube-vrrp@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
        )
    );
    assert_eq!(
        find(&objs, "Deployment", "kube-vrrp-operator")["spec"]["replicas"].as_i64(),
        Some(3)
    );
    assert_eq!(
        ds["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_i64(),
        Some(60)
    );
}

#[test]
fn chart_supports_kubernetes_1_31_and_newer_and_refuses_older_clearly() {
    let chart_yaml: Value =
        serde_yaml::from_str(&read("charts/kube-vrrp/Chart.yaml")).expect("Chart.yaml parses");
    assert_eq!(chart_yaml["kubeVersion"].as_str(), Some(">=1.31.0-0"));
    for ok in ["1.31.0", "1.31.0-gke.100", "1.33.2", NEWEST_KUBE_VERSION] {
        let out = try_render_for(ok, &[]);
        assert!(
            out.status.success(),
            "--kube-version {ok} refused:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = try_render_for("1.30.0", &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the chart installs on 1.30");
    assert!(
        stderr.contains("1.30.0") && stderr.contains(">=1.31.0-0"),
        "refusal on 1.30 does not name the versions:\n{stderr}"
    );
    // The reason for 1.31: the CRDs' CEL rules use the IP/CIDR library, which 1.30 API servers
    // refuse in new CRDs. If the rules stop using it, the chart may support 1.30 again.
    let crds = read("crds/virtualip.yaml") + &read("crds/vrrpnode.yaml");
    assert!(
        crds.contains("isCIDR(") || crds.contains("isIP("),
        "the CRDs no longer use the CEL IP/CIDR library: lower kubeVersion to >=1.30.0-0"
    );
    // Nothing newer than 1.31 in the CRDs: no selectableFields (1.32 GA).
    assert!(
        !crds.contains("selectableFields"),
        "selectableFields is 1.31 beta / 1.32 GA: document how older servers treat it"
    );
}

#[test]
fn validator_rejects_broken_objects() {
    // Guards against a validator that passes everything: a DaemonSet with a wrongly typed
    // capability list and an unknown field must fail.
    let bad: Value = serde_yaml::from_str(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: broken}
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
      - name: a
        image: b
        securityContext: {capabilities: {add: NET_ADMIN}}
"#,
    )
    .expect("fixture parses");
    let path = scratch("broken", &serde_yaml::to_string(&bad).expect("serialise"));
    let out = run(
        &tool("kubernetes-validate"),
        &[
            "--kubernetes-version",
            KUBE_VERSION,
            "--strict",
            path.to_str().expect("UTF-8 path"),
        ],
    );
    let _ = std::fs::remove_file(&path);
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "broken DaemonSet passed:\n{report}");
    assert!(report.contains("capabilities.add"), "{report}");
}

// ---------------------------------------------------------------------------------------------
// Security contexts, workloads, RBAC

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn container<'a>(workload: &'a Value, cname: &str) -> &'a Value {
    pod_spec(workload)["containers"]
        .as_sequence()
        .and_then(|cs| cs.iter().find(|c| c["name"].as_str() == Some(cname)))
        .unwrap_or_else(|| panic!("no container {cname} in {}", name(workload)))
}

fn env_field_ref<'a>(c: &'a Value, var: &str) -> Option<&'a str> {
    c["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(var))?["valueFrom"]["fieldRef"]["fieldPath"]
        .as_str()
}

/// Every key `privileged: true`, `hostIPC: true` anywhere in the tree, with its path.
fn find_flags(v: &Value, path: &str, hits: &mut Vec<String>) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let k = k.as_str().unwrap_or("");
                if matches!(k, "privileged" | "hostIPC") && is_true(child) {
                    hits.push(format!("{path}.{k}"));
                }
                find_flags(child, &format!("{path}.{k}"), hits);
            }
        }
        Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                find_flags(child, &format!("{path}[{i}]"), hits);
            }
        }
        _ => {}
    }
}

/// The hardening every container shares; `caps` is the exact set of added capabilities.
fn assert_hardened(workload: &Value, caps: &[&str]) {
    assert_pod_hardened(pod_spec(workload), name(workload), caps);
}

/// [`assert_hardened`] for a pod spec (a workload's template, or a bare Pod's `spec`).
fn assert_pod_hardened(pod: &Value, wname: &str, caps: &[&str]) {
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault"),
        "{wname}: pod seccomp profile"
    );
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_sequence().into_iter().flatten())
        .collect();
    assert!(!containers.is_empty());
    for c in containers {
        let cname = c["name"].as_str().unwrap_or("?");
        let sc = &c["securityContext"];
        assert_eq!(
            sc["privileged"].as_bool(),
            Some(false),
            "{wname}/{cname}: privileged"
        );
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{wname}/{cname}: allowPrivilegeEscalation"
        );
        assert_eq!(
            sc["readOnlyRootFilesystem"].as_bool(),
            Some(true),
            "{wname}/{cname}: readOnlyRootFilesystem"
        );
        assert_eq!(
            sc["seccompProfile"]["type"].as_str(),
            Some("RuntimeDefault"),
            "{wname}/{cname}: seccomp"
        );
        assert_eq!(
            strs(&sc["capabilities"]["drop"]),
            ["ALL"],
            "{wname}/{cname}: drop"
        );
        let mut added = strs(&sc["capabilities"]["add"]);
        added.sort_unstable();
        assert_eq!(added, caps, "{wname}/{cname}: added capabilities");
        assert!(
            c["resources"]["requests"].is_mapping(),
            "{wname}/{cname}: requests"
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{wname}/{cname}: memory limit"
        );
        assert_eq!(
            c["livenessProbe"]["httpGet"]["path"].as_str(),
            Some("/healthz"),
            "{wname}/{cname}: liveness"
        );
        assert_eq!(
            c["readinessProbe"]["httpGet"]["path"].as_str(),
            Some("/readyz"),
            "{wname}/{cname}: readiness"
        );
    }
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_mapping()
        .is_some_and(|sel| !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

#[test]
fn agent_daemonset_is_least_privilege() {
    let objs = render(&[]);
    let mut hits = Vec::new();
    for o in &objs {
        find_flags(o, &format!("{}/{}", kind(o), name(o)), &mut hits);
    }
    assert!(hits.is_empty(), "privileged/hostIPC set: {hits:?}");

    let ds = find(&objs, "DaemonSet", "kube-vrrp-agent");
    assert_hardened(ds, &["NET_ADMIN", "NET_RAW"]);
    let pod = pod_spec(ds);
    assert_eq!(pod["hostNetwork"].as_bool(), Some(true));
    assert_eq!(pod["dnsPolicy"].as_str(), Some("ClusterFirstWithHostNet"));
    assert!(!is_true(&pod["hostPID"]), "hostPID must be off by default");
    assert!(
        pod["terminationGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 30),
        "terminationGracePeriodSeconds must leave time for the priority-0 handover"
    );
    assert!(pod["tolerations"].is_null(), "no tolerations by default");
    let strategy = &ds["spec"]["updateStrategy"];
    assert_eq!(strategy["type"].as_str(), Some("RollingUpdate"));
    assert_eq!(
        strategy["rollingUpdate"]["maxUnavailable"].as_i64(),
        Some(1)
    );
    assert_eq!(strategy["rollingUpdate"]["maxSurge"].as_i64(), Some(0));
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some(name(find(&objs, "ServiceAccount", "kube-vrrp-agent")))
    );

    let agent = container(ds, "agent");
    assert_eq!(env_field_ref(agent, "NODE_NAME"), Some("spec.nodeName"));
    let command = strs(&agent["command"]);
    assert_eq!(
        command.last(),
        Some(&"kube-vrrp-agent"),
        "command {command:?}"
    );
    assert_eq!(
        strs(&agent["args"]),
        [
            "run",
            "--node-name",
            "$(NODE_NAME)",
            "--state-dir",
            "/var/lib/kube-vrrp",
            "--metrics-addr",
            "0.0.0.0:9741",
            "--metrics-host",
            "$(HOST_IP)",
            "--log-format",
            "json"
        ]
    );
    // Bound to the node's InternalIP by default, not every address.
    assert_eq!(env_field_ref(agent, "HOST_IP"), Some("status.hostIP"));
    // The image runs as uid 65532; the agent must be uid 0 to use its two capabilities.
    assert_eq!(agent["securityContext"]["runAsUser"].as_i64(), Some(0));
    assert_eq!(agent["ports"][0]["containerPort"].as_i64(), Some(9741));
    let state_vol = pod["volumes"]
        .as_sequence()
        .and_then(|v| v.iter().find(|v| v["name"].as_str() == Some("state")))
        .expect("state volume");
    assert_eq!(
        state_vol["hostPath"]["path"].as_str(),
        Some("/var/lib/kube-vrrp")
    );
    assert_eq!(
        state_vol["hostPath"]["type"].as_str(),
        Some("DirectoryOrCreate")
    );
    assert!(
        agent["volumeMounts"]
            .as_sequence()
            .is_some_and(|m| m.iter().any(|m| m["name"].as_str() == Some("state")
                && m["mountPath"].as_str() == Some("/var/lib/kube-vrrp"))),
        "state dir mounted where --state-dir points"
    );
    let svc = find(&objs, "Service", "kube-vrrp-agent-metrics");
    assert!(labels_match(
        &svc["spec"]["selector"],
        &ds["spec"]["template"]["metadata"]["labels"]
    ));
    assert!(labels_match(
        &ds["spec"]["selector"]["matchLabels"],
        &ds["spec"]["template"]["metadata"]["labels"]
    ));
}

#[test]
fn agent_args_parse_with_the_agent_cli() {
    // The rendered command line must be accepted by the agent's real argument parser.
    use clap::Parser as _;
    let objs = render(&[]);
    let agent = container(find(&objs, "DaemonSet", "kube-vrrp-agent"), "agent");
    let mut argv = vec!["kube-vrrp-agent".to_string()];
    argv.extend(
        strs(&agent["args"])
            .into_iter()
            .map(|a| a.replace("$(NODE_NAME)", "node-a"))
            .map(|a| a.replace("$(HOST_IP)", "192.0.2.7")),
    );
    let cli = agent::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("agent rejects the chart's arguments {argv:?}:\n{e}"));
    match cli.command {
        agent::cli::Command::Run(run) => {
            assert_eq!(run.node_name, "node-a");
            assert_eq!(run.common.state_dir, Path::new("/var/lib/kube-vrrp"));
            assert_eq!(
                run.common
                    .metrics_listen()
                    .map(|a| a.to_string())
                    .as_deref(),
                Some("192.0.2.7:9741")
            );
            assert!(!run.allow_scripts, "scripts are off by default");
            assert_eq!(run.common.log_format, agent::cli::LogFormat::Json);
        }
        other => panic!("chart does not run `kube-vrrp-agent run`: {other:?}"),
    }
}

#[test]
fn operator_deployment_is_least_privilege_and_highly_available() {
    let objs = render(&[]);
    let dep = find(&objs, "Deployment", "kube-vrrp-operator");
    assert_hardened(dep, &[]);
    assert_eq!(dep["spec"]["replicas"].as_i64(), Some(2));
    let pod = pod_spec(dep);
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_i64()
            .is_some_and(|u| u > 0)
    );
    assert!(!is_true(&pod["hostNetwork"]) && !is_true(&pod["hostPID"]));
    let op = container(dep, "operator");
    assert_eq!(strs(&op["command"]), ["kube-vrrp-operator"]);
    assert_eq!(
        strs(&op["args"]),
        [
            "run",
            "--metrics-addr",
            "0.0.0.0:8080",
            "--lease-namespace",
            "$(POD_NAMESPACE)",
            "--lease-name",
            "kube-vrrp-operator",
            "--log-format",
            "json"
        ]
    );
    assert_eq!(env_field_ref(op, "POD_NAME"), Some("metadata.name"));
    assert_eq!(
        env_field_ref(op, "POD_NAMESPACE"),
        Some("metadata.namespace")
    );
    assert_eq!(op["ports"][0]["containerPort"].as_i64(), Some(8080));

    let pdb = find(&objs, "PodDisruptionBudget", "kube-vrrp-operator");
    assert_eq!(pdb["spec"]["minAvailable"].as_i64(), Some(1));
    assert_eq!(
        pdb["spec"]["unhealthyPodEvictionPolicy"].as_str(),
        Some("AlwaysAllow")
    );
    let pod_labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    assert!(labels_match(
        &dep["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let svc = find(&objs, "Service", "kube-vrrp-operator-metrics");
    assert!(labels_match(&svc["spec"]["selector"], pod_labels));
    // A single replica has nothing to protect: no PDB that would block node drains.
    let single = render(&["--set", "operator.replicas=1"]);
    assert!(all_of(&single, "PodDisruptionBudget").is_empty());
}

/// (apiGroup, resource, verb) triples granted by a Role/ClusterRole; panics on wildcards or
/// non-resource URLs.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().into_iter().flatten() {
        assert!(
            rule.get("nonResourceURLs").is_none(),
            "{}: nonResourceURLs",
            name(role)
        );
        for field in ["apiGroups", "resources", "verbs"] {
            for v in strs(&rule[field]) {
                assert!(
                    !v.contains('*'),
                    "{}: wildcard {v:?} in {field}",
                    name(role)
                );
            }
        }
        for g in strs(&rule["apiGroups"]) {
            for r in strs(&rule["resources"]) {
                for v in strs(&rule["verbs"]) {
                    out.insert((g.to_string(), r.to_string(), v.to_string()));
                }
            }
        }
    }
    out
}

fn expect_grants(spec: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for (g, r, verbs) in spec {
        for v in verbs.split_whitespace() {
            out.insert((g.to_string(), r.to_string(), v.to_string()));
        }
    }
    out
}

const OPERATOR_CLUSTER_GRANTS: &[(&str, &str, &str)] = &[
    ("kubevrrp.io", "virtualips", "get list watch patch update"),
    ("kubevrrp.io", "virtualips/status", "get patch update"),
    ("kubevrrp.io", "virtualips/finalizers", "update"),
    (
        "kubevrrp.io",
        "vrrpnodes",
        "get list watch create patch update delete",
    ),
    ("kubevrrp.io", "vrrpnodes/status", "get"),
    ("", "nodes", "get list watch"),
    ("events.k8s.io", "events", "create patch"),
];
/// With `loadBalancer.enabled` (the default), in the operator's ClusterRole.
const OPERATOR_LB_GRANTS: &[(&str, &str, &str)] = &[
    ("", "services", "get list watch patch"),
    ("", "services/status", "get patch update"),
    ("", "namespaces", "get list watch"),
    ("discovery.k8s.io", "endpointslices", "get list watch"),
    ("kubevrrp.io", "virtualippools", "get list watch"),
    ("kubevrrp.io", "virtualippools/status", "get patch update"),
];
/// With `loadBalancer.enabled`, in a Role of the release namespace (the group VirtualIPs).
const OPERATOR_LB_ROLE_GRANTS: &[(&str, &str, &str)] =
    &[("kubevrrp.io", "virtualips", "create delete")];
const AGENT_GRANTS: &[(&str, &str, &str)] = &[
    ("kubevrrp.io", "vrrpnodes", "get list watch"),
    ("kubevrrp.io", "vrrpnodes/status", "get patch update"),
    ("kubevrrp.io", "virtualips", "get"),
    ("events.k8s.io", "events", "create patch"),
];
// kube-lease-manager renews and takes over the Lease with PATCH (strategic merge and
// server-side apply), so `patch` is needed besides the contract's get/list/watch/create/update.
const LEASE_GRANTS: &[(&str, &str, &str)] = &[(
    "coordination.k8s.io",
    "leases",
    "get list watch create update patch",
)];
const SECRET_GRANTS: &[(&str, &str, &str)] = &[("", "secrets", "get list watch")];

/// Checks each binding points at a rendered role and at the right, rendered ServiceAccount.
fn assert_bindings(objs: &[Value]) {
    for b in all_of(objs, "ClusterRoleBinding")
        .into_iter()
        .chain(all_of(objs, "RoleBinding"))
    {
        let role_kind = b["roleRef"]["kind"].as_str().unwrap_or("");
        let role_name = b["roleRef"]["name"].as_str().unwrap_or("");
        let ns = &b["metadata"]["namespace"];
        assert!(
            objs.iter().any(|o| kind(o) == role_kind
                && name(o) == role_name
                && (role_kind == "ClusterRole" || &o["metadata"]["namespace"] == ns)),
            "{}: {role_kind}/{role_name} is not rendered (in its namespace)",
            name(b)
        );
        for s in b["subjects"].as_sequence().into_iter().flatten() {
            assert_eq!(s["kind"].as_str(), Some("ServiceAccount"), "{}", name(b));
            assert_eq!(s["namespace"].as_str(), Some(NAMESPACE), "{}", name(b));
            find(objs, "ServiceAccount", s["name"].as_str().unwrap_or(""));
        }
    }
}

#[test]
fn rbac_is_least_privilege_with_default_values() {
    let objs = render(&[]);
    let mut operator = expect_grants(OPERATOR_CLUSTER_GRANTS);
    operator.extend(expect_grants(SECRET_GRANTS));
    operator.extend(expect_grants(OPERATOR_LB_GRANTS));
    assert_eq!(
        grants(find(&objs, "ClusterRole", "kube-vrrp-operator")),
        operator
    );
    assert_eq!(
        grants(find(&objs, "Role", "kube-vrrp-operator-load-balancer")),
        expect_grants(OPERATOR_LB_ROLE_GRANTS)
    );
    assert_eq!(
        grants(find(&objs, "ClusterRole", "kube-vrrp-agent")),
        expect_grants(AGENT_GRANTS)
    );
    let roles = all_of(&objs, "Role");
    assert_eq!(
        roles.len(),
        5,
        "only the operator's leader-election, load-balancer and auth-Secret Roles and the agents' liveness-Lease and auth-Secret Roles"
    );
    for r in &roles {
        assert_eq!(r["metadata"]["namespace"].as_str(), Some(NAMESPACE));
    }
    assert_eq!(
        grants(find(&objs, "Role", "kube-vrrp-operator-leader-election")),
        expect_grants(LEASE_GRANTS)
    );
    assert_eq!(
        grants(find(&objs, "Role", "kube-vrrp-agent-liveness")),
        expect_grants(&[("coordination.k8s.io", "leases", "get create patch update")])
    );
    // PASS passwords: the operator writes the per-node auth Secrets of the release namespace,
    // the agents only read them (RBAC cannot give each node's pod one name; see security.md).
    assert_eq!(
        grants(find(&objs, "Role", "kube-vrrp-operator-auth")),
        expect_grants(&[("", "secrets", "get list watch create patch update delete")])
    );
    assert_eq!(
        grants(find(&objs, "Role", "kube-vrrp-agent-auth")),
        expect_grants(SECRET_GRANTS)
    );
    assert_bindings(&objs);
    let binding = find(&objs, "ClusterRoleBinding", "kube-vrrp-agent");
    assert_eq!(
        binding["subjects"][0]["name"].as_str(),
        Some("kube-vrrp-agent")
    );
}

#[test]
fn load_balancer_values_set_the_flags_and_the_rights() {
    let operator_args = |objs: &[Value]| -> Vec<String> {
        strs(&container(find(objs, "Deployment", "kube-vrrp-operator"), "operator")["args"])
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    let default = render(&[]);
    let base = operator_args(&default);
    assert!(
        !base.iter().any(|a| a.starts_with("--load-balancer")),
        "{base:?}"
    );

    let with_default = render(&["--set", "loadBalancer.defaultClass=true"]);
    let args = operator_args(&with_default);
    assert_eq!(
        args.last().map(String::as_str),
        Some("--load-balancer-default-class")
    );
    assert_eq!(args[..args.len() - 1], base[..]);

    let off = render(&["--set", "loadBalancer.enabled=false"]);
    let args = operator_args(&off);
    assert_eq!(
        args.last().map(String::as_str),
        Some("--load-balancer=false")
    );
    let mut no_secrets = expect_grants(OPERATOR_CLUSTER_GRANTS);
    no_secrets.extend(expect_grants(SECRET_GRANTS));
    assert_eq!(
        grants(find(&off, "ClusterRole", "kube-vrrp-operator")),
        no_secrets,
        "no Service, EndpointSlice, Namespace or pool access when off"
    );
    assert!(
        !all_of(&off, "Role")
            .iter()
            .any(|r| name(r) == "kube-vrrp-operator-load-balancer")
    );
    assert_bindings(&off);
}

#[test]
fn pod_tracking_adds_exactly_pod_read_access() {
    let objs = render(&["--set", "agent.podTracking=true"]);
    let mut expected = expect_grants(AGENT_GRANTS);
    expected.extend(expect_grants(&[("", "pods", "get list watch")]));
    assert_eq!(
        grants(find(&objs, "ClusterRole", "kube-vrrp-agent")),
        expected
    );
    // Nothing else changes.
    let default = render(&[]);
    assert_eq!(
        find(&objs, "DaemonSet", "kube-vrrp-agent"),
        find(&default, "DaemonSet", "kube-vrrp-agent")
    );
}

#[test]
fn secret_namespaces_replace_cluster_wide_secret_access_with_roles() {
    let objs = render(&["--set", "operator.secretNamespaces={team-a,team-b}"]);
    let mut expected = expect_grants(OPERATOR_CLUSTER_GRANTS);
    expected.extend(expect_grants(OPERATOR_LB_GRANTS));
    assert_eq!(
        grants(find(&objs, "ClusterRole", "kube-vrrp-operator")),
        expected,
        "no cluster-wide secrets access once namespaces are listed"
    );
    let secret_roles: Vec<&Value> = all_of(&objs, "Role")
        .into_iter()
        .filter(|r| name(r) == "kube-vrrp-operator-secrets")
        .collect();
    let namespaces: BTreeSet<&str> = secret_roles
        .iter()
        .filter_map(|r| r["metadata"]["namespace"].as_str())
        .collect();
    assert_eq!(namespaces, BTreeSet::from(["team-a", "team-b"]));
    for r in secret_roles {
        assert_eq!(grants(r), expect_grants(SECRET_GRANTS));
    }
    // Two for the Secret namespaces, leader election, load balancer, the operator's and the
    // agents' auth Secrets, the agents' liveness Leases.
    assert_eq!(all_of(&objs, "RoleBinding").len(), 7);
    assert_bindings(&objs);
    // The operator must then watch Secrets only there, or its cluster-wide watch is refused.
    let deploy = find(&objs, "Deployment", "kube-vrrp-operator");
    let args: Vec<&str> = container(deploy, "operator")["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    let tail: Vec<&str> = args.iter().rev().take(4).rev().copied().collect();
    assert_eq!(
        tail,
        [
            "--secret-namespace",
            "team-a",
            "--secret-namespace",
            "team-b"
        ],
        "{args:?}"
    );
}

#[test]
fn process_tracking_turns_on_host_pid_only() {
    let objs = render(&["--set", "agent.processTracking=true"]);
    let ds = find(&objs, "DaemonSet", "kube-vrrp-agent");
    assert_eq!(pod_spec(ds)["hostPID"].as_bool(), Some(true));
    assert_hardened(ds, &["NET_ADMIN", "NET_RAW"]);
    let default = render(&[]);
    let mut without = ds.clone();
    without["spec"]["template"]["spec"]
        .as_mapping_mut()
        .expect("pod spec")
        .remove("hostPID");
    assert_eq!(&without, find(&default, "DaemonSet", "kube-vrrp-agent"));
    assert_eq!(
        grants(find(&objs, "ClusterRole", "kube-vrrp-agent")),
        expect_grants(AGENT_GRANTS)
    );
}

#[test]
fn control_plane_toleration_is_opt_in() {
    let objs = render(&[
        "--set",
        "agent.tolerateControlPlane=true",
        "--set-json",
        r#"agent.tolerations=[{"key":"example.com/vip","operator":"Exists"}]"#,
    ]);
    let tolerations = &pod_spec(find(&objs, "DaemonSet", "kube-vrrp-agent"))["tolerations"];
    let keys: Vec<&str> = tolerations
        .as_sequence()
        .expect("tolerations")
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    assert_eq!(
        keys,
        ["node-role.kubernetes.io/control-plane", "example.com/vip"]
    );
    assert_eq!(tolerations[0]["effect"].as_str(), Some("NoSchedule"));
    assert_eq!(tolerations[0]["operator"].as_str(), Some("Exists"));
}

#[test]
fn service_monitors_scrape_both_metrics_services() {
    assert!(all_of(&render(&[]), "ServiceMonitor").is_empty());
    let objs = render(&[
        "--set",
        "serviceMonitor.enabled=true,serviceMonitor.labels.release=prom",
    ]);
    let monitors = all_of(&objs, "ServiceMonitor");
    assert_eq!(monitors.len(), 2);
    for (sm, svc) in [
        ("kube-vrrp-operator", "kube-vrrp-operator-metrics"),
        ("kube-vrrp-agent", "kube-vrrp-agent-metrics"),
    ] {
        let sm = find(&objs, "ServiceMonitor", sm);
        let svc = find(&objs, "Service", svc);
        assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
        assert_eq!(sm["metadata"]["namespace"].as_str(), Some(NAMESPACE));
        assert_eq!(sm["metadata"]["labels"]["release"].as_str(), Some("prom"));
        assert!(
            labels_match(
                &sm["spec"]["selector"]["matchLabels"],
                &svc["metadata"]["labels"]
            ),
            "{} selects {}",
            name(sm),
            name(svc)
        );
        // and only that Service
        for other in all_of(&objs, "Service") {
            if name(other) != name(svc) {
                assert!(!labels_match(
                    &sm["spec"]["selector"]["matchLabels"],
                    &other["metadata"]["labels"]
                ));
            }
        }
        let ep = &sm["spec"]["endpoints"][0];
        assert_eq!(
            ep["port"].as_str(),
            svc["spec"]["ports"][0]["name"].as_str()
        );
        assert_eq!(ep["path"].as_str(), Some("/metrics"));
        assert_eq!(ep["interval"].as_str(), Some("30s"));
    }
}

#[test]
fn notes_tell_the_user_how_to_see_the_master() {
    let chart = chart_dir();
    let out = run(
        &helm(),
        &[
            "install",
            RELEASE,
            chart.to_str().expect("UTF-8 path"),
            "--namespace",
            NAMESPACE,
            "--dry-run=client",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "helm install --dry-run=client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notes = text.split("NOTES:").nth(1).expect("NOTES section");
    for needle in [
        "kubectl get vips",
        "kubectl apply -f charts/kube-vrrp/crds/",
        "operator.secretNamespaces",
    ] {
        assert!(notes.contains(needle), "NOTES lack {needle:?}:\n{notes}");
    }
}

// ---------------------------------------------------------------------------------------------
// deploy/: plain manifests, kustomization, image build files

#[test]
fn deploy_manifests_match_the_chart() {
    let expected = format!("{MANIFEST_HEADER}{}", render_text(&["--include-crds"]));
    let path = repo_root().join("deploy/manifests/kube-vrrp.yaml");
    if std::env::var_os("UPDATE_MANIFESTS").is_some() {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, &expected).expect("write manifests");
        return;
    }
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    assert!(
        committed == expected,
        "deploy/manifests/kube-vrrp.yaml is stale: regenerate it with \
         `UPDATE_MANIFESTS=1 cargo test -p kube-vrrp-tests --test install`"
    );
}

#[test]
fn kustomization_builds_the_manifests_plus_namespace() {
    let kubectl = tool("kubectl");
    let out = run(&kubectl, &["kustomize", "deploy"]);
    assert!(
        out.status.success(),
        "kubectl kustomize deploy failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = parse_docs(&String::from_utf8_lossy(&out.stdout));
    let ns = find(&built, "Namespace", NAMESPACE);
    assert_eq!(ns["apiVersion"].as_str(), Some("v1"));
    let rendered = render(&["--include-crds"]);
    let key = |o: &Value| {
        format!(
            "{}/{}/{}",
            kind(o),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            name(o)
        )
    };
    let built_keys: BTreeSet<String> = built
        .iter()
        .filter(|o| kind(o) != "Namespace")
        .map(key)
        .collect();
    let rendered_keys: BTreeSet<String> = rendered.iter().map(key).collect();
    assert_eq!(built_keys, rendered_keys);
    // The kustomization names the image (its `images:` entry), at the chart's appVersion.
    let chart_yaml: Value =
        serde_yaml::from_str(&read("charts/kube-vrrp/Chart.yaml")).expect("Chart.yaml parses");
    let app_version = chart_yaml["appVersion"].as_str().expect("appVersion");
    let kustomization = read("deploy/kustomization.yaml");
    assert!(
        kustomization.contains("images:")
            && kustomization.contains(&format!("newTag: {app_version}")),
        "deploy/kustomization.yaml names the image at appVersion {app_version}"
    );
    for workload in built
        .iter()
        .filter(|o| matches!(kind(o), "Deployment" | "DaemonSet"))
    {
        for c in pod_spec(workload)["containers"]
            .as_sequence()
            .expect("containers")
        {
            assert_eq!(
                c["image"].as_str(),
                Some(format!("ghcr.io/kube-vrrp/kube-vrrp:{app_version}").as_str()),
                "{}/{} image",
                kind(workload),
                name(workload)
            );
        }
    }
    assert_eq!(kubernetes_validate(&built, &[]), built.len());
}

#[test]
fn dockerfile_builds_both_binaries_in_release_mode() {
    let dockerfile = read("deploy/Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages,
        [
            "FROM ${BASE} AS runtime",
            "FROM runtime AS prebuilt",
            "FROM ${RUST_IMAGE} AS build",
            "FROM runtime AS source",
        ],
        "stages: runtime base, prebuilt binaries (deploy/build-image.sh, release.yml), \
         builder, from-source image (the default: last)"
    );
    assert!(dockerfile.contains("ARG RUST_IMAGE=rust:1.95-bookworm"));
    assert!(dockerfile.contains("ARG BASE=debian:bookworm-slim"));
    // No `# syntax=` directive: it would make BuildKit pull a frontend image (no registry here).
    assert!(
        !dockerfile
            .lines()
            .any(|l| l.replace(' ', "").starts_with("#syntax=")),
        "deploy/Dockerfile has a # syntax= directive"
    );
    assert!(
        dockerfile
            .contains("cargo build --release --locked -p kube-vrrp-operator -p kube-vrrp-agent")
    );
    assert!(dockerfile.contains("USER 65532:65532"));
    // The binary names the chart runs must be what the crates build.
    for (manifest, bin) in [
        ("operator/Cargo.toml", "kube-vrrp-operator"),
        ("node-agent/Cargo.toml", "kube-vrrp-agent"),
    ] {
        assert!(
            bin_names(&read(manifest)).iter().any(|b| b == bin),
            "{manifest} builds no `{bin}` binary"
        );
        assert!(
            dockerfile.contains(&format!("target/release/{bin} /out/{bin}")),
            "Dockerfile does not ship {bin} from source"
        );
        assert!(
            dockerfile.contains(&format!("dist/${{TARGETARCH}}/{bin}")),
            "Dockerfile's prebuilt stage does not ship {bin}"
        );
        let script = read("deploy/build-image.sh");
        assert!(
            script.contains(
                "cargo build --release --locked -p kube-vrrp-operator -p kube-vrrp-agent"
            ) && script.contains("--target prebuilt"),
            "deploy/build-image.sh builds the release binaries and the prebuilt stage"
        );
    }
    // The agent's command starts with tini, which the runtime stage must install.
    let objs = render(&[]);
    let agent = container(find(&objs, "DaemonSet", "kube-vrrp-agent"), "agent");
    assert_eq!(strs(&agent["command"])[0], "/usr/bin/tini");
    assert!(dockerfile.contains(" tini"), "runtime stage installs tini");
    assert!(
        read("deploy/build-image.sh").contains("packages=\"ca-certificates,tini\""),
        "the debootstrap base has tini and CA certificates"
    );

    let ignore = read("deploy/Dockerfile.dockerignore");
    let lines: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for must in [".git", "**/target", "tests/tools/bin"] {
        assert!(
            lines.contains(must),
            "Dockerfile.dockerignore must exclude {must}"
        );
    }
    for keep in [
        "Cargo.toml",
        "Cargo.lock",
        "crds",
        "operator",
        "node-agent",
        "tests",
    ] {
        assert!(
            !lines.contains(keep),
            "Dockerfile.dockerignore must keep {keep}"
        );
    }
}

/// `[[bin]]` names of a Cargo manifest (just enough TOML reading for the manifests here).
fn bin_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin
            && let Some(rest) = line.strip_prefix("name")
            && let Some(value) = rest.trim_start().strip_prefix('=')
        {
            out.push(value.trim().trim_matches('"').to_string());
        }
    }
    out
}

/// Leaf keys of values.yaml ("operator.podDisruptionBudget.enabled"); Kubernetes-typed maps
/// (resources, nodeSelector) count as one value.
fn value_paths(v: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match v.as_mapping() {
        Some(m)
            if !m.is_empty()
                && !prefix.ends_with("resources")
                && !prefix.ends_with("nodeSelector") =>
        {
            for (k, child) in m {
                let k = k.as_str().expect("string keys");
                let path = if prefix.is_empty() {
                    k.to_string()
                } else {
                    format!("{prefix}.{k}")
                };
                value_paths(child, &path, out);
            }
        }
        _ => {
            out.insert(prefix.to_string());
        }
    }
}

#[test]
fn chart_readme_documents_every_value() {
    let values: Value =
        serde_yaml::from_str(&read("charts/kube-vrrp/values.yaml")).expect("values");
    let mut paths = BTreeSet::new();
    value_paths(&values, "", &mut paths);
    // First column of the README values table: "`a.b.c`" or "`a.b.c` / `d` / `e`" (d, e are
    // siblings of c).
    let readme = read("charts/kube-vrrp/README.md");
    let mut documented = BTreeSet::new();
    for row in readme.lines().filter(|l| l.starts_with("| `")) {
        let first = row.split('|').nth(1).unwrap_or("");
        let keys: Vec<&str> = first
            .split('/')
            .map(|k| k.trim().trim_matches('`'))
            .collect();
        let parent = keys[0].rsplit_once('.').map(|(p, _)| p);
        documented.insert(keys[0].to_string());
        for k in &keys[1..] {
            documented.insert(match parent {
                Some(p) => format!("{p}.{k}"),
                None => k.to_string(),
            });
        }
    }
    let missing: Vec<&String> = paths.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "values missing from the README values table: {missing:?}"
    );
    let stale: Vec<&String> = documented.difference(&paths).collect();
    assert!(
        stale.is_empty(),
        "README documents values that do not exist: {stale:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// deploy/control-plane/: the static pod for the API server's VIP

fn control_plane_pod() -> Value {
    let docs = parse_docs(&read("deploy/control-plane/kube-vrrp-static.yaml"));
    assert_eq!(docs.len(), 1, "one Pod");
    docs.into_iter().next().expect("one document")
}

#[test]
fn control_plane_static_pod_validates_against_kubernetes_1_31_and_1_37() {
    let pod = control_plane_pod();
    assert_eq!(kind(&pod), "Pod");
    assert_eq!(kubernetes_validate(std::slice::from_ref(&pod), &[]), 1);
    assert_eq!(
        kubernetes_validate_for(NEWEST_KUBE_VERSION, std::slice::from_ref(&pod), &[]),
        1
    );
}

#[test]
fn control_plane_static_pod_has_the_chart_agents_privileges_only() {
    let pod = control_plane_pod();
    let mut hits = Vec::new();
    find_flags(&pod, "Pod/kube-vrrp-static", &mut hits);
    assert!(hits.is_empty(), "privileged/hostIPC set: {hits:?}");
    // Exactly the capabilities of the chart's agent, read from the rendered chart.
    let objs = render(&[]);
    let chart_agent = container(find(&objs, "DaemonSet", "kube-vrrp-agent"), "agent");
    let mut chart_caps = strs(&chart_agent["securityContext"]["capabilities"]["add"]);
    chart_caps.sort_unstable();
    let spec = &pod["spec"];
    assert_pod_hardened(spec, "kube-vrrp-static", &chart_caps);
    assert_eq!(spec["hostNetwork"].as_bool(), Some(true));
    assert!(!is_true(&spec["hostPID"]), "no hostPID");
    assert!(
        spec["serviceAccountName"].is_null(),
        "a static pod has no API access"
    );
    assert!(
        spec["terminationGracePeriodSeconds"]
            .as_i64()
            .is_some_and(|s| s >= 30),
        "time for the priority-0 handover"
    );
    let agent = &spec["containers"][0];
    assert_eq!(
        agent["securityContext"]["runAsUser"],
        chart_agent["securityContext"]["runAsUser"]
    );
    assert_eq!(
        agent["image"].as_str(),
        chart_agent["image"].as_str(),
        "same image as the chart"
    );
    assert_eq!(strs(&agent["command"]), strs(&chart_agent["command"]));
}

#[test]
fn control_plane_static_pod_runs_standalone_on_the_host_path_config() {
    use clap::Parser as _;
    let pod = control_plane_pod();
    let spec = &pod["spec"];
    let agent = &spec["containers"][0];
    let mut argv = vec!["kube-vrrp-agent".to_string()];
    argv.extend(
        strs(&agent["args"])
            .into_iter()
            .map(|a| a.replace("$(NODE_NAME)", "cp-1")),
    );
    let cli = agent::cli::Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("the agent rejects the static pod's arguments {argv:?}:\n{e}"));
    let agent::cli::Command::Standalone(args) = cli.command else {
        panic!("the static pod does not run `kube-vrrp-agent standalone`");
    };
    assert_eq!(args.node_name.as_deref(), Some("cp-1"));
    assert_eq!(env_field_ref(agent, "NODE_NAME"), Some("spec.nodeName"));
    let volume = |n: &str| {
        spec["volumes"]
            .as_sequence()
            .and_then(|v| v.iter().find(|v| v["name"].as_str() == Some(n)))
            .unwrap_or_else(|| panic!("volume {n}"))
            .clone()
    };
    let mount = |n: &str| {
        agent["volumeMounts"]
            .as_sequence()
            .and_then(|v| v.iter().find(|v| v["name"].as_str() == Some(n)))
            .unwrap_or_else(|| panic!("mount {n}"))
            .clone()
    };
    // The config: a host file, mounted read-only exactly where --config points.
    let config = volume("config");
    assert_eq!(config["hostPath"]["type"].as_str(), Some("File"));
    assert_eq!(
        mount("config")["mountPath"].as_str().map(Path::new),
        Some(args.config.as_path())
    );
    assert_eq!(mount("config")["readOnly"].as_bool(), Some(true));
    assert_eq!(
        config["hostPath"]["path"].as_str().map(Path::new),
        Some(args.config.as_path())
    );
    // Its own state directory and metrics port: the DaemonSet's agent runs on the same node.
    let state = volume("state");
    assert_eq!(
        state["hostPath"]["path"].as_str().map(Path::new),
        Some(args.common.state_dir.as_path())
    );
    assert_eq!(
        mount("state")["mountPath"].as_str().map(Path::new),
        Some(args.common.state_dir.as_path())
    );
    assert_ne!(args.common.state_dir, Path::new("/var/lib/kube-vrrp"));
    let metrics = args.common.metrics_addr.expect("--metrics-addr");
    assert_ne!(metrics.port(), 9741, "the chart agent's port");
    assert!(
        metrics.ip().is_loopback(),
        "metrics on loopback only: {metrics}"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &agent[probe]["httpGet"];
        assert_eq!(get["host"].as_str(), Some("127.0.0.1"), "{probe}");
        assert_eq!(
            get["port"].as_u64(),
            Some(u64::from(metrics.port())),
            "{probe}"
        );
    }
}

#[test]
fn control_plane_example_virtualip_is_valid_and_resolves_for_every_node() {
    let text = read("deploy/control-plane/api-vip.yaml");
    let docs = parse_docs(&text);
    assert_eq!(docs.len(), 1);
    let vip: crds::VirtualIP = serde_yaml::from_value(docs[0].clone()).expect("a VirtualIP");
    let problems = crds::validate::validate_spec(&vip.spec);
    assert!(problems.is_empty(), "{problems}");
    assert_eq!(
        vip.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(crds::virtualip::ADOPT_STATIC_ANNOTATION))
            .map(String::as_str),
        Some("true")
    );
    let http = &vip.spec.track.as_ref().expect("track").http;
    assert!(
        http.iter()
            .any(|h| h.url == "https://127.0.0.1:6443/readyz"),
        "{http:?}"
    );
    // The static pods read the same file: each node gets its own priority from it.
    let mut priorities = Vec::new();
    for n in &vip.spec.nodes {
        let host = crds::resolve::NodeFacts {
            name: n.name.clone(),
            ..Default::default()
        };
        let (instances, warnings) = agent::standalone::resolve_virtual_ips(&text, &host)
            .unwrap_or_else(|e| panic!("{}: {}", n.name, e.join("; ")));
        assert_eq!(instances.len(), 1);
        assert!(
            warnings.iter().all(|w| w.contains("nodeSelector")),
            "{warnings:?}"
        );
        priorities.push(instances[0].priority);
    }
    let mut distinct = priorities.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        priorities.len(),
        "distinct priorities: {priorities:?}"
    );
}

#[test]
fn script_values_set_both_flags_and_the_admission_policy() {
    let args_of = |objs: &[Value], k: &str, n: &str, c: &str| -> Vec<String> {
        strs(&container(find(objs, k, n), c)["args"])
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    let policy_names = |objs: &[Value]| -> Vec<String> {
        all_of(objs, "ValidatingAdmissionPolicy")
            .iter()
            .map(|p| name(p).to_string())
            .collect()
    };
    // Default: scripts off everywhere; the scripts policy denies every command.
    let default = render(&[]);
    let op = args_of(&default, "Deployment", "kube-vrrp-operator", "operator");
    assert!(!op.iter().any(|a| a.starts_with("--scripts")), "{op:?}");
    let ag = args_of(&default, "DaemonSet", "kube-vrrp-agent", "agent");
    assert!(
        !ag.iter().any(|a| a.starts_with("--allow-scripts")),
        "{ag:?}"
    );
    assert_eq!(
        policy_names(&default),
        ["kube-vrrp-agent-own-node", "kube-vrrp-scripts"]
    );
    let pol = find(&default, "ValidatingAdmissionPolicy", "kube-vrrp-scripts");
    let exprs: Vec<&str> = pol["spec"]["validations"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|v| v["expression"].as_str())
        .collect();
    assert_eq!(exprs, ["size(variables.commands) == 0"]);
    let binding = find(
        &default,
        "ValidatingAdmissionPolicyBinding",
        "kube-vrrp-scripts",
    );
    assert_eq!(strs(&binding["spec"]["validationActions"]), ["Deny"]);
    // The own-node policy matches only the agent's service account.
    let own = find(
        &default,
        "ValidatingAdmissionPolicy",
        "kube-vrrp-agent-own-node",
    );
    assert_eq!(
        own["spec"]["matchConditions"][0]["expression"].as_str(),
        Some(r#"request.userInfo.username == "system:serviceaccount:kube-vrrp:kube-vrrp-agent""#)
    );
    assert_eq!(own["spec"]["failurePolicy"].as_str(), Some("Fail"));

    // Allowed for every namespace: flags on, no scripts policy.
    let open = render(&["--set", "agent.scripts.allowed=true"]);
    let op = args_of(&open, "Deployment", "kube-vrrp-operator", "operator");
    assert!(op.contains(&"--scripts-allowed=true".to_string()), "{op:?}");
    let ag = args_of(&open, "DaemonSet", "kube-vrrp-agent", "agent");
    assert!(ag.contains(&"--allow-scripts=true".to_string()), "{ag:?}");
    assert_eq!(policy_names(&open), ["kube-vrrp-agent-own-node"]);

    // Allowed in two namespaces, for one directory: the operator gets both lists, the policy
    // checks the namespace.
    let narrow = render(&[
        "--set",
        "agent.scripts.allowed=true,agent.scripts.allowedNamespaces={infra,net},agent.scripts.allowedPaths={/etc/kube-vrrp/scripts/}",
    ]);
    let op = args_of(&narrow, "Deployment", "kube-vrrp-operator", "operator");
    let tail: Vec<&str> = op
        .iter()
        .skip_while(|a| *a != "--scripts-allowed=true")
        .map(String::as_str)
        .take(7)
        .collect();
    assert_eq!(
        tail,
        [
            "--scripts-allowed=true",
            "--scripts-allowed-namespace",
            "infra",
            "--scripts-allowed-namespace",
            "net",
            "--scripts-allowed-path",
            "/etc/kube-vrrp/scripts/"
        ]
    );
    let pol = find(&narrow, "ValidatingAdmissionPolicy", "kube-vrrp-scripts");
    assert_eq!(
        pol["spec"]["validations"][0]["expression"].as_str(),
        Some(r#"size(variables.commands) == 0 || request.namespace in ["infra","net"]"#)
    );
    assert_eq!(kubernetes_validate(&narrow, &[]), narrow.len());

    // The schema refuses a relative program path.
    let bad = try_render(&["--set", "agent.scripts.allowedPaths={relative/x}"]);
    assert!(
        !bad.status.success(),
        "a relative allowed path must be refused"
    );

    // A configured bind address replaces the host IP.
    let all = render(&["--set", "agent.bindAddress=0.0.0.0"]);
    let ag = args_of(&all, "DaemonSet", "kube-vrrp-agent", "agent");
    let i = ag.iter().position(|a| a == "--metrics-host").unwrap();
    assert_eq!(ag[i + 1], "0.0.0.0");
}
