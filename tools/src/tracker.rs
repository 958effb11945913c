//! `shoal-tracker`: the HTTP/JSON hint service (wire types in [`shoal_mesh::hints`]).
//!
//! Peers announce every `interval_s`; the tracker keeps what they said as soft
//! state for `peer_ttl` and answers each announce with advice: candidate
//! neighbours ranked by what the tracker can see of proximity, and the stream's
//! seeders/reflectors to fall back to. Nothing here is needed for the mesh to
//! keep running, so the tracker favours staying small and bounded over being
//! exact: a peer that stops announcing simply ages out, and a very large swarm
//! is ranked from a random window of [`SCAN_LIMIT`] peers rather than in full.
//!
//! [`Registry`] is that soft state with the clock passed in; the axum handlers
//! around it only parse, lock, and answer.
//!
//! Each announcer's [`Locality`] (AS and /24 or /48) comes from the address
//! the tracker attributes to it and an optional IP → AS table ([`AsnTable`],
//! `--asn-table`); the answer tells the announcer its own (`Hints::you`) and
//! every candidate's, and ranks candidates in its subnet and AS first.
//!
//! Endpoints: `POST /v1/announce` ([`Announce`] → [`Hints`]), `GET /v1/streams`
//! ([`StreamList`]), `GET /v1/streams/{stream}` (operators: the live peers and
//! their counters, [`StreamDetail`]), `GET /healthz`. Errors are JSON
//! [`ErrorBody`]s.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use axum::{
    extract::{rejection::JsonRejection, ConnectInfo, DefaultBodyLimit, Path, State},
    http::{header, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use rand::{rngs::StdRng, seq::IteratorRandom, Rng, SeedableRng};
use serde::Serialize;
use shoal_mesh::hints::{
    is_stream_id, Announce, ErrorBody, Hints, InfraHint, InvalidAnnounce, PeerHint, Role,
    StreamInfo, StreamList, MAX_WANT,
};
use shoal_mesh::proto::{Coord, Locality};
use tower_http::cors::{Any, CorsLayer};

mod asn;

pub use asn::{AsnTable, AsnTableError};

/// Most peers ranked for one announce; larger swarms are sampled, which also
/// spreads newcomers over the swarm instead of piling them on the same few.
pub const SCAN_LIMIT: usize = 4096;
/// Most seeders/reflectors returned in [`Hints::seeders`].
pub const MAX_SEEDER_HINTS: usize = 8;
/// Most peers listed by `GET /v1/streams/{stream}`.
pub const MAX_LISTED_PEERS: usize = 1000;

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// A peer not re-announced within this long is forgotten.
    pub peer_ttl: Duration,
    /// Announce interval advised to peers.
    pub interval_s: u32,
    pub max_body_bytes: usize,
    pub max_peers_per_stream: usize,
    pub max_streams: usize,
    /// Bound on all peers of all streams together.
    pub max_peers_total: usize,
    /// IP → AS numbers for peers' localities (empty: every AS unknown).
    pub asn_table: Arc<AsnTable>,
}

