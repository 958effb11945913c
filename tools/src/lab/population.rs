//! The viewers of a lab run and what every process of the run agrees on
//! about them without talking: who sits in which slot (keys, the [`Book`]),
//! each slot's upload cap and shaping, and the [`Population`] of slots one
//! process runs, with their joins, churn and figures ([`NodeSnap`]).
//!
//! Both the run's main process ([`super::run`]) and its worker processes
//! ([`super::worker`]) drive a `Population`; neither drives the other's.

use std::{
    collections::HashMap,
    net::Ipv4Addr,
    ops::Range,
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::Context;
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use rand::{seq::SliceRandom, Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use shoal_mesh::{
    net::{Shaping, ShapingCounters},
    proto::{Config, Selection, Stats, StreamId},
};
use shoal_node::{Node, NodeConfig};

use super::{
    layout::Layout,
    scenario::{Scenario, UploadSpec},
    system::{Infra, System, Viewer},
    topology::Topology,
};

/// Who sits in which slot, for the shapers' delay lookups.
pub(crate) type Book = Arc<RwLock<HashMap<PeerId, usize>>>;

/// Deterministic key of a slot's `gen`-th occupant.
pub(crate) fn slot_key(seed: u64, slot: usize, gen: u32) -> Keypair {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ ((slot as u64) << 20) ^ u64::from(gen) << 52);
    let mut secret: [u8; 32] = rng.gen();
    Keypair::ed25519_from_bytes(&mut secret).expect("32 bytes make a key")
}

/// Upload cap of each slot, bits/s (`None` for the seeders).
pub(crate) fn upload_caps(sc: &Scenario) -> Vec<Option<u64>> {
    let layout = Layout::of(sc);
    let mut rng = ChaCha8Rng::seed_from_u64(sc.seed ^ 0x5EED_CAFE);
    (0..layout.slots())
        .map(|slot| match &sc.upload {
            _ if !layout.viewer_slots().contains(&slot) => None,
            UploadSpec::Unlimited => None,
            UploadSpec::Fixed { bps } => Some(*bps),
            UploadSpec::Mixed => {
                Some((sc.bitrate_bps as f64 * mixed_upload_factor(rng.gen())) as u64)
            }
        })
        .collect()
}

/// A viewer's upload over the bitrate in the mixed spread, for a uniform
/// draw `x` in [0, 1): about 30 % of viewers below the bitrate, the rest
/// above, as residential uplinks are relative to a 2 Mbps stream.
pub(crate) fn mixed_upload_factor(x: f64) -> f64 {
    match x {
        x if x < 0.15 => 0.5,
        x if x < 0.30 => 0.8,
        x if x < 0.60 => 1.5,
        x if x < 0.85 => 3.0,
        _ => 10.0,
    }
}

/// The last occupant (`gen`) of each viewer slot whose peer id every process
/// of a multi-process run knows in advance: 8 plus three times the
/// replacements a slot expects from churn over the run, which churn (a
/// uniform draw among present viewers) practically never exceeds.
pub(crate) fn known_gens(sc: &Scenario) -> u32 {
    let per_slot = sc.churn_per_min * sc.duration_s / 60.0;
    8 + (3.0 * per_slot).ceil() as u32
}

/// A book of every peer id a run's processes can know without talking: the
/// seeders' keys and each viewer slot's occupants 0..=[`known_gens`].
pub(crate) fn full_book(sc: &Scenario) -> Book {
    let gens = known_gens(sc);
    let layout = Layout::of(sc);
    let mut map = HashMap::with_capacity(layout.slots() * (gens as usize + 1));
    for stream in 0..layout.streams() {
        let slot = layout.seeder_slot(stream);
        map.insert(slot_key(sc.seed, slot, 0).public().to_peer_id(), slot);
    }
    for slot in layout.viewer_slots() {
        for gen in 0..=gens {
            map.insert(slot_key(sc.seed, slot, gen).public().to_peer_id(), slot);
        }
    }
    Arc::new(RwLock::new(map))
}

pub(crate) fn shaping(
    topo: &Arc<Topology>,
    book: &Book,
    slot: usize,
    upload_bps: Option<u64>,
    download_bps: Option<u64>,
) -> Shaping {
    let (topo2, book) = (topo.clone(), book.clone());
    Shaping {
        delay: Arc::new(move |peer: &PeerId| {
            let from = *book.read().ok()?.get(peer)?;
            Some(Duration::from_secs_f64(
                topo2.one_way_ms(from, slot) / 1000.0,
            ))
        }),
        jitter: Duration::from_secs_f64(topo.jitter_ms(slot) / 1000.0),
        upload_bps,
        download_bps,
        counters: Arc::new(ShapingCounters::default()),
        sent_to: None,
    }
}

/// One viewer's figures at one moment: what a worker reports of each of its
/// viewers, and what a [`NodeResult`] is made from.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct NodeSnap {
    pub(crate) slot: usize,
    /// Which occupant of the slot (0 = the first; churn adds one).
    pub(crate) gen: u32,
    /// Empty for client-server viewers.
    pub(crate) peer_id: String,
    pub(crate) joined_at_s: f64,
    pub(crate) left_at_s: Option<f64>,
    pub(crate) stats: Stats,
    pub(crate) neighbors: Vec<String>,
}

