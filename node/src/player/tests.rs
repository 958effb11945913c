//! The HTTP API, over a real socket.

use std::{net::SocketAddr, time::Duration};

use bytes::{Bytes, BytesMut};
use m3u8_rs::parse_media_playlist_res;
use shoal_mesh::proto::{piece::flags, Signer};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use super::{segments::tests::*, *};

const LIMIT: Duration = Duration::from_secs(10);

async fn start(player: &Player) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve(player.clone(), listener));
    addr
}

/// Completes segment `n` (3 pieces, pushed last to first).
fn push_segment(player: &Player, s: &Signer, n: u64, at: Instant) {
    for p in segment_pieces(s, n, n * 3, 3, 1_000).iter().rev() {
        player.push_piece_at(p, at);
    }
}

fn player_with(segments: impl IntoIterator<Item = u64>) -> (Player, Signer) {
    let s = signer();
    let player = Player::new(s.stream(), 30);
    for n in segments {
        push_segment(&player, &s, n, Instant::now());
    }
    (player, s)
}

async fn get(url: String) -> reqwest::Response {
    timeout(LIMIT, reqwest::get(url)).await.unwrap().unwrap()
}

/// Sends `path` verbatim (no client-side normalisation) and returns the status.
async fn raw_status(addr: SocketAddr, path: &str) -> u16 {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    timeout(LIMIT, conn.read_to_end(&mut resp))
        .await
        .unwrap()
        .unwrap();
    let status = String::from_utf8_lossy(&resp[..12.min(resp.len())]).into_owned();
    status
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {status:?}"))
}

/// Reads exactly `n` more body bytes of a streaming response.
async fn read_body(resp: &mut reqwest::Response, buf: &mut BytesMut, n: usize) -> Bytes {
    while buf.len() < n {
        let chunk = timeout(LIMIT, resp.chunk())
            .await
            .expect("live.ts stalled")
            .unwrap()
            .expect("live.ts ended");
        buf.extend_from_slice(&chunk);
    }
    buf.split_to(n).freeze()
}

#[tokio::test]
async fn playlist_lists_complete_segments() {
    let (player, _) = player_with(0..8);
    let addr = start(&player).await;
    let id = player.stream();
    let resp = get(format!("http://{addr}/streams/{id}/index.m3u8")).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["content-type"], "application/vnd.apple.mpegurl");
    assert_eq!(h["cache-control"], "no-cache");
    let text = resp.text().await.unwrap();
    let pl = parse_media_playlist_res(text.as_bytes()).unwrap();
    assert_eq!(pl.media_sequence, 2);
    assert_eq!(pl.target_duration, 1);
    let uris: Vec<&str> = pl.segments.iter().map(|s| s.uri.as_str()).collect();
    assert_eq!(uris, ["2.ts", "3.ts", "4.ts", "5.ts", "6.ts", "7.ts"]);
    assert!(pl.segments.iter().all(|s| s.duration == 1.0));
    // Every listed URI resolves to the segment's bytes.
    let resp = get(format!("http://{addr}/streams/{id}/7.ts")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
    assert_eq!(resp.bytes().await.unwrap(), segment_bytes(7, 3));
}

#[tokio::test]
async fn playlist_is_503_until_a_segment_completes() {
    let s = signer();
    let player = Player::new(s.stream(), 30);
    let addr = start(&player).await;
    let url = format!("http://{addr}/streams/{}/index.m3u8", player.stream());
    // Only part of a segment.
    player.push_piece(&segment_pieces(&s, 0, 0, 3, 1_000)[0]);
    let resp = get(url.clone()).await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    push_segment(&player, &s, 0, Instant::now());
    assert_eq!(get(url).await.status(), 200);
}

#[tokio::test]
async fn playlist_marks_a_skipped_gap() {
    let (player, s) = player_with(0..2);
    // Segment 2 never completes; 3 completed long enough ago to give up on 2.
    let past = Instant::now().checked_sub(Duration::from_secs(10)).unwrap();
    push_segment(&player, &s, 3, past);
    let addr = start(&player).await;
    let resp = get(format!("http://{addr}/streams/{}/index.m3u8", s.stream())).await;
    let text = resp.text().await.unwrap();
    let pl = parse_media_playlist_res(text.as_bytes()).unwrap();
    assert_eq!(pl.media_sequence, 0);
    let marks: Vec<(&str, bool)> = pl
        .segments
        .iter()
        .map(|s| (s.uri.as_str(), s.discontinuity))
        .collect();
    assert_eq!(marks, [("0.ts", false), ("1.ts", false), ("3.ts", true)]);
}

