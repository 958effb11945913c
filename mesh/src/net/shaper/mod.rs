//! Network emulation inside the driver: per-link delay and per-node
//! upload/download caps, for the lab (this kernel has no netem).
//!
//! Why at the stream muxer: shaping wraps each substream of a connection
//! after the noise + yamux upgrade. That is below every protocol — Shoal's
//! `/shoal/2/…` streams, identify, libp2p-gossipsub in a baseline, even the
//! multistream-select negotiation of each substream — so all of them see the
//! same links. And it is the first place the remote [`PeerId`] is known
//! (noise has authenticated it), so a delay can be chosen per remote peer.
//!
//! - Receive side: bytes read from the inner substream are stamped with a
//!   release time `now + delay(remote) (+ jitter)`, never earlier than the
//!   previous chunk's, and held in a bounded queue (up to [`MAX_QUEUED`]
//!   bytes; when full the inner substream is not read, so yamux flow
//!   control pushes back on the sender). So, like a TCP window, one
//!   substream carries at most `MAX_QUEUED / delay` (1 MiB / 100 ms ≈
//!   84 Mbit/s). A node-wide token bucket (`download_bps`) paces the
//!   release of bytes to the application.
//! - Send side: a node-wide token bucket (`upload_bps`) limits how many
//!   bytes each `poll_write` hands to the inner substream.
//!
//! What it does not emulate: connection set-up (TCP, noise, yamux
//! handshakes) and yamux's own frames (window updates, pings, stream
//! open/close) are not delayed, so flow control sees the loopback RTT, not
//! the emulated one; the caps count substream payload, not yamux/noise/TCP
//! overhead (a few percent); no loss. Bytes are stamped when the
//! application polls the substream, so a reader that stops polling sees
//! extra delay (Shoal's sessions always have a reader task pending).
//! Timers are tokio's: substreams must be polled within a tokio runtime
//! with time enabled (as every libp2p swarm `with_tokio` does).

mod bucket;
mod muxer;
mod substream;

use std::{
    fmt, io,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use libp2p::{
    core::{muxing::StreamMuxerBox, transport::Boxed, upgrade::Version},
    identity::Keypair,
    noise, tcp, yamux, PeerId, Transport,
};
use tokio::time::Instant;

use self::bucket::Bucket;
pub use self::{
    muxer::ShapedMuxer,
    substream::{Shaped, MAX_QUEUED},
};

/// The delay function of a [`Shaping`].
pub type DelayFn = Arc<dyn Fn(&PeerId) -> Option<Duration> + Send + Sync>;

/// Which counter, if any, the bytes written to a remote peer also go to
/// (see [`Shaping::sent_to`]).
pub type SentToFn = Arc<dyn Fn(&PeerId) -> Option<Arc<AtomicU64>> + Send + Sync>;

/// How a node's links behave in the lab.
///
/// Rates are in **bits** per second of substream payload. The delay
/// function is evaluated once per substream; delay and jitter are capped
/// at one hour.
#[derive(Clone)]
pub struct Shaping {
    /// One-way delay from the given remote peer to this node (applied on
    /// receipt), or None.
    pub delay: DelayFn,
    /// Uniform extra delay in `[0, jitter]` per received chunk; bytes are
    /// never reordered (a chunk is never released before the previous one).
    pub jitter: Duration,
    /// Node-wide cap on bytes written (all connections together), bit/s.
    pub upload_bps: Option<u64>,
    /// Node-wide cap on bytes read (all connections together), bit/s.
    pub download_bps: Option<u64>,
    /// Bytes written and read at the substream level, for the lab.
    pub counters: Arc<ShapingCounters>,
    /// Bytes written per kind of remote, for the lab: evaluated once per
    /// substream; the substream's written bytes go to the counter it
    /// returns as well as to `counters`. (The lab splits what an
    /// infrastructure node sent between viewers and other infrastructure.)
    pub sent_to: Option<SentToFn>,
}

impl Shaping {
    /// The same one-way delay from every remote peer.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = Arc::new(move |_: &PeerId| Some(delay));
        self
    }
}

