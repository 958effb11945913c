//! Infrastructure's neighbours: spread over the map.
//!
//! A seeder pushes each new piece to [`Engine::spread`] viewer neighbours at
//! once, one per [`VIEWERS_PER_PUSH`] viewers in the swarm: in a large swarm
//! the stream enters the mesh at many points, so each piece needs fewer hops
//! to reach everyone. Those points only help if they are apart: copies that
//! all enter in one region reach the others through a few long links, late.
//! So infrastructure chooses its neighbours to cover the map, by network
//! coordinates: it dials the candidate farthest from itself and its
//! neighbours (greedy k-center, Gonzalez 1985), and every optimisation period
//! replaces its most redundant neighbour (the one closest to another) with a
//! candidate that covers clearly more. Viewers always make room for an
//! infrastructure dial. This is the fan-out of Akamai's reflectors and of the
//! CDN in ByteDance's Swarm: infrastructure feeds several entry points, peers
//! do the rest. It also frees viewers from carrying the stream between
//! regions over long links (see `long_link_share`).

use super::peers::candidates::Candidate;
use super::{peers::selection::Swap, Engine, PeerId};
use crate::proto::{
    coords::Coord,
    piece::Piece,
    wire::{Hello, Message, Role},
};

/// A seeder pushes each piece to one viewer per this many in the swarm.
const VIEWERS_PER_PUSH: u32 = 250;
/// A swarm larger than this gets at least [`MIN_ENTRIES`] copies: below
/// it every viewer keeps a long link (`long_link_share`), above it one
/// entry point per piece left whole regions fetching it from
/// infrastructure near the deadline (docs/tuning.md, "Entry points").
const MIN_ENTRIES_ABOVE: u32 = 100;
const MIN_ENTRIES: u32 = 4;
/// Under a budget, what of a copy's worth is kept for requests.
const REQUEST_RESERVE: f64 = 0.5;
/// It never pushes more copies than this.
const MAX_SPREAD: usize = 64;
/// What a viewer's upload must carry, in streams, for a seeder to push to
/// it (see `relays`).
const RELAY_UPLOAD: f64 = 3.0;
/// A candidate replaces a neighbour when it shortens the sampled viewers'
/// way by this factor more than the neighbour's loss lengthens it, and by
/// this many ms per ten sampled viewers (hysteresis, as for viewers' swaps).
const COVER_FACTOR: f32 = 1.5;
const COVER_MARGIN_MS: f32 = 10.0;
/// The distance of a viewer with no entry point at all.
const FAR_MS: f32 = 1_000.0;

impl<P: PeerId> Engine<P> {
    /// Copies of each new piece infrastructure pushes into the mesh: the
    /// configured `push_fanout`, or one per [`VIEWERS_PER_PUSH`] viewers
    /// when the swarm is larger, up to [`MAX_SPREAD`].
    pub(super) fn spread(&self) -> usize {
        if self.feeds_reflectors_only() {
            return 0;
        }
        let by_swarm = self.selector.swarm_viewers().map_or(0, |n| {
            let entries = if n > MIN_ENTRIES_ABOVE {
                MIN_ENTRIES
            } else {
                0
            };
            (n / VIEWERS_PER_PUSH).max(entries) as usize
        });
        let wanted = by_swarm.min(MAX_SPREAD).max(self.cfg.push_fanout);
        match self.uploads.budget().zip(self.stream_rate()) {
            Some((budget, rate)) => wanted.min(affordable_copies(budget as f64, rate)),
            None => wanted,
        }
    }

    /// Pushes a new piece, unasked, to `spread` active viewer neighbours
    /// (not its source `from`, nor one known to hold it): all of them when
    /// there are no more (they were chosen to cover the map), else the
    /// better-provisioned half in turn, where the first copies can be
    /// passed on quickly. Under a budget the copies join the upload queue,
    /// which drains at the budget's pace, as far as it has room: the first
    /// ahead of requests, so that new pieces always get in.
    pub(super) fn push_to_spread(&mut self, piece: &Piece, from: Option<&P>) {
        let mut viewers: Vec<(u32, P)> = self
            .neighbors
            .active_viewers()
            .map(|(p, n)| (n.capacity(), p.clone()))
            .collect();
        let fanout = self.spread();
        if fanout < viewers.len() {
            viewers.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            viewers.truncate(viewers.len().div_ceil(2));
        }
        let seq = piece.header.seq;
        let mut first = true;
        for i in 0..fanout.min(viewers.len()) {
            let to = &viewers[(self.push_next + i) % viewers.len()].1;
            // Chosen as if it lacked the piece, so that the turns do not
            // depend on what neighbours announced; skipped if it has it.
            if Some(to) == from {
                continue;
            }
            let Some(n) = self.neighbors.get_mut(to).filter(|n| !n.has.contains(seq)) else {
                continue;
            };
            if self.uploads.paces_pushes() {
                let queued = if first {
                    self.uploads.push_first(to.clone(), seq)
                } else if self.uploads.is_full() {
                    false
                } else {
                    self.uploads.push(to.clone(), seq);
                    true
                };
                if !queued {
                    break;
                }
                first = false;
                n.has.insert(seq);
                continue;
            }
            n.has.insert(seq);
            let to = to.clone();
            self.send(&to, &Message::Piece(piece.clone()));
        }
        self.push_next = self.push_next.wrapping_add(1);
    }

