//! Trackers shard by stream (docs/protocol.md §12.9): two real trackers on
//! loopback, every stream announced where rendezvous hashing names, and
//! failover to the next tracker and back when the first stops and returns.

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use anyhow::{ensure, Context, Result};
use shoal_mesh::{
    hints::{Announce, Role, TrackerClient},
    shards::Trackers,
};
use shoal_tools::tracker::{self, RunningTracker, TrackerConfig};
use tokio::time::timeout;

fn stream(i: u64) -> String {
    format!("{:064x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

fn viewer(stream: &str, id: &str) -> Announce {
    Announce {
        addrs: vec!["/ip4/10.0.0.1/tcp/4001".into()],
        max_degree: 8,
        ..Announce::new(stream, id, Role::Viewer)
    }
}

async fn two_trackers() -> Result<[RunningTracker; 2]> {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let config = TrackerConfig::with_interval(1);
    Ok([
        tracker::start(any, config.clone()).await?,
        tracker::start(any, config).await?,
    ])
}

async fn listed(t: &RunningTracker) -> Result<BTreeSet<String>> {
    let client = TrackerClient::new(&format!("http://{}", t.addr))?;
    Ok((client.streams().await?.into_iter())
        .map(|s| s.stream)
        .collect())
}

#[tokio::test]
async fn each_stream_lands_on_its_rendezvous_tracker() -> Result<()> {
    let trackers = two_trackers().await?;
    let urls: Vec<String> = (trackers.iter())
        .map(|t| format!("http://{}", t.addr))
        .collect();
    let client = Trackers::from_urls(&urls)?;
    let mut expected = [BTreeSet::new(), BTreeSet::new()];
    for i in 0..20 {
        let s = stream(i);
        let (_, answered) = timeout(Duration::from_secs(5), client.announce(&viewer(&s, "v")))
            .await
            .context("announce timed out")??;
        ensure!(
            answered == client.order(&s)[0],
            "stream {i} on tracker {answered}"
        );
        expected[answered].insert(s);
    }
    ensure!(expected.iter().all(|e| !e.is_empty()), "one tracker unused");
    for (t, want) in trackers.iter().zip(&expected) {
        ensure!(
            &listed(t).await? == want,
            "tracker {} lists other streams",
            t.addr
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_fails_over_and_comes_back() -> Result<()> {
    let mut trackers = two_trackers().await?;
    let urls: Vec<String> = (trackers.iter())
        .map(|t| format!("http://{}", t.addr))
        .collect();
    let client = Trackers::from_urls(&urls)?;
    let s = stream(7);
    let order = client.order(&s);
    let announce = || async {
        timeout(Duration::from_secs(5), client.announce(&viewer(&s, "v")))
            .await
            .context("announce timed out")?
            .map(|(_, i)| i)
            .map_err(anyhow::Error::from)
    };
    ensure!(announce().await? == order[0]);

    // The connection the client keeps alive is closed with the tracker.
    let first = order[0];
    let addr = trackers[first].addr;
    trackers[first].stop();
    for _ in 0..50 {
        if !trackers[first].is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ensure!(announce().await? == order[1], "no failover");
    ensure!(listed(&trackers[order[1]]).await?.contains(&s));

    // Back at the same address: the stream goes back to it.
    let mut back = None;
    for _ in 0..50 {
        match tracker::start(addr, TrackerConfig::with_interval(1)).await {
            Ok(t) => {
                back = Some(t);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    trackers[first] = back.context("the tracker could not listen again")?;
    ensure!(announce().await? == order[0], "not back on its tracker");

    // Both down: the error is the last tracker's.
    trackers.iter_mut().for_each(RunningTracker::stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(announce().await.is_err());
    Ok(())
}
