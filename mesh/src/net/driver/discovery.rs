//! Finding a stream's hosts without a tracker (docs/discovery.md): the
//! host provides every stream it carries in Shoal's DHT and, while no
//! tracker answers for a stream, looks its key up and hands the providers
//! to the stream's engine as candidates. Identify tells which providers are
//! infrastructure and where their HTTP origins are ([`Advert`]); those
//! become the stream's origins and relays too.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use libp2p::{
    core::ConnectedPoint,
    identify,
    kad::{self, store::RecordStore, GetProvidersOk, InboundRequest, QueryId, QueryResult},
    multiaddr::Protocol,
    swarm::{
        dial_opts::{DialOpts, PeerCondition},
        DialError,
    },
    Multiaddr, PeerId,
};

use super::Driver;
use crate::{
    net::{
        dht::{self, bootstrap_peer, key_stream, stream_key, MAX_PROVIDERS},
        Advert, NetError, Traversal,
    },
    proto::{wire, Input, PeerInfo, StreamId},
    reach::Scope,
};

/// A stream with no neighbour is looked up this often...
const LOOKUP_ALONE: Duration = Duration::from_secs(2);
/// ...one with neighbours this often, for better ones and infrastructure.
const LOOKUP_EVERY: Duration = Duration::from_secs(15);
/// A provide that reached no DHT node (the routing table was empty: the
/// host had just started) is tried again after this.
const PROVIDE_RETRY: Duration = Duration::from_secs(3);
/// Shoal hosts whose identify the host remembers, at most.
const MAX_KNOWN: usize = 512;
/// Providers waiting for their identify, at most.
const MAX_WAITING: usize = 64;
/// A provider's identify is waited for this long, at most: a dial and
/// identify take less than a query.
const WAIT: Duration = dht::QUERY_TIMEOUT;
/// Infrastructure found in the DHT that one stream keeps as origins and
/// relays, at most.
const MAX_INFRA: usize = 8;

/// The DHT side of the host: what it looks up and provides, and what it
/// learnt of other hosts.
#[derive(Debug, Default)]
pub(super) struct Discovery {
    /// Lookups in flight: the stream each is for, and providers it found.
    lookups: HashMap<QueryId, (StreamId, usize)>,
    streams: BTreeMap<StreamId, StreamSearch>,
    /// What Shoal hosts said of themselves in identify.
    known: BTreeMap<PeerId, Known>,
    /// Providers found before their identify came.
    waiting: Waiting,
    /// The address each connected peer was last reached at: an origin
    /// bound to every interface is there.
    reached_at: HashMap<PeerId, IpAddr>,
}

/// One stream's search.
#[derive(Debug)]
struct StreamSearch {
    /// A tracker answers for it: no lookups then.
    tracked: bool,
    next_lookup: Instant,
    /// When to provide again, after a provide that reached nobody.
    provide_again: Option<Instant>,
    /// Infrastructure found for it in the DHT.
    infra: BTreeSet<PeerId>,
}

#[derive(Debug)]
struct Known {
    advert: Advert,
    addrs: Vec<Multiaddr>,
    /// Where it was reached when it identified: its origin may be bound
    /// to every interface, and the connection may be gone when a lookup
    /// finds it.
    reached_at: Option<IpAddr>,
}

