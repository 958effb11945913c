//! The systems a lab run can drive, behind one interface: Shoal as it ships,
//! Shoal with random neighbours, libp2p-gossipsub, and client-server HTTP.
//!
//! Every system runs under the same scenario machinery (slots, per-slot
//! shaping, joins, churn, restarts, sampling); only the viewers and the
//! infrastructure side differ:
//!
//! - **shoal / random**: the Shoal seeder (mesh + HTTP origin) and Shoal
//!   viewers found through the tracker. Infra egress = the seeder's mesh
//!   payload plus its HTTP fallback payload.
//! - **gossipsub**: the Shoal seeder is only the *source* (ingest, signing,
//!   HTTP origin); its mesh stays idle because no viewer dials it. Each piece
//!   it signs goes, through [`SeederConfig::on_piece`], to a gossipsub
//!   publisher ([`start_publisher`]) in slot 0, shaped like the
//!   seeder, with `max_connections` = the seeder's `max_degree`. The
//!   publisher's keypair must be the broadcaster key: `start_publisher`
//!   derives the stream id from it and verifies each piece against it, and
//!   viewers count a piece as from infra when it was relayed by the
//!   publisher's peer id. So the idle Shoal mesh node and the publisher share
//!   one peer id (two swarms on different ports; nobody dials the former).
//!   Viewers dial the publisher plus up to [`GOSSIP_HINTS`]` - 1` random
//!   present viewers (the lab's stand-in for tracker hints) and share one
//!   [`SentLedger`] per run. Infra egress = the publisher's stats alone.
//!
//! [`start_publisher`]: super::baseline::gossipsub::start_publisher
//! [`SentLedger`]: super::baseline::gossipsub::SentLedger
//! - **client-server**: the Shoal seeder's HTTP origin serves every viewer
//!   ([`client_server::start_viewer`], RTT = the topology's RTT to slot 0,
//!   the scenario's download cap). Infra egress = one entry: the origin's
//!   payload served over HTTP (`Origin::payload_served`, server side) and
//!   its response overhead as each viewer counted it
//!   (`ClientServerViewer::origin_sent`, taken by [`Infra::account`] when
//!   the viewer leaves or the run ends); the seeder's idle mesh stats are
//!   left out. The payload goes in that entry rather than as
//!   `infra_http_payload` (never both: it would count twice), because
//!   `Summary::overhead` is relative to payload *sent by* infra and
//!   viewers, which excludes `infra_http_payload`; seeder_egress is the
//!   same either way (≈ 1.0).
//!
//! A seeder restart stops and restarts the whole infra side: for gossipsub
//! that includes the publisher, which comes back with the same identity
//! (and address, when it can) and dials random present viewers, as many as
//! its `max_connections`; for client-server the origin comes back at the
//! same HTTP address and the viewers' retries find it.

use std::{
    fmt,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context;
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use shoal_mesh::{
    net::Shaping,
    proto::{Selection, Stats, StreamId},
};
use shoal_node::Node;
use shoal_seeder::{Input, Seeder, SeederConfig};

use super::{
    baseline::{
        client_server::{self, ClientServerViewer},
        gossipsub::GossipsubNode,
    },
    scenario::Scenario,
    topology::Topology,
};

mod gossip;

use gossip::Gossip;

pub use gossip::GOSSIP_HINTS;

/// A system under test. Its name (`Display`, `FromStr`, serde) is the
/// `--system` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    Shoal,
    /// Shoal with neighbours chosen at random (RTT ignored).
    Random,
    /// Shoal with neighbours chosen by RTT alone (no stability, locality,
    /// rate or capacity in the score).
    Rtt,
    Gossipsub,
    ClientServer,
}

impl System {
    pub const ALL: [System; 5] = [
        System::ClientServer,
        System::Gossipsub,
        System::Random,
        System::Rtt,
        System::Shoal,
    ];

    /// Whether its viewers run Shoal's engine (the simulator, worker
    /// processes and Shoal viewers need it); the others are baselines.
    pub fn runs_shoal_engine(self) -> bool {
        self.selection().is_some()
    }

    /// The neighbour selection of a Shoal-engine system; `None` for a
    /// baseline. The one place that says which systems run Shoal's engine.
    pub fn selection(self) -> Option<Selection> {
        match self {
            System::Shoal => Some(Selection::Full),
            System::Rtt => Some(Selection::Rtt),
            System::Random => Some(Selection::Random),
            System::Gossipsub | System::ClientServer => None,
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Shoal => "shoal",
            System::Random => "random",
            System::Rtt => "rtt",
            System::Gossipsub => "gossipsub",
            System::ClientServer => "client-server",
        })
    }
}

