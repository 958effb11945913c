//! The run's reflectors (`--reflectors N`): in-process `shoal-reflector`s
//! announcing to the lab's tracker, whose coordinator assigns them to
//! streams. Each sits in its own slot ([`Layout::reflector_slots`]), shaped
//! like any slot of the topology (one-way delays, no cap, as the seeders),
//! with a failure domain of its own so that the coordinator's two parents
//! of a tier-2 reflector are always two independent ones.
//!
//! A reflector can be stopped as a process is killed (its host and HTTP
//! origin go; the tracker finds out when its announces stop) and started
//! again with the same identity and, when the ports are free, the same
//! addresses. What it sent over all its lives is infrastructure egress.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use libp2p::{identity::Keypair, Multiaddr};
use shoal_mesh::{
    net::Shaping,
    proto::{Stats, StreamId},
};
use shoal_reflector::{Reflector, ReflectorConfig};

use super::{
    layout::Layout,
    population::{shaping, slot_key, Book},
    result::ReflectorResult,
    topology::Topology,
    upload_split::UploadSplit,
};

/// Every reflector of a run, by index from 0 (slot = first reflector slot
/// + index).
#[derive(Debug)]
pub(crate) struct LabReflectors {
    tracker_url: String,
    all: Vec<LabReflector>,
}

#[derive(Debug)]
struct LabReflector {
    slot: usize,
    key: Keypair,
    shaping: Shaping,
    split: UploadSplit,
    failure_domain: String,
    region: Option<String>,
    running: Option<Reflector>,
    /// Where it listened, so that it comes back at the same place.
    http: Option<SocketAddr>,
    listen: Vec<Multiaddr>,
    /// What its earlier lives sent, per stream.
    past_mesh: BTreeMap<StreamId, Stats>,
    past_http: BTreeMap<StreamId, u64>,
    /// When it was stopped, seconds into the run.
    stopped_at_s: Vec<f64>,
}

/// What the reflectors sent to one stream's nodes.
#[derive(Debug, Default)]
pub(crate) struct StreamEgress {
    /// Each reflector's engine counters for the stream (those that carried it).
    pub mesh: Vec<Stats>,
    pub http: u64,
    /// Of the mesh payload and the HTTP payload, what went to viewers.
    pub to_viewers: u64,
}

impl LabReflectors {
    /// Starts the scenario's reflectors, each in its slot.
    pub(crate) async fn start(
        layout: &Layout,
        seed: u64,
        topo: &Arc<Topology>,
        book: &Book,
        tracker_url: &str,
    ) -> anyhow::Result<LabReflectors> {
        let mut all = Vec::new();
        for (i, slot) in layout.reflector_slots().enumerate() {
            let key = slot_key(seed, slot, 0);
            book.write()
                .expect("lock")
                .insert(key.public().to_peer_id(), slot);
            let mut shaping = shaping(topo, book, slot, None, None);
            let split = UploadSplit::attach(&mut shaping, book, layout.viewer_slots());
            let region = topo.region(slot).map(str::to_string);
            all.push(LabReflector {
                slot,
                key,
                shaping,
                split,
                failure_domain: match &region {
                    Some(r) => format!("{r}-{i}"),
                    None => format!("reflector-{i}"),
                },
                region,
                running: None,
                http: None,
                listen: Vec::new(),
                past_mesh: BTreeMap::new(),
                past_http: BTreeMap::new(),
                stopped_at_s: Vec::new(),
            });
        }
        let mut reflectors = LabReflectors {
            tracker_url: tracker_url.to_string(),
            all,
        };
        for i in 0..reflectors.all.len() {
            reflectors.start_one(i).await?;
        }
        Ok(reflectors)
    }