#[tokio::test]
async fn bad_paths_are_404() {
    let (player, _) = player_with(0..2);
    let addr = start(&player).await;
    let id = player.stream();
    let other = signer().stream();
    let upper = id.to_string().to_uppercase();
    for path in [
        format!("/streams/{other}/index.m3u8"),
        format!("/streams/{other}/0.ts"),
        "/streams/xyz/index.m3u8".to_string(),
        format!("/streams/{upper}/index.m3u8"),
        format!("/streams/{id}/../../etc/passwd"),
        format!("/streams/{id}/..%2F..%2Fetc%2Fpasswd"),
        format!("/streams/{id}/%2e%2e"),
        format!("/streams/{id}/%FF.ts"),
        format!("/streams/{id}/abc.ts"),
        format!("/streams/{id}/.ts"),
        format!("/streams/{id}/+1.ts"),
        format!("/streams/{id}/-1.ts"),
        format!("/streams/{id}/1.ts.bak"),
        format!("/streams/{id}/0.ts/x"),
        format!("/streams/{id}/99999999999999999999999.ts"),
        format!("/streams/{id}/18446744073709551616.ts"),
        format!("/streams/{id}/18446744073709551615.ts"),
        format!("/streams/{id}/5.ts"),
        format!("/streams/{id}/index.m3u"),
        format!("/streams/{id}"),
        "/".to_string(),
        "/etc/passwd".to_string(),
        "/stats/x".to_string(),
    ] {
        assert_eq!(raw_status(addr, &path).await, 404, "{path}");
    }
    // The same server does answer good paths.
    assert_eq!(raw_status(addr, &format!("/streams/{id}/1.ts")).await, 200);
    assert_eq!(raw_status(addr, &format!("/streams/{id}/01.ts")).await, 200);
}

#[tokio::test]
async fn stats_json_merges_report_and_segments() {
    let (player, _) = player_with([4, 5, 6]);
    let mut stats = Stats {
        payload_from_peers: 3,
        payload_from_infra: 1,
        pieces_due: 2,
        pieces_on_time: 2,
        ..Stats::default()
    };
    stats.lag_ms.record(250);
    player.set_stats(stats);
    let addr = start(&player).await;
    let resp = get(format!("http://{addr}/stats")).await;
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["offload"], 0.75);
    assert_eq!(v["continuity"], 1.0);
    assert_eq!(v["lag_ms"]["p50"], 250);
    assert_eq!(v["stream"], player.stream().to_string());
    assert_eq!(
        v["segments"],
        serde_json::json!({"first": 4, "last": 6, "complete": 3})
    );
}

