//! A tiny network-namespace lab for the `net_*` tests.
//!
//! Every test runs in a thread of its own that first calls `unshare(CLONE_NEWNET)`: the thread
//! (and the `ip`/`sysctl` processes it starts) lives in a brand-new, empty network namespace
//! that vanishes when the thread ends and the last handle is closed, so nothing can leak onto
//! the host whatever happens. A second namespace ("the peer") is made the same way on a
//! short-lived helper thread and kept alive by an open `/proc/thread-self/ns/net` descriptor;
//! the test thread can enter it with `setns` to open sockets there, and commands are run in it
//! by `setns` in the child before `exec`.
//!
//! Topology of [`Lab::veth`]: `eth0` in the test's namespace (MAC 02:00:00:00:00:0a,
//! 192.0.2.1/24, fe80::a, 2001:db8::a) ⇄ `eth0` in the peer namespace (02:00:00:00:00:0b,
//! 192.0.2.2/24, fe80::b, 2001:db8::b). Documentation addresses only.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// MAC of the test side.
pub const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
/// MAC of the peer side.
pub const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

/// Whether the tests can run; when they cannot, see [`skip_or_fail`].
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip_or_fail(test, "needs root (network namespaces)");
        return false;
    }
    true
}

/// A test that cannot run here: prints `SKIPPED: <test>: <reason>` to stderr and returns only
/// when `KUBE_VRRP_ALLOW_SKIP=1`; otherwise fails, so a skip never passes silently. tests/run.sh
/// leaves these tests out when not root (nextest profile `no-root`), and nextest counts them as
/// skipped. (The same rule as `lab::skip_or_fail` in tests/src.)
pub fn skip_or_fail(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
    if std::env::var_os("KUBE_VRRP_ALLOW_SKIP").is_some_and(|v| v == "1") {
        return;
    }
    panic!(
        "{test} cannot run here: {reason}. Run it as root, or through tests/run.sh (which \
         reports it as skipped), or set KUBE_VRRP_ALLOW_SKIP=1 to skip it. If tests/run.sh \
         printed this, add the test to the `no-root` filter in tests/nextest.toml."
    );
}

/// Runs `f` on a fresh thread inside a fresh network namespace, with a current-thread tokio
/// runtime; re-raises its panic. Prints the skip line and returns without root.
pub fn run<F, Fut>(test: &str, f: F)
where
    F: FnOnce(Lab) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !can_run(test) {
        return;
    }
    let name = test.to_owned();
    let handle = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            // SAFETY: unshare only affects this thread's namespaces.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            let lab = Lab {
                home: Ns::current(),
                peer: Ns::fresh(),
            };
            lab.home.sh("ip link set lo up");
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(f(lab));
        })
        .unwrap();
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A network namespace held open by a descriptor.
pub struct Ns {
    fd: OwnedFd,
}

impl Ns {
    /// The calling thread's namespace.
    pub fn current() -> Ns {
        Ns {
            fd: File::open("/proc/thread-self/ns/net").unwrap().into(),
        }
    }

