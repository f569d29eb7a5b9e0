//! The scenario list (issue 5) as functions over daemon kinds and a protocol [`Variant`], so
//! the keepalived-only tests, the agent tests and the interop tests share one implementation.
//! Each returns a short human-readable summary of what it measured.

use std::time::Duration;

use crate::config::{KeepalivedConf, TrackProcess, TrackScript};
use crate::daemon::DaemonKind;
use crate::error::{LabError, Result};
use crate::scenario::{Cluster, Failover, Variant, check_burst};

fn fail(what: &str, reason: String) -> LabError {
    LabError::Parse {
        what: what.to_string(),
        reason,
    }
}

/// Extra time the first election gets (daemons starting on a busy machine).
const START_MARGIN: Duration = Duration::from_secs(5);

/// Starts every daemon and waits until host 1 (highest priority) is the only master, the
/// client can ping the VIP, and that stays so for a while.
pub fn election(kinds: &[DaemonKind], variant: Variant) -> Result<Cluster> {
    let mut c = Cluster::new(kinds, variant)?;
    elect(&mut c)?;
    Ok(c)
}

/// [`election`] on a prepared cluster.
pub fn elect(c: &mut Cluster) -> Result<()> {
    c.start_all()?;
    let bound = c.variant.takeover_bound(c.priority(0)) + START_MARGIN;
    c.wait_master(0, bound)?;
    c.wait_vip_pingable()?;
    c.assert_stable_master(0)?;
    c.check_no_rejections()
}

fn check_failover(what: &str, f: &Failover) -> Result<()> {
    if !f.ping.recovered {
        return Err(fail(
            what,
            format!("client pings did not recover: {:?}", f.ping),
        ));
    }
    check_burst(f).map_err(|e| fail(what, e))
}

fn summary(what: &str, f: &Failover) -> String {
    format!(
        "{what}: takeover {:?}, client gap {:?} (outage {:?}, {}/{} answered), {} announcements",
        f.takeover,
        f.ping.max_gap,
        f.ping.outage(),
        f.ping.answered,
        f.ping.sent,
        f.announces.len()
    )
}

/// Election; the master's node dies (daemon crash + link down) ⇒ host 2 takes over within
/// Master_Down_Interval + margin, announces the VIP (≥ 5 GARPs / NAs at once) and the client
/// reaches it again; host 1 comes back ⇒ it preempts and is the only master.
pub fn crash_failover(kinds: &[DaemonKind], variant: Variant) -> Result<(Failover, String)> {
    let mut c = election(kinds, variant)?;
    let bound = c.variant.takeover_bound(c.priority(1));
    let f = c.failover(1, bound, |c| c.kill_node(0))?;
    check_failover("crash failover", &f)?;
    // The backup cannot have noticed before Master_Down_Interval minus one advert interval
    // (the crash lands somewhere between two adverts); faster means it did not wait.
    let floor = c
        .variant
        .master_down_interval(c.priority(1))
        .saturating_sub(c.variant.advert + Duration::from_millis(100));
    if f.ping.max_gap < floor {
        return Err(fail(
            "crash failover",
            format!(
                "client gap {:?} shorter than possible ({floor:?})",
                f.ping.max_gap
            ),
        ));
    }
    c.assert_stable_master(1)?;
    c.revive(0)?;
    let back = c.wait_master(0, c.variant.takeover_bound(c.priority(0)) + START_MARGIN)?;
    c.wait_vip_pingable()?;
    c.assert_stable_master(0)?;
    c.check_no_rejections()?;
    let s = format!("{}; preempted back in {back:?}", summary("crash", &f));
    Ok((f, s))
}

/// Election; SIGTERM on the master ⇒ it sends priority 0 and host 2 takes over after its
/// skew time (well before a Master_Down_Interval); restart ⇒ host 1 preempts back.
pub fn sigterm_handover(kinds: &[DaemonKind], variant: Variant) -> Result<(Failover, String)> {
    let mut c = election(kinds, variant)?;
    // Generous, but below what a crash would take at 1 s adverts.
    let bound = c.variant.skew_time(c.priority(1)) + c.variant.advert + Duration::from_secs(2);
    let f = c.failover(1, bound, |c| c.terminate(0))?;
    c.wait_stopped(0)?;
    check_failover("SIGTERM handover", &f)?;
    if c.lab.holds(c.lab.host(0), c.variant.vip) {
        return Err(fail(
            "SIGTERM handover",
            "the stopped master kept the VIP".into(),
        ));
    }
    c.assert_stable_master(1)?;
    c.start(0)?;
    let back = c.wait_master(0, c.variant.takeover_bound(c.priority(0)) + START_MARGIN)?;
    c.assert_stable_master(0)?;
    c.check_no_rejections()?;
    let s = format!("{}; preempted back in {back:?}", summary("SIGTERM", &f));
    Ok((f, s))
}

