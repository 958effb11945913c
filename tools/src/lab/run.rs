//! `shoal-lab run`: N real nodes on loopback under an emulated network.
//!
//! Latency and capacity are emulated inside each node's driver (the kernel
//! has no netem): every connection's muxer is shaped by the one-way delay to
//! its remote and the node's upload/download caps ([`shoal_mesh::net::Shaping`]).
//! The lab knows every node's slot in the [`Topology`], so it also knows the
//! true RTTs and can judge the neighbours each node chose.
//!
//! With `processes` = K > 1, this process (index 0) runs the tracker, the
//! seeder and the viewer slots `slot % K == 0`, and K − 1 worker processes
//! ([`super::worker`]) run the others; each process's [`Population`] does
//! the joins and churn of its own slots, and this one merges the workers'
//! snapshots into its samples and results.
//!
//! A scenario with a stream mix (`streams`) runs one seeder per stream,
//! each with its own key and so its own stream id, all announcing to the
//! one tracker, whose coordinator splits the scenario's infrastructure
//! budget among them; every viewer watches one stream ([`Layout`]). Only
//! the Shoal-engine systems run a mix, in one process.
//!
//! With `reflectors` = R > 0, R in-process reflectors ([`LabReflectors`])
//! announce to the same tracker, whose coordinator assigns them to the
//! streams; they are infrastructure, counted with the seeders.
//!
//! Each Shoal viewer listens on its slot's own loopback address 127.A.B.C
//! ([`Topology::address`]), whose /24 is its synthetic subnet, and the
//! in-process tracker holds the topology's AS table, so the tracker tells
//! every node its synthetic locality as it would on the Internet. The
//! seeders, their HTTP origins and the tracker stay on 127.0.0.1 (the
//! seeder's own /24 and AS).

use std::{
    collections::HashMap,
    io::Write,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use shoal_mesh::proto::{Stats, StreamId, Summary};

use super::{
    fault_window::FaultWindow,
    layout::Layout,
    measure::{egress, node_results, sample, Totals},
    population::{full_book, shaping, slot_key, Book, Population},
    reflection::{run_share, stream_reflection, SeederSide, Tree},
    reflectors::LabReflectors,
    result::{RunResult, Sample},
    scenario::Scenario,
    stream_figures::{continuity_goodput_bps, stream_results},
    system::{Infra, System},
    topology::Topology,
    upload_split::UploadSplit,
    usage,
    worker::{WorkerSpec, Workers},
};
use crate::tracker::{AsnTable, CoordinatorConfig, TrackerConfig};

mod restarts;
mod trackers;

use restarts::ScheduledRestart;
use trackers::LabTrackers;

/// How a run is watched.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub system: System,
    /// Print a progress line per second.
    pub progress: bool,
    /// OS processes the viewers are spread over (1: all in this one).
    pub processes: usize,
}

/// Runs one system through a scenario.
pub async fn run(
    sc: &Scenario,
    opts: &RunOptions,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<RunResult> {
    let processes = check_processes(sc, opts)?;
    let wall = Instant::now();
    let cpu0 = usage::cpu_seconds();
    let mut lab = Lab::start(sc, opts.system, processes, out).await?;
    let timeline = lab.play(opts.progress, out).await?;
    lab.finish(timeline, wall, cpu0).await
}

/// The OS processes a run is spread over, once the scenario and the
/// system allow it.
fn check_processes(sc: &Scenario, opts: &RunOptions) -> anyhow::Result<usize> {
    sc.validate_lab()?;
    check_system(sc, opts.system)?;
    let processes = opts.processes.max(1);
    if processes > 1 {
        if sc.reflectors > 0 {
            bail!(
                "--reflectors {} runs in one process only; use --processes 1",
                sc.reflectors
            );
        }
        if let Some(mix) = &sc.streams {
            bail!(
                "--streams {mix} runs in one process only (worker processes carry one \
                 stream); use --processes 1"
            );
        }
        if sc.dht {
            bail!(
                "--dht runs in one process only (workers do not know the seeders' \
                 addresses); use --processes 1"
            );
        }
    }
    if processes > 1 {
        if !opts.system.runs_shoal_engine() {
            bail!(
                "--processes {processes}: {} runs in one process only (its viewers share \
                 state with the infra side); use --processes 1",
                opts.system
            );
        }
        if processes > sc.nodes {
            bail!(
                "--processes {processes} is more than the {} viewers",
                sc.nodes
            );
        }
    }
    Ok(processes)
}

/// Whether `system` can run the scenario: a stream mix and reflectors need
/// Shoal's engine (the baselines carry one stream, from its seeder).
pub(crate) fn check_system(sc: &Scenario, system: System) -> anyhow::Result<()> {
    if system.runs_shoal_engine() {
        return Ok(());
    }
    if let Some(mix) = &sc.streams {
        bail!("--streams {mix}: {system} carries one stream; a mix runs with shoal, rtt or random");
    }
    if sc.reflectors > 0 {
        bail!(
            "--reflectors {}: {system} has no reflectors; reflectors run with shoal, rtt or random",
            sc.reflectors
        );
    }
    Ok(())
}

/// A run under way, seen from its main process: the tracker, the infra
/// side, this process's viewers and the workers that run the others.
struct Lab<'a> {
    sc: &'a Scenario,
    system: System,
    topo: Arc<Topology>,
    book: Book,
    tracker: LabTrackers,
    /// Each stream's infra side, by stream.
    infra: Vec<Infra>,
    /// What each stream's seeder sent to viewers, by stream.
    seeder_splits: Vec<UploadSplit>,
    reflectors: Option<LabReflectors>,
    pop: Population,
    workers: Workers,
    restarts: Vec<ScheduledRestart>,
    faults: Vec<FaultWindow>,
}

