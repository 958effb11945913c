//! Helpers for Shoal's end-to-end tests: a whole local mesh in one process.

use std::{net::SocketAddr, time::Duration};

use anyhow::{bail, Context};
use libp2p::identity::Keypair;
use shoal_node::{Node, NodeConfig};
use shoal_seeder::{Input, Seeder, SeederConfig};
use shoal_tools::tracker::{self, TrackerConfig};

/// Tracker + seeder + viewers on loopback.
#[derive(Debug)]
pub struct LocalMesh {
    pub tracker_url: String,
    pub seeder: Seeder,
    pub nodes: Vec<Node>,
    tracker: tokio::task::JoinHandle<()>,
}

impl LocalMesh {
    /// Starts every role and waits for the seeder's first piece.
    pub async fn start(viewers: usize, input: Input) -> anyhow::Result<LocalMesh> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (addr, tracker) = tracker::spawn(any, TrackerConfig::with_interval(1)).await?;
        let tracker_url = format!("http://{addr}");
        let mut cfg = SeederConfig::new("test", input, Keypair::generate_ed25519());
        cfg.tracker = Some(tracker_url.clone());
        let seeder = Seeder::start(cfg).await.context("seeder")?;
        if !seeder.ready(Duration::from_secs(20)).await {
            bail!("the seeder published nothing in 20 s");
        }
        let mut nodes = Vec::new();
        for i in 0..viewers {
            let mut cfg = NodeConfig::new(&tracker_url, seeder.stream);
            cfg.player = Some(any);
            cfg.seed = Some(i as u64 + 1);
            nodes.push(
                Node::start(cfg)
                    .await
                    .with_context(|| format!("viewer {i}"))?,
            );
        }
        Ok(LocalMesh {
            tracker_url,
            seeder,
            nodes,
            tracker,
        })
    }
}

impl Drop for LocalMesh {
    fn drop(&mut self) {
        self.tracker.abort();
    }
}

/// Polls `done` every 100 ms until it holds or `limit` passes; whether it
/// held.
pub async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}

/// [`until`], failing the test with `what` if `limit` passes first.
pub async fn wait_for(what: &str, limit: Duration, done: impl FnMut() -> bool) {
    assert!(
        until(limit, done).await,
        "timed out after {limit:?} waiting for {what}"
    );
}
