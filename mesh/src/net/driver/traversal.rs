//! The host's NAT traversal, as the driver runs it: AutoNAT's verdict, relay
//! reservations, DCUtR's outcome and when a session settles for a relay
//! (docs/nat.md).

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use libp2p::{autonat, dcutr, multiaddr::Protocol, relay, Multiaddr, PeerId, Swarm};

use super::{Driver, RELAY_BELOW};
use crate::{
    net::{
        links::{LinkKind, NatStatus},
        swarm::{Behaviour, BehaviourEvent},
        Traversal,
    },
    proto::{Input, StreamId},
    reach::Scope,
};

/// Relays a host that cannot be dialled holds reservations with: two, so
/// that losing one leaves it reachable.
const RESERVATIONS: usize = 2;

/// A relay that refused or lost a reservation is asked again after this.
const RELAY_RETRY: Duration = Duration::from_secs(30);

/// A public interface address is the host's own: confirmed at once, so
/// that a seeder on a server is announced and serves as a relay before any
/// peer could confirm it (AutoNAT needs one that is already connected).
/// Infrastructure confirms its LAN and loopback addresses too: it relays
/// for whoever can reach it there.
pub(super) fn own_address(swarm: &mut Swarm<Behaviour>, traversal: Traversal, addr: &Multiaddr) {
    let least = match traversal {
        Traversal::Off => return,
        Traversal::Viewer => Scope::Global,
        Traversal::Infra => Scope::Host,
    };
    let circuit = addr.iter().any(|p| p == Protocol::P2pCircuit);
    if !circuit && Scope::of(addr) >= least {
        swarm.add_external_address(addr.clone());
    }
}

impl Driver {
    pub(super) fn on_behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Autonat(autonat::Event::StatusChanged { new, .. }) => {
                tracing::info!(status = ?new, "NAT status");
                self.links.nat = match new {
                    autonat::NatStatus::Public(_) => NatStatus::Public,
                    autonat::NatStatus::Private => NatStatus::Private,
                    autonat::NatStatus::Unknown => NatStatus::Unknown,
                };
                self.reserve_relays();
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal: false,
                ..
            }) => tracing::info!(relay = %relay_peer_id, "relay reservation accepted"),
            BehaviourEvent::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => {
                self.links.punch_tried(remote_peer_id, result.is_ok());
                match result {
                    Ok(connection) => {
                        tracing::debug!(peer = %remote_peer_id, "hole punched");
                        self.links.punched(connection);
                    }
                    Err(e) => tracing::debug!(peer = %remote_peer_id, "hole punch failed: {e}"),
                }
                // Punched, the sessions open on the direct connection (its
                // establishment closed the relayed one); not, maybe on the
                // relay.
                if let Some(streams) = self.upgrading.remove(&remote_peer_id) {
                    if self.links.kind(&remote_peer_id) == Some(LinkKind::Relayed) {
                        self.settle_for_relay(remote_peer_id, streams);
                    } else {
                        self.open_streams(remote_peer_id, streams);
                    }
                }
            }
            _ => {}
        }
    }

    /// A peer could be reached over a relay only. A stream takes it as a
    /// neighbour there only while it has fewer than [`RELAY_BELOW`] direct
    /// ones: a relay carries piece payload as a last resort. Otherwise the
    /// engine hears the dial failed, and the relayed connection goes.
    pub(super) fn settle_for_relay(&mut self, peer: PeerId, streams: BTreeSet<StreamId>) {
        let now = self.clock.now();
        let mut wanted = BTreeSet::new();
        for stream in streams {
            if self.direct_sessions(&stream) < RELAY_BELOW {
                wanted.insert(stream);
            } else if let Some(lane) = self.lanes.get_mut(&stream) {
                lane.handle(Input::DialFailed { peer }, now);
            }
        }
        if wanted.is_empty() {
            if !self.has_session(&peer) {
                for relayed in self.links.relayed(&peer) {
                    self.swarm.close_connection(relayed);
                }
            }
            return;
        }
        tracing::debug!(%peer, "no direct connection: the session goes over the relay");
        self.open_streams(peer, wanted);
    }

    /// A stream's sessions that do not go through a relay.
    pub(super) fn direct_sessions(&self, stream: &StreamId) -> usize {
        self.lanes.get(stream).map_or(0, |l| {
            l.sessions
                .keys()
                .filter(|p| self.links.kind(p) != Some(LinkKind::Relayed))
                .count()
        })
    }

    /// A host nobody can dial directly takes reservations with up to
    /// [`RESERVATIONS`] relays among the infrastructure it was told of, so
    /// that peers can reach it through them and DCUtR can punch through.
    pub(super) fn reserve_relays(&mut self) {
        if self.traversal == Traversal::Off
            || self.links.publicly_reachable()
            || self.links.nat == NatStatus::Public
        {
            return;
        }
        let now = Instant::now();
        self.refused
            .retain(|_, at| now.duration_since(*at) < RELAY_RETRY);
        for relay in &self.relay_candidates {
            if self.reserving.len() >= RESERVATIONS {
                return;
            }
            let taken = self.reserving.values().any(|p| *p == relay.peer);
            if taken || self.refused.contains_key(&relay.peer) {
                continue;
            }
            let Some(addr) = relay
                .addrs
                .iter()
                .filter_map(|a| a.parse::<Multiaddr>().ok())
                .find(|a| !a.iter().any(|p| p == Protocol::P2pCircuit))
            else {
                continue;
            };
            let circuit = addr
                .with_p2p(relay.peer)
                .unwrap_or_else(|a| a)
                .with(Protocol::P2pCircuit);
            match self.swarm.listen_on(circuit.clone()) {
                Ok(id) => {
                    tracing::debug!(%circuit, "asking for a relay reservation");
                    self.reserving.insert(id, relay.peer);
                    self.links.relays.insert(relay.peer, circuit);
                }
                Err(e) => {
                    tracing::debug!(%circuit, "cannot listen through the relay: {e}");
                    self.refused.insert(relay.peer, now);
                }
            }
        }
    }

    pub(super) fn publish_status(&self) {
        let rtt = |peer: &PeerId| {
            self.lanes
                .values()
                .find_map(|l| l.engine.neighbor_rtt_ms(peer))
        };
        self.status_tx.send_replace(self.links.status(rtt));
    }
}
