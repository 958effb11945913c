//! The small internet the NAT lab builds, as data: which namespaces exist,
//! which addresses they hold, and the `ip`/`iptables`/`tc` commands that
//! make them. Pure, so the plan is tested without root.
//!
//! ```text
//!                 ns <p>-inet: bridge br0 = "the internet", 203.0.113.0/24
//!   ┌──────────┬──────────┬──────────┬────────────┬────────────┐
//! tracker    seeder     pub1 …     r1 (wan .101)   r2 (wan .102) …
//!  .2          .3       .11 …      MASQUERADE      MASQUERADE --random-fully
//!                                  lan 192.168.1.1 lan 192.168.1.1
//!                                      │               │
//!                                  h1 192.168.1.2  h2 192.168.1.2
//! ```
//!
//! Every home uses the same 192.168.1.0/24, as real homes do, so a LAN
//! address announced outside its LAN names some other home's device (or
//! the dialler itself), never the intended viewer.

use std::net::Ipv4Addr;

use serde::Serialize;

/// The public prefix (RFC 5737 TEST-NET-3): every public host and router
/// WAN side sits on one segment of it.
pub const PUBLIC_NET: [u8; 3] = [203, 0, 113];
/// Every home LAN, the router at .1 and the viewer at .2.
pub const HOME_NET: [u8; 3] = [192, 168, 1];
const TRACKER_HOST: u8 = 2;
const SEEDER_HOST: u8 = 3;
const PUBLIC_VIEWER_BASE: u8 = 10;
const ROUTER_BASE: u8 = 100;
/// Public viewers take .11..=.50 and routers .101..=.250 of the /24.
pub const MAX_PUBLIC_VIEWERS: usize = 40;
pub const MAX_HOMES: usize = 150;

/// Where a viewer sits, which decides who can dial it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// On the internet segment with its own address.
    Public,
    /// Behind plain MASQUERADE: endpoint-independent mapping, but
    /// conntrack only lets in replies to flows sent out (a port-restricted
    /// cone), so a simultaneous open — hole punching — can work.
    Cone,
    /// Behind `MASQUERADE --random-fully`: a new random port per
    /// destination, so the port a peer observes is useless to others.
    Symmetric,
}

impl Class {
    pub const ALL: [Class; 3] = [Class::Public, Class::Cone, Class::Symmetric];

    pub fn name(self) -> &'static str {
        match self {
            Class::Public => "public",
            Class::Cone => "cone",
            Class::Symmetric => "symmetric",
        }
    }

    pub fn is_home(self) -> bool {
        self != Class::Public
    }
}

/// How many of each the lab builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Shape {
    pub public_viewers: usize,
    pub homes: usize,
    /// Of the homes, how many sit behind a symmetric NAT.
    pub symmetric: usize,
}

/// A namespace that runs one role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Host {
    /// Short name used in reports and logs: tracker, seeder, pub1, h3.
    pub name: String,
    /// The network namespace the role runs in.
    pub ns: String,
    /// The host's own address (a LAN address for a home viewer).
    pub ip: Ipv4Addr,
    /// The address the internet sees it as (its router's for a home).
    pub public_ip: Ipv4Addr,
    /// `None` for the tracker and the seeder.
    pub class: Option<Class>,
}

/// A home: its router's namespace and the viewer behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Home {
    pub router_ns: String,
    pub wan_ip: Ipv4Addr,
    pub symmetric: bool,
    /// Index into [`Plan::hosts`] of the viewer behind this router.
    pub viewer: usize,
}

/// The whole internet: namespaces and the commands that build it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub prefix: String,
    /// The namespace holding the bridge.
    pub internet_ns: String,
    /// Tracker, seeder, then the viewers (public first, then homes).
    pub hosts: Vec<Host>,
    pub homes: Vec<Home>,
}

/// The shape asked for cannot be built on one /24.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("at most {MAX_PUBLIC_VIEWERS} public viewers (asked for {0})")]
    TooManyPublic(usize),
    #[error("at most {MAX_HOMES} homes (asked for {0})")]
    TooManyHomes(usize),
    #[error("{symmetric} symmetric NATs asked for, but only {homes} homes")]
    TooManySymmetric { symmetric: usize, homes: usize },
    #[error("no viewers: ask for at least one public viewer or home")]
    NoViewers,
}

