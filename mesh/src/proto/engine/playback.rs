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
        }
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
        true
    }
}

impl<P: PeerId> Engine<P> {
    /// Picks where to start: the second newest segment start we know of, so
    /// the first segment completes quickly and the player has a segment in
    /// hand while the next one arrives.
    pub(super) fn choose_start(&mut self) -> Option<u64> {
        if !self.playback.enabled {
            return None;
        }
        if self.playback.start.is_none() {
            let newest = self.newest_known?;
            // A start is announced, so unverified: one we hold must be a
            // first piece (and `store_piece` drops one that turns out not
            // to be), so the start is confirmed by the broadcaster's word.
            let store = &self.store;
            let mut starts = self
                .segment_starts
                .range(..=newest)
                .rev()
                .filter(|&s| store.get(s).is_none_or(|p| p.header.is_first()));
            let latest = starts.next().copied();
            self.playback.start = starts.next().copied().or(latest);
        }
        self.playback.start
    }

    /// Best guess of when a piece was produced: its own stamp when held,
    /// else the earliest of: the next held piece's stamp, the previous held
    /// piece's stamp plus the stream's pace, and when it was first heard of.
    pub(super) fn produced_estimate(&self, seq: u64) -> Option<u64> {
        if let Some(p) = self.store.get(&seq) {
            return Some(p.header.produced_at);
        }
        let next_held = self.store.at_or_after(seq).map(|p| p.header.produced_at);
        // From the stream's pace after the previous held piece: being heard
        // of can lag production by seconds when the neighbourhood lags.
        let paced = self.ms_per_piece.and_then(|ms| {
            let p = self.store.before(seq)?;
            Some(p.header.produced_at + ((seq - p.header.seq) as f64 * ms) as u64)
        });
        // Written out rather than as an iterator over an array: this runs
        // for every missing piece in every scheduling run.
        min_known(min_known(self.heard.get(&seq).copied(), next_held), paced)
    }

    /// Playback deadline of a piece, as far as it can be told.
    pub(super) fn deadline(&self, seq: u64) -> Option<u64> {
        let delay = self.playback.delay().unwrap_or(self.cfg.playout_delay_ms);
        Some(self.produced_estimate(seq)?.saturating_add(delay))
    }

    /// Judges every piece whose deadline has passed: on time if it arrived
    /// by then.
    pub(super) fn playback_check(&mut self, now: u64) {
        let Some((delay, mut next)) = self.playback.started else {
            return;
        };
        let wall = self.wall(now);
        // Bounded like every loop on what peers announce; the rest waits
        // for the next run.
        for _ in 0..MAX_JUDGED_PER_RUN {
            if self.newest_known.is_none_or(|n| next > n) {
                break;
            }
            let Some(produced) = self.produced_estimate(next) else {
                break;
            };
            if wall < produced.saturating_add(delay) {
                break;
            }
            self.stats.pieces_due += 1;
            if self.store.contains_key(&next) && !self.playback.late.contains(&next) {
                self.stats.pieces_on_time += 1;
            }
            next += 1;
        }
        self.playback.late.retain(|&s| s >= next);
        self.playback.started = Some((delay, next));
    }
}

/// The smaller of two values, either of which may be unknown.
fn min_known(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}
