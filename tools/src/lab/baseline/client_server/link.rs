//! A viewer's emulated link to the origin: one RTT per request, the body
//! paced by the download cap, and every byte counted (see the module notes).

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use libp2p::PeerId;
use shoal_mesh::proto::{wire, Message, Piece};
use tokio::time::Instant;

/// Smallest token bucket burst, bytes (as the shaper's).
const MIN_BURST: f64 = 16.0 * 1024.0;

/// Bytes on the wire, by kind.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Requests sent (request line and headers).
    pub(super) request: AtomicU64,
    /// Piece data received in 200 answers.
    pub(super) payload: AtomicU64,
    /// Everything else received.
    pub(super) response_overhead: AtomicU64,
}

/// Debt-based token bucket for the download cap, bytes.
#[derive(Debug)]
struct Pacer {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Pacer {
    fn new(bits_per_sec: u64) -> Self {
        let rate = (bits_per_sec as f64 / 8.0).max(1.0);
        let burst = (rate * 0.010).max(MIN_BURST);
        Pacer {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Takes `n` bytes; returns how long to wait before they are released.
    fn take(&mut self, n: usize, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// The viewer's emulated link to the origin.
#[derive(Debug)]
pub(super) struct Link {
    http: reqwest::Client,
    origin: String,
    rtt: Duration,
    pacer: Option<Mutex<Pacer>>,
    bytes: Arc<Counts>,
}

/// One answer for a piece.
pub(super) enum Got {
    Piece(Piece),
    NotFound,
    Failed(String),
}

/// Bytes of an HTTP/1.1 request line plus reqwest's default headers.
fn request_bytes(url: &reqwest::Url) -> u64 {
    let path = url.path().len() + url.query().map_or(0, |q| q.len() + 1);
    let host =
        url.host_str().map_or(0, str::len) + url.port().map_or(0, |p| p.to_string().len() + 1);
    // "GET {path} HTTP/1.1\r\n" "accept: */*\r\n" "host: {host}\r\n" "\r\n"
    (4 + path + 11 + 13 + 6 + host + 2 + 2) as u64
}

/// Bytes of an HTTP/1.1 status line and headers.
fn head_bytes(resp: &reqwest::Response) -> u64 {
    let status = resp.status();
    let reason = status.canonical_reason().map_or(0, str::len);
    let line = 9 + 3 + 1 + reason + 2;
    let headers: usize = resp
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum();
    (line + headers + 2) as u64
}

impl Link {
    /// A link to `origin`, `rtt` away, reading at most `download_bps`
    /// bits/s, counting its bytes in `bytes`.
    pub(super) fn new(
        http: reqwest::Client,
        origin: &str,
        rtt: Duration,
        download_bps: Option<u64>,
        bytes: Arc<Counts>,
    ) -> Self {
        Link {
            http,
            origin: origin.trim_end_matches('/').to_string(),
            rtt,
            pacer: download_bps.map(|b| Mutex::new(Pacer::new(b))),
            bytes,
        }
    }

    /// One request after one RTT; the body paced by the download cap and
    /// bounded by `limit`.
    async fn get(&self, path: &str, limit: usize) -> Result<(u16, Vec<u8>), String> {
        tokio::time::sleep(self.rtt).await;
        let url =
            reqwest::Url::parse(&format!("{}{path}", self.origin)).map_err(|e| e.to_string())?;
        self.bytes
            .request
            .fetch_add(request_bytes(&url), Ordering::Relaxed);
        let mut resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        let head = head_bytes(&resp);
        self.pace(head as usize).await;
        let status = resp.status().as_u16();
        let mut body = Vec::new();
        let result = loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        break Err("response exceeds the frame limit".to_string());
                    }
                    body.extend_from_slice(&chunk);
                    self.pace(chunk.len()).await;
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(e.to_string()),
            }
        };
        self.bytes
            .response_overhead
            .fetch_add(head + body.len() as u64, Ordering::Relaxed);
        result.map(|()| (status, body))
    }

    async fn pace(&self, n: usize) {
        let Some(pacer) = &self.pacer else { return };
        let wait = pacer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take(n, Instant::now());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// `GET /v1/pieces/{seq}`, decoded; counts its payload.
    pub(super) async fn piece(&self, seq: u64) -> Got {
        let (status, body) = match self
            .get(&format!("/v1/pieces/{seq}"), wire::MAX_FRAME_BYTES + 4)
            .await
        {
            Ok(r) => r,
            Err(e) => return Got::Failed(e),
        };
        if status == 404 {
            return Got::NotFound;
        }
        if status != 200 {
            return Got::Failed(format!("HTTP {status}"));
        }
        let piece = match body.get(4..).map(wire::decode::<PeerId>) {
            Some(Ok(Message::Piece(p))) if p.header.seq == seq => p,
            _ => return Got::Failed("the answer is not the piece asked for".into()),
        };
        let payload = piece.data.len() as u64;
        self.bytes.payload.fetch_add(payload, Ordering::Relaxed);
        self.bytes
            .response_overhead
            .fetch_sub(payload, Ordering::Relaxed);
        Got::Piece(piece)
    }

    /// The origin's newest piece (`GET /v1/stream`).
    pub(super) async fn newest(&self) -> Option<u64> {
        let (status, body) = self.get("/v1/stream", 64 * 1024).await.ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        v.get("newest_seq")?.as_u64()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::Pacer;

    #[test]
    fn pacer_releases_at_the_rate() {
        let mut p = Pacer::new(8_000_000); // 1 MB/s, burst 16 KiB
        let t = Instant::now();
        assert_eq!(p.take(16 * 1024, t), Duration::ZERO);
        let wait = p.take(100_000, t);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // After waiting, the debt is paid.
        assert_eq!(p.take(0, t + wait), Duration::ZERO);
    }
}
