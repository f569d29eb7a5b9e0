//! `kube-vrrp-agent demo`: builds a throw-away 3-host network in network namespaces, runs three
//! agents (this binary, `standalone`; optionally real keepalived as node-c), pings the VIP from
//! a client, and walks through election, a crash, preemption, a tracker failure and a graceful
//! handover, measuring each client-visible gap against the RFC's bound. Everything it creates
//! is removed at the end, on error, on panic and on Ctrl-C.
//!
//! - [`lab`]: namespaces, veths, processes, cleanup.
//! - [`probe`]: each host's state (`/status`, keepalived's notify file, the VIP on eth0).
//! - [`ping`]: the client's pings and the measured gap.
//! - [`conf`]: the generated keepalived.conf files.
//! - [`view`]: tables, colours, the live table.

pub mod conf;
pub mod lab;
pub mod ping;
pub mod probe;
pub mod view;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::Error;
use crate::cli::DemoArgs;
use lab::{HOSTS, Lab, VIP};
use ping::{Gap, Pinger};
use probe::HostView;
use view::{Cell, Paint, Screen, Style};

/// Set by SIGINT / SIGTERM.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Why the demo stopped early.
#[derive(Debug)]
enum Abort {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// Something failed.
    Failed(Error),
}

impl From<Error> for Abort {
    fn from(e: Error) -> Self {
        Abort::Failed(e)
    }
}

fn timed_out(what: &str, limit: Duration) -> Error {
    Error::io(
        format!("waiting for {what}"),
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("not seen within {}", view::duration(limit)),
        ),
    )
}

/// Entry point; returns the exit code (0 done, 1 failed, 2 cannot run, 130 interrupted).
pub fn main(args: DemoArgs) -> u8 {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || std::env::var_os("KUBE_VRRP_DEMO_ASSUME_NON_ROOT").is_some() {
        eprintln!(
            "kube-vrrp-agent: demo needs root to create network namespaces; run: sudo kube-vrrp-agent demo"
        );
        return 2;
    }
    let keepalived = if args.keepalived {
        match find_program("keepalived") {
            Some(p) => Some(p),
            None => {
                eprintln!(
                    "kube-vrrp-agent: demo --keepalived: keepalived is not installed (looked in PATH, /usr/sbin, /sbin); install it (Debian: apt-get install keepalived) or run the demo without --keepalived"
                );
                return 2;
            }
        }
    } else {
        None
    };
    install_signal_handlers();
    let out = std::io::stdout();
    let style = Style {
        color: out.is_terminal() && !args.no_color && std::env::var_os("NO_COLOR").is_none(),
        live: out.is_terminal(),
        width: if out.is_terminal() {
            view::terminal_width()
        } else {
            None
        },
    };
    let mut demo = Demo::new(args, keepalived, style);
    let result = demo.steps();
    if let Err(Abort::Failed(_)) = &result {
        demo.dump_logs();
    }
    demo.screen.erase(&style);
    let summary = std::mem::take(&mut demo.summary);
    let created = demo.lab.namespaces().len();
    let pids = demo.lab.pids().len();
    view::outln(format_args!(""));
    view::outln(format_args!(
        "{}",
        style.paint(
            Paint::Bold,
            &format!(
                "Cleaning up: stopping {pids} daemon(s), deleting {created} namespace(s) and the scratch directory"
            )
        )
    ));
    drop(demo);
    match result {
        Ok(()) => {
            print_summary(&style, &summary);
            0
        }
        // `demo | head`: the reader is gone; everything was removed, as after Ctrl-C.
        Err(Abort::Interrupted) if view::stdout_closed() => 0,
        Err(Abort::Interrupted) => {
            eprintln!("kube-vrrp-agent: demo interrupted; everything it created was removed");
            130
        }
        Err(Abort::Failed(e)) => {
            if !summary.is_empty() {
                print_summary(&style, &summary);
            }
            eprintln!("kube-vrrp-agent: demo failed: {e}");
            1
        }
    }
}

