//! The reflector's HTTP origin: fallback pieces of every stream it
//! carries, each under its own base URL `/s/{stream}` so that a viewer's
//! client (which appends `/v1/pieces/{seq}`) needs nothing new.

use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

use axum::{
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use shoal_mesh::{net::StreamDescription, proto::StreamId};
use shoal_seeder::origin::Origin;

/// The origins of the streams carried now, shared with the HTTP server.
#[derive(Clone, Debug, Default)]
pub struct Origins {
    streams: Arc<RwLock<BTreeMap<StreamId, Origin>>>,
    /// Payload the origins of streams since left had served, per stream.
    served_before: Arc<RwLock<BTreeMap<StreamId, u64>>>,
}

impl Origins {
    pub fn insert(&self, stream: StreamId, origin: Origin) {
        self.write().insert(stream, origin);
    }

    pub fn remove(&self, stream: &StreamId) {
        if let Some(origin) = self.write().remove(stream) {
            let mut before = (self.served_before.write()).unwrap_or_else(PoisonError::into_inner);
            *before.entry(*stream).or_default() += origin.payload_served();
        }
    }

    /// Payload bytes served over HTTP per stream, over the reflector's
    /// life (streams it left included): infrastructure egress.
    pub fn payload_served(&self) -> BTreeMap<StreamId, u64> {
        let mut served = (self.served_before.read())
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let now = self.streams.read().unwrap_or_else(PoisonError::into_inner);
        for (stream, origin) in now.iter() {
            *served.entry(*stream).or_default() += origin.payload_served();
        }
        served
    }

    fn get(&self, stream: &str) -> Option<Origin> {
        let stream = stream.parse::<StreamId>().ok()?;
        self.streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stream)
            .cloned()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<StreamId, Origin>> {
        self.streams.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/s/{stream}/v1/pieces/{seq}", get(piece))
            .route("/s/{stream}/v1/stream", get(stream))
            .route("/v1/streams", get(streams))
            .with_state(self.clone())
    }
}

/// The base URL under which a stream's pieces are served.
pub fn base_url(http: &str, stream: &StreamId) -> String {
    format!("{http}/s/{stream}")
}

fn not_carried() -> Response {
    (StatusCode::NOT_FOUND, "stream not carried").into_response()
}

async fn piece(
    State(origins): State<Origins>,
    Path((stream, seq)): Path<(String, String)>,
) -> Response {
    match origins.get(&stream) {
        Some(origin) => origin.piece_response(&seq),
        None => not_carried(),
    }
}

async fn stream(State(origins): State<Origins>, Path(stream): Path<String>) -> Response {
    match origins.get(&stream) {
        Some(origin) => Json(origin.describe()).into_response(),
        None => not_carried(),
    }
}

async fn streams(State(origins): State<Origins>) -> Json<Vec<StreamDescription>> {
    let streams = origins
        .streams
        .read()
        .unwrap_or_else(PoisonError::into_inner);
    Json(streams.values().map(Origin::describe).collect())
}