impl<'a> Lab<'a> {
    /// Starts the tracker, the infra side and the worker processes (each
    /// set up and waiting for `go`); no viewer has joined yet.
    async fn start(
        sc: &'a Scenario,
        system: System,
        processes: usize,
        out: &mut (dyn Write + Send),
    ) -> anyhow::Result<Lab<'a>> {
        let layout = Layout::of(sc);
        let topo = Arc::new(Topology::with_reflectors(
            &sc.topology,
            layout.streams(),
            sc.reflectors,
            layout.slots(),
            sc.seed,
        )?);
        let book = new_book(sc, processes);
        let tracker = LabTrackers::start(sc.trackers, scenario_tracker_config(&topo, sc)?).await?;
        let tracker_url = tracker.url();
        let mut infra = Vec::with_capacity(layout.streams());
        let mut seeder_splits = Vec::with_capacity(layout.streams());
        for stream in 0..layout.streams() {
            let (i, split) =
                start_infra(sc, system, &layout, stream, &topo, &book, &tracker_url).await?;
            infra.push(i);
            seeder_splits.push(split);
        }
        let reflectors = match sc.reflectors {
            0 => None,
            _ => Some(LabReflectors::start(&layout, sc.seed, &topo, &book, &tracker_url).await?),
        };
        let streams: Vec<StreamId> = infra.iter().map(Infra::stream).collect();
        write_header(out, sc, system, processes, &streams)?;
        if sc.reflectors > 0 {
            writeln!(out, "  {} reflectors", sc.reflectors)?;
        }
        if sc.trackers > 1 {
            writeln!(out, "  {} trackers: {}", sc.trackers, tracker.url())?;
        }
        let pop = Population::new(
            system,
            sc,
            topo.clone(),
            book.clone(),
            &tracker_url,
            streams.clone(),
            0,
            processes,
        );
        let spec = WorkerSpec {
            scenario: sc.clone(),
            system,
            index: 0,
            processes,
            tracker_url,
            // Worker processes run single-stream scenarios only.
            stream: streams[0].to_string(),
        };
        let workers = Workers::spawn(&spec, &book).await?;
        Ok(Lab {
            sc,
            system,
            topo,
            book,
            tracker,
            infra,
            seeder_splits,
            reflectors,
            pop,
            workers,
            restarts: sc
                .restarts
                .iter()
                .cloned()
                .map(ScheduledRestart::new)
                .collect(),
            faults: sc.restarts.iter().cloned().map(FaultWindow::new).collect(),
        })
    }

    /// Starts every process's clock and runs the scenario's duration:
    /// joins and restarts as they fall due, churn and a sample once a
    /// second (printed when `progress`).
    async fn play(
        &mut self,
        progress: bool,
        out: &mut (dyn Write + Send),
    ) -> anyhow::Result<Vec<Sample>> {
        self.workers.go().await?;
        let mut timeline: Vec<Sample> = Vec::new();
        let mut prev = Totals::default();
        let start = Instant::now();
        let mut next_sample = 1.0;
        let tick = Duration::from_millis(100);
        if progress {
            write_progress_header(out)?;
        }
        loop {
            let t = start.elapsed().as_secs_f64();
            if t >= self.sc.duration_s {
                break;
            }
            self.pop.join_due(t, &self.infra).await?;
            self.apply_restarts(t, out).await?;
            if t >= next_sample {
                next_sample += 1.0;
                if self.sc.trackers > 1 {
                    self.tracker.observe(t).await;
                }
                let sample = self.churn_and_sample(t, &mut prev).await?;
                if progress {
                    write_progress(out, t, &sample)?;
                }
                timeline.push(sample);
            }
            tokio::time::sleep(tick).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(timeline)
    }

    /// One second's step: checks the workers, applies this process's churn
    /// and samples every viewer.
    async fn churn_and_sample(&mut self, t: f64, prev: &mut Totals) -> anyhow::Result<Sample> {
        self.workers.check().await?;
        self.pop.churn(t, &self.infra).await?;
        // This process's viewers now, the workers' as of their latest
        // report (at most a second old).
        let mut live = self.pop.present_stats();
        let mut departed = Stats::default();
        for d in &self.pop.departed {
            departed.merge(&d.stats);
        }
        self.workers.add_to_sample(&mut live, &mut departed);
        let infra = (&self.infra[..], self.reflectors.as_ref());
        let (sample, totals) = sample(t, &live, &departed, infra, prev);
        *prev = totals;
        if self.faults.iter().any(|f| f.wants(t)) {
            // This process's viewers (all of them but with --processes).
            let viewers = self.pop.snapshots();
            for f in self.faults.iter_mut().filter(|f| f.wants(t)) {
                f.observe(t, &viewers);
            }
        }
        Ok(sample)
    }

    /// Ends the run: every process's final figures, taken as close
    /// together as can be, judged and summed up; then stops everything.
    async fn finish(
        self,
        timeline: Vec<Sample>,
        wall: Instant,
        cpu0: f64,
    ) -> anyhow::Result<RunResult> {
        let Lab {
            sc,
            system,
            topo,
            book,
            tracker,
            mut infra,
            seeder_splits,
            mut reflectors,
            mut pop,
            mut workers,
            restarts: _,
            faults,
        } = self;
        let mut tracker = tracker;
        workers.stop().await;
        let mut present = pop.finish(&infra);
        let faults: Vec<_> = (faults.into_iter())
            .filter_map(|f| f.finish(sc.duration_s, &present))
            .collect();
        let mut departed = std::mem::take(&mut pop.departed);
        let remote = workers.finish().await?;
        present.extend(remote.present);
        departed.extend(remote.departed);
        present.sort_by_key(|n| n.slot);

        let (mut results, neighbor_rtt_ratio) = node_results(sc, &topo, &book, present, departed);
        let viewers: Vec<Stats> = results.iter().map(|r| r.stats.clone()).collect();
        let (infra_stats, http) = egress(&infra, reflectors.as_ref());
        let summary = Summary::new(&viewers, &infra_stats, http);
        let mut details = Vec::with_capacity(infra.len());
        for i in &infra {
            details.push(tracker.detail(i.stream()).await);
        }
        let budgets: Vec<Option<u64>> = (details.iter())
            .map(|d| d.as_ref()?.get("budget_bps")?.as_u64())
            .collect();
        let mut streams = stream_results(sc, &results, &infra, &budgets, reflectors.as_ref());
        let mut fallback_from_reflectors = None;
        let mut reflector_results = Vec::new();
        if let Some(r) = &reflectors {
            let mut to_viewers = Vec::with_capacity(streams.len());
            for (s, stream) in streams.iter_mut().enumerate() {
                let seeder = SeederSide {
                    infra: &infra[s],
                    split: &seeder_splits[s],
                    viewers: stream.viewers,
                    tree: details[s].as_ref().map(Tree::of_detail).unwrap_or_default(),
                };
                let (reflection, reached) = stream_reflection(&seeder, r, sc.duration_s);
                stream.reflection = Some(reflection);
                to_viewers.push(reached);
            }
            fallback_from_reflectors = run_share(&to_viewers);
            let ids: Vec<StreamId> = infra.iter().map(Infra::stream).collect();
            reflector_results = r.results(&ids, sc.duration_s);
        }
        // The workers' CPU and peak memory add to this process's (the sum of
        // the peaks bounds the peak of the sum).
        let cpu_s = usage::cpu_seconds() - cpu0 + remote.cpu_s;
        let peak = usage::peak_rss_bytes() + remote.peak_rss_bytes;
        results.sort_by_key(|r| (r.index, r.joined_at_s as u64));
        drop(pop);
        if let Some(r) = &mut reflectors {
            r.shutdown();
        }
        infra.iter_mut().for_each(Infra::stop);
        let ids: Vec<StreamId> = infra.iter().map(Infra::stream).collect();
        let shards = tracker.result(&ids, sc.mix().viewers());
        tracker.stop_all();
        let n = sc.nodes.max(1);
        Ok(RunResult {
            system: system.to_string(),
            scenario: sc.clone(),
            summary,
            continuity_goodput_bps: continuity_goodput_bps(&streams),
            streams,
            neighbor_rtt_ratio,
            nodes: results,
            timeline,
            wall_s: wall.elapsed().as_secs_f64(),
            cpu_s,
            cpu_s_per_node: cpu_s / n as f64,
            peak_rss_bytes: peak,
            peak_rss_bytes_per_node: peak / n as u64,
            reflectors: reflector_results,
            fallback_from_reflectors,
            faults,
            trackers: shards,
            viewer_interval_s: trackers::mean_viewer_interval(&details),
        })
    }
}

