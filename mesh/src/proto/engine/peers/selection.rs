//! Which candidates become neighbours: dialling to fill the degree,
//! swapping a neighbour for a clearly closer candidate, letting a newcomer
//! in, starting over when the neighbourhood starves, and long links.

use super::candidates::{DROPPED_MS, HANDSHAKE_TIMEOUT_MS};
use crate::proto::{
    engine::{
        peers::score::{clearly_better, Score},
        Engine, PeerId, Selection,
    },
    wire::Hello,
};

/// A full neighbourhood silent this long is starved (see
/// `replace_if_starved`).
const STARVED_MS: u64 = 4_000;
/// A full node lets a newcomer in by eviction at most this often.
const EVICT_GAP_MS: u64 = 1_000;
/// A node with half its cap of neighbours or more dials candidates scoring
/// up to this many times its neighbours' median proximity.
const DIAL_FACTOR: f32 = 2.0;
/// Below this many viewers every node keeps a long link: a small swarm's
/// regions hold too few peers to carry the stream on their own
/// (docs/tuning.md, "Long links").
const LONG_LINK_ALL_BELOW: f32 = 100.0;
/// The share of nodes that keep a long link in a mid-size swarm (400 to
/// 800 viewers), and while the swarm's size is unknown.
const LONG_LINK_SHARE: f32 = 0.25;
/// Long links a swarm of more than 800 viewers keeps, about: there the
/// seeder's spread (see `spread`) carries the stream into every region.
const LONG_LINKS: f32 = 200.0;

/// A neighbour swap in progress (see `optimize_neighbors`).
#[derive(Clone, Debug)]
pub(crate) struct Swap<P> {
    /// The candidate dialled.
    pub(crate) to: P,
    /// The neighbour it replaces once it accepts.
    pub(crate) victim: P,
}

/// What neighbour selection remembers between runs.
#[derive(Debug)]
pub(crate) struct Selector<P> {
    /// A swap under way: the closer candidate is dialled first, and the
    /// neighbour it replaces goes only once it has accepted.
    swap: Option<Swap<P>>,
    /// Dials made so far (every fourth goes to a random candidate).
    dials: u64,
    /// When a new verified piece last arrived (announcements prove
    /// nothing: a peer can announce what it does not have).
    fed_at: u64,
    /// The neighbourhood went quiet: dial the next candidates at random.
    starved: bool,
    /// When a neighbour was last dropped to let a newcomer in.
    last_evict: Option<u64>,
    /// A uniform draw in [0, 1) made once: this node keeps one long link
    /// (a random dial in four, its slowest neighbour never swapped) while
    /// the draw is under [`long_link_share`] of the swarm's size.
    long_link_draw: f32,
    /// Viewers in the swarm, as the tracker last said.
    swarm_viewers: Option<u32>,
    /// Reflectors serve the swarm's viewers, as the tracker last said.
    reflected: bool,
}

impl<P: PeerId> Selector<P> {
    pub(crate) fn new(long_link_draw: f32, now: u64) -> Self {
        Selector {
            swap: None,
            dials: 0,
            fed_at: now,
            starved: false,
            last_evict: None,
            long_link_draw,
            swarm_viewers: None,
            reflected: false,
        }
    }

    /// Whether this node keeps a long link (see [`long_link_share`]).
    pub(crate) fn long_link(&self) -> bool {
        self.long_link_draw < long_link_share(self.swarm_viewers)
    }

    pub(crate) fn swarm_viewers(&self) -> Option<u32> {
        self.swarm_viewers
    }

    pub(crate) fn set_swarm_viewers(&mut self, viewers: u32) {
        self.swarm_viewers = Some(viewers);
    }

    pub(crate) fn reflected(&self) -> bool {
        self.reflected
    }

    pub(crate) fn set_reflected(&mut self, on: bool) {
        self.reflected = on;
    }

    pub(crate) fn start_swap(&mut self, swap: Swap<P>) {
        self.swap = Some(swap);
    }

    /// The swap to `peer`, if one is under way, is off (the dial failed,
    /// or the session closed).
    pub(crate) fn swap_failed(&mut self, peer: &P) {
        if self.swap.as_ref().is_some_and(|s| &s.to == peer) {
            self.swap = None;
        }
    }

    /// `peer` accepted: the swap to it, if any, is done and returned.
    pub(crate) fn swap_accepted(&mut self, peer: &P) -> Option<Swap<P>> {
        self.swap.take_if(|s| &s.to == peer)
    }

    /// A new verified piece arrived at `now`.
    pub(crate) fn fed(&mut self, now: u64) {
        self.fed_at = now;
    }

