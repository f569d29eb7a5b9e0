//! keepalived's `no_accept` in the kernel: nftables rules, written over netlink, that drop
//! packets addressed to the VIPs of a master that is not their owner and was not told to
//! accept them (RFC 9568 Accept_Mode false).
//!
//! The agent keeps one table per family, `ip kube-vrrp` and `ip6 kube-vrrp`, with one `input`
//! chain (filter hook at priority 0) and one rule per address: `ip daddr ADDR drop` (for IPv6
//! `ip6 daddr ADDR drop`). [`Firewall::apply`] replaces the whole table in one netlink batch,
//! so the rules always match the set given, atomically; an empty set removes the table. The
//! messages are built here (nfnetlink + nf_tables attributes, as `nft` sends them), so no
//! library or `nft` binary is needed, only a kernel with nf_tables.

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Error;

/// Name of the agent's tables.
pub const TABLE: &str = "kube-vrrp";
/// Name of the chain in them.
pub const CHAIN: &str = "input";

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NLA_F_NESTED: u16 = 0x8000;

// Attribute numbers (linux/netfilter/nf_tables.h).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_PAYLOAD_DREG: u16 = 1;
const NFTA_PAYLOAD_BASE: u16 = 2;
const NFTA_PAYLOAD_OFFSET: u16 = 3;
const NFTA_PAYLOAD_LEN: u16 = 4;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFT_REG_VERDICT: u32 = 0;
const NFT_REG_1: u32 = 1;
const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
const NFT_CMP_EQ: u32 = 0;

