//! Packet captures: `tcpdump --immediate-mode` writing a pcap file inside a namespace, read
//! back with `tshark` (fields, gratuitous ARPs, unsolicited NAs, VRRP adverts), and
//! [`validate_vrrp_frame`], which dissects one captured advert with `tshark -V` and rejects
//! malformed packets and bad checksums.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::netns::{command_in, run};
use crate::proc::ProcGuard;
use crate::topology::Lab;
use crate::wait::wait_for;

/// A running (or stopped) capture.
pub struct Capture {
    guard: Option<ProcGuard>,
    pcap: PathBuf,
    log: PathBuf,
}

/// A gratuitous ARP or an unsolicited neighbour advertisement seen on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Announce {
    /// Capture timestamp (seconds since the epoch).
    pub time: f64,
    /// Ethernet source MAC.
    pub eth_src: String,
    /// The announced address.
    pub addr: String,
}

/// A VRRP advertisement seen on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct Advert {
    /// Frame number in the capture (for [`validate_vrrp_frame`]).
    pub frame: u32,
    /// Capture timestamp (seconds since the epoch).
    pub time: f64,
    /// Ethernet source MAC.
    pub eth_src: String,
    /// IP source address.
    pub src: String,
    /// VRRP version (2 or 3).
    pub version: u8,
    /// Virtual router ID.
    pub vrid: u8,
    /// Advertised priority.
    pub priority: u8,
    /// IP TTL / hop limit.
    pub ttl: u8,
}

