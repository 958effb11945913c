//! Baseline: the stream flooded over real libp2p-gossipsub.
//!
//! A publisher (the seeder role) publishes each signed piece as it is cut,
//! as one gossipsub message whose data is the piece's Shoal frame
//! (`wire::encode(&Message::Piece(p))`, the same bytes as on Shoal's mesh).
//! Viewers subscribe to the stream's one topic (`/shoal/gossipsub/<stream
//! id>`), verify every piece with [`StreamKey::verify`] before gossipsub may
//! forward it (`validate_messages`, then Accept/Reject), and feed a
//! [`Meter`]. Nodes find each other only by dialling the addresses they are
//! given (the lab hands each viewer a few earlier nodes and the publisher,
//! like tracker hints). Every node runs on the lab's shaped transport
//! ([`shaped_tcp_transport`]), so gossipsub sees the same emulated delays
//! and caps as Shoal.
//!
//! Gossipsub as configured: its defaults (mesh D = 6, D_lo = 5, D_hi = 12,
//! gossip D_lazy = 6, heartbeat 1 s, IDONTWANT for messages over 1000 B,
//! `ValidationMode::Strict`, `MessageAuthenticity::Signed`), except
//! - `max_transmit_size` = [`MAX_TRANSMIT`] (96 KiB ≥ a 64 KiB piece frame
//!   plus the gossipsub envelope);
//! - message id = the piece seq (8 bytes, big endian), so copies of a piece
//!   are recognised as duplicates whoever relays them (a frame that does not
//!   decode gets a hash of its bytes and is rejected by validation);
//! - `validate_messages`: a piece is relayed only once verified, as Shoal
//!   does;
//! - `flood_publish` off by default ([`GossipsubOptions::flood_publish`]):
//!   with it on, the publisher sends every piece to *every* subscribed peer
//!   it is connected to, which makes it a client-server origin rather than a
//!   mesh member. Off, it publishes to its mesh (D peers), like the Shoal
//!   seeder feeding its `max_degree` neighbours;
//! - connections never idle out (gossip needs non-mesh peers too), bounded
//!   by [`GossipsubOptions::max_connections`]; set the publisher's to the
//!   Shoal seeder's `max_degree` for a like-for-like comparison.
//!
//! # The counters, exactly
//!
//! Payload = piece data bytes (`Piece::data`), as for Shoal. Gossipsub hands
//! the application only the first copy of each message, so the counters are
//! taken one layer lower, in a wrapper around the gossipsub behaviour that
//! sees every RPC a connection delivers (`HandlerEvent::Message`), before
//! gossipsub drops duplicates:
//!
//! - `payload_from_peers` / `payload_from_infra`, `lag_ms`, `pieces_due`,
//!   `pieces_on_time`, `startup_ms`, `bad_pieces`: the [`Meter`], fed with
//!   the first copy gossipsub delivers once it verifies; it is from infra
//!   when its `propagation_source` (the peer that relayed it to us) is the
//!   publisher. The start is the first `FIRST` piece received (see
//!   [`Meter`]).
//! - `payload_duplicate`: the payload of every further copy of a piece this
//!   node received — a message on the stream's topic, in an RPC from any
//!   peer, whose seq this node had already received (or published). These
//!   are the copies gossipsub discards as duplicates: eager-push overlap in
//!   the mesh, and IWANT answers that arrive after the piece did.
//! - `payload_sent`: the payload of every message on the topic that
//!   *another node received from this one*, first copies and duplicates
//!   alike. Each receiver credits the sending peer in a [`SentLedger`]
//!   shared by all nodes of a run, so this is exact, not an estimate; the
//!   only copies missed are those lost in flight (connection closed), which
//!   then count as overhead.
//! - `overhead_sent`: every byte this node wrote to its substreams (the
//!   shaper's `ShapingCounters::sent`: gossipsub RPCs — message envelopes
//!   with from/seqno/topic/signature/key, GRAFT/PRUNE/IHAVE/IWANT/IDONTWANT,
//!   subscriptions — the Shoal frame header, piece header and signature
//!   inside each message, and multistream-select negotiation) minus
//!   `payload_sent`. Like Shoal's count, it excludes yamux, noise and TCP
//!   framing, which the shaper does not see either.
//! - `neighbors`: the node's gossipsub mesh peers on the topic now;
//!   `neighbor_rtt_ms` is not measured (0).
//!
//! So `duplicate`, `overhead` and `offload` mean for gossipsub what they
//! mean for Shoal, and [`Summary::new`] takes the viewers' stats with the
//! publisher's as infra (`infra_http_payload` = 0).
//!
//! Caveat: with message id = seq, a forged message with a valid gossipsub
//! envelope but a bad piece occupies that seq in every receiver's duplicate
//! cache until it expires. The lab has no forgers; a deployment would id
//! messages by a hash of their content.
//!
//! [`Meter`]: super::meter::Meter
//! [`Summary::new`]: shoal_mesh::proto::Summary::new

