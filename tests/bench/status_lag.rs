//! Status-truth benchmark (not a test): how long `kubectl get vips` takes to name the new
//! master after the master's node dies, and how many API writes the cluster makes per node
//! per minute in steady state. On a real API server (`KUBEBUILDER_ASSETS`, as the `api_*`
//! tests) with the `lab::kubelab` cluster: three simulated Nodes, three agents in network
//! namespaces, the operator, one VirtualIP at 1 s adverts (n1 200, n2 199, n3 198).
//!
//! Each repetition: n1's agent is SIGKILLed and its link taken down (its node's kubelet
//! heartbeat keeps running: the API still sees the Node Ready, so only the agents' evidence
//! can move the status). Measured: from the kill to n2 holding the VIP on the wire (VRRP's
//! Master_Down_Interval), from then to `status.master == n2` (the status lag), and from the
//! kill to the correct status. Then n1's link comes back, its agent restarts and n1 preempts
//! back; the status must show n1 again before the next repetition.
//!
//! Steady state: the API server's own request counters (`apiserver_request_total`, write
//! verbs) over a quiet window, minus the stand-in kubelets' Lease renewals, per node per
//! minute, by resource.
//!
//! API restarts: the API server is killed for 5 s and started again; measured from when it
//! answers again to the operator's `/readyz` being 200 and to a VirtualIP created then having
//! its status (placed on the three nodes).
//!
//! Usage (root): `cargo build -p kube-vrrp-agent -p kube-vrrp-operator && cargo run -p
//! kube-vrrp-tests --bin status-lag-bench -- [--reps N] [--restarts M] [--steady-secs S]`

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lab::apiserver::ApiServer;
use lab::kubelab::{KubeLab, VIP, master, phase, say};

struct Opts {
    reps: usize,
    steady: Duration,
    restarts: usize,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        reps: 10,
        steady: Duration::from_secs(60),
        restarts: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--reps" => {
                o.reps = match val("--reps")?.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err("--reps: not a positive number".into()),
                }
            }
            "--restarts" => {
                o.restarts = val("--restarts")?
                    .parse()
                    .map_err(|e| format!("--restarts: {e}"))?
            }
            "--steady-secs" => {
                o.steady = match val("--steady-secs")?.parse::<u64>() {
                    Ok(n) if n >= 10 => Duration::from_secs(n),
                    _ => return Err("--steady-secs: a number of seconds, at least 10".into()),
                }
            }
            "-h" | "--help" => {
                println!("{}", lab::module_doc(include_str!("status_lag.rs")));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(o)
}

/// Write requests the API server counted so far, by resource (`resource/subresource`).
fn api_writes(env: &KubeLab) -> BTreeMap<String, f64> {
    let text = env
        .api
        .kubectl(&["get", "--raw", "/metrics"])
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{k}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        if !matches!(
            label("verb").as_str(),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "CREATE" | "UPDATE"
        ) {
            continue;
        }
        let mut key = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            key = format!("{key}/{sub}");
        }
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "{name:<28} median {:6.2} s  p95 {:6.2} s  max {:6.2} s  (N = {})",
        percentile(&v, 0.5),
        percentile(&v, 0.95),
        v.last().copied().unwrap_or(f64::NAN),
        v.len()
    )
}