fn public(host: u8) -> Ipv4Addr {
    let [a, b, c] = PUBLIC_NET;
    Ipv4Addr::new(a, b, c, host)
}

fn home(host: u8) -> Ipv4Addr {
    let [a, b, c] = HOME_NET;
    Ipv4Addr::new(a, b, c, host)
}

/// Home `i` of `homes` is symmetric when the running share of symmetric
/// homes steps up at `i` (Bresenham): 4 of 12 are homes 3, 6, 9 and 12,
/// spread over the join order rather than bunched at its end.
pub fn is_symmetric(i: usize, homes: usize, symmetric: usize) -> bool {
    homes > 0 && (i + 1) * symmetric / homes > i * symmetric / homes
}

impl Plan {
    /// `prefix` names every namespace, so a run's leftovers are found and
    /// removed by it alone.
    pub fn new(prefix: &str, shape: Shape) -> Result<Plan, PlanError> {
        if shape.public_viewers > MAX_PUBLIC_VIEWERS {
            return Err(PlanError::TooManyPublic(shape.public_viewers));
        }
        if shape.homes > MAX_HOMES {
            return Err(PlanError::TooManyHomes(shape.homes));
        }
        if shape.symmetric > shape.homes {
            return Err(PlanError::TooManySymmetric {
                symmetric: shape.symmetric,
                homes: shape.homes,
            });
        }
        if shape.public_viewers + shape.homes == 0 {
            return Err(PlanError::NoViewers);
        }
        let ns = |name: &str| format!("{prefix}-{name}");
        let fixed = |name: &str, ip| Host {
            name: name.into(),
            ns: ns(name),
            ip,
            public_ip: ip,
            class: None,
        };
        let mut hosts = vec![
            fixed("tracker", public(TRACKER_HOST)),
            fixed("seeder", public(SEEDER_HOST)),
        ];
        for i in 1..=shape.public_viewers {
            let name = format!("pub{i}");
            let ip = public(PUBLIC_VIEWER_BASE + i as u8);
            hosts.push(Host {
                ns: ns(&name),
                name,
                ip,
                public_ip: ip,
                class: Some(Class::Public),
            });
        }
        let mut homes = Vec::new();
        for i in 0..shape.homes {
            let n = i + 1;
            let symmetric = is_symmetric(i, shape.homes, shape.symmetric);
            let wan_ip = public(ROUTER_BASE + n as u8);
            let name = format!("h{n}");
            homes.push(Home {
                router_ns: ns(&format!("r{n}")),
                wan_ip,
                symmetric,
                viewer: hosts.len(),
            });
            hosts.push(Host {
                ns: ns(&name),
                name,
                ip: home(2),
                public_ip: wan_ip,
                class: Some(if symmetric {
                    Class::Symmetric
                } else {
                    Class::Cone
                }),
            });
        }
        Ok(Plan {
            prefix: prefix.into(),
            internet_ns: ns("inet"),
            hosts,
            homes,
        })
    }

    pub fn tracker(&self) -> &Host {
        &self.hosts[0]
    }

    pub fn seeder(&self) -> &Host {
        &self.hosts[1]
    }

    pub fn viewers(&self) -> &[Host] {
        &self.hosts[2..]
    }