    /// Starts reflector `i` (again), with its identity and, if it had
    /// them, its addresses.
    pub(crate) async fn start_one(&mut self, i: usize) -> anyhow::Result<()> {
        let r = &mut self.all[i];
        let mut last_err = None;
        // The old sockets may take a moment to be released.
        for _ in 0..50 {
            let mut cfg = ReflectorConfig::new(&self.tracker_url);
            cfg.keypair = r.key.clone();
            cfg.shaping = Some(r.shaping.clone());
            cfg.failure_domain = Some(r.failure_domain.clone());
            cfg.listen = r.listen.clone();
            if let Some(http) = r.http {
                cfg.http = http;
            }
            match Reflector::start(cfg).await {
                Ok(reflector) => {
                    r.http = Some(reflector.http_addr);
                    r.listen = reflector.host.addrs.clone();
                    r.running = Some(reflector);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(last_err.expect("tried")).with_context(|| format!("reflector {i} failed to start"))
    }

    /// Stops reflector `i` as a killed process stops: its counters so far
    /// are kept.
    pub(crate) fn stop(&mut self, i: usize, t: f64) {
        let r = &mut self.all[i];
        if let Some(reflector) = r.running.take() {
            for (stream, stats) in reflector.mesh_totals() {
                r.past_mesh.entry(stream).or_default().merge(&stats);
            }
            for (stream, bytes) in reflector.http_served() {
                *r.past_http.entry(stream).or_default() += bytes;
            }
            reflector.shutdown();
            r.stopped_at_s.push(t);
        }
    }

    /// The running reflector whose streams have the most viewers (the
    /// lowest index among equals), given each stream's id and viewers:
    /// the one whose loss matters most.
    pub(crate) fn most_loaded(&self, streams: &[(StreamId, usize)]) -> Option<usize> {
        let load = |r: &Reflector| -> usize {
            let carried = r.carried();
            (streams.iter())
                .filter(|(id, _)| carried.contains_key(id))
                .map(|(_, n)| n)
                .sum()
        };
        (self.all.iter().enumerate())
            .filter_map(|(i, r)| r.running.as_ref().map(|run| (i, load(run))))
            .max_by(|(i, a), (j, b)| a.cmp(b).then(j.cmp(i)))
            .map(|(i, _)| i)
    }

    /// The mesh counters and HTTP payload of reflector `i`, per stream,
    /// over all its lives.
    fn totals(&self, i: usize) -> (BTreeMap<StreamId, Stats>, BTreeMap<StreamId, u64>) {
        let r = &self.all[i];
        let (mut mesh, mut http) = (r.past_mesh.clone(), r.past_http.clone());
        if let Some(run) = &r.running {
            for (stream, stats) in run.mesh_totals() {
                mesh.entry(stream).or_default().merge(&stats);
            }
            for (stream, bytes) in run.http_served() {
                *http.entry(stream).or_default() += bytes;
            }
        }
        (mesh, http)
    }

    /// Every reflector's engine counters (one entry per reflector and
    /// stream) and their HTTP payload, for the run's summary.
    pub(crate) fn egress(&self) -> (Vec<Stats>, u64) {
        let (mut stats, mut http) = (Vec::new(), 0);
        for i in 0..self.all.len() {
            let (m, h) = self.totals(i);
            stats.extend(m.into_values());
            http += h.values().sum::<u64>();
        }
        (stats, http)
    }

    /// What the reflectors sent for one stream.
    pub(crate) fn stream_egress(&self, stream: StreamId) -> StreamEgress {
        let mut out = StreamEgress::default();
        for (i, r) in self.all.iter().enumerate() {
            let (mesh, http) = self.totals(i);
            let http = http.get(&stream).copied().unwrap_or(0);
            out.http += http;
            out.to_viewers += http;
            if let Some(stats) = mesh.get(&stream) {
                out.to_viewers += r.split.to_viewers(stats.payload_sent);
                out.mesh.push(stats.clone());
            }
        }
        out
    }

    /// Each reflector's figures over a run of `duration_s` seconds;
    /// `streams` are the run's stream ids in mix order.
    pub(crate) fn results(&self, streams: &[StreamId], duration_s: f64) -> Vec<ReflectorResult> {
        let bps = |bytes: u64| bytes as f64 * 8.0 / duration_s.max(1e-9);
        (self.all.iter().enumerate())
            .map(|(i, r)| {
                let (mesh, http) = self.totals(i);
                let mesh_payload: u64 = mesh.values().map(|s| s.payload_sent).sum();
                let http_payload: u64 = http.values().sum();
                ReflectorResult {
                    index: r.slot,
                    peer_id: r.key.public().to_peer_id().to_string(),
                    region: r.region.clone(),
                    failure_domain: r.failure_domain.clone(),
                    streams: (streams.iter().enumerate())
                        .filter(|(_, id)| mesh.contains_key(id))
                        .map(|(s, _)| s)
                        .collect(),
                    mesh_bps: bps(mesh_payload),
                    http_bps: bps(http_payload),
                    to_viewers_bps: bps(r.split.to_viewers(mesh_payload) + http_payload),
                    stopped_at_s: r.stopped_at_s.clone(),
                    running_at_end: r.running.is_some(),
                }
            })
            .collect()
    }

    /// Stops them all (the run is over).
    pub(crate) fn shutdown(&mut self) {
        for r in &mut self.all {
            if let Some(run) = r.running.take() {
                run.shutdown();
            }
        }
    }
}
