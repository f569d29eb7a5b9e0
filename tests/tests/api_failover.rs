//! End-to-end failover on a real API server ([`lab::kubelab`]: etcd + kube-apiserver, three
//! simulated Nodes, three agents in network namespaces, the operator). One VirtualIP
//! (192.0.2.200/24, VRRPv3, 1 s adverts, n1 200, n2 199, n3 198). The scenarios check what
//! `status` says while the VIP moves on the wire.
//!
//! Needs root (network namespaces) and `KUBEBUILDER_ASSETS`; otherwise each test prints its
//! SKIPPED line. The agent and operator are the debug binaries (`cargo build -p
//! kube-vrrp-agent -p kube-vrrp-operator`, or `KUBE_VRRP_AGENT_BIN` / `KUBE_VRRP_OPERATOR_BIN`).

use std::time::{Duration, Instant};

use lab::kubelab::{KubeLab, VIP, master, masters_shown, node_entry, phase, say, split_brain};

macro_rules! setup {
    ($name:expr) => {{
        lab::skip_unless_root!($name);
        let api = lab::skip_unless_api!();
        let mut env = KubeLab::setup(api);
        env.apply_vip_and_wait_n1();
        env
    }};
}

/// The address of host `i` as `status.masterAddress` shows it.
fn host_addr(env: &KubeLab, i: usize) -> String {
    env.lab.host(i).ipv4.to_string()
}

/// n1 dies (agent SIGKILLed, link down, kubelet heartbeat stopped): n2 takes over on the wire
/// and status follows within 5 s, never showing split brain; n1 becomes UNKNOWN /
/// AgentNotReporting once its Lease is stale; the other nodes' VRRPNode specs are untouched.
#[test]
fn master_dies() {
    let mut env = setup!("master_dies");
    let gens_before: Vec<String> = ["n2", "n3"].iter().map(|n| env.generation(n)).collect();

    let t_kill = Instant::now();
    env.kill_agent(0);
    env.lab.link_down(env.lab.host(0)).expect("link down");
    env.sims[0].stop_heartbeat();

    let wire = env.check(
        lab::wait_until(Duration::from_secs(15), "VIP on n2", || {
            env.lab.holds(env.lab.host(1), VIP).then(Instant::now)
        })
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "VIP on n2 {:.2}s after the kill",
        wire.duration_since(t_kill).as_secs_f64()
    ));
    let moved = env.check(env.watch().wait(
        t_kill,
        Duration::from_secs(5) + wire.saturating_duration_since(Instant::now()),
        "status.master == n2",
        |s| master(s) == "n2",
    ));
    let lag = moved.at.saturating_duration_since(wire);
    say(&format!("MEASURED status lag: {:.2}s", lag.as_secs_f64()));
    if lag > Duration::from_secs(5) {
        env.fail(&format!("status lag {lag:?} > 5s"));
    }
    let s = &moved.status;
    if s["masterAddress"] != host_addr(&env, 1).as_str() || phase(s) != "Active" {
        env.fail(&format!(
            "master n2 shown with masterAddress {} phase {}",
            s["masterAddress"],
            phase(s)
        ));
    }

    // n1 is shown as not reporting once its Lease (10 s) is stale.
    let unknown = env.check(env.watch().wait(
        t_kill,
        Duration::from_secs(20),
        "n1 UNKNOWN / AgentNotReporting",
        |s| {
            node_entry(s, "n1")
                .is_some_and(|n| n["state"] == "UNKNOWN" && n["reason"] == "AgentNotReporting")
        },
    ));
    say(&format!(
        "n1 AgentNotReporting {:.2}s after the kill",
        unknown.at.duration_since(t_kill).as_secs_f64()
    ));
    let s = env.check(
        env.watch()
            .wait(t_kill, Duration::from_secs(5), "final status", |s| {
                master(s) == "n2"
                    && phase(s) == "Active"
                    && node_entry(s, "n1").is_some_and(|n| n["state"] == "UNKNOWN")
            }),
    );
    let lf = &s.status["lastFailover"];
    if lf["from"] != "n1" || lf["to"] != "n2" {
        env.fail(&format!("lastFailover {lf}"));
    }
    if let Some(sb) = env.watch().split_brain_since(t_kill) {
        env.fail(&format!("split brain shown: {}", sb.status));
    }
    let gens_after: Vec<String> = ["n2", "n3"].iter().map(|n| env.generation(n)).collect();
    if gens_before != gens_after {
        env.fail(&format!(
            "VRRPNode generations of n2/n3 changed: {gens_before:?} -> {gens_after:?}"
        ));
    }
}