    /// A brand-new namespace (made on a helper thread that exits at once).
    pub fn fresh() -> Ns {
        std::thread::spawn(|| {
            // SAFETY: unshare only affects this helper thread.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(
                rc,
                0,
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            );
            let ns = Ns::current();
            ns.sh("ip link set lo up");
            ns
        })
        .join()
        .unwrap()
    }

    /// A path other processes can open to reach this namespace.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    /// Runs `f` with the calling thread switched into this namespace, then switches back.
    /// Sockets created inside stay in this namespace.
    pub fn within<R>(&self, f: impl FnOnce() -> R) -> R {
        let back = Ns::current();
        setns(&self.fd);
        let r = f();
        setns(&back.fd);
        r
    }

    /// Runs a command (split on whitespace) in this namespace; panics unless it succeeds.
    pub fn sh(&self, cmd: &str) -> String {
        let (ok, out, err) = self.try_sh(cmd);
        assert!(ok, "`{cmd}` failed: {err}");
        out
    }

    /// Runs a command in this namespace: (success, stdout, stderr).
    pub fn try_sh(&self, cmd: &str) -> (bool, String, String) {
        let mut parts = cmd.split_whitespace();
        let prog = parts.next().unwrap();
        let mut c = Command::new(prog);
        c.args(parts);
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns is async-signal-safe; the descriptor is open in the child until exec.
        unsafe {
            c.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let out = c
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{cmd}`: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `ip -j addr show dev IFNAME` as JSON.
    pub fn addr_json(&self, ifname: &str) -> serde_json::Value {
        let out = self.sh(&format!("ip -j addr show dev {ifname}"));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0].clone()
    }

    /// (local, prefixlen, label) of every address on `ifname`, from `ip -j`.
    pub fn addresses(&self, ifname: &str) -> Vec<(String, u8, Option<String>)> {
        let v = self.addr_json(ifname);
        v["addr_info"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| {
                        (
                            x["local"].as_str().unwrap().to_owned(),
                            x["prefixlen"].as_u64().unwrap() as u8,
                            x["label"].as_str().map(str::to_owned),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Interface index of `ifname` in this namespace.
    pub fn ifindex(&self, ifname: &str) -> u32 {
        self.addr_json(ifname)["ifindex"].as_u64().unwrap() as u32
    }

    /// Namespace settings for fast, quiet IPv6 (no DAD, no router solicitations).
    pub fn quiet_ipv6(&self) {
        for key in [
            "net.ipv6.conf.all.accept_dad=0",
            "net.ipv6.conf.default.accept_dad=0",
            "net.ipv6.conf.all.router_solicitations=0",
            "net.ipv6.conf.default.router_solicitations=0",
            "net.ipv6.conf.all.accept_ra=0",
            "net.ipv6.conf.default.accept_ra=0",
        ] {
            self.sh(&format!("sysctl -qw {key}"));
        }
    }
}

fn setns(fd: &OwnedFd) {
    // SAFETY: a valid namespace descriptor; only this thread is switched.
    let rc = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// The test's namespace ("home", where the test thread runs) and one peer namespace.
pub struct Lab {
    /// The test thread's own namespace.
    pub home: Ns,
    /// The other end of the veth pair.
    pub peer: Ns,
}

impl Lab {
    /// Builds the veth pair described in the module docs, both ends up, addresses set.
    pub fn veth(&self) {
        self.home.quiet_ipv6();
        self.peer.quiet_ipv6();
        self.home.sh(&format!(
            "ip link add eth0 address 02:00:00:00:00:0a type veth peer name eth0 \
             address 02:00:00:00:00:0b netns {}",
            self.peer.path()
        ));
        for (ns, last, mac_last) in [(&self.home, 1, "a"), (&self.peer, 2, "b")] {
            ns.sh("ip link set eth0 addrgenmode none");
            ns.sh(&format!("ip addr add 192.0.2.{last}/24 dev eth0"));
            ns.sh(&format!(
                "ip -6 addr add fe80::{mac_last}/64 dev eth0 nodad"
            ));
            ns.sh(&format!(
                "ip -6 addr add 2001:db8::{mac_last}/64 dev eth0 nodad"
            ));
            ns.sh("ip link set eth0 up");
        }
        // Carrier comes up asynchronously (link watch); tests start from a running link.
        for ns in [&self.home, &self.peer] {
            wait_until(
                "eth0 to be operationally up",
                Duration::from_secs(10),
                || ns.addr_json("eth0")["operstate"] == "UP",
            );
        }
    }
}

/// Polls `cond` until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An AF_PACKET socket capturing every frame of one interface (created in the calling
/// thread's namespace).
pub struct Capture {
    fd: OwnedFd,
}

impl Capture {
    /// Starts capturing on `ifindex`.
    pub fn open(ifindex: u32) -> Capture {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket/bind calls with a correctly sized sockaddr_ll.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(proto),
            );
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let fd = <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = ifindex as i32;
            let rc = libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(rc, 0, "bind AF_PACKET: {}", std::io::Error::last_os_error());
            let tv = libc::timeval {
                tv_sec: 0,
                tv_usec: 100_000,
            };
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            Capture { fd }
        }
    }

    /// The socket, for a reader of its own (100 ms receive timeout).
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// Frames received until `want` of them match `filter` or `timeout` passes.
    pub fn collect(
        &self,
        want: usize,
        timeout: Duration,
        filter: impl Fn(&[u8]) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while out.len() < want && Instant::now() < deadline {
            // SAFETY: reading into a live buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                let frame = &buf[..n as usize];
                if filter(frame) {
                    out.push(frame.to_vec());
                }
            }
        }
        out
    }
}
