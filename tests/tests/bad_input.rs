//! Bad input over real loopback networking: a raw libp2p peer that breaks the
//! mesh wire protocol (docs/protocol.md §4–§6), forged pieces (§3.3, §6.4),
//! and hostile requests to the player (§14), tracker (§12) and origin (§11).
//! Every wait is bounded, so a misbehaving product fails a test, never hangs it.

use std::{future::Future, time::Duration};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::{
    identity::Keypair, multiaddr::Protocol, noise, swarm::SwarmEvent, tcp, yamux, PeerId, Stream,
};
use shoal_mesh::{
    net::{self, now_ms},
    proto::{
        piece::flags,
        wire::{self, Hello, RefuseReason, FRAME_VERSION, MAX_FRAME_BYTES, PROTOCOL_VERSION},
        Coord, Message, Piece, Role, Signer, Stats, StreamId,
    },
};
use shoal_node::{Node, NodeConfig};
use shoal_seeder::{Input, Seeder, SeederConfig};
use shoal_tools::tracker::{self, TrackerConfig};
use tokio::{task::JoinHandle, time::timeout};

/// Bound on every single wait for the product to react.
const STEP: Duration = Duration::from_secs(5);

type Msg = Message<PeerId>;

// ---- helpers ----

/// Runs `fut`, failing with `what` if it takes longer than [`STEP`].
async fn within<T>(what: &str, fut: impl Future<Output = T>) -> Result<T> {
    timeout(STEP, fut)
        .await
        .with_context(|| format!("timed out after {STEP:?}: {what}"))
}

/// Polls `cond` every 50 ms (stats refresh every 250 ms) for up to [`STEP`].
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A tracker on an ephemeral port: its base URL and task.
async fn start_tracker() -> Result<(String, JoinHandle<()>)> {
    let (addr, task) =
        tracker::spawn("127.0.0.1:0".parse()?, TrackerConfig::with_interval(1)).await?;
    Ok((format!("http://{addr}"), task))
}

/// A tracker and a viewer node for a fresh stream whose signer we hold.
async fn start_node() -> Result<(Signer, Node, JoinHandle<()>)> {
    let (tracker, task) = start_tracker().await?;
    let signer = Signer::new(&Keypair::generate_ed25519())?;
    let mut cfg = NodeConfig::new(&tracker, signer.stream());
    cfg.player = Some("127.0.0.1:0".parse()?);
    let node = Node::start(cfg).await?;
    Ok((signer, node, task))
}

/// A bare libp2p peer (TCP + noise + yamux + libp2p-stream) with one
/// `/shoal/2/<stream>` stream open to the node, speaking whatever bytes the test writes.
struct RawPeer {
    stream: Stream,
    swarm: JoinHandle<()>,
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        self.swarm.abort();
    }
}

async fn connect_raw(node: &Node) -> Result<RawPeer> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    let peer = node.net.peer_id;
    let tcp_addr = node
        .net
        .addrs
        .iter()
        .find(|a| a.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .context("the node listens on no TCP address")?;
    swarm.dial(tcp_addr.clone().with(Protocol::P2p(peer)))?;
    within("connecting to the node", async {
        loop {
            match swarm.select_next_some().await {
                SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                    return Ok(())
                }
                SwarmEvent::OutgoingConnectionError { error, .. } => bail!("dial failed: {error}"),
                _ => {}
            }
        }
    })
    .await??;
    let mut control = swarm.behaviour().new_control();
    let swarm = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let stream = within(
        "opening /shoal/2",
        control.open_stream(peer, net::protocol(&node.net.stream)),
    )
    .await?
    .context("opening /shoal/2")?;
    Ok(RawPeer { stream, swarm })
}