/// Who sits in which slot, for the shapers: one process learns its viewers'
/// peer ids as they start; several must know each other's in advance.
fn new_book(sc: &Scenario, processes: usize) -> Book {
    if processes > 1 {
        full_book(sc)
    } else {
        Arc::new(RwLock::new(HashMap::new()))
    }
}

/// Starts a stream's infra side in its seeder slot: the seeder (and, for
/// gossipsub, the publisher it feeds). The seeders of a mix are named
/// `NAME-0`, `NAME-1`, ...; a single stream's is the scenario's name.
async fn start_infra(
    sc: &Scenario,
    system: System,
    layout: &Layout,
    stream: usize,
    topo: &Arc<Topology>,
    book: &Book,
    tracker_url: &str,
) -> anyhow::Result<(Infra, UploadSplit)> {
    let slot = layout.seeder_slot(stream);
    let seeder_key = slot_key(sc.seed, slot, 0);
    book.write()
        .expect("lock")
        .insert(seeder_key.public().to_peer_id(), slot);
    let mut seeder_shaping = shaping(topo, book, slot, None, None);
    let split = UploadSplit::attach(&mut seeder_shaping, book, layout.viewer_slots());
    let name = match layout.streams() {
        1 => sc.name.clone(),
        _ => format!("{}-{stream}", sc.name),
    };
    let infra = Infra::start(
        system,
        sc,
        &name,
        tracker_url,
        seeder_key,
        seeder_shaping,
        topo.clone(),
    )
    .await
    .context("the seeder failed to start")?;
    Ok((infra, split))
}

