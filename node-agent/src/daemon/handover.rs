//! One agent per instance per host, and the hand-over between two agents on one host.
//!
//! **Claims.** An agent runs an instance only while it holds the instance's *claim*: the
//! abstract Unix socket `@kube-vrrp/<interface>/<family>/<vrid>` bound in the host's network
//! namespace. Binding is atomic and exclusive, and the kernel releases the name when the
//! process dies, so two agents on one host (a static pod and the DaemonSet, both with
//! `hostNetwork`) can never both run VRID 51 on `eth0`: the second one holds its instance and
//! retries. Abstract names live in the network namespace, so agents in different namespaces
//! (the test labs) never see each other's, and no shared directory is needed.
//!
//! **Hand-over.** The claim's holder serves a small line-delimited JSON protocol on it. A
//! successor (an in-cluster agent whose instance has `adoptStatic`) connects and asks
//! `{"op":"describe"}`; the holder answers with its [`Offer`]: state, priority and the
//! [`crds::vrrpnode::adoption_view`] of its instance with its hash. When the hashes agree the
//! successor asks `{"op":"handOver","hash":…}`; the holder stops the instance without leaving
//! (no priority-0 advert, VIPs stay bound and leave its VIP record), releases the claim and
//! only then answers with the [`Inherited`] state (the time to the next advert, the master
//! heard, every tracker's counters). The successor binds the claim and starts the instance in
//! that state, so the wire sees the same adverts on the same cadence and the VIPs never move.
//! When the hashes differ nothing happens and the successor reports the fields that differ.
//!
//! Only processes of the same user (or root) may talk to a claim (`SO_PEERCRED`), and every
//! conversation is bounded in size and time ([`IO_TIMEOUT`], [`MAX_LINE`]).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::net::Family;
use crate::vrrp::{Inheritance, Interval, State, TrackerKind, TrackerMemory};

/// How long one conversation on a claim may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request or reply line.
pub const MAX_LINE: usize = 256 * 1024;

/// Which instance a claim is for: where it runs on this host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimKey {
    /// Interface.
    pub interface: String,
    /// Address family.
    pub family: u8,
    /// VRID.
    pub vrid: u8,
}

impl ClaimKey {
    /// The key of an instance placed on `interface`.
    pub fn new(interface: &str, family: Family, vrid: u8) -> Self {
        Self {
            interface: interface.to_string(),
            family: match family {
                Family::V4 => 4,
                Family::V6 => 6,
            },
            vrid,
        }
    }

    /// The abstract socket name (without the leading NUL).
    pub fn socket_name(&self) -> String {
        format!("kube-vrrp/{}/{}/{}", self.interface, self.family, self.vrid)
    }
}

impl std::fmt::Display for ClaimKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VRID {} (IPv{}) on {}",
            self.vrid, self.family, self.interface
        )
    }
}

/// What the holder of a claim says about its instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    /// The holder's instance name.
    pub instance: String,
    /// Its state (`MASTER`, `BACKUP`, …).
    pub state: String,
    /// Its effective priority.
    pub effective_priority: u8,
    /// [`crds::vrrpnode::adoption_hash`] of `view`.
    pub hash: String,
    /// [`crds::vrrpnode::adoption_view`] of its instance.
    pub view: serde_json::Value,
}

/// One tracker's counters on the wire (names without their VirtualIP scope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrackerWire {
    /// Kind label (`script`, `http`, …).
    pub kind: String,
    /// Name without the `NAMESPACE/NAME/` scope.
    pub name: String,
    /// Up, down, or not known yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up: Option<bool>,
    /// Rise/fall counter.
    #[serde(default)]
    pub script_result: u32,
    /// Last file value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_value: Option<i64>,
}

/// What a successor continues from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inherited {
    /// The state handed over (`MASTER`, `BACKUP`, `FAULT`, `INIT`).
    pub state: String,
    /// MASTER: microseconds from the reply to the next advert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_advert_in_us: Option<u64>,
    /// BACKUP: the master heard last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_address: Option<String>,
    /// Master_Adver_Interval in centiseconds.
    pub master_adver_interval_cs: u16,
    /// Trackers.
    #[serde(default)]
    pub trackers: Vec<TrackerWire>,
}

fn state_name(s: State) -> &'static str {
    match s {
        State::Init | State::Stop => "INIT",
        State::Backup => "BACKUP",
        State::Master => "MASTER",
        State::Fault => "FAULT",
    }
}

