//! keepalived.conf generation from one template, so every scenario can run the same
//! configuration under keepalived and under our agent (which reads keepalived.conf too).

use std::fmt::Write as _;
use std::time::Duration;

/// VRRP version of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdvertVersion {
    /// VRRPv2 with PASS authentication (as in the user's configs).
    V2Pass(String),
    /// VRRPv2 without authentication.
    V2,
    /// VRRPv3.
    V3,
}

/// A `vrrp_script` block.
#[derive(Debug, Clone)]
pub struct TrackScript {
    /// Block name.
    pub name: String,
    /// The command line.
    pub script: String,
    /// Run interval in seconds.
    pub interval: u32,
    /// Timeout in seconds.
    pub timeout: u32,
    /// Successes needed to become OK.
    pub rise: u32,
    /// Failures needed to become failed.
    pub fall: u32,
    /// Weight (none = 0 = failure means FAULT).
    pub weight: Option<i32>,
}

/// A `vrrp_track_process` block.
#[derive(Debug, Clone)]
pub struct TrackProcess {
    /// Block name.
    pub name: String,
    /// Process name to look for.
    pub process: String,
    /// Weight (none = 0 = absence means FAULT).
    pub weight: Option<i32>,
}

/// One `vrrp_instance`.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Instance name (`VI_1`).
    pub name: String,
    /// `state MASTER` (true) or `state BACKUP`.
    pub master: bool,
    /// Interface (`eth0`).
    pub interface: String,
    /// Virtual router ID.
    pub vrid: u8,
    /// Priority.
    pub priority: u8,
    /// Advert interval (whole seconds for v2).
    pub advert: Duration,
    /// Version and authentication.
    pub version: AdvertVersion,
    /// `nopreempt` when false.
    pub preempt: bool,
    /// Virtual addresses (`ADDR/LEN`).
    pub vips: Vec<String>,
    /// Names of `vrrp_script` blocks to track.
    pub track_scripts: Vec<String>,
    /// Names of `vrrp_track_process` blocks to track.
    pub track_processes: Vec<String>,
    /// Interfaces to track, with optional weight.
    pub track_interfaces: Vec<(String, Option<i32>)>,
}

impl Instance {
    /// VRRPv2, PASS auth `12345`, 1 s adverts, the IPv4 VIP, like the user's basic.conf.
    pub fn v2_pass(priority: u8) -> Self {
        Instance {
            name: "VI_1".into(),
            master: priority == 255,
            interface: "eth0".into(),
            vrid: 51,
            priority,
            advert: Duration::from_secs(1),
            version: AdvertVersion::V2Pass("12345".into()),
            preempt: true,
            vips: vec![crate::VIP4.into()],
            track_scripts: Vec::new(),
            track_processes: Vec::new(),
            track_interfaces: Vec::new(),
        }
    }

    /// VRRPv3 with the given advert interval and the IPv4 VIP.
    pub fn v3(priority: u8, advert: Duration) -> Self {
        Instance {
            version: AdvertVersion::V3,
            advert,
            ..Instance::v2_pass(priority)
        }
    }

    /// VRRPv3 with the given advert interval and the IPv6 VIP.
    pub fn v3_ipv6(priority: u8, advert: Duration) -> Self {
        Instance {
            vips: vec![crate::VIP6.into()],
            ..Instance::v3(priority, advert)
        }
    }

    /// Sets `nopreempt`.
    pub fn nopreempt(mut self) -> Self {
        self.preempt = false;
        self
    }

