//! The gossipsub side of a run (see the parent module): the publisher the
//! seeder's pieces go to, and the viewers present for newcomers and a
//! restarted publisher to dial.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError, Weak,
    },
    time::Duration,
};

use anyhow::Context;
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_mesh::{
    net::{Shaping, ShapingCounters},
    proto::{Piece, Stats, StreamId},
};
use shoal_seeder::{Input, PieceHook, SeederConfig};

use crate::lab::{
    baseline::gossipsub::{self, GossipsubError, GossipsubNode, GossipsubOptions, SentLedger},
    scenario::Scenario,
};

/// Nodes a gossipsub viewer dials when it joins: the publisher and random
/// present viewers (the Shoal tracker's hints play this part for Shoal).
pub const GOSSIP_HINTS: usize = 8;

/// The gossipsub side of a run: the publisher and who is there to dial.
#[derive(Debug)]
pub(super) struct Gossip {
    /// One per run, shared by the publisher and every viewer.
    ledger: SentLedger,
    /// Slot 0's shaping with the publisher's own byte counters, kept across
    /// restarts so its `overhead_sent` is cumulative like the ledger's
    /// `payload_sent` (same peer id).
    shaping: Shaping,
    peer_id: PeerId,
    max_connections: u32,
    /// Where the publisher listens (listened), so a restart comes back there.
    addrs: Vec<Multiaddr>,
    publisher: Option<Arc<GossipsubNode>>,
    /// Present viewers by slot (churn replaces a slot's viewer at once, so
    /// the newest entry of each slot is the one present).
    viewers: Mutex<HashMap<usize, (PeerId, Vec<Multiaddr>)>>,
    rng: Mutex<ChaCha8Rng>,
    /// Pieces the publisher's queue had no room for.
    dropped: Arc<AtomicU64>,
}

impl Gossip {
    /// The gossipsub side of a run whose seeder has `key` and `shaping`
    /// (slot 0's).
    pub(super) fn new(sc: &Scenario, key: &Keypair, shaping: &Shaping) -> Gossip {
        // Like for like: the publisher feeds as many viewers directly
        // as the Shoal seeder does.
        let max_degree =
            SeederConfig::new(&sc.name, Input::Synthetic { bits_per_sec: 1 }, key.clone())
                .max_degree;
        Gossip {
            ledger: SentLedger::new(),
            shaping: Shaping {
                counters: Arc::new(ShapingCounters::default()),
                ..shaping.clone()
            },
            peer_id: key.public().to_peer_id(),
            max_connections: u32::try_from(max_degree).unwrap_or(u32::MAX),
            addrs: Vec::new(),
            publisher: None,
            viewers: Mutex::new(HashMap::new()),
            rng: Mutex::new(ChaCha8Rng::seed_from_u64(sc.seed ^ 0x6055_1B5B)),
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Up to `n` random present viewers, leaving `except` out.
    fn pick(&self, n: usize, except: Option<usize>) -> Vec<(PeerId, Vec<Multiaddr>)> {
        let viewers = self.viewers.lock().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = viewers
            .iter()
            .filter(|(slot, _)| Some(**slot) != except)
            .map(|(slot, v)| (*slot, v.clone()))
            .collect();
        drop(viewers);
        // HashMap order is random: sort first so the run's seed decides.
        all.sort_by_key(|(slot, _)| *slot);
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        all.choose_multiple(&mut *rng, n)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The publisher's counters, cumulative over every publisher of the run.
    pub(super) fn stats(&self) -> Stats {
        match &self.publisher {
            Some(p) => p.stats(),
            None => {
                let payload_sent = self.ledger.sent_by(&self.peer_id);
                Stats {
                    payload_sent,
                    overhead_sent: self.shaping.counters.sent().saturating_sub(payload_sent),
                    ..Stats::default()
                }
            }
        }
    }

    /// Starts the publisher unless it runs: at the start and after a
    /// restart's stop.
    pub(super) async fn ensure_publisher(&mut self, key: &Keypair) -> anyhow::Result<()> {
        if self.publisher.is_none() {
            self.start_publisher(key).await?;
        }
        Ok(())
    }

    /// Starts the publisher (again) and dials present viewers.
    async fn start_publisher(&mut self, key: &Keypair) -> anyhow::Result<()> {
        let mut opts = GossipsubOptions::new(&self.ledger);
        opts.shaping = Some(self.shaping.clone());
        opts.max_connections = Some(self.max_connections);
        if !self.addrs.is_empty() {
            opts.listen = self.addrs.clone();
        }
        let mut last_err = None;
        // The old listener may take a moment to be released.
        for _ in 0..50 {
            match gossipsub::start_publisher(key.clone(), opts.clone()).await {
                Ok(p) => {
                    self.addrs = p.addrs();
                    for (peer, addrs) in self.pick(self.max_connections as usize, None) {
                        p.dial(peer, addrs).await.context("publisher dial")?;
                    }
                    self.publisher = Some(Arc::new(p));
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.expect("tried")).context("the gossipsub publisher failed to start")
    }

    /// Forwards each signed piece to the publisher without ever waiting: a
    /// piece the publisher's queue has no room for is dropped and counted.
    pub(super) fn hook(&self) -> PieceHook {
        let publisher: Weak<GossipsubNode> = self
            .publisher
            .as_ref()
            .map_or_else(Weak::new, Arc::downgrade);
        let dropped = self.dropped.clone();
        Arc::new(move |piece: &Piece| {
            let Some(p) = publisher.upgrade() else { return };
            match p.try_publish(piece.clone()) {
                Ok(()) | Err(GossipsubError::Stopped) => {}
                Err(e) => {
                    if dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                        tracing::warn!(
                            seq = piece.header.seq,
                            "gossipsub publisher: {e}; piece dropped"
                        );
                    }
                }
            }
        })
    }

    /// Stops the publisher (a restart brings it back).
    pub(super) fn stop(&mut self) {
        if let Some(p) = self.publisher.take() {
            p.shutdown();
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!("gossipsub publisher: {dropped} pieces dropped (queue full)");
        }
    }

    /// Starts a gossipsub viewer in `slot`: it dials the publisher and up
    /// to [`GOSSIP_HINTS`]` - 1` random present viewers, then counts as
    /// present.
    pub(super) async fn start_viewer(
        &self,
        slot: usize,
        key: Keypair,
        shaping: Shaping,
        stream: StreamId,
    ) -> anyhow::Result<GossipsubNode> {
        let mut dial = vec![(self.peer_id, self.addrs.clone())];
        dial.extend(self.pick(GOSSIP_HINTS - 1, Some(slot)));
        let mut opts = GossipsubOptions::new(&self.ledger);
        opts.shaping = Some(shaping);
        let node = gossipsub::start_viewer(key, stream, self.peer_id, dial, opts)
            .await
            .with_context(|| format!("gossipsub viewer {slot} failed to start"))?;
        self.viewers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(slot, (node.peer_id(), node.addrs()));
        Ok(node)
    }
}
