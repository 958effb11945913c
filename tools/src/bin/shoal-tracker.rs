//! `shoal-tracker --listen 127.0.0.1:7070 [--interval 5] [--peer-ttl 15s]
//! [--asn-table FILE] [--allocation antfarm|first-come|by-viewers|off]
//! [--infra-budget RATE]`: the hint service, and the coordinator of the
//! infrastructure's upload (docs/coordinator.md).

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Parser;
use shoal_mesh::{allocation::Policy, rate::rate_arg};
use shoal_tools::tracker::{self, AsnTable, CoordinatorConfig, TrackerConfig};

/// Shoal's tracker: the HTTP/JSON hint service peers announce to.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Announce interval advised to peers, in seconds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=3600))]
    interval: u32,
    /// Forget a peer not heard from for this long (default: 3 intervals), e.g. "20s";
    /// a settled viewer's stretches with its interval.
    #[arg(long, value_parser = humantime::parse_duration)]
    peer_ttl: Option<Duration>,
    /// A settled viewer (playing, half its neighbours, every piece in
    /// time) is asked back this many intervals later; 1 turns it off.
    #[arg(long, default_value_t = shoal_tools::tracker::SETTLED_FACTOR, value_parser = clap::value_parser!(u8).range(1..=60))]
    settled_factor: u8,
    /// IP → AS table: `prefix/len,asn` lines (IPv4 and IPv6; blank lines
    /// and `#` comments allowed), longest prefix wins. Peers' AS numbers
    /// come from it; without it every AS is unknown.
    #[arg(long, value_name = "FILE")]
    asn_table: Option<PathBuf>,
    /// How infrastructure upload is split across streams: antfarm,
    /// first-come, by-viewers, or off (no budgets).
    #[arg(long, default_value = "antfarm", value_parser = allocation)]
    allocation: Allocation,
    /// The infrastructure tier's upload to split, e.g. 500mbps (default:
    /// what seeders and reflectors announce as their upload).
    #[arg(long, value_parser = rate_arg)]
    infra_budget: Option<u64>,
}

/// A policy, or none.
#[derive(Clone, Copy, Debug)]
struct Allocation(Option<Policy>);

fn allocation(s: &str) -> Result<Allocation, String> {
    if s == "off" {
        Ok(Allocation(None))
    } else {
        s.parse()
            .map(|p| Allocation(Some(p)))
            .map_err(|e: String| format!("{e}, or off"))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever RUST_BACKTRACE says: these are operator errors.
            eprintln!("shoal-tracker: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let mut config = TrackerConfig::with_interval(args.interval);
    config.coordinator = args.allocation.0.map(|policy| CoordinatorConfig {
        policy,
        budget_bps: args.infra_budget,
    });
    if let Some(ttl) = args.peer_ttl {
        config.peer_ttl = ttl;
    }
    config.settled_factor = args.settled_factor;
    if let Some(path) = &args.asn_table {
        let table = AsnTable::load(path).context("--asn-table")?;
        tracing::info!(file = %path.display(), prefixes = table.len(), "AS table loaded");
        config.asn_table = Arc::new(table);
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    // Scripts wait for this line, so it goes to stdout, flushed.
    println!("tracker listening on http://{addr}");
    std::io::stdout().flush()?;
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
    };
    tracker::serve_with_shutdown(listener, config, shutdown)
        .await
        .context("tracker server failed")
}
