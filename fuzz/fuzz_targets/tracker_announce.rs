//! The tracker's announce handling, through its HTTP router and its
//! `Registry` (docs/fuzzing.md).
//!
//! Each input is a sequence of requests to one fresh tracker: raw bodies
//! and arbitrary paths and methods, and announces built from structured
//! values (good or bad stream ids, peer ids, addresses, coordinates,
//! counters) from arbitrary remote addresses. The same structured announces
//! go to a `Registry` driven directly on a virtual clock, so peers also age
//! out and get purged. Half the inputs run with tiny limits, so the
//! "tracker full" paths run too.
//!
//! Asserts: no panic; no 5xx but a 503 with `Retry-After` when a limit is
//! reached; a bad announce (by `Announce::validate`) gets a 400 and a bad
//! body a 4xx; a 200 carries hints with at most `want` (≤ `MAX_WANT`)
//! candidates, never the announcer, and at most `MAX_SEEDER_HINTS` seeders;
//! the registry never holds more streams or peers than its limits.

#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::OnceLock,
    time::{Duration, Instant},
};

use arbitrary::Arbitrary;
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{header, Method, Request, StatusCode},
    Router,
};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use shoal_mesh::{
    allocation::ViewerReport,
    hints::{Announce, Hints, Role, DEFAULT_WANT, MAX_WANT},
    proto::Coord,
};
use shoal_tools::tracker::{router, AnnounceError, Registry, TrackerConfig, MAX_SEEDER_HINTS};
use tower::ServiceExt;

/// Requests per input.
const MAX_OPS: usize = 32;
/// Stream ids the structured announces share, so swarms form.
const STREAMS: [&str; 3] = [
    "00000000000000000000000000000000000000000000000000000000000000aa",
    "00000000000000000000000000000000000000000000000000000000000000bb",
    "00000000000000000000000000000000000000000000000000000000000000cc",
];

