//! The broadcaster's side of Shoal: ingest → cut → sign → mesh + HTTP origin.
//!
//! [`Seeder::start`] runs every part in the current tokio runtime, so the lab
//! and the tests start seeders in-process; `main.rs` is a thin CLI over it.

mod bitrate;
pub mod ingest;
pub mod keyfile;
pub mod origin;

use std::{fmt, net::SocketAddr, sync::Arc, time::Duration};

use libp2p::{identity::Keypair, Multiaddr};
use shoal_mesh::{
    hints,
    net::{self, now_ms, Announcer, Command, NetConfig, NetHandle},
    proto::{piece::flags, Config, Piece, Signer, Stats, StreamId, MAX_PIECE_BYTES},
    shards::Trackers,
};
use tokio::{
    net::TcpListener,
    sync::{mpsc, watch},
    task::JoinHandle,
};

use bitrate::BitrateMeter;
pub use ingest::Input;
use origin::Origin;

/// Called with every piece the seeder signs (see [`SeederConfig::on_piece`]).
pub type PieceHook = Arc<dyn Fn(&Piece) + Send + Sync>;

/// How to run a seeder.
#[derive(Clone)]
pub struct SeederConfig {
    pub name: String,
    pub input: Input,
    /// Tracker base URLs, comma-separated, sharded by stream (`None`:
    /// viewers must be pointed at the seeder).
    pub tracker: Option<String>,
    /// HTTP origin address (port 0: any).
    pub http: SocketAddr,
    /// Mesh listen addresses.
    pub listen: Vec<Multiaddr>,
    /// NAT traversal (off on loopback; the CLI turns it on).
    pub traversal: net::Traversal,
    /// Provides the stream in Shoal's DHT, where viewers without a
    /// tracker find it (docs/discovery.md).
    pub dht: bool,
    /// DHT hosts to join through: multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Broadcaster key: it *is* the stream id.
    pub key: Keypair,
    /// Viewers the seeder feeds directly over the mesh.
    pub max_degree: usize,
    pub segment_ms: u32,
    /// First piece and segment number: a restarted seeder carries on where
    /// the stream was, so viewers see one stream.
    pub first_seq: u64,
    pub first_segment: u64,
    /// Emulated links (lab only).
    pub shaping: Option<net::Shaping>,
    /// Target piece size: smaller pieces cross each hop sooner (less lag),
    /// larger ones carry less header per byte (less overhead).
    pub piece_bytes: usize,
    /// Called with each piece once it is signed and in the HTTP origin,
    /// before the mesh publishes it (the lab feeds baselines with it). It
    /// runs in the sign loop: it must return at once (never block or wait).
    pub on_piece: Option<PieceHook>,
}

impl fmt::Debug for SeederConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeederConfig")
            .field("name", &self.name)
            .field("input", &self.input)
            .field("tracker", &self.tracker)
            .field("http", &self.http)
            .field("listen", &self.listen)
            .field("traversal", &self.traversal)
            .field("dht", &self.dht)
            .field("bootstrap", &self.bootstrap)
            .field("key", &self.key)
            .field("max_degree", &self.max_degree)
            .field("segment_ms", &self.segment_ms)
            .field("first_seq", &self.first_seq)
            .field("first_segment", &self.first_segment)
            .field("shaping", &self.shaping)
            .field("piece_bytes", &self.piece_bytes)
            .field("on_piece", &self.on_piece.as_ref().map(|_| "Fn(&Piece)"))
            .finish()
    }
}

/// Default piece size: 174 TS packets, about 32 KiB.
pub const PIECE_BYTES: usize = 174 * 188;

impl SeederConfig {
    pub fn new(name: &str, input: Input, key: Keypair) -> Self {
        SeederConfig {
            name: name.to_string(),
            input,
            tracker: None,
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            listen: Vec::new(),
            traversal: net::Traversal::Off,
            dht: false,
            bootstrap: Vec::new(),
            key,
            max_degree: 8,
            segment_ms: 1_000,
            first_seq: 0,
            first_segment: 0,
            shaping: None,
            piece_bytes: PIECE_BYTES,
            on_piece: None,
        }
    }
}