impl TrackerConfig {
    /// Defaults with this announce interval and a TTL of three intervals, so
    /// one or two lost announces do not drop a peer.
    pub fn with_interval(interval_s: u32) -> Self {
        let interval_s = interval_s.max(1);
        Self {
            peer_ttl: Duration::from_secs(3 * u64::from(interval_s)),
            interval_s,
            max_body_bytes: 64 * 1024,
            max_peers_per_stream: 100_000,
            max_streams: 10_000,
            max_peers_total: 1_000_000,
            asn_table: Arc::default(),
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
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamDetail {
    #[serde(flatten)]
    pub info: StreamInfo,
    /// At most [`MAX_LISTED_PEERS`], infrastructure first.
    pub peers: Vec<PeerRecord>,
}

/// The tracker's soft state. Every method takes `now`; none reads a clock.
#[derive(Debug)]
pub struct Registry {
    config: TrackerConfig,
    streams: HashMap<String, Swarm>,
    total_peers: usize,
    next_purge: Option<Instant>,
    rng: StdRng,
}

#[derive(Debug, Default)]
struct Swarm {
    /// Infrastructure is kept apart so it is always found, however large the swarm.
    infra: Table,
    viewers: Table,
}

impl Swarm {
    fn len(&self) -> usize {
        self.infra.entries.len() + self.viewers.entries.len()
    }

    fn table_mut(&mut self, role: Role) -> (&mut Table, &mut Table) {
        if role.is_infra() {
            (&mut self.infra, &mut self.viewers)
        } else {
            (&mut self.viewers, &mut self.infra)
        }
    }

    fn info(&self, stream: &str, now: Instant, ttl: Duration) -> StreamInfo {
        let live = |t: &Table| t.entries.iter().filter(|p| p.is_live(now, ttl)).count();
        let name = self
            .infra
            .entries
            .iter()
            .filter(|p| p.is_live(now, ttl) && p.name.is_some())
            .min_by_key(|p| p.role != Role::Seeder)
            .and_then(|p| p.name.clone());
        StreamInfo {
            stream: stream.to_owned(),
            name,
            viewers: live(&self.viewers).try_into().unwrap_or(u32::MAX),
            seeders: live(&self.infra).try_into().unwrap_or(u32::MAX),
        }
    }
}

/// Peers in a `Vec` (for sampling windows) with an index by peer id.
#[derive(Debug, Default)]
struct Table {
    entries: Vec<PeerEntry>,
    index: HashMap<String, usize>,
}

impl Table {
    fn get_mut(&mut self, peer_id: &str) -> Option<&mut PeerEntry> {
        let i = *self.index.get(peer_id)?;
        Some(&mut self.entries[i])
    }

    fn insert(&mut self, entry: PeerEntry) {
        self.index.insert(entry.peer_id.clone(), self.entries.len());
        self.entries.push(entry);
    }

    fn remove(&mut self, peer_id: &str) -> bool {
        let Some(i) = self.index.remove(peer_id) else {
            return false;
        };
        self.entries.swap_remove(i);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(moved.peer_id.clone(), i);
        }
        true
    }

    /// Drops expired peers; returns how many.
    fn retain_live(&mut self, now: Instant, ttl: Duration) -> usize {
        let before = self.entries.len();
        self.entries.retain(|p| p.is_live(now, ttl));
        let removed = before - self.entries.len();
        if removed > 0 {
            self.index = (self.entries.iter().enumerate())
                .map(|(i, p)| (p.peer_id.clone(), i))
                .collect();
        }
        removed
    }

    /// All entries, or a window of [`SCAN_LIMIT`] from a random start.
    fn window<'a>(&'a self, rng: &mut StdRng) -> impl Iterator<Item = &'a PeerEntry> {
        let len = self.entries.len();
        let (start, n) = if len <= SCAN_LIMIT {
            (0, len)
        } else {
            (rng.gen_range(0..len), SCAN_LIMIT)
        };
        (start..start + n).map(move |i| &self.entries[i % len])
    }
}

#[derive(Debug)]
struct PeerEntry {
    peer_id: String,
    addrs: Vec<String>,
    role: Role,
    degree: u32,
    max_degree: u32,
    upload_kbps: u32,
    http: Option<String>,
    name: Option<String>,
    counters: serde_json::Value,
    loc: Locality,
    /// Network coordinate, when usable.
    coord: Option<Coord>,
    last_seen: Instant,
}

impl PeerEntry {
    fn new(a: Announce, loc: Locality, now: Instant) -> Self {
        Self {
            peer_id: a.peer_id,
            addrs: a.addrs,
            role: a.role,
            degree: a.degree,
            max_degree: a.max_degree,
            upload_kbps: a.upload_kbps,
            http: a.http,
            name: a.name,
            counters: a.counters,
            loc,
            coord: a
                .coord
                .filter(|c| c.is_valid() && c.error < MAX_COORD_ERROR),
            last_seen: now,
        }
    }

    fn is_live(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.last_seen) < ttl
    }

    fn has_free_degree(&self) -> bool {
        self.degree < self.max_degree
    }

    fn record(&self, now: Instant) -> PeerRecord {
        PeerRecord {
            peer_id: self.peer_id.clone(),
            addrs: self.addrs.clone(),
            role: self.role,
            degree: self.degree,
            max_degree: self.max_degree,
            upload_kbps: self.upload_kbps,
            http: self.http.clone(),
            name: self.name.clone(),
            counters: self.counters.clone(),
            loc: self.loc,
            age_ms: now
                .saturating_duration_since(self.last_seen)
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
        }
    }
}

impl Registry {
    /// `seed` drives the tie-breaks and sampling, so tests are reproducible.
    pub fn new(config: TrackerConfig, seed: u64) -> Self {
        Self {
            config,
            streams: HashMap::new(),
            total_peers: 0,
            next_purge: None,
            rng: StdRng::seed_from_u64(seed),
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
        let want = a.want.min(MAX_WANT) as usize;
        self.maybe_purge(now);

        let loc = subnet_ip(&a.addrs, remote).map_or_else(Locality::default, |ip| {
            Locality::of_ip(ip, self.config.asn_table.lookup(ip))
        });
        let stream = a.stream.clone();
        let me = a.peer_id.clone();
        let role = a.role;
        let coord = a
            .coord
            .filter(|c| c.is_valid() && c.error < MAX_COORD_ERROR);
        let new_stream = !self.streams.contains_key(&stream);
        if new_stream && self.streams.len() >= self.config.max_streams {
            tracing::warn!(%stream, "refusing new stream: max_streams reached");
            return Err(AnnounceError::Full("too many streams"));
        }
        let swarm = self.streams.entry(stream.clone()).or_default();
        let (own, other) = swarm.table_mut(role);
        if let Some(entry) = own.get_mut(&me) {
            *entry = PeerEntry::new(a, loc, now);
        } else if other.remove(&me) {
            // Same peer, new role: moves between tables, the count is unchanged.
            own.insert(PeerEntry::new(a, loc, now));
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
                    self.streams.remove(&stream);
                }
                tracing::warn!(%stream, peer = %me, "refusing peer: {why}");
                return Err(AnnounceError::Full(why));
            }
            swarm.table_mut(role).0.insert(PeerEntry::new(a, loc, now));
            self.total_peers += 1;
            if new_stream {
                tracing::info!(%stream, "new stream");
            }
            tracing::debug!(%stream, peer = %me, ?role, "new peer");
        }

