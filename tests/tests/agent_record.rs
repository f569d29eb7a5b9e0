//! The VIP record after a crash (issue 19): a master is killed with `kill -9` (its VIP stays
//! bound), the backup takes over, and the dead agent's `vips.json` is then corrupted, emptied
//! or deleted. The agent restarted on that host (as a backup) must remove the stray VIP, so
//! the address is on one host only. Needs root (skips otherwise) and the agent binary.

use std::time::{Duration, Instant};

use lab::{Agent, Instance, KeepalivedConf, Lab, VIP4, VrrpDaemon};

fn conf(priority: u8) -> String {
    KeepalivedConf::single(Instance::v3(priority, Duration::from_millis(100))).render()
}

#[test]
fn agent_restart_after_kill9_with_a_bad_vip_record_leaves_one_holder() {
    lab::skip_unless_root!("agent_restart_after_kill9_with_a_bad_vip_record_leaves_one_holder");
    let lab = Lab::builder().hosts(2).build().unwrap();
    let (h1, h2) = (lab.host(0), lab.host(1));
    let record = lab.node_dir(h1).unwrap().join("agent-state/vips.json");
    let _backup = Agent::start(&lab, h2, &conf(100)).unwrap();
    let mut results = Vec::new();
    for (what, damage) in [
        ("corrupt", Some(&b"\0\0{garbage"[..])),
        ("empty", Some(&b""[..])),
        ("missing", None),
    ] {
        let mut master = Agent::start(&lab, h1, &conf(200)).unwrap();
        lab.wait_holder(VIP4, 0, Duration::from_secs(10)).unwrap();
        lab::wait_until(Duration::from_secs(5), "h1 alone holds the VIP", || {
            (lab.holders(VIP4) == [0]).then_some(())
        })
        .unwrap();
        assert!(record.exists(), "{what}: the master recorded its VIP");
        master.crash().unwrap();
        // h2 takes over while the dead h1 still has the address: two holders.
        lab::wait_until(Duration::from_secs(5), "h2 takes over", || {
            (lab.holders(VIP4) == [0, 1]).then_some(())
        })
        .unwrap_or_else(|e| panic!("{what}: {e}: holders {:?}", lab.holders(VIP4)));
        match damage {
            Some(bytes) => std::fs::write(&record, bytes).unwrap(),
            None => std::fs::remove_file(&record).unwrap(),
        }
        // Restarted as a backup (lower priority): it must not keep the address it cannot
        // know it added.
        let restarted = Instant::now();
        let again = Agent::start(&lab, h1, &conf(50)).unwrap();
        let took = lab::wait_until(Duration::from_secs(5), "one holder again", || {
            (lab.holders(VIP4) == [1]).then(|| restarted.elapsed())
        })
        .unwrap_or_else(|e| panic!("{what}: {e}: holders {:?}", lab.holders(VIP4)));
        let st = again.status().unwrap();
        assert_eq!(
            st.instance("VI_1").map(|i| i.state.as_str()),
            Some("BACKUP")
        );
        lab::wait::holds_for(Duration::from_millis(500), "h2 alone", || {
            lab.holders(VIP4) == [1]
        })
        .unwrap();
        results.push((what, took));
        drop(again);
        // Next round: h1 at 200 preempts and holds the VIP again.
    }
    for (what, took) in results {
        eprintln!(
            "RECORD {what:<8} restart -> stray VIP removed, one holder after {:.0} ms",
            took.as_secs_f64() * 1000.0
        );
    }
}