/// n1 is cut off the segment at the switch (its own link stays up, it keeps MASTER, its agent
/// still reaches the API): n2 takes over too, status shows SplitBrain within 5 s of both
/// holding the VIP; healing the link returns to Active with one master.
#[test]
fn real_split_brain() {
    let env = setup!("real_split_brain");
    let t_cut = Instant::now();
    env.lab.partition(env.lab.host(0)).expect("partition");
    let both = env.check(
        lab::wait_until(Duration::from_secs(15), "VIP on n1 and n2", || {
            let h = env.lab.holders(VIP);
            (h.contains(&0) && h.contains(&1)).then(Instant::now)
        })
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "both hold the VIP {:.2}s after the cut",
        both.duration_since(t_cut).as_secs_f64()
    ));
    let sb = env.check(env.watch().wait(
        t_cut,
        Duration::from_secs(5) + both.saturating_duration_since(Instant::now()),
        "phase SplitBrain",
        |s| phase(s) == "SplitBrain",
    ));
    say(&format!(
        "MEASURED split-brain lag: {:.2}s",
        sb.at.saturating_duration_since(both).as_secs_f64()
    ));

    let t_heal = Instant::now();
    env.lab.heal(env.lab.host(0)).expect("heal");
    env.check(
        lab::wait_until(Duration::from_secs(15), "one holder after heal", || {
            (env.lab.holders(VIP).len() == 1).then_some(())
        })
        .map_err(|e| e.to_string()),
    );
    let ok = env.check(env.watch().wait(
        t_heal,
        Duration::from_secs(15),
        "Active with one master after heal",
        |s| phase(s) == "Active" && masters_shown(s) == 1 && !split_brain(s),
    ));
    say(&format!(
        "Active again {:.2}s after heal (master {})",
        ok.at.duration_since(t_heal).as_secs_f64(),
        master(&ok.status)
    ));
}

/// The API server dies; during the outage n1 dies too and n2 takes over. After the restart
/// status shows n2 within 10 s of the API being ready, without split brain.
#[test]
fn api_outage_with_failover() {
    let mut env = setup!("api_outage_with_failover");
    env.api.kill_apiserver();
    let t_kill = Instant::now();
    env.kill_agent(0);
    env.lab.link_down(env.lab.host(0)).expect("link down");
    env.check(
        lab::wait_until(Duration::from_secs(15), "VIP on n2", || {
            env.lab.holds(env.lab.host(1), VIP).then_some(())
        })
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "VIP on n2 {:.2}s after the kill (API down)",
        t_kill.elapsed().as_secs_f64()
    ));
    env.sims[0].stop_heartbeat();
    let t_restart = Instant::now();
    env.api.restart_apiserver().expect("restart API server");
    let ready = Instant::now();
    say(&format!(
        "API ready {:.2}s after restart",
        ready.duration_since(t_restart).as_secs_f64()
    ));
    let moved = env.check(env.watch().wait(
        ready,
        Duration::from_secs(10),
        "status.master == n2 after the outage",
        |s| master(s) == "n2" && phase(s) == "Active",
    ));
    say(&format!(
        "MEASURED post-outage status lag: {:.2}s",
        moved.at.saturating_duration_since(ready).as_secs_f64()
    ));
    // Let the picture settle a little: n1 going stale must not bring split brain either.
    let _ = env.watch().wait(
        ready,
        Duration::from_secs(12),
        "n1 AgentNotReporting",
        |s| node_entry(s, "n1").is_some_and(|n| n["reason"] == "AgentNotReporting"),
    );
    if let Some(sb) = env.watch().split_brain_since(t_kill) {
        env.fail(&format!("split brain shown: {}", sb.status));
    }
    if master(&env.watch().last()) != "n2" {
        env.fail("master is no longer n2");
    }
}

