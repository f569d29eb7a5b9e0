//! The record of VIPs this agent added, and the clean-up of leftovers from an earlier life.
//!
//! The record is a small JSON file (`vips.json`) in the agent's `--state-dir`. It is written
//! atomically: a temporary file in the same directory, `fsync`ed, renamed over the record,
//! then the directory `fsync`ed — so whatever stops the agent or the host, the record read
//! back is the old or the new version, never a torn or zero-length file (ext4's delayed
//! allocation can otherwise leave one after a crash). The cost is two fsyncs per change,
//! paid on the VIP worker, not in the protocol loop. Write-ahead discipline for callers:
//!
//! 1. [`VipRecord::record`] a VIP *before* asking the kernel to add it;
//! 2. [`VipRecord::forget`] it only *after* the kernel removed it.
//!
//! Then whatever happens (SIGKILL between the two steps, a panic), every VIP this agent may
//! have left on the host is in the record, and [`cleanup_stale`] at the next start removes
//! those the new life does not hold. A missing file is an empty record; a corrupt one is
//! logged, kept aside as `vips.json.corrupt`, and treated as empty — the agent never fails to
//! start because of it. Such a record (or an empty one) is not [`VipRecord::trusted`]: the
//! daemon then also sweeps, once its first configuration is applied, every configured VIP
//! bound on its interface that no instance of ours holds as MASTER ([`strays`]).
//!
//! [`VipManager`] bundles the record with a [`Netlink`] handle and follows that discipline
//! for the caller.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::net::netlink::{Interface, Netlink, Vip};

/// File name of the record inside the state directory.
pub const RECORD_FILE: &str = "vips.json";
const FORMAT_VERSION: u32 = 1;

/// One VIP in the record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RecordedVip {
    /// Interface name (indexes change across reboots; names are what the config uses).
    pub interface: String,
    /// Address and prefix length.
    pub address: IpNet,
    /// IPv4 label, if one was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

impl RecordedVip {
    /// Same interface and address (labels do not matter for "is this held").
    fn same_place(&self, other: &RecordedVip) -> bool {
        self.interface == other.interface && self.address == other.address
    }
}

impl From<&Vip> for RecordedVip {
    fn from(v: &Vip) -> Self {
        RecordedVip {
            interface: v.ifname().to_owned(),
            address: v.address(),
            label: v.label().map(str::to_owned),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RecordFile {
    version: u32,
    vips: Vec<RecordedVip>,
}

/// The on-disk record of VIPs added by this agent (see the module docs).
#[derive(Debug)]
pub struct VipRecord {
    path: PathBuf,
    vips: BTreeSet<RecordedVip>,
    trusted: bool,
    /// Failed writes so far (a full or read-only disk), exported as a metric.
    write_failures: u64,
}

impl VipRecord {
    /// Loads the record from `state_dir`. Never fails: a missing file is an empty record, an
    /// unreadable or corrupt one is logged and treated as empty.
    pub fn load(state_dir: &Path) -> VipRecord {
        let path = state_dir.join(RECORD_FILE);
        let vips: BTreeSet<RecordedVip> = match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<RecordFile>(&bytes) {
                Ok(f) if f.version == FORMAT_VERSION => f.vips.into_iter().collect(),
                Ok(f) => {
                    tracing::warn!(path = %path.display(), version = f.version,
                        "VIP record has an unknown format version; ignoring it");
                    set_aside(&path);
                    BTreeSet::new()
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e,
                        "VIP record is corrupt; ignoring it (kept as {RECORD_FILE}.corrupt)");
                    set_aside(&path);
                    BTreeSet::new()
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeSet::new(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e,
                    "cannot read the VIP record; starting with an empty one");
                BTreeSet::new()
            }
        };
        let trusted = !vips.is_empty();
        VipRecord {
            path,
            vips,
            trusted,
            write_failures: 0,
        }
    }

    /// Whether the record loaded at start names at least one VIP from a readable file of
    /// the current format. When it does not (missing, unreadable, corrupt, foreign or empty),
    /// the agent cannot tell what an earlier life left bound, and sweeps the configured VIPs
    /// once its first configuration is applied (see [`strays`]).
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// Where the record lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recorded VIPs, sorted.
    pub fn vips(&self) -> impl Iterator<Item = &RecordedVip> {
        self.vips.iter()
    }

    /// Whether `vip` (interface + address) is recorded.
    pub fn contains(&self, vip: &RecordedVip) -> bool {
        self.vips.iter().any(|v| v.same_place(vip))
    }

    /// Adds VIPs to the record and writes it. Call before adding them to the kernel. Writes
    /// nothing when all were already recorded.
    pub fn record<'a>(
        &mut self,
        vips: impl IntoIterator<Item = &'a RecordedVip>,
    ) -> Result<(), Error> {
        let mut changed = false;
        for v in vips {
            if let Some(old) = self.vips.iter().find(|o| o.same_place(v)).cloned() {
                if old.label == v.label {
                    continue;
                }
                self.vips.remove(&old);
            }
            self.vips.insert(v.clone());
            changed = true;
        }
        if changed { self.persist() } else { Ok(()) }
    }

    /// Removes VIPs from the record and writes it. Call after the kernel removed them. Writes
    /// nothing when none was recorded.
    pub fn forget<'a>(
        &mut self,
        vips: impl IntoIterator<Item = &'a RecordedVip>,
    ) -> Result<(), Error> {
        let before = self.vips.len();
        for v in vips {
            self.vips.retain(|o| !o.same_place(v));
        }
        if self.vips.len() != before {
            self.persist()
        } else {
            Ok(())
        }
    }

