//! VRRPv2 PASS passwords in cluster mode: kept in one Secret per node, never in a VRRPNode.
//!
//! The operator reads the Secret a VirtualIP references (`spec.authentication
//! .passwordSecretRef`) and writes the password into the Secret [`auth_secret_name`] of every
//! node the instance runs on (release namespace, labelled [`AUTH_SECRET_LABEL`], owned by the
//! node's VRRPNode), under the data key [`auth_key`] of the instance. The VRRPNode instance
//! carries only that key (`authKey`). The agent follows its own node's Secret and fills in
//! [`crate::ResolvedInstance::auth_pass`] in memory; that field is never serialised, so no
//! VRRPNode, cache file, `/status` page or log line carries a password.

use std::fmt;

/// Name prefix of the per-node auth Secrets: `kube-vrrp-auth-<node>`.
pub const AUTH_SECRET_PREFIX: &str = "kube-vrrp-auth-";

/// Label (key and value) on every per-node auth Secret, for the operator's watch.
pub const AUTH_SECRET_LABEL: (&str, &str) = ("app.kubernetes.io/component", "kube-vrrp-auth");

/// The longest name of a Kubernetes object (a DNS subdomain), and of a Secret data key.
const MAX_NAME: usize = 253;

/// The auth Secret of node `node`: `kube-vrrp-auth-<node>`, or, for a node name too long for
/// that (over 238 bytes), `kube-vrrp-auth-<first 32 hex digits of the name's SHA-256>`.
pub fn auth_secret_name(node: &str) -> String {
    if AUTH_SECRET_PREFIX.len() + node.len() <= MAX_NAME {
        return format!("{AUTH_SECRET_PREFIX}{node}");
    }
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(node.as_bytes()));
    format!("{AUTH_SECRET_PREFIX}{}", &digest[..32])
}

/// The data key of an instance in its nodes' auth Secrets: the instance name `NAMESPACE/NAME`
/// with `/` written as `.` (a namespace has no dot, so this is unambiguous, and both parts use
/// only characters a Secret key allows). A name that would exceed 253 bytes becomes
/// `sha256.<first 32 hex digits of the SHA-256 of the instance name>`.
pub fn auth_key(instance_name: &str) -> String {
    let key = instance_name.replacen('/', ".", 1);
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !key.is_empty() && key.len() <= MAX_NAME && key.chars().all(valid) {
        return key;
    }
    use sha2::{Digest, Sha256};
    let digest = hex::encode(Sha256::digest(instance_name.as_bytes()));
    format!("sha256.{}", &digest[..32])
}

/// A VRRPv2 PASS password held in memory. Its `Debug` form is redacted, so a plan, an
/// instance or an error printed with `{:?}` never shows it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Password(String);

impl Password {
    /// The password text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// SHA-256 (hex) of the password: compares two passwords without showing either.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(self.0.as_bytes()))
    }
}

impl std::ops::Deref for Password {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Password {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

/// Serialises as `"<redacted>"`: a password is written out only on purpose, through
/// [`Password::as_str`] (the operator's Secret data, the agent's adverts).
impl serde::Serialize for Password {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_secret_keys_and_distinct() {
        assert_eq!(auth_key("team-a/web.v1"), "team-a.web.v1");
        assert_eq!(auth_key("ns/web"), "ns.web");
        let long = format!("ns/{}", "x".repeat(253));
        let k = auth_key(&long);
        assert!(k.starts_with("sha256.") && k.len() == 39, "{k}");
        assert_eq!(k, auth_key(&long), "stable");
        assert_ne!(k, auth_key(&format!("ns/{}", "y".repeat(253))));
    }

    #[test]
    fn secret_names_and_redaction() {
        assert_eq!(auth_secret_name("n1"), "kube-vrrp-auth-n1");
        let long = "n".repeat(238);
        assert_eq!(auth_secret_name(&long), format!("kube-vrrp-auth-{long}"));
        let longer = auth_secret_name(&"n".repeat(239));
        assert_eq!(longer.len(), 15 + 32, "{longer}");
        assert_ne!(longer, auth_secret_name(&"m".repeat(239)));
        let p = Password::from("s3cret");
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        assert_eq!(
            format!("{:?}", Some(p.clone())),
            "Some(Password(<redacted>))"
        );
        assert_eq!(p.as_str(), "s3cret");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"<redacted>\"");
        assert_eq!(p.digest().len(), 64);
    }

    #[test]
    fn an_instance_never_carries_its_password_in_json() {
        let ri = crate::ResolvedInstance {
            name: "ns/web".into(),
            auth_pass: Some("s3cret".into()),
            auth_key: Some(auth_key("ns/web")),
            ..Default::default()
        };
        let json = serde_json::to_string(&ri).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains("\"authKey\":\"ns.web\""), "{json}");
        assert!(!format!("{ri:?}").contains("s3cret"));
        // An old-style VRRPNode's authPass is not taken from the API either.
        let mut old: serde_json::Value = serde_json::from_str(&json).unwrap();
        old["authPass"] = "s3cret".into();
        let back: crate::ResolvedInstance = serde_json::from_value(old).unwrap();
        assert_eq!(back.auth_pass, None);
        assert_eq!(back.auth_key.as_deref(), Some("ns.web"));
        let view = crate::vrrpnode::adoption_view(&ri, "eth0", "192.0.2.1");
        let text = view.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("authKey"),
            "{text}"
        );
        assert_eq!(view["authPassSha256"], Password::from("s3cret").digest());
    }

    /// A static agent's instance (password from keepalived.conf) and the in-cluster one
    /// (password from the node's Secret under authKey) agree for adoption exactly when their
    /// passwords are equal.
    #[test]
    fn adoption_compares_passwords_not_their_source() {
        let base = crate::ResolvedInstance {
            name: "VI_1".into(),
            auth_pass: Some("12345".into()),
            ..Default::default()
        };
        let mut cluster = base.clone();
        cluster.name = "ns/web".into();
        cluster.auth_key = Some(auth_key("ns/web"));
        let view =
            |ri: &crate::ResolvedInstance| crate::vrrpnode::adoption_view(ri, "eth0", "192.0.2.1");
        assert_eq!(view(&base), view(&cluster));
        cluster.auth_pass = Some("54321".into());
        assert_eq!(
            crate::vrrpnode::adoption_differences(&view(&base), &view(&cluster)),
            vec!["authPassSha256".to_string()]
        );
        cluster.auth_pass = None;
        assert_ne!(view(&base), view(&cluster));
    }
}