#[tokio::test]
async fn metrics_are_openmetrics_text() {
    let (player, _) = player_with([0]);
    player.set_stats(Stats {
        payload_from_peers: 1,
        payload_from_infra: 1,
        bad_pieces: 2,
        ..Stats::default()
    });
    let addr = start(&player).await;
    let resp = get(format!("http://{addr}/metrics")).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = resp.text().await.unwrap();
    assert!(text.contains("shoal_offload 0.5\n"), "{text}");
    assert!(text.contains("shoal_bad_pieces_total 2\n"), "{text}");
    assert!(text.contains("shoal_segments_complete 1\n"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn cors_allows_any_origin() {
    let (player, _) = player_with([0]);
    let addr = start(&player).await;
    let url = format!("http://{addr}/streams/{}/index.m3u8", player.stream());
    let client = reqwest::Client::new();
    let resp = timeout(
        LIMIT,
        client
            .get(&url)
            .header("origin", "http://example.com")
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let preflight = timeout(
        LIMIT,
        client
            .request(reqwest::Method::OPTIONS, &url)
            .header("origin", "http://example.com")
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "range")
            .send(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));
}

#[tokio::test]
async fn live_ts_follows_the_timeline() {
    let (player, s) = player_with(0..3);
    let addr = start(&player).await;
    let url = format!("http://{addr}/streams/{}/live.ts", s.stream());
    let mut resp = get(url.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "video/mp2t");
    let mut buf = BytesMut::new();
    // Starts at the newest complete segment.
    let first = read_body(&mut resp, &mut buf, segment_bytes(2, 3).len()).await;
    assert_eq!(first, segment_bytes(2, 3));
    // Picks up a segment completed after the request started.
    tokio::time::sleep(Duration::from_millis(50)).await;
    push_segment(&player, &s, 3, Instant::now());
    let next = read_body(&mut resp, &mut buf, segment_bytes(3, 3).len()).await;
    assert_eq!(next, segment_bytes(3, 3));
    // Segment 4 never completes; 5 completed long ago: 4 is skipped.
    let past = Instant::now().checked_sub(Duration::from_secs(10)).unwrap();
    push_segment(&player, &s, 5, past);
    let next = read_body(&mut resp, &mut buf, segment_bytes(5, 3).len()).await;
    assert_eq!(next, segment_bytes(5, 3));
    assert!(buf.is_empty());
    assert_eq!(
        player.inner.live_clients.available_permits(),
        MAX_LIVE_CLIENTS - 1
    );
    // A client that goes away releases its slot once the stream notices.
    drop(resp);
    push_segment(&player, &s, 6, Instant::now());
    timeout(LIMIT, async {
        while player.inner.live_clients.available_permits() < MAX_LIVE_CLIENTS {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("live.ts stream not dropped after disconnect");
}

#[tokio::test]
async fn live_ts_waits_out_a_gap_then_skips_it() {
    let (player, s) = player_with([0]);
    let addr = start(&player).await;
    let mut resp = get(format!("http://{addr}/streams/{}/live.ts", s.stream())).await;
    let mut buf = BytesMut::new();
    read_body(&mut resp, &mut buf, segment_bytes(0, 3).len()).await;
    // 1 is missing; 2 completes now. With no other activity the stream
    // itself must wake at the gap deadline (2 s) and move on.
    push_segment(&player, &s, 2, Instant::now());
    let next = read_body(&mut resp, &mut buf, segment_bytes(2, 3).len()).await;
    assert_eq!(next, segment_bytes(2, 3));
}

/// MPEG-TS segments, cut into pieces at arbitrary offsets, come out of
/// `live.ts` as one stream of whole packets with continuous counters.
#[tokio::test]
async fn live_ts_is_a_seamless_transport_stream() {
    use mpeg2ts::ts::{
        payload::{self, Pat},
        ContinuityCounter, Pid, ProgramAssociation, ReadTsPacket, TransportScramblingControl,
        TsHeader, TsPacket, TsPacketReader, TsPacketWriter, TsPayload, VersionNumber,
        WriteTsPacket,
    };

    const PACKETS: u8 = 7;
    let header = |pid: u16, cc: u8| TsHeader {
        transport_error_indicator: false,
        transport_priority: false,
        pid: Pid::new(pid).unwrap(),
        transport_scrambling_control: TransportScramblingControl::NotScrambled,
        continuity_counter: ContinuityCounter::from_u8(cc % 16).unwrap(),
    };
    let ts_segment = |n: u64| -> Vec<u8> {
        let mut w = TsPacketWriter::new(Vec::new());
        let pat = Pat {
            transport_stream_id: 1,
            version_number: VersionNumber::new(),
            table: vec![ProgramAssociation {
                program_num: 1,
                program_map_pid: Pid::new(0x1000).unwrap(),
            }],
        };
        w.write_ts_packet(&TsPacket {
            header: header(0, n as u8),
            adaptation_field: None,
            payload: Some(TsPayload::Pat(pat)),
        })
        .unwrap();
        for i in 0..PACKETS {
            let data = [n as u8 ^ i; payload::Bytes::MAX_SIZE];
            w.write_ts_packet(&TsPacket {
                header: header(0x10, n as u8 * PACKETS + i),
                adaptation_field: None,
                payload: Some(TsPayload::Raw(payload::Bytes::new(&data).unwrap())),
            })
            .unwrap();
        }
        w.into_stream()
    };

    let s = signer();
    let player = Player::new(s.stream(), 30);
    let mut seq = 0;
    let mut push = |n: u64| {
        let data = Bytes::from(ts_segment(n));
        let chunks: Vec<Bytes> = data.chunks(500).map(Bytes::copy_from_slice).collect();
        let pieces: Vec<Piece> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut fl = 0;
                if i == 0 {
                    fl |= flags::FIRST;
                }
                if i + 1 == chunks.len() {
                    fl |= flags::LAST;
                }
                s.sign(seq + i as u64, n, fl, 0, 1_000, c.clone()).unwrap()
            })
            .collect();
        seq += pieces.len() as u64;
        for p in pieces.iter().rev() {
            player.push_piece(p);
        }
    };
    push(0);
    let addr = start(&player).await;
    let mut resp = get(format!("http://{addr}/streams/{}/live.ts", s.stream())).await;
    for n in 1..4 {
        push(n);
    }
    let len = ts_segment(0).len();
    let mut buf = BytesMut::new();
    let body = read_body(&mut resp, &mut buf, 4 * len).await;
    let mut reader = TsPacketReader::new(&body[..]);
    let mut data_counters = Vec::new();
    let mut pats = 0;
    while let Some(packet) = reader.read_ts_packet().unwrap() {
        match packet.payload {
            Some(TsPayload::Pat(_)) => pats += 1,
            Some(TsPayload::Raw(_)) => data_counters.push(packet.header.continuity_counter.as_u8()),
            other => panic!("unexpected payload {other:?}"),
        }
    }
    assert_eq!(pats, 4);
    let expected: Vec<u8> = (0..4 * PACKETS).map(|i| i % 16).collect();
    assert_eq!(data_counters, expected);
}