fn main() {
    let opts = match parse_opts() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("status-lag-bench: {e}");
            std::process::exit(2);
        }
    };
    if !lab::can_run("status-lag-bench") {
        std::process::exit(2);
    }
    let api = match ApiServer::start_with(Default::default()) {
        Ok(Some(api)) => api,
        Ok(None) => {
            eprintln!("{}", lab::apiserver::SKIP_LINE);
            std::process::exit(2);
        }
        Err(e) => {
            eprintln!("status-lag-bench: starting the API server: {e}");
            std::process::exit(1);
        }
    };
    let mut env = KubeLab::setup(api);
    env.apply_vip_and_wait_n1();

    // Steady state first (nothing moves): writes per node per minute.
    let renewals_before: u64 = env.sims.iter().map(|s| s.renewals()).sum();
    let before = api_writes(&env);
    let t0 = Instant::now();
    std::thread::sleep(opts.steady);
    let after = api_writes(&env);
    let renewals: u64 = env.sims.iter().map(|s| s.renewals()).sum::<u64>() - renewals_before;
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let nodes = env.sims.len() as f64;
    say(&format!(
        "steady state over {:.0} s, {} nodes (stand-in kubelet Lease renewals subtracted: {renewals}):",
        t0.elapsed().as_secs_f64(),
        env.sims.len()
    ));
    let mut total = 0.0;
    for (res, n) in &after {
        let mut d = n - before.get(res).copied().unwrap_or(0.0);
        if res == "leases" {
            d -= renewals as f64;
        }
        if d > 0.0 {
            total += d;
            say(&format!(
                "  {res:<28} {:6.1} writes/node/min",
                d / nodes / minutes
            ));
        }
    }
    say(&format!(
        "  {:<28} {:6.1} writes/node/min (agent Lease every 2 s = 30)",
        "all",
        total / nodes / minutes
    ));

    let (mut wire, mut lag, mut total_lag) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..opts.reps {
        let t_kill = Instant::now();
        env.kill_agent(0);
        env.lab.link_down(env.lab.host(0)).expect("link down");
        let on_wire = env.check(
            lab::wait_until(Duration::from_secs(15), "VIP on n2", || {
                env.lab.holds(env.lab.host(1), VIP).then(Instant::now)
            })
            .map_err(|e| e.to_string()),
        );
        let shown = env.check(env.watch().wait(
            t_kill,
            Duration::from_secs(30),
            "status.master == n2",
            |s| master(s) == "n2" && phase(s) == "Active",
        ));
        let w = on_wire.duration_since(t_kill).as_secs_f64();
        let l = shown.at.saturating_duration_since(on_wire).as_secs_f64();
        let t = shown.at.duration_since(t_kill).as_secs_f64();
        say(&format!(
            "rep {:2}: on the wire {w:.2} s, status lag {l:.2} s, kill → status {t:.2} s",
            rep + 1
        ));
        wire.push(w);
        lag.push(l);
        total_lag.push(t);

        // Revive n1: it preempts back; status must follow before the next repetition.
        let t_back = Instant::now();
        env.lab.link_up(env.lab.host(0)).expect("link up");
        env.start_agent(0);
        env.check(
            env.lab
                .wait_holder(VIP, 0, Duration::from_secs(30))
                .map(|_| ())
                .map_err(|e| e.to_string()),
        );
        env.check(env.watch().wait(
            t_back,
            Duration::from_secs(30),
            "status.master == n1 again",
            |s| master(s) == "n1" && phase(s) == "Active",
        ));
    }
    say("status after the master's node dies (1 s adverts):");
    say(&format!("  {}", summary("kill → VIP on n2 (wire)", wire)));
    say(&format!("  {}", summary("wire → status.master", lag)));
    say(&format!("  {}", summary("kill → status.master", total_lag)));
    let (mut ready_after, mut status_after) = (Vec::new(), Vec::new());
    for rep in 0..opts.restarts {
        env.api.kill_apiserver();
        let down = Instant::now();
        env.check(
            lab::wait_until(Duration::from_secs(10), "operator /readyz 503", || {
                (env.operator_get("/readyz") == Some(503)).then_some(())
            })
            .map_err(|e| e.to_string()),
        );
        let outage = Duration::from_secs(5).saturating_sub(down.elapsed());
        std::thread::sleep(outage);
        env.api.restart_apiserver().expect("restart the API server");
        let ready = Instant::now();
        let name = lab::kubelab::unique("vipr");
        env.apply_second_vip(&name);
        let (mut readyz, mut placed) = (None, None);
        env.check(
            lab::apiserver::wait_every(
                lab::apiserver::KUBECTL_POLL,
                Duration::from_secs(60),
                "operator ready and the new VirtualIP placed",
                || {
                    if readyz.is_none() && env.operator_get("/readyz") == Some(200) {
                        readyz = Some(ready.elapsed());
                    }
                    let st = env.status_of(&name);
                    if placed.is_none() && st["nodes"].as_array().is_some_and(|n| n.len() == 3) {
                        placed = Some(ready.elapsed());
                    }
                    (readyz.is_some() && placed.is_some()).then_some(())
                },
            )
            .map_err(|e| e.to_string()),
        );
        let (r, p) = (
            readyz.map_or(f64::NAN, |d| d.as_secs_f64()),
            placed.map_or(f64::NAN, |d| d.as_secs_f64()),
        );
        say(&format!(
            "restart {:2}: operator ready {r:.2} s, new VirtualIP status {p:.2} s after the API answered",
            rep + 1
        ));
        ready_after.push(r);
        status_after.push(p);
        let _ = env
            .api
            .kubectl(&["delete", "vip", &name, "-n", "default", "--wait=false"]);
    }
    if opts.restarts > 0 {
        say("after an API server restart (5 s outage):");
        say(&format!(
            "  {}",
            summary("API ready → operator ready", ready_after)
        ));
        say(&format!(
            "  {}",
            summary("API ready → new VIP status", status_after)
        ));
    }
    if let Some(sb) = env.watch().split_brain_since(t0) {
        say(&format!("SPLIT BRAIN shown during the run: {}", sb.status));
        std::process::exit(1);
    }
    say("no split brain shown during the run");
}
