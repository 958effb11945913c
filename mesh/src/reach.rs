//! Who can reach an address: the rule for which of a node's addresses it
//! announces, and which of a peer's addresses the tracker passes on to whom.
//!
//! A home viewer listening on every interface has a loopback address, a LAN
//! address (192.168.1.x, like every other home) and, once identify and
//! AutoNAT confirm it, its router's public address. Only the last means
//! anything to a stranger: a LAN address given to a peer in another home
//! dials a host in that peer's own LAN, and a loopback address dials the
//! peer itself.

use std::net::IpAddr;

use libp2p::{multiaddr::Protocol, Multiaddr};

/// Where an address can be dialled from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Nowhere: unspecified, link-local, multicast, reserved.
    Unroutable,
    /// The same host only (loopback).
    Host,
    /// The same private network only: RFC 1918, carrier-grade NAT space,
    /// unique-local IPv6.
    Lan,
    /// Anywhere on the internet (and DNS names, which are meant to be).
    Global,
}

impl Scope {
    pub fn of_ip(ip: IpAddr) -> Scope {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                if v4.is_unspecified()
                    || v4.is_link_local()
                    || v4.is_multicast()
                    || v4.is_broadcast()
                    || a == 0
                    || a >= 240
                {
                    Scope::Unroutable
                } else if v4.is_loopback() {
                    Scope::Host
                } else if v4.is_private() || (a == 100 && (b & 0xc0) == 64) {
                    Scope::Lan
                } else {
                    Scope::Global
                }
            }
            IpAddr::V6(v6) => {
                if v6.is_unspecified() || v6.is_unicast_link_local() || v6.is_multicast() {
                    Scope::Unroutable
                } else if v6.is_loopback() {
                    Scope::Host
                } else if v6.is_unique_local() {
                    Scope::Lan
                } else {
                    Scope::Global
                }
            }
        }
    }

    /// The scope of a multiaddr: its first ip or DNS component's; through a
    /// relay (`…/p2p-circuit`), the relay's, since that is what is dialled.
    /// libp2p's in-process memory transport is the host's.
    pub fn of(addr: &Multiaddr) -> Scope {
        for p in addr.iter() {
            match p {
                Protocol::Ip4(ip) => return Scope::of_ip(ip.into()),
                Protocol::Ip6(ip) => return Scope::of_ip(ip.into()),
                Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_) | Protocol::Dnsaddr(_) => {
                    return Scope::Global
                }
                Protocol::Memory(_) => return Scope::Host,
                _ => {}
            }
        }
        Scope::Unroutable
    }

    /// The scope of a multiaddr written as text; nonsense is unroutable.
    pub fn of_str(addr: &str) -> Scope {
        addr.parse().map_or(Scope::Unroutable, |a| Scope::of(&a))
    }
}

