//! Baseline: every viewer pulls the stream from the seeder's HTTP origin.
//!
//! This is plain client-server live streaming (what an HLS player does
//! against a CDN edge), against the same [`Seeder`](shoal_seeder::Seeder) Shoal uses:
//!
//! 1. `GET {origin}/v1/stream` says the newest piece (the "playlist").
//! 2. The viewer walks back from there (`GET /v1/pieces/{seq}`, [`AHEAD`]
//!    at a time) to the second newest segment start, and starts there —
//!    the start the Shoal engine chooses ([`Meter::start_at`]). The pieces
//!    of the walk are metered when the start is known.
//! 3. Then it pulls forward: pieces known to exist are fetched up to
//!    [`AHEAD`] in flight; the one piece past the newest known is polled
//!    (404 → wait [`POLL_MS`] and ask again). A poll answered at once
//!    means the viewer may be behind the live edge, so it re-reads
//!    `/v1/stream` to pipeline again.
//!
//! Every piece is verified with [`StreamKey::verify`] and fed to a
//! [`Meter`] as from infrastructure, so `offload` is 0 by construction and
//! `continuity`, `lag_ms` and `startup_ms` mean what they mean for Shoal.
//!
//! **Emulated links** — the same as the mesh systems get from the lab's
//! shaper: each request first sleeps one `rtt` (request to the origin and
//! first byte back, on a kept-alive connection; the mesh applies the same
//! one-way delays per direction), then the body is read through the
//! viewer's download token bucket (`download_bps`, burst ≥ 16 KiB, as the
//! shaper's), so a piece completes no earlier than `rtt + size / rate`
//! after it was asked for. The seeder's upload is not capped (the lab does
//! not cap the seeder either). Not emulated: TCP connection set-up (one
//! more RTT, once per pooled connection).
//!
//! **Counters**: [`ClientServerViewer::stats`] is the viewer's side: the
//! meter's counters, `overhead_sent` = HTTP request bytes (request line and
//! headers as reqwest sends them over HTTP/1.1), `payload_sent` = 0.
//! [`ClientServerViewer::origin_sent`] is what the origin sent this viewer:
//! `payload_sent` = piece data in 200 answers, `overhead_sent` = everything
//! else in its answers (status line, headers, the Shoal frame, piece header
//! and signature, 404 bodies, `/v1/stream` JSON). For a run:
//! `Summary::new(&viewers, &[merged origin_sent], 0)` — or pass the
//! origin's `payload_served()` as `infra_http_payload` with no infra stats,
//! but not both (the payload would count twice).

mod link;

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use futures::{stream::FuturesUnordered, StreamExt};
use shoal_mesh::{
    net::now_ms,
    proto::{Piece, Stats, StreamId, StreamKey},
};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use self::link::{Counts, Got, Link};
use super::meter::{Meter, PLAYOUT_DELAY_MS};

/// Requests in flight per viewer, at most.
pub const AHEAD: usize = 4;
/// Wait after a 404 for a piece not cut yet, ms.
pub const POLL_MS: u64 = 50;
/// Wait after a failed request (origin down, say), ms.
const RETRY_MS: u64 = 200;
/// A piece that should exist is given up after this many 404s.
const GONE_AFTER: u32 = 3;
/// Failing requests for one piece are given up after this long.
const GIVE_UP: Duration = Duration::from_secs(30);
/// Pieces looked at when walking back to the start, at most.
const WALK_BACK_MAX: u64 = 64;
/// How often the meter is ticked and the stats snapshot refreshed.
const TICK: Duration = Duration::from_millis(100);

/// A running client-server viewer. Dropping it stops it.
#[derive(Debug)]
pub struct ClientServerViewer {
    snapshot: watch::Receiver<Stats>,
    bytes: Arc<Counts>,
    task: JoinHandle<()>,
}

impl ClientServerViewer {
    /// The viewer's counters (meter counters at most 100 ms old).
    pub fn stats(&self) -> Stats {
        let mut s = self.snapshot.borrow().clone();
        s.payload_sent = 0;
        s.overhead_sent = self.bytes.request.load(Ordering::Relaxed);
        s
    }

    /// What the origin sent this viewer, as infrastructure counters.
    pub fn origin_sent(&self) -> Stats {
        Stats {
            payload_sent: self.bytes.payload.load(Ordering::Relaxed),
            overhead_sent: self.bytes.response_overhead.load(Ordering::Relaxed),
            ..Stats::default()
        }
    }

    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    pub fn shutdown(&self) {
        self.task.abort();
    }
}

