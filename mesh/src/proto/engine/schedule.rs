//! The pull scheduler: which missing piece to ask of whom, and when to fall
//! back to infrastructure.
//!
//! Urgent pieces (deadline within two fallback margins) go earliest deadline
//! first; the rest rarest first, so scarce pieces spread before they are
//! needed (DESIGN.md "Exchange"; CoolStreaming/DONet). Each piece goes to the
//! viewer neighbour with the lowest expected completion time (RTT + queued
//! bytes / delivery rate), under a bound of requests in flight per neighbour,
//! which spreads the load over neighbours. Infrastructure is asked only when
//! no viewer offers the piece and its deadline is within the fallback margin.

use std::collections::BTreeMap;

use smallvec::SmallVec;

use super::{Engine, Output, PeerId, Timer, SCHEDULE_IDLE_MS, SCHEDULE_MS};
use crate::proto::{piece::MAX_PIECE_BYTES, wire::Message};

/// Pieces considered per run, at most.
const LOOKAHEAD: u64 = 1024;
/// Missing pieces a run lists without allocating: a viewer keeping up
/// misses a few, one catching up up to [`LOOKAHEAD`] (which spill to the
/// heap).
const INLINE_WANTS: usize = 64;
/// Infrastructure requests over HTTP are given this long.
const INFRA_TIMEOUT_MS: u64 = 3_000;

/// A missing piece the scheduler may ask for. The derived order (the
/// fields', in turn) is the order pieces are asked for: urgent ones first,
/// by deadline; then the rest rarest first; then by seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Want {
    /// Not due within two fallback margins.
    later: bool,
    /// For an urgent piece its deadline; for the rest the number of
    /// neighbours holding it.
    rank: u64,
    seq: u64,
    deadline: Option<u64>,
}

impl<P: PeerId> Engine<P> {
    pub(super) fn schedule(&mut self, now: u64) {
        self.timers.set(Timer::Schedule, now + SCHEDULE_MS);
        if !self.cfg.role.eq(&crate::proto::Role::Viewer) {
            return;
        }
        self.expire_requests(now);
        // Deadlines are on the broadcaster's (wall) clock; timers are not.
        let wall = self.wall(now);
        let Some(start) = self.choose_start(wall) else {
            return;
        };
        // While rebuffering the held pieces' pace says nothing of when the
        // next will come (see `rebuffer`).
        if self.playback.resume_from().is_none() {
            self.edge.extrapolate(&self.store, wall);
        }
        let Some(newest) = self.edge.newest() else {
            return;
        };
        let lo = self.playback.next_due().unwrap_or(start).max(start);
        let hi = newest.min(lo + LOOKAHEAD);
        let margin = self.cfg.fallback_margin_ms;

        let mut missing: SmallVec<[u64; INLINE_WANTS]> = SmallVec::new();
        let mut wanted: SmallVec<[Want; INLINE_WANTS]> = SmallVec::new();
        self.missing_in(lo, hi, &mut missing);
        for &seq in &missing {
            // Who it was asked of, if anyone: `Some(None)` is infrastructure.
            let asked = self.requests.asked_of(seq);
            if asked == Some(None) {
                continue; // asked of infrastructure already
            }
            let deadline = self.deadline(seq);
            let cancel = match asked {
                None => false,
                // Asked of a viewer that has not delivered with the deadline
                // close: ask infrastructure too, rather than risk a stall.
                Some(Some(p))
                    if deadline.is_some_and(|d| wall + margin >= d)
                        && self.neighbors.get(p).is_some_and(|n| !n.role.is_infra()) =>
                {
                    true
                }
                Some(_) => continue,
            };
            if cancel {
                self.cancel_request(seq);
            }
            let urgent = deadline.is_some_and(|d| wall + 2 * margin >= d);
            // The rest are ranked by holders, counted below.
            let key = if urgent { deadline.unwrap_or(0) } else { 0 };
            wanted.push(Want {
                later: !urgent,
                rank: key,
                seq,
                deadline,
            });
        }
        self.count_holders(&mut wanted);
        wanted.sort_unstable();

        let piece_bytes = self
            .store
            .values()
            .next_back()
            .map_or(MAX_PIECE_BYTES / 2, |p| p.data.len().max(1));
        let mut wake = Wake(now + SCHEDULE_IDLE_MS);
        let mut batches = Batches::new();
        for &Want { seq, deadline, .. } in &wanted {
            // A piece left unasked changes rank when it turns urgent, and
            // goes to infrastructure when it is due.
            if let Some(d) = deadline {
                wake.at(self.mono(d.saturating_sub(2 * margin)), now);
                wake.at(self.mono(d.saturating_sub(margin)), now);
            }
            let due_soon = deadline.is_some_and(|d| wall + margin >= d);
            if !due_soon {
                if let Some(peer) = self.best_holder(seq, piece_bytes, false) {
                    self.ask(peer, seq, now, &mut batches);
                }
                continue;
            }
            self.stats.fallback_requests += 1;
            if let Some(peer) = self.best_holder(seq, piece_bytes, true) {
                self.ask(peer, seq, now, &mut batches);
            } else if self.requests.of_infra() < self.cfg.max_infra_inflight {
                self.requests.ask(seq, None, now, now + INFRA_TIMEOUT_MS);
                self.outputs.push_back(Output::FetchInfra { seq });
            } else {
                self.stats.fallback_requests -= 1;
            }
        }
        for (peer, seqs) in batches.into_sorted() {
            self.send(&peer, &Message::Request { seqs });
        }
        let due = self.next_due(now, wake);
        self.timers.set(Timer::Schedule, due);
    }

