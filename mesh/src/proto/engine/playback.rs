//! Playback deadlines, start-up and the continuity measure.
//!
//! A viewer starts at a segment boundary. When that first segment is
//! complete, start-up is over and the playback delay is fixed:
//! `delay = max(playout_delay, now − produced_at(start) + fallback_margin)`. From then on the
//! piece `s` is due at `produced_at(s) + delay`: it counts as on time if held
//! then. Only differences of the broadcaster's produced-at times matter, plus
//! one reading of `now` at start-up, so no clock sync is assumed beyond that.
//!
//! Pieces are judged whenever the engine runs (at least every scheduling
//! period), not at each deadline: a timer per piece would wake a viewer
//! eight times a second for nothing else. Judging late stays exact, because
//! a piece that arrives after its deadline but before it is judged is
//! remembered as late.

#[cfg(doc)]
use super::edge::Edge;
use super::{store::Store, Engine, PeerId};

#[derive(Debug)]
pub(super) struct Playback {
    enabled: bool,
    /// First piece of the segment we start at.
    pub(super) start: Option<u64>,
    /// Set once the first segment is complete: (delay, next piece due).
    started: Option<(u64, u64)>,
    /// Pieces not judged yet that arrived after their deadline.
    late: Vec<u64>,
    /// The deadline of the first of the pieces missed in a row, if the
    /// last piece judged was missed.
    missing_since: Option<u64>,
    /// Every piece up to this one has been judged once; a start after a
    /// rebuffer does not judge them again.
    judged_through: Option<u64>,
    /// While rebuffering: the start must be at or after this seq.
    resume_from: Option<u64>,
}

/// Pieces judged per run at most.
const MAX_JUDGED_PER_RUN: usize = 100_000;

impl Playback {
    pub(super) fn new(enabled: bool) -> Self {
        Playback {
            enabled,
            start: None,
            started: None,
            late: Vec::new(),
            missing_since: None,
            judged_through: None,
            resume_from: None,
        }
    }

    /// Whether this node plays the stream (viewers do).
    pub(super) fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// Rebuffering: nothing has played for a while, and the next start
    /// must be at or after `seq`.
    pub(super) fn resume_from(&self) -> Option<u64> {
        self.resume_from
    }

    /// Gives up the current start and delay: playback starts again, at a
    /// segment start from `seq` on.
    fn rebuffer(&mut self, seq: u64) {
        self.start = None;
        self.started = None;
        self.late.clear();
        self.missing_since = None;
        self.resume_from = Some(seq);
    }

    /// Piece `seq`, produced at `produced_at`, arrived at `wall`: if that is
    /// after its deadline and it is not judged yet, it will be judged late.
    pub(super) fn arrived(&mut self, seq: u64, produced_at: u64, wall: u64) {
        if let Some((delay, next)) = self.started {
            if seq >= next && wall > produced_at.saturating_add(delay) {
                self.late.push(seq);
            }
        }
    }

    /// First piece not yet judged, once playing.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.started.map(|(_, next)| next)
    }

    pub(super) fn delay(&self) -> Option<u64> {
        self.started.map(|(delay, _)| delay)
    }

    /// Start-up ends when the pieces from `start` to a last-in-segment piece
    /// are all held; returns whether it ended now (at `wall`).
    pub(super) fn check_startup(
        &mut self,
        store: &Store,
        wall: u64,
        playout_delay: u64,
        margin: u64,
    ) -> bool {
        let Some(start) = self.start else {
            return false;
        };
        if self.started.is_some() {
            return false;
        }
        let Some(first) = store.get(&start) else {
            return false;
        };
        let mut seq = start;
        loop {
            match store.get(&seq) {
                Some(p) if p.header.is_last() => break,
                Some(_) => seq += 1,
                None => return false,
            }
        }
        // A slow start keeps a margin of buffer: the next pieces must not
        // fall due the moment playback begins.
        let elapsed = wall.saturating_sub(first.header.produced_at);
        let delay = playout_delay.max(elapsed + margin);
        self.started = Some((delay, start));
        self.resume_from = None;
        true
    }
}

impl<P: PeerId> Engine<P> {
    /// Picks where to start (see [`Edge::start_point`]), and picks again
    /// while start-up has not ended if the start went stale: its first
    /// segment could not be had within twice the playout delay (its
    /// missing pieces left every window we can reach — say the fallback
    /// changed to a reflector that joined after them), so a newer segment
    /// is a better bet than waiting on it for ever.
    pub(super) fn choose_start(&mut self, wall: u64) -> Option<u64> {
        if !self.playback.enabled {
            return None;
        }
        let stale_after = 2 * self.cfg.playout_delay_ms;
        let from = self.playback.resume_from().unwrap_or(0);
        match self.playback.start {
            None => self.playback.start = self.edge.start_point(&self.store, from),
            Some(start)
                if self.playback.started.is_none()
                    && self
                        .edge
                        .produced_estimate(&self.store, start)
                        .is_some_and(|at| wall > at.saturating_add(stale_after)) =>
            {
                if let Some(newer) = self
                    .edge
                    .start_point(&self.store, from)
                    .filter(|&s| s > start)
                {
                    self.playback.start = Some(newer);
                }
            }
            Some(_) => {}
        }
        self.playback.start
    }

