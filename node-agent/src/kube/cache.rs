//! The last applied `VRRPNode.spec`, cached on local disk.
//!
//! Written atomically (temporary file, fsync, rename) after every applied change; read at start
//! so the agent resumes the last configuration even when the API server is unreachable. A
//! corrupt cache is reported and ignored, never fatal: the API will supply a fresh spec.
//! It holds no password: an instance with PASS authentication is cached with its `authKey`
//! only ([`crds::ResolvedInstance::auth_pass`] is never serialised), and the password is read
//! from the node's auth Secret again after a restart.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crds::VRRPNodeSpec;

use crate::Error;

/// File name of the cache inside the state directory.
pub const CACHE_FILE: &str = "vrrpnode-spec.json";

/// The on-disk cache of one node's spec.
#[derive(Debug, Clone)]
pub struct ConfigCache {
    path: PathBuf,
}

impl ConfigCache {
    /// A cache in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            path: state_dir.join(CACHE_FILE),
        }
    }

    /// Where the cache lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cached spec: `Ok(None)` when there is none, an error naming the file and the JSON
    /// path when it cannot be read or parsed.
    pub fn load(&self) -> Result<Option<VRRPNodeSpec>, Error> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading {}", self.path.display()), e)),
        };
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de).map(Some).map_err(|e| {
            Error::Config(format!(
                "{}: {} at {}",
                self.path.display(),
                e.inner(),
                e.path()
            ))
        })
    }

    /// Store `spec` atomically.
    pub fn store(&self, spec: &VRRPNodeSpec) -> Result<(), Error> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let json = serde_json::to_vec_pretty(spec)
            .map_err(|e| Error::Config(format!("cannot serialise the spec: {e}")))?;
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            // Owner-only (0600): the cached plan is the node's configuration, not for other
            // local users (a leftover temp file keeps its mode, so it is set again).
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crds::ResolvedInstance;

    #[test]
    fn round_trips_and_survives_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ConfigCache::new(dir.path());
        assert!(cache.load().unwrap().is_none());
        let spec = VRRPNodeSpec {
            instances: vec![ResolvedInstance {
                name: "default/web".into(),
                virtual_router_id: 51,
                ..Default::default()
            }],
            config_hash: "abc".into(),
        };
        // A leftover world-readable temp file does not make the cache readable by others.
        let tmp = cache.path().with_extension("json.tmp");
        std::fs::write(&tmp, b"old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        cache.store(&spec).unwrap();
        let mode = std::fs::metadata(cache.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "cache mode {mode:o}");
        assert_eq!(cache.load().unwrap().as_ref(), Some(&spec));
        // A password filled in from the auth Secret never reaches the disk: the cache keeps
        // the authKey only, and the password is read from the Secret again after a restart.
        let mut with_pass = spec.clone();
        with_pass.instances[0].auth_key = Some("default.web".into());
        with_pass.instances[0].auth_pass = Some("s3cret".into());
        cache.store(&with_pass).unwrap();
        let text = std::fs::read_to_string(cache.path()).unwrap();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("\"authKey\": \"default.web\""), "{text}");
        let back = cache.load().unwrap().unwrap();
        assert_eq!(back.instances[0].auth_pass, None);
        assert_eq!(back.instances[0].auth_key.as_deref(), Some("default.web"));
        std::fs::write(cache.path(), b"{\"instances\": [{\"name\": 5}]}").unwrap();
        let err = cache.load().unwrap_err().to_string();
        assert!(err.contains("instances[0].name"), "{err}");
    }
}