    /// How many writes of the record have failed so far (the disk full or read-only): the
    /// record then lags the kernel, and a crash could leave VIPs it does not name.
    pub fn write_failures(&self) -> u64 {
        self.write_failures
    }

    /// Writes the record atomically, counting a failure.
    fn persist(&mut self) -> Result<(), Error> {
        let r = self.write_file();
        if r.is_err() {
            self.write_failures += 1;
        }
        r
    }

    fn write_file(&self) -> Result<(), Error> {
        let dir = self.path.parent().unwrap_or_else(|| Path::new("."));
        let ctx = |what: &str| format!("{what} the VIP record {}", self.path.display());
        fs::create_dir_all(dir).map_err(|e| Error::io(ctx("creating the directory of"), e))?;
        let body = serde_json::to_vec_pretty(&RecordFile {
            version: FORMAT_VERSION,
            vips: self.vips.iter().cloned().collect(),
        })
        .map_err(|e| Error::io(ctx("serializing"), io::Error::other(e)))?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &self.path)?;
            // The rename itself is durable only once the directory is.
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(ctx("writing"), e)
        })
    }
}

fn set_aside(path: &Path) {
    let aside = path.with_extension("json.corrupt");
    if let Err(e) = fs::rename(path, &aside) {
        tracing::warn!(path = %path.display(), error = %e, "cannot move the bad VIP record aside");
    }
}

/// The sweep after an untrusted record: of the `configured` VIPs (interface + address),
/// those present on their interface in `interfaces` and not in `held` (the VIPs of the
/// instances that are MASTER now). Each is returned once, in `configured` order.
pub fn strays<'a>(
    configured: impl IntoIterator<Item = &'a RecordedVip>,
    held: &[RecordedVip],
    interfaces: &[Interface],
) -> Vec<RecordedVip> {
    let mut out: Vec<RecordedVip> = Vec::new();
    for v in configured {
        let present = interfaces
            .iter()
            .filter(|i| i.name == v.interface)
            .any(|i| i.addresses.iter().any(|a| a.address == v.address));
        if present && !held.iter().any(|h| h.same_place(v)) && !out.iter().any(|o| o.same_place(v))
        {
            out.push(v.clone());
        }
    }
    out
}

/// What [`cleanup_stale`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    /// Recorded VIPs that were still on their interface and have been removed.
    pub removed: Vec<RecordedVip>,
    /// Recorded VIPs that were already gone (address or interface); dropped from the record.
    pub already_gone: Vec<RecordedVip>,
    /// Recorded VIPs that could not be removed (kept in the record for the next try), with why.
    pub failed: Vec<(RecordedVip, String)>,
}

