//! Fallback fetches of pieces from an HTTP origin.

use bytes::Bytes;
use libp2p::PeerId;

use crate::proto::{wire, Piece};

/// `GET {origin}/v1/pieces/{seq}`: one piece as a `Message::Piece` frame.
pub async fn fetch_piece(http: &reqwest::Client, origin: &str, seq: u64) -> Result<Piece, String> {
    let url = format!("{}/v1/pieces/{seq}", origin.trim_end_matches('/'));
    let mut resp = http.get(&url).send().await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("HTTP {}", resp.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > wire::MAX_FRAME_BYTES + 4 {
            return Err("response exceeds the frame limit".into());
        }
        body.extend_from_slice(&chunk);
    }
    let body = Bytes::from(body);
    if body.len() < 4 {
        return Err("short response".into());
    }
    match wire::decode::<PeerId>(&body[4..]) {
        Ok(crate::proto::Message::Piece(p)) if p.header.seq == seq => Ok(p),
        Ok(_) => Err("response is not the requested piece".into()),
        Err(e) => Err(e.to_string()),
    }
}
