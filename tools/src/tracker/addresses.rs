//! The address a peer's locality is taken from, read from what it
//! announced and where its request came from.

use std::net::IpAddr;

use shoal_mesh::reach::Scope;

/// The address a peer's locality is taken from: the one the tracker saw it
/// at when that is public (announced private addresses of two homes can
/// collide), else the first ip4/ip6 address it announced (lab and LAN,
/// where everything is private), else the request's. Never unspecified;
/// IPv4-mapped IPv6 addresses come back as IPv4.
pub(super) fn subnet_ip(addrs: &[String], remote: Option<IpAddr>) -> Option<IpAddr> {
    let remote = remote.map(|ip| ip.to_canonical());
    if let Some(ip) = remote.filter(|ip| is_public(*ip)) {
        return Some(ip);
    }
    let announced = addrs
        .iter()
        .filter_map(|a| multiaddr_ip(a))
        .map(|ip| ip.to_canonical())
        .find(|ip| !ip.is_unspecified());
    announced.or(remote).filter(|ip| !ip.is_unspecified())
}

/// The ip of the first `/ip4/…` or `/ip6/…` component of a multiaddr string.
fn multiaddr_ip(addr: &str) -> Option<IpAddr> {
    let mut parts = addr.split('/');
    while let Some(proto) = parts.next() {
        match proto {
            "ip4" | "ip6" => return parts.next()?.parse().ok(),
            _ => {}
        }
    }
    None
}

fn is_public(ip: IpAddr) -> bool {
    Scope::of_ip(ip) == Scope::Global
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiaddr_ip_reads_the_first_ip4_or_ip6_component() {
        let ip = |s| multiaddr_ip(s).map(|ip| ip.to_string());
        assert_eq!(ip("/ip4/127.0.0.1/tcp/4001").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("/ip6/::1/udp/9/quic-v1").as_deref(), Some("::1"));
        assert_eq!(ip("/dns4/example.com/tcp/1"), None);
        assert_eq!(ip("/ip4/300.1.1.1/tcp/1"), None);
        assert_eq!(ip("/ip4"), None);
    }

    #[test]
    fn subnet_ip_skips_unspecified_and_unmaps_ipv4() {
        let sub = |addrs: &[&str]| {
            let addrs: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
            subnet_ip(&addrs, None).map(|ip| ip.to_string())
        };
        assert_eq!(
            sub(&["/ip4/0.0.0.0/tcp/1", "/ip4/10.1.2.3/tcp/1"]).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(
            sub(&["/ip6/::ffff:10.1.2.3/tcp/1"]).as_deref(),
            Some("10.1.2.3")
        );
        assert_eq!(sub(&["/dns4/x/tcp/1"]), None);
        assert_eq!(sub(&["/ip4/0.0.0.0/tcp/1"]), None);
    }
}