/// At start: removes every VIP the record holds from an earlier life that is not in
/// `held_now`, and drops it from the record. Individual failures are logged, reported and kept
/// in the record; only failing to list interfaces or to write the record is an error.
pub async fn cleanup_stale(
    netlink: &Netlink,
    record: &mut VipRecord,
    held_now: &[RecordedVip],
) -> Result<CleanupReport, Error> {
    let recorded: Vec<RecordedVip> = record.vips().cloned().collect();
    let report = remove_stale(netlink, &recorded, held_now).await?;
    record.forget(report.removed.iter().chain(report.already_gone.iter()))?;
    Ok(report)
}

/// The kernel side of [`cleanup_stale`]: removes the stale VIPs, leaves the record alone.
async fn remove_stale(
    netlink: &Netlink,
    recorded: &[RecordedVip],
    held_now: &[RecordedVip],
) -> Result<CleanupReport, Error> {
    let stale: Vec<RecordedVip> = recorded
        .iter()
        .filter(|v| !held_now.iter().any(|h| h.same_place(v)))
        .cloned()
        .collect();
    let mut report = CleanupReport::default();
    if stale.is_empty() {
        return Ok(report);
    }
    let interfaces = netlink.interfaces().await?;
    let mut to_remove: Vec<(RecordedVip, Vip)> = Vec::new();
    for v in stale {
        let present = interfaces
            .iter()
            .find(|i| i.name == v.interface)
            .and_then(|i| {
                i.addresses
                    .iter()
                    .any(|a| a.address == v.address)
                    .then_some(i.index)
            });
        match present {
            None => report.already_gone.push(v),
            Some(ifindex) => match Vip::new(&v.interface, ifindex, v.address, None) {
                Ok(vip) => to_remove.push((v, vip)),
                Err(e) => report.failed.push((v, e.to_string())),
            },
        }
    }
    let vips: Vec<Vip> = to_remove.iter().map(|(_, vip)| vip.clone()).collect();
    for ((rec, _), res) in to_remove.into_iter().zip(netlink.remove_vips(&vips).await) {
        match res {
            Ok(()) => {
                tracing::info!(vip = %rec.address, interface = %rec.interface,
                    "removed a VIP left over from an earlier run");
                report.removed.push(rec);
            }
            Err(e) => {
                tracing::warn!(vip = %rec.address, interface = %rec.interface, error = %e,
                    "cannot remove a VIP left over from an earlier run");
                report.failed.push((rec, e.to_string()));
            }
        }
    }
    Ok(report)
}

/// VIP changes with the write-ahead record kept for the caller: [`VipManager::add`] records
/// before adding, [`VipManager::remove`] forgets after removing. Cheap to clone; meant to be
/// moved into a spawned task so the protocol loop never waits for netlink or `fsync` (the
/// record is written on tokio's blocking pool).
///
/// If the record cannot be written, the VIPs are still added (holding the address matters
/// more than the leftover clean-up) and the failure is logged as a warning.
#[derive(Clone, Debug)]
pub struct VipManager {
    netlink: Netlink,
    record: Arc<Mutex<VipRecord>>,
}

impl VipManager {
    /// Failed writes of the record so far ([`VipRecord::write_failures`]).
    pub fn record_write_failures(&self) -> u64 {
        lock(&self.record).write_failures()
    }

    /// Manages VIPs through `netlink`, keeping `record`.
    pub fn new(netlink: Netlink, record: VipRecord) -> VipManager {
        VipManager {
            netlink,
            record: Arc::new(Mutex::new(record)),
        }
    }

    /// The same record, managed through another netlink connection (the VIP worker's own).
    pub fn with_netlink(&self, netlink: Netlink) -> VipManager {
        VipManager {
            netlink,
            record: Arc::clone(&self.record),
        }
    }

    /// The netlink handle in use.
    pub fn netlink(&self) -> &Netlink {
        &self.netlink
    }

