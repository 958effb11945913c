//! What goes into an engine and what comes out: its inputs, its outputs
//! and the moment they happen at.

use super::super::{
    piece::Piece,
    wire::{self, Locality, PeerInfo},
};

/// A moment, as the driver reads its two clocks, in ms. Every timer runs
/// on `mono` (steady, any origin), so that a step of the system clock
/// neither stalls nor races the node; `wall` (ms since the Unix epoch, the
/// clock of the broadcaster's `produced_at` stamps) only judges pieces
/// against those stamps: lag, deadlines, the live edge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    pub mono: u64,
    pub wall: u64,
}

impl From<u64> for Time {
    /// One clock read as both: the simulator's virtual time.
    fn from(ms: u64) -> Time {
        Time { mono: ms, wall: ms }
    }
}

/// Something that happened, for the engine to handle.
#[derive(Clone, Debug)]
pub enum Input<P> {
    /// A session's transport is up. `outbound`: we dialled.
    Connected { peer: P, outbound: bool },
    /// The session is gone.
    Disconnected { peer: P },
    /// A dial we asked for failed.
    DialFailed { peer: P },
    /// A frame body (after the length prefix, already checked by
    /// [`wire::check_len`]).
    Frame { from: P, body: wire::Body },
    /// The peer broke framing (e.g. a length over the limit): the driver
    /// stopped reading it.
    Malformed { from: P },
    /// Peers we may connect to (tracker hints, peer exchange).
    Candidates(Vec<PeerInfo<P>>),
    /// The broadcaster cut a new piece (seeders only).
    Publish(Piece),
    /// Answer to [`Output::FetchInfra`].
    InfraPiece(Piece),
    /// [`Output::FetchInfra`] failed.
    InfraFailed { seq: u64 },
    /// The tracker told this node its AS and subnet.
    Located(Locality),
    /// The tracker told this node how many viewers the stream has.
    Swarm { viewers: u32 },
}

/// Something the engine wants done.
#[derive(Clone, Debug, PartialEq)]
pub enum Output<P> {
    /// Write this frame (length prefix included) to the peer.
    Send { to: P, frame: wire::Frame },
    /// Dial this peer; answer with `Connected` or `DialFailed`.
    Connect(PeerInfo<P>),
    /// Close the session.
    Disconnect { peer: P, reason: &'static str },
    /// Fetch this piece from infrastructure (HTTP origin); answer with
    /// `InfraPiece` or `InfraFailed`.
    FetchInfra { seq: u64 },
    /// A verified piece, new here, for the player.
    Deliver(Piece),
}
