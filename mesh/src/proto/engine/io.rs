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

/// Where the wall clock stands against the monotonic one, as last read:
/// how a piece's deadline (wall) becomes a timer (mono) and back.
#[derive(Clone, Copy, Debug)]
pub(super) struct WallClock {
    /// Wall minus monotonic, in ms.
    offset: i128,
}

impl WallClock {
    pub(super) fn new(time: Time) -> Self {
        let mut clock = WallClock { offset: 0 };
        clock.read(time);
        clock
    }

    /// Notes where the wall clock stands, and returns the monotonic time,
    /// which every timer runs on.
    pub(super) fn read(&mut self, time: Time) -> u64 {
        self.offset = i128::from(time.wall) - i128::from(time.mono);
        time.mono
    }

    /// The wall-clock time at monotonic time `mono`.
    pub(super) fn wall(self, mono: u64) -> u64 {
        (i128::from(mono) + self.offset).clamp(0, u64::MAX.into()) as u64
    }

    /// The monotonic time at wall-clock time `wall`.
    pub(super) fn mono(self, wall: u64) -> u64 {
        (i128::from(wall) - self.offset).clamp(0, u64::MAX.into()) as u64
    }
}

/// The live edge as infrastructure knows it: where a viewer that heard
/// nothing from peers can start (docs/protocol.md §7.3, §11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveEdge {
    /// The newest piece infrastructure holds.
    pub newest: u64,
    /// Where to start (a keyframe, at most `newest`): the first piece of
    /// the newest complete segment, else of the segment being cut.
    pub segment_start: u64,
}

/// Held pieces an edge is looked for in, at most (a few segments' worth).
const EDGE_SCAN: usize = 2 * wire::MAX_LIST;

impl LiveEdge {
    /// The edge of the pieces held, given newest first as (seq, first in
    /// its segment, last in its segment); `None` without a segment start
    /// among the newest [`EDGE_SCAN`]. A viewer starting at a complete
    /// segment can fetch all of it at once, so its start-up does not wait
    /// for the broadcaster to finish cutting one.
    pub fn of_held(newest_first: impl IntoIterator<Item = (u64, bool, bool)>) -> Option<LiveEdge> {
        let mut pieces = newest_first.into_iter().take(EDGE_SCAN).peekable();
        let newest = pieces.peek()?.0;
        let (mut current, mut complete, mut ended) = (None, None, false);
        let mut newer: Option<u64> = None;
        for (seq, first, last) in pieces {
            // `ended`: every piece from a segment's last down to this one is
            // held. A gap breaks that: the segment below it is incomplete.
            if newer.is_some_and(|n| n != seq.wrapping_add(1)) {
                ended = false;
            }
            newer = Some(seq);
            ended |= last;
            if first {
                current = current.or(Some(seq));
                if ended {
                    complete = Some(seq);
                    break;
                }
            }
        }
        Some(LiveEdge {
            newest,
            segment_start: complete.or(current)?,
        })
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
    /// The peers this node takes the stream from, as the coordinator
    /// assigned them: each is dialled, kept dialled, and asked to feed us
    /// every new piece (docs/protocol.md §7.7). A new list replaces the
    /// last; at most `MAX_PARENTS` (8) are kept. Reflectors only: others
    /// ignore it.
    Parents(Vec<PeerInfo<P>>),
    /// Whether reflectors serve the stream's viewers (the tracker says,
    /// docs/coordinator.md). A seeder of a reflected stream feeds the
    /// reflectors only: it drops its viewers, admits and dials none, and
    /// pushes them nothing. Seeders only: others ignore it.
    Reflected(bool),
    /// The broadcaster cut a new piece (seeders only).
    Publish(Piece),
    /// Answer to [`Output::FetchInfra`].
    InfraPiece(Piece),
    /// [`Output::FetchInfra`] failed.
    InfraFailed { seq: u64 },
    /// Answer to [`Output::FetchEdge`]: where infrastructure says the live
    /// edge is. Unverified, like an announcement: it only informs the
    /// schedule. A failed ask needs no answer (the engine asks again).
    LiveEdge(LiveEdge),
    /// The tracker told this node its AS and subnet.
    Located(Locality),
    /// The tracker told this node how many viewers the stream has.
    Swarm { viewers: u32 },
    /// The coordinator's budget for this node in this stream, bit/s
    /// (`None`: none): requests are served within it and within
    /// [`Config::upload_limit`](super::Config::upload_limit), whichever is
    /// less.
    Budget { bps: Option<u64> },
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
    /// Ask infrastructure (HTTP origin, `GET /v1/stream`) where the live
    /// edge is; answer with `LiveEdge`, or not at all if none answers.
    FetchEdge,
    /// A verified piece, new here, for the player.
    Deliver(Piece),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wall_clock_step_moves_deadlines_not_timers() {
        let mut clock = WallClock::new(Time {
            mono: 1_000,
            wall: 10_000_000,
        });
        assert_eq!(clock.wall(2_000), 10_001_000);
        assert_eq!(clock.mono(10_001_000), 2_000);
        // The system clock is stepped back an hour: a deadline on the
        // broadcaster's clock is now an hour further off as a timer.
        let now = clock.read(Time {
            mono: 2_000,
            wall: 10_001_000 - 3_600_000,
        });
        assert_eq!(now, 2_000, "timers keep the monotonic time");
        assert_eq!(clock.mono(10_001_000), 2_000 + 3_600_000);
    }

    #[test]
    fn conversions_saturate_instead_of_wrapping() {
        let clock = WallClock::new(Time {
            mono: u64::MAX,
            wall: 0,
        });
        assert_eq!(clock.wall(0), 0);
        assert_eq!(clock.mono(u64::MAX), u64::MAX);
    }
}

#[cfg(test)]
mod live_edge_tests {
    use super::LiveEdge;

    /// Pieces `0..n` newest first, segments of four starting at 0.
    fn held(n: u64) -> Vec<(u64, bool, bool)> {
        (0..n)
            .rev()
            .map(|s| (s, s.is_multiple_of(4), s % 4 == 3))
            .collect()
    }

    #[test]
    fn the_edge_starts_at_the_newest_complete_segment() {
        let edge = |n| LiveEdge::of_held(held(n));
        assert_eq!(
            edge(10),
            Some(LiveEdge {
                newest: 9,
                segment_start: 4
            })
        );
        assert_eq!(edge(8).map(|e| e.segment_start), Some(4), "4..=7 ends it");
        // Before any segment is complete, the one being cut.
        assert_eq!(edge(3).map(|e| e.segment_start), Some(0));
        assert_eq!(LiveEdge::of_held(vec![(5, false, false)]), None);
        assert_eq!(LiveEdge::of_held(Vec::new()), None);
    }

    #[test]
    fn a_segment_with_a_gap_is_not_complete() {
        // 4..=7 lacks 6: only 0..=3 is complete.
        let gap: Vec<_> = held(9).into_iter().filter(|p| p.0 != 6).collect();
        assert_eq!(LiveEdge::of_held(gap).map(|e| e.segment_start), Some(0));
        // 4..=7 lacks its last piece, whose "last" flag came from 11.
        let no_last: Vec<_> = held(12)
            .into_iter()
            .filter(|p| !(7..=10).contains(&p.0))
            .collect();
        assert_eq!(LiveEdge::of_held(no_last).map(|e| e.segment_start), Some(0));
        // Nothing complete: the newest segment start, as before.
        let cut = vec![(6, false, false), (4, true, false)];
        assert_eq!(LiveEdge::of_held(cut).map(|e| e.segment_start), Some(4));
    }
}