    /// Playback deadline of a piece, as far as it can be told.
    pub(super) fn deadline(&self, seq: u64) -> Option<u64> {
        let delay = self.playback.delay().unwrap_or(self.cfg.playout_delay_ms);
        Some(
            self.edge
                .produced_estimate(&self.store, seq)?
                .saturating_add(delay),
        )
    }

    /// Judges every piece whose deadline has passed: on time if it arrived
    /// by then. A viewer that has missed every piece for a playout delay
    /// rebuffers (see [`Self::rebuffer`]).
    pub(super) fn playback_check(&mut self, now: u64) {
        let Some((delay, mut next)) = self.playback.started else {
            return;
        };
        let wall = self.wall(now);
        // Bounded like every loop on what peers announce; the rest waits
        // for the next run.
        for _ in 0..MAX_JUDGED_PER_RUN {
            if self.edge.newest().is_none_or(|n| next > n) {
                break;
            }
            let Some(produced) = self.edge.produced_estimate(&self.store, next) else {
                break;
            };
            let due = produced.saturating_add(delay);
            if wall < due {
                break;
            }
            let on_time = self.store.contains_key(&next) && !self.playback.late.contains(&next);
            if self.playback.judged_through.is_none_or(|j| next > j) {
                self.stats.pieces_due += 1;
                self.stats.pieces_on_time += u64::from(on_time);
                self.playback.judged_through = Some(next);
            }
            if on_time {
                self.playback.missing_since = None;
            } else {
                self.playback.missing_since.get_or_insert(due);
            }
            next += 1;
        }
        self.playback.late.retain(|&s| s >= next);
        self.playback.started = Some((delay, next));
        let stalled = (self.playback.missing_since)
            .is_some_and(|since| wall >= since.saturating_add(self.cfg.playout_delay_ms));
        if stalled {
            self.rebuffer(next);
            // Neighbours may have lost the stream with us.
            self.watch_edge(now);
        }
    }

    /// Starts playback again after a stall as long as the playout delay.
    /// Whatever stopped the stream (the broadcaster paused or restarted,
    /// the neighbourhood lost it), the deadlines fixed at start-up no
    /// longer say when pieces will come: pieces past the stall were
    /// believed due from the stream's old pace, so they were judged late
    /// before they existed and never asked for. So, as a player does, the
    /// viewer starts again at a segment start after what it holds (or
    /// after `next`, the first piece not judged, if that is sooner), with a
    /// new delay; what it believed of the unheld pieces from there on is
    /// forgotten, and the edge is not extrapolated until it plays again.
    fn rebuffer(&mut self, next: u64) {
        let from = self
            .store
            .last()
            .map_or(next, |p| next.min(p.header.seq + 1));
        self.playback.rebuffer(from);
        self.edge.forget_from(from, &self.store);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proto::{
        engine::tests::{piece, signer},
        piece::flags,
    };

    /// Segment 1, pieces 4..=7 produced at 1,000 ms, but for `skip`.
    fn store(skip: Option<u64>) -> Store {
        let s = signer();
        let mut store = Store::default();
        for seq in (4..=7).filter(|&q| Some(q) != skip) {
            let fl = match seq {
                4 => flags::FIRST,
                7 => flags::LAST,
                _ => 0,
            };
            store.insert(Arc::new(piece(&s, seq, 1, fl, 1_000, 10)));
        }
        store
    }

    #[test]
    fn start_up_ends_with_the_first_whole_segment_and_fixes_the_delay() {
        let mut playback = Playback::new(true);
        assert!(
            !playback.check_startup(&store(None), 2_000, 1_500, 300),
            "no start"
        );
        playback.start = Some(4);
        assert!(!playback.check_startup(&store(Some(6)), 2_000, 1_500, 300));
        // 1,000 ms after production, plus the margin, is under the
        // configured delay: the delay is the configured one.
        assert!(playback.check_startup(&store(None), 2_000, 1_500, 300));
        assert_eq!(
            (playback.delay(), playback.next_due()),
            (Some(1_500), Some(4))
        );
        assert!(
            !playback.check_startup(&store(None), 2_000, 1_500, 300),
            "once"
        );
    }

    #[test]
    fn a_slow_start_keeps_a_margin_of_buffer() {
        let mut playback = Playback::new(true);
        playback.start = Some(4);
        assert!(playback.check_startup(&store(None), 4_000, 1_500, 300));
        assert_eq!(playback.delay(), Some(3_000 + 300));
    }

    #[test]
    fn a_piece_that_arrives_after_its_deadline_is_remembered_as_late() {
        let mut playback = Playback::new(true);
        playback.start = Some(4);
        playback.check_startup(&store(None), 2_000, 1_500, 300);
        playback.arrived(8, 1_100, 1_100 + 1_500);
        playback.arrived(9, 1_200, 1_200 + 1_501);
        playback.arrived(3, 900, 9_000);
        assert_eq!(playback.late, vec![9], "on time; late; before the start");
    }
}