/// Planned handover between our agents, run from one VirtualIP file listing every host with
/// its priority (as a cluster's operator ranks them): SIGTERM of the master ⇒ the client,
/// probing every 10 ms, loses no probe; host 2 becomes master on the priority-0 advert without
/// waiting Skew_Time (its `/status` says `master … left`), and the old master let go of the
/// VIP only after host 2 held it.
pub fn planned_handover(variant: Variant) -> Result<(Failover, String)> {
    let what = "planned handover";
    let kinds = [DaemonKind::Agent; 3];
    let mut c = Cluster::new(&kinds, variant)?;
    c.run_agents_from_virtual_ip("handover");
    c.probe = Some(Duration::from_millis(10));
    elect(&mut c)?;
    let bound = c.variant.skew_time(c.priority(1)) + c.variant.advert + Duration::from_secs(2);
    let f = c.failover(1, bound, |c| c.terminate(0))?;
    c.wait_stopped(0)?;
    check_failover(what, &f)?;
    if f.ping.lost > 0 {
        return Err(fail(
            what,
            format!("the client lost {} probes: {:?}", f.ping.lost, f.ping),
        ));
    }
    let name = c.confs[1].instances[0].name.clone();
    let reason = c
        .daemon(1)
        .and_then(|d| d.status().and_then(std::result::Result::ok))
        .and_then(|st| st.instance(&name).map(|i| i.reason.clone()))
        .flatten()
        .unwrap_or_default();
    if !reason.contains("left (priority 0 advert)") {
        return Err(fail(
            what,
            format!("host 2 took over for another reason: {reason:?}"),
        ));
    }
    c.assert_stable_master(1)?;
    c.check_no_rejections()?;
    Ok((f.clone(), summary(what, &f)))
}

/// All instances `nopreempt` (state BACKUP): election; master stopped ⇒ host 2; host 1
/// restarted ⇒ host 2 keeps the VIP.
pub fn nopreempt(kinds: &[DaemonKind], variant: Variant) -> Result<String> {
    let confs = (0..kinds.len())
        .map(|i| {
            let mut inst = variant.instance(i).nopreempt();
            inst.master = false;
            KeepalivedConf::single(inst)
        })
        .collect();
    let mut c = Cluster::with_confs(kinds, variant, confs)?;
    elect(&mut c)?;
    c.stop(0)?;
    let t = c.wait_master(1, c.variant.takeover_bound(c.priority(1)))?;
    c.start(0)?;
    // Host 1 must stay out for many of its Master_Down_Intervals.
    let hold = (c.variant.master_down_interval(c.priority(0)) * 4).max(Duration::from_secs(2));
    crate::wait::holds_for(hold, "host 2 stays master under nopreempt", || {
        c.live_holders() == [1]
    })
    .map_err(|e| fail("nopreempt", format!("{e}\n{}", c.logs())))?;
    c.wait_master(1, Duration::from_secs(1))?;
    c.check_no_rejections()?;
    Ok(format!(
        "nopreempt: moved in {t:?}, host 2 kept the VIP for {hold:?}"
    ))
}

/// Election; the master's link goes down ⇒ host 2 takes over; link back ⇒ host 1 preempts.
pub fn link_down_moves(kinds: &[DaemonKind], variant: Variant) -> Result<String> {
    let mut c = election(kinds, variant)?;
    let bound = c.variant.takeover_bound(c.priority(1));
    let f = c.failover(1, bound, |c| {
        c.lab.link_down(c.lab.host(0))?;
        c.set_excluded(0, true);
        Ok(())
    })?;
    check_failover("link down", &f)?;
    c.assert_stable_master(1)?;
    c.lab.link_up(c.lab.host(0))?;
    c.set_excluded(0, false);
    let back = c.wait_master(0, c.variant.takeover_bound(c.priority(0)) + START_MARGIN)?;
    c.wait_vip_pingable()?;
    c.assert_stable_master(0)?;
    c.check_no_rejections()?;
    Ok(format!(
        "{}; back after link up in {back:?}",
        summary("link down", &f)
    ))
}

/// Election; the master is partitioned (carrier kept) ⇒ host 2 becomes master too; heal ⇒
/// the two masters meet and exactly one (host 1, higher priority) remains.
pub fn partition_heal(kinds: &[DaemonKind], variant: Variant) -> Result<String> {
    let mut c = election(kinds, variant)?;
    c.lab.partition(c.lab.host(0))?;
    c.set_excluded(0, true);
    let t = c.wait_master(1, c.variant.takeover_bound(c.priority(1)))?;
    if !c.lab.holds(c.lab.host(0), c.variant.vip) {
        return Err(fail(
            "partition",
            "the partitioned master dropped the VIP (it hears nobody, so it should stay master)"
                .into(),
        ));
    }
    c.lab.heal(c.lab.host(0))?;
    c.set_excluded(0, false);
    let back = c.wait_master(0, c.variant.takeover_bound(c.priority(0)))?;
    c.wait_vip_pingable()?;
    c.assert_stable_master(0)?;
    c.check_no_rejections()?;
    Ok(format!(
        "partition: host 2 master after {t:?}; one master {back:?} after heal"
    ))
}