fn write_header(
    out: &mut (dyn Write + Send),
    sc: &Scenario,
    system: System,
    processes: usize,
    streams: &[StreamId],
) -> std::io::Result<()> {
    if streams.len() > 1 {
        let mix = sc.mix();
        writeln!(
            out,
            "{system}: {} viewers in {} streams ({mix}), {} s, allocation {}{}",
            sc.nodes,
            streams.len(),
            sc.duration_s,
            sc.allocation,
            sc.infra_budget_bps
                .map_or(String::new(), |b| format!(" of {:.2} Mbps", b as f64 / 1e6)),
        )?;
        for (s, (id, n)) in streams.iter().zip(mix.viewers()).enumerate() {
            writeln!(out, "  stream {s}: {n} viewers, {id}")?;
        }
        return Ok(());
    }
    let stream = streams[0];
    if processes > 1 {
        writeln!(
            out,
            "{system}: {} viewers in {processes} processes, {} s, stream {stream}",
            sc.nodes, sc.duration_s,
        )
    } else {
        writeln!(
            out,
            "{system}: {} viewers, {} s, stream {stream}",
            sc.nodes, sc.duration_s,
        )
    }
}

fn write_progress_header(out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>5} {:>7} {:>8} {:>8} {:>8} {:>6} {:>7}",
        "t(s)", "playing", "offload", "contin.", "lag p95", "nbrs", "egress"
    )
}