impl RawPeer {
    async fn send_bytes(&mut self, bytes: &[u8]) -> Result<()> {
        within("writing to the node", async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        })
        .await??;
        Ok(())
    }

    async fn send(&mut self, msg: &Msg) -> Result<()> {
        self.send_bytes(&wire::encode(msg)).await
    }

    /// The next frame; `None` once the node closed or reset the stream.
    async fn read(&mut self) -> Result<Option<Msg>> {
        let mut len = [0u8; 4];
        if self.stream.read_exact(&mut len).await.is_err() {
            return Ok(None);
        }
        let len = wire::check_len(u32::from_be_bytes(len)).context("node sent a bad prefix")?;
        let mut body = vec![0u8; len];
        if self.stream.read_exact(&mut body).await.is_err() {
            return Ok(None);
        }
        Ok(Some(wire::decode(&body).context("node sent a bad frame")?))
    }

    /// Reads frames until one matches `want`; fails if the node closes first.
    async fn expect(&mut self, what: &str, want: impl Fn(&Msg) -> bool) -> Result<Msg> {
        within(what, async {
            let mut seen = Vec::new();
            while let Some(m) = self.read().await? {
                if want(&m) {
                    return Ok(m);
                }
                seen.push(m);
            }
            bail!("node closed the stream before {what}; it sent {seen:?}")
        })
        .await?
    }

    /// Reads frames until the node closes the stream; returns what it sent.
    async fn until_closed(&mut self) -> Result<Vec<Msg>> {
        within("the node closing the stream", async {
            let mut seen = Vec::new();
            while let Some(m) = self.read().await? {
                seen.push(m);
            }
            Ok(seen)
        })
        .await?
    }

    /// Sends a valid `Hello` for `stream` and waits for the node's `BufferMap`.
    async fn handshake(&mut self, stream: StreamId) -> Result<()> {
        self.send(&hello(stream)).await?;
        self.expect("the node's BufferMap", |m| {
            matches!(m, Message::BufferMap { .. })
        })
        .await?;
        Ok(())
    }
}

fn hello(stream: StreamId) -> Msg {
    Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        stream,
        role: Role::Viewer,
        degree: 0,
        max_degree: 8,
        upload_kbps: 0,
        coord: Coord::default(),
        loc: Default::default(),
        rtt_ms: 0,
    })
}

/// A whole one-piece segment `n` (piece `n`), validly signed.
fn one_piece_segment(signer: &Signer, n: u64) -> Result<Piece> {
    let data = Bytes::from(vec![n as u8; 1000]);
    Ok(signer.sign(n, n, flags::FIRST | flags::LAST, now_ms(), 1000, data)?)
}

fn http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().timeout(STEP).build()?)
}

async fn get_status(url: &str) -> Result<u16> {
    let resp = http()?.get(url).send().await.context(url.to_string())?;
    Ok(resp.status().as_u16())
}

// ---- 1. malformed frames ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_disconnect_the_peer() -> Result<()> {
    let (_signer, node, _tracker) = start_node().await?;
    let garbage: Vec<u8> = [FRAME_VERSION].into_iter().chain([0xEE; 63]).collect();
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "length prefix over MAX_FRAME_BYTES",
            (MAX_FRAME_BYTES as u32 + 1).to_be_bytes().to_vec(),
        ),
        ("zero length prefix", 0u32.to_be_bytes().to_vec()),
        ("well-sized frame of garbage", framed(&garbage)),
        ("unknown frame version", framed(&[0x7F, 7, 1])),
    ];
    for (i, (case, bytes)) in cases.iter().enumerate() {
        let mut peer = connect_raw(&node).await.context(*case)?;
        peer.send_bytes(bytes).await.context(*case)?;
        let sent = peer.until_closed().await.context(*case)?;
        ensure!(
            !sent.iter().any(|m| matches!(m, Message::BufferMap { .. })),
            "{case}: the node accepted the session: {sent:?}"
        );
        let want = i as u64 + 1;
        eventually(&format!("{case}: protocol_violations = {want}"), || {
            node.stats().protocol_violations == want
        })
        .await
        .with_context(|| format!("stats: {:?}", node.stats()))?;
    }
    // The node still serves a well-behaved peer.
    let mut peer = connect_raw(&node).await?;
    peer.handshake(node.stream).await?;
    ensure!(node.net.is_running(), "the node's driver stopped");
    Ok(())
}

