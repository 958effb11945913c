//! `shoal-lab`: local meshes for testers.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::bail;
use clap::{Parser, Subcommand};
use shoal_mesh::allocation::Policy;
use shoal_seeder::Input;
use shoal_tools::lab::{
    allocate::{self, allocate, AllocateConfig},
    bench,
    cli::ScenarioArgs,
    mix::StreamMix,
    nat::{self, NatArgs},
    run::{self as lab_run, RunOptions},
    run_demo,
    scenario::Allocation,
    scenario::Scenario,
    sim::run_sim,
    sim_streams::{print_policies, run_sim_streams},
    system::System,
    tracker_bench::{self, TrackerBenchConfig},
    worker, DemoConfig,
};

/// mimalloc, which asks the kernel for transparent huge pages on the heap:
/// the simulator's engines span gigabytes at 100,000 viewers, and with
/// 4 KiB pages nearly every event's first touch also misses the TLB.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(version, about = "Shoal's lab: local meshes with every role real")]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Tracker + seeder + N viewers on loopback, with live progress.
    Demo {
        /// Viewers.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=500))]
        nodes: u16,
        /// How long to run, e.g. 60s, 2m.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Write the summary as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Seeder input: clip, -, FILE.ts or synthetic:RATE.
        #[arg(long, default_value = "clip")]
        input: Input,
        /// Neighbours per viewer, at most.
        #[arg(long, default_value_t = 8, value_parser = shoal_mesh::proto::engine::parse_degree_cap)]
        max_degree: usize,
        #[command(flatten)]
        floors: Floors,
    },
    /// N real nodes under an emulated network (latency, caps, churn).
    Run {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// A scenario as JSON (what `bench` hands its child runs).
        #[arg(long, hide = true)]
        scenario_file: Option<PathBuf>,
        /// shoal, random, gossipsub or client-server.
        #[arg(long, default_value = "shoal")]
        system: System,
        /// Write the measures (aggregate, per node, over time) as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write an HTML report with SVG plots into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
        /// No progress table.
        #[arg(long)]
        quiet: bool,
        /// Spread the viewers over this many OS processes (shoal and
        /// random only).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        processes: u16,
        #[command(flatten)]
        floors: Floors,
        /// Exit non-zero if mean continuity over the minute after any
        /// restart (`--restart`) is below this.
        #[arg(long)]
        min_fault_continuity: Option<f64>,
    },
    /// The real engines in virtual time (deterministic discrete-event
    /// simulation) under the scenario's topology and upload spread.
    Sim {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// shoal, rtt or random.
        #[arg(long, default_value = "shoal")]
        system: System,
        /// Write the measures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Threads (the simulator runs two partitions side by side; the
        /// result is the same with 1 or 2). Default: 2 on a multi-core
        /// machine.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=2))]
        threads: Option<u16>,
        /// This many streams sharing --nodes viewers by Zipf popularity
        /// (each at least one viewer), in an order drawn from the seed.
        #[arg(long, conflicts_with = "streams")]
        zipf: Option<usize>,
        /// The Zipf exponent.
        #[arg(long, default_value_t = 1.0, requires = "zipf")]
        zipf_exponent: f64,
        /// With several streams: run these allocation policies one after
        /// the other and print them side by side (default: --allocation).
        #[arg(long, value_delimiter = ',')]
        policies: Option<Vec<Allocation>>,
        /// The infrastructure budget in copies of the bitrate per stream:
        /// 1.0 is every stream's minimum together (docs/lab.md §3a).
        #[arg(long, conflicts_with = "infra_budget")]
        budget_copies: Option<f64>,
    },
    /// The tracker's HTTP server on one core, driven by keep-alive clients
    /// announcing as random viewers of one filled stream.
    BenchTracker {
        /// Swarm sizes, comma-separated, e.g. 1000,100000,1000000.
        #[arg(long, value_delimiter = ',', default_value = "1000,100000,1000000")]
        viewers: Vec<usize>,
        /// Load time per size, e.g. 10s.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Keep-alive connections, one request in flight each.
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=4096))]
        connections: u16,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// One scenario, several systems (or allocation policies) side by side.
    Bench {
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Systems to compare, comma-separated [default:
        /// client-server,gossipsub,random,rtt,shoal].
        #[arg(long, value_delimiter = ',', conflicts_with = "policies")]
        systems: Option<Vec<System>>,
        /// Compare the coordinator's allocation policies instead, system
        /// shoal, e.g. antfarm,first-come,by-viewers (with --streams).
        #[arg(long, value_delimiter = ',')]
        policies: Option<Vec<Policy>>,
        /// Write `{"scenario", "systems": {...}}` (with --policies,
        /// `"policies": {...}`) as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write an HTML report comparing the systems into this directory.
        #[arg(long)]
        report: Option<PathBuf>,
    },
    /// The coordinator's allocation round at scale (Zipf streams, every
    /// viewer reporting), timed on one core for each policy.
    Allocate {
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        streams: u32,
        /// Viewers in all (at least one per stream).
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        viewers: u64,
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1_000))]
        rounds: u32,
        /// Infrastructure upload as a multiple of what the swarms need to
        /// play everywhere, e.g. 1.0 or 0.8.
        #[arg(long, default_value_t = 1.0)]
        budget: f64,
        /// Policies to run, comma-separated: antfarm, first-come, by-viewers.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "antfarm,first-come,by-viewers"
        )]
        policies: Vec<Policy>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the rounds and figures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// A small internet in network namespaces (public hosts, cone and
    /// symmetric NAT homes) running the real binaries; needs root,
    /// iproute2 and iptables.
    Nat(NatArgs),
    /// GET a URL and print the body (the NAT lab runs it inside a
    /// viewer's namespace to read its /stats).
    #[command(hide = true)]
    NatGet { url: String },
    /// A share of a `run --processes K`'s viewers (started by `run`).
    #[command(hide = true)]
    Worker,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shoal-lab: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Figures a run must reach, or the lab exits non-zero (CI smoke runs).