fn write_progress(out: &mut (dyn Write + Send), t: f64, sample: &Sample) -> std::io::Result<()> {
    writeln!(
        out,
        "{:>5.0} {:>7} {:>8} {:>8} {:>8} {:>6.1} {:>7}",
        t,
        sample.playing,
        fmt_opt(sample.offload, 3),
        fmt_opt(sample.continuity, 4),
        sample.lag_p95_ms.map_or("-".into(), |v| v.to_string()),
        sample.neighbors_mean,
        fmt_opt(sample.seeder_egress, 3),
    )
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The lab's tracker: a 2 s announce interval, and the topology's AS table
/// (what `shoal-tracker --asn-table` would load from a file).
pub(crate) fn tracker_config(topo: &Topology) -> anyhow::Result<TrackerConfig> {
    let table = AsnTable::parse(&topo.asn_table(), "the lab's AS table")?;
    Ok(TrackerConfig {
        asn_table: Arc::new(table),
        ..TrackerConfig::with_interval(2)
    })
}

/// The lab's tracker for a scenario: its coordinator splits the scenario's
/// infrastructure budget by its allocation policy, or is off.
fn scenario_tracker_config(topo: &Topology, sc: &Scenario) -> anyhow::Result<TrackerConfig> {
    Ok(TrackerConfig {
        coordinator: sc.allocation.policy().map(|policy| CoordinatorConfig {
            policy,
            budget_bps: sc.infra_budget_bps,
        }),
        ..tracker_config(topo)?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_runs_shoal_engine_systems_in_one_process_only() {
        let sc = Scenario {
            nodes: 5,
            streams: Some("4,1".parse().unwrap()),
            ..Scenario::default()
        };
        let opts = |system, processes| RunOptions {
            system,
            progress: false,
            processes,
        };
        for system in [System::Shoal, System::Rtt, System::Random] {
            assert_eq!(check_processes(&sc, &opts(system, 1)).unwrap(), 1);
        }
        let err = check_processes(&sc, &opts(System::Gossipsub, 1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("gossipsub carries one stream"), "{err}");
        let err = check_processes(&sc, &opts(System::Shoal, 2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--processes 1"), "{err}");
    }

    #[test]
    fn reflectors_run_with_shoal_engine_systems_in_one_process_only() {
        let sc = Scenario {
            nodes: 5,
            reflectors: 2,
            ..Scenario::default()
        };
        let opts = |system, processes| RunOptions {
            system,
            progress: false,
            processes,
        };
        for system in [System::Shoal, System::Rtt, System::Random] {
            assert_eq!(check_processes(&sc, &opts(system, 1)).unwrap(), 1);
        }
        for system in [System::Gossipsub, System::ClientServer] {
            let err = check_processes(&sc, &opts(system, 1))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("--reflectors 2") && err.contains("has no reflectors"),
                "{err}"
            );
        }
        let err = check_processes(&sc, &opts(System::Shoal, 2))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--processes 1"), "{err}");
    }

    #[test]
    fn the_lab_tracker_takes_the_scenarios_allocation() {
        let topo = Topology::new(&super::super::scenario::TopologySpec::Geo, 3, 1).unwrap();
        let today = scenario_tracker_config(&topo, &Scenario::default()).unwrap();
        assert_eq!(
            today.coordinator,
            tracker_config(&topo).unwrap().coordinator
        );
        let sc = Scenario {
            allocation: super::super::scenario::Allocation::ByViewers,
            infra_budget_bps: Some(3_000_000),
            ..Scenario::default()
        };
        let cfg = scenario_tracker_config(&topo, &sc)
            .unwrap()
            .coordinator
            .unwrap();
        assert_eq!(
            (cfg.policy, cfg.budget_bps),
            (shoal_mesh::allocation::Policy::ByViewers, Some(3_000_000))
        );
        let off = Scenario {
            allocation: super::super::scenario::Allocation::Off,
            ..Scenario::default()
        };
        assert!(scenario_tracker_config(&topo, &off)
            .unwrap()
            .coordinator
            .is_none());
    }

    #[test]
    fn the_lab_tracker_tells_each_slot_its_synthetic_locality() {
        let topo = Topology::new(&super::super::scenario::TopologySpec::Geo, 41, 9).unwrap();
        let mut registry = crate::tracker::Registry::new(tracker_config(&topo).unwrap(), 1);
        let now = Instant::now();
        let loopback = Some("127.0.0.1".parse().unwrap());
        for slot in 0..41 {
            let announce = shoal_mesh::hints::Announce {
                addrs: vec![format!("/ip4/{}/tcp/4001", topo.address(slot))],
                max_degree: 8,
                ..shoal_mesh::hints::Announce::new(
                    "ab".repeat(32),
                    format!("slot{slot}"),
                    shoal_mesh::hints::Role::Viewer,
                )
            };
            let hints = registry.announce(announce, loopback, now).unwrap();
            assert_eq!(hints.you, topo.locality(slot), "slot {slot}");
            assert_ne!(hints.you.asn, 0);
        }
    }
}