        let ttl = self.config.peer_ttl;
        let swarm = &self.streams[&stream];
        let usable = |p: &&PeerEntry| p.peer_id != me && p.is_live(now, ttl);
        // Infra only as a neighbour with room to spare: otherwise it is a fallback.
        let infra = swarm.infra.window(&mut self.rng).filter(usable);
        let candidates = infra.filter(|p| p.has_free_degree() && !p.addrs.is_empty());
        let viewers = swarm.viewers.window(&mut self.rng).filter(usable);
        let candidates = candidates.chain(viewers.filter(|p| !p.addrs.is_empty()));
        let candidates = if role.is_infra() {
            // Infrastructure spreads its pushes over the map, choosing by
            // coordinates itself: it gets a fair sample of the swarm.
            candidates.choose_multiple(&mut self.rng, want)
        } else {
            best(candidates, loc, coord, want, &mut self.rng)
        };
        let candidates = candidates
            .into_iter()
            .map(|p| PeerHint {
                peer_id: p.peer_id.clone(),
                addrs: p.addrs.clone(),
                role: p.role,
                degree: p.degree,
                max_degree: p.max_degree,
                coord: p.coord,
                loc: p.loc,
            })
            .collect();
        let infra = swarm.infra.window(&mut self.rng).filter(usable);
        let seeders = best(infra, loc, coord, MAX_SEEDER_HINTS, &mut self.rng)
            .into_iter()
            .map(|p| InfraHint {
                peer_id: p.peer_id.clone(),
                addrs: p.addrs.clone(),
                http: p.http.clone(),
            })
            .collect();
        Ok(Hints {
            candidates,
            seeders,
            interval_s: self.config.interval_s,
            you: loc,
            // Expired peers count until the next purge: an estimate.
            viewers: swarm.viewers.entries.len().try_into().unwrap_or(u32::MAX),
        })
    }

    /// Live streams, most viewers first.
    pub fn streams(&mut self, now: Instant) -> Vec<StreamInfo> {
        self.purge(now);
        let ttl = self.config.peer_ttl;
        let mut list: Vec<StreamInfo> = (self.streams.iter())
            .map(|(id, swarm)| swarm.info(id, now, ttl))
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
        Some(StreamDetail {
            info: swarm.info(&stream, now, self.config.peer_ttl),
            peers,
        })
    }

    /// Forgets peers not announced within `peer_ttl`, and streams left empty.
    pub fn purge(&mut self, now: Instant) {
        let ttl = self.config.peer_ttl;
        let mut removed = 0;
        self.streams.retain(|stream, swarm| {
            removed += swarm.infra.retain_live(now, ttl) + swarm.viewers.retain_live(now, ttl);
            let keep = swarm.len() > 0;
            if !keep {
                tracing::info!(%stream, "stream gone");
            }
            keep
        });
        self.total_peers -= removed;
        self.next_purge = Some(now + Duration::from_secs(self.config.interval_s.into()));
    }

    /// A full purge costs a pass over every peer, so announces run one at most
    /// once per interval; between purges, expired peers are skipped, not served.
    fn maybe_purge(&mut self, now: Instant) {
        if self.next_purge.is_none_or(|at| now >= at) {
            self.purge(now);
        }
    }
}

/// Coordinates less sure than this are not used for ranking.
const MAX_COORD_ERROR: f32 = 1.0;

/// A predicted RTT to a peer in the announcer's AS counts for this much of
/// itself when ranking: the same network is preferred unless another is
/// clearly closer (a same-AS peer at 40 ms ranks with another AS's at 30 ms).
pub const SAME_AS_RTT_FACTOR: f32 = 0.75;