    /// When a run with no news in between would do something: a request
    /// times out, a piece asked of a viewer comes within the fallback
    /// margin, or the next piece the live edge will add turns urgent.
    /// Anything else that changes what to ask comes with an input, which
    /// runs the scheduler at once.
    fn next_due(&self, now: u64, mut wake: Wake) -> u64 {
        let margin = self.cfg.fallback_margin_ms;
        for (seq, a) in self.requests.iter() {
            wake.at(a.until, now);
            if a.from.is_some() {
                if let Some(d) = self.deadline(seq) {
                    wake.at(self.mono(d.saturating_sub(margin)), now);
                }
            }
        }
        if let (Some(ms), Some(p1), Some(newest)) =
            (self.edge.pace(), self.store.last(), self.edge.newest())
        {
            // `Edge::extrapolate` adds `newest + 1` once its successor is
            // due from the broadcaster.
            let (s1, at) = (p1.header.seq, p1.header.produced_at);
            let next = newest.max(s1) + 1;
            let produced = at + ((next - s1) as f64 * ms) as u64;
            let added = at + ((next - s1 + 1) as f64 * ms).ceil() as u64;
            let delay = self.playback.delay().unwrap_or(self.cfg.playout_delay_ms);
            let due = added.max((produced + delay).saturating_sub(2 * margin));
            wake.at(self.mono(due), now);
        }
        wake.0
    }

    /// Seqs in `lo..=hi` not in the store, found from the gaps between held
    /// pieces (most of the range is usually held), appended to `missing`.
    fn missing_in(&self, lo: u64, hi: u64, missing: &mut impl Extend<u64>) {
        if lo > hi {
            return;
        }
        let mut next = lo;
        for held in self.store.seqs_in(lo, hi) {
            missing.extend(next..held);
            next = held + 1;
        }
        if next <= hi {
            missing.extend(next..=hi);
        }
    }

