//! A shaped substream: received bytes wait in a delay queue for their
//! release time; reads and writes take from the node's token buckets.

use std::{
    collections::VecDeque,
    fmt, io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, Bytes};
use futures::{AsyncRead, AsyncWrite, Future};
use libp2p::PeerId;
use tokio::time::{sleep_until, Instant, Sleep};

use super::{
    bucket::{refund, take},
    Node, Shaper,
};

/// Bytes held back per substream (received, not yet released) before the
/// inner substream stops being read.
pub const MAX_QUEUED: usize = 1024 * 1024;
/// Largest single read from the inner substream.
const READ_CHUNK: usize = 16 * 1024;
/// Delays and jitter are capped at this (no overflow on absurd settings).
const MAX_DELAY: Duration = Duration::from_secs(3600);

/// Received bytes waiting for their release time.
struct Chunk {
    data: Bytes,
    release: Instant,
}

/// The end of the inner substream (EOF or error), delivered in order.
struct End {
    release: Instant,
    error: Option<io::Error>,
}

/// A shaped substream: reads are delayed and paced, writes are paced.
pub struct Shaped<S> {
    inner: S,
    remote: PeerId,
    node: Arc<Node>,
    delay: Duration,
    /// Where the bytes written also count ([`super::Shaping::sent_to`]).
    sent_to: Option<Arc<AtomicU64>>,
    /// No delay, jitter or download cap: reads pass straight through.
    read_through: bool,
    queue: VecDeque<Chunk>,
    queued: usize,
    last_release: Option<Instant>,
    end: Option<End>,
    scratch: Vec<u8>,
    // Separate timers: the read and write halves may be polled by different
    // tasks (e.g. after `AsyncReadExt::split`), and a Sleep keeps one waker.
    read_sleep: Option<Pin<Box<Sleep>>>,
    write_sleep: Option<Pin<Box<Sleep>>>,
}

impl<S> Shaped<S> {
    /// Shapes one substream from `remote` with a node's shaper.
    pub fn new(inner: S, remote: &PeerId, shaper: &Shaper) -> Self {
        let node = shaper.node.clone();
        let delay = (node.shaping.delay)(remote)
            .unwrap_or_default()
            .min(MAX_DELAY);
        let read_through = delay.is_zero() && node.down.is_none() && node.shaping.jitter.is_zero();
        let sent_to = node.shaping.sent_to.as_ref().and_then(|f| f(remote));
        Shaped {
            inner,
            remote: *remote,
            node,
            delay,
            sent_to,
            read_through,
            queue: VecDeque::new(),
            queued: 0,
            last_release: None,
            end: None,
            scratch: Vec::new(),
            read_sleep: None,
            write_sleep: None,
        }
    }

    /// When bytes received now may be released: after the delay (and
    /// jitter), and not before anything received earlier.
    fn release_time(&mut self, now: Instant) -> Instant {
        let mut at = now + self.delay;
        let jitter = self.node.shaping.jitter.min(MAX_DELAY);
        if !jitter.is_zero() {
            at += jitter.mul_f64(rand::random::<f64>());
        }
        if let Some(last) = self.last_release {
            at = at.max(last);
        }
        self.last_release = Some(at);
        at
    }
}