    /// The VIPs currently recorded.
    pub fn recorded(&self) -> Vec<RecordedVip> {
        lock(&self.record).vips().cloned().collect()
    }

    /// [`cleanup_stale`] with this manager's record (run once at start). Entries recorded by
    /// concurrent [`VipManager::add`] calls are kept.
    pub async fn cleanup_stale(&self, held_now: &[RecordedVip]) -> Result<CleanupReport, Error> {
        let recorded = self.recorded();
        let report = remove_stale(&self.netlink, &recorded, held_now).await?;
        let done: Vec<RecordedVip> = report
            .removed
            .iter()
            .chain(report.already_gone.iter())
            .cloned()
            .collect();
        self.update_record(done, false).await?;
        Ok(report)
    }

    /// Records, then adds (replace semantics) the VIPs in order; one result per VIP.
    pub async fn add(&self, vips: &[Vip]) -> Vec<Result<(), Error>> {
        let entries: Vec<RecordedVip> = vips.iter().map(RecordedVip::from).collect();
        if let Err(e) = self.update_record(entries, true).await {
            tracing::warn!(error = %e, "cannot record the VIPs being added; adding them anyway");
        }
        self.netlink.add_vips(vips).await
    }

    /// Removes the VIPs in order, then forgets those that are gone; one result per VIP.
    pub async fn remove(&self, vips: &[Vip]) -> Vec<Result<(), Error>> {
        let results = self.netlink.remove_vips(vips).await;
        let gone: Vec<RecordedVip> = vips
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_ok())
            .map(|(v, _)| RecordedVip::from(v))
            .collect();
        if let Err(e) = self.update_record(gone, false).await {
            tracing::warn!(error = %e, "cannot update the VIP record after removing VIPs");
        }
        results
    }

    /// Takes VIPs out of the record without touching the kernel (they were handed over to
    /// another agent, which records them itself).
    pub async fn forget(&self, vips: &[Vip]) -> Result<(), Error> {
        let entries: Vec<RecordedVip> = vips.iter().map(RecordedVip::from).collect();
        self.update_record(entries, false).await
    }

    async fn update_record(&self, entries: Vec<RecordedVip>, add: bool) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let record = Arc::clone(&self.record);
        tokio::task::spawn_blocking(move || {
            let mut r = lock(&record);
            if add {
                r.record(entries.iter())
            } else {
                r.forget(entries.iter())
            }
        })
        .await
        .map_err(|e| Error::io("updating the VIP record", io::Error::other(e)))?
    }
}