/// n1's agent is SIGKILLed and restarted (the VIP stays bound meanwhile): status ends Active
/// with one master. Then `kubectl cordon n1` moves the VIP to n2 gracefully and n1 shows
/// reason Draining.
#[test]
fn agent_restart_and_cordon() {
    let mut env = setup!("agent_restart_and_cordon");
    let t0 = Instant::now();
    env.kill_agent(0);
    env.start_agent(0);
    env.check(env.watch().wait(
        t0,
        Duration::from_secs(30),
        "Active, one master, after the agent restart",
        |s| phase(s) == "Active" && masters_shown(s) == 1 && !master(s).is_empty(),
    ));
    // Settle on n1 (it has the highest priority and preempts).
    env.check(
        env.lab
            .wait_holder(VIP, 0, Duration::from_secs(20))
            .map_err(|e| e.to_string()),
    );
    let t_cordon = Instant::now();
    env.api.kubectl(&["cordon", "n1"]).expect("cordon");
    env.check(
        env.lab
            .wait_holder(VIP, 1, Duration::from_secs(20))
            .map_err(|e| e.to_string()),
    );
    let s = env.check(env.watch().wait(
        t_cordon,
        Duration::from_secs(10),
        "n2 master, n1 Draining",
        |s| {
            master(s) == "n2"
                && phase(s) == "Active"
                && node_entry(s, "n1").is_some_and(|n| n["reason"] == "Draining")
        },
    ));
    say(&format!(
        "cordon: status shows n2 {:.2}s after the cordon",
        s.at.duration_since(t_cordon).as_secs_f64()
    ));
    if let Some(sb) = env.watch().split_brain_since(t0) {
        env.fail(&format!("split brain shown: {}", sb.status));
    }
}

/// The API server restarts (a 10 s outage). Within 10 s of it answering again the operator
/// reconciles again: a VirtualIP created then gets its status (with a master), and `/readyz`,
/// which said "not ready" while the watches failed, says ready again.
#[test]
fn reconciles_resume_after_an_api_restart() {
    let env = setup!("reconciles_resume_after_an_api_restart");
    if env.operator_get("/readyz") != Some(200) {
        env.fail("operator not ready before the outage");
    }
    env.api.kill_apiserver();
    let down = lab::wait_until(
        Duration::from_secs(10),
        "/readyz 503 during the outage",
        || (env.operator_get("/readyz") == Some(503)).then_some(()),
    );
    env.check(down.map_err(|e| e.to_string()));
    let outage = Instant::now();
    lab::wait::holds_for(Duration::from_secs(10), "VIP stays on n1", || {
        env.lab.holds(env.lab.host(0), VIP)
    })
    .unwrap_or_else(|e| env.fail(&format!("VIP left n1 during the outage: {e}")));
    env.api.restart_apiserver().expect("restart API server");
    let ready = Instant::now();
    say(&format!(
        "API down {:.1}s, ready again",
        ready.duration_since(outage).as_secs_f64()
    ));
    let second = lab::kubelab::unique("vip2");
    env.apply_second_vip(&second);
    // Poll both: when /readyz says 200 again, when the new VirtualIP first has a status
    // (placed on the three nodes), and when it shows its master.
    let (mut readyz, mut placed) = (None, None);
    let shown = env.check(
        lab::apiserver::wait_every(
            lab::apiserver::KUBECTL_POLL,
            Duration::from_secs(20),
            "new VirtualIP Active with master n1",
            || {
                if readyz.is_none() && env.operator_get("/readyz") == Some(200) {
                    readyz = Some(ready.elapsed());
                }
                let s = env.status_of(&second);
                if placed.is_none() && s["nodes"].as_array().is_some_and(|n| n.len() == 3) {
                    placed = Some(ready.elapsed());
                }
                (master(&s) == "n1" && phase(&s) == "Active").then(|| ready.elapsed())
            },
        )
        .map_err(|e| e.to_string()),
    );
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    say(&format!(
        "MEASURED after the API was ready: operator ready {:.2}s, new VirtualIP status {:.2}s, \
         its master shown {:.2}s (includes the election: Master_Down_Interval ≈ 3.2 s)",
        secs(readyz),
        secs(placed),
        shown.as_secs_f64()
    ));
    match placed {
        Some(d) if d <= Duration::from_secs(10) => {}
        other => env.fail(&format!(
            "new VirtualIP status after {other:?}, not within 10 s"
        )),
    }
    match readyz {
        Some(d) if d <= Duration::from_secs(10) => {}
        other => env.fail(&format!(
            "operator /readyz 200 after {other:?}, not within 10 s"
        )),
    }
}