/// The `n` best of `pool` for an announcer at `me` / `coord`, by key
/// ascending (docs/protocol.md §12.3):
///
/// 1. no free degree last;
/// 2. outside the announcer's /24 (IPv6: /48) last;
/// 3. predicted RTT (network coordinates, when both sides have one) in whole
///    ms, × [`SAME_AS_RTT_FACTOR`] in the announcer's AS; peers without a
///    prediction after every peer with one;
/// 4. outside the announcer's AS last (this orders peers without a
///    prediction);
/// 5. fewer neighbours first;
/// 6. random, to spread load (the registry's seeded rng).
///
/// Unknown localities (zero) never match, so without an AS table step 4
/// is void and steps 2, 3, 5 and 6 are the ranking.
fn best<'a>(
    pool: impl Iterator<Item = &'a PeerEntry>,
    me: Locality,
    coord: Option<Coord>,
    n: usize,
    rng: &mut StdRng,
) -> Vec<&'a PeerEntry> {
    if n == 0 {
        return Vec::new();
    }
    let mut ranked: Vec<_> = pool
        .map(|p| {
            let same_subnet = me.same_subnet(&p.loc);
            let same_as = me.same_as(&p.loc);
            let rtt = match (coord, p.coord) {
                (Some(a), Some(b)) => {
                    let factor = if same_as { SAME_AS_RTT_FACTOR } else { 1.0 };
                    (a.rtt_ms(&b) * factor) as u32
                }
                _ => u32::MAX,
            };
            let key = (
                !p.has_free_degree(),
                !same_subnet,
                rtt,
                !same_as,
                p.degree,
                rng.gen::<u32>(),
            );
            (key, p)
        })
        .collect();
    if ranked.len() > n {
        ranked.select_nth_unstable_by_key(n - 1, |(key, _)| *key);
        ranked.truncate(n);
    }
    ranked.sort_unstable_by_key(|(key, _)| *key);
    ranked.into_iter().map(|(_, p)| p).collect()
}

/// The address a peer's locality is taken from: the one the tracker saw it
/// at when that is public (announced private addresses of two homes can
/// collide), else the first ip4/ip6 address it announced (lab and LAN,
/// where everything is private), else the request's. Never unspecified;
/// IPv4-mapped IPv6 addresses come back as IPv4.
fn subnet_ip(addrs: &[String], remote: Option<IpAddr>) -> Option<IpAddr> {
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
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            let shared = a == 100 && (b & 0xc0) == 64; // 100.64.0.0/10, carrier NAT
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || shared)
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_unique_local()
                || v6.is_unicast_link_local())
        }
    }
}

type Shared = Arc<Mutex<Registry>>;

fn lock(registry: &Shared) -> std::sync::MutexGuard<'_, Registry> {
    // Soft state: after a panic elsewhere, serving what is there beats failing.
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, Json(body)).into_response()
}

/// The tracker's HTTP API, without a listener.
pub fn router(config: TrackerConfig) -> Router {
    let max_body = config.max_body_bytes;
    let registry: Shared = Arc::new(Mutex::new(Registry::new(config, rand::random())));
    // Browsers (dashboards) may read; only peers announce.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET]);
    Router::new()
        .route("/v1/announce", post(announce))
        .route("/v1/streams", get(streams))
        .route("/v1/streams/{stream}", get(stream_detail))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(cors)
        .with_state(registry)
}

async fn announce(
    State(registry): State<Shared>,
    remote: Option<Extension<ConnectInfo<SocketAddr>>>,
    body: Result<Json<Announce>, JsonRejection>,
) -> Response {
    let a = match body {
        Ok(Json(a)) => a,
        Err(rejection) => {
            tracing::debug!(%rejection, "bad announce");
            return error(rejection.status(), rejection.body_text());
        }
    };
    let remote = remote.map(|Extension(ConnectInfo(addr))| addr.ip());
    let result = lock(&registry).announce(a, remote, Instant::now());
    match result {
        Ok(hints) => Json(hints).into_response(),
        Err(AnnounceError::Invalid(e)) => {
            tracing::debug!(error = %e, "invalid announce");
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e @ AnnounceError::Full(_)) => {
            let retry = lock(&registry).config().interval_s.to_string();
            let mut resp = error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            if let Ok(v) = retry.parse() {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
            resp
        }
    }
}

async fn streams(State(registry): State<Shared>) -> Json<StreamList> {
    let streams = lock(&registry).streams(Instant::now());
    Json(StreamList { streams })
}

async fn stream_detail(State(registry): State<Shared>, Path(stream): Path<String>) -> Response {
    if !is_stream_id(&stream) {
        return error(
            StatusCode::BAD_REQUEST,
            InvalidAnnounce::StreamId.to_string(),
        );
    }
    match lock(&registry).stream_detail(&stream, Instant::now()) {
        Some(detail) => Json(detail).into_response(),
        None => error(StatusCode::NOT_FOUND, "no such stream"),
    }
}

/// Serves the tracker on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: TrackerConfig,
) -> std::io::Result<()> {
    serve_with_shutdown(listener, config, std::future::pending()).await
}

/// Serves until `shutdown` completes, then finishes in-flight requests.
pub async fn serve_with_shutdown(
    listener: tokio::net::TcpListener,
    config: TrackerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, interval_s = config.interval_s, "tracker serving");
    }
    let app = router(config).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds `addr` (port 0 for an ephemeral one) and serves in a task: for tests