impl Drop for ClientServerViewer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a viewer pulling `stream` from `origin` (`http://host:port`),
/// `rtt` away, reading at most `download_bps` bits/s.
pub async fn start_viewer(
    origin: String,
    stream: StreamId,
    rtt: Duration,
    download_bps: Option<u64>,
) -> anyhow::Result<ClientServerViewer> {
    let key = StreamKey::new(stream)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(AHEAD + 1)
        .build()?;
    let bytes = Arc::new(Counts::default());
    let link = Arc::new(Link::new(http, &origin, rtt, download_bps, bytes.clone()));
    let (snapshot_tx, snapshot) = watch::channel(Stats::default());
    let viewer = Viewer {
        link,
        key,
        meter: Meter::new(now_ms(), PLAYOUT_DELAY_MS),
        snapshot: snapshot_tx,
    };
    let task = tokio::spawn(viewer.run());
    Ok(ClientServerViewer {
        snapshot,
        bytes,
        task,
    })
}

/// How hard to try for a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Known to exist: a few 404s mean it left the origin's window.
    Existing,
    /// Past the newest known: poll until it is cut.
    Poll,
}

/// A piece fetched, or given up (`None`); whether the first request got it.
struct Fetched {
    seq: u64,
    piece: Option<Piece>,
    first_try: bool,
}