    fn ask(&mut self, peer: P, seq: u64, now: u64, batches: &mut Batches<P>) {
        // Wait for an answer twice as long as the neighbour should take
        // (RTT + its queue at its delivery rate), and never less than the
        // configured timeout.
        let mut until = now + self.cfg.request_timeout_ms;
        if let Some(n) = self.neighbors.get_mut(&peer) {
            let piece = self
                .store
                .values()
                .next_back()
                .map_or(MAX_PIECE_BYTES / 2, |p| p.data.len());
            let expected = n.expected_ms(piece, n.inflight.len() * piece);
            until = until.max(now + 2 * expected as u64);
            n.inflight.insert(seq);
        }
        self.requests.ask(seq, Some(peer.clone()), now, until);
        batches.push(peer, seq);
    }

    /// Withdraws a request from a neighbour, telling it so that a piece
    /// still queued there is not sent to arrive as a duplicate.
    fn cancel_request(&mut self, seq: u64) {
        if let Some(p) = self.requests.withdraw(seq).and_then(|a| a.from) {
            if let Some(n) = self.neighbors.get_mut(&p) {
                n.inflight.remove(&seq);
                self.send(&p, &Message::Cancel { seqs: vec![seq] });
            }
        }
    }

    /// Sets the key of each wanted piece that is not urgent to the number
    /// of active neighbours holding it: one pass over the neighbours, each
    /// asked about every such piece while its record is at hand.
    fn count_holders(&self, wanted: &mut [Want]) {
        if !wanted.iter().any(|w| w.later) {
            return;
        }
        for (_, n) in self.neighbors.active() {
            for w in wanted.iter_mut().filter(|w| w.later) {
                if n.has.contains(w.seq) {
                    w.rank += 1;
                }
            }
        }
    }

    /// The neighbour (viewers, or infrastructure when `infra`) holding `seq`
    /// with room for a request and the lowest expected completion time.
    fn best_holder(&self, seq: u64, piece_bytes: usize, infra: bool) -> Option<P> {
        self.neighbors
            .iter()
            .filter(|(_, n)| {
                n.is_active()
                    && n.role.is_infra() == infra
                    && n.has.contains(seq)
                    && n.inflight.len() < self.cfg.max_inflight_per_peer
            })
            .map(|(p, n)| {
                let t = n.expected_ms(piece_bytes, n.inflight.len() * piece_bytes);
                (t, p)
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, p)| p.clone())
    }

    /// Requests not answered in time are forgotten, to be asked elsewhere;
    /// the slow neighbour is assumed not to have the piece any more.
    fn expire_requests(&mut self, now: u64) {
        let expired = self.requests.take_expired(now);
        let mut cancels: BTreeMap<P, Vec<u64>> = BTreeMap::new();
        for (seq, peer) in expired {
            let Some(peer) = peer else { continue };
            if let Some(n) = self.neighbors.get_mut(&peer) {
                n.inflight.remove(&seq);
                n.has.remove(seq);
                cancels.entry(peer).or_default().push(seq);
            }
        }
        for (peer, seqs) in cancels {
            self.send(&peer, &Message::Cancel { seqs });
        }
    }
}

/// The earliest time a scheduling run is due, of those after now.
struct Wake(u64);

impl Wake {
    fn at(&mut self, t: u64, now: u64) {
        if t > now {
            self.0 = self.0.min(t);
        }
    }
}

/// Requests of one run, per neighbour. A run asks a few neighbours, so a
/// list searched in turn does better than a tree; it is sent in peer order,
/// as a tree would iterate.
struct Batches<P>(Vec<(P, Vec<u64>)>);

impl<P: PeerId> Batches<P> {
    fn new() -> Self {
        Batches(Vec::new())
    }

    fn push(&mut self, peer: P, seq: u64) {
        match self.0.iter_mut().find(|(p, _)| *p == peer) {
            Some((_, seqs)) => seqs.push(seq),
            None => {
                let mut seqs = Vec::with_capacity(4);
                seqs.push(seq);
                self.0.push((peer, seqs));
            }
        }
    }

    /// The batches by peer (each peer once, so the order is total).
    fn into_sorted(mut self) -> Vec<(P, Vec<u64>)> {
        self.0.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.0
    }
}
