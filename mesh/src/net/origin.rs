//! Fallback fetches from an HTTP origin: pieces, and where the live edge is.

use bytes::Bytes;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::proto::{wire, LiveEdge, Piece, StreamId};

/// The answer to `GET /v1/stream` (docs/protocol.md §11), as seeders and
/// reflectors serve it and viewers read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamDescription {
    /// The stream's id, hex.
    pub stream: String,
    pub name: String,
    /// Oldest and newest piece held (`None`: none).
    pub oldest_seq: Option<u64>,
    pub newest_seq: Option<u64>,
    /// The first piece of the newest segment held, where a viewer can
    /// start (`None`: no segment start held).
    #[serde(default)]
    pub newest_segment_start: Option<u64>,
    /// Piece payload served in `200`s so far.
    pub payload_served: u64,
    /// Piece requests with a valid seq.
    pub requests: u64,
}

impl StreamDescription {
    /// The live edge it tells of, when it holds a segment start.
    pub fn live_edge(&self) -> Option<LiveEdge> {
        Some(LiveEdge {
            newest: self.newest_seq?,
            segment_start: self.newest_segment_start?,
        })
    }
}

/// A description is a few hundred bytes; more is not one.
const MAX_DESCRIPTION_BYTES: usize = 4_096;

/// Why a fetch from an origin failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The origin did not answer, or answered 5xx: another may.
    #[error("origin unreachable: {0}")]
    Unreachable(String),
    /// The origin is over its budget for the stream (429): another may
    /// have room.
    #[error("origin busy: {0}")]
    Busy(String),
    /// The origin answered, without the piece.
    #[error("{0}")]
    Refused(String),
}

/// `GET url`, its body read up to `limit` bytes. A server error or no
/// answer is [`FetchError::Unreachable`], `429` [`FetchError::Busy`], any
/// other failure or a longer body [`FetchError::Refused`].
async fn get_bounded(
    http: &reqwest::Client,
    url: &str,
    limit: usize,
) -> Result<Vec<u8>, FetchError> {
    let unreachable = |e: reqwest::Error| FetchError::Unreachable(e.to_string());
    let mut resp = http.get(url).send().await.map_err(unreachable)?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(FetchError::Unreachable(format!("HTTP {status}")));
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        return Err(FetchError::Busy(format!("HTTP {status}")));
    }
    if !status.is_success() {
        return Err(FetchError::Refused(format!("HTTP {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(unreachable)? {
        if body.len() + chunk.len() > limit {
            return Err(FetchError::Refused(format!(
                "response longer than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `GET {origin}/v1/pieces/{seq}`: one piece as a `Message::Piece` frame.
pub async fn fetch_piece(
    http: &reqwest::Client,
    origin: &str,
    seq: u64,
) -> Result<Piece, FetchError> {
    let url = format!("{}/v1/pieces/{seq}", origin.trim_end_matches('/'));
    let body = Bytes::from(get_bounded(http, &url, wire::MAX_FRAME_BYTES + 4).await?);
    if body.len() < 4 {
        return Err(FetchError::Refused("short response".into()));
    }
    match wire::decode::<PeerId>(&body[4..]) {
        Ok(crate::proto::Message::Piece(p)) if p.header.seq == seq => Ok(p),
        Ok(_) => Err(FetchError::Refused(
            "response is not the requested piece".into(),
        )),
        Err(e) => Err(FetchError::Refused(e.to_string())),
    }
}

/// `GET {origin}/v1/stream`: where the live edge of `stream` is, as the
/// origin knows it. An origin of another stream, or one that holds no
/// segment start yet, answers [`FetchError::Refused`].
pub async fn fetch_edge(
    http: &reqwest::Client,
    origin: &str,
    stream: &StreamId,
) -> Result<LiveEdge, FetchError> {
    let url = format!("{}/v1/stream", origin.trim_end_matches('/'));
    let body = get_bounded(http, &url, MAX_DESCRIPTION_BYTES).await?;
    let described: StreamDescription =
        serde_json::from_slice(&body).map_err(|e| FetchError::Refused(e.to_string()))?;
    if !described.stream.eq_ignore_ascii_case(&stream.to_string()) {
        return Err(FetchError::Refused(format!(
            "the origin describes stream {}",
            described.stream
        )));
    }
    described
        .live_edge()
        .ok_or_else(|| FetchError::Refused("no segment start held yet".into()))
}