impl Driver {
    /// Joins the DHT through the `--bootstrap` hosts.
    pub(super) fn bootstrap(&mut self, peers: &[Multiaddr]) -> Result<(), NetError> {
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return Ok(());
        };
        let mut dials = Vec::new();
        for addr in peers {
            let (peer, at) =
                bootstrap_peer(addr).ok_or_else(|| NetError::Bootstrap(addr.clone()))?;
            kad.add_address(&peer, at.clone());
            dials.push(DialOpts::peer_id(peer).addresses(vec![at]).build());
        }
        if !peers.is_empty() {
            let _ = kad.bootstrap();
        }
        for dial in dials {
            if let Err(e) = self.swarm.dial(dial) {
                tracing::warn!("cannot dial a bootstrap host: {e}");
            }
        }
        Ok(())
    }

    /// A stream was joined: provide it, and look it up until a tracker
    /// answers for it.
    pub(super) fn discover(&mut self, stream: StreamId) {
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        let provide_again = provide(kad, &stream);
        let search = StreamSearch {
            tracked: false,
            next_lookup: Instant::now(),
            provide_again,
            infra: BTreeSet::new(),
        };
        self.discovery.streams.insert(stream, search);
    }

    /// A stream was left: no longer provided nor looked up.
    pub(super) fn forget_stream(&mut self, stream: &StreamId) {
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        kad.stop_providing(&stream_key(stream));
        self.discovery.streams.remove(stream);
        // Finished queries may still report what they found: without
        // their entries, that goes nowhere.
        self.discovery.lookups.retain(|id, (s, _)| {
            if s != stream {
                return true;
            }
            if let Some(mut q) = kad.query_mut(id) {
                q.finish();
            }
            false
        });
        self.discovery.waiting.forget_stream(stream);
    }

    pub(super) fn set_tracked(&mut self, stream: StreamId, tracked: bool) {
        if let Some(search) = self.discovery.streams.get_mut(&stream) {
            match (search.tracked, tracked) {
                (false, true) => tracing::debug!("a tracker answers: no DHT lookups"),
                (true, false) => {
                    tracing::info!("no tracker answers: looking the stream up in the DHT")
                }
                _ => {}
            }
            search.tracked = tracked;
        }
    }

    /// Starts the lookups and provides that are due.
    pub(super) fn discovery_tick(&mut self) {
        let now = Instant::now();
        let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() else {
            return;
        };
        let discovery = &mut self.discovery;
        discovery.waiting.expire(now);
        for (stream, search) in &mut discovery.streams {
            if search.provide_again.is_some_and(|at| at <= now) {
                search.provide_again = provide(kad, stream);
            }
            let looking = discovery.lookups.values().any(|(s, _)| s == stream);
            if search.tracked || looking || search.next_lookup > now {
                continue;
            }
            let alone = self.lanes.get(stream).is_none_or(|l| l.sessions.is_empty());
            search.next_lookup = now + if alone { LOOKUP_ALONE } else { LOOKUP_EVERY };
            let id = kad.get_providers(stream_key(stream));
            discovery.lookups.insert(id, (*stream, 0));
        }
    }

    pub(super) fn on_connected(&mut self, peer: PeerId, endpoint: &ConnectedPoint) {
        let ip = endpoint.get_remote_address().iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::from(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::from(ip)),
            _ => None,
        });
        if let Some(ip) = ip {
            self.discovery.reached_at.insert(peer, ip);
        }
    }

    pub(super) fn on_disconnected(&mut self, peer: &PeerId) {
        self.discovery.reached_at.remove(peer);
        self.discovery.waiting.take(peer);
    }

    /// A peer told who it is: a Shoal host is remembered, a DHT host goes
    /// into the routing table (however the host came to know it: hints,
    /// peer exchange, an inbound session), and a provider waiting for this
    /// becomes a candidate.
    pub(super) fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        // Whatever it said, it is waited for no longer: a peer that is no
        // Shoal host would otherwise hold its place in `waiting` for good.
        let streams = self.discovery.waiting.take(&peer);
        let Some(advert) = Advert::parse(&info.agent_version) else {
            return;
        };
        let reached_at = self.discovery.reached_at.get(&peer).copied();
        let addrs = usable(info.listen_addrs, self.traversal, reached_at);
        if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
            if info.protocols.contains(&dht::PROTOCOL) {
                for addr in &addrs {
                    kad.add_address(&peer, addr.clone());
                }
            }
        }
        let known = &mut self.discovery.known;
        if known.len() >= MAX_KNOWN && !known.contains_key(&peer) {
            // Any will do: a host forgotten is identified again on its
            // next connection.
            known.pop_first();
        }
        let known_peer = Known {
            advert,
            addrs,
            reached_at,
        };
        known.insert(peer, known_peer);
        for stream in streams {
            self.found(stream, peer);
        }
    }

    pub(super) fn on_kad(&mut self, ev: kad::Event) {
        match ev {
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
            } => match result {
                QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders {
                    providers, ..
                })) => {
                    let Some((stream, found)) = self.discovery.lookups.get_mut(&id) else {
                        return;
                    };
                    let stream = *stream;
                    let room = MAX_PROVIDERS.saturating_sub(*found);
                    *found += providers.len().min(room);
                    let full = *found >= MAX_PROVIDERS;
                    for peer in providers.into_iter().take(room) {
                        self.provider(stream, peer);
                    }
                    if full {
                        self.discovery.lookups.remove(&id);
                        let kad = self.swarm.behaviour_mut().kad.as_mut();
                        if let Some(mut q) = kad.and_then(|k| k.query_mut(&id)) {
                            q.finish();
                        }
                    }
                }
                QueryResult::StartProviding(result) | QueryResult::RepublishProvider(result) => {
                    let key = match &result {
                        Ok(ok) => &ok.key,
                        Err(e) => e.key(),
                    };
                    let nobody = result.is_err() || stats.num_successes() == 0;
                    let search = key_stream(key).and_then(|s| self.discovery.streams.get_mut(&s));
                    if let (true, Some(search)) = (nobody, search) {
                        search.provide_again = Some(Instant::now() + PROVIDE_RETRY);
                    }
                }
                _ => {
                    if step.last {
                        self.discovery.lookups.remove(&id);
                    }
                }
            },
            // Provider records are kept only from the provider itself (kad
            // checks), only for a stream's key (the store's key bound counts
            // remote keys too: any other key would crowd out our own), and
            // with the addresses others can use.
            kad::Event::InboundRequest {
                request:
                    InboundRequest::AddProvider {
                        record: Some(record),
                    },
            } => {
                let at = self.discovery.reached_at.get(&record.provider).copied();
                let Some(record) = admit(record, self.traversal, at) else {
                    tracing::debug!("a provider record for no stream's key: not stored");
                    return;
                };
                if let Some(kad) = self.swarm.behaviour_mut().kad.as_mut() {
                    if let Err(e) = kad.store_mut().add_provider(record) {
                        tracing::debug!("provider record not stored: {e}");
                    }
                }
            }
            _ => {}
        }
    }

    /// A lookup found `peer` providing `stream`: a candidate once identify
    /// has said what it is (at once if it has already).
    fn provider(&mut self, stream: StreamId, peer: PeerId) {
        if peer == *self.swarm.local_peer_id() {
            return;
        }
        if self.discovery.known.contains_key(&peer) {
            self.found(stream, peer);
            return;
        }
        let Some(new) = self.discovery.waiting.add(peer, stream, Instant::now()) else {
            return; // full: the next lookup finds it again
        };
        if new && !self.swarm.is_connected(&peer) {
            // No addresses: kad has them, from the routing table or the
            // lookup that found the provider.
            let dial = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(dial) {
                // Already being dialled: its identify is on the way.
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => {
                    tracing::debug!(%peer, "cannot dial a provider: {e}");
                    self.discovery.waiting.take(&peer);
                }
            }
        }
    }

    /// Hands an identified provider of `stream` to its engine; the
    /// infrastructure among them becomes the stream's fallback origins and
    /// relays as well.
    fn found(&mut self, stream: StreamId, peer: PeerId) {
        let Some(known) = self.discovery.known.get(&peer) else {
            return;
        };
        let addrs = known.addrs.iter().map(|a| a.to_string()).collect();
        let info = PeerInfo::new(peer, addrs);
        let now = self.clock.now();
        let Some(lane) = self.lanes.get_mut(&stream) else {
            return;
        };
        lane.handle(Input::Candidates(vec![info.clone()]), now);
        let Some(search) = self.discovery.streams.get_mut(&stream) else {
            return;
        };
        if !known.advert.is_infra_for(&stream, &peer)
            || search.infra.len() >= MAX_INFRA
            || search.infra.contains(&peer)
        {
            return;
        }
        let at = self.discovery.reached_at.get(&peer).copied();
        let at = at.or(known.reached_at);
        if at.is_none() && known.advert.origin.is_some() {
            return; // its origin cannot be placed: a later lookup tries again
        }
        search.infra.insert(peer);
        tracing::info!(%peer, role = ?known.advert.role, "infrastructure found in the DHT");
        if let Some(url) = known.advert.stream_origin(&stream, at) {
            let mut urls: Vec<String> = lane.origins.urls().map(str::to_string).collect();
            if !urls.contains(&url) {
                urls.push(url);
                lane.origins.set(urls);
            }
        }
        if !self.relay_candidates.iter().any(|r| r.peer == peer)
            && self.relay_candidates.len() < MAX_INFRA
        {
            self.relay_candidates.push(info);
        }
    }
}