fn kind_of(label: &str) -> Option<TrackerKind> {
    [
        TrackerKind::Interface,
        TrackerKind::Script,
        TrackerKind::Process,
        TrackerKind::File,
        TrackerKind::Pods,
        TrackerKind::Http,
    ]
    .into_iter()
    .find(|k| k.label() == label)
}

impl Inherited {
    /// The core's hand-over as sent at `now`; tracker names lose the `scope` prefix.
    pub fn from_core(inh: &Inheritance, now: Instant, scope: Option<&str>) -> Self {
        Self {
            state: state_name(inh.state).into(),
            next_advert_in_us: inh.next_advert.map(|t| {
                u64::try_from(t.saturating_duration_since(now).as_micros()).unwrap_or(u64::MAX)
            }),
            master_address: inh.master_address.map(|a| a.to_string()),
            master_adver_interval_cs: inh.master_adver_interval.0,
            trackers: inh
                .trackers
                .iter()
                .map(|m| TrackerWire {
                    kind: m.kind.label().into(),
                    name: unscoped(&m.name, scope).into(),
                    up: m.up,
                    script_result: m.script_result,
                    file_value: m.file_value,
                })
                .collect(),
        }
    }

    /// The core's inheritance, received at `now`; tracker names get the `scope` prefix back
    /// (trackers whose kind is unknown are left out).
    pub fn to_core(&self, now: Instant, scope: Option<&str>) -> Inheritance {
        let state = match self.state.as_str() {
            "MASTER" => State::Master,
            "BACKUP" => State::Backup,
            "FAULT" => State::Fault,
            _ => State::Init,
        };
        Inheritance {
            state,
            next_advert: self
                .next_advert_in_us
                .map(|us| now + Duration::from_micros(us)),
            master_address: self.master_address.as_deref().and_then(|a| a.parse().ok()),
            master_adver_interval: Interval(self.master_adver_interval_cs),
            trackers: self
                .trackers
                .iter()
                .filter_map(|t| {
                    Some(TrackerMemory {
                        kind: kind_of(&t.kind)?,
                        name: match scope {
                            Some(p) if t.kind != TrackerKind::Interface.label() => {
                                format!("{p}{}", t.name)
                            }
                            _ => t.name.clone(),
                        },
                        up: t.up,
                        script_result: t.script_result,
                        file_value: t.file_value,
                    })
                })
                .collect(),
        }
    }
}

fn unscoped<'a>(name: &'a str, scope: Option<&str>) -> &'a str {
    scope.and_then(|p| name.strip_prefix(p)).unwrap_or(name)
}

