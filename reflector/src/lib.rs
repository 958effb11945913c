//! `shoal-reflector`: infrastructure that carries whatever streams the
//! coordinator assigns it. For each it takes full copies of every piece
//! from two or more parents (seeders or other reflectors), keeps the first
//! valid copy, and serves viewers and downstream reflectors over the mesh
//! and over HTTP (docs/coordinator.md, docs/protocol.md §7.7, §12.8).

mod carried;
pub mod http;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use libp2p::{identity::Keypair, Multiaddr};
use shoal_mesh::{
    hints::{Assignments, HintsError, ReflectorAnnounce},
    net::{self, Host, HostConfig, NetError, Shaping},
    proto::{Stats, StreamId},
    shards::Trackers,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use carried::{upload_kbps, Carried, Setting};
use http::Origins;

/// Downstream sessions a reflector holds over all its streams, unless told.
pub const DEFAULT_FAN_OUT: u32 = 64;

/// How to run a reflector.
#[derive(Debug)]
pub struct ReflectorConfig {
    /// Tracker base URLs, comma-separated: each carried stream announces
    /// to its shard, and the first that answers assigns the streams.
    pub tracker: String,
    pub keypair: Keypair,
    /// Mesh listen addresses; empty: loopback TCP and QUIC.
    pub listen: Vec<Multiaddr>,
    /// NAT traversal (off on loopback; the CLI turns it on).
    pub traversal: net::Traversal,
    /// Provides the streams it carries in Shoal's DHT (docs/discovery.md).
    pub dht: bool,
    /// DHT hosts to join through: multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// HTTP origin address.
    pub http: SocketAddr,
    /// Upload limit over all streams, bit/s (`None`: unlimited).
    pub upload_limit_bps: Option<u64>,
    /// Downstream sessions (viewers and reflectors), over all streams.
    pub fan_out: u32,
    /// Its site or rack, so that the coordinator gives its children
    /// parents in different domains.
    pub failure_domain: Option<String>,
    /// Lab network emulation.
    pub shaping: Option<Shaping>,
}

impl ReflectorConfig {
    pub fn new(tracker: &str) -> Self {
        ReflectorConfig {
            tracker: tracker.to_string(),
            keypair: Keypair::generate_ed25519(),
            listen: Vec::new(),
            traversal: net::Traversal::Off,
            dht: false,
            bootstrap: Vec::new(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            upload_limit_bps: None,
            fan_out: DEFAULT_FAN_OUT,
            failure_domain: None,
            shaping: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReflectorError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Tracker(#[from] HintsError),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running reflector.
#[derive(Debug)]
pub struct Reflector {
    pub host: Host,
    pub http_addr: SocketAddr,
    ledger: Arc<Mutex<Ledger>>,
    origins: Origins,
    tasks: Vec<JoinHandle<()>>,
}

/// The engines' counters of every stream the reflector carries or carried.
#[derive(Debug, Default)]
struct Ledger {
    /// Streams carried now: their lanes' stats as they change.
    carried: BTreeMap<StreamId, watch::Receiver<Stats>>,
    /// The final stats of lanes since left, merged per stream.
    left: BTreeMap<StreamId, Stats>,
}

impl Reflector {
    pub async fn start(cfg: ReflectorConfig) -> Result<Reflector, ReflectorError> {
        let client = Trackers::parse(&cfg.tracker)?;
        let sessions = cfg.fan_out as usize;
        let mut host_cfg = match cfg.shaping.clone() {
            Some(shaping) => HostConfig::lab(cfg.keypair.clone(), sessions, shaping),
            None => HostConfig::local(cfg.keypair.clone(), sessions),
        };
        if !cfg.listen.is_empty() {
            host_cfg.listen = cfg.listen.clone();
        }
        host_cfg.traversal = cfg.traversal;
        host_cfg.dht = cfg.dht;
        host_cfg.bootstrap = cfg.bootstrap.clone();
        // The HTTP origin first: identify tells peers where it is.
        let listener =
            TcpListener::bind(cfg.http)
                .await
                .map_err(|source| ReflectorError::Http {
                    addr: cfg.http,
                    source,
                })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| ReflectorError::Http {
                addr: cfg.http,
                source,
            })?;
        host_cfg.advert = net::Advert {
            role: shoal_mesh::hints::Role::Reflector,
            origin: Some(format!("http://{http_addr}")),
        };
        let host = net::start_host(host_cfg).await?;
        let origins = Origins::default();
        let router = origins.router();
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("HTTP origin stopped: {e}");
            }
        });
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let control = Control {
            cfg,
            client,
            host: host.clone(),
            http: format!("http://{http_addr}"),
            origins: origins.clone(),
            streams: BTreeMap::new(),
            ledger: ledger.clone(),
        };
        let control = tokio::spawn(control.run());
        Ok(Reflector {
            host,
            http_addr,
            ledger,
            origins,
            tasks: vec![server, control],
        })
    }

    /// The streams carried now, with each one's latest stats.
    pub fn carried(&self) -> BTreeMap<StreamId, Stats> {
        let ledger = self.ledger();
        (ledger.carried.iter())
            .map(|(s, stats)| (*s, stats.borrow().clone()))
            .collect()
    }

    /// Every stream carried over the reflector's life, with its mesh
    /// counters summed over every time it was carried (what it sent is
    /// infrastructure egress).
    pub fn mesh_totals(&self) -> BTreeMap<StreamId, Stats> {
        let ledger = self.ledger();
        let mut totals = ledger.left.clone();
        for (stream, stats) in &ledger.carried {
            totals.entry(*stream).or_default().merge(&stats.borrow());
        }
        totals
    }

    /// Payload bytes its HTTP origin served per stream, over its life.
    pub fn http_served(&self) -> BTreeMap<StreamId, u64> {
        self.origins.payload_served()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the host and the control loop still run.
    pub fn is_running(&self) -> bool {
        self.host.is_running() && self.tasks.iter().all(|t| !t.is_finished())
    }

    /// Stops everything: streams, HTTP origin, announces.
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.host.shutdown();
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Asks the coordinator, every interval, what to carry, and makes it so.
struct Control {
    cfg: ReflectorConfig,
    client: Trackers,
    host: Host,
    http: String,
    origins: Origins,
    streams: BTreeMap<StreamId, Carried>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Control {
    async fn run(mut self) {
        let mut warned = false;
        loop {
            let interval = match self.client.reflect(&self.announce()).await {
                Ok(assignments) => {
                    if warned {
                        tracing::info!("tracker reachable again");
                        warned = false;
                    }
                    let interval = assignments.interval_s.clamp(1, 300);
                    self.apply(assignments).await;
                    Duration::from_secs(u64::from(interval))
                }
                Err(e) => {
                    // Carries on with what it has: the tracker is advice.
                    if !warned {
                        tracing::warn!("tracker unreachable (streams carried on): {e}");
                        warned = true;
                    }
                    Duration::from_secs(2)
                }
            };
            if !self.host.is_running() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn announce(&self) -> ReflectorAnnounce {
        ReflectorAnnounce {
            peer_id: self.host.peer_id.to_string(),
            addrs: self.host.addrs.iter().map(|a| a.to_string()).collect(),
            http: Some(self.http.clone()),
            fan_out: self.cfg.fan_out,
            upload_kbps: upload_kbps(self.cfg.upload_limit_bps),
            carrying: self.streams.keys().map(|s| s.to_string()).collect(),
            failure_domain: self.cfg.failure_domain.clone(),
        }
    }

    /// Joins the streams newly assigned, updates the others' parents and
    /// leaves the streams no longer assigned.
    async fn apply(&mut self, assignments: Assignments) {
        let mut assigned = BTreeMap::new();
        for a in assignments.streams {
            match a.stream.parse::<StreamId>() {
                Ok(stream) => {
                    assigned.insert(stream, a);
                }
                Err(_) => {
                    tracing::warn!(stream = a.stream, "assignment of a bad stream id: skipped")
                }
            }
        }
        let gone: Vec<StreamId> = self
            .streams
            .keys()
            .filter(|s| !assigned.contains_key(s))
            .copied()
            .collect();
        for stream in gone {
            tracing::info!(%stream, "stream no longer assigned: left");
            if let Some(carried) = self.streams.remove(&stream) {
                let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
                ledger.carried.remove(&stream);
                ledger
                    .left
                    .entry(stream)
                    .or_default()
                    .merge(&carried.stats());
            }
            self.origins.remove(&stream);
        }
        for (stream, a) in &assigned {
            let result = match self.streams.get_mut(stream) {
                Some(carried) => carried.update(a).await,
                None => {
                    let at = Setting {
                        host: &self.host,
                        client: &self.client,
                        origins: &self.origins,
                        http: &self.http,
                        upload_limit_bps: self.cfg.upload_limit_bps,
                    };
                    match Carried::start(*stream, a, &at).await {
                        Ok(carried) => {
                            tracing::info!(%stream, max_degree = a.max_degree, "stream assigned: carried");
                            (self.ledger.lock().unwrap_or_else(PoisonError::into_inner))
                                .carried
                                .insert(*stream, carried.stats_watch());
                            self.streams.insert(*stream, carried);
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = result {
                tracing::warn!(%stream, "cannot carry the stream: {e}");
            }
        }
    }
}