    /// Whether nothing new arrived for [`STARVED_MS`] up to `now`.
    fn starving(&self, now: u64) -> bool {
        now >= self.fed_at + STARVED_MS
    }

    /// The neighbourhood starved: the next dials go at random, and the
    /// next verdict waits another [`STARVED_MS`].
    fn starve(&mut self, now: u64) {
        self.fed_at = now;
        self.starved = true;
    }

    /// A neighbour was dropped at `now` to let a newcomer in.
    fn evicted(&mut self, now: u64) {
        self.last_evict = Some(now);
    }

    /// Whether the neighbourhood starved since this was last asked.
    fn take_starved(&mut self) -> bool {
        std::mem::take(&mut self.starved)
    }

    fn dials(&self) -> u64 {
        self.dials
    }

    fn count_dials(&mut self, n: usize) {
        self.dials += n as u64;
    }

    fn swap(&self) -> Option<&Swap<P>> {
        self.swap.as_ref()
    }

    fn clear_swap(&mut self) {
        self.swap = None;
    }

    /// Whether a newcomer may be let in by eviction at `now`.
    fn may_evict(&self, now: u64) -> bool {
        self.last_evict.is_none_or(|t| now >= t + EVICT_GAP_MS)
    }
}

/// The share of nodes that keep a long link in a swarm of `viewers`:
/// all of them up to [`LONG_LINK_ALL_BELOW`], then `100 / viewers` down
/// to [`LONG_LINK_SHARE`]; past 800 viewers, [`LONG_LINKS`] in all
/// (0.1 at 2,000, 0.02 at 10,000). In a large swarm the seeder's pushes
/// enter every region at once, and what is left for long links is to
/// teach the coordinates the far side of the map (docs/tuning.md, "Long
/// links").
pub(crate) fn long_link_share(viewers: Option<u32>) -> f32 {
    match viewers {
        Some(n) if n > 0 => {
            let n = n as f32;
            (LONG_LINK_ALL_BELOW / n)
                .max(LONG_LINK_SHARE.min(LONG_LINKS / n))
                .min(1.0)
        }
        _ => LONG_LINK_SHARE,
    }
}

impl<P: PeerId> Engine<P> {
    /// At the cap, a poorly connected newcomer (at most half the cap of
    /// neighbours: just joined, or starved) is let in by dropping our most
    /// connected viewer neighbour, which has other paths; otherwise a group
    /// of full nodes could stay closed to it forever. At most once per
    /// [`EVICT_GAP_MS`].
    pub(crate) fn evict_for(&mut self, from: &P, hello: &Hello, now: u64) -> bool {
        if !self.selector.may_evict(now) {
            return false;
        }
        let (victim, reason) = if usize::from(hello.degree) <= self.cfg.max_degree / 2 {
            let most_connected = self
                .neighbors
                .active_viewers()
                .min_by_key(|(p, n)| (n.free.unwrap_or(0), n.connected_at, (*p).clone()))
                .map(|(p, _)| p.clone());
            let Some(p) = most_connected else {
                return false;
            };
            (p, "evicted for a poorly connected newcomer")
        } else {
            // The dialler is clearly closer than our worst neighbour: the
            // same swap the periodic optimisation would make, from our side.
            let Some(score) = self.hello_score(from, hello) else {
                return false;
            };
            let Some(p) = self.victim_for(score, now) else {
                return false;
            };
            self.stats.neighbor_swaps += 1;
            (p, "replaced by a closer candidate")
        };
        self.candidates.hold_off(&victim, now + DROPPED_MS);
        self.selector.evicted(now);
        self.drop_peer(&victim, reason, now);
        true
    }

    /// The worst score a node with enough neighbours still dials:
    /// [`DIAL_FACTOR`] × the median proximity of its viewer neighbours.
    pub(crate) fn dial_limit(&self) -> Option<f32> {
        let mut prox: Vec<f32> = self
            .neighbors
            .values()
            .filter(|n| n.is_active() && n.role == crate::proto::Role::Viewer)
            .filter_map(|n| self.neighbor_proximity(n))
            .collect();
        if prox.is_empty() {
            return None;
        }
        prox.sort_by(f32::total_cmp);
        Some(DIAL_FACTOR * prox[prox.len() / 2])
    }