    /// Every namespace, in creation order (the bridge's first).
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.internet_ns.clone()];
        all.extend(self.hosts.iter().take(2).map(|h| h.ns.clone()));
        all.extend(
            self.viewers()
                .iter()
                .filter(|h| h.class == Some(Class::Public))
                .map(|h| h.ns.clone()),
        );
        for home in &self.homes {
            all.push(home.router_ns.clone());
            all.push(self.hosts[home.viewer].ns.clone());
        }
        all
    }

    /// The commands that wire the namespaces (which must exist) into the
    /// internet: each a program and its arguments, run in order.
    /// `upload_bps` caps each viewer's egress with a token bucket.
    pub fn wiring(&self, upload_bps: Option<u64>) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let inet = &self.internet_ns;
        out.push(ip(inet, "link add br0 type bridge"));
        out.push(ip(inet, "link set br0 up"));
        out.push(ip(inet, "link set lo up"));
        let public_hosts = self
            .hosts
            .iter()
            .filter(|h| h.class.is_none_or(|c| c == Class::Public));
        for (i, h) in public_hosts.enumerate() {
            // Bridge-side names must be unique inside the internet
            // namespace and at most 15 bytes: p0, p1, ...
            self.plug(&mut out, &h.ns, "eth0", &format!("p{i}"), h.ip);
            out.push(ip(&h.ns, "link set lo up"));
            if h.class.is_some() {
                out.extend(upload_cap(&h.ns, "eth0", upload_bps));
            }
        }
        for (i, home) in self.homes.iter().enumerate() {
            let r = &home.router_ns;
            let viewer = &self.hosts[home.viewer];
            self.plug(&mut out, r, "wan", &format!("r{}", i + 1), home.wan_ip);
            out.push(ip(r, "link set lo up"));
            out.push(split(&format!(
                "ip link add lan netns {r} type veth peer name eth0 netns {}",
                viewer.ns
            )));
            out.push(ip(r, &format!("addr add {}/24 dev lan", self::home(1))));
            out.push(ip(r, "link set lan up"));
            out.push(ip(
                &viewer.ns,
                &format!("addr add {}/24 dev eth0", viewer.ip),
            ));
            out.push(ip(&viewer.ns, "link set eth0 up"));
            out.push(ip(&viewer.ns, "link set lo up"));
            out.push(ip(
                &viewer.ns,
                &format!("route add default via {}", self::home(1)),
            ));
            out.push(in_ns(r, "sysctl -q -w net.ipv4.ip_forward=1"));
            let mut nat = "iptables -t nat -A POSTROUTING -o wan -j MASQUERADE".to_string();
            if home.symmetric {
                nat.push_str(" --random-fully");
            }
            out.push(in_ns(r, &nat));
            out.extend(upload_cap(&viewer.ns, "eth0", upload_bps));
        }
        out
    }

    /// A veth from `ns` (named `inner`) to the bridge (named `outer`),
    /// addressed `addr`/24 inside `ns`.
    fn plug(&self, out: &mut Vec<Vec<String>>, ns: &str, inner: &str, outer: &str, addr: Ipv4Addr) {
        let inet = &self.internet_ns;
        out.push(split(&format!(
            "ip link add {inner} netns {ns} type veth peer name {outer} netns {inet}"
        )));
        out.push(ip(inet, &format!("link set {outer} master br0")));
        out.push(ip(inet, &format!("link set {outer} up")));
        out.push(ip(ns, &format!("addr add {addr}/24 dev {inner}")));
        out.push(ip(ns, &format!("link set {inner} up")));
    }
}

/// A token bucket on `dev`'s egress: the viewer's home upload. The
/// bucket holds 100 ms of the rate (at least 16 KiB, so full-size frames
/// pass) and the queue at most 200 ms, a modest home router's buffer.
fn upload_cap(ns: &str, dev: &str, upload_bps: Option<u64>) -> Option<Vec<String>> {
    let bps = upload_bps?;
    let burst = (bps / 8 / 10).max(16 * 1024);
    Some(split(&format!(
        "tc -n {ns} qdisc add dev {dev} root tbf rate {bps}bit burst {burst} latency 200ms"
    )))
}

fn ip(ns: &str, args: &str) -> Vec<String> {
    split(&format!("ip -n {ns} {args}"))
}

fn in_ns(ns: &str, cmd: &str) -> Vec<String> {
    split(&format!("ip netns exec {ns} {cmd}"))
}