impl FromStr for System {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        System::ALL
            .into_iter()
            .find(|sys| sys.to_string() == s)
            .ok_or_else(|| {
                format!("unknown system '{s}': shoal, rtt, random, gossipsub or client-server")
            })
    }
}

/// A running viewer of any system.
#[derive(Debug)]
pub enum Viewer {
    Shoal(Box<Node>),
    Gossip(GossipsubNode),
    Http(ClientServerViewer),
}

impl Viewer {
    pub fn stats(&self) -> Stats {
        match self {
            Viewer::Shoal(n) => n.stats(),
            Viewer::Gossip(n) => n.stats(),
            Viewer::Http(v) => v.stats(),
        }
    }

    pub fn peer_id(&self) -> Option<PeerId> {
        match self {
            Viewer::Shoal(n) => Some(n.net.peer_id),
            Viewer::Gossip(n) => Some(n.peer_id()),
            Viewer::Http(_) => None,
        }
    }

    /// Current neighbours (mesh systems). The gossipsub baseline does not
    /// expose its peers' ids (only their count, in `Stats::neighbors`), so a
    /// gossipsub viewer has none here and is left out of the RTT ratio.
    pub fn neighbors(&self) -> Vec<PeerId> {
        match self {
            Viewer::Shoal(n) => n.net.neighbors(),
            Viewer::Gossip(_) | Viewer::Http(_) => Vec::new(),
        }
    }
}

/// The infrastructure side of a run: the seeder (and its origin), plus the
/// gossipsub publisher for gossipsub.
#[derive(Debug)]
pub struct Infra {
    system: System,
    /// The seeder's name in its announces.
    name: String,
    key: Keypair,
    shaping: Shaping,
    tracker_url: String,
    scenario: Scenario,
    stream: StreamId,
    seeder: Option<Seeder>,
    /// Where the seeder listened, so a restart comes back at the same place.
    http: Option<std::net::SocketAddr>,
    listen: Vec<Multiaddr>,
    /// Egress of seeders that were stopped.
    past: Vec<Stats>,
    past_http: u64,
    /// Client-server: the origin's response overhead (status line, headers,
    /// frame and piece header, 404s, playlists) to each viewer accounted.
    origin_overhead: AtomicU64,
    next_numbers: Option<(u64, u64)>,
    gossip: Option<Gossip>,
    /// Payload bytes the seeder signed, over all its lives.
    published: Arc<AtomicU64>,
}

