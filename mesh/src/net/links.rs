//! What a host knows of its own reachability and of each connection: the
//! NAT status AutoNAT found, the addresses it announces, and for each peer
//! how it is connected and the bytes each way (shown on `/stats`).

use std::collections::BTreeMap;

use libp2p::{core::ConnectedPoint, multiaddr::Protocol, swarm::ConnectionId, Multiaddr, PeerId};
use serde::Serialize;

use crate::reach::{announceable, Scope};

/// How a connection reached the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkKind {
    /// Through a circuit-relay-v2 relay.
    Relayed,
    /// Direct, after DCUtR punched a hole through the NATs.
    HolePunched,
    /// Direct from the first dial.
    Direct,
}

/// Whether others can dial this host, as AutoNAT last found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatStatus {
    #[default]
    Unknown,
    Public,
    Private,
}

/// One peer's link, as `/stats` shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerLink {
    pub peer_id: String,
    pub addr: String,
    pub connection: LinkKind,
    /// The engine's median RTT to it, when it is a neighbour.
    pub rtt_ms: Option<u64>,
    /// Shoal frame bytes, all streams.
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// A peer DCUtR tried to punch through to, and whether it ever did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Punch {
    pub peer_id: String,
    pub punched: bool,
}

/// Peers whose hole-punch outcome is remembered, at most: enough for every
/// neighbour a node has had for a good while.
const MAX_PUNCHES: usize = 256;

/// The host's view of the network, published for `/stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct NetStatus {
    pub nat: NatStatus,
    /// What it announces to the tracker (docs/nat.md).
    pub addrs: Vec<String>,
    /// Relays it holds a reservation with.
    pub relays: Vec<String>,
    /// Peers DCUtR tried, and whether it punched through (success rates).
    pub punches: Vec<Punch>,
    pub peers: Vec<PeerLink>,
}

#[derive(Debug)]
struct Connection {
    peer: PeerId,
    addr: Multiaddr,
    kind: LinkKind,
}

/// Connections, counters and addresses, kept by the driver.
#[derive(Debug, Default)]
pub(super) struct Links {
    connections: BTreeMap<ConnectionId, Connection>,
    /// Frame bytes (sent, received) per peer, while connected.
    bytes: BTreeMap<PeerId, (u64, u64)>,
    listen: Vec<Multiaddr>,
    external: Vec<Multiaddr>,
    pub(super) nat: NatStatus,
    pub(super) relays: BTreeMap<PeerId, Multiaddr>,
    /// Hole-punch outcomes per peer: punched at least once.
    punches: BTreeMap<PeerId, bool>,
}

impl Links {
    pub(super) fn connected(&mut self, id: ConnectionId, peer: PeerId, endpoint: &ConnectedPoint) {
        let kind = if endpoint.is_relayed() {
            LinkKind::Relayed
        } else {
            LinkKind::Direct
        };
        let addr = endpoint.get_remote_address().clone();
        self.connections.insert(id, Connection { peer, addr, kind });
        self.bytes.entry(peer).or_default();
    }

    /// DCUtR made `id` by punching through: the connection is direct.
    pub(super) fn punched(&mut self, id: ConnectionId) {
        if let Some(c) = self.connections.get_mut(&id) {
            c.kind = LinkKind::HolePunched;
        }
    }

    /// DCUtR's verdict on a punch towards `peer`. A peer punched once
    /// stays punched; a new peer beyond [`MAX_PUNCHES`] pushes out another.
    pub(super) fn punch_tried(&mut self, peer: PeerId, punched: bool) {
        if !self.punches.contains_key(&peer) && self.punches.len() >= MAX_PUNCHES {
            self.punches.pop_first();
        }
        *self.punches.entry(peer).or_default() |= punched;
    }

    pub(super) fn closed(&mut self, id: ConnectionId, peer: PeerId, remaining: u32) {
        self.connections.remove(&id);
        if remaining == 0 {
            self.bytes.remove(&peer);
        }
    }

    /// The best way `peer` is connected now: a session opened now goes over
    /// a direct connection if there is one.
    pub(super) fn kind(&self, peer: &PeerId) -> Option<LinkKind> {
        self.of(peer).map(|(_, c)| c.kind).max()
    }

    /// The relayed connections to `peer`, to close once a direct one is up.
    pub(super) fn relayed(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.of(peer)
            .filter(|(_, c)| c.kind == LinkKind::Relayed)
            .map(|(id, _)| *id)
            .collect()
    }