async fn fetch(link: Arc<Link>, seq: u64, mode: Mode) -> Fetched {
    let started = Instant::now();
    let mut not_found = 0;
    let mut first_try = true;
    loop {
        match link.piece(seq).await {
            Got::Piece(piece) => {
                return Fetched {
                    seq,
                    piece: Some(piece),
                    first_try,
                }
            }
            Got::NotFound => {
                not_found += 1;
                if mode == Mode::Existing && not_found >= GONE_AFTER {
                    break;
                }
                // A polled piece the origin has moved past is gone (an
                // origin restarted without it): stop waiting for it.
                if mode == Mode::Poll
                    && not_found % 20 == 0
                    && link.newest().await.is_some_and(|n| n > seq)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
            }
            Got::Failed(e) => {
                tracing::debug!(seq, "client-server: {e}");
                if started.elapsed() > GIVE_UP {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
            }
        }
        first_try = false;
    }
    Fetched {
        seq,
        piece: None,
        first_try: false,
    }
}

/// What the pull loop waits for.
enum Done {
    Piece(Fetched, Mode),
    Edge(Option<u64>),
}

type Pending = Pin<Box<dyn Future<Output = Done> + Send>>;

struct Viewer {
    link: Arc<Link>,
    key: StreamKey,
    meter: Meter,
    snapshot: watch::Sender<Stats>,
}

impl Viewer {
    async fn run(mut self) {
        let edge = loop {
            if let Some(n) = self.link.newest().await {
                break n;
            }
            tokio::time::sleep(Duration::from_millis(RETRY_MS)).await;
        };
        self.walk_back(edge).await;
        self.pull(edge).await;
    }

    fn verified(&mut self, piece: Option<Piece>) -> Option<Piece> {
        let piece = piece?;
        if self.key.verify(&piece).is_ok() {
            Some(piece)
        } else {
            self.meter.on_bad_piece();
            None
        }
    }

    /// Fetches back from `edge` to the second newest segment start, starts
    /// the meter there and meters what was fetched.
    async fn walk_back(&mut self, edge: u64) {
        let mut got: BTreeMap<u64, Piece> = BTreeMap::new();
        let mut lo = edge + 1;
        let mut gone = false;
        while !gone && lo > 0 && edge + 1 - lo < WALK_BACK_MAX {
            if got.values().filter(|p| p.header.is_first()).count() >= 2 {
                break;
            }
            let from = lo.saturating_sub(AHEAD as u64);
            let batch: Vec<_> = (from..lo)
                .map(|seq| fetch(self.link.clone(), seq, Mode::Existing))
                .collect();
            for f in futures::future::join_all(batch).await {
                gone |= f.piece.is_none();
                if let Some(p) = self.verified(f.piece) {
                    got.insert(f.seq, p);
                }
            }
            lo = from;
        }
        let mut starts = got.values().rev().filter(|p| p.header.is_first());
        let newest = starts.next().map(|p| p.header.seq);
        if let Some(start) = starts.next().map(|p| p.header.seq).or(newest) {
            self.meter.start_at(start);
        }
        let now = now_ms();
        for p in got.values() {
            self.meter.on_piece(&p.header, true, now);
        }
        self.refresh();
    }

    /// Pulls forward from `edge + 1`, forever.
    async fn pull(&mut self, mut edge: u64) {
        let mut next = edge + 1;
        let mut inflight: FuturesUnordered<Pending> = FuturesUnordered::new();
        let mut refreshing = false;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            while inflight.len() < AHEAD && next <= edge + 1 {
                let mode = if next <= edge {
                    Mode::Existing
                } else {
                    Mode::Poll
                };
                let link = self.link.clone();
                let seq = next;
                inflight.push(Box::pin(async move {
                    Done::Piece(fetch(link, seq, mode).await, mode)
                }));
                next += 1;
            }
            tokio::select! {
                Some(done) = inflight.next() => match done {
                    Done::Piece(f, mode) => {
                        edge = edge.max(f.seq);
                        let behind = mode == Mode::Poll && f.first_try;
                        if let Some(p) = self.verified(f.piece) {
                            self.meter.on_piece(&p.header, true, now_ms());
                        }
                        if behind && !refreshing {
                            refreshing = true;
                            let link = self.link.clone();
                            inflight.push(Box::pin(async move { Done::Edge(link.newest().await) }));
                        }
                    }
                    Done::Edge(newest) => {
                        refreshing = false;
                        edge = edge.max(newest.unwrap_or(0));
                    }
                },
                _ = tick.tick() => self.refresh(),
            }
        }
    }

    fn refresh(&mut self) {
        self.meter.tick(now_ms());
        self.snapshot.send_replace(self.meter.stats());
    }
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;
    use shoal_seeder::{Input, Seeder, SeederConfig};

    use super::*;

    /// A real seeder (synthetic 500 kbps) and three viewers for ~6 s.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn client_server_plays_everything_from_the_origin() {
        tokio::time::timeout(Duration::from_secs(60), run_client_server())
            .await
            .expect("the client-server run timed out");
    }

    async fn run_client_server() {
        let cfg = SeederConfig::new(
            "cs-test",
            Input::Synthetic {
                bits_per_sec: 500_000,
            },
            Keypair::generate_ed25519(),
        );
        let seeder = Seeder::start(cfg).await.unwrap();
        assert!(seeder.ready(Duration::from_secs(10)).await);
        // A couple of segments of history, so the start is a segment back.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let origin = format!("http://{}", seeder.http_addr);
        let links = [
            (Duration::from_millis(20), None),
            (Duration::from_millis(60), Some(4_000_000)),
            (Duration::from_millis(100), Some(2_000_000)),
        ];
        let mut viewers = Vec::new();
        for (rtt, cap) in links {
            viewers.push(
                start_viewer(origin.clone(), seeder.stream, rtt, cap)
                    .await
                    .unwrap(),
            );
        }
        tokio::time::sleep(Duration::from_secs(6)).await;

        let stats: Vec<Stats> = viewers.iter().map(ClientServerViewer::stats).collect();
        let mut served = Stats::default();
        for v in &viewers {
            served.merge(&v.origin_sent());
        }
        for (i, s) in stats.iter().enumerate() {
            println!("viewer {i}: {}", s.report());
        }
        println!(
            "origin sent: payload {} overhead {}; origin says {} served",
            served.payload_sent,
            served.overhead_sent,
            seeder.origin.payload_served()
        );
        for (i, s) in stats.iter().enumerate() {
            assert!(s.startup_ms.is_some(), "viewer {i} never started");
            assert!(s.pieces_due >= 3, "viewer {i}: {} due", s.pieces_due);
            let c = s.continuity().unwrap();
            assert!(c >= 0.95, "viewer {i}: continuity {c}");
            assert_eq!(s.offload(), Some(0.0), "viewer {i}");
            assert_eq!(s.payload_duplicate, 0);
            assert_eq!(s.bad_pieces, 0);
            assert!(s.overhead_sent > 0);
        }
        // Counted as bytes arrive, metered when a piece is complete: the
        // two differ by what is in flight at most.
        let received: u64 = stats.iter().map(Stats::payload_received).sum();
        let in_flight = (3 * AHEAD * shoal_mesh::proto::MAX_PIECE_BYTES) as u64;
        assert!(served.payload_sent >= received);
        assert!(served.payload_sent - received <= in_flight);
        assert!(seeder.origin.payload_served() >= received);
        let summary = shoal_mesh::proto::Summary::new(&stats, &[served], 0);
        println!("summary: {summary:?}");
        assert_eq!(summary.offload, 0.0);
        assert!((summary.seeder_egress - 1.0).abs() < 1e-9);
    }
}
