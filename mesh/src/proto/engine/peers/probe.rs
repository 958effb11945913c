//! RTT samples: pongs from neighbours, and probes of candidates beyond
//! the neighbourhood (a session asking for no slot, refused at once).

use crate::proto::{
    coords::Coord,
    engine::{peers::candidates::Candidate, Engine, PeerId, Selection},
};

/// Random draws of which every other probe takes the farthest.
const FAR_PROBE_DRAWS: usize = 8;
/// How often a viewer starts a run of probes for RTT samples.
pub(crate) const PROBE_MS: u64 = 1_000;
/// Probes in a run, one after the other: each starts when the previous is
/// answered. A newcomer's map needs several far samples a second
/// (docs/tuning.md, "Probes").
pub(crate) const PROBES_PER_TICK: u32 = 3;
/// After this long in the mesh a viewer probes once per [`PROBE_MS`], not
/// [`PROBES_PER_TICK`] times: its coordinate has settled and its
/// neighbours are chosen, and one probe a second still meets newcomers and
/// keeps the map current. Each probe is a session set up and torn down
/// (a dial, two `Hello`s, a `Refuse`), so fewer is cheaper
/// (docs/tuning.md, "Probes").
pub(crate) const PROBE_SETTLE_MS: u64 = 20_000;

/// Probes: the one under way, how many were made (which one it is picks
/// far, random or close candidates) and how many are left in this run.
#[derive(Debug)]
pub(crate) struct Prober<P> {
    /// The candidate being probed for an RTT sample.
    target: Option<P>,
    /// Probes made so far.
    made: u64,
    /// Probes still to start in this run ([`PROBES_PER_TICK`]).
    left_in_run: u32,
}

impl<P> Default for Prober<P> {
    fn default() -> Self {
        Prober {
            target: None,
            made: 0,
            left_in_run: 0,
        }
    }
}

impl<P: PeerId> Prober<P> {
    /// Whether `peer` is being probed (its session asks for no slot).
    pub(crate) fn is_target(&self, peer: &P) -> bool {
        self.target.as_ref() == Some(peer)
    }

    /// Whether a probe is under way.
    pub(crate) fn busy(&self) -> bool {
        self.target.is_some()
    }

    /// Counts a new probe and returns its number (from 1).
    fn count(&mut self) -> u64 {
        self.made += 1;
        self.made
    }

    fn started(&mut self, peer: P) {
        self.target = Some(peer);
    }

    /// The probe of `peer`, if under way, is over (answered, failed or
    /// closed).
    pub(crate) fn ended(&mut self, peer: &P) {
        if self.is_target(peer) {
            self.target = None;
        }
    }

    /// A new run: `more` probes may follow its first.
    pub(crate) fn start_run(&mut self, more: u32) {
        self.left_in_run = more;
    }

    /// Takes one probe of this run's budget, if any is left.
    fn take_from_run(&mut self) -> bool {
        if self.left_in_run == 0 {
            return false;
        }
        self.left_in_run -= 1;
        true
    }
}

impl<P: PeerId> Engine<P> {
    /// An RTT sample: for the neighbour's median, and to move our coordinate.
    pub(crate) fn on_pong(&mut self, from: &P, nonce: u64, coord: Coord, now: u64) {
        let Some(n) = self.neighbors.get_mut(from) else {
            return;
        };
        n.coord = Some(coord);
        if let Some(c) = self.candidates.get_mut(from) {
            c.info.coord = Some(coord);
        }
        let Some(n) = self.neighbors.get_mut(from) else {
            return;
        };
        let Some((sent_nonce, at)) = n.ping else {
            return;
        };
        if sent_nonce != nonce {
            return;
        }
        let rtt = now.saturating_sub(at);
        n.rtt.record(rtt);
        n.ping = None;
        // Queueing behind pieces inflates single samples: the coordinate
        // learns from the least-queued of the last few.
        let filtered = n.rtt.recent_min(4).unwrap_or(rtt);
        let jitter = (self.rng_f32(), self.rng_f32());
        self.coord.observe(&coord, filtered.max(1) as f32, jitter);
    }

