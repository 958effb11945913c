//! Without a tracker, on loopback: a seeder and a viewer that knows the
//! seeder's address; a second viewer given only the first viewer's address
//! (`--bootstrap`) finds the seeder through its provider record in Shoal's
//! DHT, learns from identify that it is infrastructure, and plays. And the
//! HTTP origin identify names is where a tracker-less viewer falls back to.

use std::{net::SocketAddr, time::Duration};

use libp2p::{identity::Keypair, Multiaddr, PeerId};
use shoal_mesh::proto::Stats;
use shoal_node::{Node, NodeConfig};
use shoal_seeder::{Input, Seeder, SeederConfig};
use shoal_tests::wait_for;

const LIMIT: Duration = Duration::from_secs(30);

/// A host's first listen address, as `--bootstrap` takes it.
fn bootstrap_addr(addrs: &[Multiaddr], peer: PeerId) -> Multiaddr {
    addrs[0].clone().with_p2p(peer).unwrap()
}

/// A headless viewer with no tracker, joining the DHT through `bootstrap`.
async fn viewer(stream: shoal_mesh::proto::StreamId, bootstrap: Multiaddr, seed: u64) -> Node {
    let mut cfg = NodeConfig::new("", stream);
    cfg.player = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    cfg.dht = true;
    cfg.bootstrap = vec![bootstrap];
    cfg.seed = Some(seed);
    Node::start(cfg).await.unwrap()
}

fn playing(stats: &Stats) -> bool {
    stats.startup_ms.is_some() && stats.payload_from_peers + stats.payload_from_infra > 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_given_only_a_bootstrap_peer_finds_the_seeder_and_plays() {
    let mut cfg = SeederConfig::new("dht", Input::Clip, Keypair::generate_ed25519());
    cfg.dht = true;
    let seeder = Seeder::start(cfg).await.unwrap();
    assert!(seeder.ready(Duration::from_secs(20)).await, "no media");
    let seeder_id = seeder.net.peer_id;

    let first = viewer(
        seeder.stream,
        bootstrap_addr(&seeder.net.addrs, seeder_id),
        1,
    )
    .await;
    wait_for("the first viewer to play", LIMIT, || {
        playing(&first.stats())
    })
    .await;

    let second_bootstrap = bootstrap_addr(&first.net.addrs, first.net.peer_id);
    let second = viewer(seeder.stream, second_bootstrap, 2).await;
    wait_for(
        "the second viewer to take the seeder as a neighbour",
        LIMIT,
        || second.net.neighbors().contains(&seeder_id),
    )
    .await;
    wait_for("the second viewer to play", LIMIT, || {
        playing(&second.stats())
    })
    .await;
    let stats = second.stats();
    assert_eq!(stats.bad_pieces, 0, "{stats:?}");
    assert_eq!(stats.protocol_violations, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_neither_tracker_nor_dht_says_so() {
    let stream = shoal_mesh::proto::StreamId([1; 32]);
    let mut cfg = NodeConfig::new("", stream);
    cfg.player = None;
    let err = Node::start(cfg).await.unwrap_err();
    assert!(matches!(err, shoal_node::NodeError::NoDiscovery), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_address_without_a_peer_id_is_refused() {
    let stream = shoal_mesh::proto::StreamId([1; 32]);
    let mut cfg = NodeConfig::new("", stream);
    cfg.player = None;
    cfg.dht = true;
    cfg.bootstrap = vec!["/ip4/127.0.0.1/tcp/9".parse().unwrap()];
    let err = Node::start(cfg).await.unwrap_err();
    assert!(err.to_string().contains("/p2p/"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_a_tracker_falls_back_to_the_origin_identify_named() {
    // The seeder has room for one viewer, and the first takes it; that
    // viewer can upload next to nothing. The second viewer hears of every
    // piece from the first but gets few from it in time: the rest can only
    // come from the seeder's HTTP origin, whose URL only identify gave it.
    let mut cfg = SeederConfig::new("dht", Input::Clip, Keypair::generate_ed25519());
    cfg.dht = true;
    cfg.max_degree = 1;
    let seeder = Seeder::start(cfg).await.unwrap();
    assert!(seeder.ready(Duration::from_secs(20)).await, "no media");
    let boot = bootstrap_addr(&seeder.net.addrs, seeder.net.peer_id);
    let mut cfg = NodeConfig::new("", seeder.stream);
    cfg.player = None;
    cfg.dht = true;
    cfg.bootstrap = vec![boot.clone()];
    cfg.upload_limit_bps = Some(8_000);
    cfg.seed = Some(4);
    let slow = Node::start(cfg).await.unwrap();
    wait_for("the slow viewer to play", LIMIT, || playing(&slow.stats())).await;

    let second = viewer(seeder.stream, boot, 5).await;
    wait_for(
        "the second viewer to play, partly from the origin",
        LIMIT,
        || {
            let stats = second.stats();
            playing(&stats) && stats.fallback_requests > 0 && seeder.origin.payload_served() > 0
        },
    )
    .await;
    assert!(!second.net.neighbors().contains(&seeder.net.peer_id));
}