    fn of<'a>(
        &'a self,
        peer: &'a PeerId,
    ) -> impl Iterator<Item = (&'a ConnectionId, &'a Connection)> + 'a {
        self.connections
            .iter()
            .filter(move |(_, c)| c.peer == *peer)
    }

    pub(super) fn count_sent(&mut self, peer: &PeerId, bytes: u64) {
        if let Some(b) = self.bytes.get_mut(peer) {
            b.0 += bytes;
        }
    }

    pub(super) fn count_received(&mut self, peer: &PeerId, bytes: u64) {
        if let Some(b) = self.bytes.get_mut(peer) {
            b.1 += bytes;
        }
    }

    pub(super) fn listening(&mut self, addr: Multiaddr) {
        if !self.listen.contains(&addr) {
            self.listen.push(addr);
        }
    }

    pub(super) fn stopped_listening(&mut self, addr: &Multiaddr) {
        self.listen.retain(|a| a != addr);
    }

    pub(super) fn confirmed(&mut self, addr: Multiaddr) {
        if !self.external.contains(&addr) {
            self.external.push(addr);
        }
    }

    pub(super) fn expired(&mut self, addr: &Multiaddr) {
        self.external.retain(|a| a != addr);
    }

    /// Whether a stranger can dial the host directly: a public interface
    /// or a confirmed external address.
    pub(super) fn publicly_reachable(&self) -> bool {
        let direct = |a: &&Multiaddr| !a.iter().any(|p| p == Protocol::P2pCircuit);
        self.listen
            .iter()
            .chain(&self.external)
            .filter(direct)
            .any(|a| Scope::of(a) == Scope::Global)
    }

    /// What it announces: confirmed external addresses, then its own
    /// (relay circuits among them), less what nobody else can dial.
    pub(super) fn announced(&self) -> Vec<Multiaddr> {
        announceable(self.external.iter().chain(&self.listen))
    }

    pub(super) fn status(&self, rtt_ms: impl Fn(&PeerId) -> Option<u64>) -> NetStatus {
        let mut peers: BTreeMap<PeerId, PeerLink> = BTreeMap::new();
        for c in self.connections.values() {
            let (sent, received) = self.bytes.get(&c.peer).copied().unwrap_or_default();
            let link = PeerLink {
                peer_id: c.peer.to_string(),
                addr: c.addr.to_string(),
                connection: c.kind,
                rtt_ms: rtt_ms(&c.peer),
                bytes_sent: sent,
                bytes_received: received,
            };
            match peers.get(&c.peer) {
                Some(best) if best.connection >= c.kind => {}
                _ => {
                    peers.insert(c.peer, link);
                }
            }
        }
        NetStatus {
            nat: self.nat,
            addrs: self.announced().iter().map(|a| a.to_string()).collect(),
            relays: self.relays.values().map(|a| a.to_string()).collect(),
            punches: self
                .punches
                .iter()
                .map(|(p, punched)| Punch {
                    peer_id: p.to_string(),
                    punched: *punched,
                })
                .collect(),
            peers: peers.into_values().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::core::{transport::PortUse, Endpoint};

    use super::*;

    fn dialer(addr: &str) -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: addr.parse().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: PortUse::Reuse,
        }
    }

    #[test]
    fn a_peer_shows_its_best_link_and_relayed_ones_can_be_closed() {
        let mut links = Links::default();
        let peer = PeerId::random();
        let relay = "/ip4/203.0.113.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit";
        links.connected(ConnectionId::new_unchecked(1), peer, &dialer(relay));
        assert_eq!(links.kind(&peer), Some(LinkKind::Relayed));
        links.connected(
            ConnectionId::new_unchecked(2),
            peer,
            &dialer("/ip4/198.51.100.2/udp/5/quic-v1"),
        );
        links.punched(ConnectionId::new_unchecked(2));
        assert_eq!(links.kind(&peer), Some(LinkKind::HolePunched));
        assert_eq!(links.relayed(&peer), [ConnectionId::new_unchecked(1)]);
        links.count_received(&peer, 10);
        links.punch_tried(peer, false);
        links.punch_tried(peer, true);
        links.punch_tried(peer, false);
        let status = links.status(|_| Some(42));
        assert_eq!(status.peers.len(), 1);
        assert_eq!(status.peers[0].connection, LinkKind::HolePunched);
        assert_eq!(status.peers[0].bytes_received, 10);
        assert_eq!(
            status.punches,
            [Punch {
                peer_id: peer.to_string(),
                punched: true
            }]
        );
        links.closed(ConnectionId::new_unchecked(1), peer, 1);
        links.closed(ConnectionId::new_unchecked(2), peer, 0);
        assert_eq!(links.kind(&peer), None);
        assert!(links.status(|_| None).peers.is_empty());
    }

    #[test]
    fn announced_addresses_leave_out_what_nobody_can_dial() {
        let mut links = Links::default();
        links.listening("/ip4/127.0.0.1/tcp/7091".parse().unwrap());
        links.listening("/ip4/192.168.1.2/tcp/7091".parse().unwrap());
        assert!(!links.publicly_reachable());
        links.confirmed("/ip4/198.51.100.2/tcp/7091".parse().unwrap());
        assert!(links.publicly_reachable());
        let announced: Vec<String> = links.announced().iter().map(|a| a.to_string()).collect();
        assert_eq!(
            announced,
            ["/ip4/198.51.100.2/tcp/7091", "/ip4/192.168.1.2/tcp/7091"]
        );
    }
}
