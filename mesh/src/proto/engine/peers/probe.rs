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
            || self.probe.is_some()
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
        self.probes += 1;
        let mut pick = ready[rand::Rng::gen_range(&mut self.rng, 0..ready.len())];
        if self.probes.is_multiple_of(2) {
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
        if self.probes % 4 == 1 || self.settled(now) && self.probes % 2 == 1 {
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
            self.probe = Some(pick);
        }
    }

    /// The probed candidate refused as asked: one RTT since our `Hello`.
    pub(crate) fn probe_answered(&mut self, from: &P, now: u64) {
        self.probe = None;
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
        if self.probe_budget > 0 {
            self.probe_budget -= 1;
            self.probe(now);
        }
    }

    /// In the mesh for [`PROBE_SETTLE_MS`] or more: the coordinate has
    /// settled and the neighbours are chosen (fewer, closer probes).
    pub(crate) fn settled(&self, now: u64) -> bool {
        now >= self.joined_at + PROBE_SETTLE_MS
    }
}
