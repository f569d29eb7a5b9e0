//! The control-plane VIP with three `kube-vrrp-agent standalone` hosts (root: network
//! namespaces; the agent binary must be built):
//!
//! - one VirtualIP YAML file for every host, each agent started with `--node-name`, so each
//!   host runs the priority of its `spec.nodes` entry;
//! - `track.http` on a local HTTPS health endpoint (`openssl s_server` on 127.0.0.1 in each
//!   host's namespace, with a certificate made in the test and given as `caFile`): stopping the
//!   master's endpoint moves the VIP within fall × interval + Master_Down_Interval, and starting
//!   it again makes the master preempt back.

use std::time::{Duration, Instant};

use lab::DaemonKind::Agent as A;
use lab::scenario::{Cluster, Variant};
use lab::{ProcGuard, suite, wait_until};

const AG: [lab::DaemonKind; 3] = [A, A, A];
const INSTANCE: &str = "default/api";
const HEALTH_PORT: u16 = 8443;

/// A VirtualIP for the lab's hosts h1–h3 with the given per-node priorities and `track`.
fn virtual_ip(variant: &Variant, priorities: [u8; 3], track: &str) -> String {
    format!(
        "apiVersion: kubevrrp.io/v1alpha1
kind: VirtualIP
metadata:
  name: api
  namespace: default
spec:
  virtualRouterID: 51
  version: 3
  advertInterval: {}ms
  interface: eth0
  addresses: [{}]
  garp: {{masterDelay: 0s}}
  nodes:
    - {{name: h1, priority: {}}}
    - {{name: h2, priority: {}}}
    - {{name: h3, priority: {}}}
{track}",
        variant.advert.as_millis(),
        variant.vip,
        priorities[0],
        priorities[1],
        priorities[2],
    )
}

/// A cluster running `yaml` on every host, each agent with `--node-name h<i>`; the checks of
/// the harness are told the priorities and the instance name.
fn cluster(variant: Variant, priorities: [u8; 3], yaml: String) -> Cluster {
    let mut c = Cluster::new(&AG, variant).expect("lab");
    for (i, priority) in priorities.into_iter().enumerate() {
        c.conf_text[i] = Some(yaml.clone());
        c.agent_args[i] = vec!["--node-name".into(), c.lab.host(i).name.clone()];
        c.confs[i].instances[0].priority = priority;
        c.confs[i].instances[0].name = INSTANCE.into();
    }
    c
}

fn reported_priority(c: &Cluster, i: usize) -> u32 {
    let st = c.daemon(i).unwrap().status().unwrap().unwrap();
    st.instance(INSTANCE)
        .unwrap_or_else(|| panic!("{INSTANCE} in /status of h{}", i + 1))
        .effective_priority
}

#[test]
fn agent_standalone_runs_one_virtualip_file_with_per_node_overrides() {
    lab::skip_unless_root!("agent_standalone_runs_one_virtualip_file_with_per_node_overrides");
    let variant = Variant::v3_100ms();
    // h2 gets the highest priority from its `nodes` entry: it must win, which it can only if
    // each agent picked its own entry from the one shared file.
    let priorities = [120, 200, 100];
    let yaml = virtual_ip(&variant, priorities, "");
    let mut c = cluster(variant, priorities, yaml);
    c.start_all().unwrap();
    let t = c
        .wait_master(1, c.variant.takeover_bound(200) + Duration::from_secs(5))
        .unwrap();
    c.assert_stable_master(1).unwrap();
    for (i, p) in priorities.iter().enumerate() {
        assert_eq!(reported_priority(&c, i), u32::from(*p), "h{}", i + 1);
    }
    eprintln!("h2 (priority 200 from its nodes entry) master after {t:?}");
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (CA PEM, certificate PEM, key
/// PEM). The agents get the CA as `caFile`.
fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::default();
    ca.distinguished_name = rcgen::DistinguishedName::new();
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "kube-vrrp-lab-ca");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// `openssl s_server -www` on 127.0.0.1:HEALTH_PORT in host `i`'s namespace (answers every
/// GET with 200), started and waited for.
fn health_endpoint(c: &Cluster, i: usize, cert: &str, key: &str) -> ProcGuard {
    let node = c.lab.host(i);
    let log = c.lab.node_dir(node).unwrap().join("health.log");
    let port = HEALTH_PORT.to_string();
    let g = c
        .lab
        .spawn(
            node,
            &[
                "openssl",
                "s_server",
                "-quiet",
                "-www",
                "-accept",
                &format!("127.0.0.1:{port}"),
                "-cert",
                cert,
                "-key",
                key,
            ],
            Some(&log),
        )
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the health endpoint listening",
        || {
            let out = c
                .lab
                .exec(node, &["ss", "-Hltn", "sport", "=", &format!(":{port}")]);
            out.ok().filter(|o| o.contains(&port)).map(|_| ())
        },
    )
    .unwrap();
    g
}

