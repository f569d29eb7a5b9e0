//! The PASS passwords of this node's instances: a watch on its own auth Secret only.
//!
//! The operator keeps the passwords in `kube-vrrp-auth-<node>` ([`crds::auth::auth_secret_name`])
//! in the release namespace, one data key per instance; a VRRPNode instance names its key
//! (`authKey`). The watch uses a field selector on the Secret's name, so the API server sends
//! this node's Secret and nothing else. The passwords are held in memory only (never cached on
//! disk, never logged): after a restart they are read again, and until then an instance that
//! needs one does not run ([`with_passwords`] leaves it without, and the daemon refuses it
//! naming `authKey`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crds::ResolvedInstance;
use crds::auth::Password;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use super::source::ApiHealth;

/// What the agent knows of its auth Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AuthData {
    /// Not read yet (the API has not answered since the start).
    #[default]
    Unknown,
    /// Read: the Secret does not exist.
    Missing,
    /// Read: its passwords by key (keys whose value is not UTF-8 text are left out).
    Present(BTreeMap<String, Password>),
}

impl AuthData {
    /// The data of a Secret as read from the API.
    pub fn from_secret(s: &Secret) -> Self {
        let passwords = s
            .data
            .iter()
            .flatten()
            .filter_map(|(k, v)| {
                let text = String::from_utf8(v.0.clone()).ok()?;
                Some((k.clone(), Password::from(text)))
            })
            .collect();
        AuthData::Present(passwords)
    }

    /// Why `key` has no password, or `None` when it has one.
    pub fn missing_reason(&self, key: &str, secret: &str) -> Option<String> {
        match self {
            AuthData::Present(m) if m.contains_key(key) => None,
            AuthData::Present(_) => Some(format!(
                "key {key:?} is missing from Secret {secret} (or is not UTF-8 text)"
            )),
            AuthData::Missing => Some(format!("Secret {secret} does not exist")),
            AuthData::Unknown => Some(format!(
                "Secret {secret} has not been read yet (Kubernetes API not reachable)"
            )),
        }
    }
}

/// The instances with their passwords filled in from `auth` (each instance that has an
/// `authKey`). One whose password is not there keeps none, and the reason is logged once per
/// call with the key and the Secret's name, never a password; the daemon then refuses to run
/// it (an error naming `authKey`), so no instance runs without its authentication.
pub fn with_passwords(
    instances: Vec<ResolvedInstance>,
    auth: &AuthData,
    secret: &str,
) -> Vec<ResolvedInstance> {
    instances
        .into_iter()
        .map(|mut i| {
            i.auth_pass = None;
            if let Some(key) = i.auth_key.as_deref() {
                match (auth, auth.missing_reason(key, secret)) {
                    (AuthData::Present(m), None) => i.auth_pass = m.get(key).cloned(),
                    (_, reason) => {
                        let reason = reason.unwrap_or_default();
                        tracing::error!(instance = %i.name, auth_key = %key, %reason, "no password for this instance; it does not run until its auth Secret holds one");
                    }
                }
            }
            i
        })
        .collect()
}

/// The watcher configuration for node `node`'s auth Secret: that object only.
pub fn watcher_config(node: &str) -> watcher::Config {
    super::watch_config().fields(&format!(
        "metadata.name={}",
        crds::auth::auth_secret_name(node)
    ))
}

/// What the watch stream means for the auth data (pure).
#[derive(Debug, Default)]
pub struct AuthTracker {
    listing: Option<Option<AuthData>>,
}

impl AuthTracker {
    /// Feed one watcher event; returns the new auth data when the event decides it.
    pub fn on_event(&mut self, node: &str, event: watcher::Event<Secret>) -> Option<AuthData> {
        let name = crds::auth::auth_secret_name(node);
        let ours = |s: &Secret| s.metadata.name.as_deref() == Some(name.as_str());
        match event {
            watcher::Event::Apply(s) if ours(&s) => Some(AuthData::from_secret(&s)),
            watcher::Event::Delete(s) if ours(&s) => Some(AuthData::Missing),
            watcher::Event::Init => {
                self.listing = Some(None);
                None
            }
            watcher::Event::InitApply(s) if ours(&s) => {
                self.listing = Some(Some(AuthData::from_secret(&s)));
                None
            }
            watcher::Event::InitDone => self.listing.take().map(|l| l.unwrap_or(AuthData::Missing)),
            _ => None,
        }
    }
}