/// `bytes` behind a correct length prefix.
fn framed(bytes: &[u8]) -> Vec<u8> {
    let mut out = (bytes.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// Connects a raw peer that greets the node with a `Hello` for another
/// stream; returns everything the node sent before closing the stream.
async fn greet_with_another_stream(node: &Node) -> Result<Vec<Msg>> {
    let other = Signer::new(&Keypair::generate_ed25519())?.stream();
    let mut peer = connect_raw(node).await?;
    peer.send(&hello(other)).await?;
    peer.until_closed().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_for_another_stream_is_not_accepted() -> Result<()> {
    let (_signer, node, _tracker) = start_node().await?;
    let sent = greet_with_another_stream(&node).await?;
    ensure!(
        !sent.iter().any(|m| matches!(m, Message::BufferMap { .. })),
        "the node accepted a Hello for another stream: {sent:?}"
    );
    // A refusal is not a violation.
    tokio::time::sleep(Duration::from_millis(600)).await;
    ensure!(node.stats().protocol_violations == 0, "{:?}", node.stats());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_for_another_stream_is_answered_refuse() -> Result<()> {
    let (_signer, node, _tracker) = start_node().await?;
    let sent = greet_with_another_stream(&node).await?;
    ensure!(
        sent.iter().any(|m| matches!(
            m,
            Message::Refuse {
                reason: RefuseReason::UnknownStream,
                ..
            }
        )),
        "no Refuse {{ UnknownStream }} before the close; the node sent {sent:?}"
    );
    Ok(())
}

// ---- 2. forged pieces ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_pieces_are_dropped_and_the_sender_cut_off() -> Result<()> {
    let (signer, node, _tracker) = start_node().await?;
    let mut peer = connect_raw(&node).await?;
    peer.handshake(node.stream).await?;

    // Control: a genuine piece is delivered to the player.
    peer.send(&Message::Piece(one_piece_segment(&signer, 0)?))
        .await?;
    eventually("segment 0 in the player", || {
        !node.player.complete_segments().is_empty()
    })
    .await?;

    // Payload altered after signing (hash mismatch).
    let mut tampered = one_piece_segment(&signer, 1)?;
    tampered.data = Bytes::from(vec![0xAB; tampered.data.len()]);
    // Signed by another key, relabelled as the node's stream.
    let mut foreign = one_piece_segment(&Signer::new(&Keypair::generate_ed25519())?, 2)?;
    foreign.header.stream = node.stream;
    // One bit of the signature flipped.
    let mut flipped = one_piece_segment(&signer, 3)?;
    let mut sig = flipped.signature.to_vec();
    sig[10] ^= 1;
    flipped.signature = Bytes::from(sig);

    // Two strikes: counted, but the session stays up (it still answers Ping).
    peer.send(&Message::Piece(tampered)).await?;
    peer.send(&Message::Piece(foreign)).await?;
    peer.send(&Message::Ping {
        nonce: 4242,
        coord: Coord::default(),
    })
    .await?;
    peer.expect("Pong after two bad pieces", |m| {
        matches!(m, Message::Pong { nonce: 4242, .. })
    })
    .await?;
    eventually("bad_pieces = 2", || node.stats().bad_pieces == 2)
        .await
        .with_context(|| format!("stats: {:?}", node.stats()))?;

    // The third strike cuts the sender off.
    peer.send(&Message::Piece(flipped)).await?;
    peer.until_closed().await?;
    eventually("bad_pieces = 3 and one violation", || {
        let s = node.stats();
        s.bad_pieces == 3 && s.protocol_violations == 1
    })
    .await
    .with_context(|| format!("stats: {:?}", node.stats()))?;

    let segments: Vec<u64> = node
        .player
        .complete_segments()
        .iter()
        .map(|s| s.number)
        .collect();
    ensure!(segments == [0], "segments in the player: {segments:?}");
    let stats: Stats = node.stats();
    ensure!(
        stats.newest_seq == Some(0),
        "a forged piece was stored: {stats:?}"
    );
    Ok(())
}

// ---- 3. player ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn player_answers_404_to_bad_paths() -> Result<()> {
    let (_signer, node, _tracker) = start_node().await?;
    let base = format!("http://{}", node.player_addr.expect("a player"));
    let id = node.stream.to_string();
    let other = Signer::new(&Keypair::generate_ed25519())?
        .stream()
        .to_string();
    // Controls: the routes exist for this stream.
    ensure!(
        get_status(&node.playlist_url()).await? == 503,
        "playlist before data"
    );
    ensure!(get_status(&format!("{base}/stats")).await? == 200, "/stats");
    for path in [
        format!("/streams/{other}/index.m3u8"),
        format!("/streams/{}/index.m3u8", id.to_uppercase()),
        format!("/streams/{id}/..%2F..%2Fetc%2Fpasswd"),
        format!("/streams/{id}/abc.ts"),
        format!("/streams/{id}/123.ts"),
        format!("/streams/{id}/99999999999999999999.ts"),
        format!("/streams/{id}/index.m3u8/extra"),
        "/nope".to_string(),
    ] {
        let status = get_status(&format!("{base}{path}")).await?;
        ensure!(status == 404, "GET {path}: {status}, expected 404");
    }
    Ok(())
}

// ---- 4. tracker ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_rejects_bad_announces_and_keeps_serving() -> Result<()> {
    let (base, _task) = start_tracker().await?;
    let announce = format!("{base}/v1/announce");
    let post = |body: Vec<u8>| {
        let req = http().map(|c| {
            c.post(&announce)
                .header("content-type", "application/json")
                .body(body)
        });
        async move { Ok::<_, anyhow::Error>(req?.send().await?.status().as_u16()) }
    };

    let status = post(b"{\"stream\": \"ab\", oops".to_vec()).await?;
    ensure!(status == 400, "malformed JSON: {status}, expected 400");
    let status = post(vec![b' '; 1 << 20]).await.context("1 MiB announce")?;
    ensure!(status == 413, "1 MiB body: {status}, expected 413");

    // Still serving, and still taking valid announces.
    let stream = "ab".repeat(32);
    let valid = serde_json::json!({
        "stream": stream, "peer_id": "12D3KooWtest", "addrs": ["/ip4/127.0.0.1/tcp/1"],
        "role": "viewer", "degree": 0, "max_degree": 8,
    });
    let status = post(serde_json::to_vec(&valid)?).await?;
    ensure!(status == 200, "valid announce: {status}");
    let list: serde_json::Value = http()?
        .get(format!("{base}/v1/streams"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    ensure!(
        list["streams"][0]["stream"] == stream.as_str() && list["streams"][0]["viewers"] == 1,
        "/v1/streams: {list}"
    );
    Ok(())
}

// ---- 5. seeder origin ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_answers_404_to_bad_piece_numbers() -> Result<()> {
    let (tracker, _task) = start_tracker().await?;
    let mut cfg = SeederConfig::new(
        "t",
        Input::Synthetic {
            bits_per_sec: 500_000,
        },
        Keypair::generate_ed25519(),
    );
    cfg.tracker = Some(tracker);
    let seeder = Seeder::start(cfg).await?;
    ensure!(seeder.ready(STEP).await, "the seeder cut no piece");
    let base = format!("http://{}/v1/pieces", seeder.http_addr);

    // Control: a piece it holds is served and is that piece.
    let frame = http()?
        .get(format!("{base}/0"))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    ensure!(frame.len() > 4, "short piece frame");
    match wire::decode::<PeerId>(&frame[4..])? {
        Message::Piece(p) if p.header.seq == 0 => {}
        other => bail!("GET /v1/pieces/0 answered {other:?}"),
    }

    for seq in [
        "notanumber",
        "99999999",
        "-1",
        "18446744073709551616",
        "0x10",
    ] {
        let status = get_status(&format!("{base}/{seq}")).await?;
        ensure!(
            status == 404,
            "GET /v1/pieces/{seq}: {status}, expected 404"
        );
    }
    Ok(())
}