#[derive(Debug, clap::Args)]
struct Floors {
    /// Exit non-zero if mean continuity ends below this.
    #[arg(long)]
    min_continuity: Option<f64>,
    /// Exit non-zero if offload ends below this.
    #[arg(long)]
    min_offload: Option<f64>,
    /// Exit non-zero if a viewer never started, or start-up's p95 is
    /// above this, e.g. 10s.
    #[arg(long, value_parser = humantime::parse_duration)]
    max_startup: Option<Duration>,
}

impl Floors {
    fn check(&self, summary: &shoal_mesh::proto::Summary) -> anyhow::Result<()> {
        if let Some(min) = self.min_continuity {
            if summary.continuity.mean < min {
                bail!("continuity {:.4} is below {min}", summary.continuity.mean);
            }
        }
        if let Some(min) = self.min_offload {
            if summary.offload < min {
                bail!("offload {:.4} is below {min}", summary.offload);
            }
        }
        if let Some(max) = self.max_startup {
            if summary.not_started > 0 {
                bail!("{} viewers never started", summary.not_started);
            }
            let p95 = Duration::from_millis(summary.startup_ms.p95);
            if p95 > max {
                bail!("start-up p95 {p95:?} is above {max:?}");
            }
        }
        Ok(())
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Demo {
            nodes,
            duration,
            json,
            input,
            max_degree,
            floors,
        } => {
            let cfg = DemoConfig {
                nodes: nodes as usize,
                duration,
                input,
                max_degree,
                json,
                ..DemoConfig::default()
            };
            let summary = run_demo(&cfg, &mut std::io::stdout()).await?;
            floors.check(&summary)
        }
        Cmd::Run {
            scenario,
            scenario_file,
            system,
            json,
            report,
            quiet,
            processes,
            floors,
            min_fault_continuity,
        } => {
            let sc = match scenario_file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)?;
                    serde_json::from_str::<Scenario>(&text)?
                }
                None => scenario.scenario()?,
            };
            let opts = RunOptions {
                system,
                progress: !quiet,
                processes: processes.into(),
            };
            let mut out = std::io::stdout();
            let result = lab_run::run(&sc, &opts, &mut out).await?;
            if !quiet {
                println!("{}", bench::table(std::slice::from_ref(&result)));
                if let Some(t) = shoal_tools::lab::report::reflection::text(&result) {
                    println!("{t}");
                }
            }
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&result)? + "\n")?;
            }
            if let Some(dir) = report {
                let page =
                    shoal_tools::lab::report::write_report(&dir, std::slice::from_ref(&result))?;
                println!("report: {}", page.display());
            }
            floors.check(&result.summary)?;
            if let Some(min) = min_fault_continuity {
                for f in &result.faults {
                    if f.continuity.mean < min {
                        bail!(
                            "continuity {:.4} over {}–{} s, after {}@{} s, is below {min}",
                            f.continuity.mean,
                            f.from_s,
                            f.to_s,
                            f.role,
                            f.at_s
                        );
                    }
                }
            }
            Ok(())
        }
        Cmd::Nat(args) => nat::run_nat(&args).await,
        Cmd::NatGet { url } => nat::nat_get(&url).await,
        Cmd::Worker => {
            // Exit at once, without a runtime shutdown: tokio's stdin
            // reader, blocked in a read, would hold it up.
            let code = match worker::main().await {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("shoal-lab worker: error: {e:#}");
                    1
                }
            };
            std::process::exit(code)
        }
        Cmd::Sim {
            scenario,
            system,
            json,
            threads,
            zipf,
            zipf_exponent,
            policies,
            budget_copies,
        } => {
            let mut sc = scenario.scenario()?;
            if sc.reflectors > 0 {
                anyhow::bail!(
                    "the simulator has no reflectors: --reflectors runs under `shoal-lab run`"
                );
            }
            if let Some(streams) = zipf {
                sc.streams = Some(StreamMix::zipf(streams, sc.nodes, zipf_exponent, sc.seed)?);
            }
            if let Some(mix) = sc.streams.clone() {
                let policies = policies.unwrap_or_else(|| vec![sc.allocation]);
                let budget = match budget_copies {
                    Some(x) if x > 0.0 && x.is_finite() => {
                        Some((x * mix.streams() as f64 * sc.bitrate_bps as f64) as u64)
                    }
                    Some(_) => bail!("--budget-copies must be above 0"),
                    None => sc.infra_budget_bps,
                };
                println!(
                    "simulating {system}: {} streams, {} viewers, {} s, seed {}...",
                    mix.streams(),
                    sc.nodes,
                    sc.duration_s,
                    sc.seed
                );
                let out = tokio::task::spawn_blocking(move || {
                    run_sim_streams(&sc, system, threads, &policies, budget)
                })
                .await??;
                print_policies(&out);
                if let Some(path) = json {
                    std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
                }
                return Ok(());
            }
            println!(
                "simulating {system}: {} viewers, {} s, seed {}...",
                sc.nodes, sc.duration_s, sc.seed
            );
            let out = tokio::task::spawn_blocking(move || run_sim(&sc, system, threads)).await??;
            let s = &out.summary;
            println!(
                "offload {:.4}  continuity {:.4}/{:.4}  lag p50/p95 {}/{} ms  startup p50 {} ms",
                s.offload,
                s.continuity.mean,
                s.continuity.min,
                s.lag_ms.p50,
                s.lag_ms.p95,
                s.startup_ms.p50
            );
            println!(
                "duplicate {:.4}  overhead {:.4}  seeder_egress {:.4}  neighbor_rtt_ratio {}",
                s.duplicate,
                s.overhead,
                s.seeder_egress,
                out.neighbor_rtt_ratio
                    .map_or("-".into(), |r| format!("{r:.3}"))
            );
            println!(
                "coordinate error median {}  departures {}  neighbour swaps per viewer {:.1}",
                out.coord_error_median
                    .map_or("-".into(), |e| format!("{e:.3}")),
                out.departures,
                out.swaps_per_viewer
            );
            println!(
                "wall {:.1} s, threads {}, {:.0} simulated node-seconds per second, {} events, peak memory {}",
                out.wall_s,
                out.threads,
                out.node_seconds_per_wall_s,
                out.events,
                out.peak_rss_mib.map_or("-".into(), |m| format!("{m} MiB"))
            );
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
            }
            Ok(())
        }
        Cmd::Allocate {
            streams,
            viewers,
            rounds,
            budget,
            policies,
            seed,
            json,
        } => {
            let cfg = AllocateConfig {
                streams,
                viewers,
                rounds,
                budget_of_need: budget,
                policies,
                seed,
                ..AllocateConfig::default()
            };
            let out = tokio::task::spawn_blocking(move || allocate(&cfg, &mut std::io::stdout()))
                .await??;
            println!("\n{}", allocate::table(&out));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
                println!("written to {}", path.display());
            }
            Ok(())
        }
        Cmd::BenchTracker {
            viewers,
            duration,
            connections,
            seed,
            json,
        } => {
            if viewers.iter().any(|&n| n == 0 || n > 10_000_000) {
                bail!("--viewers: each size must be 1..=10000000");
            }
            if duration > Duration::from_secs(600) {
                bail!("--duration: at most 10m per size");
            }
            let cfg = TrackerBenchConfig {
                viewers,
                duration,
                connections: connections.into(),
                seed,
            };
            let results =
                tokio::task::spawn_blocking(move || tracker_bench::bench_tracker(&cfg)).await??;
            println!("{}", tracker_bench::table(&results));
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
                println!("written to {}", path.display());
            }
            Ok(())
        }
        Cmd::Bench {
            scenario,
            systems,
            policies,
            json,
            report,
        } => {
            let sc = scenario.scenario()?;
            sc.validate_lab()?;
            let mut out = std::io::stdout();
            let (results, v) = match policies {
                Some(policies) => {
                    let results = bench::bench_policies(&sc, &policies, &mut out).await?;
                    println!("\n{}", bench::policies_table(&results));
                    let v = bench::policies_json(&sc, &results);
                    (results, v)
                }
                None => {
                    let systems = systems.unwrap_or_else(|| System::ALL.to_vec());
                    let results = bench::bench(&sc, &systems, &mut out).await?;
                    println!("\n{}", bench::table(&results));
                    let v = bench::bench_json(&sc, &results);
                    (results, v)
                }
            };
            if let Some(path) = json {
                std::fs::write(&path, serde_json::to_string_pretty(&v)? + "\n")?;
                println!("written to {}", path.display());
            }
            if let Some(dir) = report {
                let page = shoal_tools::lab::report::write_report(&dir, &results)?;
                println!("report: {}", page.display());
            }
            Ok(())
        }
    }
}
