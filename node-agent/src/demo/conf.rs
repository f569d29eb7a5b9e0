//! The keepalived.conf each demo host runs, in the style of the user's basic.conf
//! (`vrrp_instance VI_1`, router id 51, PASS auth `12345`), plus a `vrrp_script` on node-a that
//! checks for a flag file, and (for real keepalived) a notify script the demo reads the state from.

use std::path::Path;

use super::lab::{HostSpec, VIP};

/// Name of the tracked script on node-a.
pub const SCRIPT: &str = "chk_flag";

/// What varies between hosts and runs.
#[derive(Clone, Copy, Debug)]
pub struct ConfOptions<'a> {
    /// VRRPv3 with 100 ms adverts instead of VRRPv2 with 1 s adverts.
    pub fast: bool,
    /// The flag file whose absence fails node-a's script (node-a only).
    pub flag: Option<&'a Path>,
    /// A notify script (keepalived hosts).
    pub notify: Option<&'a Path>,
}

/// The configuration text for `host`.
pub fn render(host: &HostSpec, o: &ConfOptions<'_>) -> String {
    let mut s = format!("! kube-vrrp demo: {} (generated)\n", host.name);
    if o.notify.is_some() {
        // keepalived runs scripts as this user; without it, it looks for `keepalived_script`.
        s.push_str("global_defs {\n    script_user root\n}\n\n");
    }
    if let Some(flag) = o.flag {
        s.push_str(&format!(
            "vrrp_script {SCRIPT} {{\n    script \"/usr/bin/test -f {}\"\n    interval 1\n    \
             fall 1\n    rise 1\n    weight 0\n}}\n\n",
            flag.display()
        ));
    }
    let state = if host.priority == 255 {
        "MASTER"
    } else {
        "BACKUP"
    };
    s.push_str(&format!(
        "vrrp_instance VI_1 {{\n    state {state}\n    interface eth0\n    virtual_router_id 51\n    \
         priority {}\n",
        host.priority
    ));
    if o.fast {
        // VRRPv3 has no authentication; the interval is in centiseconds on the wire.
        s.push_str("    version 3\n    advert_int 0.1\n");
    } else {
        s.push_str(
            "    advert_int 1\n    authentication {\n        auth_type PASS\n        \
             auth_pass 12345\n    }\n",
        );
    }
    s.push_str(&format!(
        "    virtual_ipaddress {{\n        {VIP}/24\n    }}\n"
    ));
    if o.flag.is_some() {
        s.push_str(&format!("    track_script {{\n        {SCRIPT}\n    }}\n"));
    }
    if let Some(notify) = o.notify {
        s.push_str(&format!("    notify \"{}\"\n", notify.display()));
    }
    s.push_str("}\n");
    s
}

/// The notify script keepalived runs on every transition: it records "STATE PRIORITY".
pub fn notify_script(state_file: &Path) -> String {
    format!(
        "#!/bin/sh\n# keepalived calls: notify INSTANCE NAME STATE PRIORITY\necho \"$3 $4\" > {}.tmp && mv {}.tmp {}\n",
        state_file.display(),
        state_file.display(),
        state_file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::lab::HOSTS;

    #[test]
    fn node_a_v2_matches_the_basic_conf_style() {
        let flag = Path::new("/tmp/x/flag");
        let text = render(
            &HOSTS[0],
            &ConfOptions {
                fast: false,
                flag: Some(flag),
                notify: None,
            },
        );
        for want in [
            "vrrp_instance VI_1 {",
            "state MASTER",
            "virtual_router_id 51",
            "priority 255",
            "advert_int 1\n",
            "auth_pass 12345",
            "192.0.2.200/24",
            "script \"/usr/bin/test -f /tmp/x/flag\"",
            "weight 0",
            "track_script {\n        chk_flag",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("version 3"));
    }

    #[test]
    fn fast_is_v3_without_auth() {
        let text = render(
            &HOSTS[1],
            &ConfOptions {
                fast: true,
                flag: None,
                notify: None,
            },
        );
        assert!(text.contains("version 3") && text.contains("advert_int 0.1"));
        assert!(text.contains("state BACKUP") && text.contains("priority 244"));
        assert!(!text.contains("authentication") && !text.contains("track_script"));
    }
}