/// A viewer slot's life so far.
struct Slot {
    viewer: Option<Viewer>,
    gen: u32,
    joined_at_s: f64,
    upload: Option<u64>,
}

impl Slot {
    fn snapshot(&self, slot: usize, left_at_s: Option<f64>) -> Option<NodeSnap> {
        let v = self.viewer.as_ref()?;
        Some(NodeSnap {
            slot,
            gen: self.gen,
            peer_id: v.peer_id().map(|p| p.to_string()).unwrap_or_default(),
            joined_at_s: self.joined_at_s,
            left_at_s,
            stats: v.stats(),
            neighbors: v.neighbors().iter().map(PeerId::to_string).collect(),
        })
    }
}

/// The viewer slots one process runs (all of them in a single-process run):
/// their joins, their churn and their figures. `infra` is the run's infra
/// side of each stream, by stream, when it lives in this process (baseline
/// viewers need it; a viewer that leaves is accounted with its stream's),
/// empty in a worker.
pub(crate) struct Population {
    system: System,
    sc: Scenario,
    layout: Layout,
    topo: Arc<Topology>,
    book: Book,
    tracker_url: String,
    /// Each stream's id, by stream.
    streams: Vec<StreamId>,
    /// Indexed by slot; only the owned ones are used.
    slots: Vec<Slot>,
    /// This process's viewer slots, ascending: `slot % processes == index`.
    owned: Vec<usize>,
    /// `owned[..joined]` have joined.
    joined: usize,
    churn_acc: f64,
    rng: ChaCha8Rng,
    /// Multi-process runs: occupants the other processes know (see
    /// [`known_gens`]).
    known_gens: Option<u32>,
    /// Every viewer of these slots that left, with its final figures.
    pub(crate) departed: Vec<NodeSnap>,
}