mod counting;
mod message;
mod task;

use std::{sync::Arc, time::Duration};

use libp2p::{
    connection_limits::{self, ConnectionLimits},
    gossipsub::{self, MessageAuthenticity, ValidationMode},
    identity::Keypair,
    swarm::NetworkBehaviour,
    Multiaddr, PeerId, Swarm,
};
use shoal_mesh::{
    net::{now_ms, shaped_tcp_transport, Shaping, ShapingCounters},
    proto::{Piece, PieceError, Signer, Stats, StreamId, StreamKey},
};
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

pub use self::counting::SentLedger;
use self::{
    counting::Counting,
    message::{message_id, topic},
    task::{dial_peer, Node},
};
use super::meter::{Meter, PLAYOUT_DELAY_MS};

/// Largest gossipsub RPC, bytes: a 64 KiB piece frame plus its envelope.
pub const MAX_TRANSMIT: usize = 96 * 1024;
/// Commands waiting for a node's task.
const COMMAND_QUEUE: usize = 64;
/// Connections a viewer keeps at most, unless told otherwise.
const VIEWER_MAX_CONNECTIONS: u32 = 64;

/// How to run a gossipsub node.
#[derive(Clone, Debug)]
pub struct GossipsubOptions {
    /// TCP multiaddrs to listen on (the shaped transport is TCP only).
    pub listen: Vec<Multiaddr>,
    /// Emulated links (lab); `None`: loopback as is, bytes still counted.
    pub shaping: Option<Shaping>,
    /// Established connections, at most (incoming + outgoing).
    pub max_connections: Option<u32>,
    /// gossipsub's `flood_publish` (its default is on; see the module doc).
    pub flood_publish: bool,
    /// The run's ledger of payload sent (share one among all nodes).
    pub ledger: SentLedger,
}

impl GossipsubOptions {
    /// Loopback TCP on an ephemeral port, no shaping, flood publish off,
    /// at most 64 connections, crediting `ledger`.
    pub fn new(ledger: &SentLedger) -> Self {
        GossipsubOptions {
            listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")],
            shaping: None,
            max_connections: Some(VIEWER_MAX_CONNECTIONS),
            flood_publish: false,
            ledger: ledger.clone(),
        }
    }
}

/// Why a gossipsub node could not start or was refused a command.
#[derive(Debug, thiserror::Error)]
pub enum GossipsubError {
    #[error("the publisher key must be ed25519")]
    Key,
    #[error("invalid stream key: {0}")]
    StreamKey(#[from] PieceError),
    #[error("cannot build the transport: {0}")]
    Transport(String),
    #[error("invalid gossipsub configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: Multiaddr, reason: String },
    #[error("the node has stopped")]
    Stopped,
    #[error("the command queue is full")]
    Busy,
}

#[derive(Debug)]
enum Command {
    Publish(Piece),
    Dial(PeerId, Vec<Multiaddr>),
}

/// A running gossipsub node (publisher or viewer). Dropping it stops it.
#[derive(Debug)]
pub struct GossipsubNode {
    peer_id: PeerId,
    addrs: Vec<Multiaddr>,
    stream: StreamId,
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Stats>,
    counters: Arc<ShapingCounters>,
    ledger: SentLedger,
    task: JoinHandle<()>,
}

impl GossipsubNode {
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Addresses the node listens on.
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.addrs.clone()
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Publishes a piece (publisher). Waits while the command queue is full.
    pub async fn publish(&self, piece: Piece) -> Result<(), GossipsubError> {
        self.commands
            .send(Command::Publish(piece))
            .await
            .map_err(|_| GossipsubError::Stopped)
    }

