//! Reflectors on loopback: a tracker whose coordinator assigns two
//! reflectors to the seeder's stream, viewers whose fallback goes to the
//! reflectors, and one reflector killed while they play.

use std::time::Duration;

use shoal_mesh::proto::Stats;
use shoal_node::{Node, NodeConfig};
use shoal_reflector::{Reflector, ReflectorConfig};
use shoal_seeder::Input;
use shoal_tests::{until, LocalMesh};

fn continuity_since(now: &Stats, then: &Stats) -> f64 {
    let due = now.pieces_due - then.pieces_due;
    let on_time = now.pieces_on_time - then.pieces_on_time;
    if due == 0 {
        0.0
    } else {
        on_time as f64 / due as f64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_fall_back_to_reflectors_and_survive_losing_one() {
    let mut mesh = LocalMesh::start(0, Input::Clip).await.unwrap();
    let stream = mesh.seeder.stream;
    for i in 0..6 {
        let mut cfg = NodeConfig::new(&mesh.tracker_url, stream);
        cfg.seed = Some(i + 1);
        cfg.player = None;
        // Viewers with next to no upload: most of what they lack comes
        // from infrastructure.
        cfg.upload_limit_bps = Some(8_000);
        mesh.nodes.push(Node::start(cfg).await.unwrap());
    }
    // The coordinator assigns reflectors to a stream with viewers; each
    // takes pieces from its parents (the seeder and the other reflector).
    let mut reflectors = Vec::new();
    for _ in 0..2 {
        let cfg = ReflectorConfig::new(&mesh.tracker_url);
        reflectors.push(Reflector::start(cfg).await.unwrap());
    }
    let carrying = until(Duration::from_secs(15), || {
        reflectors.iter().all(|r| {
            r.carried()
                .get(&stream)
                .is_some_and(|s| s.newest_seq.is_some())
        })
    })
    .await;
    let carried: Vec<_> = reflectors.iter().map(|r| r.carried()).collect();
    assert!(carrying, "reflectors never carried the stream: {carried:?}");
    // Until the reflectors announced the stream, the seeder was the
    // fallback; from the next hints on, the reflectors are.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seeder_before = mesh.seeder.origin.payload_served();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let seeder_served = mesh.seeder.origin.payload_served();
    let before: Vec<Stats> = mesh.nodes.iter().map(|n| n.stats()).collect();
    for (i, v) in before.iter().enumerate() {
        assert!(v.startup_ms.is_some(), "viewer {i} never started: {v:?}");
        assert!(
            v.payload_from_infra > 0,
            "viewer {i} took nothing from infrastructure: {v:?}"
        );
    }
    assert_eq!(
        seeder_served, seeder_before,
        "viewers fell back to the seeder, not the reflectors"
    );
    eprintln!(
        "seeder: mesh payload sent {} B, HTTP served {} B",
        mesh.seeder.stats().payload_sent,
        seeder_served
    );
    let reflected: Vec<Stats> = reflectors
        .iter()
        .map(|r| r.carried()[&stream].clone())
        .collect();
    for (i, r) in reflected.iter().enumerate() {
        eprintln!(
            "reflector {i}: in {} B (+{} B second copies), sent {} B",
            r.payload_from_infra, r.payload_duplicate, r.payload_sent
        );
        assert!(
            r.payload_duplicate > 0,
            "reflector {i} had one parent only: {r:?}"
        );
        assert_eq!(r.bad_pieces, 0, "reflector {i}: {r:?}");
    }

    // One reflector dies: the viewers fail over to the other, the
    // coordinator reassigns, and nobody misses a piece.
    reflectors.remove(0).shutdown();
    tokio::time::sleep(Duration::from_secs(12)).await;
    for (i, (n, then)) in mesh.nodes.iter().zip(&before).enumerate() {
        let now = n.stats();
        let c = continuity_since(&now, then);
        assert!(
            c >= 0.99,
            "viewer {i} continuity {c} after a reflector died: {now:?}"
        );
    }
    assert_eq!(
        mesh.seeder.origin.payload_served(),
        seeder_before,
        "viewers fell back to the seeder after a reflector died"
    );
}