/// The API path goes silent for 12 s: every forwarded API connection (the agents' and the
/// operator's) stays open but passes no byte, and new ones are accepted but never answered (a
/// blackholed peer: no RST, nothing for the client's 30 s read timeout to see soon). Within
/// 6 s the operator's `/readyz` says 503 and `kube_vrrp_operator_api_stalled` is 1, and every
/// agent shows `kube_vrrp_api_stalled 1` / `kube_vrrp_api_connected 0`; the VIP stays on n1
/// throughout. Once bytes pass again, a VirtualIP created then gets its status within 10 s.
#[test]
fn a_silent_api_is_detected_within_seconds_and_reconciles_resume() {
    lab::skip_unless_root!("a_silent_api_is_detected_within_seconds_and_reconciles_resume");
    let api = lab::skip_unless_api!();
    let mut env = KubeLab::setup_with_operator_forward(api);
    env.apply_vip_and_wait_n1();
    let ready = lab::wait_until(Duration::from_secs(10), "operator ready", || {
        (env.operator_get("/readyz") == Some(200)).then_some(())
    });
    env.check(ready.map_err(|e| e.to_string()));
    let agent_stalled = |i: usize| {
        env.agent_get(i, "/metrics").is_ok_and(|m| {
            m.lines().any(|l| l == "kube_vrrp_api_stalled 1")
                && m.lines().any(|l| l == "kube_vrrp_api_connected 0")
        })
    };
    let operator_stalled = || {
        env.operator_fetch("/metrics")
            .is_some_and(|(_, m)| m.lines().any(|l| l == "kube_vrrp_operator_api_stalled 1"))
    };

    const SILENCE: Duration = Duration::from_secs(12);
    const DETECT: Duration = Duration::from_secs(6);
    let silent = Instant::now();
    env.blackhole_api(true);
    let (mut unready, mut metric, mut agents) = (None, None, [None; 3]);
    let detected = lab::apiserver::wait_every(
        Duration::from_millis(100),
        DETECT,
        "operator /readyz 503 and every stall metric",
        || {
            if unready.is_none() && env.operator_get("/readyz") == Some(503) {
                unready = Some(silent.elapsed());
            }
            if metric.is_none() && operator_stalled() {
                metric = Some(silent.elapsed());
            }
            for (i, a) in agents.iter_mut().enumerate() {
                if a.is_none() && agent_stalled(i) {
                    *a = Some(silent.elapsed());
                }
            }
            (unready.is_some() && metric.is_some() && agents.iter().all(Option::is_some))
                .then_some(())
        },
    );
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    say(&format!(
        "MEASURED blackhole detection: operator /readyz 503 {:.2}s, api_stalled {:.2}s; \
         agents api_stalled {:.2}s {:.2}s {:.2}s",
        secs(unready),
        secs(metric),
        secs(agents[0]),
        secs(agents[1]),
        secs(agents[2]),
    ));
    if let Err(e) = detected {
        env.blackhole_api(false);
        env.fail(&format!("stall not shown within {DETECT:?}: {e}"));
    }
    let held = lab::wait::holds_for(
        SILENCE.saturating_sub(silent.elapsed()),
        "VIP stays on n1",
        || env.lab.holds(env.lab.host(0), VIP),
    );
    if let Err(e) = held {
        env.blackhole_api(false);
        env.fail(&format!("VIP left n1 while the API was silent: {e}"));
    }
    // Still stalled at the end of the silence: nothing mistook a stuck connection for life.
    if env.operator_get("/readyz") != Some(503) {
        env.blackhole_api(false);
        env.fail("operator ready again while the API was still silent");
    }

    env.blackhole_api(false);
    let restored = Instant::now();
    let second = lab::kubelab::unique("vip2");
    env.apply_second_vip(&second);
    let (mut readyz, mut placed, mut agents_back) = (None, None, [None; 3]);
    let shown = env.check(
        lab::apiserver::wait_every(
            lab::apiserver::KUBECTL_POLL,
            Duration::from_secs(20),
            "new VirtualIP Active with master n1",
            || {
                if readyz.is_none() && env.operator_get("/readyz") == Some(200) {
                    readyz = Some(restored.elapsed());
                }
                for (i, a) in agents_back.iter_mut().enumerate() {
                    if a.is_none()
                        && env.agent_get(i, "/metrics").is_ok_and(|m| {
                            m.lines().any(|l| l == "kube_vrrp_api_connected 1")
                                && m.lines().any(|l| l == "kube_vrrp_api_stalled 0")
                        })
                    {
                        *a = Some(restored.elapsed());
                    }
                }
                let s = env.status_of(&second);
                if placed.is_none() && s["nodes"].as_array().is_some_and(|n| n.len() == 3) {
                    placed = Some(restored.elapsed());
                }
                (master(&s) == "n1" && phase(&s) == "Active").then(|| restored.elapsed())
            },
        )
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "MEASURED after the blackhole lifted: operator ready {:.2}s, new VirtualIP status {:.2}s, \
         its master shown {:.2}s; agents connected {:.2}s {:.2}s {:.2}s",
        secs(readyz),
        secs(placed),
        shown.as_secs_f64(),
        secs(agents_back[0]),
        secs(agents_back[1]),
        secs(agents_back[2]),
    ));
    if !env.lab.holds(env.lab.host(0), VIP) {
        env.fail("VIP not on n1 after the blackhole");
    }
    match placed {
        Some(d) if d <= Duration::from_secs(10) => {}
        other => env.fail(&format!(
            "new VirtualIP status after {other:?}, not within 10 s"
        )),
    }
    match readyz {
        Some(d) if d <= Duration::from_secs(10) => {}
        other => env.fail(&format!(
            "operator /readyz 200 after {other:?}, not within 10 s"
        )),
    }
    let stalls = env
        .operator_fetch("/metrics")
        .map(|(_, m)| m)
        .unwrap_or_default();
    if !stalls
        .lines()
        .any(|l| l == "kube_vrrp_operator_api_stalls_total 1")
    {
        env.fail(&format!("operator did not count one stall:\n{stalls}"));
    }
}