    /// Renders the `vrrp_instance` block.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "vrrp_instance {} {{", self.name);
        let _ = writeln!(
            s,
            "    state {}",
            if self.master { "MASTER" } else { "BACKUP" }
        );
        let _ = writeln!(s, "    interface {}", self.interface);
        let _ = writeln!(s, "    virtual_router_id {}", self.vrid);
        let _ = writeln!(s, "    priority {}", self.priority);
        match &self.version {
            AdvertVersion::V3 => {
                let _ = writeln!(s, "    version 3");
                let _ = writeln!(s, "    advert_int {}", self.advert.as_secs_f64());
            }
            AdvertVersion::V2 | AdvertVersion::V2Pass(_) => {
                let _ = writeln!(s, "    version 2");
                let _ = writeln!(s, "    advert_int {}", self.advert.as_secs().max(1));
            }
        }
        if !self.preempt {
            let _ = writeln!(s, "    nopreempt");
        }
        if let AdvertVersion::V2Pass(pass) = &self.version {
            let _ = writeln!(s, "    authentication {{");
            let _ = writeln!(s, "        auth_type PASS");
            let _ = writeln!(s, "        auth_pass {pass}");
            let _ = writeln!(s, "    }}");
        }
        let _ = writeln!(s, "    virtual_ipaddress {{");
        for v in &self.vips {
            let _ = writeln!(s, "        {v}");
        }
        let _ = writeln!(s, "    }}");
        if !self.track_scripts.is_empty() {
            let _ = writeln!(s, "    track_script {{");
            for t in &self.track_scripts {
                let _ = writeln!(s, "        {t}");
            }
            let _ = writeln!(s, "    }}");
        }
        if !self.track_processes.is_empty() {
            let _ = writeln!(s, "    track_process {{");
            for t in &self.track_processes {
                let _ = writeln!(s, "        {t}");
            }
            let _ = writeln!(s, "    }}");
        }
        if !self.track_interfaces.is_empty() {
            let _ = writeln!(s, "    track_interface {{");
            for (i, w) in &self.track_interfaces {
                match w {
                    Some(w) => {
                        let _ = writeln!(s, "        {i} weight {w}");
                    }
                    None => {
                        let _ = writeln!(s, "        {i}");
                    }
                }
            }
            let _ = writeln!(s, "    }}");
        }
        let _ = writeln!(s, "}}");
        s
    }
}

/// A whole keepalived.conf.
#[derive(Debug, Clone, Default)]
pub struct KeepalivedConf {
    /// `vrrp_script` blocks.
    pub scripts: Vec<TrackScript>,
    /// `vrrp_track_process` blocks.
    pub processes: Vec<TrackProcess>,
    /// `vrrp_instance` blocks.
    pub instances: Vec<Instance>,
}

impl KeepalivedConf {
    /// A configuration with one instance.
    pub fn single(instance: Instance) -> Self {
        KeepalivedConf {
            instances: vec![instance],
            ..Default::default()
        }
    }

    /// `n` instances (VRIDs 1..=n, at most 255), each holding one /32 VIP from
    /// 198.51.100.0/24 then 203.0.113.0/24, for footprint measurements.
    pub fn many(n: usize, template: &Instance) -> Self {
        let instances = (1..=n.min(255))
            .map(|i| {
                let vip = if i <= 254 {
                    format!("198.51.100.{i}/32")
                } else {
                    format!("203.0.113.{}/32", i - 254)
                };
                Instance {
                    name: format!("VI_{i}"),
                    vrid: i as u8,
                    vips: vec![vip],
                    ..template.clone()
                }
            })
            .collect();
        KeepalivedConf {
            instances,
            ..Default::default()
        }
    }

    /// Renders the file.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for sc in &self.scripts {
            let _ = writeln!(s, "vrrp_script {} {{", sc.name);
            let _ = writeln!(s, "    script \"{}\"", sc.script);
            let _ = writeln!(s, "    interval {}", sc.interval);
            let _ = writeln!(s, "    timeout {}", sc.timeout);
            let _ = writeln!(s, "    rise {}", sc.rise);
            let _ = writeln!(s, "    fall {}", sc.fall);
            if let Some(w) = sc.weight {
                let _ = writeln!(s, "    weight {w}");
            }
            let _ = writeln!(s, "}}\n");
        }
        for p in &self.processes {
            let _ = writeln!(s, "vrrp_track_process {} {{", p.name);
            let _ = writeln!(s, "    process {}", p.process);
            if let Some(w) = p.weight {
                let _ = writeln!(s, "    weight {w}");
            }
            let _ = writeln!(s, "}}\n");
        }
        for i in &self.instances {
            s.push_str(&i.render());
            s.push('\n');
        }
        s
    }
}