/// The `NAMESPACE/NAME/` prefix of an instance's tracker names, when it has one.
pub fn tracker_scope(ri: &crds::ResolvedInstance) -> Option<String> {
    ri.virtual_ip
        .as_ref()
        .map(|r| format!("{}/{}/", r.namespace, r.name))
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
enum Request {
    Describe,
    #[serde(rename_all = "camelCase")]
    HandOver {
        hash: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    offer: Option<Offer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    inherited: Option<Inherited>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A request from a claim's listener to the protocol loop.
pub enum ClaimRequest {
    /// Describe the instance.
    Describe {
        /// The instance.
        instance: String,
        /// Where the answer goes (`None`: not running).
        reply: oneshot::Sender<Option<Offer>>,
    },
    /// Hand the instance over if its adoption hash is still `hash`.
    HandOver {
        /// The instance.
        instance: String,
        /// The hash the successor agreed to.
        hash: String,
        /// The inherited state, or why not.
        reply: oneshot::Sender<Result<Inherited, String>>,
    },
}

/// Why a claim could not be bound.
#[derive(Debug)]
pub enum ClaimError {
    /// Another process holds it.
    Held,
    /// Binding failed otherwise.
    Io(io::Error),
}

/// A held claim: the bound socket and the task serving it. Dropping it stops the task, which
/// releases the name.
pub struct Claim {
    key: ClaimKey,
    task: Option<JoinHandle<()>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Claim {
    /// Bind the claim for `instance` and serve it; requests go to `tx`.
    pub fn acquire(
        key: &ClaimKey,
        instance: &str,
        tx: mpsc::Sender<ClaimRequest>,
    ) -> Result<Claim, ClaimError> {
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(key.socket_name())
            .map_err(ClaimError::Io)?;
        let std_listener = match std::os::unix::net::UnixListener::bind_addr(&addr) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Err(ClaimError::Held),
            Err(e) => return Err(ClaimError::Io(e)),
        };
        std_listener.set_nonblocking(true).map_err(ClaimError::Io)?;
        let listener = tokio::net::UnixListener::from_std(std_listener).map_err(ClaimError::Io)?;
        let task = tokio::spawn(serve(listener, instance.to_string(), key.clone(), tx));
        Ok(Claim {
            key: key.clone(),
            task: Some(task),
        })
    }

    /// Let the serving task finish on its own (it is handing the instance over: it releases
    /// the name, then answers); dropping the claim would cut that short.
    pub fn detach(mut self) {
        self.task.take();
    }

    /// The key.
    pub fn key(&self) -> &ClaimKey {
        &self.key
    }

    /// True while the serving task runs (it ends after handing the instance over).
    pub fn is_held(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

fn trusted_peer(stream: &UnixStream) -> bool {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    stream
        .peer_cred()
        .is_ok_and(|c| c.uid() == me || c.uid() == 0)
}

async fn read_line(reader: &mut BufReader<UnixStream>) -> io::Result<String> {
    let mut buf = Vec::new();
    let mut limited = reader.take(MAX_LINE as u64);
    limited.read_until(b'\n', &mut buf).await?;
    if buf.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "no complete line (too long or cut short)",
        ));
    }
    String::from_utf8(buf).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
}

async fn write_json<T: Serialize>(w: &mut UnixStream, v: &T) -> io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

/// What one conversation ended with.
enum Conversation {
    Continue,
    /// Handed over: release the claim, then send this.
    HandedOver(UnixStream, Box<Reply>),
}

async fn serve(
    listener: tokio::net::UnixListener,
    instance: String,
    key: ClaimKey,
    tx: mpsc::Sender<ClaimRequest>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(instance = %instance, error = %e, "hand-over socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !trusted_peer(&stream) {
            tracing::warn!(instance = %instance, "refused a hand-over connection from another user");
            continue;
        }
        // Boxed: the conversation's state is large, and an idle claim (one per running
        // instance, waiting in `accept`) should not carry it.
        let talk = tokio::time::timeout(IO_TIMEOUT, Box::pin(converse(stream, &instance, &tx)));
        match talk.await {
            Ok(Ok(Conversation::Continue)) => {}
            Ok(Ok(Conversation::HandedOver(mut stream, reply))) => {
                // Release the claim first: the successor binds it as soon as it has the reply.
                drop(listener);
                if let Err(e) = write_json(&mut stream, &*reply).await {
                    tracing::error!(instance = %instance, error = %e, "handed over, but the reply did not reach the successor");
                }
                tracing::info!(instance = %instance, claim = %key, "handed over to another agent on this host");
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(instance = %instance, error = %e, "hand-over conversation failed")
            }
            Err(_) => tracing::warn!(instance = %instance, "hand-over conversation timed out"),
        }
    }
}

async fn converse(
    stream: UnixStream,
    instance: &str,
    tx: &mpsc::Sender<ClaimRequest>,
) -> io::Result<Conversation> {
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader).await {
            Ok(l) => l,
            // The successor hung up (e.g. after a mismatch).
            Err(e) if e.kind() == io::ErrorKind::InvalidData && reader.buffer().is_empty() => {
                return Ok(Conversation::Continue);
            }
            Err(e) => return Err(e),
        };
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                let reply = Reply {
                    error: Some(format!("bad request: {e}")),
                    ..Default::default()
                };
                write_json(reader.get_mut(), &reply).await?;
                return Ok(Conversation::Continue);
            }
        };
        let closed = || io::Error::other("the agent is stopping");
        match request {
            Request::Describe => {
                let (reply_tx, reply_rx) = oneshot::channel();
                tx.send(ClaimRequest::Describe {
                    instance: instance.to_string(),
                    reply: reply_tx,
                })
                .await
                .map_err(|_| closed())?;
                let offer = reply_rx.await.map_err(|_| closed())?;
                let reply = match offer {
                    Some(o) => Reply {
                        offer: Some(o),
                        ..Default::default()
                    },
                    None => Reply {
                        error: Some("the instance is not running".into()),
                        ..Default::default()
                    },
                };
                write_json(reader.get_mut(), &reply).await?;
            }
            Request::HandOver { hash } => {
                let (reply_tx, reply_rx) = oneshot::channel();
                tx.send(ClaimRequest::HandOver {
                    instance: instance.to_string(),
                    hash,
                    reply: reply_tx,
                })
                .await
                .map_err(|_| closed())?;
                match reply_rx.await.map_err(|_| closed())? {
                    Ok(inh) => {
                        let reply = Reply {
                            inherited: Some(inh),
                            ..Default::default()
                        };
                        return Ok(Conversation::HandedOver(
                            reader.into_inner(),
                            Box::new(reply),
                        ));
                    }
                    Err(why) => {
                        let reply = Reply {
                            error: Some(why),
                            ..Default::default()
                        };
                        write_json(reader.get_mut(), &reply).await?;
                    }
                }
            }
        }
    }
}

