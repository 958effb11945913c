//! The seeder's HTTP origin: fallback pieces for viewers that run short.
//!
//! `GET /v1/pieces/{seq}` answers one piece as a `Message::Piece` frame
//! (length prefix included), the same bytes as on the mesh, so the viewer
//! verifies it like any other piece. `GET /v1/stream` describes the stream,
//! and tells a viewer that has no peers where the live edge is.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use axum::{
    extract::{Path, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use bytes::Bytes;
use libp2p::PeerId;
use shoal_mesh::{
    net::{BudgetGate, StreamDescription},
    proto::{wire, LiveEdge, Message, Piece, StreamId},
};

/// The pieces of the last `window_ms`, encoded once as frames.
#[derive(Clone, Debug)]
pub struct Origin {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stream: StreamId,
    name: String,
    window_ms: u64,
    pieces: Mutex<BTreeMap<u64, Kept>>,
    /// Next piece and segment numbers after the newest piece.
    next: Mutex<(u64, u64)>,
    payload_served: AtomicU64,
    requests: AtomicU64,
    /// The coordinator's budget for the stream on this node, shared with
    /// its mesh uploads; answers over it are refused with 429.
    budget: Mutex<Option<BudgetGate>>,
}

/// A piece kept for fallback, encoded once.
#[derive(Debug)]
struct Kept {
    produced_at: u64,
    frame: Bytes,
    /// Payload bytes.
    len: usize,
    /// First and last in its segment: where the live edge starts.
    first: bool,
    last: bool,
}

impl Origin {
    pub fn new(stream: StreamId, name: String, window_ms: u64) -> Self {
        Origin {
            inner: Arc::new(Inner {
                stream,
                name,
                window_ms,
                pieces: Mutex::new(BTreeMap::new()),
                next: Mutex::new((0, 0)),
                payload_served: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                budget: Mutex::new(None),
            }),
        }
    }

    /// Keeps a piece for fallback, dropping what left the window.
    pub fn insert(&self, piece: &Piece) {
        let frame = wire::encode::<PeerId>(&Message::Piece(piece.clone()));
        let at = piece.header.produced_at;
        {
            let mut next = self
                .inner
                .next
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let h = &piece.header;
            // A new segment even if this one was cut short: never two firsts.
            *next = (h.seq + 1, h.segment + 1);
        }
        let mut pieces = self
            .inner
            .pieces
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let kept = Kept {
            produced_at: at,
            frame,
            len: piece.data.len(),
            first: piece.header.is_first(),
            last: piece.header.is_last(),
        };
        pieces.insert(piece.header.seq, kept);
        while let Some((&seq, oldest)) = pieces.iter().next() {
            if oldest.produced_at + self.inner.window_ms >= at {
                break;
            }
            pieces.remove(&seq);
        }
    }

    /// Holds the answers to the node's budget for the stream.
    pub fn set_budget_gate(&self, gate: BudgetGate) {
        *self
            .inner
            .budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(gate);
    }

    /// Next piece and segment numbers after the newest piece kept.
    pub fn next_numbers(&self) -> (u64, u64) {
        *self
            .inner
            .next
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Payload bytes served over HTTP so far (counts as infrastructure egress).
    pub fn payload_served(&self) -> u64 {
        self.inner.payload_served.load(Ordering::Relaxed)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/pieces/{seq}", get(piece))
            .route("/v1/stream", get(stream))
            .with_state(self.clone())
    }

    /// The answer to `GET …/v1/pieces/{seq}`.
    pub fn piece_response(&self, seq: &str) -> Response {
        let Ok(seq) = seq.parse::<u64>() else {
            return (StatusCode::NOT_FOUND, "no such piece").into_response();
        };
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        let found = self
            .inner
            .pieces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&seq)
            .map(|k| (k.frame.clone(), k.len));
        let gate = self
            .inner
            .budget
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match found {
            Some((_, len)) if gate.is_some_and(|g| !g.try_spend(len as u64)) => {
                (StatusCode::TOO_MANY_REQUESTS, "over the stream's budget").into_response()
            }
            Some((frame, len)) => {
                self.inner
                    .payload_served
                    .fetch_add(len as u64, Ordering::Relaxed);
                ([(header::CONTENT_TYPE, "application/octet-stream")], frame).into_response()
            }
            None => (StatusCode::NOT_FOUND, "piece not held").into_response(),
        }
    }

    /// The answer to `GET …/v1/stream`.
    pub fn describe(&self) -> StreamDescription {
        let inner = &self.inner;
        let pieces = inner.pieces.lock().unwrap_or_else(PoisonError::into_inner);
        let held = pieces.iter().rev().map(|(&s, k)| (s, k.first, k.last));
        StreamDescription {
            stream: inner.stream.to_string(),
            name: inner.name.clone(),
            oldest_seq: pieces.keys().next().copied(),
            newest_seq: pieces.keys().next_back().copied(),
            newest_segment_start: LiveEdge::of_held(held).map(|e| e.segment_start),
            payload_served: inner.payload_served.load(Ordering::Relaxed),
            requests: inner.requests.load(Ordering::Relaxed),
        }
    }
}

async fn piece(State(origin): State<Origin>, Path(seq): Path<String>) -> Response {
    origin.piece_response(&seq)
}

async fn stream(State(origin): State<Origin>) -> Json<StreamDescription> {
    Json(origin.describe())
}