/// `kubectl delete vrrpnodes --all` (a sweep by someone else): the operator's watch sees the
/// deletions and puts every VRRPNode back within 5 s; meanwhile the agents keep their last
/// config (the grace period), so the VIP never leaves n1. Then an edit of n2's spec by someone
/// else is undone within 5 s.
#[test]
fn vrrpnodes_deleted_or_edited_by_someone_else_are_restored() {
    let env = setup!("vrrpnodes_deleted_or_edited_by_someone_else_are_restored");
    let planned = |node: &str| {
        env.api
            .kubectl(&[
                "get",
                "vrrpnode",
                node,
                "-o",
                "jsonpath={.spec.configHash}/{.spec.instances[0].priority}",
            ])
            .ok()
    };
    let before: Vec<Option<String>> = lab::kubelab::NODES.iter().map(|n| planned(n)).collect();
    assert!(
        before
            .iter()
            .all(|p| p.as_ref().is_some_and(|p| p.len() > 2)),
        "{before:?}"
    );

    let deleted = Instant::now();
    env.check(
        env.api
            .kubectl(&["delete", "vrrpnodes", "--all", "--wait=false"])
            .map_err(|e| e.to_string()),
    );
    let mut vip_left = None;
    let restored = env.check(
        lab::apiserver::wait_every(
            lab::apiserver::KUBECTL_POLL,
            Duration::from_secs(20),
            "every VRRPNode back with its planned spec",
            || {
                if vip_left.is_none() && !env.lab.holds(env.lab.host(0), VIP) {
                    vip_left = Some(deleted.elapsed());
                }
                let now: Vec<Option<String>> =
                    lab::kubelab::NODES.iter().map(|n| planned(n)).collect();
                (now == before).then(|| deleted.elapsed())
            },
        )
        .map_err(|e| e.to_string()),
    );
    // The VIP stays on n1 a while longer: the agents ride out the gap.
    lab::wait::holds_for(Duration::from_secs(2), "VIP stays on n1", || {
        env.lab.holds(env.lab.host(0), VIP)
    })
    .unwrap_or_else(|e| env.fail(&format!("VIP left n1 after the restore: {e}")));
    let held_logged = std::fs::read_to_string(&env.agent_logs[0])
        .unwrap_or_default()
        .contains("VRRPNodeAbsent");
    say(&format!(
        "MEASURED: VRRPNodes deleted -> all restored {:.2}s; VIP left n1: {vip_left:?}; \
         n1 agent logged the held config: {held_logged}",
        restored.as_secs_f64()
    ));
    if restored > Duration::from_secs(5) {
        env.fail(&format!(
            "VRRPNodes restored after {restored:?}, not within 5 s"
        ));
    }
    if let Some(t) = vip_left {
        env.fail(&format!("the VIP left n1 {t:?} after the deletion"));
    }

    // Someone edits n2's spec (priority 1): put back within 5 s.
    let edited = Instant::now();
    env.check(
        env.api
            .kubectl(&[
                "patch",
                "vrrpnode",
                "n2",
                "--type=json",
                "-p",
                r#"[{"op":"replace","path":"/spec/instances/0/priority","value":1}]"#,
            ])
            .map_err(|e| e.to_string()),
    );
    let undone = env.check(
        lab::apiserver::wait_every(
            lab::apiserver::KUBECTL_POLL,
            Duration::from_secs(20),
            "n2's spec put back",
            || (planned("n2") == before[1]).then(|| edited.elapsed()),
        )
        .map_err(|e| e.to_string()),
    );
    say(&format!(
        "MEASURED: foreign edit of VRRPNode n2 undone in {:.2}s",
        undone.as_secs_f64()
    ));
    if undone > Duration::from_secs(5) {
        env.fail(&format!("edit undone after {undone:?}, not within 5 s"));
    }
}

