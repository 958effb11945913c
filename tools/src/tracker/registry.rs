//! The tracker's soft state: each stream's swarm (infrastructure and viewers
//! in two tables), one entry per peer as it last announced, and the bounds
//! and expiry that keep it small. Every method takes `now`; none reads a
//! clock.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, SeedableRng};
use serde::Serialize;
use shoal_mesh::hints::{
    Announce, Assignments, Hints, InvalidAnnounce, ReflectorAnnounce, Role, StreamInfo, MAX_WANT,
};
use shoal_mesh::{net::origin_seen_at, proto::Locality};

use super::{
    addresses::subnet_ip,
    asn::AsnTable,
    cadence,
    coordinator::{Coordinator, CoordinatorConfig},
    ranking::{self, usable_coord, Query},
    reflectors::{ReflectorRecord, Reflectors},
    swarm::{PeerEntry, Shape, Swarm},
};

/// Most peers ranked for one announce; larger swarms are sampled, which also
/// spreads newcomers over the swarm instead of piling them on the same few.
pub const SCAN_LIMIT: usize = 512;
/// Peers scanned per candidate wanted, at least [`MIN_SCAN`]: a viewer
/// asking for few is ranked from fewer.
pub const SCAN_PER_WANTED: usize = 32;
pub const MIN_SCAN: usize = 64;
/// Most seeders/reflectors returned in [`Hints::seeders`].
pub const MAX_SEEDER_HINTS: usize = 8;
/// Most peers listed by `GET /v1/streams/{stream}`.
pub const MAX_LISTED_PEERS: usize = 1000;
/// Candidates a settled viewer is given at most: it has its neighbours and
/// needs a replacement now and then (peer exchange brings the rest), so its
/// answer stays small.
pub const SETTLED_WANT: usize = 4;
/// A settled viewer's interval, in base intervals: 5 s becomes 25 s.
pub const SETTLED_FACTOR: u8 = 5;
/// Longest interval a client heeds (`mesh/src/net/announce.rs` clamps).
const MAX_INTERVAL_S: u32 = 300;

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// A peer not re-announced within this long is forgotten; a settled
    /// viewer's stretches with its interval.
    pub peer_ttl: Duration,
    /// Announce interval advised to peers (the base).
    pub interval_s: u32,
    /// A settled viewer is asked back this many base intervals later
    /// (1: every peer at the base interval).
    pub settled_factor: u8,
    pub max_body_bytes: usize,
    pub max_peers_per_stream: usize,
    pub max_streams: usize,
    /// Bound on all peers of all streams together.
    pub max_peers_total: usize,
    /// Bound on reflectors (`POST /v1/reflectors`).
    pub max_reflectors: usize,
    /// IP → AS numbers for peers' localities (empty: every AS unknown).
    pub asn_table: Arc<AsnTable>,
    /// Split infrastructure upload across streams (`None`: no budgets).
    pub coordinator: Option<CoordinatorConfig>,
}