/// Of a node's addresses, those it announces. Loopback addresses only when
/// it listens on nothing else: a node kept on loopback on purpose (tests,
/// the lab) is a local mesh, and has nothing else to say.
pub fn announceable<'a>(addrs: impl IntoIterator<Item = &'a Multiaddr>) -> Vec<Multiaddr> {
    let addrs: Vec<&Multiaddr> = addrs.into_iter().collect();
    let local_only = addrs.iter().all(|a| Scope::of(a) <= Scope::Host);
    let least = if local_only { Scope::Host } else { Scope::Lan };
    let mut out: Vec<Multiaddr> = Vec::with_capacity(addrs.len());
    for a in addrs {
        if Scope::of(a) >= least && !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

/// Of a peer's announced addresses, those another peer can dial: global
/// ones always; LAN and loopback ones only when both were seen by the
/// tracker at the same address (behind one NAT, or on one host), or when
/// it cannot tell where either was (a registry driven in-process).
pub fn reachable_from<'a>(
    addrs: &'a [String],
    owner_seen_at: Option<IpAddr>,
    asker_seen_at: Option<IpAddr>,
) -> impl Iterator<Item = &'a String> + 'a {
    let same_place = match (owner_seen_at, asker_seen_at) {
        (Some(a), Some(b)) => a.to_canonical() == b.to_canonical(),
        _ => true,
    };
    addrs.iter().filter(move |a| match Scope::of_str(a) {
        Scope::Global => true,
        Scope::Lan | Scope::Host => same_place,
        Scope::Unroutable => false,
    })
}

/// A peer's addresses fit to pass on to a third peer, which may be
/// anywhere (peer exchange): the global ones. On a loopback mesh, where
/// every address is loopback, those. At most `most`.
pub fn shareable(addrs: &[String], most: usize) -> Vec<String> {
    let scopes: Vec<Scope> = addrs.iter().map(|a| Scope::of_str(a)).collect();
    let least = if scopes.iter().all(|s| *s == Scope::Host) {
        Scope::Host
    } else {
        Scope::Global
    };
    addrs
        .iter()
        .zip(scopes)
        .filter(|(_, s)| *s >= least)
        .map(|(a, _)| a.clone())
        .take(most)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_are_scoped_by_who_can_dial_them() {
        let cases = [
            ("/ip4/0.0.0.0/tcp/1", Scope::Unroutable),
            ("/ip4/169.254.3.4/tcp/1", Scope::Unroutable),
            ("/ip4/224.0.0.1/udp/1/quic-v1", Scope::Unroutable),
            ("/ip4/127.0.0.1/tcp/1", Scope::Host),
            ("/ip4/192.168.1.2/tcp/1", Scope::Lan),
            ("/ip4/10.1.2.3/udp/1/quic-v1", Scope::Lan),
            ("/ip4/172.20.0.1/tcp/1", Scope::Lan),
            ("/ip4/100.100.0.1/tcp/1", Scope::Lan),
            ("/ip4/203.0.113.7/tcp/1", Scope::Global),
            ("/ip4/8.8.8.8/tcp/1", Scope::Global),
            ("/ip6/::/tcp/1", Scope::Unroutable),
            ("/ip6/fe80::1/tcp/1", Scope::Unroutable),
            ("/ip6/::1/tcp/1", Scope::Host),
            ("/ip6/fd00::1/tcp/1", Scope::Lan),
            ("/ip6/2001:db8::1/tcp/1", Scope::Global),
            ("/ip6/::ffff:127.0.0.1/tcp/1", Scope::Host),
            ("/dns4/seed.example/tcp/1", Scope::Global),
            ("/ip4/8.8.8.8/tcp/1/p2p-circuit", Scope::Global),
            ("/p2p-circuit", Scope::Unroutable),
            ("/memory/3", Scope::Host),
        ];
        for (addr, scope) in cases {
            assert_eq!(Scope::of(&ma(addr)), scope, "{addr}");
        }
        assert_eq!(Scope::of_str("not an address"), Scope::Unroutable);
    }

    #[test]
    fn nothing_unroutable_or_loopback_is_announced_beside_real_addresses() {
        let listening = [
            ma("/ip4/127.0.0.1/tcp/7091"),
            ma("/ip4/192.168.1.2/tcp/7091"),
            ma("/ip4/0.0.0.0/tcp/7091"),
            ma("/ip6/fe80::1/tcp/7091"),
            ma("/ip4/198.51.100.9/tcp/7091"),
            ma("/ip4/198.51.100.9/tcp/7091"),
        ];
        assert_eq!(
            announceable(&listening),
            [
                ma("/ip4/192.168.1.2/tcp/7091"),
                ma("/ip4/198.51.100.9/tcp/7091")
            ]
        );
    }

    #[test]
    fn a_node_kept_on_loopback_announces_loopback() {
        let listening = [
            ma("/ip4/127.0.0.1/tcp/7091"),
            ma("/ip4/127.0.0.1/udp/7091/quic-v1"),
        ];
        assert_eq!(announceable(&listening), listening);
        assert!(announceable(&[ma("/ip4/0.0.0.0/tcp/1")]).is_empty());
    }

    #[test]
    fn peer_exchange_passes_on_global_addresses_only() {
        let home: Vec<String> = ["/ip4/192.168.1.2/tcp/1", "/ip4/203.0.113.5/tcp/1"]
            .map(String::from)
            .to_vec();
        assert_eq!(shareable(&home, 8), ["/ip4/203.0.113.5/tcp/1"]);
        assert!(shareable(&home[..1], 8).is_empty());
        let lab: Vec<String> = ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/tcp/2"]
            .map(String::from)
            .to_vec();
        assert_eq!(shareable(&lab, 8), lab);
        assert_eq!(shareable(&lab, 1).len(), 1);
    }

    #[test]
    fn private_addresses_go_only_to_peers_behind_the_same_address() {
        let addrs: Vec<String> = [
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/203.0.113.5/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "garbage",
        ]
        .map(String::from)
        .to_vec();
        let home: IpAddr = "203.0.113.5".parse().unwrap();
        let other: IpAddr = "203.0.113.6".parse().unwrap();
        let got = |asker| reachable_from(&addrs, Some(home), asker).collect::<Vec<_>>();
        assert_eq!(got(Some(other)), [&addrs[2]]);
        assert_eq!(got(None).len(), 3, "unknown: nothing to tell them apart");
        assert_eq!(got(Some(home)), [&addrs[0], &addrs[1], &addrs[2]]);
        let mapped: IpAddr = "::ffff:203.0.113.5".parse().unwrap();
        assert_eq!(got(Some(mapped)).len(), 3);
    }
}
