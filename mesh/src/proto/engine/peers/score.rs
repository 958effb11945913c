//! How good a peer is as a neighbour: its RTT (measured, or predicted from
//! coordinates), discounted for locality, and, for a neighbour, its
//! stability and delivery rate; and when a candidate is clearly better.

use crate::proto::{
    coords::Coord,
    engine::{
        peers::{candidates::Candidate, neighbors::Neighbor},
        Engine, PeerId, Selection,
    },
    wire::{Hello, Locality},
};

/// Coordinates with a larger relative error are not used to choose.
const USABLE_ERROR: f32 = 0.75;
/// Added to the score of a candidate last seen with no free slot.
const FULL_PENALTY_MS: f32 = 100.0;
/// Added (scaled by the shortfall) to a neighbour delivering slower than
/// the stream.
const SLOW_PENALTY_MS: f32 = 100.0;
/// Hysteresis of a swap: the candidate must be this many times closer,
/// and this many ms of RTT (see [`clearly_better`]).
const SWAP_FACTOR: f32 = 1.25;
const SWAP_MARGIN_MS: f32 = 3.0;
/// A prediction counts as this many of its error estimates above itself:
/// a Vivaldi error estimate is a running mean of relative error, not a
/// bound (docs/tuning.md, "Prediction margin").
const PREDICTION_ERRORS: f32 = 2.0;

impl<P: PeerId> Engine<P> {
    /// A dialler's score (as for a candidate): its RTT as measured in an
    /// earlier session, else as predicted from the coordinate in its `Hello`.
    pub(crate) fn hello_score(&self, from: &P, hello: &Hello) -> Option<Score> {
        if self.cfg.selection == Selection::Random {
            return None;
        }
        // RTT is symmetric: the dialler's measurement (a probe of us, or
        // an earlier session) is as good as ours. A peer that lies about it
        // gets a slot it would lose at our next optimisation, once our own
        // pings measure it.
        let measured = self.candidates.get(from).and_then(|c| c.measured_ms);
        let theirs = (hello.rtt_ms > 0).then_some(hello.rtt_ms);
        let score = self.rtt_estimate(measured.or(theirs), Some(&hello.coord))?;
        Some(score.discounted(self.affinity(&hello.loc)))
    }

    /// RTT to a candidate: as measured while it was our neighbour, else as
    /// predicted from coordinates when both are usable.
    pub(crate) fn candidate_rtt(&self, c: &Candidate<P>) -> Option<Score> {
        self.rtt_estimate(c.measured_ms, c.info.coord.as_ref())
    }

    /// RTT to a peer: `measured` if known, else predicted from its
    /// coordinate when both ours and its are usable (affinity 1).
    pub(crate) fn rtt_estimate(
        &self,
        measured: Option<u32>,
        coord: Option<&Coord>,
    ) -> Option<Score> {
        if let Some(ms) = measured {
            return Some(Score {
                ms: ms as f32,
                measured: true,
                error: 0.0,
                affinity: 1.0,
            });
        }
        let coord = coord?;
        (self.coord.error < USABLE_ERROR && coord.error < USABLE_ERROR).then(|| Score {
            ms: self.coord.rtt_ms(coord),
            measured: false,
            error: self.coord.error + coord.error,
            affinity: 1.0,
        })
    }

    /// Proximity discount of a peer at `loc` (`proto::proximity`, the
    /// tracker's rule too), with the full score only.
    pub(crate) fn affinity(&self, loc: &Locality) -> f32 {
        if self.cfg.selection != Selection::Full {
            1.0
        } else {
            self.cfg.loc.affinity(loc)
        }
    }

    /// A candidate's score in ms (lower is better): its RTT (measured or
    /// predicted); with the full score, discounted for proximity and raised
    /// when it had no free slot (it would likely refuse). `None` without an
    /// RTT.
    pub(crate) fn candidate_score(&self, c: &Candidate<P>) -> Option<Score> {
        let mut score = self.candidate_proximity(c)?;
        if self.cfg.selection == Selection::Full && c.info.free == Some(0) {
            score.ms += FULL_PENALTY_MS;
        }
        Some(score)
    }

    /// A candidate's proximity in ms: its RTT (measured or predicted),
    /// discounted for proximity with the full score. This is what a swap
    /// weighs: a full candidate may still take us in place of a farther
    /// neighbour (docs/protocol.md §6.2, 3b), and a refusal costs a swap
    /// nothing.
    pub(crate) fn candidate_proximity(&self, c: &Candidate<P>) -> Option<Score> {
        let score = self.candidate_rtt(c)?;
        Some(score.discounted(self.affinity(&c.info.loc)))
    }