impl Default for Shaping {
    /// No delay, no jitter, no caps: only counts bytes.
    fn default() -> Self {
        Shaping {
            delay: Arc::new(|_: &PeerId| None),
            jitter: Duration::ZERO,
            upload_bps: None,
            download_bps: None,
            counters: Arc::default(),
            sent_to: None,
        }
    }
}

impl fmt::Debug for Shaping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaping")
            .field("delay", &"<fn(&PeerId) -> Option<Duration>>")
            .field("jitter", &self.jitter)
            .field("upload_bps", &self.upload_bps)
            .field("download_bps", &self.download_bps)
            .field("counters", &self.counters)
            .field("sent_to", &self.sent_to.as_ref().map(|_| "<fn>"))
            .finish()
    }
}

/// Substream bytes a node has written and read (all connections).
#[derive(Debug, Default)]
pub struct ShapingCounters {
    /// Bytes the inner substreams accepted for sending.
    pub sent: AtomicU64,
    /// Bytes released to the application.
    pub received: AtomicU64,
}

impl ShapingCounters {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}
/// One node's shaping state: its [`Shaping`] and its two token buckets,
/// shared by all its connections. Cheap to clone.
#[derive(Clone)]
pub struct Shaper {
    node: Arc<Node>,
}

struct Node {
    shaping: Shaping,
    up: Option<Mutex<Bucket>>,
    down: Option<Mutex<Bucket>>,
}

impl Shaper {
    pub fn new(shaping: Shaping) -> Self {
        let now = Instant::now();
        let bucket = |bps: Option<u64>| bps.map(|b| Mutex::new(Bucket::new(b, now)));
        Shaper {
            node: Arc::new(Node {
                up: bucket(shaping.upload_bps),
                down: bucket(shaping.download_bps),
                shaping,
            }),
        }
    }

    pub fn shaping(&self) -> &Shaping {
        &self.node.shaping
    }
}

impl fmt::Debug for Shaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shaper")
            .field("shaping", &self.node.shaping)
            .finish_non_exhaustive()
    }
}

