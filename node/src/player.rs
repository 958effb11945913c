//! The viewer's local player server.
//!
//! The node driver feeds verified pieces into a [`Player`]; the HTTP server
//! ([`Player::router`], [`serve`]) lets ordinary players watch the stream:
//!
//! | route | answer |
//! |---|---|
//! | `GET /streams/{id}/index.m3u8` | live sliding-window HLS playlist of the newest 6 listed segments; `503` with `Retry-After: 1` until the first segment is complete, so players retry rather than give up |
//! | `GET /streams/{id}/{n}.ts` | complete segment `n` (`video/mp2t`); `404` if not complete or not held |
//! | `GET /streams/{id}/live.ts` | progressive MPEG-TS from the live edge, for VLC/ffplay/mpv |
//! | `GET /stats` | `Stats::report()` plus `stream`, `segments {first, last, complete}`, `nat {status, addrs, relays}` and `peers` (docs/nat.md) |
//! | `GET /metrics` | OpenMetrics text |
//!
//! Anything else is `404`: an `id` other than this node's stream, a file other
//! than `index.m3u8`, `live.ts` or `<digits>.ts`, a number beyond `u64`.
//! Nothing is ever read from disk. Every answer allows any origin (CORS), so
//! hls.js on another origin can play.
//!
//! Which complete segments are played, and which gaps are skipped, is decided
//! once by the private `timeline` module, shared by the playlist and `live.ts`.

mod hls;
mod live;
mod metrics;
mod segments;
mod timeline;