    /// A neighbour's proximity in ms, comparable with a candidate's score:
    /// its measured RTT median, discounted for proximity (full score).
    pub(crate) fn neighbor_proximity(&self, n: &Neighbor) -> Option<f32> {
        Some(n.rtt.base_median()? as f32 * self.affinity(&n.loc))
    }

    /// A neighbour's score in ms (lower is better): its measured RTT
    /// median; with the full score, plus its spread (stability), discounted
    /// for proximity, and raised when it delivers slower than the stream.
    pub(crate) fn neighbor_score(&self, n: &Neighbor) -> Option<f32> {
        let median = n.rtt.base_median()? as f32;
        if self.cfg.selection != Selection::Full {
            return Some(median);
        }
        // Half the spread: stability counts, but a loaded link's queueing
        // already shows in the delivery rate.
        let spread = 0.5 * n.rtt.stddev().unwrap_or(0.0);
        Some((median + spread) * self.affinity(&n.loc) + self.slow_penalty(n))
    }

    /// What a neighbour's score pays for delivering slower than the stream
    /// (full score only): up to [`SLOW_PENALTY_MS`].
    pub(crate) fn slow_penalty(&self, n: &Neighbor) -> f32 {
        match self.stream_rate() {
            Some(stream) if self.cfg.selection == Selection::Full => {
                SLOW_PENALTY_MS * (1.0 - n.rate / stream).clamp(0.0, 1.0) as f32
            }
            _ => 0.0,
        }
    }

    /// The stream's payload rate in bytes/s, once its pace is known.
    pub(crate) fn stream_rate(&self) -> Option<f64> {
        let ms = self.edge.pace()?;
        let bytes = self.store.values().next_back()?.data.len() as f64;
        (ms > 0.0).then(|| bytes * 1000.0 / ms)
    }
}

/// A candidate's or dialler's score, and how far to trust it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Score {
    /// RTT (measured or predicted) × `affinity`.
    pub(crate) ms: f32,
    pub(crate) measured: bool,
    /// Relative error of a prediction, as estimated: the two coordinates'
    /// own error estimates (running means of their relative errors) added
    /// (0 when measured).
    pub(crate) error: f32,
    /// The proximity discount `ms` carries (1: none).
    pub(crate) affinity: f32,
}

impl Score {
    pub(crate) fn discounted(self, affinity: f32) -> Score {
        Score {
            ms: self.ms * affinity,
            affinity: self.affinity * affinity,
            ..self
        }
    }
}

/// Whether swapping a neighbour whose proximity is `worst` (ms) for
/// `candidate` is worth a session (hysteresis, so that the mesh does not
/// churn itself): 1.25× and 3 ms of RTT better. A prediction counts
/// [`PREDICTION_ERRORS`] times its error estimate higher, so the better the
/// two coordinates, the sooner a swap goes on a prediction alone. The 3 ms
/// are of RTT, discounted by the candidate's affinity as its score is: two
/// same-/24 neighbours 16 and 22 ms away are 8 and 11 apart in proximity.
pub(crate) fn clearly_better(candidate: Score, worst: f32) -> bool {
    let ms = candidate.ms * (1.0 + PREDICTION_ERRORS * candidate.error);
    worst > SWAP_FACTOR * ms && worst > ms + SWAP_MARGIN_MS * candidate.affinity
}

#[cfg(test)]
mod tests {
    use super::{clearly_better, Score};

    fn score(ms: f32, error: f32, affinity: f32) -> Score {
        Score {
            ms: ms * affinity,
            measured: error == 0.0,
            error,
            affinity,
        }
    }

    #[test]
    fn a_swap_needs_a_quarter_and_three_ms_of_rtt() {
        let measured = score(16.0, 0.0, 1.0);
        assert!(clearly_better(measured, 21.0));
        assert!(!clearly_better(measured, 19.5), "under 1.25x");
        let short = score(4.0, 0.0, 1.0);
        assert!(!clearly_better(short, 6.5), "1.6x but under 3 ms");
        // Same /24 on both sides: 16 vs 22 ms of RTT is 8 vs 11 in
        // proximity; a flat 3 of proximity (6 ms of RTT) would refuse it.
        let subnet = score(16.0, 0.0, 0.5);
        assert!(clearly_better(subnet, 11.0));
        assert!(!clearly_better(subnet, 9.5));
    }

    #[test]
    fn a_prediction_counts_twice_its_error_estimate_higher() {
        // 16 ms predicted by coordinates 10 % off each: taken as 22.4.
        let predicted = score(16.0, 0.2, 1.0);
        assert!(!clearly_better(predicted, 27.5));
        assert!(clearly_better(predicted, 28.5));
        // Worse coordinates, more caution.
        assert!(!clearly_better(score(16.0, 0.6, 1.0), 30.0));
    }
}