impl<S: AsyncRead + Unpin> Shaped<S> {
    /// Reads from the inner substream into the queue until it is pending,
    /// ended, or the queue is full. Returns with the inner substream's
    /// waker registered unless the queue is full or the stream ended.
    fn fill(&mut self, cx: &mut Context<'_>) {
        while self.end.is_none() && self.queued < MAX_QUEUED {
            if self.scratch.len() != READ_CHUNK {
                self.scratch.resize(READ_CHUNK, 0);
            }
            let read = Pin::new(&mut self.inner).poll_read(cx, &mut self.scratch);
            let now = Instant::now();
            match read {
                Poll::Pending => break,
                Poll::Ready(Ok(0)) => {
                    let release = self.release_time(now);
                    self.end = Some(End {
                        release,
                        error: None,
                    });
                }
                Poll::Ready(Ok(n)) => {
                    let n = n.min(READ_CHUNK);
                    let release = self.release_time(now);
                    self.queue.push_back(Chunk {
                        data: Bytes::copy_from_slice(&self.scratch[..n]),
                        release,
                    });
                    self.queued += n;
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => {
                    let release = self.release_time(now);
                    self.end = Some(End {
                        release,
                        error: Some(e),
                    });
                }
            }
        }
    }
}

/// Arms `slot` for `at` and polls it (registering the waker).
fn wait_until(slot: &mut Option<Pin<Box<Sleep>>>, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
    let sleep = slot.get_or_insert_with(|| Box::pin(sleep_until(at)));
    if sleep.deadline() != at {
        sleep.as_mut().reset(at);
    }
    sleep.as_mut().poll(cx)
}

impl<S: AsyncRead + Unpin> AsyncRead for Shaped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.read_through {
            let read = Pin::new(&mut this.inner).poll_read(cx, buf);
            if let Poll::Ready(Ok(n)) = read {
                let counters = &this.node.shaping.counters;
                counters.received.fetch_add(n as u64, Ordering::Relaxed);
            }
            return read;
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        // Each turn either returns or follows a timer that has fired, i.e.
        // time has moved past a deadline: no busy loop.
        loop {
            this.fill(cx);
            let now = Instant::now();
            let Some(head) = this.queue.front_mut() else {
                let Some(end) = this.end.as_mut() else {
                    return Poll::Pending; // fill left the inner's waker
                };
                if end.release <= now {
                    return Poll::Ready(end.error.take().map_or(Ok(0), Err));
                }
                let at = end.release;
                if wait_until(&mut this.read_sleep, at, cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            };
            if head.release > now {
                let at = head.release;
                if wait_until(&mut this.read_sleep, at, cx).is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            let want = buf.len().min(head.data.len());
            match take(&this.node.down, want) {
                Ok(n) => {
                    buf[..n].copy_from_slice(&head.data[..n]);
                    head.data.advance(n);
                    if head.data.is_empty() {
                        this.queue.pop_front();
                    }
                    this.queued -= n;
                    let counters = &this.node.shaping.counters;
                    counters.received.fetch_add(n as u64, Ordering::Relaxed);
                    return Poll::Ready(Ok(n));
                }
                Err(wait) => {
                    if wait_until(&mut this.read_sleep, now + wait, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Shaped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        loop {
            match take(&this.node.up, buf.len()) {
                Ok(n) => {
                    let written = Pin::new(&mut this.inner).poll_write(cx, &buf[..n]);
                    let used = match &written {
                        Poll::Ready(Ok(m)) => (*m).min(n),
                        _ => 0,
                    };
                    refund(&this.node.up, n - used);
                    let counters = &this.node.shaping.counters;
                    counters.sent.fetch_add(used as u64, Ordering::Relaxed);
                    if let Some(to) = &this.sent_to {
                        to.fetch_add(used as u64, Ordering::Relaxed);
                    }
                    return written;
                }
                Err(wait) => {
                    let at = Instant::now() + wait;
                    if wait_until(&mut this.write_sleep, at, cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

impl<S> fmt::Debug for Shaped<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaped")
            .field("remote", &self.remote)
            .field("delay", &self.delay)
            .field("queued", &self.queued)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::AsyncReadExt;
    use libp2p::PeerId;
    use tokio::time::Instant;

    use super::{
        super::tests::{shaping_delay, LIMIT},
        Shaped,
    };
    use crate::net::{Shaper, Shaping};

    // On tokio's paused clock: the delays are virtual, so the bound on the
    // elapsed time is exact however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn jitter_delays_without_reordering() {
        // Directly over an in-memory stream: 500 kB read through the delay
        // queue in many chunks, each with its own jitter.
        let shaping = Shaping {
            jitter: Duration::from_millis(20),
            ..shaping_delay(30)
        };
        let shaper = Shaper::new(shaping);
        let data: Vec<u8> = (0..500_000u32).map(|i| (i % 251) as u8).collect();
        let mut s = Shaped::new(
            futures::io::Cursor::new(data.clone()),
            &PeerId::random(),
            &shaper,
        );
        let t = Instant::now();
        let mut got = Vec::new();
        tokio::time::timeout(LIMIT, s.read_to_end(&mut got))
            .await
            .expect("timed out")
            .unwrap();
        let elapsed = t.elapsed();
        println!("500 kB through 30 ms + 20 ms jitter: {elapsed:?}");
        assert!(got == data, "bytes changed or reordered");
        assert!(
            (Duration::from_millis(30)..=Duration::from_millis(80)).contains(&elapsed),
            "{elapsed:?}"
        );
        assert_eq!(shaper.shaping().counters.received(), 500_000);
    }

    #[tokio::test]
    async fn bytes_written_to_a_chosen_remote_are_counted_apart() {
        use std::sync::{
            atomic::{AtomicU64, Ordering},
            Arc,
        };

        use futures::AsyncWriteExt;

        let (viewer, other) = (PeerId::random(), PeerId::random());
        let to_viewers = Arc::new(AtomicU64::new(0));
        let counter = to_viewers.clone();
        let shaping = Shaping {
            sent_to: Some(Arc::new(move |p: &PeerId| {
                (*p == viewer).then(|| counter.clone())
            })),
            ..Shaping::default()
        };
        let shaper = Shaper::new(shaping);
        let sink = || futures::io::Cursor::new(Vec::new());
        let mut to_viewer = Shaped::new(sink(), &viewer, &shaper);
        to_viewer.write_all(&[7u8; 1_000]).await.unwrap();
        let mut to_other = Shaped::new(sink(), &other, &shaper);
        to_other.write_all(&[7u8; 300]).await.unwrap();
        assert_eq!(to_viewers.load(Ordering::Relaxed), 1_000);
        assert_eq!(shaper.shaping().counters.sent(), 1_300);
    }
}