static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Capture {
    /// Starts `tcpdump -i IFACE` in namespace `ns` with pcap filter `filter`, writing into
    /// `dir`, and waits until it is listening.
    pub fn start(lab: &Lab, ns: &str, iface: &str, filter: &str, dir: &Path) -> Result<Self> {
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pcap = dir.join(format!("capture-{n}.pcap"));
        let log = dir.join(format!("capture-{n}.log"));
        let pcap_s = pcap.to_string_lossy().into_owned();
        // -Z root: keep writing as root into the root-owned temp dir.
        let argv = [
            "tcpdump",
            "-i",
            iface,
            "-n",
            "-U",
            "--immediate-mode",
            // 16 MiB of kernel buffer: a bulk takeover sends thousands of GARPs/NAs at once.
            "-B",
            "16384",
            "-Z",
            "root",
            "-w",
            &pcap_s,
            filter,
        ];
        let guard = lab.spawn_cmd(command_in(ns, &argv), &argv.join(" "), Some(&log))?;
        let listening = wait_for(Duration::from_secs(10), "tcpdump to listen", || {
            std::fs::read_to_string(&log).is_ok_and(|s| s.contains("listening on"))
                || !guard.is_running()
        });
        if listening.is_err() || !guard.is_running() {
            return Err(LabError::Command {
                cmd: argv.join(" "),
                reason: std::fs::read_to_string(&log).unwrap_or_default(),
            });
        }
        Ok(Capture {
            guard: Some(guard),
            pcap,
            log,
        })
    }

    /// The pcap file.
    pub fn pcap(&self) -> &Path {
        &self.pcap
    }

    /// Stops tcpdump (SIGINT, so it flushes) and waits for it to exit. Idempotent.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(g) = self.guard.take() {
            g.signal(libc::SIGINT)?;
            g.wait_exit(Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// tcpdump's own messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Packets the kernel dropped before tcpdump read them, as tcpdump reported when it
    /// stopped ("N packets dropped by kernel"); 0 while it runs or when it said nothing.
    pub fn dropped(&self) -> u64 {
        self.log()
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Runs `tshark -r PCAP [-Y display_filter] -T fields -e F...` and returns one row of
    /// field values per packet. Works on a running capture too (reads what is flushed).
    pub fn fields(&self, display_filter: &str, fields: &[&str]) -> Result<Vec<Vec<String>>> {
        let mut cmd = Command::new("tshark");
        cmd.arg("-n").arg("-r").arg(&self.pcap);
        if !display_filter.is_empty() {
            cmd.args(["-Y", display_filter]);
        }
        cmd.args(["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = run(&mut cmd)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect())
    }

    /// Gratuitous ARP requests (sender address = target address) in the capture.
    pub fn garps(&self) -> Result<Vec<Announce>> {
        let rows = self.fields(
            "arp.opcode == 1 && arp.src.proto_ipv4 == arp.dst.proto_ipv4",
            &["frame.time_epoch", "eth.src", "arp.src.proto_ipv4"],
        )?;
        rows.into_iter().map(announce).collect()
    }

    /// Unsolicited neighbour advertisements with the Override flag in the capture.
    pub fn unsolicited_nas(&self) -> Result<Vec<Announce>> {
        let rows = self.fields(
            "icmpv6.type == 136 && icmpv6.nd.na.flag.o == 1 && icmpv6.nd.na.flag.s == 0",
            &["frame.time_epoch", "eth.src", "icmpv6.nd.na.target_address"],
        )?;
        rows.into_iter().map(announce).collect()
    }

    /// VRRP adverts in the capture.
    pub fn adverts(&self) -> Result<Vec<Advert>> {
        let rows = self.fields(
            "vrrp",
            &[
                "frame.number",
                "frame.time_epoch",
                "eth.src",
                "ip.src",
                "ipv6.src",
                "vrrp.version",
                "vrrp.virt_rtr_id",
                "vrrp.prio",
                "ip.ttl",
                "ipv6.hlim",
            ],
        )?;
        rows.into_iter()
            .map(|r| {
                let get = |i: usize| r.get(i).map(String::as_str).unwrap_or("");
                let num = |i: usize| -> Result<u32> {
                    get(i).parse().map_err(|_| LabError::Parse {
                        what: "tshark VRRP fields".into(),
                        reason: format!("field {i} of {r:?}"),
                    })
                };
                let src = if get(3).is_empty() { get(4) } else { get(3) };
                let ttl = if get(8).is_empty() { num(9)? } else { num(8)? };
                Ok(Advert {
                    frame: num(0)?,
                    time: get(1).parse().unwrap_or(0.0),
                    eth_src: get(2).to_string(),
                    src: src.to_string(),
                    version: num(5)? as u8,
                    vrid: num(6)? as u8,
                    priority: num(7)? as u8,
                    ttl: ttl as u8,
                })
            })
            .collect()
    }

    /// Waits until at least `n` rows match `display_filter`.
    pub fn wait_count(&self, display_filter: &str, n: usize, within: Duration) -> Result<()> {
        wait_for(
            within,
            &format!("{n} packets matching `{display_filter}`"),
            || {
                self.fields(display_filter, &["frame.number"])
                    .is_ok_and(|r| r.len() >= n)
            },
        )
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn announce(r: Vec<String>) -> Result<Announce> {
    match r.as_slice() {
        [t, mac, addr, ..] => Ok(Announce {
            time: t.parse().unwrap_or(0.0),
            eth_src: mac.clone(),
            addr: addr.clone(),
        }),
        _ => Err(LabError::Parse {
            what: "tshark announce fields".into(),
            reason: format!("{r:?}"),
        }),
    }
}

/// Dissects frame `frame` of `pcap` with `tshark -V` and checks that it is a well-formed VRRP
/// advert whose checksum tshark verified as good: no malformed-packet or error expert info and
/// no bad checksum. Returns the dissection text.
pub fn validate_vrrp_frame(pcap: &Path, frame: u32) -> Result<String> {
    let out = run(Command::new("tshark")
        .arg("-n")
        .arg("-r")
        .arg(pcap)
        .arg("-V")
        .args(["-Y", &format!("frame.number == {frame}")]))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let fail = |reason: &str| {
        Err(LabError::Parse {
            what: format!("VRRP frame {frame} of {pcap:?}"),
            reason: format!("{reason}\n{text}"),
        })
    };
    if !text.contains("Virtual Router Redundancy Protocol") {
        return fail("not dissected as VRRP");
    }
    for bad in [
        "Malformed",
        "[Expert Info (Error",
        "[Expert Info (Warning",
        "incorrect",
        "Bad checksum",
        "status: Bad]",
    ] {
        if text.contains(bad) {
            return fail(&format!("dissection contains `{bad}`"));
        }
    }
    let vrrp_part = &text[text.find("Virtual Router Redundancy Protocol").unwrap_or(0)..];
    if !vrrp_part.contains("[Checksum Status: Good]") {
        return fail("VRRP checksum not verified as good");
    }
    Ok(text)
}