    /// Periodic optimisation: replaces one viewer neighbour when a
    /// candidate is clearly closer (see [`clearly_better`]: hysteresis, so
    /// that the mesh does not churn itself). The candidate is dialled first
    /// and the neighbour dropped only when it accepts (`on_hello`): a
    /// refusal costs nothing. One swap at a time, at most one per period;
    /// a replaced peer is not retried for a minute.
    pub(crate) fn optimize_neighbors(&mut self, now: u64) {
        if self.cfg.role.is_infra() {
            return self.optimize_spread(now);
        }
        if self.cfg.selection == Selection::Random
            || self.degree() + 1 < self.cfg.max_degree
            || !self.swap_done()
        {
            return;
        }
        // The best measured and the best predicted offer (ties: lowest
        // id): their margins differ, the measured one is tried first.
        let mut measured: Option<(Score, &P)> = None;
        let mut predicted: Option<(Score, &P)> = None;
        for (p, c) in self.candidates.iter() {
            if !self.is_ready(p, c, now) {
                continue;
            }
            let Some(score) = self.candidate_proximity(c) else {
                continue;
            };
            let best = if score.measured {
                &mut measured
            } else {
                &mut predicted
            };
            if best.is_none_or(|(b, _)| score.ms < b.ms) {
                *best = Some((score, p));
            }
        }
        let Some((to, victim)) = [measured, predicted]
            .into_iter()
            .flatten()
            .find_map(|(score, p)| Some((p.clone(), self.victim_for(score, now)?)))
        else {
            return;
        };
        if self.dial(&to, now) {
            self.selector.start_swap(Swap { to, victim });
        }
    }

    /// Whether no swap is under way: a finished one is forgotten (a dial
    /// that never answers is backed off and forgotten after 10 s by
    /// `fill_neighbors`).
    pub(crate) fn swap_done(&mut self) -> bool {
        if let Some(swap) = self.selector.swap() {
            if self
                .candidates
                .get(&swap.to)
                .is_some_and(|c| c.dialing_since.is_some())
                || self.neighbors.contains_key(&swap.to)
            {
                return false;
            }
            self.selector.clear_swap();
        }
        true
    }

    /// The viewer neighbour to replace for `offer`: among those connected
    /// for a period (the long link excepted), the ones the offer is clearly
    /// closer than; of them the worst by the full score, so that spread and
    /// a slow delivery rate choose which goes. Rate alone never causes a
    /// swap: a slow viewer has to be somebody's neighbour.
    pub(crate) fn victim_for(&self, offer: Score, now: u64) -> Option<P> {
        let mut scored: Vec<(u64, f32, f32, P)> = self
            .neighbors
            .active_viewers()
            .filter(|(_, n)| now >= n.connected_at + self.cfg.optimize_ms)
            .filter_map(|(p, n)| {
                let rtt = n.rtt.base_median()?;
                let proximity = rtt as f32 * self.affinity(&n.loc);
                Some((rtt, proximity, self.neighbor_score(n)?, p.clone()))
            })
            .collect();
        if scored.len() < 2 {
            return None;
        }
        if self.long_link() {
            // The slowest by RTT stays.
            let slowest = (0..scored.len())
                .max_by_key(|&i| (scored[i].0, scored[i].3.clone()))
                .expect("two or more");
            scored.swap_remove(slowest);
        }
        scored
            .into_iter()
            .filter(|(_, proximity, _, _)| clearly_better(offer, *proximity))
            .max_by(|a, b| a.2.total_cmp(&b.2).then_with(|| a.3.cmp(&b.3)))
            .map(|(_, _, _, p)| p)
    }

    /// A full neighbourhood that has delivered no new piece for
    /// [`STARVED_MS`] may be a group cut off from the source (late joiners
    /// that filled their slots with each other while everyone else was
    /// full): one random viewer neighbour is dropped and the next dial goes
    /// to a random candidate, until news arrives.
    pub(crate) fn replace_if_starved(&mut self, now: u64) {
        if self.cfg.role != crate::proto::Role::Viewer
            || !self.selector.starving(now)
            || self.degree() + 1 < self.cfg.max_degree
        {
            return;
        }
        self.selector.starve(now);
        let mut viewers: Vec<P> = self
            .neighbors
            .active_viewers()
            .map(|(p, _)| p.clone())
            .collect();
        rand::seq::SliceRandom::shuffle(viewers.as_mut_slice(), &mut self.rng);
        // Half go, so that full nodes elsewhere let this one in (`evict_for`).
        let keep = (self.cfg.max_degree / 2).saturating_sub(1);
        for victim in viewers.into_iter().skip(keep) {
            self.candidates.retry_at(&victim, now + DROPPED_MS);
            self.drop_peer(&victim, "no news from the neighbourhood", now);
        }
    }