/// A netlink attribute (type, payload), possibly nested.
fn attr(buf: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(payload);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn nested(buf: &mut Vec<u8>, kind: u16, inner: impl FnOnce(&mut Vec<u8>)) {
    let mut b = Vec::new();
    inner(&mut b);
    attr(buf, kind | NLA_F_NESTED, &b);
}

fn str_attr(buf: &mut Vec<u8>, kind: u16, s: &str) {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    attr(buf, kind, &v);
}

fn be32(buf: &mut Vec<u8>, kind: u16, v: u32) {
    attr(buf, kind, &v.to_be_bytes());
}

/// One nfnetlink message: netlink header, nfgenmsg (family, version 0, resource id), body.
fn message(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    body: &[u8],
) {
    let len = 16 + 4 + body.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0);
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(body);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// The batch that makes the table of `family` hold exactly a drop rule per address of
/// `addrs` (or removes it when `addrs` is empty). Returns the batch and the sequence numbers
/// that ask for an acknowledgement.
pub fn batch(family: vrrp::Family, addrs: &[IpAddr], first_seq: u32) -> (Vec<u8>, Vec<u32>) {
    let (nfproto, offset, len) = match family {
        vrrp::Family::V4 => (NFPROTO_IPV4, 16u32, 4u32),
        vrrp::Family::V6 => (NFPROTO_IPV6, 24, 16),
    };
    let req = libc::NLM_F_REQUEST as u16;
    let ack = libc::NLM_F_ACK as u16;
    let create = libc::NLM_F_CREATE as u16;
    let mut seq = first_seq;
    let mut acked = Vec::new();
    let mut out = Vec::new();
    let mut next = |out: &mut Vec<u8>, kind: u16, flags: u16, body: &[u8], acked: &mut Vec<u32>| {
        seq += 1;
        if flags & ack != 0 {
            acked.push(seq);
        }
        message(out, kind, flags, seq, nfproto, 0, body);
    };
    // Batch framing carries the subsystem as the resource id.
    message(
        &mut out,
        NFNL_MSG_BATCH_BEGIN,
        req,
        first_seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let mut table = Vec::new();
    str_attr(&mut table, NFTA_TABLE_NAME, TABLE);
    // Add (so the delete cannot fail), delete, then build anew: one atomic replacement.
    next(
        &mut out,
        nft_type(NFT_MSG_NEWTABLE),
        req | ack | create,
        &table,
        &mut acked,
    );
    next(
        &mut out,
        nft_type(NFT_MSG_DELTABLE),
        req | ack,
        &table,
        &mut acked,
    );
    if !addrs.is_empty() {
        next(
            &mut out,
            nft_type(NFT_MSG_NEWTABLE),
            req | ack | create,
            &table,
            &mut acked,
        );
        let mut chain = Vec::new();
        str_attr(&mut chain, NFTA_CHAIN_TABLE, TABLE);
        str_attr(&mut chain, NFTA_CHAIN_NAME, CHAIN);
        nested(&mut chain, NFTA_CHAIN_HOOK, |h| {
            be32(h, NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_IN);
            be32(h, NFTA_HOOK_PRIORITY, 0);
        });
        be32(&mut chain, NFTA_CHAIN_POLICY, NF_ACCEPT);
        str_attr(&mut chain, NFTA_CHAIN_TYPE, "filter");
        next(
            &mut out,
            nft_type(NFT_MSG_NEWCHAIN),
            req | ack | create,
            &chain,
            &mut acked,
        );
        for a in addrs {
            let bytes = match a {
                IpAddr::V4(v4) => v4.octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            let mut rule = Vec::new();
            str_attr(&mut rule, NFTA_RULE_TABLE, TABLE);
            str_attr(&mut rule, NFTA_RULE_CHAIN, CHAIN);
            nested(&mut rule, NFTA_RULE_EXPRESSIONS, |e| {
                nested(e, NFTA_LIST_ELEM, |x| {
                    str_attr(x, NFTA_EXPR_NAME, "payload");
                    nested(x, NFTA_EXPR_DATA, |d| {
                        be32(d, NFTA_PAYLOAD_DREG, NFT_REG_1);
                        be32(d, NFTA_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
                        be32(d, NFTA_PAYLOAD_OFFSET, offset);
                        be32(d, NFTA_PAYLOAD_LEN, len);
                    });
                });
                nested(e, NFTA_LIST_ELEM, |x| {
                    str_attr(x, NFTA_EXPR_NAME, "cmp");
                    nested(x, NFTA_EXPR_DATA, |d| {
                        be32(d, NFTA_CMP_SREG, NFT_REG_1);
                        be32(d, NFTA_CMP_OP, NFT_CMP_EQ);
                        nested(d, NFTA_CMP_DATA, |v| attr(v, NFTA_DATA_VALUE, &bytes));
                    });
                });
                nested(e, NFTA_LIST_ELEM, |x| {
                    str_attr(x, NFTA_EXPR_NAME, "immediate");
                    nested(x, NFTA_EXPR_DATA, |d| {
                        be32(d, NFTA_IMMEDIATE_DREG, NFT_REG_VERDICT);
                        nested(d, NFTA_IMMEDIATE_DATA, |v| {
                            nested(v, NFTA_DATA_VERDICT, |c| {
                                be32(c, NFTA_VERDICT_CODE, NF_DROP);
                            });
                        });
                    });
                });
            });
            next(
                &mut out,
                nft_type(NFT_MSG_NEWRULE),
                req | ack | create | libc::NLM_F_APPEND as u16,
                &rule,
                &mut acked,
            );
        }
    }
    seq += 1;
    message(
        &mut out,
        NFNL_MSG_BATCH_END,
        req,
        seq,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    );
    (out, acked)
}

/// The agent's nftables tables, over a netfilter netlink socket.
#[derive(Debug)]
pub struct Firewall {
    fd: OwnedFd,
    seq: u32,
    applied: Option<BTreeSet<IpAddr>>,
}

fn nl_err(what: &str, e: io::Error) -> Error {
    Error::io(format!("nftables: {what}"), e)
}

impl Firewall {
    /// Opens the netlink socket (needs `CAP_NET_ADMIN` to change rules).
    pub fn open() -> Result<Self, Error> {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(nl_err(
                "open a netfilter netlink socket",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let tv = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: passes a live timeval and its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(nl_err("SO_RCVTIMEO", io::Error::last_os_error()));
        }
        Ok(Firewall {
            fd,
            seq: std::process::id().wrapping_mul(1000),
            applied: None,
        })
    }

    /// Make the rules drop exactly the packets addressed to `addrs` (both families); nothing
    /// is sent when the set is the one applied last.
    pub fn apply(&mut self, addrs: &BTreeSet<IpAddr>) -> Result<(), Error> {
        if self.applied.as_ref() == Some(addrs) {
            return Ok(());
        }
        for family in [vrrp::Family::V4, vrrp::Family::V6] {
            let of: Vec<IpAddr> = addrs
                .iter()
                .copied()
                .filter(|a| vrrp::Family::of(a) == family)
                .collect();
            let (msg, acked) = batch(family, &of, self.seq);
            self.seq = self.seq.wrapping_add(acked.len() as u32 + 2);
            self.send(&msg, &acked)?;
        }
        self.applied = Some(addrs.clone());
        Ok(())
    }

    fn send(&self, msg: &[u8], acked: &[u32]) -> Result<(), Error> {
        // SAFETY: sockaddr_nl is plain data; all zeroes addresses the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sends from a live buffer to a zeroed kernel address of the right size.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(nl_err("send the batch", io::Error::last_os_error()));
        }
        let mut pending: BTreeSet<u32> = acked.iter().copied().collect();
        let mut first_error: Option<io::Error> = None;
        let mut buf = vec![0u8; 64 * 1024];
        while !pending.is_empty() {
            // SAFETY: receives into a live buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(nl_err(
                    "read the acknowledgements",
                    io::Error::last_os_error(),
                ));
            }
            let data = &buf[..n as usize];
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                        as usize;
                let kind = u16::from_ne_bytes([data[off + 4], data[off + 5]]);
                let seq = u32::from_ne_bytes([
                    data[off + 8],
                    data[off + 9],
                    data[off + 10],
                    data[off + 11],
                ]);
                if len < 16 || off + len > data.len() {
                    break;
                }
                if kind == libc::NLMSG_ERROR as u16 && len >= 20 {
                    let code = i32::from_ne_bytes([
                        data[off + 16],
                        data[off + 17],
                        data[off + 18],
                        data[off + 19],
                    ]);
                    pending.remove(&seq);
                    if code != 0 && first_error.is_none() {
                        first_error = Some(io::Error::from_raw_os_error(-code));
                        // The kernel aborts the batch at the first error: no more acks come.
                        pending.clear();
                    }
                }
                off += (len + 3) & !3;
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(nl_err("the kernel refused the rules", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_and_asks_for_every_ack() {
        let a: IpAddr = "192.0.2.10".parse().unwrap();
        let (msg, acked) = batch(vrrp::Family::V4, &[a], 100);
        // begin, newtable, deltable, newtable, newchain, one rule, end
        assert_eq!(acked, vec![101, 102, 103, 104, 105]);
        assert_eq!(u16::from_ne_bytes([msg[4], msg[5]]), NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msg.len() % 4, 0);
        // The address travels in network order.
        assert!(msg.windows(4).any(|w| w == [192, 0, 2, 10]));
        // An empty set only removes the table.
        let (msg, acked) = batch(vrrp::Family::V6, &[], 1);
        assert_eq!(acked, vec![2, 3]);
        let first_len = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
        assert_eq!(first_len, 20);
    }
}