/// Locks the record; a panic elsewhere while holding it leaves data that is still consistent
/// (every change is a whole-set update), so poisoning is ignored.
fn lock(m: &Mutex<VipRecord>) -> std::sync::MutexGuard<'_, VipRecord> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rv(ifname: &str, net: &str, label: Option<&str>) -> RecordedVip {
        RecordedVip {
            interface: ifname.into(),
            address: net.parse().unwrap(),
            label: label.map(Into::into),
        }
    }

    #[test]
    fn record_round_trips_and_is_atomic() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = VipRecord::load(dir.path());
        assert_eq!(r.vips().count(), 0);
        r.record([
            &rv("eth0", "192.0.2.10/24", Some("eth0:vip")),
            &rv("eth0", "2001:db8::10/64", None),
        ])
        .unwrap();
        let again = VipRecord::load(dir.path());
        assert_eq!(again.vips().count(), 2);
        assert!(again.contains(&rv("eth0", "192.0.2.10/24", None)));
        // No temporary file left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![RECORD_FILE.to_string()]);
        r.forget([&rv("eth0", "192.0.2.10/24", None)]).unwrap();
        let again = VipRecord::load(dir.path());
        assert_eq!(
            again.vips().cloned().collect::<Vec<_>>(),
            vec![rv("eth0", "2001:db8::10/64", None)]
        );
    }

    #[test]
    fn relabel_replaces_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = VipRecord::load(dir.path());
        r.record([&rv("eth0", "192.0.2.10/24", None)]).unwrap();
        r.record([&rv("eth0", "192.0.2.10/24", Some("eth0:x"))])
            .unwrap();
        let v: Vec<_> = VipRecord::load(dir.path()).vips().cloned().collect();
        assert_eq!(v, vec![rv("eth0", "192.0.2.10/24", Some("eth0:x"))]);
    }

    #[test]
    fn failed_writes_are_counted_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the state directory should be: every write fails, as on a
        // full or read-only disk.
        let blocked = dir.path().join("state");
        std::fs::write(&blocked, b"").unwrap();
        let mut r = VipRecord::load(&blocked);
        let v = RecordedVip {
            interface: "eth0".into(),
            address: "192.0.2.200/24".parse().unwrap(),
            label: None,
        };
        assert!(r.record([&v]).is_err());
        assert!(r.forget([&v]).is_err());
        assert_eq!(r.write_failures(), 2);
        // Writable again: no new failure.
        let mut ok = VipRecord::load(dir.path());
        ok.record([&v]).unwrap();
        assert_eq!(ok.write_failures(), 0);
    }

    #[test]
    fn corrupt_or_foreign_file_is_treated_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        fs::write(&path, b"{ this is not json").unwrap();
        let r = VipRecord::load(dir.path());
        assert_eq!(r.vips().count(), 0);
        assert!(dir.path().join("vips.json.corrupt").exists());
        fs::write(&path, br#"{"version": 99, "vips": []}"#).unwrap();
        assert_eq!(VipRecord::load(dir.path()).vips().count(), 0);
    }

    #[test]
    fn trust_needs_a_valid_non_empty_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        assert!(!VipRecord::load(dir.path()).trusted(), "missing");
        fs::write(&path, b"").unwrap();
        assert!(!VipRecord::load(dir.path()).trusted(), "zero-length");
        fs::write(&path, b"{ torn").unwrap();
        assert!(!VipRecord::load(dir.path()).trusted(), "corrupt");
        fs::write(&path, br#"{"version": 1, "vips": []}"#).unwrap();
        assert!(!VipRecord::load(dir.path()).trusted(), "empty");
        let mut r = VipRecord::load(dir.path());
        r.record([&rv("eth0", "192.0.2.10/24", None)]).unwrap();
        assert!(VipRecord::load(dir.path()).trusted());
    }

    fn iface(index: u32, name: &str, addrs: &[&str]) -> Interface {
        crate::daemon::place::tests::iface(name, index, addrs)
    }

    #[test]
    fn strays_are_configured_present_and_not_held() {
        let interfaces = [
            iface(
                2,
                "eth0",
                &["192.0.2.1/24", "192.0.2.10/24", "192.0.2.11/24"],
            ),
            iface(3, "eth1", &["198.51.100.1/24", "2001:db8::10/64"]),
        ];
        let configured = [
            rv("eth0", "192.0.2.10/24", None), // bound, held by a master: kept
            rv("eth0", "192.0.2.11/24", None), // bound, not held: stray
            rv("eth0", "192.0.2.12/24", None), // not bound: nothing to do
            rv("eth1", "192.0.2.11/24", None), // bound on another interface only
            rv("eth1", "2001:db8::10/64", None), // bound, not held: stray
            rv("eth0", "192.0.2.11/24", None), // listed twice: once
            rv("eth0", "192.0.2.1/25", None),  // another prefix length: not ours
        ];
        let held = [rv("eth0", "192.0.2.10/24", Some("eth0:vip"))];
        assert_eq!(
            strays(&configured, &held, &interfaces),
            vec![
                rv("eth0", "192.0.2.11/24", None),
                rv("eth1", "2001:db8::10/64", None)
            ]
        );
        assert!(strays(&configured, &held, &[]).is_empty());
    }

    #[test]
    fn missing_state_dir_is_created_on_write() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let mut r = VipRecord::load(&sub);
        r.record([&rv("eth0", "192.0.2.10/32", None)]).unwrap();
        assert!(sub.join(RECORD_FILE).exists());
    }
}