impl Infra {
    pub async fn start(
        system: System,
        sc: &Scenario,
        name: &str,
        tracker_url: &str,
        key: Keypair,
        shaping: Shaping,
        _topo: Arc<Topology>,
    ) -> anyhow::Result<Infra> {
        let stream = shoal_mesh::proto::Signer::new(&key)
            .context("seeder key")?
            .stream();
        let gossip = (system == System::Gossipsub).then(|| Gossip::new(sc, &key, &shaping));
        let mut infra = Infra {
            system,
            name: name.to_string(),
            key,
            shaping,
            tracker_url: tracker_url.to_string(),
            scenario: sc.clone(),
            stream,
            seeder: None,
            http: None,
            listen: Vec::new(),
            past: Vec::new(),
            past_http: 0,
            origin_overhead: AtomicU64::new(0),
            next_numbers: None,
            gossip,
            published: Arc::default(),
        };
        infra.restart().await?;
        Ok(infra)
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Payload bytes the seeder has signed so far (every copy of the
    /// stream is this many bytes).
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// Starts (again) the seeder, carrying on the stream's numbering (and,
    /// for gossipsub, the publisher it feeds).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let input = Input::Synthetic {
            bits_per_sec: self.scenario.bitrate_bps,
        };
        let mut cfg = SeederConfig::new(&self.name, input, self.key.clone());
        cfg.tracker = Some(self.tracker_url.clone());
        cfg.dht = self.scenario.dht;
        cfg.shaping = Some(self.shaping.clone());
        if let Some(http) = self.http {
            cfg.http = http;
        }
        cfg.listen = self.listen.clone();
        if let Some((seq, segment)) = self.next_numbers {
            cfg.first_seq = seq;
            cfg.first_segment = segment;
        }
        let gossip_hook = match &mut self.gossip {
            Some(g) => {
                g.ensure_publisher(&self.key).await?;
                Some(g.hook())
            }
            None => None,
        };
        let published = self.published.clone();
        cfg.on_piece = Some(Arc::new(move |piece: &shoal_mesh::proto::Piece| {
            published.fetch_add(piece.data.len() as u64, Ordering::Relaxed);
            if let Some(hook) = &gossip_hook {
                hook(piece);
            }
        }));
        let mut last_err = None;
        // The old sockets may take a moment to be released.
        for _ in 0..50 {
            match Seeder::start(cfg.clone()).await {
                Ok(s) => {
                    if !s.ready(Duration::from_secs(20)).await {
                        anyhow::bail!("the seeder published nothing within 20 s");
                    }
                    self.http = Some(s.http_addr);
                    self.listen = s.net.addrs.clone();
                    self.seeder = Some(s);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.expect("tried").into())
    }

    /// The seeder's mesh address as `--bootstrap` takes it (`None` while
    /// it is down).
    pub fn bootstrap_addr(&self) -> Option<Multiaddr> {
        let net = &self.seeder.as_ref()?.net;
        net.addrs.first()?.clone().with_p2p(net.peer_id).ok()
    }

    /// Stops the seeder, and the gossipsub publisher (a restart brings them
    /// back).
    pub fn stop(&mut self) {
        if let Some(s) = self.seeder.take() {
            self.past.push(s.stats());
            self.past_http += s.origin.payload_served();
            self.next_numbers = Some(s.next_numbers());
        }
        if let Some(g) = &mut self.gossip {
            g.stop();
        }
    }

    /// Infrastructure mesh stats and HTTP payload served, over every seeder
    /// (publisher) this run started, counted once (see the module doc).
    pub fn egress(&self) -> (Vec<Stats>, u64) {
        let http = self.past_http
            + self
                .seeder
                .as_ref()
                .map_or(0, |s| s.origin.payload_served());
        match self.system {
            System::Shoal | System::Rtt | System::Random => {
                let mut stats = self.past.clone();
                stats.extend(self.seeder.as_ref().map(Seeder::stats));
                (stats, http)
            }
            System::Gossipsub => {
                let stats = self.gossip.as_ref().map(Gossip::stats);
                (stats.into_iter().collect(), 0)
            }
            // As one infra entry rather than as HTTP payload, so that the
            // summary's `overhead` has the payload it is relative to.
            System::ClientServer => (
                vec![Stats {
                    payload_sent: http,
                    overhead_sent: self.origin_overhead.load(Ordering::Relaxed),
                    ..Stats::default()
                }],
                0,
            ),
        }
    }

    /// Takes a viewer's final figures into the infra side's counters: call
    /// it once per viewer, when it leaves or when the run ends. (Only the
    /// client-server origin's response overhead is counted viewer-side.)
    pub fn account(&self, viewer: &Viewer) {
        if let Viewer::Http(v) = viewer {
            self.origin_overhead
                .fetch_add(v.origin_sent().overhead_sent, Ordering::Relaxed);
        }
    }

    /// Starts a viewer of a baseline system in `slot`.
    pub async fn start_baseline_viewer(
        &self,
        slot: usize,
        key: Keypair,
        shaping: Shaping,
        topo: &Arc<Topology>,
    ) -> anyhow::Result<Viewer> {
        match self.system {
            System::Gossipsub => {
                let g = self.gossip.as_ref().context("no gossipsub publisher")?;
                let node = g.start_viewer(slot, key, shaping, self.stream).await?;
                Ok(Viewer::Gossip(node))
            }
            System::ClientServer => {
                let http = self.http.context("the origin never started")?;
                let rtt = Duration::from_secs_f64(topo.rtt_ms(slot, 0) / 1000.0);
                let viewer = client_server::start_viewer(
                    format!("http://{http}"),
                    self.stream,
                    rtt,
                    self.scenario.download_bps,
                )
                .await
                .with_context(|| format!("client-server viewer {slot} failed to start"))?;
                Ok(Viewer::Http(viewer))
            }
            System::Shoal | System::Rtt | System::Random => {
                anyhow::bail!("{} viewers are not baseline viewers", self.system)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_system_has_one_name_on_the_command_line_and_between_processes() {
        for system in System::ALL {
            let name = system.to_string();
            assert_eq!(name.parse::<System>(), Ok(system));
            let json = serde_json::to_string(&system).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<System>(&json).unwrap(), system);
        }
        let err = "bittorrent".parse::<System>().unwrap_err();
        assert!(err.contains("unknown system 'bittorrent'"), "{err}");
    }

    #[test]
    fn shoal_rtt_and_random_run_shoals_engine_and_the_baselines_do_not() {
        let engine: Vec<System> = System::ALL
            .into_iter()
            .filter(|s| s.runs_shoal_engine())
            .collect();
        assert_eq!(engine, [System::Random, System::Rtt, System::Shoal]);
    }
}