    /// Publishes a piece without waiting; fails when the queue is full.
    pub fn try_publish(&self, piece: Piece) -> Result<(), GossipsubError> {
        self.commands
            .try_send(Command::Publish(piece))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GossipsubError::Busy,
                mpsc::error::TrySendError::Closed(_) => GossipsubError::Stopped,
            })
    }

    /// Dials one more peer.
    pub async fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), GossipsubError> {
        self.commands
            .send(Command::Dial(peer, addrs))
            .await
            .map_err(|_| GossipsubError::Stopped)
    }

    /// The counters, with the definitions of the module doc. Meter counters
    /// are at most 100 ms old; bytes sent are read now.
    pub fn stats(&self) -> Stats {
        let mut s = self.snapshot.borrow().clone();
        s.payload_sent = self.ledger.sent_by(&self.peer_id);
        s.overhead_sent = self.counters.sent().saturating_sub(s.payload_sent);
        s
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    /// Stops the node: its connections close.
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for GossipsubNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the publisher: `keypair` is both its libp2p identity and the
/// broadcaster key, so the stream id is its ed25519 public key.
pub async fn start_publisher(
    keypair: Keypair,
    opts: GossipsubOptions,
) -> Result<GossipsubNode, GossipsubError> {
    let stream = Signer::new(&keypair)
        .map_err(|_| GossipsubError::Key)?
        .stream();
    let peer_id = keypair.public().to_peer_id();
    start(keypair, stream, peer_id, None, Vec::new(), opts).await
}

/// Starts a viewer of `stream`, published by `publisher`, dialling `dial`
/// (peer and addresses) at once.
pub async fn start_viewer(
    keypair: Keypair,
    stream: StreamId,
    publisher: PeerId,
    dial: Vec<(PeerId, Vec<Multiaddr>)>,
    opts: GossipsubOptions,
) -> Result<GossipsubNode, GossipsubError> {
    let meter = Meter::new(now_ms(), PLAYOUT_DELAY_MS);
    start(keypair, stream, publisher, Some(meter), dial, opts).await
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    gossip: Counting,
}
/// Builds the swarm, listens, dials, and spawns the node's task.
async fn start(
    keypair: Keypair,
    stream: StreamId,
    publisher: PeerId,
    meter: Option<Meter>,
    dial: Vec<(PeerId, Vec<Multiaddr>)>,
    opts: GossipsubOptions,
) -> Result<GossipsubNode, GossipsubError> {
    let key = StreamKey::new(stream)?;
    let shaping = opts.shaping.clone().unwrap_or_default();
    let counters = shaping.counters.clone();
    let transport = shaped_tcp_transport(&keypair, shaping)
        .map_err(|e| GossipsubError::Transport(e.to_string()))?;

    let config = gossipsub::ConfigBuilder::default()
        .max_transmit_size(MAX_TRANSMIT)
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .flood_publish(opts.flood_publish)
        .message_id_fn(message_id)
        .build()
        .map_err(|e| GossipsubError::Config(e.to_string()))?;
    let mut inner = gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), config)
        .map_err(|e| GossipsubError::Config(e.to_string()))?;
    let topic = topic(stream);
    inner
        .subscribe(&topic)
        .map_err(|e| GossipsubError::Config(e.to_string()))?;
    let limits = ConnectionLimits::default()
        .with_max_established(opts.max_connections)
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(64))
        .with_max_pending_outgoing(Some(64));
    let behaviour = Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        gossip: Counting::new(inner, topic.hash(), stream, opts.ledger.clone()),
    };
    let peer_id = keypair.public().to_peer_id();
    let mut swarm = Swarm::new(
        transport,
        behaviour,
        peer_id,
        // Gossip reaches non-mesh peers too: keep every connection.
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(24 * 3600)),
    );

    let addrs = shoal_mesh::net::listen_all(&mut swarm, &opts.listen)
        .await
        .map_err(|(addr, reason)| GossipsubError::Listen { addr, reason })?;
    for (peer, peer_addrs) in dial {
        dial_peer(&mut swarm, peer, peer_addrs);
    }

    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (snapshot_tx, snapshot) = watch::channel(Stats::default());
    let task =
        tokio::spawn(Node::new(swarm, key, publisher, topic, meter, snapshot_tx).run(commands_rx));
    Ok(GossipsubNode {
        peer_id,
        addrs,
        stream,
        commands,
        snapshot,
        counters,
        ledger: opts.ledger,
        task,
    })
}