/// Why a seeder could not start.
#[derive(Debug, thiserror::Error)]
pub enum SeederError {
    #[error("the broadcaster key must be ed25519")]
    Key,
    #[error(transparent)]
    Net(#[from] net::NetError),
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tracker(#[from] hints::HintsError),
}

/// A running seeder. Dropping it stops everything.
#[derive(Debug)]
pub struct Seeder {
    pub stream: StreamId,
    pub http_addr: SocketAddr,
    pub net: NetHandle,
    pub origin: Origin,
    ingest: JoinHandle<Result<(), ingest::IngestError>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Seeder {
    pub async fn start(cfg: SeederConfig) -> Result<Seeder, SeederError> {
        let signer = Signer::new(&cfg.key).map_err(|_| SeederError::Key)?;
        let stream = signer.stream();
        let mut engine = Config::seeder(stream);
        engine.max_degree = cfg.max_degree;
        let mut net_cfg = match cfg.shaping.clone() {
            Some(shaping) => NetConfig::lab(cfg.key.clone(), engine, shaping),
            None => NetConfig::local(cfg.key.clone(), engine),
        };
        if !cfg.listen.is_empty() {
            net_cfg.host.listen = cfg.listen.clone();
        }
        net_cfg.host.traversal = cfg.traversal;
        net_cfg.host.dht = cfg.dht;
        net_cfg.host.bootstrap = cfg.bootstrap.clone();
        // The HTTP origin first: identify tells peers where it is.
        let listener = TcpListener::bind(cfg.http)
            .await
            .map_err(|source| SeederError::Http {
                addr: cfg.http,
                source,
            })?;
        let http_addr = listener.local_addr().map_err(|source| SeederError::Http {
            addr: cfg.http,
            source,
        })?;
        net_cfg.host.advert = net::Advert {
            role: hints::Role::Seeder,
            origin: Some(format!("http://{http_addr}")),
        };
        let window_ms = net_cfg.engine.window_ms;
        let net = net::start(net_cfg, None).await?;

        let origin = Origin::new(stream, cfg.name.clone(), window_ms);
        origin.set_budget_gate(net.budget_gate());
        let router = origin.router();
        let mut tasks = vec![tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("HTTP origin stopped: {e}");
            }
        })];

        let (bitrate_tx, bitrate_rx) = watch::channel(0u32);
        if let Some(url) = &cfg.tracker {
            let announcer = Announcer {
                trackers: Trackers::parse(url)?,
                stream,
                role: hints::Role::Seeder,
                max_degree: cfg.max_degree as u32,
                upload_kbps: 0,
                http: Some(format!("http://{http_addr}")),
                name: Some(cfg.name.clone()),
                // Viewers to spread its pushes over (see `engine::spread`).
                use_candidates: true,
                bitrate_kbps: Some(bitrate_rx),
            };
            tasks.push(announcer.spawn(&net));
        }

        let (cuts_tx, mut cuts) = mpsc::channel(64);
        let ingest = tokio::spawn(ingest::run(cfg.input, cfg.segment_ms, cuts_tx));
        let commands = net.commander();
        let origin_feed = origin.clone();
        let (first_seq, first_segment) = (cfg.first_seq, cfg.first_segment);
        let on_piece = cfg.on_piece.clone();
        // Whole TS packets per piece, at least one.
        let piece_bytes = (cfg.piece_bytes / 188).clamp(1, MAX_PIECE_BYTES / 188) * 188;
        tasks.push(tokio::spawn(async move {
            let mut seq = first_seq;
            let mut bitrate = BitrateMeter::default();
            while let Some(cut) = cuts.recv().await {
                for piece_cut in split(cut, piece_bytes) {
                    let mut f = 0;
                    if piece_cut.first {
                        f |= flags::FIRST;
                    }
                    if piece_cut.last {
                        f |= flags::LAST;
                    }
                    let segment = first_segment + piece_cut.segment;
                    let (duration, data) = (piece_cut.duration_ms, piece_cut.data);
                    let piece = match signer.sign(seq, segment, f, now_ms(), duration, data) {
                        Ok(p) => p,
                        Err(e) => {
                            tracing::error!("cannot sign piece {seq}: {e}");
                            continue;
                        }
                    };
                    seq += 1;
                    if let Some(kbps) = bitrate.add(piece.header.produced_at, piece.data.len()) {
                        bitrate_tx.send_replace(kbps);
                    }
                    origin_feed.insert(&piece);
                    if let Some(hook) = &on_piece {
                        hook(&piece);
                    }
                    if commands.send(Command::Publish(piece)).await.is_err() {
                        return;
                    }
                }
            }
        }));
        Ok(Seeder {
            stream,
            http_addr,
            net,
            origin,
            ingest,
            tasks,
        })
    }

    /// The next piece and segment numbers, for a seeder that takes over.
    pub fn next_numbers(&self) -> (u64, u64) {
        self.origin.next_numbers()
    }

    /// Mesh stats of the seeder's engine.
    pub fn stats(&self) -> Stats {
        self.net.stats()
    }

    /// Waits until the input ends or fails (clip and synthetic never end).
    pub async fn wait(&mut self) -> Result<(), String> {
        match (&mut self.ingest).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("{:#}", anyhow_chain(&e))),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Waits up to `timeout` for the first piece to be published.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let until = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < until {
            if self.net.stats().newest_seq.is_some() {
                return true;
            }
            if self.ingest.is_finished() {
                return false; // the input failed or ended: see `wait`
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

/// Splits a cut into pieces of at most `max` bytes; the first keeps the
/// segment-start flag, the last the segment-end flag and duration.
fn split(cut: ingest::Cut, max: usize) -> Vec<ingest::Cut> {
    if cut.data.len() <= max {
        return vec![cut];
    }
    let n = cut.data.len().div_ceil(max);
    (0..n)
        .map(|i| ingest::Cut {
            data: cut.data.slice(i * max..((i + 1) * max).min(cut.data.len())),
            segment: cut.segment,
            first: cut.first && i == 0,
            last: cut.last && i == n - 1,
            duration_ms: if i == n - 1 { cut.duration_ms } else { 0 },
        })
        .collect()
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

impl Drop for Seeder {
    fn drop(&mut self) {
        self.ingest.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn split_keeps_flags_at_the_ends() {
        let cut = ingest::Cut {
            data: Bytes::from(vec![1u8; 1000]),
            segment: 4,
            first: true,
            last: true,
            duration_ms: 1000,
        };
        let parts = split(cut, 376);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts.iter().map(|p| p.data.len()).sum::<usize>(), 1000);
        assert!(parts[0].first && !parts[1].first && !parts[2].first);
        assert!(!parts[0].last && !parts[1].last && parts[2].last);
        assert_eq!(parts[2].duration_ms, 1000);
        assert_eq!(parts[0].duration_ms, 0);
        assert!(parts.iter().all(|p| p.segment == 4));
    }
}