#[derive(Arbitrary, Debug)]
struct Scenario {
    tiny_limits: bool,
    seed: u64,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// `POST /v1/announce` with these bytes as the body.
    RawAnnounce {
        body: Vec<u8>,
        json: bool,
        from: Remote,
    },
    Announce {
        a: FuzzAnnounce,
        from: Remote,
    },
    /// Any method, path and body.
    Request {
        method: u8,
        path: String,
        body: Vec<u8>,
    },
    /// Time passes for the directly driven registry.
    Wait {
        secs: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Remote {
    None,
    V4([u8; 4]),
    V6([u16; 8]),
}

impl Remote {
    fn ip(&self) -> Option<IpAddr> {
        match *self {
            Remote::None => None,
            Remote::V4(b) => Some(IpAddr::V4(Ipv4Addr::from(b))),
            Remote::V6(s) => Some(IpAddr::V6(Ipv6Addr::from(s))),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Text {
    Known(u8),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
enum Counters {
    Null,
    Number(u64),
    Text(String),
    Deep(u8),
    Wide(u16),
}

#[derive(Arbitrary, Debug)]
struct FuzzAnnounce {
    stream: Text,
    upper: bool,
    peer_id: Text,
    addrs: Vec<Text>,
    role: u8,
    degree: u32,
    max_degree: u32,
    upload_kbps: u32,
    http: Option<String>,
    name: Option<String>,
    want: Option<u32>,
    counters: Counters,
    coord: Option<(f32, f32, f32, f32)>,
    /// infra bytes, pieces due, pieces in time, playing, upload
    report: Option<(u64, u64, u64, bool, u64)>,
    bitrate_kbps: u32,
}

impl FuzzAnnounce {
    fn announce(&self) -> Announce {
        let stream = match &self.stream {
            Text::Known(i) => STREAMS[usize::from(*i) % STREAMS.len()].to_string(),
            Text::Raw(s) => s.clone(),
        };
        let stream = if self.upper {
            stream.to_uppercase()
        } else {
            stream
        };
        let peer_id = match &self.peer_id {
            Text::Known(i) => format!("peer{}", i % 16),
            Text::Raw(s) => s.clone(),
        };
        let addrs = self
            .addrs
            .iter()
            .take(24)
            .map(|a| match a {
                Text::Known(i) => format!("/ip4/10.0.{}.{}/tcp/4001", i / 16, i % 16),
                Text::Raw(s) => s.clone(),
            })
            .collect();
        let counters = match &self.counters {
            Counters::Null => serde_json::Value::Null,
            Counters::Number(n) => (*n).into(),
            Counters::Text(s) => s.clone().into(),
            Counters::Deep(d) => {
                let mut v = serde_json::json!(1);
                for _ in 0..(d % 100) {
                    v = serde_json::json!({ "x": v });
                }
                v
            }
            Counters::Wide(n) => serde_json::Value::Array(vec![1.into(); usize::from(*n % 2048)]),
        };
        Announce {
            stream,
            peer_id,
            addrs,
            role: match self.role % 3 {
                0 => Role::Viewer,
                1 => Role::Seeder,
                _ => Role::Reflector,
            },
            degree: self.degree,
            max_degree: self.max_degree,
            upload_kbps: self.upload_kbps,
            http: self.http.clone(),
            name: self.name.clone(),
            want: self.want.unwrap_or(DEFAULT_WANT),
            counters,
            coord: self.coord.map(|(x, y, height, error)| Coord {
                x,
                y,
                height,
                error,
            }),
            report: self.report.map(
                |(infra_bytes, pieces_due, pieces_in_time, playing, upload_bps)| ViewerReport {
                    infra_bytes,
                    pieces_due,
                    pieces_in_time,
                    playing,
                    upload_bps,
                },
            ),
            bitrate_kbps: self.bitrate_kbps,
        }
    }
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

fn config(tiny: bool) -> TrackerConfig {
    let mut c = TrackerConfig::default();
    if tiny {
        c.max_streams = 2;
        c.max_peers_per_stream = 3;
        c.max_peers_total = 5;
        c.max_body_bytes = 512;
    }
    c
}

/// Sends one request; checks the status class; returns status and body.
async fn send(app: &Router, req: Request<Body>, tiny: bool) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let retry = resp.headers().contains_key(header::RETRY_AFTER);
    if status.is_server_error() {
        assert!(
            tiny && status == StatusCode::SERVICE_UNAVAILABLE && retry,
            "server error {status}"
        );
    }
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
        .to_vec();
    (status, body)
}

fn post(body: Vec<u8>, json: bool, from: &Remote) -> Request<Body> {
    let mut req = Request::post("/v1/announce");
    if json {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let mut req = req.body(Body::from(body)).expect("a request");
    if let Some(ip) = from.ip() {
        req.extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(ip, 4001)));
    }
    req
}

fn check_hints(h: &Hints, a: &Announce) {
    assert!(h.candidates.len() <= a.want.min(MAX_WANT) as usize);
    assert!(h.seeders.len() <= MAX_SEEDER_HINTS);
    assert!(
        h.candidates.iter().all(|c| c.peer_id != a.peer_id),
        "the announcer among its own candidates"
    );
}

fuzz_target!(|s: Scenario| {
    let cfg = config(s.tiny_limits);
    let (max_streams, max_peers) = (cfg.max_streams, cfg.max_peers_total);
    let app = router(cfg.clone());
    let mut registry = Registry::new(cfg, s.seed);
    let mut now = Instant::now();
    runtime().block_on(async {
        for op in s.ops.iter().take(MAX_OPS) {
            match op {
                Op::RawAnnounce { body, json, from } => {
                    let (status, _) =
                        send(&app, post(body.clone(), *json, from), s.tiny_limits).await;
                    if !*json {
                        assert!(status.is_client_error(), "{status} without a JSON body");
                    }
                }
                Op::Announce { a, from } => {
                    let a = a.announce();
                    let valid = a.validate().is_ok();
                    let body = serde_json::to_vec(&a).expect("serializes");
                    let (status, resp) = send(&app, post(body, true, from), s.tiny_limits).await;
                    if !valid {
                        assert!(status.is_client_error(), "{status} for an invalid announce");
                    }
                    if status == StatusCode::OK {
                        let hints: Hints = serde_json::from_slice(&resp).expect("hints");
                        check_hints(&hints, &a);
                    }
                    match registry.announce(a.clone(), from.ip(), now) {
                        Ok(hints) => {
                            assert!(valid, "an invalid announce accepted");
                            check_hints(&hints, &a);
                        }
                        Err(AnnounceError::Invalid(_)) => assert!(!valid),
                        Err(AnnounceError::Full(_)) => assert!(s.tiny_limits),
                    }
                    assert!(registry.stream_count() <= max_streams);
                    assert!(registry.peer_count() <= max_peers);
                }
                Op::Request { method, path, body } => {
                    let method = match method % 6 {
                        0 => Method::GET,
                        1 => Method::POST,
                        2 => Method::PUT,
                        3 => Method::DELETE,
                        4 => Method::HEAD,
                        _ => Method::OPTIONS,
                    };
                    let Ok(req) = Request::builder()
                        .method(method)
                        .uri(path.as_str())
                        .body(Body::from(body.clone()))
                    else {
                        continue;
                    };
                    send(&app, req, s.tiny_limits).await;
                }
                Op::Wait { secs } => {
                    now += Duration::from_secs(u64::from(*secs));
                    let _ = registry.streams(now);
                    registry.purge(now);
                }
            }
        }
    });
});
