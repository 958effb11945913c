//! A real mesh on loopback: tracker + seeder (bundled clip) + 10 viewers,
//! libp2p for real; the measures and the player's output are checked.

use std::time::Duration;

use mpeg2ts::{
    es::StreamType,
    ts::{ReadTsPacket, TsPacketReader, TsPayload},
};
use shoal_mesh::proto::{Stats, Summary};
use shoal_seeder::Input;
use shoal_tests::LocalMesh;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_viewers_play_the_clip_mostly_from_each_other() {
    let mesh = LocalMesh::start(10, Input::Clip).await.unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;

    let viewers: Vec<Stats> = mesh.nodes.iter().map(|n| n.stats()).collect();
    let summary = Summary::new(
        &viewers,
        &[mesh.seeder.stats()],
        mesh.seeder.origin.payload_served(),
    );
    eprintln!("{summary:?}");
    for (i, v) in viewers.iter().enumerate() {
        assert!(v.startup_ms.is_some(), "viewer {i} never started: {v:?}");
        let c = v.continuity().unwrap_or(0.0);
        assert!(c >= 0.99, "viewer {i} continuity {c}: {v:?}");
        assert!(v.neighbors as usize <= 8, "viewer {i} over the degree cap");
    }
    assert!(summary.offload >= 0.8, "offload {}", summary.offload);

    check_player_output(&mesh.nodes[3]).await;
}

/// The playlist parses, and its segments are MPEG-TS with the video PID and
/// increasing PTS, across segment boundaries too.
async fn check_player_output(node: &shoal_node::Node) {
    let http = reqwest::Client::new();
    let text = http
        .get(node.playlist_url())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let playlist = m3u8_rs::parse_media_playlist_res(&text).expect("a media playlist");
    assert!(playlist.segments.len() >= 3, "{playlist:?}");
    assert!(!playlist.end_list, "a live playlist has no end");
    let base = node.playlist_url().replace("index.m3u8", "");
    let mut ts = Vec::new();
    for seg in &playlist.segments {
        assert!(seg.duration > 0.5 && seg.duration < 2.0, "{seg:?}");
        let body = http
            .get(format!("{base}{}", seg.uri))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len() % 188, 0);
        ts.extend_from_slice(&body);
    }
    let (video_pid, pts) = video_pts(&ts);
    assert!(video_pid.is_some(), "no video PID in the segments");
    assert!(
        pts.len() >= 25 * playlist.segments.len() / 2,
        "{} PTS",
        pts.len()
    );
    // Decode order is not presentation order with B-frames; the clip has
    // none, so presentation times rise strictly.
    assert!(pts.windows(2).all(|w| w[1] > w[0]), "PTS must increase");
}

/// The video PID (from the PMT) and the PTS of its PES packets, in order.
fn video_pts(ts: &[u8]) -> (Option<u16>, Vec<u64>) {
    let mut reader = TsPacketReader::new(ts);
    let mut pmt_pid = None;
    let mut video = None;
    let mut pts = Vec::new();
    while let Ok(Some(packet)) = reader.read_ts_packet() {
        let pid = packet.header.pid.as_u16();
        match packet.payload {
            Some(TsPayload::Pat(pat)) => {
                pmt_pid = pat.table.first().map(|e| e.program_map_pid.as_u16());
            }
            Some(TsPayload::Pmt(pmt)) if Some(pid) == pmt_pid => {
                video = pmt
                    .es_info
                    .iter()
                    .find(|e| matches!(e.stream_type, StreamType::H264 | StreamType::H265))
                    .map(|e| e.elementary_pid.as_u16());
            }
            Some(TsPayload::PesStart(pes)) if Some(pid) == video => {
                if let Some(t) = pes.header.pts {
                    pts.push(t.as_u64());
                }
            }
            _ => {}
        }
    }
    (video, pts)
}