impl Population {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        system: System,
        sc: &Scenario,
        topo: Arc<Topology>,
        book: Book,
        tracker_url: &str,
        streams: Vec<StreamId>,
        index: usize,
        processes: usize,
    ) -> Population {
        let caps = upload_caps(sc);
        let layout = Layout::of(sc);
        Population {
            system,
            sc: sc.clone(),
            owned: owned_slots(layout.viewer_slots(), index, processes),
            layout,
            topo,
            book,
            tracker_url: tracker_url.to_string(),
            streams,
            slots: caps
                .into_iter()
                .map(|upload| Slot {
                    viewer: None,
                    gen: 0,
                    joined_at_s: 0.0,
                    upload,
                })
                .collect(),
            joined: 0,
            // Staggered by 1/K, so that K processes with equal shares leave
            // as many viewers in all as one process would:
            // Σᵢ ⌊x + i/K⌋ = ⌊K·x⌋ (Hermite's identity).
            churn_acc: index as f64 / processes as f64,
            // Index 0's draws are the single-process run's.
            rng: ChaCha8Rng::seed_from_u64(sc.seed ^ 0xC4u64 ^ ((index as u64) << 32)),
            known_gens: (processes > 1).then(|| known_gens(sc)),
            departed: Vec::new(),
        }
    }

    /// Starts the viewers whose time has come: the `k`-th viewer slot (from
    /// 0) joins at `join_over_s × k / nodes`.
    pub(crate) async fn join_due(&mut self, t: f64, infra: &[Infra]) -> anyhow::Result<()> {
        while let Some(&slot) = self.owned.get(self.joined) {
            let k = self.layout.viewer_ordinal(slot);
            if t < self.sc.join_over_s * k as f64 / self.sc.nodes as f64 {
                break;
            }
            self.start_viewer(slot, t, infra).await?;
            self.joined += 1;
        }
        Ok(())
    }

    /// One second of churn: abrupt leaves, each replaced by a fresh viewer
    /// in the same slot. The rate applies to this process's viewers present.
    pub(crate) async fn churn(&mut self, t: f64, infra: &[Infra]) -> anyhow::Result<()> {
        let live: Vec<usize> = self
            .owned
            .iter()
            .copied()
            .filter(|&s| self.slots[s].viewer.is_some())
            .collect();
        self.churn_acc += self.sc.churn_per_min / 60.0 * live.len() as f64;
        while self.churn_acc >= 1.0 && !live.is_empty() {
            self.churn_acc -= 1.0;
            let slot = *live.choose(&mut self.rng).expect("not empty");
            let state = &mut self.slots[slot];
            self.departed.extend(state.snapshot(slot, Some(t)));
            let stream = self.layout.stream_of(slot);
            if let (Some(v), Some(infra)) = (state.viewer.take(), infra.get(stream)) {
                infra.account(&v);
            }
            state.gen += 1;
            self.start_viewer(slot, t, infra).await?;
        }
        Ok(())
    }

    async fn start_viewer(&mut self, slot: usize, t: f64, infra: &[Infra]) -> anyhow::Result<()> {
        let stream = self.layout.stream_of(slot);
        let state = &mut self.slots[slot];
        if let Some(g) = self.known_gens.filter(|&g| state.gen == g + 1) {
            tracing::warn!(
                "slot {slot} was replaced more than {g} times: the worker processes \
                 other than its own do not know its later peer ids, so its links with \
                 them get no emulated delay"
            );
        }
        let key = slot_key(self.sc.seed, slot, state.gen);
        self.book
            .write()
            .expect("lock")
            .insert(key.public().to_peer_id(), slot);
        let shaping = shaping(
            &self.topo,
            &self.book,
            slot,
            state.upload,
            self.sc.download_bps,
        );
        let address = self.topo.address(slot);
        let viewer = if self.system.runs_shoal_engine() {
            let dht = Dht {
                bootstrap: infra.get(stream).and_then(Infra::bootstrap_addr),
                tracker_gone: self.sc.trackers_gone(t),
            };
            let node = start_shoal_viewer(
                dht,
                self.system,
                &self.sc,
                slot,
                state.gen,
                state.upload,
                key,
                shaping,
                address,
                &self.tracker_url,
                self.streams[stream],
            )
            .await?;
            Viewer::Shoal(Box::new(node))
        } else {
            infra
                .get(stream)
                .context("baseline viewers run beside the infra side")?
                .start_baseline_viewer(slot, key, shaping, &self.topo)
                .await?
        };
        state.viewer = Some(viewer);
        state.joined_at_s = t;
        Ok(())
    }

    /// The viewers present now, by slot.
    fn present(&self) -> impl Iterator<Item = (usize, &Slot)> {
        self.owned
            .iter()
            .map(|&s| (s, &self.slots[s]))
            .filter(|(_, state)| state.viewer.is_some())
    }

    pub(crate) fn present_stats(&self) -> Vec<Stats> {
        self.present()
            .filter_map(|(_, s)| s.viewer.as_ref().map(Viewer::stats))
            .collect()
    }

    /// Snapshots of the viewers present now, by slot.
    pub(crate) fn snapshots(&self) -> Vec<NodeSnap> {
        self.present()
            .filter_map(|(slot, s)| s.snapshot(slot, None))
            .collect()
    }

    /// The run is over: snapshots of the viewers present, each accounted
    /// with its stream's infra side.
    pub(crate) fn finish(&self, infra: &[Infra]) -> Vec<NodeSnap> {
        for (slot, s) in self.present() {
            if let Some(infra) = infra.get(self.layout.stream_of(slot)) {
                infra.account(s.viewer.as_ref().expect("present"));
            }
        }
        self.snapshots()
    }
}