/// Host 1 tracks a `vrrp_script` (`test -f FILE`, weight 0, rise 2, fall 2): election; the
/// file goes away ⇒ host 1 goes FAULT (drops the VIP) and host 2 takes over; the file comes
/// back ⇒ host 1 preempts back.
pub fn script_tracker_fail_recover(kinds: &[DaemonKind], variant: Variant) -> Result<String> {
    let mut confs: Vec<KeepalivedConf> = (0..kinds.len())
        .map(|i| KeepalivedConf::single(variant.instance(i)))
        .collect();
    let mut c = Cluster::with_confs(kinds, variant, Vec::new())?;
    let flag = c.lab.node_dir(c.lab.host(0))?.join("healthy");
    std::fs::write(&flag, "ok\n").map_err(|e| LabError::io("write the health flag", e))?;
    let script = TrackScript {
        name: "chk_flag".into(),
        script: format!("/usr/bin/test -f {}", flag.display()),
        interval: 1,
        timeout: 2,
        rise: 2,
        fall: 2,
        weight: None,
    };
    // Time the tracker needs to change its verdict, on top of the VRRP takeover.
    let script_lag = Duration::from_secs(u64::from(
        script.interval * script.fall.max(script.rise) + script.timeout,
    ));
    confs[0].scripts.push(script);
    confs[0].instances[0].track_scripts.push("chk_flag".into());
    c.confs = confs;
    elect(&mut c)?;
    std::fs::remove_file(&flag).map_err(|e| LabError::io("remove the health flag", e))?;
    // Weight 0: the failed host goes FAULT (our agent must say so in /status).
    c.expect_fault[0] = true;
    let t = c.wait_master(1, c.variant.takeover_bound(c.priority(1)) + script_lag)?;
    if c.lab.holds(c.lab.host(0), c.variant.vip) {
        return Err(fail(
            "script tracker",
            "the failed host kept the VIP".into(),
        ));
    }
    std::fs::write(&flag, "ok\n").map_err(|e| LabError::io("write the health flag", e))?;
    c.expect_fault[0] = false;
    let back = c.wait_master(0, c.variant.takeover_bound(c.priority(0)) + script_lag)?;
    c.assert_stable_master(0)?;
    c.check_no_rejections()?;
    Ok(format!(
        "script tracker: moved {t:?} after failing; back {back:?} after recovering"
    ))
}

/// Host 1 (priority 100) tracks a process with weight +60 (so 160 while it runs, above host
/// 2's 150): the process dies ⇒ host 2 preempts; it runs again ⇒ host 1 preempts back.
/// The process has a name unique to this run (trackers see every process on the machine).
pub fn process_tracker(kinds: &[DaemonKind], variant: Variant) -> Result<String> {
    let mut confs: Vec<KeepalivedConf> = (0..kinds.len())
        .map(|i| KeepalivedConf::single(variant.instance(i)))
        .collect();
    let mut c = Cluster::with_confs(kinds, variant, Vec::new())?;
    let name = format!(
        "kvp{:05x}",
        u32::from(crate::topology::random_u16()) << 4 | std::process::id() & 0xf
    );
    let bin_dir = c.lab.node_dir(c.lab.host(0))?.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| LabError::io("mkdir bin", e))?;
    std::fs::copy("/bin/sleep", bin_dir.join(&name))
        .map_err(|e| LabError::io("copy /bin/sleep", e))?;
    confs[0].instances[0].priority = 100;
    confs[0].processes.push(TrackProcess {
        name: "track_app".into(),
        process: name.clone(),
        weight: Some(60),
    });
    confs[0].instances[0]
        .track_processes
        .push("track_app".into());
    if let Some(conf) = confs.get_mut(2) {
        conf.instances[0].priority = 50;
    }
    c.confs = confs;
    let run_app = |c: &Cluster| {
        let mut cmd = crate::netns::command_in(&c.lab.host(0).netns, &[name.as_str(), "3600"]);
        let path = format!(
            "{}:{}",
            bin_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("PATH", path);
        c.lab.spawn_cmd(cmd, &name, None)
    };
    let app = run_app(&c)?;
    elect(&mut c)?;
    let lag = Duration::from_secs(2);
    drop(app);
    let t = c.wait_master(1, c.variant.takeover_bound(150) + lag)?;
    c.assert_stable_master(1)?;
    let _app = run_app(&c)?;
    let back = c.wait_master(0, c.variant.takeover_bound(160) + lag)?;
    c.assert_stable_master(0)?;
    c.check_no_rejections()?;
    Ok(format!(
        "process tracker: moved {t:?} after the process died; back {back:?} after it returned"
    ))
}