/// VirtualIP names of 253 characters (the limit): kube's Recorder would name their Events
/// `{name}.{nanos}`, over the limit, and the API server refused them. The operator's
/// SecretNotFound Warning and the agent's BecameMaster Event both appear.
#[test]
fn events_for_virtualip_names_of_253_characters() {
    let env = setup!("events_for_virtualip_names_of_253_characters");
    let long = |c: char| format!("{}{}", "v".repeat(252), c);
    let (bad, good) = (long('a'), long('b'));
    let client = env.api.kubectl_client();
    client
        .apply(&serde_json::json!({
            "apiVersion": "kubevrrp.io/v1alpha1",
            "kind": "VirtualIP",
            "metadata": {"name": bad, "namespace": "default"},
            "spec": {
                "addresses": ["192.0.2.211/24"], "interface": "eth0", "advertInterval": "1s",
                "version": 2,
                "authentication": {"type": "PASS", "passwordSecretRef": {"name": "absent"}},
            }
        }))
        .expect("apply the VirtualIP with a missing Secret");
    env.apply_vip(&good, "192.0.2.212/24");
    let started = Instant::now();
    let found = |reason: &str, name: &str| {
        let out = env
            .api
            .kubectl(&["get", "events.events.k8s.io", "-n", "default", "-o", "json"])
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v["items"]
            .as_array()?
            .iter()
            .any(|e| e["reason"] == reason && e["regarding"]["name"] == name)
            .then_some(())
    };
    let r = lab::apiserver::wait_every(
        lab::apiserver::KUBECTL_POLL,
        Duration::from_secs(20),
        "SecretNotFound and BecameMaster Events for the long names",
        || {
            found("SecretNotFound", &bad)?;
            found("BecameMaster", &good)?;
            Some(started.elapsed())
        },
    );
    let took = env.check(r.map_err(|e| e.to_string()));
    say(&format!(
        "MEASURED: Events for 253-character names published within {:.2}s",
        took.as_secs_f64()
    ));
}