/// TCP + noise + yamux, as `SwarmBuilder::with_tcp` builds it, with every
/// connection's substreams shaped. All connections of the transport share
/// one [`Shaper`] (so build one transport per node). For any behaviour:
///
/// ```text
/// let transport = shaped_tcp_transport(&key, shaping)?;
/// let swarm = SwarmBuilder::with_existing_identity(key)
///     .with_tokio()
///     .with_other_transport(|_| transport)?
///     .with_behaviour(|_| my_behaviour)?
///     .build();
/// ```
/// Listen on TCP addresses only (`/ip4/127.0.0.1/tcp/0`).
pub fn shaped_tcp_transport(
    keypair: &Keypair,
    shaping: Shaping,
) -> io::Result<Boxed<(PeerId, StreamMuxerBox)>> {
    let shaper = Shaper::new(shaping);
    let noise = noise::Config::new(keypair).map_err(io::Error::other)?;
    Ok(
        tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
            .upgrade(Version::V1Lazy)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .map(move |(peer, muxer), _| {
                let shaped = ShapedMuxer::new(muxer, peer, &shaper);
                (peer, StreamMuxerBox::new(shaped))
            })
            .boxed(),
    )
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
    use libp2p::{swarm::SwarmEvent, Multiaddr, StreamProtocol};
    use tokio::sync::mpsc;

    use super::*;

    const PROTO: StreamProtocol = StreamProtocol::new("/shaper-test/1");
    pub(in crate::net) const LIMIT: Duration = Duration::from_secs(10);

    /// A real swarm (libp2p-stream only) over the shaped transport, run by
    /// a task.
    pub(in crate::net) struct TestNode {
        peer: PeerId,
        addr: Multiaddr,
        control: libp2p_stream::Control,
        counters: Arc<ShapingCounters>,
        pub(in crate::net) dial: mpsc::Sender<Multiaddr>,
        connected: mpsc::Receiver<PeerId>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for TestNode {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    pub(in crate::net) async fn node(shaping: Shaping) -> TestNode {
        let key = Keypair::generate_ed25519();
        let counters = shaping.counters.clone();
        let transport = shaped_tcp_transport(&key, shaping).unwrap();
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_other_transport(|_| transport)
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let peer = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        let (dial, mut dials) = mpsc::channel::<Multiaddr>(4);
        let (conn_tx, connected) = mpsc::channel(16);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    ev = swarm.select_next_some() => {
                        if let SwarmEvent::ConnectionEstablished { peer_id, .. } = ev {
                            let _ = conn_tx.try_send(peer_id);
                        }
                    }
                    Some(addr) = dials.recv() => swarm.dial(addr).unwrap(),
                }
            }
        });
        TestNode {
            peer,
            addr,
            control,
            counters,
            dial,
            connected,
            task,
        }
    }

    /// Connects `a` to `b`; returns a stream a → b and b's end of it.
    async fn connect(a: &mut TestNode, b: &mut TestNode) -> (libp2p::Stream, libp2p::Stream) {
        let mut incoming = b.control.accept(PROTO).unwrap();
        a.dial.send(b.addr.clone()).await.unwrap();
        assert_eq!(a.connected.recv().await, Some(b.peer));
        let out = a.control.open_stream(b.peer, PROTO).await.unwrap();
        // Lazy negotiation: the protocol goes out with the first bytes.
        let (_, inb) = incoming.next().await.unwrap();
        (out, inb)
    }

    pub(super) fn shaping_delay(ms: u64) -> Shaping {
        Shaping::default().with_delay(Duration::from_millis(ms))
    }

    /// Median ping-pong RTT of 8-byte messages between two nodes.
    async fn median_rtt(a: Shaping, b: Shaping) -> Duration {
        let (mut a, mut b) = (node(a).await, node(b).await);
        let mut incoming = b.control.accept(PROTO).unwrap();
        a.dial.send(b.addr.clone()).await.unwrap();
        assert_eq!(a.connected.recv().await, Some(b.peer));
        let mut out = a.control.open_stream(b.peer, PROTO).await.unwrap();
        let echo = tokio::spawn(async move {
            let (_, mut s) = incoming.next().await.unwrap();
            let mut msg = [0u8; 8];
            while s.read_exact(&mut msg).await.is_ok() {
                s.write_all(&msg).await.unwrap();
                s.flush().await.unwrap();
            }
        });
        let mut rtts = Vec::new();
        for i in 0..9u64 {
            let t = Instant::now();
            out.write_all(&i.to_be_bytes()).await.unwrap();
            out.flush().await.unwrap();
            let mut back = [0u8; 8];
            out.read_exact(&mut back).await.unwrap();
            assert_eq!(u64::from_be_bytes(back), i);
            // The first exchanges carry the protocol negotiation.
            if i >= 2 {
                rtts.push(t.elapsed());
            }
        }
        out.close().await.unwrap();
        let _ = echo.await;
        rtts.sort();
        println!("rtts: {rtts:?}");
        rtts[rtts.len() / 2]
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn delay_50ms_each_way_gives_100ms_rtt() {
        let rtt = tokio::time::timeout(LIMIT, median_rtt(shaping_delay(50), shaping_delay(50)))
            .await
            .expect("timed out");
        println!("median RTT with 50 ms each way: {rtt:?}");
        assert!(
            (Duration::from_millis(90)..=Duration::from_millis(160)).contains(&rtt),
            "RTT {rtt:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_shaping_gives_loopback_rtt() {
        let rtt = tokio::time::timeout(LIMIT, median_rtt(Shaping::default(), Shaping::default()))
            .await
            .expect("timed out");
        println!("median RTT unshaped: {rtt:?}");
        assert!(rtt < Duration::from_millis(20), "RTT {rtt:?}");
    }

    /// Sends `len` bytes a → b; b acknowledges the last one with one byte.
    /// Returns the rate in bit/s, timed at `a` from the first write to the ack.
    async fn transfer(a: &mut TestNode, b: &mut TestNode, len: usize) -> f64 {
        let (mut out, mut inb) = connect(a, b).await;
        // Negotiate before timing.
        out.write_all(&[7]).await.unwrap();
        out.flush().await.unwrap();
        let mut one = [0u8; 1];
        inb.read_exact(&mut one).await.unwrap();
        let sink = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut got = 0;
            while got < len {
                let n = inb.read(&mut buf).await.unwrap();
                assert!(n > 0, "early EOF after {got} bytes");
                assert!(buf[..n].iter().all(|&x| x == 0xA5));
                got += n;
            }
            inb.write_all(&[1]).await.unwrap();
            inb.flush().await.unwrap();
            inb
        });
        let data = vec![0xA5u8; 64 * 1024];
        let t = Instant::now();
        let mut left = len;
        while left > 0 {
            let n = left.min(data.len());
            out.write_all(&data[..n]).await.unwrap();
            left -= n;
        }
        out.flush().await.unwrap();
        out.read_exact(&mut one).await.unwrap();
        let elapsed = t.elapsed();
        let _inb = sink.await.unwrap();
        let rate = len as f64 * 8.0 / elapsed.as_secs_f64();
        println!("{len} bytes in {elapsed:?}: {:.2} Mbit/s", rate / 1e6);
        rate
    }

    fn assert_near(rate: f64, cap: f64) {
        assert!(
            (rate - cap).abs() <= cap * 0.25,
            "rate {:.2} Mbit/s, cap {:.2} Mbit/s",
            rate / 1e6,
            cap / 1e6
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upload_cap_paces_sending() {
        let cap = 4_000_000;
        let up = Shaping {
            upload_bps: Some(cap),
            ..Shaping::default()
        };
        let run = async {
            let (mut a, mut b) = (node(up).await, node(Shaping::default()).await);
            transfer(&mut a, &mut b, 1_000_000).await
        };
        let rate = tokio::time::timeout(LIMIT, run).await.expect("timed out");
        assert_near(rate, cap as f64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn download_cap_paces_receiving() {
        let cap = 4_000_000;
        let down = Shaping {
            download_bps: Some(cap),
            ..Shaping::default()
        };
        let run = async {
            let (mut a, mut b) = (node(Shaping::default()).await, node(down).await);
            transfer(&mut a, &mut b, 600_000).await
        };
        let rate = tokio::time::timeout(LIMIT, run).await.expect("timed out");
        assert_near(rate, cap as f64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counters_count_both_directions() {
        // Shaped both ways so that every counted path is the shaped one.
        let shaping = || Shaping {
            upload_bps: Some(50_000_000),
            download_bps: Some(50_000_000),
            ..shaping_delay(5)
        };
        let run = async {
            let (mut a, mut b) = (node(shaping()).await, node(shaping()).await);
            let (mut out, mut inb) = connect(&mut a, &mut b).await;
            let request = vec![1u8; 100_000];
            let reply = vec![2u8; 30_000];
            out.write_all(&request).await.unwrap();
            out.close().await.unwrap();
            let mut got = Vec::new();
            inb.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, request);
            inb.write_all(&reply).await.unwrap();
            inb.close().await.unwrap();
            let mut back = Vec::new();
            out.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, reply);
            (a, b)
        };
        let (a, b) = tokio::time::timeout(LIMIT, run).await.expect("timed out");
        let (a, b) = (&a.counters, &b.counters);
        println!(
            "a sent {} received {}; b sent {} received {}",
            a.sent(),
            a.received(),
            b.sent(),
            b.received()
        );
        // Payload plus multistream-select negotiation (a few dozen bytes).
        let near = |n: u64, want: u64| (want..=want + 256).contains(&n);
        assert!(near(a.sent(), 100_000), "a sent {}", a.sent());
        assert!(near(b.received(), 100_000), "b received {}", b.received());
        assert!(near(b.sent(), 30_000), "b sent {}", b.sent());
        assert!(near(a.received(), 30_000), "a received {}", a.received());
        assert_eq!(a.sent(), b.received());
        assert_eq!(b.sent(), a.received());
    }
}
