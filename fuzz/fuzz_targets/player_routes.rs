//! The viewer's player HTTP routes (docs/fuzzing.md).
//!
//! Each input builds a fresh `Player`, feeds it pieces (whole segments, or
//! single pieces with any segment number, flags and duration: the store must
//! stay sane whatever order or numbers verified pieces come in) and sends
//! requests with any method and path: arbitrary strings, and well-formed
//! `/streams/{id}/{file}` paths with our id or another, in any case, for
//! the playlist, `live.ts`, any segment number or any file name.
//!
//! Asserts: no panic; never a 5xx but the documented 503 with
//! `Retry-After` (playlist before the first segment, too many `live.ts`
//! clients); a request that is not a GET or HEAD of a route, or names
//! another stream, gets a 4xx; `GET /streams/{id}/{n}.ts` is 200 exactly when
//! segment `n` is complete, with its bytes; a 200 playlist is HLS.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::{
    body::Body,
    http::{header, Method, Request, StatusCode},
};
use bytes::Bytes;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use shoal_mesh::proto::{
    piece::{flags, PieceHeader, StreamId},
    Piece,
};
use shoal_node::Player;
use tower::ServiceExt;

const MAX_STEPS: usize = 64;

#[derive(Arbitrary, Debug)]
struct Scenario {
    max_segments: u8,
    steps: Vec<Step>,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Num {
    Small(u8),
    Raw(u64),
}

impl Num {
    fn get(self) -> u64 {
        match self {
            Num::Small(n) => u64::from(n),
            Num::Raw(n) => n,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Step {
    /// Pieces `first_seq..first_seq + count` completing segment `n`.
    Segment {
        n: Num,
        first_seq: Num,
        count: u8,
    },
    /// One piece with any header.
    Piece {
        seq: Num,
        segment: Num,
        first: bool,
        last: bool,
        duration_ms: u32,
        produced_at: u64,
        len: u8,
        other_stream: bool,
    },
    Request {
        method: u8,
        path: Path,
    },
}

#[derive(Arbitrary, Debug)]
enum Path {
    Raw(String),
    Stats,
    Metrics,
    Stream { own: bool, upper: bool, file: File },
}

#[derive(Arbitrary, Debug)]
enum File {
    Playlist,
    Live,
    Segment(Num),
    Raw(String),
}

fn stream() -> StreamId {
    StreamId([7u8; 32])
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// A piece as the node hands it over (verified there; the player does not
/// check signatures, so none is made here).
#[allow(clippy::too_many_arguments)]
fn piece(
    stream: StreamId,
    seq: u64,
    segment: u64,
    fl: u8,
    produced_at: u64,
    duration_ms: u32,
    data: Bytes,
) -> Piece {
    Piece {
        header: PieceHeader {
            stream,
            seq,
            segment,
            flags: fl,
            produced_at,
            duration_ms,
            len: data.len() as u32,
            hash: *blake3::hash(&data).as_bytes(),
        },
        signature: Bytes::from_static(&[0; 64]),
        data,
    }
}

fn method(m: u8) -> Method {
    match m % 7 {
        0 | 1 => Method::GET,
        2 => Method::HEAD,
        3 => Method::POST,
        4 => Method::PUT,
        5 => Method::DELETE,
        _ => Method::OPTIONS,
    }
}

fuzz_target!(|s: Scenario| {
    let player = Player::new(stream(), usize::from(s.max_segments % 40));
    let app = player.router();
    runtime().block_on(async {
        for step in s.steps.iter().take(MAX_STEPS) {
            match step {
                Step::Segment {
                    n,
                    first_seq,
                    count,
                } => {
                    let count = u64::from(1 + count % 8);
                    let first = first_seq.get().min(u64::MAX - count);
                    for i in (0..count).rev() {
                        let mut fl = 0;
                        if i == 0 {
                            fl |= flags::FIRST;
                        }
                        if i + 1 == count {
                            fl |= flags::LAST;
                        }
                        let data = Bytes::from(format!("{}:{i};", n.get()));
                        let p = piece(stream(), first + i, n.get(), fl, 1_000, 1_000, data);
                        player.push_piece(&p);
                    }
                }
                Step::Piece {
                    seq,
                    segment,
                    first,
                    last,
                    duration_ms,
                    produced_at,
                    len,
                    other_stream,
                } => {
                    let mut id = stream();
                    if *other_stream {
                        id.0[0] ^= 1;
                    }
                    let fl = u8::from(*first) * flags::FIRST | u8::from(*last) * flags::LAST;
                    let data = Bytes::from(vec![0x47; usize::from(*len)]);
                    let p = piece(
                        id,
                        seq.get(),
                        segment.get(),
                        fl,
                        *produced_at,
                        *duration_ms,
                        data,
                    );
                    player.push_piece(&p);
                }
                Step::Request { method: m, path } => {
                    request(&player, &app, method(*m), path).await;
                }
            }
        }
    });
});

async fn request(player: &Player, app: &axum::Router, m: Method, path: &Path) {
    let (uri, expect_segment) = match path {
        Path::Raw(s) => (s.clone(), None),
        Path::Stats => ("/stats".to_string(), None),
        Path::Metrics => ("/metrics".to_string(), None),
        Path::Stream { own, upper, file } => {
            let mut id = stream();
            if !own {
                id.0[31] ^= 1;
            }
            let mut id = id.to_string();
            if *upper {
                id = id.to_uppercase();
            }
            let (file, n) = match file {
                File::Playlist => ("index.m3u8".to_string(), None),
                File::Live => ("live.ts".to_string(), None),
                File::Segment(n) => (format!("{}.ts", n.get()), Some(n.get())),
                File::Raw(f) => (f.clone(), None),
            };
            let ours = *own && !*upper;
            (format!("/streams/{id}/{file}"), n.filter(|_| ours))
        }
    };
    let Ok(req) = Request::builder()
        .method(m.clone())
        .uri(uri.as_str())
        .body(Body::empty())
    else {
        return;
    };
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    if status.is_server_error() {
        assert!(
            status == StatusCode::SERVICE_UNAVAILABLE
                && resp.headers().contains_key(header::RETRY_AFTER),
            "{status} for {m} {uri:?}"
        );
    }
    let readable = m == Method::GET || m == Method::HEAD;
    if !readable && m != Method::OPTIONS {
        assert!(status.is_client_error(), "{status} for {m} {uri:?}");
    }
    if let Path::Stream { own: false, .. } = path {
        assert!(
            status.is_client_error() || m == Method::OPTIONS,
            "{status} for another stream {uri:?}"
        );
    }
    // `live.ts` streams without end: never read a body of unknown length.
    if http_body::Body::size_hint(resp.body()).exact().is_none() {
        return;
    }
    let body = resp.into_body().collect().await.expect("a body").to_bytes();
    if let (Some(n), true) = (expect_segment, m == Method::GET) {
        let info = player
            .complete_segments()
            .into_iter()
            .find(|i| i.number == n);
        match info {
            Some(info) => {
                assert_eq!(status, StatusCode::OK, "complete segment {n} not served");
                assert_eq!(body.len(), info.bytes);
            }
            None => assert_eq!(status, StatusCode::NOT_FOUND, "segment {n} not complete"),
        }
    }
    if status == StatusCode::OK && m == Method::GET && uri.ends_with("index.m3u8") {
        assert!(body.starts_with(b"#EXTM3U"), "playlist is not HLS");
    }
}
