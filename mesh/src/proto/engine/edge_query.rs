//! Asking infrastructure where the live edge is, when peers have not said.
//!
//! A viewer learns the live edge from its neighbours' buffer maps and
//! `Have`s ([`super::edge`]). One whose every dial fails (a symmetric NAT,
//! say) has no neighbour to hear it from, so it would never know which
//! pieces are due, never fall back to infrastructure, and never play
//! (issue 18). So a viewer that is not playing yet asks infrastructure
//! ([`Output::FetchEdge`], answered by [`Input::LiveEdge`]) when it has no
//! neighbour a tick after joining, or when its neighbours have told it no
//! segment start for a few seconds, and again, backing off, while that
//! lasts. A viewer whose neighbours are only slow to tell does not ask:
//! what infrastructure serves it is egress the mesh would have saved.
//! The answer is unverified, like an announcement: it is bounded here and
//! then only informs the schedule, which falls back to infrastructure near
//! each piece's deadline as for any piece no neighbour offers.
//!
//! [`Input::LiveEdge`]: super::Input::LiveEdge

use super::{window::SeqWindow, Engine, LiveEdge, Output, PeerId, Timer};
use crate::proto::wire;

/// The first ask, this long after joining. A viewer with a neighbour hears
/// the edge in the neighbour's buffer map one round trip after the
/// handshake, well within this; asking later would push a stranded
/// viewer's start-up (its first segment fetched near its deadline, a
/// playout delay after it is heard of) past the usual few seconds.
pub(super) const FIRST_ASK_MS: u64 = 1_000;
/// Neighbours that have told no segment start this long after joining
/// have none to tell (they are as lost as this node): infrastructure is
/// asked even though the node has neighbours. At the stream's very start
/// no segment start exists yet for anyone, for about a segment (1 s).
const NO_START_GRACE_MS: u64 = 5_000;
/// Asks back off, doubling, to at most this apart: a viewer stranded for
/// long costs its origins one small request per this.
const MAX_GAP_MS: u64 = 8_000;
/// A segment longer than this many pieces is not believed: it would make
/// the viewer believe in more pieces than one announcement may name.
const MAX_SEGMENT_PIECES: u64 = wire::MAX_LIST as u64;

/// When to ask infrastructure for the edge next.
#[derive(Debug, Default)]
pub(super) struct EdgeQuery {
    /// When this node began to look for the edge (joining, a rebuffer).
    since: u64,
    /// The pause after the next ask.
    gap_ms: u64,
}

impl EdgeQuery {
    pub(super) fn starting(now: u64) -> Self {
        EdgeQuery {
            since: now,
            gap_ms: FIRST_ASK_MS,
        }
    }

    /// An ask goes out at `now`: when to consider the next.
    fn asked(&mut self, now: u64) -> u64 {
        let next = now + self.gap_ms;
        self.gap_ms = (2 * self.gap_ms).min(MAX_GAP_MS);
        next
    }
}

impl<P: PeerId> Engine<P> {
    /// (Re)starts watching for a missing edge: at joining, and when
    /// playback stalls and starts again (a rebuffer), as peers may have
    /// gone with the stream.
    pub(super) fn watch_edge(&mut self, now: u64) {
        if self.playback.is_enabled() {
            self.edge_query = EdgeQuery::starting(now);
            self.timers.set(Timer::EdgeQuery, now + FIRST_ASK_MS);
        }
    }

    /// With the tick, while not playing: asks infrastructure where the
    /// edge is if no neighbour is there to tell how it moves on (the first
    /// segment needs its last piece), or if the neighbours have told no
    /// start for [`NO_START_GRACE_MS`].
    pub(super) fn query_edge(&mut self, now: u64) {
        if self.playback.delay().is_some() {
            self.timers.stop(Timer::EdgeQuery); // playing: peers or extrapolation carry it
            return;
        }
        let from = self.playback.resume_from().unwrap_or(0);
        let start_known = self.edge.start_point(&self.store, from).is_some();
        let stranded = self.degree() == 0;
        let unheard = !start_known && now >= self.edge_query.since + NO_START_GRACE_MS;
        if !stranded && !unheard {
            self.timers.set(Timer::EdgeQuery, now + FIRST_ASK_MS);
            return;
        }
        self.stats.edge_queries += 1;
        self.outputs.push_back(Output::FetchEdge);
        let next = self.edge_query.asked(now);
        self.timers.set(Timer::EdgeQuery, next);
    }

    /// Infrastructure's answer: believed as a neighbour's announcement of
    /// the pieces `segment_start..=newest` and of the segment start, if it
    /// is consistent and near what this node has verified.
    pub(super) fn on_live_edge(&mut self, edge: LiveEdge, now: u64) {
        let LiveEdge {
            newest,
            segment_start,
        } = edge;
        let window = SeqWindow::around(self.store.last().map(|p| p.header.seq));
        let believable = segment_start <= newest
            && newest - segment_start < MAX_SEGMENT_PIECES
            && window.admits(segment_start)
            && window.admits(newest);
        if !believable || !self.playback.is_enabled() {
            return;
        }
        let seqs: Vec<u64> = (segment_start..=newest).collect();
        let wall = self.wall(now);
        let requests = &self.requests;
        let asked = |s| requests.contains(s);
        self.news |= self
            .edge
            .learn(&seqs, &[segment_start], &self.store, asked, wall);
    }

    /// The live edge as this node would tell it, from the pieces it holds
    /// ([`LiveEdge::of_held`]): what a simulated origin answers for the
    /// seeder it stands for.
    pub fn live_edge(&self) -> Option<LiveEdge> {
        let held = self.store.values().rev().map(|p| {
            let h = &p.header;
            (h.seq, h.is_first(), h.is_last())
        });
        LiveEdge::of_held(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_back_off_to_a_bound() {
        let mut q = EdgeQuery::starting(0);
        let gaps: Vec<u64> = (0..6).map(|_| q.asked(0)).collect();
        assert_eq!(gaps, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
    }
}