    /// Dials candidates while below the degree cap. Candidates are tried in
    /// a seeded random order (measured RTT needs a session first).
    pub(crate) fn fill_neighbors(&mut self, now: u64) {
        // Dials that timed out, and those still pending (a probe's aside),
        // in one pass: a node runs this every tick, and at 100,000
        // simulated viewers the candidate lists are read from memory.
        let mut dialing = 0;
        for (p, c) in self.candidates.iter_mut() {
            if c.dialing_since
                .is_some_and(|t| now >= t + HANDSHAKE_TIMEOUT_MS)
            {
                c.back_off(now);
            }
            if c.dialing_since.is_some() && !self.prober.is_target(p) {
                dialing += 1;
            }
        }
        if self.cfg.role.is_infra() {
            return self.fill_spread(now);
        }
        let used = self.neighbors.len() + dialing;
        if used >= self.cfg.max_degree {
            return;
        }
        let mut ready: Vec<P> = self
            .candidates
            .iter()
            .filter(|(p, c)| self.is_ready(p, c, now))
            .map(|(p, _)| p.clone())
            .collect();
        rand::seq::SliceRandom::shuffle(ready.as_mut_slice(), &mut self.rng);
        let starved = self.selector.take_starved();
        let ranked = self.cfg.selection != Selection::Random && !starved;
        // Scores are finite and non-negative: their bits sort as they
        // compare; no score sorts last.
        let key = |e: &Self, p: &P| {
            e.candidates
                .get(p)
                .and_then(|c| e.candidate_score(c))
                .map_or(u32::MAX, |s| s.ms.max(0.0).to_bits())
        };
        if ranked {
            // Best scored first (a stable sort keeps the shuffle among
            // candidates without an RTT), but a node that keeps a long link
            // sends every fourth dial to a random candidate: long links keep
            // the regions joined and teach the coordinates the far side of
            // the map.
            ready.sort_by_cached_key(|p| key(self, p));
        }
        // A node with half its cap or more dials only candidates about as
        // close as its neighbours: in a full mesh the free slots are far
        // away, and a far neighbour is worse than an empty slot.
        let limit = (ranked && self.degree() >= self.cfg.max_degree / 2)
            .then(|| self.dial_limit())
            .flatten();
        let mut picks = Vec::new();
        for i in 0..(self.cfg.max_degree - used).min(ready.len()) {
            if ready.is_empty() {
                break;
            }
            let random_pick = self.cfg.selection != Selection::Random
                && (starved || self.long_link() && (self.selector.dials() + i as u64) % 4 == 3);
            let idx = if random_pick {
                rand::Rng::gen_range(&mut self.rng, 0..ready.len())
            } else if limit.is_some_and(|l| key(self, &ready[0]) > l.to_bits()) {
                continue;
            } else {
                0
            };
            picks.push(ready.remove(idx));
        }
        self.selector.count_dials(picks.len());
        for p in picks {
            self.dial(&p, now);
        }
    }

    /// Whether this node keeps a long link (see [`long_link_share`]).
    pub(crate) fn long_link(&self) -> bool {
        self.selector.long_link()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starvation_is_judged_from_the_last_verified_piece() {
        let mut s = Selector::<u32>::new(0.5, 0);
        assert!(!s.starving(STARVED_MS - 1));
        s.fed(1_000);
        assert!(!s.starving(STARVED_MS));
        assert!(s.starving(1_000 + STARVED_MS));
        s.starve(1_000 + STARVED_MS);
        assert!(s.take_starved() && !s.take_starved(), "once per verdict");
        assert!(!s.starving(1_000 + STARVED_MS), "the next verdict waits");
    }

    #[test]
    fn evictions_are_spaced_and_a_swap_ends_only_with_its_own_candidate() {
        let mut s = Selector::<u32>::new(0.5, 0);
        s.evicted(10);
        assert!(!s.may_evict(10 + EVICT_GAP_MS - 1));
        assert!(s.may_evict(10 + EVICT_GAP_MS));
        s.start_swap(Swap { to: 2, victim: 1 });
        s.swap_failed(&1);
        assert!(s.swap_accepted(&1).is_none());
        assert_eq!(s.swap_accepted(&2).map(|w| w.victim), Some(1));
        assert!(s.swap().is_none());
    }

    #[test]
    fn a_node_keeps_a_long_link_while_its_draw_is_under_the_share() {
        let mut s = Selector::<u32>::new(0.2, 0);
        assert!(s.long_link(), "unknown swarm: share {LONG_LINK_SHARE}");
        s.set_swarm_viewers(2_000);
        assert!(!s.long_link(), "share 0.1 at 2,000 viewers");
        s.set_swarm_viewers(50);
        assert!(s.long_link(), "every node in a small swarm");
    }
}