/// `name` in PATH or the usual sbin directories.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| {
            use std::os::unix::fs::PermissionsExt;
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// One line of the summary.
#[derive(Debug)]
struct Row {
    step: &'static str,
    master: String,
    gap: Option<Gap>,
    bound: String,
}

fn print_summary(style: &Style, rows: &[Row]) {
    view::outln(format_args!(""));
    view::outln(format_args!("{}", style.paint(Paint::Bold, "Summary")));
    let mut table: Vec<Vec<Cell>> = vec![
        [
            "step",
            "new master",
            "measured gap",
            "lost pings",
            "theoretical bound",
        ]
        .iter()
        .map(|h| ((*h).to_owned(), None))
        .collect(),
    ];
    for r in rows {
        let (gap, lost) = match r.gap {
            Some(g) => (view::duration(g.longest), g.lost.to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        table.push(vec![
            (r.step.to_owned(), None),
            (r.master.clone(), Some(Paint::Green)),
            (gap, Some(Paint::Yellow)),
            (lost, None),
            (r.bound.clone(), Some(Paint::Dim)),
        ]);
    }
    for l in view::table(style, "  ", &table) {
        view::outln(format_args!("{l}"));
    }
    view::outln(format_args!(
        "  {}",
        style.paint(
            Paint::Dim,
            &format!(
                "gap = longest time between two echo replies at the client (one echo every {}); \
                 bound = the protocol's wait (Master_Down_Interval = 3 × advert + skew after a \
                 crash): the gap can exceed it by up to two echo intervals plus the time to add \
                 the VIP and send gratuitous ARP.",
                view::duration(ping::INTERVAL)
            )
        )
    ));
}

/// Master_Down_Interval = 3 × advert + Skew_Time.
fn master_down_interval(advert: Duration, priority: u8) -> Duration {
    advert * 3 + skew_time(advert, priority)
}

/// Skew_Time = (256 − priority) / 256 × advert.
fn skew_time(advert: Duration, priority: u8) -> Duration {
    advert * (256 - u32::from(priority)) / 256
}

struct Demo {
    args: DemoArgs,
    keepalived: Option<PathBuf>,
    style: Style,
    screen: Screen,
    advert: Duration,
    start: Instant,
    last: Vec<HostView>,
    summary: Vec<Row>,
    pinger: Option<Pinger>,
    // Last: dropped after the pinger, it removes everything.
    lab: Lab,
}

impl Demo {
    fn new(args: DemoArgs, keepalived: Option<PathBuf>, style: Style) -> Demo {
        Demo {
            args,
            keepalived,
            style,
            screen: Screen::default(),
            advert: if args.fast {
                Duration::from_millis(100)
            } else {
                Duration::from_secs(1)
            },
            start: Instant::now(),
            last: Vec::new(),
            summary: Vec::new(),
            pinger: None,
            lab: Lab::new(),
        }
    }

    fn flag(&self) -> PathBuf {
        self.lab.dir.join("node-a.healthy")
    }

    fn config(&self, i: usize) -> PathBuf {
        self.lab.dir.join(format!("{}.conf", HOSTS[i].name))
    }

    fn keepalived_state(&self) -> PathBuf {
        self.lab.dir.join("node-c.state")
    }

    fn is_keepalived(&self, i: usize) -> bool {
        i == 2 && self.keepalived.is_some()
    }

    fn write(&self, path: &Path, text: &str) -> Result<(), Error> {
        std::fs::write(path, text).map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    fn say(&mut self, lines: &[String]) {
        self.screen.print(&self.style, lines);
    }

    fn heading(&mut self, n: usize, text: &str) {
        let total = if self.keepalived.is_some() { 7 } else { 6 };
        let line = self
            .style
            .paint(Paint::Bold, &format!("\n[{n}/{total}] {text}"));
        self.say(&[line]);
    }

    fn start_host(&mut self, i: usize) -> Result<(), Error> {
        let host = HOSTS[i].name;
        let config = self.config(i);
        match (&self.keepalived, self.is_keepalived(i)) {
            (Some(program), true) => {
                let program = program.clone();
                self.lab.start_keepalived(host, &program, &config)
            }
            _ => self.lab.start_agent(host, &config),
        }
    }

    /// Everything, in order.
    fn steps(&mut self) -> Result<(), Abort> {
        let advert = self.advert;
        let mode = if self.args.fast {
            "VRRPv3, adverts every 100 ms"
        } else {
            "VRRPv2, adverts every 1 s, PASS auth"
        };
        let title = self.style.paint(
            Paint::Bold,
            "kube-vrrp demo: three hosts, one virtual IP, a client pinging it",
        );
        self.say(&[title]);
        let c_runs = if self.keepalived.is_some() {
            "keepalived"
        } else {
            "kube-vrrp"
        };
        let lines = vec![
            format!(
                "  Network (namespaces {}-*): a bridge, hosts node-a/b/c, a client; {mode}.",
                self.lab.ns("").trim_end_matches('-')
            ),
            format!(
                "  VIP {VIP}/24   node-a 192.0.2.11 prio 255 (owner, tracks a flag file)   node-b 192.0.2.12 prio 244   node-c 192.0.2.13 prio 100 ({c_runs})"
            ),
            format!(
                "  client 192.0.2.100 pings the VIP every {}.",
                view::duration(ping::INTERVAL)
            ),
        ];
        self.say(&lines);

        self.lab.build()?;
        let flag = self.flag();
        self.write(&flag, "healthy\n")?;
        let notify = self.lab.dir.join("node-c-notify.sh");
        if self.keepalived.is_some() {
            self.write(&notify, &conf::notify_script(&self.keepalived_state()))?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&notify, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| Error::io(format!("chmod {}", notify.display()), e))?;
        }
        for (i, host) in HOSTS.iter().enumerate() {
            let text = conf::render(
                host,
                &conf::ConfOptions {
                    fast: self.args.fast,
                    flag: (i == 0).then_some(flag.as_path()),
                    notify: self.is_keepalived(i).then_some(notify.as_path()),
                },
            );
            self.write(&self.config(i), &text)?;
        }

        // 1. Election.
        self.heading(1, "Election: start the three daemons");
        self.start = Instant::now();
        for i in 0..HOSTS.len() {
            self.start_host(i)?;
        }
        let limit = Duration::from_secs(10) + master_down_interval(advert, 100) * 2;
        self.wait_for(
            "node-a MASTER with the VIP, node-b and node-c BACKUP",
            limit,
            |v| {
                v[0].is_master()
                    && v[1..]
                        .iter()
                        .all(|h| h.state.as_deref() == Some("BACKUP") && !h.vip_held)
            },
        )?;
        let elected = self.start.elapsed();
        self.note(&format!(
            "node-a is MASTER after {} (the address owner does not wait).",
            view::duration(elected)
        ));
        let client = self.lab.ns("client");
        self.pinger = Some(Pinger::start(&client, VIP)?);
        let t = Instant::now();
        self.wait_for_pings(t, "the client's first echo replies")?;
        self.note("the client gets echo replies from the VIP.");
        self.summary.push(Row {
            step: "election",
            master: "node-a".into(),
            gap: None,
            bound: "immediate (priority 255 owner)".into(),
        });
        self.pause()?;

        // 2. Crash.
        self.heading(2, "node-a dies: SIGKILL its agent and take its link down");
        let t0 = Instant::now();
        self.lab.crash("node-a");
        self.lab.link("node-a", false)?;
        let mdi = master_down_interval(advert, HOSTS[1].priority);
        self.step_to(
            "node-b MASTER with the VIP",
            t0,
            mdi * 2 + Duration::from_secs(5),
            |v| v[1].is_master(),
            "crash (SIGKILL + link down)",
            "node-b",
            format!("{} (Master_Down_Interval)", view::duration(mdi)),
        )?;
        self.pause()?;

        // 3. node-a comes back and preempts.
        self.heading(3, "node-a comes back: link up, agent restarted");
        let t0 = Instant::now();
        self.lab.link("node-a", true)?;
        self.start_host(0)?;
        self.step_to(
            "node-a MASTER again, node-b BACKUP",
            t0,
            Duration::from_secs(10) + mdi,
            |v| v[0].is_master() && v[1].state.as_deref() == Some("BACKUP") && !v[1].vip_held,
            "node-a returns (preemption)",
            "node-a",
            "immediate (owner preempts)".into(),
        )?;
        self.pause()?;

        // 4. Tracker failure.
        self.heading(
            4,
            "node-a's tracked script fails (its flag file is removed)",
        );
        let t0 = Instant::now();
        std::fs::remove_file(&flag)
            .map_err(|e| Error::io(format!("removing {}", flag.display()), e))?;
        let skew = skew_time(advert, HOSTS[1].priority);
        self.step_to(
            "node-a FAULT and node-b MASTER",
            t0,
            Duration::from_secs(5) + mdi * 2,
            |v| v[0].state.as_deref() == Some("FAULT") && !v[0].vip_held && v[1].is_master(),
            "tracker fails on node-a",
            "node-b",
            format!(
                "{} (Skew_Time, after the 1 s script check)",
                view::duration(skew)
            ),
        )?;
        self.pause()?;

        // 5. Recovery.
        self.heading(5, "node-a's script passes again (flag file restored)");
        let t0 = Instant::now();
        self.write(&flag, "healthy\n")?;
        self.step_to(
            "node-a MASTER again",
            t0,
            Duration::from_secs(5) + mdi * 2,
            |v| v[0].is_master() && !v[1].vip_held,
            "tracker recovers",
            "node-a",
            "immediate (owner preempts)".into(),
        )?;
        self.pause()?;

        // 6. Graceful handover.
        self.heading(
            6,
            "graceful stop: SIGTERM to node-a's agent (it sends priority 0)",
        );
        let t0 = Instant::now();
        self.lab.terminate("node-a");
        self.step_to(
            "node-b MASTER after node-a's priority-0 advert",
            t0,
            Duration::from_secs(5) + mdi * 2,
            |v| v[1].is_master() && !v[0].vip_held,
            "graceful SIGTERM",
            "node-b",
            format!("{} (Skew_Time)", view::duration(skew)),
        )?;

        // 7. With real keepalived on node-c: hand over from kube-vrrp to keepalived.
        if self.keepalived.is_some() {
            self.pause()?;
            self.heading(
                7,
                "interop: SIGTERM to node-b's agent, keepalived on node-c takes over",
            );
            let t0 = Instant::now();
            self.lab.terminate("node-b");
            let skew_c = skew_time(advert, HOSTS[2].priority);
            self.step_to(
                "keepalived on node-c MASTER with the VIP",
                t0,
                Duration::from_secs(5) + master_down_interval(advert, HOSTS[2].priority) * 2,
                |v| v[2].is_master() && !v[1].vip_held,
                "SIGTERM -> keepalived",
                "node-c",
                format!("{} (Skew_Time)", view::duration(skew_c)),
            )?;
        }
        Ok(())
    }

    /// Run one failover step to its end condition, then record the client's gap.
    #[allow(clippy::too_many_arguments)]
    fn step_to(
        &mut self,
        what: &str,
        t0: Instant,
        limit: Duration,
        cond: impl Fn(&[HostView]) -> bool,
        step: &'static str,
        master: &str,
        bound: String,
    ) -> Result<(), Abort> {
        self.wait_for(what, limit, cond)?;
        let seen = Instant::now();
        self.note(&format!(
            "{master} is MASTER, {} after the trigger.",
            view::duration(seen - t0)
        ));
        self.wait_for_pings(seen, "echo replies through the new master")?;
        let gap = self
            .pinger
            .as_ref()
            .map(|p| p.gap_since(t0))
            .unwrap_or(Gap {
                longest: Duration::ZERO,
                lost: 0,
            });
        self.note(&format!(
            "client-visible gap: {} ({} echo requests lost); bound: {bound}",
            self.style
                .paint(Paint::Yellow, &view::duration(gap.longest)),
            gap.lost
        ));
        self.summary.push(Row {
            step,
            master: master.to_owned(),
            gap: Some(gap),
            bound,
        });
        Ok(())
    }

    fn note(&mut self, text: &str) {
        let line = format!("  {} {text}", self.stamp());
        let table = self.table();
        self.screen.event(&self.style, &line, &table);
    }

    fn stamp(&self) -> String {
        self.style.paint(
            Paint::Dim,
            &format!(
                "{:>8}",
                format!("+{:.3}s", self.start.elapsed().as_secs_f64())
            ),
        )
    }

    /// Everyone's state now.
    fn look(&mut self) -> Result<Vec<HostView>, Error> {
        let mut out = Vec::with_capacity(HOSTS.len());
        for (i, host) in HOSTS.iter().enumerate() {
            let ns = self.lab.ns(host.name);
            let mut v = if self.is_keepalived(i) {
                probe::keepalived(&ns, &self.keepalived_state(), host.priority)?
            } else {
                probe::agent(&ns)?
            };
            v.running = self.lab.running(host.name);
            if !v.running {
                v.state = None;
            }
            out.push(v);
        }
        Ok(out)
    }

    /// Poll until `cond` holds, narrating every change.
    fn wait_for(
        &mut self,
        what: &str,
        limit: Duration,
        cond: impl Fn(&[HostView]) -> bool,
    ) -> Result<(), Abort> {
        let deadline = Instant::now() + limit;
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) || view::stdout_closed() {
                return Err(Abort::Interrupted);
            }
            let views = self.look()?;
            self.narrate(&views);
            if cond(&views) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let table = self.table();
                self.say(&table);
                return Err(timed_out(what, limit).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait until a few echo replies arrive after `t`.
    fn wait_for_pings(&mut self, t: Instant, what: &str) -> Result<(), Abort> {
        let limit = Duration::from_secs(5) + self.advert * 4;
        let deadline = Instant::now() + limit;
        loop {
            if INTERRUPTED.load(Ordering::SeqCst) || view::stdout_closed() {
                return Err(Abort::Interrupted);
            }
            if self
                .pinger
                .as_ref()
                .is_some_and(|p| p.replies_since(t) >= 5)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(timed_out(what, limit).into());
            }
            let views = self.look()?;
            self.narrate(&views);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A short pause so a person can read, keeping the live table fresh.
    fn pause(&mut self) -> Result<(), Abort> {
        let until = Instant::now()
            + if self.args.fast {
                Duration::from_millis(1500)
            } else {
                Duration::from_millis(2000)
            };
        while Instant::now() < until {
            if INTERRUPTED.load(Ordering::SeqCst) || view::stdout_closed() {
                return Err(Abort::Interrupted);
            }
            let views = self.look()?;
            self.narrate(&views);
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Print one line per host whose state changed, then redraw the live table.
    fn narrate(&mut self, views: &[HostView]) {
        let previous = std::mem::replace(&mut self.last, views.to_vec());
        let mut events = Vec::new();
        for (i, v) in views.iter().enumerate() {
            let old = previous.get(i).cloned().unwrap_or_default();
            let mut parts = Vec::new();
            if old.running != v.running {
                parts.push(if v.running {
                    "daemon started".to_owned()
                } else {
                    "daemon gone".to_owned()
                });
            }
            if old.link_up != v.link_up && !previous.is_empty() {
                parts.push(format!("link {}", if v.link_up { "up" } else { "down" }));
            }
            if old.state != v.state && v.state.is_some() {
                let from = old.state.as_deref().unwrap_or("-");
                let to = v.state.as_deref().unwrap_or("-");
                let mut s = format!("{from} -> {}", self.style.paint(state_paint(to), to));
                if let Some(r) = &v.reason {
                    s.push_str(&format!(" ({r})"));
                }
                parts.push(s);
            }
            if old.vip_held != v.vip_held {
                parts.push(if v.vip_held {
                    format!("binds VIP {VIP}")
                } else {
                    format!("releases VIP {VIP}")
                });
            }
            if old.trackers_down != v.trackers_down && !v.trackers_down.is_empty() {
                parts.push(format!("tracker down: {}", v.trackers_down.join(", ")));
            }
            if !parts.is_empty() {
                events.push(format!(
                    "  {} {:<7} {}",
                    self.stamp(),
                    HOSTS[i].name,
                    parts.join("; ")
                ));
            }
        }
        let table = self.table();
        for e in events {
            self.screen.event(&self.style, &e, &table);
        }
        self.screen.draw(&self.style, &table);
    }

    /// The live table from the last look.
    fn table(&self) -> Vec<String> {
        let mut rows: Vec<Vec<Cell>> = vec![
            [
                "host",
                "runs",
                "state",
                "priority",
                "VIP held",
                "since / reason",
            ]
            .iter()
            .map(|h| ((*h).to_owned(), None))
            .collect(),
        ];
        let now = chrono::Utc::now();
        for (i, v) in self.last.iter().enumerate() {
            let runs = if self.is_keepalived(i) {
                "keepalived"
            } else {
                "kube-vrrp"
            };
            let mut state = match (&v.state, v.running) {
                (_, false) => "DOWN".to_owned(),
                (Some(s), true) => s.clone(),
                (None, true) => "starting".to_owned(),
            };
            if !v.link_up {
                state.push_str(" (link down)");
            }
            let paint = state_paint(if v.running {
                v.state.as_deref().unwrap_or("")
            } else {
                "DOWN"
            });
            let priority = match (v.priority, v.base_priority) {
                (Some(p), Some(b)) if p != b => format!("{p} (base {b})"),
                (Some(p), _) => p.to_string(),
                _ => "-".to_owned(),
            };
            let vip = if v.vip_held {
                VIP.to_string()
            } else {
                "-".to_owned()
            };
            let age = v
                .since
                .as_deref()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .and_then(|s| (now - s.with_timezone(&chrono::Utc)).to_std().ok())
                .map(|d| format!("{:.1}s ago", d.as_secs_f64()));
            let since = match (age, &v.reason) {
                (Some(a), Some(r)) => format!("{a}: {r}"),
                (Some(a), None) => a,
                (None, Some(r)) => r.clone(),
                (None, None) => String::new(),
            };
            rows.push(vec![
                (HOSTS[i].name.to_owned(), None),
                (runs.to_owned(), Some(Paint::Cyan)),
                (state, Some(paint)),
                (priority, None),
                (vip, v.vip_held.then_some(Paint::Green)),
                (since, Some(Paint::Dim)),
            ]);
        }
        view::table(&self.style, "    ", &rows)
    }

    /// On failure: the end of each daemon's log, before the scratch directory goes.
    fn dump_logs(&mut self) {
        self.screen.erase(&self.style);
        for h in HOSTS {
            let path = self.lab.log_path(h.name);
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("--- last lines of {}'s log ---", h.name);
            for l in &lines[lines.len().saturating_sub(15)..] {
                eprintln!("{l}");
            }
        }
    }
}

fn state_paint(state: &str) -> Paint {
    match state {
        "MASTER" => Paint::Green,
        "BACKUP" => Paint::Cyan,
        "FAULT" | "DOWN" => Paint::Red,
        _ => Paint::Yellow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_follow_the_rfc() {
        let s = Duration::from_secs(1);
        assert_eq!(skew_time(s, 244), Duration::from_micros(46_875));
        assert_eq!(
            master_down_interval(s, 244),
            Duration::from_micros(3_046_875)
        );
        let fast = Duration::from_millis(100);
        assert_eq!(
            master_down_interval(fast, 244),
            Duration::from_micros(304_687) + Duration::from_nanos(500)
        );
    }
}