/// The viewer slots process `index` of `processes` runs.
fn owned_slots(viewers: Range<usize>, index: usize, processes: usize) -> Vec<usize> {
    viewers.filter(|s| s % processes == index).collect()
}

/// What a lab viewer of a DHT run is given (see [`Scenario::dht`]).
struct Dht {
    /// Its stream's seeder, when this process runs it.
    bootstrap: Option<Multiaddr>,
    /// Every tracker is down for good: the viewer gets none.
    tracker_gone: bool,
}

/// Starts a Shoal (or random-neighbour Shoal) viewer in `slot`, listening
/// on `address` (the slot's, [`Topology::address`]).
#[allow(clippy::too_many_arguments)]
async fn start_shoal_viewer(
    dht: Dht,
    system: System,
    sc: &Scenario,
    slot: usize,
    gen: u32,
    upload: Option<u64>,
    key: Keypair,
    shaping: Shaping,
    address: Ipv4Addr,
    tracker_url: &str,
    stream: StreamId,
) -> anyhow::Result<Node> {
    let tracker_url = if sc.dht && dht.tracker_gone {
        "" // a newcomer with only a bootstrap address
    } else {
        tracker_url
    };
    let mut cfg = NodeConfig::new(tracker_url, stream);
    cfg.dht = sc.dht;
    cfg.bootstrap = dht.bootstrap.into_iter().filter(|_| sc.dht).collect();
    cfg.player = None;
    // Shaped nodes speak TCP only (see `NetConfig::lab`).
    cfg.listen = vec![format!("/ip4/{address}/tcp/0").parse()?];
    cfg.max_degree = sc.max_degree;
    // A viewer sets its upload limit a little under its link, as
    // `--upload-limit` asks of a real user, so its link never queues.
    cfg.upload_limit_bps = upload.map(|b| b * 9 / 10);
    cfg.seed = Some(sc.seed ^ ((slot as u64) << 8) ^ u64::from(gen));
    cfg.keypair = Some(key);
    cfg.shaping = Some(shaping);
    // `tune` is a plain fn, so each selection other than the default
    // needs its own.
    match system.selection() {
        Some(Selection::Random) => {
            cfg.tune = Some(|c: &mut Config| c.selection = Selection::Random)
        }
        Some(Selection::Rtt) => cfg.tune = Some(|c: &mut Config| c.selection = Selection::Rtt),
        _ => {}
    }
    Node::start(cfg)
        .await
        .with_context(|| format!("viewer {slot} failed to start"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_shared_out_evenly_and_the_full_book_knows_them() {
        let sc = Scenario {
            nodes: 7,
            churn_per_min: 0.5,
            duration_s: 120.0,
            ..Scenario::default()
        };
        assert_eq!(known_gens(&sc), 11);
        assert_eq!(owned_slots(1..8, 0, 1), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(owned_slots(1..8, 0, 3), [3, 6]);
        assert_eq!(owned_slots(1..8, 1, 3), [1, 4, 7]);
        assert_eq!(owned_slots(1..8, 2, 3), [2, 5]);
        let book = full_book(&sc);
        let book = book.read().unwrap();
        assert_eq!(book.len(), 1 + 7 * 12);
        assert_eq!(book[&slot_key(sc.seed, 0, 0).public().to_peer_id()], 0);
        assert_eq!(book[&slot_key(sc.seed, 5, 11).public().to_peer_id()], 5);
    }
}
