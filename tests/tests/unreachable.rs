//! A viewer whose every candidate is unreachable (issue 18), on loopback:
//! the tracker's hints name only addresses nobody listens on, but the
//! seeder's HTTP origin answers. The viewer learns the live edge from the
//! origin (`GET /v1/stream`) and plays from infrastructure.

use std::{net::SocketAddr, time::Duration};

use axum::{routing::post, Json, Router};
use libp2p::{identity::Keypair, PeerId};
use shoal_mesh::{
    hints::{Hints, InfraHint, PeerHint, Role},
    proto::Stats,
};
use shoal_node::{Node, NodeConfig};
use shoal_seeder::{Input, Seeder, SeederConfig};
use shoal_tests::until;

/// Start-up and catching the stream are given this long: far more than
/// they take, on a machine shared with builds.
const LIMIT: Duration = Duration::from_secs(30);

/// A loopback TCP address nobody listens on.
async fn dead_addr() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("/ip4/127.0.0.1/tcp/{port}")
}

/// A tracker that answers every announce with `hints`.
async fn tracker_answering(hints: Hints) -> String {
    let app = Router::new().route(
        "/v1/announce",
        post(move || {
            let hints = hints.clone();
            async move { Json(hints) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_reaches_no_peer_plays_from_the_origin() {
    let mut cfg = SeederConfig::new("unreachable", Input::Clip, Keypair::generate_ed25519());
    cfg.http = SocketAddr::from(([127, 0, 0, 1], 0));
    let seeder = Seeder::start(cfg).await.unwrap();
    assert!(seeder.ready(Duration::from_secs(20)).await, "no piece cut");

    // Every peer the viewer is told of, the seeder included, is at an
    // address nobody listens on; only the seeder's origin is real.
    let mut candidates = Vec::new();
    for _ in 0..4 {
        candidates.push(PeerHint {
            peer_id: PeerId::random().to_string(),
            addrs: vec![dead_addr().await],
            role: Role::Viewer,
            degree: 1,
            max_degree: 8,
            coord: None,
            loc: Default::default(),
        });
    }
    let hints = Hints {
        candidates,
        seeders: vec![InfraHint {
            peer_id: PeerId::random().to_string(),
            addrs: vec![dead_addr().await],
            http: Some(format!("http://{}", seeder.http_addr)),
        }],
        interval_s: 1,
        you: Default::default(),
        viewers: 5,
        budget_bps: None,
        reflected: false,
    };
    let tracker = tracker_answering(hints).await;

    let mut cfg = NodeConfig::new(&tracker, seeder.stream);
    cfg.player = None;
    cfg.seed = Some(1);
    let viewer = Node::start(cfg).await.unwrap();
    let started = until(LIMIT, || viewer.stats().startup_ms.is_some()).await;
    let stats = viewer.stats();
    assert!(started, "the viewer never started: {stats:?}");
    assert!(stats.edge_queries > 0, "{stats:?}");
    assert_eq!(stats.neighbors, 0, "a dead address answered: {stats:?}");
    assert_eq!(stats.payload_from_peers, 0, "{stats:?}");

    // It keeps playing, from the origin.
    let then = viewer.stats();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let now = viewer.stats();
    let due = now.pieces_due - then.pieces_due;
    let on_time = now.pieces_on_time - then.pieces_on_time;
    assert!(due > 0, "nothing fell due: {now:?}");
    assert!(
        on_time as f64 >= 0.95 * due as f64,
        "{on_time} of {due} pieces on time: {now:?}"
    );
    assert!(now.payload_from_infra > then.payload_from_infra);
    let served: Stats = seeder.stats();
    eprintln!(
        "viewer: start-up {:?} ms, {} edge queries; seeder HTTP served {} B (mesh sent {} B)",
        now.startup_ms,
        now.edge_queries,
        seeder.origin.payload_served(),
        served.payload_sent
    );
}