/// An inbound provider record as it is stored, if at all: only for a
/// stream's key, with the addresses [`usable`] keeps.
fn admit(
    mut record: kad::ProviderRecord,
    traversal: Traversal,
    reached_at: Option<IpAddr>,
) -> Option<kad::ProviderRecord> {
    key_stream(&record.key)?;
    record.addresses = usable(record.addresses, traversal, reached_at);
    Some(record)
}

/// Provides `stream`; when that fails locally (the store is full), when
/// to try again.
fn provide(
    kad: &mut kad::Behaviour<kad::store::MemoryStore>,
    stream: &StreamId,
) -> Option<Instant> {
    let e = kad.start_providing(stream_key(stream)).err()?;
    tracing::warn!("cannot provide the stream in the DHT: {e}; trying again");
    Some(Instant::now() + PROVIDE_RETRY)
}

/// Providers found before their identify came, and for which streams,
/// each until a deadline: a peer that never identifies (its dial failed
/// silently, or identify never came) leaves room for others.
#[derive(Debug, Default)]
struct Waiting(BTreeMap<PeerId, (BTreeSet<StreamId>, Instant)>);

impl Waiting {
    /// Waits for `peer`'s identify for `stream`: `Some(true)` when the
    /// peer was not waited for yet (then it is to be dialled), `None` when
    /// there is no room.
    fn add(&mut self, peer: PeerId, stream: StreamId, now: Instant) -> Option<bool> {
        let new = !self.0.contains_key(&peer);
        if new && self.0.len() >= MAX_WAITING {
            return None;
        }
        let (streams, _) = self.0.entry(peer).or_insert((BTreeSet::new(), now + WAIT));
        streams.insert(stream);
        Some(new)
    }

