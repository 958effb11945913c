//! `shoal-lab`: local meshes for testers.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::bail;
use clap::{Parser, Subcommand};
use shoal_seeder::Input;
use shoal_tools::lab::{run_demo, DemoConfig};

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
        #[arg(long, default_value_t = 8)]
        max_degree: usize,
        /// Exit non-zero if mean continuity ends below this (CI smoke runs).
        #[arg(long)]
        min_continuity: Option<f64>,
        /// Exit non-zero if offload ends below this.
        #[arg(long)]
        min_offload: Option<f64>,
    },
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

async fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Cmd::Demo {
            nodes,
            duration,
            json,
            input,
            max_degree,
            min_continuity,
            min_offload,
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
            if let Some(min) = min_continuity {
                if summary.continuity.mean < min {
                    bail!("continuity {:.4} is below {min}", summary.continuity.mean);
                }
            }
            if let Some(min) = min_offload {
                if summary.offload < min {
                    bail!("offload {:.4} is below {min}", summary.offload);
                }
            }
            Ok(())
        }
    }
}