fn split(cmd: &str) -> Vec<String> {
    cmd.split_whitespace().map(String::from).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue_shape() -> Shape {
        Shape {
            public_viewers: 2,
            homes: 12,
            symmetric: 4,
        }
    }

    #[test]
    fn issue_figure_has_two_public_eight_cone_four_symmetric() {
        let plan = Plan::new("snat1", issue_shape()).unwrap();
        let count = |c| plan.viewers().iter().filter(|h| h.class == Some(c)).count();
        assert_eq!(count(Class::Public), 2);
        assert_eq!(count(Class::Cone), 8);
        assert_eq!(count(Class::Symmetric), 4);
        assert_eq!(plan.tracker().ip, Ipv4Addr::new(203, 0, 113, 2));
        assert_eq!(plan.seeder().name, "seeder");
    }

    #[test]
    fn symmetric_homes_are_spread_over_the_join_order() {
        let sym: Vec<usize> = (0..12).filter(|&i| is_symmetric(i, 12, 4)).collect();
        assert_eq!(sym, [2, 5, 8, 11]);
        assert_eq!((0..5).filter(|&i| is_symmetric(i, 5, 5)).count(), 5);
        assert_eq!((0..5).filter(|&i| is_symmetric(i, 5, 0)).count(), 0);
    }

    #[test]
    fn homes_share_one_lan_but_not_one_public_address() {
        let plan = Plan::new("snat1", issue_shape()).unwrap();
        let homes: Vec<&Host> = plan
            .viewers()
            .iter()
            .filter(|h| h.class.is_some_and(Class::is_home))
            .collect();
        assert!(homes.iter().all(|h| h.ip == Ipv4Addr::new(192, 168, 1, 2)));
        let mut wan: Vec<Ipv4Addr> = homes.iter().map(|h| h.public_ip).collect();
        wan.dedup();
        assert_eq!(wan.len(), 12);
        let mut all_public: Vec<Ipv4Addr> = plan.hosts.iter().map(|h| h.public_ip).collect();
        all_public.sort();
        all_public.dedup();
        assert_eq!(all_public.len(), plan.hosts.len());
    }

    #[test]
    fn namespaces_carry_the_prefix_and_are_unique() {
        let plan = Plan::new("snat42", issue_shape()).unwrap();
        let mut ns = plan.namespaces();
        // bridge + tracker + seeder + 2 public + 12 routers + 12 homes
        assert_eq!(ns.len(), 1 + 2 + 2 + 12 * 2);
        assert!(ns.iter().all(|n| n.starts_with("snat42-")));
        ns.sort();
        ns.dedup();
        assert_eq!(ns.len(), 29);
    }

    #[test]
    fn symmetric_routers_masquerade_with_random_ports() {
        let plan = Plan::new("x", issue_shape()).unwrap();
        let nat: Vec<String> = plan
            .wiring(None)
            .into_iter()
            .map(|c| c.join(" "))
            .filter(|c| c.contains("MASQUERADE"))
            .collect();
        assert_eq!(nat.len(), 12);
        assert_eq!(
            nat.iter().filter(|c| c.ends_with("--random-fully")).count(),
            4
        );
        assert!(nat[2].starts_with("ip netns exec x-r3 iptables"));
        assert!(nat[2].ends_with("--random-fully"));
    }

    #[test]
    fn every_viewer_and_only_viewers_get_an_upload_cap() {
        let plan = Plan::new("x", issue_shape()).unwrap();
        let caps: Vec<String> = plan
            .wiring(Some(1_500_000))
            .into_iter()
            .map(|c| c.join(" "))
            .filter(|c| c.starts_with("tc "))
            .collect();
        assert_eq!(caps.len(), 14);
        assert!(caps.iter().all(|c| c.contains("rate 1500000bit")));
        assert!(!caps
            .iter()
            .any(|c| c.contains("-seeder ") || c.contains("-tracker ")));
        assert!(plan.wiring(None).iter().all(|c| c[0] != "tc"));
    }

    #[test]
    fn bridge_side_interface_names_fit_linux_limits() {
        let plan = Plan::new(
            "snat4194304",
            Shape {
                public_viewers: MAX_PUBLIC_VIEWERS,
                homes: MAX_HOMES,
                symmetric: 1,
            },
        )
        .unwrap();
        for cmd in plan.wiring(None) {
            if let Some(i) = cmd.iter().position(|a| a == "name") {
                assert!(cmd[i + 1].len() <= 15, "{cmd:?}");
            }
        }
    }

    #[test]
    fn impossible_shapes_are_refused() {
        let shape = |p, h, s| Shape {
            public_viewers: p,
            homes: h,
            symmetric: s,
        };
        assert_eq!(
            Plan::new("x", shape(41, 0, 0)),
            Err(PlanError::TooManyPublic(41))
        );
        assert_eq!(
            Plan::new("x", shape(0, 151, 0)),
            Err(PlanError::TooManyHomes(151))
        );
        assert!(Plan::new("x", shape(0, 2, 3)).is_err());
        assert_eq!(Plan::new("x", shape(0, 0, 0)), Err(PlanError::NoViewers));
    }
}