#[test]
fn agent_http_tracker_moves_the_vip_when_the_local_endpoint_stops_and_preempts_back() {
    lab::skip_unless_root!(
        "agent_http_tracker_moves_the_vip_when_the_local_endpoint_stops_and_preempts_back"
    );
    let variant = Variant::v3_100ms();
    let priorities = [200, 150, 100];
    let (interval_ms, rise, fall) = (100u64, 2u64, 3u64);
    let mut c = cluster(variant.clone(), priorities, String::new());
    let dir = c.lab.dir().to_path_buf();
    let (ca_pem, cert_pem, key_pem) = certificates();
    let (ca, cert, key) = (
        dir.join("ca.crt"),
        dir.join("health.crt"),
        dir.join("health.key"),
    );
    std::fs::write(&ca, ca_pem).unwrap();
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let track = format!(
        "  track:
    http:
      - name: readyz
        url: https://127.0.0.1:{HEALTH_PORT}/readyz
        caFile: {}
        interval: {interval_ms}ms
        timeout: 500ms
        rise: {rise}
        fall: {fall}
",
        ca.display()
    );
    let yaml = virtual_ip(&variant, priorities, &track);
    for t in &mut c.conf_text {
        *t = Some(yaml.clone());
    }
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let mut endpoints: Vec<Option<ProcGuard>> = (0..3)
        .map(|i| Some(health_endpoint(&c, i, &cert_s, &key_s)))
        .collect();
    suite::elect(&mut c).unwrap();

    // The master's endpoint stops: its check fails `fall` times in a row (weight 0 ⇒ FAULT,
    // priority-0 advert), and h2 takes over.
    let interval = Duration::from_millis(interval_ms);
    let bound = fall as u32 * interval + variant.master_down_interval(priorities[1]);
    let stopped = Instant::now();
    drop(endpoints[0].take());
    c.expect_fault[0] = true;
    let moved = c
        .lab
        .wait_holder(variant.vip, 1, bound + Duration::from_secs(5))
        .unwrap();
    c.wait_master(1, Duration::from_secs(5)).unwrap();
    let st = c.daemon(0).unwrap().status().unwrap().unwrap();
    let s = st.instance(INSTANCE).unwrap();
    assert_eq!(s.state, "FAULT", "{s:?}");
    eprintln!(
        "endpoint stopped → h2 holds the VIP alone after {moved:?} (bound fall × interval + Master_Down_Interval = {bound:?})"
    );
    // Scheduling on a shared machine: the VIP poll itself takes tens of milliseconds.
    assert!(
        moved <= bound + Duration::from_millis(250),
        "took {moved:?}, bound {bound:?}"
    );
    assert!(stopped.elapsed() >= moved);

    // Back: `rise` successes clear the FAULT; h1 (200) preempts h2 (150) after its own
    // Master_Down_Interval as a backup.
    let started = Instant::now();
    endpoints[0] = Some(health_endpoint(&c, 0, &cert_s, &key_s));
    let up = started.elapsed();
    c.expect_fault[0] = false;
    let back_bound =
        rise as u32 * interval + interval + variant.master_down_interval(priorities[0]);
    let back = c
        .lab
        .wait_holder(variant.vip, 0, back_bound + Duration::from_secs(5))
        .unwrap();
    c.wait_master(0, Duration::from_secs(5)).unwrap();
    c.assert_stable_master(0).unwrap();
    eprintln!(
        "endpoint started ({up:?}) → h1 preempted back after {back:?} (bound rise × interval + interval + Master_Down_Interval = {back_bound:?})"
    );
    assert!(
        back <= up + back_bound + Duration::from_millis(250),
        "took {back:?}, bound {back_bound:?} after {up:?} start-up"
    );
    drop(endpoints);
}