/// Follow node `node`'s auth Secret and publish its data on `tx` until `tx` has no receivers.
pub async fn run(
    api: Api<Secret>,
    node: String,
    tx: watch::Sender<AuthData>,
    health: Arc<ApiHealth>,
) {
    let mut tracker = AuthTracker::default();
    let watch = || {
        watcher(api.clone(), watcher_config(&node))
            .backoff(super::watch_backoff())
            .boxed()
    };
    let mut stream = watch();
    let mut stalls = health.stalls.clone();
    let mut failing = false;
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            () = super::source::stall_ended(&mut stalls) => {
                stream = watch();
                continue;
            }
        };
        let Some(item) = item else { return };
        match item {
            Ok(event) => {
                failing = false;
                if let Some(data) = tracker.on_event(&node, event) {
                    let changed = tx.send_if_modified(|current| {
                        let changed = *current != data;
                        if changed {
                            *current = data.clone();
                        }
                        changed
                    });
                    if changed {
                        let keys = match &data {
                            AuthData::Present(m) => m.len(),
                            _ => 0,
                        };
                        // The number of keys only: a password is never logged.
                        tracing::info!(secret = %crds::auth::auth_secret_name(&node), keys, "auth Secret read");
                    }
                }
            }
            Err(e) => {
                // The VRRPNode watch reports API outages ([`ApiHealth`]); this one only says
                // once that it cannot read the Secret (e.g. RBAC).
                if !failing {
                    tracing::warn!(error = %e, secret = %crds::auth::auth_secret_name(&node), "cannot watch the auth Secret; retrying");
                }
                failing = true;
                health
                    .errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(node: &str, data: &[(&str, &str)]) -> Secret {
        let mut s = Secret::default();
        s.metadata.name = Some(crds::auth::auth_secret_name(node));
        s.data = Some(
            data.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        );
        s
    }

    fn inst(name: &str, key: Option<&str>) -> ResolvedInstance {
        ResolvedInstance {
            name: name.into(),
            auth_key: key.map(String::from),
            ..Default::default()
        }
    }

    #[test]
    fn resolves_auth_keys_from_the_node_secret() {
        let secret_name = "kube-vrrp/kube-vrrp-auth-n1";
        let data = AuthData::from_secret(&secret("n1", &[("ns.web", "s3cret"), ("ns.db", "pw")]));
        let out = with_passwords(
            vec![
                inst("ns/web", Some("ns.web")),
                inst("ns/plain", None),
                inst("ns/gone", Some("ns.gone")),
            ],
            &data,
            secret_name,
        );
        assert_eq!(out[0].auth_pass.as_deref(), Some("s3cret"));
        assert_eq!(out[1].auth_pass, None, "no authKey, no password");
        assert_eq!(out[2].auth_pass, None, "missing key");
        assert_eq!(
            data.missing_reason("ns.gone", secret_name).unwrap(),
            "key \"ns.gone\" is missing from Secret kube-vrrp/kube-vrrp-auth-n1 (or is not UTF-8 text)"
        );
        // Not read yet, or no Secret: nobody gets a password, and the reason says which.
        for (d, why) in [
            (AuthData::Unknown, "has not been read yet"),
            (AuthData::Missing, "does not exist"),
        ] {
            let out = with_passwords(vec![inst("ns/web", Some("ns.web"))], &d, secret_name);
            assert_eq!(out[0].auth_pass, None);
            assert!(
                d.missing_reason("ns.web", secret_name)
                    .unwrap()
                    .contains(why)
            );
        }
        // A password a stale instance carried is not kept when its key is gone.
        let mut stale = inst("ns/web", Some("ns.web"));
        stale.auth_pass = Some("old".into());
        let out = with_passwords(
            vec![stale],
            &AuthData::Present(Default::default()),
            secret_name,
        );
        assert_eq!(out[0].auth_pass, None);
    }

    #[test]
    fn follows_only_its_own_secret() {
        let c = watcher_config("node-a");
        assert_eq!(
            c.field_selector.as_deref(),
            Some("metadata.name=kube-vrrp-auth-node-a")
        );
        let mut t = AuthTracker::default();
        assert_eq!(t.on_event("a", watcher::Event::Init), None);
        assert_eq!(
            t.on_event("a", watcher::Event::InitDone),
            Some(AuthData::Missing)
        );
        t.on_event("a", watcher::Event::Init);
        t.on_event("a", watcher::Event::InitApply(secret("a", &[("k", "v")])));
        assert_eq!(
            t.on_event("a", watcher::Event::InitDone),
            Some(AuthData::Present(BTreeMap::from([(
                "k".to_string(),
                Password::from("v")
            )])))
        );
        assert_eq!(
            t.on_event("a", watcher::Event::Apply(secret("b", &[("k", "x")]))),
            None,
            "another node's Secret is ignored"
        );
        assert_eq!(
            t.on_event("a", watcher::Event::Delete(secret("a", &[]))),
            Some(AuthData::Missing)
        );
    }
}