#[cfg(test)]
#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rand::RngCore;
    use shoal_mesh::proto::piece::flags;

    use super::*;

    const PIECE_BYTES: usize = 16 * 1024;

    /// Publisher + 5 viewers on loopback, 4 pieces/s of 16 KiB for 8 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn gossipsub_delivers_to_every_viewer() {
        tokio::time::timeout(Duration::from_secs(60), run_gossipsub())
            .await
            .expect("the gossipsub run timed out");
    }

    async fn run_gossipsub() {
        let ledger = SentLedger::new();
        let key = Keypair::generate_ed25519();
        let signer = Signer::new(&key).unwrap();
        let mut popts = GossipsubOptions::new(&ledger);
        // The publisher feeds three viewers directly; the others depend on
        // their peers (as the Shoal seeder's degree cap makes them).
        popts.max_connections = Some(3);
        let publisher = start_publisher(key, popts).await.unwrap();
        let pub_id = publisher.peer_id();
        assert_eq!(publisher.stream(), signer.stream());

        let mut viewers: Vec<GossipsubNode> = Vec::new();
        for i in 0..5usize {
            let mut dial = vec![(pub_id, publisher.addrs())];
            for v in &viewers[i.saturating_sub(2)..i] {
                dial.push((v.peer_id(), v.addrs()));
            }
            let v = start_viewer(
                Keypair::generate_ed25519(),
                signer.stream(),
                pub_id,
                dial,
                GossipsubOptions::new(&ledger),
            )
            .await
            .unwrap();
            viewers.push(v);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Let subscriptions spread and meshes form.
        tokio::time::sleep(Duration::from_millis(1500)).await;

        let mut tick = tokio::time::interval(Duration::from_millis(250));
        for seq in 0..32u64 {
            tick.tick().await;
            let mut data = vec![0u8; PIECE_BYTES];
            rand::thread_rng().fill_bytes(&mut data);
            let mut f = 0;
            match seq % 4 {
                0 => f |= flags::FIRST,
                3 => f |= flags::LAST,
                _ => {}
            }
            let duration = if seq % 4 == 3 { 1_000 } else { 0 };
            let piece = signer
                .sign(seq, seq / 4, f, now_ms(), duration, Bytes::from(data))
                .unwrap();
            publisher.publish(piece).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;

        let stats: Vec<Stats> = viewers.iter().map(GossipsubNode::stats).collect();
        let infra = publisher.stats();
        for (i, s) in stats.iter().enumerate() {
            println!("viewer {i}: {}", s.report());
        }
        println!("publisher: {}", infra.report());
        let mut all = Stats::default();
        for (i, s) in stats.iter().enumerate() {
            assert!(s.startup_ms.is_some(), "viewer {i} never started");
            assert!(s.pieces_due >= 10, "viewer {i}: {} due", s.pieces_due);
            let c = s.continuity().unwrap();
            assert!(c >= 0.95, "viewer {i}: continuity {c}");
            assert_eq!(s.bad_pieces, 0);
            assert!(s.neighbors >= 1, "viewer {i} has no mesh peers");
            all.merge(s);
        }
        assert!(all.payload_from_peers > 0, "no payload from peers");
        assert!(all.payload_from_infra > 0, "no payload from the publisher");
        // Every copy received was sent by someone, and credited to them.
        let sent: u64 = stats.iter().map(|s| s.payload_sent).sum::<u64>() + infra.payload_sent;
        assert_eq!(
            sent,
            all.payload_received() + all.payload_duplicate + infra.payload_duplicate
        );
        assert!(infra.payload_sent >= 32 * PIECE_BYTES as u64);
        assert!(infra.overhead_sent > 0);
        let summary = shoal_mesh::proto::Summary::new(&stats, &[infra], 0);
        println!("summary: {summary:?}");
        assert!(summary.offload > 0.0 && summary.offload < 1.0);
        assert!(summary.overhead > 0.0 && summary.overhead < 1.0);
    }
}