    /// The streams `peer` was waited for, and it is waited for no longer.
    fn take(&mut self, peer: &PeerId) -> BTreeSet<StreamId> {
        self.0.remove(peer).map(|(s, _)| s).unwrap_or_default()
    }

    fn forget_stream(&mut self, stream: &StreamId) {
        for (streams, _) in self.0.values_mut() {
            streams.remove(stream);
        }
    }

    /// Drops the peers waited for past their deadline.
    fn expire(&mut self, now: Instant) {
        self.0.retain(|_, (_, until)| *until > now);
    }
}

/// The addresses of a peer worth dialling, within the wire's bounds, by
/// the rule the tracker follows (`reach::reachable_from`): global ones; LAN
/// ones only of a peer reached on a LAN (one behind the same NAT), since in
/// another home they name a host there; loopback ones only on a loopback
/// mesh.
fn usable(
    addrs: Vec<Multiaddr>,
    traversal: Traversal,
    reached_at: Option<IpAddr>,
) -> Vec<Multiaddr> {
    let least = match reached_at.map(Scope::of_ip) {
        _ if traversal == Traversal::Off => Scope::Host,
        Some(Scope::Lan | Scope::Host) => Scope::Lan,
        _ => Scope::Global,
    };
    addrs
        .into_iter()
        .filter(|a| Scope::of(a) >= least)
        .filter(|a| a.to_string().len() <= wire::MAX_ADDR_LEN)
        .take(wire::MAX_ADDRS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lan_and_loopback_addresses_are_offered_only_where_they_mean_the_peer() {
        let addrs: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/192.0.2.1/tcp/1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let shown = |traversal, at: Option<&str>| {
            let at = at.map(|ip| ip.parse().unwrap());
            let kept = usable(addrs.clone(), traversal, at);
            kept.iter().map(|a| a.to_string()).collect::<Vec<_>>()
        };
        assert_eq!(shown(Traversal::Off, None).len(), 3, "a loopback mesh");
        let public = ["/ip4/192.0.2.1/tcp/1"];
        assert_eq!(shown(Traversal::Viewer, Some("192.0.2.1")), public);
        assert_eq!(shown(Traversal::Viewer, None), public);
        let same_lan = ["/ip4/192.168.1.2/tcp/1", "/ip4/192.0.2.1/tcp/1"];
        assert_eq!(shown(Traversal::Infra, Some("192.168.1.2")), same_lan);
        let many = vec!["/ip4/192.0.2.1/tcp/1".parse().unwrap(); 20];
        assert_eq!(usable(many, Traversal::Infra, None).len(), wire::MAX_ADDRS);
    }

    #[test]
    fn only_a_stream_s_provider_records_are_stored_with_usable_addresses() {
        let addrs: Vec<Multiaddr> = ["/ip4/192.168.1.2/tcp/1", "/ip4/192.0.2.1/tcp/1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let record = |key| kad::ProviderRecord::new(key, PeerId::random(), addrs.clone());
        let random = kad::RecordKey::new(&[3u8; 32]);
        assert!(admit(record(random), Traversal::Viewer, None).is_none());
        let kept = admit(
            record(stream_key(&StreamId([3; 32]))),
            Traversal::Viewer,
            None,
        );
        let kept: Vec<String> = kept
            .unwrap()
            .addresses
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(kept, ["/ip4/192.0.2.1/tcp/1"], "a LAN address from afar");
    }

    #[test]
    fn a_provider_that_never_identifies_does_not_hold_its_place() {
        let (mut waiting, now) = (Waiting::default(), Instant::now());
        let stream = StreamId([1; 32]);
        let peers: Vec<PeerId> = (0..MAX_WAITING).map(|_| PeerId::random()).collect();
        for p in &peers {
            assert_eq!(waiting.add(*p, stream, now), Some(true));
        }
        let again = waiting.add(peers[1], StreamId([2; 32]), now);
        assert_eq!(again, Some(false), "found twice: dialled once, kept");
        let late = PeerId::random();
        assert_eq!(waiting.add(late, stream, now), None, "full");
        assert!(!waiting.take(&peers[0]).is_empty(), "identify came");
        assert_eq!(waiting.add(late, stream, now), Some(true));
        waiting.expire(now + WAIT);
        assert!(waiting.0.is_empty(), "past the deadline");
        assert_eq!(waiting.add(late, stream, now + WAIT), Some(true));
    }
}