    /// No session is admitted over this: a viewer's `max_degree`;
    /// infrastructure takes inbound sessions up to `max_degree` (and other
    /// infrastructure always) and dials up to its spread. When the swarm
    /// shrinks, infrastructure's cap may fall below its degree: nobody is
    /// dropped, newcomers wait.
    pub fn degree_cap(&self) -> usize {
        if self.feeds_reflectors_only() {
            0
        } else if self.cfg.role.is_infra() {
            self.cfg.max_degree.max(self.spread())
        } else {
            self.cfg.max_degree
        }
    }

    /// A seeder of a stream whose viewers reflectors serve: its upload is
    /// its reflectors' feeds, whatever the audience (docs/coordinator.md).
    fn feeds_reflectors_only(&self) -> bool {
        self.cfg.role == Role::Seeder && self.selector.reflected()
    }

    /// The tracker says whether reflectors serve the stream's viewers; a
    /// seeder that now feeds reflectors only lets its viewers go (they
    /// have the reflectors, and its upload goes to its feeds).
    pub(super) fn set_reflected(&mut self, on: bool, now: u64) {
        if self.cfg.role != Role::Seeder || on == self.selector.reflected() {
            return;
        }
        self.selector.set_reflected(on);
        if on {
            let viewers: Vec<P> = self
                .neighbors
                .active_viewers()
                .map(|(p, _)| p.clone())
                .collect();
            for p in viewers {
                self.drop_peer(&p, "the stream is reflected", now);
            }
        }
    }

    /// The sessions [`Self::degree_cap`] counts: a viewer's active ones;
    /// infrastructure's with viewers only, for its sessions with other
    /// infrastructure (parents and fed reflectors, the tier's backbone)
    /// must never take a viewer's slot nor be refused for one.
    pub(super) fn capped_degree(&self) -> usize {
        if self.cfg.role.is_infra() {
            self.neighbors.active_viewers().count()
        } else {
            self.degree()
        }
    }

    /// Active sessions outside the cap: infrastructure's with
    /// infrastructure.
    pub(super) fn backbone_degree(&self) -> usize {
        self.degree() - self.capped_degree()
    }