use std::{
    fmt,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use axum::{
    extract::{rejection::PathRejection, Path, State},
    http::{header, Method, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use shoal_mesh::{
    net::NetStatus,
    proto::{Piece, Stats, StreamId},
};
use tokio::{
    sync::{watch, Semaphore},
    time::Instant,
};
use tower_http::cors::{Any, CorsLayer};

pub use self::segments::{SegmentInfo, SegmentStore};
use self::timeline::Timeline;

/// Concurrent `live.ts` streams; more get `503`.
pub const MAX_LIVE_CLIENTS: usize = 16;

/// Shared handle the node driver feeds and the HTTP server reads.
#[derive(Clone)]
pub struct Player {
    inner: Arc<Inner>,
}

struct Inner {
    stream: StreamId,
    state: Mutex<PlayState>,
    stats: Mutex<Stats>,
    net: Mutex<NetStatus>,
    /// Bumped whenever the timeline changes; `live.ts` streams wait on it.
    changed: watch::Sender<u64>,
    live_clients: Arc<Semaphore>,
}

struct PlayState {
    store: SegmentStore,
    timeline: Timeline,
    /// When the pending gap decision falls due, as last announced.
    deadline: Option<Instant>,
}

impl fmt::Debug for Player {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Player")
            .field("stream", &self.inner.stream)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the data consistent, so a panic elsewhere
    // is no reason to stop serving.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Player {
    /// A player for `stream` keeping the newest `max_segments` segments.
    pub fn new(stream: StreamId, max_segments: usize) -> Self {
        Player {
            inner: Arc::new(Inner {
                stream,
                state: Mutex::new(PlayState {
                    store: SegmentStore::new(stream, max_segments),
                    timeline: Timeline::default(),
                    deadline: None,
                }),
                stats: Mutex::new(Stats::default()),
                net: Mutex::new(NetStatus::default()),
                changed: watch::channel(0).0,
                live_clients: Arc::new(Semaphore::new(MAX_LIVE_CLIENTS)),
            }),
        }
    }

    pub fn stream(&self) -> StreamId {
        self.inner.stream
    }

    /// Adds a verified piece; returns the segment it completed, if any.
    pub fn push_piece(&self, piece: &Piece) -> Option<SegmentInfo> {
        self.push_piece_at(piece, Instant::now())
    }

    pub(crate) fn push_piece_at(&self, piece: &Piece, now: Instant) -> Option<SegmentInfo> {
        let mut state = lock(&self.inner.state);
        let completed = state.store.insert_at(piece, now);
        self.advance(&mut state, now);
        completed
    }

    /// Replaces the stats snapshot served by `/stats` and `/metrics`.
    pub fn set_stats(&self, stats: Stats) {
        *lock(&self.inner.stats) = stats;
    }

    /// Replaces the NAT status and per-peer links served by `/stats`.
    pub fn set_net_status(&self, net: NetStatus) {
        *lock(&self.inner.net) = net;
    }

    /// Complete segments held, oldest first.
    pub fn complete_segments(&self) -> Vec<SegmentInfo> {
        lock(&self.inner.state).store.complete_segments()
    }

    /// The HTTP API described in the [module docs](self).
    pub fn router(&self) -> Router {
        let cors = CorsLayer::new()
            .allow_origin(Any)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers(Any);
        Router::new()
            .route("/streams/{id}/{file}", get(stream_file))
            .route("/stats", get(stats))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .layer(cors)
            .with_state(self.clone())
    }

    /// Advances the timeline; wakes `live.ts` streams when it changed or when
    /// a new gap deadline appeared (they sleep until it).
    fn advance(&self, state: &mut PlayState, now: Instant) -> Option<Instant> {
        let a = state.timeline.advance(&state.store, now);
        if a.changed || a.deadline != state.deadline {
            state.deadline = a.deadline;
            self.inner.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
        a.deadline
    }

    /// Runs `f` on the timeline as of `now`; also returns when a pending gap
    /// decision falls due.
    fn with_timeline<R>(
        &self,
        now: Instant,
        f: impl FnOnce(&PlayState) -> R,
    ) -> (R, Option<Instant>) {
        let mut state = lock(&self.inner.state);
        let deadline = self.advance(&mut state, now);
        (f(&state), deadline)
    }
}

/// Serves [`Player::router`] on `listener` until the listener fails.
pub async fn serve(player: Player, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, player.router()).await
}

fn not_found_response() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn not_found() -> Response {
    not_found_response()
}

/// `<digits>.ts` → its number; anything else, or a number beyond `u64`, → `None`.
fn segment_number(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(".ts")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

async fn stream_file(
    State(player): State<Player>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let Ok(Path((id, file))) = path else {
        return not_found_response();
    };
    if id.parse::<StreamId>().ok() != Some(player.inner.stream) {
        return not_found_response();
    }
    match file.as_str() {
        "index.m3u8" => playlist(&player),
        "live.ts" => live::response(&player),
        _ => match segment_number(&file) {
            Some(n) => segment(&player, n),
            None => not_found_response(),
        },
    }
}

fn playlist(player: &Player) -> Response {
    let (text, _) = player.with_timeline(Instant::now(), |s| {
        hls::media_playlist(s.timeline.entries().iter())
    });
    match text {
        Some(text) => (
            [
                (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            text,
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [
                (header::RETRY_AFTER, "1"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            "no segment complete yet\n",
        )
            .into_response(),
    }
}

fn segment(player: &Player, n: u64) -> Response {
    match lock(&player.inner.state).store.segment(n) {
        Some(data) => (
            [
                (header::CONTENT_TYPE, "video/mp2t"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            data,
        )
            .into_response(),
        None => not_found_response(),
    }
}

async fn stats(State(player): State<Player>) -> Response {
    let mut report = lock(&player.inner.stats).report();
    let (first, last, complete) = {
        let state = lock(&player.inner.state);
        let s = &state.store;
        (
            s.oldest_complete().map(|i| i.number),
            s.newest_complete().map(|i| i.number),
            s.complete_count(),
        )
    };
    if let Some(map) = report.as_object_mut() {
        map.insert("stream".into(), player.inner.stream.to_string().into());
        let net = lock(&player.inner.net).clone();
        map.insert(
            "nat".into(),
            serde_json::json!({
                "status": net.nat,
                "addrs": net.addrs,
                "relays": net.relays,
                "punches": net.punches,
            }),
        );
        map.insert("peers".into(), serde_json::json!(net.peers));
        map.insert(
            "segments".into(),
            serde_json::json!({ "first": first, "last": last, "complete": complete }),
        );
    }
    ([(header::CACHE_CONTROL, "no-cache")], Json(report)).into_response()
}

async fn metrics(State(player): State<Player>) -> Response {
    let stats = lock(&player.inner.stats).clone();
    let gauges = {
        let state = lock(&player.inner.state);
        metrics::PlayerGauges {
            segments_complete: state.store.complete_count(),
            newest_segment: state.store.newest_segment(),
            live_clients: MAX_LIVE_CLIENTS - player.inner.live_clients.available_permits(),
        }
    };
    match metrics::encode(stats, gauges) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[cfg(test)]
mod tests;
