//! Building and tearing down the lab's namespaces on the host.
//!
//! Everything the lab creates lives inside namespaces named
//! `snat<PID>-…`: the veths are created straight into them and the bridge
//! sits in its own, so deleting the namespaces (after killing whatever
//! runs in them) removes every trace. The PID in the prefix tells a
//! crashed run's leftovers (owner gone) from a run still going.

use std::{path::Path, process::Stdio};

use anyhow::{bail, Context};
use tokio::process::Command;

/// Every lab namespace starts with this, then the owning lab's PID.
pub const NS_PREFIX: &str = "snat";

/// This process's prefix, e.g. `snat4242`.
pub fn own_prefix() -> String {
    format!("{NS_PREFIX}{}", std::process::id())
}

/// The owning PID of a lab namespace name (`snat4242-h3` → 4242).
pub fn owner_pid(ns: &str) -> Option<u32> {
    let rest = ns.strip_prefix(NS_PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// The effective UID from `/proc/self/status` text (`Uid: real eff …`).
pub fn effective_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Names from `ip netns list` output (`name` or `name (id: 3)`).
pub fn parse_netns_list(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect()
}

/// Fails with what to do when the lab cannot run here: not root, or
/// `ip`, `tc` or `iptables` missing.
pub async fn check_prerequisites() -> anyhow::Result<()> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if effective_uid(&status) != Some(0) {
        bail!(
            "the NAT lab builds network namespaces and NAT routers: run it as root \
             (e.g. sudo shoal-lab nat …)"
        );
    }
    let mut missing = Vec::new();
    for (tool, arg, package) in [
        ("ip", "-V", "iproute2"),
        ("tc", "-V", "iproute2"),
        ("iptables", "--version", "iptables"),
    ] {
        let found = Command::new(tool)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if !found {
            missing.push(format!("{tool} (package {package})"));
        }
    }
    if !missing.is_empty() {
        bail!(
            "the NAT lab needs {}: apt-get install -y iproute2 iptables",
            missing.join(", ")
        );
    }
    Ok(())
}

/// Runs one command to completion; its stderr becomes the error.
pub async fn run(cmd: &[String]) -> anyhow::Result<()> {
    let out = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", cmd[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The lab namespaces on this host now.
fn lab_namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    parse_netns_list(&out)
        .into_iter()
        .filter(|n| owner_pid(n).is_some())
        .collect()
}

/// Kills every process in `ns`, then deletes it. Synchronous, so it can
/// run from `Drop` during a panic or after the runtime is gone.
pub fn destroy(ns: &str) {
    let pids = std::process::Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for pid in pids.split_whitespace() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", pid])
            .status();
    }
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

/// Removes what crashed lab runs left: namespaces whose owning process
/// is gone. Returns how many were removed.
pub fn remove_stale() -> usize {
    let stale: Vec<String> = lab_namespaces()
        .into_iter()
        .filter(|n| owner_pid(n).is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()))
        .collect();
    for ns in &stale {
        destroy(ns);
    }
    stale.len()
}

/// The namespaces this run made; dropping it kills their processes and
/// deletes them, on success, error, panic or Ctrl-C alike.
#[derive(Debug, Default)]
pub struct Namespaces {
    made: Vec<String>,
}

impl Namespaces {
    pub async fn add(&mut self, name: &str) -> anyhow::Result<()> {
        run(&["ip".into(), "netns".into(), "add".into(), name.into()]).await?;
        self.made.push(name.to_string());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Homes and hosts before the internet, the reverse of creation.
        for ns in self.made.iter().rev() {
            destroy(ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_read_from_lab_names_only() {
        assert_eq!(owner_pid("snat4242-h3"), Some(4242));
        assert_eq!(owner_pid("snat4242-inet"), Some(4242));
        assert_eq!(owner_pid("snatx-h3"), None);
        assert_eq!(owner_pid("blue"), None);
        assert_eq!(owner_pid("snat4242"), None);
        assert!(own_prefix().starts_with(NS_PREFIX));
        assert_eq!(
            owner_pid(&format!("{}-inet", own_prefix())),
            Some(std::process::id())
        );
    }

    #[test]
    fn uid_is_the_effective_one() {
        let status = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Name: x\n"), None);
    }

    #[test]
    fn netns_list_with_and_without_ids() {
        let out = "snat1-h1 (id: 3)\nsnat1-inet\n\n";
        assert_eq!(parse_netns_list(out), ["snat1-h1", "snat1-inet"]);
    }
}