/// and the lab. Abort the handle to stop.
pub async fn spawn(
    addr: SocketAddr,
    config: TrackerConfig,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = serve(listener, config).await {
            tracing::error!(error = %e, "tracker stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use shoal_mesh::hints::{HintsError, TrackerClient, DEFAULT_WANT};

    use super::*;

    fn stream(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn peer(id: &str, ip: &str, role: Role, degree: u32, max_degree: u32) -> Announce {
        Announce {
            stream: stream(1),
            peer_id: id.into(),
            addrs: vec![format!("/ip4/{ip}/tcp/4001")],
            role,
            degree,
            max_degree,
            upload_kbps: 0,
            http: None,
            name: None,
            want: DEFAULT_WANT,
            counters: serde_json::Value::Null,
            coord: None,
        }
    }

    fn at(x: f32, y: f32) -> Option<Coord> {
        Some(Coord {
            x,
            y,
            height: 1.0,
            error: 0.2,
        })
    }

    #[test]
    fn candidates_rank_by_predicted_rtt() {
        let mut reg = Registry::new(TrackerConfig::default(), 1);
        let now = Instant::now();
        for (id, x) in [("far", 300.0), ("near", 10.0), ("mid", 100.0)] {
            let mut a = peer(id, "10.0.0.1", Role::Viewer, 1, 8);
            a.coord = at(x, 0.0);
            reg.announce(a, None, now).unwrap();
        }
        let unsure = Announce {
            coord: Some(Coord {
                error: 1.4,
                ..at(300.0, 0.0).unwrap()
            }),
            ..peer("me", "10.0.0.1", Role::Viewer, 0, 8)
        };
        let mut me = peer("me", "10.0.0.1", Role::Viewer, 0, 8);
        me.coord = at(0.0, 0.0);
        let hints = reg.announce(me, None, now).unwrap();
        let order: Vec<&str> = hints
            .candidates
            .iter()
            .map(|c| c.peer_id.as_str())
            .collect();
        assert_eq!(order, ["near", "mid", "far"]);
        assert_eq!(hints.candidates[0].coord, at(10.0, 0.0));
        // A coordinate its owner is unsure of is not used to rank.
        assert!(reg.announce(unsure, None, now).is_ok());
    }

    /// A seeder spreads its pushes over the map itself: it is handed a
    /// sample of the swarm, not the viewers closest to it.
    #[test]
    fn infrastructure_gets_a_sample_not_the_nearest() {
        let mut reg = Registry::new(TrackerConfig::default(), 1);
        let now = Instant::now();
        for i in 0..40u8 {
            let mut a = peer(&format!("v{i}"), "10.0.0.1", Role::Viewer, 1, 8);
            // Half near the seeder, half 300 ms away.
            a.coord = at(if i % 2 == 0 { 1.0 } else { 300.0 }, f32::from(i));
            reg.announce(a, None, now).unwrap();
        }
        let mut seeder = peer("seeder", "10.0.0.1", Role::Seeder, 0, 8);
        seeder.coord = at(0.0, 0.0);
        seeder.want = 10;
        let hints = reg.announce(seeder, None, now).unwrap();
        assert_eq!(hints.candidates.len(), 10);
        let far = hints
            .candidates
            .iter()
            .filter(|c| c.coord.is_some_and(|c| c.x > 100.0))
            .count();
        assert!((1..10).contains(&far), "{far} of 10 far");
        // A viewer in the same place gets the nearest.
        let mut me = peer("me", "10.0.0.1", Role::Viewer, 0, 8);
        me.coord = at(0.0, 0.0);
        me.want = 10;
        let hints = reg.announce(me, None, now).unwrap();
        assert!(hints.candidates.iter().all(|c| c.coord.unwrap().x < 100.0));
    }

    fn viewer(id: &str, ip: &str, degree: u32) -> Announce {
        peer(id, ip, Role::Viewer, degree, 8)
    }

    fn ids(hints: &Hints) -> Vec<&str> {
        hints
            .candidates
            .iter()
            .map(|c| c.peer_id.as_str())
            .collect()
    }

    fn registry() -> Registry {
        Registry::new(TrackerConfig::default(), 7)
    }

    #[test]
    fn announce_excludes_self() {
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
    fn ranking_free_degree_then_subnet_then_degree() {
        let (mut r, t) = (registry(), Instant::now());
        r.announce(viewer("full-near", "10.0.0.9", 8), None, t)
            .unwrap();
        r.announce(viewer("far-2", "10.9.9.9", 2), None, t).unwrap();
        r.announce(viewer("near-5", "10.0.0.5", 5), None, t)
            .unwrap();
        r.announce(viewer("near-1", "10.0.0.4", 1), None, t)
            .unwrap();
        r.announce(viewer("far-0", "192.168.1.1", 0), None, t)
            .unwrap();
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
        assert_eq!(
            ids(&hints),
            ["near-1", "near-5", "far-0", "far-2", "full-near"]
        );
    }

    fn with_asn_table(text: &str) -> Registry {
        let config = TrackerConfig {
            asn_table: Arc::new(AsnTable::parse(text, "test").unwrap()),
            ..TrackerConfig::default()
        };
        Registry::new(config, 7)
    }

    fn loc(ip: &str, asn: u32) -> Locality {
        Locality::of_ip(ip.parse().unwrap(), asn)
    }

    #[test]
    fn answers_localities_and_ranks_subnet_then_as() {
        let mut r = with_asn_table("10.0.0.0/16,64500\n10.1.0.0/16,64501\n198.51.100.0/24,64502");
        let t = Instant::now();
        r.announce(viewer("other-as", "10.1.0.5", 0), None, t)
            .unwrap();
        r.announce(viewer("no-as", "192.0.2.1", 1), None, t)
            .unwrap();
        r.announce(viewer("same-as", "10.0.7.5", 5), None, t)
            .unwrap();
        r.announce(viewer("same-24", "10.0.0.9", 7), None, t)
            .unwrap();
        r.announce(viewer("same-24-full", "10.0.0.8", 8), None, t)
            .unwrap();
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
        assert_eq!(hints.you, loc("10.0.0.1", 64500));
        // Free degree first; then the /24, then the AS, then fewer neighbours.
        assert_eq!(
            ids(&hints),
            ["same-24", "same-as", "other-as", "no-as", "same-24-full"]
        );
        let loc_of = |id: &str| {
            hints
                .candidates
                .iter()
                .find(|c| c.peer_id == id)
                .unwrap()
                .loc
        };
        assert_eq!(loc_of("same-as"), loc("10.0.7.5", 64500));
        assert_eq!(loc_of("other-as"), loc("10.1.0.5", 64501));
        assert_eq!(loc_of("no-as"), loc("192.0.2.1", 0), "not in the table");

        // The AS (like the subnet) is that of a public request address.
        let hints = r
            .announce(
                viewer("me", "10.0.0.1", 0),
                Some("198.51.100.7".parse().unwrap()),
                t,
            )
            .unwrap();
        assert_eq!(hints.you, loc("198.51.100.7", 64502));
        let detail = r.stream_detail(&stream(1), t).unwrap();
        let me = detail.peers.iter().find(|p| p.peer_id == "me").unwrap();
        assert_eq!(me.loc, loc("198.51.100.7", 64502));

        // No address at all: unknown.
        let mut nowhere = viewer("nowhere", "0.0.0.0", 0);
        nowhere.addrs.clear();
        let hints = r.announce(nowhere, None, t).unwrap();
        assert_eq!(hints.you, Locality::default());
    }

    #[test]
    fn same_as_discounts_predicted_rtt() {
        let mut r = with_asn_table("10.0.0.0/16,64500\n10.1.0.0/16,64501");
        let t = Instant::now();
        // Predicted RTT = distance + both heights (1 + 1).
        for (id, ip, x) in [
            ("far-same-as", "10.0.9.1", 38.0),  // 40 ms × 0.75 = 30
            ("near-other", "10.1.0.1", 26.0),   // 28 ms
            ("mid-other", "10.1.0.2", 33.0),    // 35 ms
            ("same-24-far", "10.0.0.2", 200.0), // the /24 comes first
        ] {
            let mut a = viewer(id, ip, 0);
            a.coord = at(x, 0.0);
            r.announce(a, None, t).unwrap();
        }
        // No coordinate: after every predicted peer, its AS first.
        r.announce(viewer("unknown-other", "10.1.0.3", 0), None, t)
            .unwrap();
        r.announce(viewer("unknown-same-as", "10.0.9.9", 0), None, t)
            .unwrap();
        let mut me = viewer("me", "10.0.0.1", 0);
        me.coord = at(0.0, 0.0);
        let hints = r.announce(me, None, t).unwrap();
        assert_eq!(
            ids(&hints),
            [
                "same-24-far",
                "near-other",
                "far-same-as",
                "mid-other",
                "unknown-same-as",
                "unknown-other"
            ]
        );
    }

    #[test]
    fn ranking_is_reproducible_from_the_seed() {
        let answer = |seed| {
            let mut r = Registry::new(TrackerConfig::default(), seed);
            let t = Instant::now();
            for i in 0..40 {
                r.announce(viewer(&format!("p{i}"), "10.0.0.1", 0), None, t)
                    .unwrap();
            }
            let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
            ids(&hints)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(answer(3), answer(3));
        assert_ne!(answer(3), answer(4), "ties are broken at random");
    }

    #[test]
    fn ipv6_uses_the_48_and_public_remote_wins() {
        let v6 = |id: &str, ip: &str| {
            let mut a = viewer(id, "0.0.0.0", 0);
            a.addrs = vec![format!("/ip6/{ip}/udp/1/quic-v1")];
            a
        };
        let (mut r, t) = (registry(), Instant::now());
        r.announce(v6("far", "2001:db8:2::1"), None, t).unwrap();
        r.announce(v6("near", "2001:db8:1:ffff::1"), None, t)
            .unwrap();
        let hints = r.announce(v6("me", "2001:db8:1::1"), None, t).unwrap();
        assert_eq!(ids(&hints), ["near", "far"]);

        // Two homes announcing the same private /24 are told apart by the
        // public addresses they connect from.
        let (mut r, t) = (registry(), Instant::now());
        let home = |id| viewer(id, "192.168.1.2", 0);
        let remote = |ip: &str| Some(ip.parse().unwrap());
        r.announce(home("other-home"), remote("198.51.100.7"), t)
            .unwrap();
        r.announce(viewer("same-isp", "10.0.0.1", 0), remote("203.0.113.99"), t)
            .unwrap();
        let hints = r.announce(home("me"), remote("203.0.113.5"), t).unwrap();
        assert_eq!(ids(&hints), ["same-isp", "other-home"]);
    }

    #[test]
    fn multiaddr_ip_parsing() {
        let ip = |s| multiaddr_ip(s).map(|ip| ip.to_string());
        assert_eq!(ip("/ip4/127.0.0.1/tcp/4001").as_deref(), Some("127.0.0.1"));
        assert_eq!(ip("/ip6/::1/udp/9/quic-v1").as_deref(), Some("::1"));
        assert_eq!(ip("/dns4/example.com/tcp/1"), None);
        assert_eq!(ip("/ip4/300.1.1.1/tcp/1"), None);
        assert_eq!(ip("/ip4"), None);
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

    #[test]
    fn never_more_than_want() {
        let (mut r, t) = (registry(), Instant::now());
        for i in 0..300 {
            r.announce(viewer(&format!("p{i}"), "10.0.0.1", 0), None, t)
                .unwrap();
        }
        for (want, got) in [(0, 0), (1, 1), (10, 10), (150, 150), (5000, 200)] {
            let mut me = viewer("me", "10.0.0.1", 0);
            me.want = want;
            let hints = r.announce(me, None, t).unwrap();
            assert_eq!(hints.candidates.len(), got, "want {want}");
        }
    }

    #[test]
    fn large_swarm_is_sampled_within_want() {
        let (mut r, t) = (registry(), Instant::now());
        for i in 0..SCAN_LIMIT + 500 {
            r.announce(viewer(&format!("p{i}"), "10.0.0.1", 1), None, t)
                .unwrap();
        }
        let mut me = viewer("p0", "10.0.0.1", 0);
        me.want = MAX_WANT;
        let hints = r.announce(me, None, t).unwrap();
        let mut got = ids(&hints);
        assert_eq!(got.len(), MAX_WANT as usize);
        assert!(!got.contains(&"p0"));
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), MAX_WANT as usize, "no duplicates");
    }

    #[test]
    fn seeders_listed_and_infra_candidates_need_free_degree() {
        let (mut r, t) = (registry(), Instant::now());
        let mut seeder = peer("seed", "10.0.0.2", Role::Seeder, 4, 4);
        seeder.http = Some("http://10.0.0.2:8080".into());
        r.announce(seeder, None, t).unwrap();
        r.announce(peer("refl", "10.0.0.3", Role::Reflector, 1, 16), None, t)
            .unwrap();
        r.announce(viewer("v", "10.0.0.4", 0), None, t).unwrap();
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
        let mut cands = ids(&hints);
        cands.sort_unstable();
        assert_eq!(cands, ["refl", "v"], "a full seeder is no candidate");
        let mut infra: Vec<_> = hints.seeders.iter().map(|s| s.peer_id.as_str()).collect();
        infra.sort_unstable();
        assert_eq!(infra, ["refl", "seed"]);
        let seed = hints.seeders.iter().find(|s| s.peer_id == "seed").unwrap();
        assert_eq!(seed.http.as_deref(), Some("http://10.0.0.2:8080"));

        // A seeder never gets itself back.
        let hints = r
            .announce(peer("seed", "10.0.0.2", Role::Seeder, 4, 4), None, t)
            .unwrap();
        assert!(hints.seeders.iter().all(|s| s.peer_id != "seed"));
        assert!(!ids(&hints).contains(&"seed"));
    }

    #[test]
    fn role_change_moves_the_peer() {
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
    fn soft_state_expires() {
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
    fn bounded_state() {
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

    // ---- over HTTP ----

    async fn start(config: TrackerConfig) -> (String, tokio::task::JoinHandle<()>) {
        let (addr, task) = spawn(([127, 0, 0, 1], 0).into(), config).await.unwrap();
        (format!("http://{addr}"), task)
    }

    fn raw_client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    async fn post_raw(
        base: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, String) {
        let mut req = raw_client().post(format!("{base}/v1/announce")).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn http_announce_and_streams() {
        let (base, task) = start(TrackerConfig::default()).await;
        let client = TrackerClient::new(&base).unwrap();
        let mut seeder = peer("seed", "127.0.0.1", Role::Seeder, 0, 8);
        seeder.name = Some("demo".into());
        seeder.http = Some("http://127.0.0.1:8080".into());
        seeder.counters = json!({ "pieces_sent": 12 });
        let hints = client.announce(&seeder).await.unwrap();
        assert!(hints.candidates.is_empty() && hints.seeders.is_empty());
        client
            .announce(&viewer("v1", "127.0.0.1", 0))
            .await
            .unwrap();
        let hints = client
            .announce(&viewer("v2", "127.0.0.1", 0))
            .await
            .unwrap();
        let mut cands = ids(&hints);
        cands.sort_unstable();
        assert_eq!(cands, ["seed", "v1"]);
        assert_eq!(hints.seeders[0].peer_id, "seed");
        assert_eq!(hints.interval_s, 5);

        let streams = client.streams().await.unwrap();
        let expected = StreamInfo {
            stream: stream(1),
            name: Some("demo".into()),
            viewers: 2,
            seeders: 1,
        };
        assert_eq!(streams, [expected]);

        let detail: serde_json::Value = raw_client()
            .get(format!("{base}/v1/streams/{}", stream(1)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(detail["name"], "demo");
        assert_eq!(detail["peers"][0]["counters"]["pieces_sent"], 12);
        assert_eq!(detail["peers"].as_array().unwrap().len(), 3);
        task.abort();
    }

    #[tokio::test]
    async fn http_bad_input_is_refused() {
        let (base, task) = start(TrackerConfig {
            max_body_bytes: 1024,
            ..TrackerConfig::default()
        })
        .await;
        let json_ct = Some("application/json");
        let (status, body) = post_raw(&base, json_ct, "{not json").await;
        assert_eq!(status, 400, "{body}");
        assert!(serde_json::from_str::<ErrorBody>(&body).is_ok(), "{body}");
        let (status, _) = post_raw(&base, json_ct, r#"{"stream": 5}"#).await;
        assert_eq!(status, 422);
        let valid = serde_json::to_string(&viewer("a", "127.0.0.1", 0)).unwrap();
        let (status, _) = post_raw(&base, Some("text/plain"), valid.clone()).await;
        assert_eq!(status, 415);
        let (status, _) = post_raw(&base, None, valid).await;
        assert_eq!(status, 415);

        let mut big = viewer("a", "127.0.0.1", 0);
        big.counters = json!({ "pad": "x".repeat(2000) });
        let (status, _) = post_raw(&base, json_ct, serde_json::to_vec(&big).unwrap()).await;
        assert_eq!(status, 413);

        let mut bad = viewer("a", "127.0.0.1", 0);
        bad.stream = "not-hex".into();
        let (status, body) = post_raw(&base, json_ct, serde_json::to_vec(&bad).unwrap()).await;
        assert_eq!(status, 400);
        let err: ErrorBody = serde_json::from_str(&body).unwrap();
        assert!(err.error.contains("stream id"), "{}", err.error);
        let client = TrackerClient::new(&base).unwrap();
        match client.announce(&bad).await {
            Err(HintsError::Status {
                status: 400,
                message,
            }) => {
                assert!(message.contains("stream id"), "{message}")
            }
            other => panic!("expected a 400, got {other:?}"),
        }

        for (path, want) in [
            ("/nope", 404),
            ("/v1/announce/x", 404),
            ("/v1/streams/zz", 400),
            (&format!("/v1/streams/{}", stream(9)), 404),
            ("/v1/announce", 405),
        ] {
            let resp = raw_client()
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), want, "{path}");
        }

        // Still serving after all that.
        let resp = raw_client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
        task.abort();
    }

    #[tokio::test]
    async fn http_full_tracker_answers_503() {
        let (base, task) = start(TrackerConfig {
            max_streams: 1,
            ..TrackerConfig::default()
        })
        .await;
        let client = TrackerClient::new(&base).unwrap();
        client.announce(&viewer("a", "127.0.0.1", 0)).await.unwrap();
        let mut other = viewer("a", "127.0.0.1", 0);
        other.stream = stream(2);
        let resp = raw_client()
            .post(format!("{base}/v1/announce"))
            .json(&other)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 503);
        assert_eq!(resp.headers()["retry-after"], "5");
        task.abort();
    }

    #[tokio::test]
    async fn client_reports_unreachable_tracker() {
        // Bind then drop, so the port is (very likely) closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = TrackerClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client.streams().await.unwrap_err();
        assert!(matches!(err, HintsError::Transport(_)), "{err:?}");
    }
}