impl TrackerConfig {
    /// Defaults with this announce interval and a TTL of three intervals, so
    /// one or two lost announces do not drop a peer.
    pub fn with_interval(interval_s: u32) -> Self {
        let interval_s = interval_s.max(1);
        Self {
            peer_ttl: Duration::from_secs(3 * u64::from(interval_s)),
            interval_s,
            settled_factor: SETTLED_FACTOR,
            max_body_bytes: 64 * 1024,
            max_peers_per_stream: 100_000,
            max_streams: 10_000,
            max_peers_total: 1_000_000,
            max_reflectors: 10_000,
            asn_table: Arc::default(),
            coordinator: Some(CoordinatorConfig::default()),
        }
    }
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self::with_interval(5)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error(transparent)]
    Invalid(#[from] InvalidAnnounce),
    /// A new stream or peer would exceed a configured bound.
    #[error("tracker full: {0}")]
    Full(&'static str),
}

/// One peer as an operator sees it (`GET /v1/streams/{stream}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerRecord {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub role: Role,
    pub degree: u32,
    pub max_degree: u32,
    pub upload_kbps: u32,
    pub http: Option<String>,
    pub name: Option<String>,
    pub counters: serde_json::Value,
    /// Its AS and subnet as the tracker sees them (zero: unknown).
    pub loc: Locality,
    /// Time since its last announce.
    pub age_ms: u64,
    /// The announce interval it was last given.
    pub interval_s: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamDetail {
    #[serde(flatten)]
    pub info: StreamInfo,
    /// The stream's infrastructure budget from the last allocation round,
    /// bit/s (`None`: none).
    pub budget_bps: Option<u64>,
    /// At most [`MAX_LISTED_PEERS`], infrastructure first.
    pub peers: Vec<PeerRecord>,
    /// The reflectors assigned to it in the last round, tier 1 first, with
    /// their parents: the stream's tree.
    pub reflectors: Vec<ReflectorRecord>,
}

/// The tracker's soft state. Every method takes `now`; none reads a clock.
#[derive(Debug)]
pub struct Registry {
    config: TrackerConfig,
    streams: HashMap<String, Swarm>,
    total_peers: usize,
    next_purge: Option<Instant>,
    rng: StdRng,
    coordinator: Option<Coordinator>,
    reflectors: Reflectors,
}

impl Registry {
    /// `seed` drives the tie-breaks and sampling, so tests are reproducible.
    pub fn new(config: TrackerConfig, seed: u64) -> Self {
        Self {
            streams: HashMap::new(),
            total_peers: 0,
            next_purge: None,
            rng: StdRng::seed_from_u64(seed),
            coordinator: config.coordinator.map(|c| Coordinator::new(c, seed)),
            reflectors: Reflectors::default(),
            config,
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.config
    }

    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Peers held, live or not yet purged.
    pub fn peer_count(&self) -> usize {
        self.total_peers
    }

    /// Records `a` as the peer's state at `now` and answers with hints.
    /// `remote` is the address the request came from, if known.
    pub fn announce(
        &mut self,
        mut a: Announce,
        remote: Option<IpAddr>,
        now: Instant,
    ) -> Result<Hints, AnnounceError> {
        a.validate()?;
        a.stream.make_ascii_lowercase();
        let mut want = a.want.min(MAX_WANT) as usize;
        self.maybe_purge(now);

        let loc = subnet_ip(&a.addrs, remote).map_or_else(Locality::default, |ip| {
            Locality::of_ip(ip, self.config.asn_table.lookup(ip))
        });
        let stream = a.stream.clone();
        let me = a.peer_id.clone();
        let role = a.role;
        let coord = usable_coord(a.coord);
        let stretch = cadence::stretch(&a, self.config.settled_factor)
            .min((MAX_INTERVAL_S / self.config.interval_s.max(1)).clamp(1, 255) as u8);
        // An origin bound to every interface is where the tracker saw it.
        a.http = a.http.map(|url| origin_seen_at(url, remote));
        let shape = Shape {
            loc,
            seen_at: remote,
            ttl: self.config.peer_ttl * u32::from(stretch),
            interval_s: self.config.interval_s * u32::from(stretch),
            span_ms: self.config.interval_s.saturating_mul(1000),
        };
        let me_entry = self.record(&stream, &me, a, shape, now)?;
        if stretch > 1 {
            want = want.min(SETTLED_WANT);
        }
        self.rounds(now);

        let swarm = &self.streams[&stream];
        let reflectors = self.reflectors.serving(&stream, swarm, now);
        let budget_bps = match &self.coordinator {
            // Reflectors serve the stream's viewers: its budget is theirs,
            // by the sessions each serves; its seeders only feed them.
            Some(c) if role.is_infra() && reflectors.is_some() => (c.budget(&stream))
                .and_then(|b| self.reflectors.plan().budget_share(&stream, &me, b)),
            Some(c) if role.is_infra() => c.budget_for(&stream, swarm, now),
            _ => None,
        };
        let query = Query {
            peer_id: &me_entry,
            role,
            loc,
            coord,
            seen_at: remote,
            want,
            now,
            reflectors: reflectors.as_ref(),
        };
        let candidates = ranking::candidates(swarm, &query, &mut self.rng);
        let seeders = ranking::fallbacks(swarm, &query, &mut self.rng);
        let reflected = reflectors.is_some();
        Ok(Hints {
            candidates,
            seeders,
            interval_s: self.config.interval_s * u32::from(stretch),
            you: loc,
            // Expired peers count until the next purge: an estimate.
            viewers: swarm.viewers.entries.len().try_into().unwrap_or(u32::MAX),
            budget_bps,
            reflected,
        })
    }

    /// Records a reflector's offer at `now` and answers with what it is to
    /// carry (docs/coordinator.md).
    pub fn reflect(
        &mut self,
        mut a: ReflectorAnnounce,
        now: Instant,
    ) -> Result<Assignments, AnnounceError> {
        a.validate()?;
        for stream in &mut a.carrying {
            stream.make_ascii_lowercase();
        }
        self.maybe_purge(now);
        let me = a.peer_id.clone();
        (self.reflectors).record(a, now, self.config.max_reflectors)?;
        self.rounds(now);
        let budget = |stream: &str| self.coordinator.as_ref()?.budget(stream);
        let streams =
            (self.reflectors).assignments(&me, &self.streams, budget, now, self.config.peer_ttl);
        Ok(Assignments {
            interval_s: self.config.interval_s,
            streams,
        })
    }

    /// Reflectors held, live or not yet purged.
    pub fn reflector_count(&self) -> usize {
        self.reflectors.len()
    }

    /// Live streams, most viewers first.
    pub fn streams(&mut self, now: Instant) -> Vec<StreamInfo> {
        self.purge(now);
        let mut list: Vec<StreamInfo> = (self.streams.iter())
            .map(|(id, swarm)| swarm.info(id, now))
            .collect();
        list.sort_by(|a, b| (b.viewers, &a.stream).cmp(&(a.viewers, &b.stream)));
        list
    }

    /// One live stream with its peers, for operators; `None` if unknown.
    pub fn stream_detail(&mut self, stream: &str, now: Instant) -> Option<StreamDetail> {
        self.purge(now);
        let stream = stream.to_ascii_lowercase();
        let swarm = self.streams.get(&stream)?;
        let peers = (swarm.infra.entries.iter())
            .chain(&swarm.viewers.entries)
            .take(MAX_LISTED_PEERS)
            .map(|p| p.record(now))
            .collect();
        let ttl = self.config.peer_ttl;
        Some(StreamDetail {
            info: swarm.info(&stream, now),
            budget_bps: self.coordinator.as_ref().and_then(|c| c.budget(&stream)),
            peers,
            reflectors: self.reflectors.records(&stream, swarm, now, ttl),
        })
    }

    /// Forgets peers not announced within `peer_ttl`, and streams left empty.
    pub fn purge(&mut self, now: Instant) {
        let ttl = self.config.peer_ttl;
        let mut removed = 0;
        self.streams.retain(|stream, swarm| {
            removed += swarm.infra.retain_live(now) + swarm.viewers.retain_live(now);
            let keep = swarm.len() > 0;
            if !keep {
                tracing::info!(%stream, "stream gone");
            }
            keep
        });
        self.total_peers -= removed;
        self.reflectors.purge(now, ttl);
        self.next_purge = Some(now + Duration::from_secs(self.config.interval_s.into()));
    }

    /// Keeps `a` as the state of peer `me` of `stream`: replaces its entry,
    /// moves it to the other table when its role changed, or adds it within
    /// the configured bounds.
    fn record(
        &mut self,
        stream: &str,
        me: &str,
        a: Announce,
        shape: Shape,
        now: Instant,
    ) -> Result<Arc<str>, AnnounceError> {
        // A re-announce's report covers the time since the one before; a
        // first one counts as one base interval.
        let spanned = |span: Duration| Shape {
            span_ms: span.as_millis().clamp(1, u32::MAX.into()) as u32,
            ..shape
        };
        let role = a.role;
        let new_stream = !self.streams.contains_key(stream);
        if new_stream && self.streams.len() >= self.config.max_streams {
            tracing::warn!(%stream, "refusing new stream: max_streams reached");
            return Err(AnnounceError::Full("too many streams"));
        }
        let swarm = self.streams.entry(stream.to_owned()).or_default();
        let (own, other) = swarm.table_mut(role);
        if let Some(entry) = own.get_mut(me) {
            let span = now.saturating_duration_since(entry.last_seen);
            let id = Arc::clone(&entry.peer_id);
            *entry = PeerEntry::new(a, Arc::clone(&id), spanned(span), now);
            Ok(id)
        } else if other.remove(me) {
            // Same peer, new role: moves between tables, the count is unchanged.
            let id: Arc<str> = me.into();
            own.insert(PeerEntry::new(a, Arc::clone(&id), shape, now));
            Ok(id)
        } else {
            let full = if swarm.len() >= self.config.max_peers_per_stream {
                Some("too many peers in this stream")
            } else if self.total_peers >= self.config.max_peers_total {
                Some("too many peers")
            } else {
                None
            };
            if let Some(why) = full {
                if swarm.len() == 0 {
                    self.streams.remove(stream);
                }
                tracing::warn!(%stream, peer = %me, "refusing peer: {why}");
                return Err(AnnounceError::Full(why));
            }
            let id: Arc<str> = me.into();
            (swarm.table_mut(role).0).insert(PeerEntry::new(a, Arc::clone(&id), shape, now));
            self.total_peers += 1;
            if new_stream {
                tracing::info!(%stream, "new stream");
            }
            tracing::debug!(%stream, peer = %me, ?role, "new peer");
            Ok(id)
        }
    }

    #[cfg(test)]
    pub(super) fn streams_for_test(&self) -> &HashMap<String, Swarm> {
        &self.streams
    }

    /// Runs the coordinator's round and the reflectors' assignment when
    /// due: the budgets split from the same reports the plan is made from.
    fn rounds(&mut self, now: Instant) {
        let interval = Duration::from_secs(self.config.interval_s.into());
        let ttl = self.config.peer_ttl;
        if let Some(c) = &mut self.coordinator {
            c.maybe_round(&self.streams, now, interval);
        }
        (self.reflectors).maybe_assign(&self.streams, now, interval, ttl);
    }

    /// A full purge costs a pass over every peer, so announces run one at most
    /// once per interval; between purges, expired peers are skipped, not served.
    fn maybe_purge(&mut self, now: Instant) {
        if self.next_purge.is_none_or(|at| now >= at) {
            self.purge(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use shoal_mesh::{allocation::ViewerReport, hints::Role};

    use super::*;
    use crate::tracker::fixtures::*;

    #[test]
    fn an_announcer_counts_but_is_never_its_own_candidate() {
        let (mut r, t) = (registry(), Instant::now());
        let first = r.announce(viewer("a", "10.0.0.1", 0), None, t).unwrap();
        assert!(first.candidates.is_empty());
        assert_eq!(first.interval_s, 5);
        assert_eq!(first.viewers, 1, "the announcer counts");
        r.announce(viewer("b", "10.0.0.2", 0), None, t).unwrap();
        let again = r.announce(viewer("a", "10.0.0.1", 0), None, t).unwrap();
        assert_eq!(ids(&again), ["b"]);
        assert_eq!(again.viewers, 2);
        assert_eq!(r.peer_count(), 2, "re-announce updates, never duplicates");
    }

    #[test]
    fn a_role_change_moves_the_peer_between_tables() {
        let (mut r, t) = (registry(), Instant::now());
        r.announce(viewer("x", "10.0.0.2", 0), None, t).unwrap();
        r.announce(peer("x", "10.0.0.2", Role::Reflector, 0, 8), None, t)
            .unwrap();
        assert_eq!(r.peer_count(), 1);
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
        assert_eq!(ids(&hints), ["x"]);
        assert_eq!(hints.seeders.len(), 1);
        assert_eq!(hints.candidates[0].role, Role::Reflector);
    }

    #[test]
    fn peers_and_streams_expire_without_announces() {
        let mut r = registry();
        let ttl = r.config().peer_ttl;
        let t0 = Instant::now();
        r.announce(viewer("old", "10.0.0.2", 0), None, t0).unwrap();
        r.announce(viewer("kept", "10.0.0.3", 0), None, t0).unwrap();
        let t1 = t0 + ttl / 2;
        r.announce(viewer("kept", "10.0.0.3", 0), None, t1).unwrap();

        // Past the TTL, "old" is never served, purged or not yet.
        let t2 = t0 + ttl + Duration::from_millis(1);
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t2).unwrap();
        assert_eq!(ids(&hints), ["kept"]);
        assert_eq!(r.streams(t2)[0].viewers, 2, "kept and me");

        // Nobody left: the stream itself is gone.
        r.purge(t2 + ttl);
        assert_eq!(r.peer_count(), 0);
        assert_eq!(r.stream_count(), 0);
        assert!(r.streams(t2 + ttl).is_empty());
    }

    #[test]
    fn a_full_tracker_refuses_new_streams_and_peers() {
        let config = TrackerConfig {
            max_streams: 1,
            max_peers_per_stream: 2,
            ..TrackerConfig::default()
        };
        let (mut r, t) = (Registry::new(config, 1), Instant::now());
        r.announce(viewer("a", "10.0.0.1", 0), None, t).unwrap();
        r.announce(viewer("b", "10.0.0.2", 0), None, t).unwrap();
        let err = r.announce(viewer("c", "10.0.0.3", 0), None, t);
        assert!(matches!(err, Err(AnnounceError::Full(_))), "{err:?}");
        r.announce(viewer("a", "10.0.0.1", 3), None, t).unwrap();
        let mut other = viewer("a", "10.0.0.1", 0);
        other.stream = stream(2);
        let err = r.announce(other, None, t);
        assert!(matches!(err, Err(AnnounceError::Full(_))), "{err:?}");
        assert_eq!((r.stream_count(), r.peer_count()), (1, 2));

        let config = TrackerConfig {
            max_peers_total: 1,
            ..TrackerConfig::default()
        };
        let mut r = Registry::new(config, 1);
        r.announce(viewer("a", "10.0.0.1", 0), None, t).unwrap();
        let mut other = viewer("b", "10.0.0.1", 0);
        other.stream = stream(2);
        assert!(r.announce(other, None, t).is_err());
        assert_eq!(r.stream_count(), 1, "a refused peer leaves no empty stream");
    }

    /// A settled viewer is asked back later and lives as much longer; a
    /// joining one keeps the base interval and time to live.
    #[test]
    fn a_settled_viewers_interval_and_lifetime_stretch_together() {
        let (mut r, t0) = (registry(), Instant::now());
        let ttl = r.config().peer_ttl;
        let mut settled = viewer("settled", "10.0.0.2", 8);
        settled.report = Some(ViewerReport {
            pieces_due: 50,
            pieces_in_time: 50,
            playing: true,
            ..ViewerReport::default()
        });
        let hints = r.announce(settled, None, t0).unwrap();
        assert_eq!(hints.interval_s, 5 * u32::from(SETTLED_FACTOR));
        let joining = r.announce(viewer("joining", "10.0.0.3", 0), None, t0);
        assert_eq!(joining.unwrap().interval_s, 5);

        let later = t0 + ttl + Duration::from_millis(1);
        let hints = r
            .announce(viewer("me", "10.0.0.1", 0), None, later)
            .unwrap();
        assert_eq!(ids(&hints), ["settled"], "the joining one expired");
        let gone = t0 + ttl * u32::from(SETTLED_FACTOR) + Duration::from_millis(1);
        r.purge(gone);
        assert_eq!(r.peer_count(), 0);
    }

    /// A purge mends the index entry by entry: every survivor is still
    /// found, updated in place, and the expired come back as new peers.
    #[test]
    fn a_purge_keeps_every_survivor_findable() {
        let (mut r, t0) = (registry(), Instant::now());
        let ttl = r.config().peer_ttl;
        for i in 0..20 {
            r.announce(viewer(&format!("p{i}"), "10.0.0.1", 0), None, t0)
                .unwrap();
        }
        let t1 = t0 + ttl / 2;
        for i in (0..20).step_by(3) {
            r.announce(viewer(&format!("p{i}"), "10.0.0.1", 0), None, t1)
                .unwrap();
        }
        r.purge(t0 + ttl + Duration::from_millis(1));
        assert_eq!(r.peer_count(), 7);
        let t2 = t0 + ttl + Duration::from_millis(2);
        for i in 0..20 {
            r.announce(viewer(&format!("p{i}"), "10.0.0.1", 0), None, t2)
                .unwrap();
        }
        assert_eq!(r.peer_count(), 20, "survivors updated, never duplicated");
        let table = &r.streams_for_test()[&stream(1)].viewers;
        for i in 0..20 {
            let id = format!("p{i}");
            assert_eq!(&*table.get(&id).unwrap().peer_id, id.as_str());
        }
    }

    #[test]
    fn stream_ids_are_case_insensitive() {
        let (mut r, t) = (registry(), Instant::now());
        let mut upper = viewer("a", "10.0.0.1", 0);
        upper.stream = "AB".repeat(32);
        r.announce(upper, None, t).unwrap();
        let mut lower = viewer("b", "10.0.0.2", 0);
        lower.stream = "ab".repeat(32);
        assert_eq!(ids(&r.announce(lower, None, t).unwrap()), ["a"]);
        assert_eq!(r.streams(t)[0].stream, "ab".repeat(32));
    }
}