    /// Probes a candidate (far, random or close, see below): dials it and
    /// greets it asking for no slot (`max_degree` 0), which it answers
    /// with its `Hello` and a `Refuse` with suggestions, changing nothing
    /// on its side. The time from our `Hello` to its `Refuse` is one RTT:
    /// a sample for the coordinate from beyond the neighbourhood (Vivaldi
    /// needs far samples to place the regions, and a neighbourhood of
    /// close peers gives none), and it is remembered as the candidate's
    /// measured RTT (which our `Hello` carries if we dial it again, §6.2).
    pub(crate) fn probe(&mut self, now: u64) {
        if self.cfg.role != crate::proto::Role::Viewer
            || self.cfg.selection == Selection::Random
            || self.prober.busy()
        {
            return;
        }
        let ready: Vec<(&P, &Candidate<P>)> = self
            .candidates
            .iter()
            .filter(|(p, c)| self.is_ready(p, c, now))
            .collect();
        if ready.is_empty() {
            return;
        }
        // Of four probes, two go to the farthest of a few random draws
        // (by RTT estimate, none counting as farthest): after pruning
        // (`prune_candidates`) most candidates are close, and the
        // coordinate still needs far samples. One goes to a random
        // candidate, one to the closest never measured (below).
        let number = self.prober.count();
        let mut pick = ready[rand::Rng::gen_range(&mut self.rng, 0..ready.len())];
        if number.is_multiple_of(2) {
            let rtt = |e: &Self, c: &Candidate<P>| e.candidate_rtt(c).map_or(f32::MAX, |s| s.ms);
            let mut farthest = rtt(self, pick.1);
            for _ in 1..FAR_PROBE_DRAWS {
                let draw = ready[rand::Rng::gen_range(&mut self.rng, 0..ready.len())];
                let d = rtt(self, draw.1);
                if d > farthest {
                    (pick, farthest) = (draw, d);
                }
            }
        }
        // One probe in four (one in two once settled, when the map needs
        // fewer far samples) goes to the closest candidate by prediction
        // that was never measured: near predictions are the least precise,
        // and a measured offer is swapped on a finer margin.
        if number % 4 == 1 || self.settled(now) && number % 2 == 1 {
            let near = ready
                .iter()
                .filter(|(_, c)| c.measured_ms.is_none())
                .filter_map(|&(p, c)| Some((self.candidate_proximity(c)?.ms, (p, c))))
                .min_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1 .0.cmp(b.1 .0)));
            if let Some((_, p)) = near {
                pick = p;
            }
        }
        let pick = pick.0.clone();
        if self.dial(&pick, now) {
            self.prober.started(pick);
        }
    }

    /// The probed candidate refused as asked: one RTT since our `Hello`.
    pub(crate) fn probe_answered(&mut self, from: &P, now: u64) {
        self.prober.ended(from);
        let Some(n) = self.neighbors.get(from) else {
            return;
        };
        let rtt = now.saturating_sub(n.connected_at).max(1);
        if let Some(coord) = n.coord {
            let jitter = (self.rng_f32(), self.rng_f32());
            self.coord.observe(&coord, rtt as f32, jitter);
        }
        if let Some(c) = self.candidates.get_mut(from) {
            c.measured_ms = Some(u32::try_from(rtt).unwrap_or(u32::MAX));
        }
        self.drop_peer(from, "probe answered", now);
        // The next probe of this tick's run, if any, at once.
        if self.prober.take_from_run() {
            self.probe(now);
        }
    }

    /// In the mesh for [`PROBE_SETTLE_MS`] or more: the coordinate has
    /// settled and the neighbours are chosen (fewer, closer probes).
    pub(crate) fn settled(&self, now: u64) -> bool {
        now >= self.joined_at + PROBE_SETTLE_MS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_allows_its_budget_and_no_more() {
        let mut prober = Prober::<u32>::default();
        prober.start_run(PROBES_PER_TICK - 1);
        let follow_ups = (0..10).filter(|_| prober.take_from_run()).count();
        assert_eq!(follow_ups as u32, PROBES_PER_TICK - 1);
    }

    #[test]
    fn only_the_target_ends_a_probe() {
        let mut prober = Prober::<u32>::default();
        prober.started(4);
        prober.ended(&5);
        assert!(prober.busy() && prober.is_target(&4));
        prober.ended(&4);
        assert!(!prober.busy());
        assert_eq!((prober.count(), prober.count()), (1, 2));
    }
}
