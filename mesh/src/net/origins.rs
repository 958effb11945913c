//! The infrastructure HTTP origins a node falls back to, and which of them
//! are down: a fetch that cannot reach one tries the next at once, and the
//! one that failed is passed over for a while.

use std::time::{Duration, Instant};

use super::{fetch_edge, fetch_piece, FetchError};
use crate::proto::{LiveEdge, Piece, StreamId};

/// How long an origin that could not be reached is passed over: about one
/// announce interval, by when the tracker has likely stopped naming it.
const DOWN_FOR: Duration = Duration::from_secs(5);
/// Origins one fetch tries, at most.
pub(super) const TRIES: usize = 2;

#[derive(Debug, Default)]
pub(super) struct Origins {
    /// Base URLs, and until when each is passed over.
    list: Vec<(String, Option<Instant>)>,
}

impl Origins {
    /// The tracker's latest list; an origin still listed stays down.
    pub(super) fn set(&mut self, urls: Vec<String>) {
        let old = std::mem::take(&mut self.list);
        self.list = urls
            .into_iter()
            .map(|url| {
                let down = old.iter().find(|(u, _)| *u == url).and_then(|(_, d)| *d);
                (url, down)
            })
            .collect();
    }

    /// The base URLs, in order.
    pub(super) fn urls(&self) -> impl Iterator<Item = &str> {
        self.list.iter().map(|(url, _)| url.as_str())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The origins to ask for piece `seq`, in order: from `seq mod n` on
    /// (so pieces spread over the origins), the ones up before the ones down,
    /// at most [`TRIES`].
    pub(super) fn pick(&self, seq: u64, now: Instant) -> Vec<String> {
        let n = self.list.len();
        if n == 0 {
            return Vec::new();
        }
        let start = (seq % n as u64) as usize;
        let mut order: Vec<&(String, Option<Instant>)> =
            (0..n).map(|i| &self.list[(start + i) % n]).collect();
        // Stable: the rotation holds among the ones up, and among the ones
        // down the soonest back comes first.
        order.sort_by_key(|(_, down)| down.filter(|&until| until > now));
        order
            .into_iter()
            .take(TRIES)
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// `url` could not be reached at `now`.
    pub(super) fn down(&mut self, url: &str, now: Instant) {
        if let Some((_, down)) = self.list.iter_mut().find(|(u, _)| u == url) {
            *down = Some(now + DOWN_FOR);
        }
    }
}

/// Asks `tries` in order for piece `seq` until one has it: an origin that
/// cannot be reached, is over its budget or answers without the piece (a
/// reflector may have joined after it) hands over to the next at once.
/// Returns the piece, and the origins that could not be reached.
pub(super) async fn fetch_first(
    http: &reqwest::Client,
    tries: &[String],
    seq: u64,
) -> (Option<Piece>, Vec<String>) {
    let what = format!("piece {seq}");
    ask_in_turn(tries, &what, |origin| fetch_piece(http, origin, seq)).await
}

/// Asks `tries` in order where the live edge of `stream` is, with the same
/// failover as [`fetch_first`]. Returns the edge, and the origins that could
/// not be reached.
pub(super) async fn fetch_edge_first(
    http: &reqwest::Client,
    tries: &[String],
    stream: &StreamId,
) -> (Option<LiveEdge>, Vec<String>) {
    ask_in_turn(tries, "the live edge", |origin| {
        fetch_edge(http, origin, stream)
    })
    .await
}

/// Asks `tries` in order with `ask` until one answers; an origin that could
/// not be reached is noted, and any failure hands over to the next at once.
async fn ask_in_turn<'a, T, F, Fut>(
    tries: &'a [String],
    what: &str,
    ask: F,
) -> (Option<T>, Vec<String>)
where
    F: Fn(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<T, FetchError>>,
{
    let mut unreachable = Vec::new();
    for origin in tries {
        match ask(origin).await {
            Ok(answer) => return (Some(answer), unreachable),
            Err(e @ FetchError::Unreachable(_)) => {
                tracing::debug!(what, %origin, "origin unreachable, trying the next: {e}");
                unreachable.push(origin.clone());
            }
            Err(e @ FetchError::Busy(_)) => {
                tracing::debug!(what, %origin, "origin busy, trying the next: {e}");
            }
            Err(e @ FetchError::Refused(_)) => {
                tracing::debug!(what, %origin, "origin without it, trying the next: {e}");
            }
        }
    }
    (None, unreachable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins(n: usize) -> Origins {
        let mut o = Origins::default();
        o.set((0..n).map(|i| format!("http://o{i}")).collect());
        o
    }

    #[test]
    fn pieces_spread_over_the_origins_and_each_fetch_has_a_second() {
        let o = origins(3);
        let now = Instant::now();
        assert_eq!(o.pick(0, now), ["http://o0", "http://o1"]);
        assert_eq!(o.pick(4, now), ["http://o1", "http://o2"]);
        assert_eq!(o.pick(5, now), ["http://o2", "http://o0"]);
        assert_eq!(origins(1).pick(7, now), ["http://o0"]);
        assert!(origins(0).pick(7, now).is_empty());
    }

    #[test]
    fn an_origin_that_failed_is_passed_over_until_it_may_be_back() {
        let mut o = origins(3);
        let now = Instant::now();
        o.down("http://o1", now);
        assert_eq!(o.pick(1, now), ["http://o2", "http://o0"]);
        assert_eq!(o.pick(0, now), ["http://o0", "http://o2"]);
        // A new list from the tracker keeps what is known to be down.
        o.set(vec!["http://o1".into(), "http://o9".into()]);
        assert_eq!(o.pick(0, now), ["http://o9", "http://o1"]);
        let later = now + DOWN_FOR;
        assert_eq!(o.pick(0, later), ["http://o1", "http://o9"]);
    }

    /// An origin on loopback that answers every request with `frame`.
    async fn origin_serving(frame: Vec<u8>) -> String {
        origin_answering("200 OK", frame).await
    }

    /// An origin on loopback that answers every request with `status` and
    /// `body`.
    async fn origin_answering(status: &'static str, frame: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let frame = frame.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        frame.len()
                    );
                    let _ = conn.write_all(head.as_bytes()).await;
                    let _ = conn.write_all(&frame).await;
                });
            }
        });
        format!("http://{addr}")
    }

    /// A signed piece `seq`, and its frame as an origin serves it.
    fn signed_piece(seq: u64) -> (Piece, Vec<u8>) {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let signer = crate::proto::Signer::new(&key).unwrap();
        let piece = signer.sign(seq, 0, 0, 0, 0, vec![1u8; 100].into()).unwrap();
        let message = crate::proto::Message::Piece(piece.clone());
        let frame = crate::proto::wire::encode::<libp2p::PeerId>(&message);
        (piece, frame.to_vec())
    }

    /// A loopback address nothing listens on.
    async fn dead_origin() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn a_fetch_from_a_dead_origin_is_answered_by_the_next() {
        let (piece, frame) = signed_piece(7);
        let live = origin_serving(frame).await;
        let dead = dead_origin().await;
        let http = reqwest::Client::new();

        let (got, down) = fetch_first(&http, &[dead.clone(), live.clone()], 7).await;
        assert_eq!(got, Some(piece));
        assert_eq!(down, std::slice::from_ref(&dead));

        // An origin that answers, but with another piece, is not down.
        let (got, down) = fetch_first(&http, &[live, dead.clone()], 8).await;
        assert_eq!(got, None);
        assert_eq!(down, [dead], "the next was asked");
    }

    #[tokio::test]
    async fn an_origin_without_the_piece_hands_the_fetch_on() {
        let (piece, frame) = signed_piece(7);
        let live = origin_serving(frame).await;
        let late = origin_answering("404 Not Found", b"piece not held".to_vec()).await;
        let http = reqwest::Client::new();
        let (got, down) = fetch_first(&http, &[late, live], 7).await;
        assert_eq!(got, Some(piece));
        assert!(down.is_empty(), "{down:?}");
    }

    #[tokio::test]
    async fn an_origin_over_its_budget_hands_the_fetch_on_and_is_not_down() {
        let (piece, frame) = signed_piece(7);
        let live = origin_serving(frame).await;
        let busy = origin_answering("429 Too Many Requests", b"over".to_vec()).await;
        let http = reqwest::Client::new();
        let (got, down) = fetch_first(&http, &[busy, live], 7).await;
        assert_eq!(got, Some(piece));
        assert!(down.is_empty(), "a busy origin is not down: {down:?}");
    }

    /// An origin's `/v1/stream` answer for `stream`, holding pieces up
    /// to 9 with the newest complete segment starting at 4.
    fn description(stream: &StreamId) -> Vec<u8> {
        let d = super::super::StreamDescription {
            stream: stream.to_string(),
            name: "test".into(),
            oldest_seq: Some(0),
            newest_seq: Some(9),
            newest_segment_start: Some(4),
            payload_served: 0,
            requests: 0,
        };
        serde_json::to_vec(&d).unwrap()
    }

    fn stream_id() -> StreamId {
        let key = libp2p::identity::Keypair::generate_ed25519();
        crate::proto::Signer::new(&key).unwrap().stream()
    }

    #[tokio::test]
    async fn the_edge_comes_from_the_first_origin_of_the_stream() {
        let (ours, theirs) = (stream_id(), stream_id());
        let other = origin_serving(description(&theirs)).await;
        let live = origin_serving(description(&ours)).await;
        let dead = dead_origin().await;
        let http = reqwest::Client::new();
        let tries = [dead.clone(), other, live];
        let (edge, down) = fetch_edge_first(&http, &tries[..2], &ours).await;
        assert_eq!(edge, None, "another stream's edge is not ours");
        assert_eq!(down, std::slice::from_ref(&dead));
        let (edge, _) = fetch_edge_first(&http, &tries[1..], &ours).await;
        let want = LiveEdge {
            newest: 9,
            segment_start: 4,
        };
        assert_eq!(edge, Some(want));
    }

    #[test]
    fn when_every_origin_is_down_the_soonest_back_is_tried_first() {
        let mut o = origins(2);
        let now = Instant::now();
        o.down("http://o0", now + Duration::from_secs(1));
        o.down("http://o1", now);
        assert_eq!(o.pick(0, now), ["http://o1", "http://o0"]);
    }
}