/// How an attempt to adopt a claimed instance ended.
#[derive(Debug)]
pub enum Negotiation {
    /// Nobody holds the claim (any more): bind it and run the instance normally.
    Free,
    /// The holder's instance agrees and was handed over.
    Adopted {
        /// What the holder said before.
        offer: Offer,
        /// What it handed over, with the instant the reply arrived.
        inherited: Inherited,
        /// When the reply arrived.
        at: Instant,
    },
    /// The holder's instance differs: nothing changed.
    Mismatch {
        /// What the holder said.
        offer: Offer,
        /// The fields that differ.
        differences: Vec<String>,
    },
    /// The conversation failed: nothing changed (or, if the holder handed over without a
    /// readable reply, the claim is free on the next attempt).
    Failed(String),
}

/// Ask the holder of `key` to hand its instance over if its adoption view hashes to `hash`;
/// `view` is ours, for naming the differences.
pub async fn negotiate(key: &ClaimKey, view: &serde_json::Value, hash: &str) -> Negotiation {
    match tokio::time::timeout(IO_TIMEOUT, negotiate_inner(key, view, hash)).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Negotiation::Free,
        Ok(Err(e)) => Negotiation::Failed(format!("hand-over from the holder of {key}: {e}")),
        Err(_) => Negotiation::Failed(format!(
            "the holder of {key} did not answer within {IO_TIMEOUT:?}"
        )),
    }
}

