//! One shoal stream to one peer: a reader task and a writer task.
//!
//! The reader checks each length prefix before allocating the body and hands
//! frames to the driver through the bounded event queue (waiting when it is
//! full: backpressure reaches the remote through the stream's flow control).
//! The writer drains a bounded queue of frames.

use bytes::Bytes;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::PeerId;
use tokio::{sync::mpsc, task::JoinHandle};

use super::PEER_QUEUE;

/// A peer that accepts nothing for this long is cut off.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use crate::proto::{
    wire::{self, Frame},
    Input, StreamId,
};

/// What session and fetch tasks tell the driver, for one stream's lane.
/// Sessions are told apart by generation, so events of a replaced session
/// are ignored.
#[derive(Debug)]
pub(super) enum LaneEvent {
    /// The peer opened a stream for this lane.
    Accepted(PeerId, libp2p::Stream),
    Opened(PeerId, libp2p::Stream),
    OpenFailed(PeerId),
    Frame(PeerId, u64, Bytes),
    /// The peer sent a frame over the size limit (or empty): it is cut off.
    Malformed(PeerId, u64),
    Closed(PeerId, u64),
    /// The session's writer finished: the connection may be closed.
    WriterDone(PeerId, u64),
    /// Result of a fallback fetch.
    Infra(Input<PeerId>),
    /// A fallback fetch could not reach this origin.
    OriginDown(String),
}

/// What tasks tell the driver.
#[derive(Debug)]
pub(super) enum PeerEvent {
    Lane(StreamId, LaneEvent),
    /// The linger after a writer finished is over: the connection goes if
    /// no session (of any stream) took its place.
    Lingered(PeerId),
    /// A peer reached over a relay had its chance at a direct connection.
    UpgradeWaited(PeerId),
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) gen: u64,
    /// We opened the stream.
    pub(super) outbound: bool,
    frames: mpsc::Sender<Frame>,
    reader: JoinHandle<()>,
}

impl Session {
    pub(super) fn spawn(
        lane: StreamId,
        peer: PeerId,
        gen: u64,
        outbound: bool,
        stream: libp2p::Stream,
        events: mpsc::Sender<PeerEvent>,
    ) -> Session {
        let (mut rd, mut wr) = stream.split();
        let (frames, mut queue) = mpsc::channel::<Frame>(PEER_QUEUE);
        let done = events.clone();
        tokio::spawn(async move {
            // Ends when the session is dropped (after writing what was
            // queued, so a final Refuse still reaches the peer), on a write
            // error, or when the peer stops reading for WRITE_TIMEOUT.
            let stalled = |r: Result<std::io::Result<()>, _>| !matches!(r, Ok(Ok(())));
            while let Some(frame) = queue.recv().await {
                // A piece's payload goes out from the buffer it arrived in.
                let (head, data) = frame.parts();
                let write = async {
                    wr.write_all(head).await?;
                    wr.write_all(data).await
                };
                if stalled(tokio::time::timeout(WRITE_TIMEOUT, write).await) {
                    break;
                }
                if queue.is_empty()
                    && stalled(tokio::time::timeout(WRITE_TIMEOUT, wr.flush()).await)
                {
                    break;
                }
            }
            let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.close()).await;
            let _ = done
                .send(PeerEvent::Lane(lane, LaneEvent::WriterDone(peer, gen)))
                .await;
        });
        let reader = tokio::spawn(async move {
            let end = loop {
                let mut len = [0u8; 4];
                if rd.read_exact(&mut len).await.is_err() {
                    break LaneEvent::Closed(peer, gen);
                }
                let Ok(len) = wire::check_len(u32::from_be_bytes(len)) else {
                    break LaneEvent::Malformed(peer, gen);
                };
                let mut body = vec![0u8; len];
                if rd.read_exact(&mut body).await.is_err() {
                    break LaneEvent::Closed(peer, gen);
                }
                let frame = LaneEvent::Frame(peer, gen, Bytes::from(body));
                if events.send(PeerEvent::Lane(lane, frame)).await.is_err() {
                    return;
                }
            };
            let _ = events.send(PeerEvent::Lane(lane, end)).await;
        });
        Session {
            gen,
            outbound,
            frames,
            reader,
        }
    }

    /// Queues a frame; `false` when the queue is full (the peer is stuck).
    pub(super) fn send(&self, frame: Frame) -> bool {
        !matches!(
            self.frames.try_send(frame),
            Err(mpsc::error::TrySendError::Full(_))
        )
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The writer is not aborted: dropping `frames` lets it write what
        // is queued and close the stream (see `spawn`).
        self.reader.abort();
    }
}