    /// A viewer at its cap greeted by infrastructure drops its worst viewer
    /// neighbour (by the full score; one without a score first).
    pub(super) fn make_room_for_infra(&mut self, now: u64) {
        let worst = self
            .neighbors
            .active_viewers()
            .map(|(p, n)| (self.neighbor_score(n).unwrap_or(f32::MAX), p))
            .max_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)))
            .map(|(_, p)| p.clone());
        if let Some(p) = worst {
            self.drop_peer(&p, "room for infrastructure", now);
        }
    }

    /// Infrastructure below its cap dials, one after another, the
    /// candidates that most shorten the way from the viewers it knows of to
    /// their nearest entry point (its neighbours and pending dials).
    pub(super) fn fill_spread(&mut self, now: u64) {
        let pending = |c: &Candidate<P>| c.dialing_since.is_some();
        let used = self.neighbors.len() - self.backbone_degree()
            + self.candidates.values().filter(|c| pending(c)).count();
        let cap = self.degree_cap();
        if used >= cap {
            return;
        }
        let sample = self.sample();
        let mut entries: Vec<Coord> = self.neighbors.values().filter_map(|n| n.coord).collect();
        entries.extend(
            self.candidates
                .values()
                .filter(|c| pending(c))
                .filter_map(|c| c.info.coord),
        );
        let mut nearest: Vec<f32> = sample.iter().map(|s| nearest_ms(s, &entries)).collect();
        for _ in used..cap {
            let Some((p, coord, _)) = self.best_entry(&sample, &nearest, now) else {
                break;
            };
            self.dial(&p, now);
            for (d, s) in nearest.iter_mut().zip(&sample) {
                *d = d.min(s.rtt_ms(&coord));
            }
        }
    }

    /// Every optimisation period, one local-search step of k-median
    /// (Arya et al., "Local search heuristics for k-median", 2004): the
    /// neighbour whose loss lengthens the viewers' way least is replaced
    /// by the candidate that shortens it most, when the trade is clearly
    /// worth it; a neighbour with too little upload to relay our pushes
    /// goes first. Dialled first, as a viewer's swap.
    pub(super) fn optimize_spread(&mut self, now: u64) {
        if self.capped_degree() < self.degree_cap() || !self.swap_done() {
            return;
        }
        let mut entries: Vec<(P, Coord, bool)> = self
            .neighbors
            .active_viewers()
            .filter(|(p, _)| !self.parents.contains(p))
            .filter(|(_, n)| now >= n.connected_at + self.cfg.optimize_ms)
            .filter_map(|(p, n)| Some((p.clone(), n.coord?, self.relays_upload(n.upload_kbps))))
            .collect();
        if entries.is_empty() {
            return;
        }
        let sample = self.sample();
        // Per sampled viewer: its nearest and second-nearest entry.
        let mut loss = vec![0.0f32; entries.len()];
        let mut nearest = Vec::with_capacity(sample.len());
        for s in &sample {
            let (mut d1, mut d2, mut i1) = (FAR_MS, FAR_MS, 0);
            for (i, (_, e, _)) in entries.iter().enumerate() {
                let d = s.rtt_ms(e);
                if d < d1 {
                    (d2, d1, i1) = (d1, d, i);
                } else if d < d2 {
                    d2 = d;
                }
            }
            loss[i1] += d2 - d1;
            nearest.push(d1);
        }
        let victim = match entries.iter().position(|e| !e.2) {
            Some(weak) => weak,
            None => (0..entries.len())
                .min_by(|&a, &b| {
                    loss[a]
                        .total_cmp(&loss[b])
                        .then_with(|| entries[a].0.cmp(&entries[b].0))
                })
                .expect("not empty"),
        };
        let Some((to, _, gain)) = self.best_entry(&sample, &nearest, now) else {
            return;
        };
        let weak = !entries[victim].2;
        let worth =
            gain > COVER_FACTOR * loss[victim] + COVER_MARGIN_MS * sample.len() as f32 / 10.0;
        if (weak || worth) && self.dial(&to, now) {
            let victim = entries.swap_remove(victim).0;
            self.selector.start_swap(Swap { to, victim });
        }
    }

    /// Where the viewers are, as far as we know: our candidates' and
    /// neighbours' coordinates (the tracker hands infrastructure a random
    /// sample of the swarm, so this is a sample of the map).
    fn sample(&self) -> Vec<Coord> {
        let candidates = self.candidates.values().filter_map(|c| c.info.coord);
        let neighbors = self.neighbors.values().filter_map(|n| n.coord);
        candidates.chain(neighbors).collect()
    }

    /// The ready candidate that most shortens the sampled viewers' way to
    /// their nearest entry (`nearest`, per sampled viewer), with its
    /// coordinate and the total shortening (ties: lowest id).
    fn best_entry(&self, sample: &[Coord], nearest: &[f32], now: u64) -> Option<(P, Coord, f32)> {
        self.candidates
            .iter()
            .filter(|(p, c)| self.is_ready(p, c, now))
            .filter_map(|(p, c)| {
                let coord = c.info.coord?;
                let gain: f32 = sample
                    .iter()
                    .zip(nearest)
                    .map(|(s, &d)| (d - s.rtt_ms(&coord)).max(0.0))
                    .sum();
                Some((p, coord, gain))
            })
            .max_by(|a, b| a.2.total_cmp(&b.2).then_with(|| b.0.cmp(a.0)))
            .map(|(p, c, g)| (p.clone(), c, g))
    }

    /// Whether a viewer that greeted with `hello` can pass our pushes on:
    /// its advertised upload (none: unlimited) carries [`RELAY_UPLOAD`]
    /// times the stream (its relays, and its share of its neighbours'
    /// requests, since it is their first holder).
    pub(super) fn relays(&self, hello: &Hello) -> bool {
        hello.role != Role::Viewer || self.relays_upload(hello.upload_kbps)
    }

    fn relays_upload(&self, kbps: u32) -> bool {
        kbps == 0
            || self
                .stream_rate()
                .is_none_or(|rate| f64::from(kbps) * 125.0 >= RELAY_UPLOAD * rate)
    }
}

/// Copies of each piece a budget of `budget` bytes/s affords a stream of
/// `rate` bytes/s: the first always, and as many more as leave at least
/// [`REQUEST_RESERVE`] of a copy for the requests of viewers that missed a
/// piece, which go through the same budget. A pushed copy is the cheaper:
/// one entry point more saved a mid-size swarm several copies of requests.
fn affordable_copies(budget: f64, rate: f64) -> usize {
    if rate.is_nan() || rate <= 0.0 {
        return 1;
    }
    ((budget / rate - REQUEST_RESERVE).max(1.0)) as usize
}

/// Distance to the nearest of `entries`, [`FAR_MS`] if there are none.
fn nearest_ms(c: &Coord, entries: &[Coord]) -> f32 {
    entries.iter().map(|e| c.rtt_ms(e)).fold(FAR_MS, f32::min)
}
