//! Fallback fetches of pieces from an HTTP origin.

use bytes::Bytes;
use libp2p::PeerId;

use crate::proto::{wire, Piece};

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

/// `GET {origin}/v1/pieces/{seq}`: one piece as a `Message::Piece` frame.
pub async fn fetch_piece(
    http: &reqwest::Client,
    origin: &str,
    seq: u64,
) -> Result<Piece, FetchError> {
    let url = format!("{}/v1/pieces/{seq}", origin.trim_end_matches('/'));
    let unreachable = |e: reqwest::Error| FetchError::Unreachable(e.to_string());
    let mut resp = http.get(&url).send().await.map_err(unreachable)?;
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
        if body.len() + chunk.len() > wire::MAX_FRAME_BYTES + 4 {
            return Err(FetchError::Refused(
                "response exceeds the frame limit".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let body = Bytes::from(body);
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