async fn negotiate_inner(
    key: &ClaimKey,
    view: &serde_json::Value,
    hash: &str,
) -> io::Result<Negotiation> {
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(key.socket_name())?;
    let std_stream = std::os::unix::net::UnixStream::connect_addr(&addr)?;
    std_stream.set_nonblocking(true)?;
    let stream = UnixStream::from_std(std_stream)?;
    if !trusted_peer(&stream) {
        return Ok(Negotiation::Failed(format!(
            "the holder of {key} runs as another user; not talking to it"
        )));
    }
    let mut reader = BufReader::new(stream);
    write_json(reader.get_mut(), &Request::Describe).await?;
    let reply: Reply = serde_json::from_str(&read_line(&mut reader).await?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let offer = match (reply.offer, reply.error) {
        (Some(o), _) => o,
        (None, Some(e)) => return Ok(Negotiation::Failed(format!("the holder of {key}: {e}"))),
        (None, None) => {
            return Ok(Negotiation::Failed(format!(
                "the holder of {key} sent an empty answer"
            )));
        }
    };
    if offer.hash != hash {
        let differences = crds::vrrpnode::adoption_differences(&offer.view, view);
        return Ok(Negotiation::Mismatch { offer, differences });
    }
    write_json(
        reader.get_mut(),
        &Request::HandOver {
            hash: hash.to_string(),
        },
    )
    .await?;
    let line = read_line(&mut reader).await?;
    let at = Instant::now();
    let reply: Reply =
        serde_json::from_str(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    match (reply.inherited, reply.error) {
        (Some(inherited), _) => Ok(Negotiation::Adopted {
            offer,
            inherited,
            at,
        }),
        (None, Some(e)) => Ok(Negotiation::Failed(format!(
            "the holder of {key} refused the hand-over: {e}"
        ))),
        (None, None) => Ok(Negotiation::Failed(format!(
            "the holder of {key} sent an empty answer"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ClaimKey {
        // Unique per test run: abstract names are shared by the whole namespace.
        ClaimKey {
            interface: format!("t{}", std::process::id() % 100_000),
            family: 4,
            vrid: 51,
        }
    }

    #[test]
    fn names_and_display() {
        let k = ClaimKey::new("eth0", Family::V6, 7);
        assert_eq!(k.socket_name(), "kube-vrrp/eth0/6/7");
        assert_eq!(k.to_string(), "VRID 7 (IPv6) on eth0");
    }

    #[test]
    fn inheritance_round_trips_with_rescoped_tracker_names() {
        let now = Instant::now();
        let inh = Inheritance {
            state: State::Master,
            next_advert: Some(now + Duration::from_millis(700)),
            master_address: None,
            master_adver_interval: Interval(100),
            trackers: vec![
                TrackerMemory {
                    kind: TrackerKind::Http,
                    name: "readyz".into(),
                    up: Some(true),
                    script_result: 3,
                    file_value: None,
                },
                TrackerMemory {
                    kind: TrackerKind::Interface,
                    name: "eth1".into(),
                    up: Some(true),
                    script_result: 0,
                    file_value: None,
                },
            ],
        };
        let wire = Inherited::from_core(&inh, now, None);
        assert_eq!(wire.next_advert_in_us, Some(700_000));
        let json = serde_json::to_string(&wire).unwrap();
        let back: Inherited = serde_json::from_str(&json).unwrap();
        let core = back.to_core(now, Some("kube-system/api/"));
        assert_eq!(core.state, State::Master);
        assert_eq!(core.next_advert, inh.next_advert);
        assert_eq!(core.trackers[0].name, "kube-system/api/readyz");
        assert_eq!(core.trackers[1].name, "eth1", "interfaces are never scoped");
        // And back the other way, unscoped again.
        let again = Inherited::from_core(&core, now, Some("kube-system/api/"));
        assert_eq!(again.trackers[0].name, "readyz");
    }

    #[tokio::test]
    async fn a_claim_is_exclusive_and_released_when_dropped() {
        let k = key();
        let (tx, _rx) = mpsc::channel(4);
        let first = Claim::acquire(&k, "a", tx.clone()).unwrap();
        assert!(matches!(
            Claim::acquire(&k, "b", tx.clone()),
            Err(ClaimError::Held)
        ));
        drop(first);
        // The task ends (and the listener closes) at its next poll.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match Claim::acquire(&k, "b", tx.clone()) {
                Ok(_) => break,
                Err(ClaimError::Held) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                Err(e) => panic!("claim not released: {e:?}"),
            }
        }
    }

    #[tokio::test]
    async fn negotiation_reports_mismatch_then_hands_over_and_frees_the_name() {
        let k = ClaimKey { vrid: 52, ..key() };
        let (tx, mut rx) = mpsc::channel(4);
        let claim = Claim::acquire(&k, "VI_1", tx).unwrap();
        let theirs = serde_json::json!({"priority": 200, "virtualRouterID": 52});
        let their_hash = crds::vrrpnode::adoption_hash(&theirs);
        let served = theirs.clone();
        let loop_side = tokio::spawn(async move {
            let theirs = served;
            let mut handed = 0;
            while let Some(req) = rx.recv().await {
                match req {
                    ClaimRequest::Describe { reply, .. } => {
                        let _ = reply.send(Some(Offer {
                            instance: "VI_1".into(),
                            state: "MASTER".into(),
                            effective_priority: 200,
                            hash: crds::vrrpnode::adoption_hash(&theirs),
                            view: theirs.clone(),
                        }));
                    }
                    ClaimRequest::HandOver { hash, reply, .. } => {
                        handed += 1;
                        let _ = reply.send(Ok(Inherited {
                            state: "MASTER".into(),
                            next_advert_in_us: Some(500),
                            master_address: None,
                            master_adver_interval_cs: 100,
                            trackers: vec![],
                        }));
                        assert_eq!(hash, crds::vrrpnode::adoption_hash(&theirs));
                    }
                }
            }
            handed
        });
        let ours = serde_json::json!({"priority": 199, "virtualRouterID": 52});
        match negotiate(&k, &ours, &crds::vrrpnode::adoption_hash(&ours)).await {
            Negotiation::Mismatch { offer, differences } => {
                assert_eq!(offer.state, "MASTER");
                assert_eq!(differences, vec!["priority".to_string()]);
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        assert!(claim.is_held(), "a mismatch changes nothing");
        match negotiate(&k, &theirs, &their_hash).await {
            Negotiation::Adopted { inherited, .. } => {
                assert_eq!(inherited.next_advert_in_us, Some(500))
            }
            other => panic!("expected the hand-over, got {other:?}"),
        }
        // The holder released the name before it answered.
        let (tx2, _rx2) = mpsc::channel(1);
        let mine = Claim::acquire(&k, "default/api", tx2).expect("claim free after hand-over");
        assert!(!claim.is_held() || mine.is_held());
        drop(claim);
        assert_eq!(loop_side.await.unwrap(), 1);
        // Nobody listening: free.
        drop(mine);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match negotiate(&k, &theirs, &their_hash).await {
                Negotiation::Free => break,
                _ if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await
                }
                other => panic!("expected free, got {other:?}"),
            }
        }
    }
}
