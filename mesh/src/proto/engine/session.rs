//! Sessions: handshake, the degree cap, and each message a neighbour sends.

use super::{Ask, Engine, PeerId, Selection};
use crate::proto::{
    coords::Coord,
    neighbors::{Candidate, Neighbor, Phase},
    piece::Piece,
    wire::{self, Hello, Message, PeerInfo, RefuseReason, PROTOCOL_VERSION},
};

/// Coordinates with a larger relative error are not used to choose.
const USABLE_ERROR: f32 = 0.75;
/// Upload backlog accepted, in ms of the upload limit: a longer queue only
/// adds lag, and the requester does better asking elsewhere or waiting.
const MAX_BACKLOG_MS: u64 = 250;
/// Bad pieces a neighbour may send before it is disconnected.
const MAX_PENALTY: u32 = 3;
/// Candidates remembered, at most.
const MAX_CANDIDATES: usize = 256;
/// A refused or failed candidate is not tried again before this.
const REFUSED_BACKOFF_MS: u64 = 15_000;
/// A full neighbourhood silent this long is starved (see
/// `replace_if_starved`).
const STARVED_MS: u64 = 4_000;
/// A full node lets a newcomer in by eviction at most this often.
const EVICT_GAP_MS: u64 = 1_000;
/// Requests a neighbour may have queued with us before we answer `Missing`.
const MAX_QUEUED_PER_PEER: usize = 16;

impl<P: PeerId> Engine<P> {
    pub(super) fn on_connected(&mut self, peer: P, outbound: bool, now: u64) {
        if self.neighbors.contains_key(&peer) {
            // The driver keeps one session per peer; a second is a bug there,
            // but must not reset the state of the first.
            return;
        }
        if let Some(c) = self.candidates.get_mut(&peer) {
            c.dialing_since = None;
        }
        self.neighbors
            .insert(peer.clone(), Neighbor::new(outbound, now));
        let hello = Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            stream: self.cfg.stream,
            role: self.cfg.role,
            degree: self.degree() as u16,
            max_degree: self.cfg.max_degree as u16,
            upload_kbps: self.cfg.upload_kbps,
            coord: self.coord,
            loc: self.cfg.loc,
        });
        self.send(&peer, &hello);
    }

    pub(super) fn on_disconnected(&mut self, peer: &P, now: u64) {
        if self.neighbors.remove(peer).is_some() {
            self.news = true;
            self.forget_requests_to(peer);
            self.upload_queue.retain(|(p, _)| p != peer);
            if let Some(c) = self.candidates.get_mut(peer) {
                c.retry_at = c.retry_at.max(now + 2_000);
            }
            self.update_neighbor_stats();
        }
        if let Some(c) = self.candidates.get_mut(peer) {
            c.dialing_since = None;
        }
    }

    /// Ends a session: we stop talking and tell the driver to close it.
    pub(super) fn drop_peer(&mut self, peer: &P, reason: &'static str, now: u64) {
        self.outputs.push_back(Output::Disconnect {
            peer: peer.clone(),
            reason,
        });
        self.on_disconnected(peer, now);
    }

    pub(super) fn violation(&mut self, peer: &P, reason: &'static str, now: u64) {
        self.stats.protocol_violations += 1;
        if let Some(c) = self.candidates.get_mut(peer) {
            c.back_off(now);
            c.retry_at = c.retry_at.max(now + 60_000);
        }
        self.drop_peer(peer, reason, now);
    }

    fn forget_requests_to(&mut self, peer: &P) {
        self.inflight.retain(|_, a| a.from.as_ref() != Some(peer));
    }

    pub(super) fn on_frame(&mut self, from: P, body: wire::Body, now: u64) {
        let Some(phase) = self.neighbors.get(&from).map(|n| n.phase) else {
            return; // Session already closed; late frame.
        };
        let msg = match wire::decode_body::<P>(&body) {
            Ok(m) => m,
            Err(_) => return self.violation(&from, "malformed frame", now),
        };
        match (phase, msg) {
            (Phase::Greeting, Message::Hello(h)) => self.on_hello(from, h, now),
            // Both sides greet at once, so a refusal can follow the
            // refuser's own Hello: it is a refusal in either phase.
            (_, Message::Refuse { suggestions, .. }) => {
                self.add_candidates(suggestions);
                if let Some(c) = self.candidates.get_mut(&from) {
                    c.retry_at = now + REFUSED_BACKOFF_MS;
                }
                self.drop_peer(&from, "refused", now);
            }
            (Phase::Greeting, _) => self.violation(&from, "message before hello", now),
            (Phase::Active, Message::Hello(_)) => self.violation(&from, "second handshake", now),
            (
                Phase::Active,
                Message::BufferMap {
                    base,
                    bits,
                    segment_starts,
                },
            ) => {
                let seqs: Vec<u64> = wire::iter_bits(base, &bits).collect();
                if let Some(n) = self.neighbors.get_mut(&from) {
                    n.has = seqs.iter().copied().collect();
                }
                self.learn(&seqs, &segment_starts, now);
            }
            (
                Phase::Active,
                Message::Have {
                    seqs,
                    segment_starts,
                },
            ) => {
                if let Some(n) = self.neighbors.get_mut(&from) {
                    n.has.extend(seqs.iter().copied());
                }
                self.learn(&seqs, &segment_starts, now);
            }
            (Phase::Active, Message::Request { seqs }) => self.on_request(from, seqs, now),
            (Phase::Active, Message::Piece(p)) => self.on_piece(from, p, now),
            (Phase::Active, Message::Missing { seqs }) => {
                self.news = true;
                if let Some(n) = self.neighbors.get_mut(&from) {
                    for s in &seqs {
                        n.inflight.remove(s);
                        n.has.remove(s);
                    }
                }
                for s in seqs {
                    if matches!(self.inflight.get(&s), Some(Ask { from: Some(p), .. }) if *p == from)
                    {
                        self.inflight.remove(&s);
                    }
                }
            }
            (Phase::Active, Message::Cancel { seqs }) => {
                self.upload_queue
                    .retain(|(p, s)| *p != from || !seqs.contains(s));
            }
            (Phase::Active, Message::Ping { nonce, coord }) => {
                if let Some(n) = self.neighbors.get_mut(&from) {
                    n.coord = Some(coord);
                }
                let pong = Message::Pong {
                    nonce,
                    coord: self.coord,
                };
                self.send(&from, &pong);
            }
            (Phase::Active, Message::Pong { nonce, coord }) => {
                self.on_pong(&from, nonce, coord, now)
            }
            (Phase::Active, Message::Peers { peers }) => self.add_candidates(peers),
        }
    }

    /// An RTT sample: for the neighbour's median, and to move our coordinate.
    fn on_pong(&mut self, from: &P, nonce: u64, coord: Coord, now: u64) {
        let Some(n) = self.neighbors.get_mut(from) else {
            return;
        };
        n.coord = Some(coord);
        let Some((sent_nonce, at)) = n.ping else {
            return;
        };
        if sent_nonce != nonce {
            return;
        }
        let rtt = now.saturating_sub(at);
        n.rtt.record(rtt);
        n.ping = None;
        let jitter = (self.rng_f32(), self.rng_f32());
        self.coord.observe(&coord, rtt.max(1) as f32, jitter);
        if let Some(c) = self.candidates.get_mut(from) {
            c.info.coord = Some(coord);
        }
    }

    /// Sends each neighbour a sample of our other neighbours (peer exchange).
    pub(super) fn exchange_peers(&mut self, peers: &[P]) {
        let known: Vec<PeerInfo<P>> = peers
            .iter()
            .filter_map(|p| {
                let c = self.candidates.get(p)?;
                let n = self.neighbors.get(p)?;
                (!c.info.addrs.is_empty()).then(|| PeerInfo {
                    peer: p.clone(),
                    addrs: c.info.addrs.iter().take(wire::MAX_ADDRS).cloned().collect(),
                    coord: n.coord,
                    loc: n.loc,
                    free: n.free,
                })
            })
            .collect();
        for to in peers {
            let sample: Vec<PeerInfo<P>> = known
                .iter()
                .filter(|i| &i.peer != to)
                .take(wire::MAX_SUGGESTIONS)
                .cloned()
                .collect();
            if !sample.is_empty() {
                self.send(to, &Message::Peers { peers: sample });
            }
        }
    }

    fn on_hello(&mut self, from: P, hello: Hello, now: u64) {
        let refuse = if hello.version != PROTOCOL_VERSION {
            Some(RefuseReason::Version)
        } else if hello.stream != self.cfg.stream {
            Some(RefuseReason::UnknownStream)
        } else {
            let inbound = self.neighbors.get(&from).is_some_and(|n| !n.outbound);
            let full = inbound && self.degree() >= self.cfg.max_degree;
            (full && !self.evict_for(&hello, now)).then_some(RefuseReason::Full)
        };
        if let Some(reason) = refuse {
            let suggestions = if reason == RefuseReason::Full {
                self.suggestions(&from)
            } else {
                Vec::new()
            };
            self.send(
                &from,
                &Message::Refuse {
                    reason,
                    suggestions,
                },
            );
            return self.drop_peer(&from, "refused", now);
        }
        // An outbound session over the cap (several dials completed at once)
        // is closed too: the cap is never exceeded.
        if self.degree() >= self.cfg.max_degree {
            return self.drop_peer(&from, "degree cap", now);
        }
        let Some(n) = self.neighbors.get_mut(&from) else {
            return;
        };
        n.phase = Phase::Active;
        n.role = hello.role;
        n.upload_kbps = hello.upload_kbps;
        n.coord = Some(hello.coord);
        n.loc = hello.loc;
        n.free = Some(hello.max_degree.saturating_sub(hello.degree));
        if hello.upload_kbps > 0 {
            // Until it has delivered, expect what it says it can upload.
            n.rate = f64::from(hello.upload_kbps) * 1000.0 / 8.0;
        }
        if let Some(c) = self.candidates.get_mut(&from) {
            c.failures = 0;
            c.info.coord = Some(hello.coord);
            c.info.loc = hello.loc;
        }
        let map = self.buffer_map();
        self.send(&from, &map);
        self.update_neighbor_stats();
    }

    /// At the cap, a poorly connected newcomer (at most half the cap of
    /// neighbours: just joined, or starved) is let in by dropping our most
    /// connected viewer neighbour, which has other paths; otherwise a group
    /// of full nodes could stay closed to it forever. At most once per
    /// [`EVICT_GAP_MS`].
    fn evict_for(&mut self, hello: &Hello, now: u64) -> bool {
        if usize::from(hello.degree) > self.cfg.max_degree / 2
            || self.last_evict.is_some_and(|t| now < t + EVICT_GAP_MS)
        {
            return false;
        }
        let victim = self
            .neighbors
            .iter()
            .filter(|(_, n)| n.is_active() && n.role == crate::proto::Role::Viewer)
            .min_by_key(|(p, n)| (n.free.unwrap_or(0), n.connected_at, (*p).clone()))
            .map(|(p, _)| p.clone());
        let Some(victim) = victim else {
            return false;
        };
        self.last_evict = Some(now);
        self.drop_peer(&victim, "evicted for a poorly connected newcomer", now);
        true
    }

    /// Active viewers we know addresses of, for a peer we turn away.
    fn suggestions(&self, except: &P) -> Vec<PeerInfo<P>> {
        self.neighbors
            .iter()
            .filter(|(p, n)| *p != except && n.is_active())
            .filter_map(|(p, _)| self.candidates.get(p))
            .filter(|c| !c.info.addrs.is_empty())
            .take(wire::MAX_SUGGESTIONS)
            .map(|c| PeerInfo {
                peer: c.info.peer.clone(),
                addrs: c.info.addrs.iter().take(wire::MAX_ADDRS).cloned().collect(),
                coord: c.info.coord,
                loc: c.info.loc,
                free: c.info.free,
            })
            .collect()
    }

    fn buffer_map(&self) -> Message<P> {
        let base = self.store.keys().next().copied().unwrap_or(0);
        let mut bits = Vec::new();
        let max_seq = base + (wire::MAX_BITMAP_BYTES * 8) as u64;
        for &s in self.store.keys().take_while(|&&s| s < max_seq) {
            wire::set_bit(&mut bits, base, s);
        }
        let starts: Vec<u64> = self
            .segment_starts
            .iter()
            .rev()
            .filter(|s| self.store.contains_key(s))
            .take(wire::MAX_LIST)
            .copied()
            .collect();
        Message::BufferMap {
            base,
            bits,
            segment_starts: starts,
        }
    }

    /// Notes pieces and segment starts a neighbour announced.
    fn learn(&mut self, seqs: &[u64], starts: &[u64], now: u64) {
        self.news = true;
        let low = self.store.keys().next().copied().unwrap_or(0);
        for &s in seqs {
            if s >= low && !self.store.contains_key(&s) {
                self.heard.entry(s).or_insert(now);
            }
            if self.newest_known.is_none_or(|n| s > n) {
                self.last_news = now;
            }
            self.newest_known = self.newest_known.max(Some(s));
        }
        // Bound what unverified announcements can make us remember.
        while self.heard.len() > 4 * wire::MAX_LIST {
            self.heard.pop_first();
        }
        self.segment_starts.extend(starts.iter().copied());
        while self.segment_starts.len() > wire::MAX_LIST {
            self.segment_starts.pop_first();
        }
    }

    fn on_request(&mut self, from: P, seqs: Vec<u64>, now: u64) {
        let mut queued = self.upload_queue.iter().filter(|(p, _)| *p == from).count();
        // Queued payload, to refuse what the upload limit could not send
        // before the requester gives up: it does better asking elsewhere.
        let mut backlog: u64 = self
            .upload_queue
            .iter()
            .filter_map(|(_, s)| self.store.get(s))
            .map(|p| p.data.len() as u64)
            .sum();
        let budget_ms = MAX_BACKLOG_MS;
        let mut missing = Vec::new();
        for seq in seqs {
            let Some(len) = self.store.get(&seq).map(|p| p.data.len() as u64) else {
                missing.push(seq);
                continue;
            };
            let room = queued < MAX_QUEUED_PER_PEER
                && self.upload_queue.len() < super::UPLOAD_QUEUE
                && (backlog == 0 || self.upload.drain_ms(backlog + len, now) <= budget_ms);
            if room {
                self.upload_queue.push_back((from.clone(), seq));
                queued += 1;
                backlog += len;
            } else {
                missing.push(seq);
            }
        }
        if !missing.is_empty() {
            self.send(&from, &Message::Missing { seqs: missing });
        }
        self.drain_upload(now);
    }

    fn on_piece(&mut self, from: P, piece: Piece, now: u64) {
        let seq = piece.header.seq;
        if self.key.verify(&piece).is_err() {
            self.stats.bad_pieces += 1;
            let strikes = self.neighbors.get_mut(&from).map_or(0, |n| {
                n.penalty += 1;
                n.inflight.remove(&seq);
                n.penalty
            });
            if matches!(self.inflight.get(&seq), Some(Ask { from: Some(p), .. }) if *p == from) {
                self.inflight.remove(&seq);
            }
            if strikes >= MAX_PENALTY {
                self.violation(&from, "bad pieces", now);
            }
            return;
        }
        if let Some(Ask {
            from: Some(p),
            at: asked_at,
            ..
        }) = self.inflight.get(&seq)
        {
            if *p == from {
                let elapsed = now.saturating_sub(*asked_at);
                if let Some(n) = self.neighbors.get_mut(&from) {
                    n.inflight.remove(&seq);
                    let queued = n.inflight.len();
                    n.observe_delivery(piece.data.len(), elapsed, queued);
                }
                self.inflight.remove(&seq);
            }
        }
        let infra = self.neighbors.get(&from).is_some_and(|n| n.role.is_infra());
        self.accept(piece, Some(&from), infra, now);
    }

    /// Predicted RTT to a candidate, when both coordinates are usable.
    fn predicted_rtt(&self, peer: &P) -> Option<f32> {
        let c = self.candidates.get(peer)?.info.coord?;
        (self.coord.error < USABLE_ERROR && c.error < USABLE_ERROR).then(|| self.coord.rtt_ms(&c))
    }

    /// Periodic optimisation: swaps a slow viewer neighbour for a candidate
    /// predicted to be much closer (hysteresis: 1.5× and 20 ms, at most one
    /// swap per period). The slowest neighbour is kept as the node's long
    /// link: meshes of only close neighbours split along regions.
    pub(super) fn optimize_neighbors(&mut self, now: u64) {
        if (self.cfg.selection == Selection::Random) || self.degree() < self.cfg.max_degree {
            return;
        }
        let best = self
            .candidates
            .iter()
            .filter(|(p, c)| now >= c.retry_at && !self.neighbors.contains_key(p))
            .filter_map(|(p, _)| Some((self.predicted_rtt(p)?, p.clone())))
            .min_by(|a, b| a.0.total_cmp(&b.0));
        let Some((predicted, _)) = best else {
            return;
        };
        let mut rtts: Vec<(u64, P)> = self
            .neighbors
            .iter()
            .filter(|(_, n)| n.is_active() && n.role == crate::proto::Role::Viewer)
            .filter(|(_, n)| now >= n.connected_at + self.cfg.optimize_ms)
            .filter_map(|(p, n)| Some((n.rtt.median()?, p.clone())))
            .collect();
        if rtts.len() < 3 {
            return;
        }
        rtts.sort();
        rtts.pop(); // the long link stays
        let (worst, peer) = rtts.pop().expect("two or more");
        let worst = worst as f32;
        if worst > 1.5 * predicted && worst > predicted + 20.0 {
            if let Some(c) = self.candidates.get_mut(&peer) {
                c.retry_at = now + 60_000;
            }
            self.drop_peer(&peer, "replaced by a closer candidate", now);
        }
    }

    /// A full neighbourhood that has announced nothing new for
    /// [`STARVED_MS`] may be a group cut off from the source (late joiners
    /// that filled their slots with each other while everyone else was
    /// full): one random viewer neighbour is dropped and the next dial goes
    /// to a random candidate, until news arrives.
    pub(super) fn replace_if_starved(&mut self, now: u64) {
        if self.cfg.role != crate::proto::Role::Viewer
            || now < self.last_news + STARVED_MS
            || self.degree() + 1 < self.cfg.max_degree
        {
            return;
        }
        self.last_news = now;
        self.starved = true;
        let mut viewers: Vec<P> = self
            .neighbors
            .iter()
            .filter(|(_, n)| n.is_active() && n.role == crate::proto::Role::Viewer)
            .map(|(p, _)| p.clone())
            .collect();
        rand::seq::SliceRandom::shuffle(viewers.as_mut_slice(), &mut self.rng);
        // Half go, so that full nodes elsewhere let this one in (`evict_for`).
        let keep = self.cfg.max_degree / 2 - 1;
        for victim in viewers.into_iter().skip(keep) {
            if let Some(c) = self.candidates.get_mut(&victim) {
                c.retry_at = now + 30_000;
            }
            self.drop_peer(&victim, "no news from the neighbourhood", now);
        }
    }

    pub(super) fn add_candidates(&mut self, peers: Vec<PeerInfo<P>>) {
        for info in peers {
            if self.candidates.len() >= MAX_CANDIDATES && !self.candidates.contains_key(&info.peer)
            {
                continue;
            }
            match self.candidates.get_mut(&info.peer) {
                Some(c) => {
                    if !info.addrs.is_empty() {
                        c.info.addrs = info.addrs;
                    }
                    if info.coord.is_some() {
                        c.info.coord = info.coord;
                    }
                }
                None => {
                    self.candidates
                        .insert(info.peer.clone(), Candidate::new(info));
                }
            }
        }
    }

    /// Dials candidates while below the degree cap. Candidates are tried in
    /// a seeded random order (measured RTT needs a session first).
    pub(super) fn fill_neighbors(&mut self, now: u64) {
        for c in self.candidates.values_mut() {
            if c.dialing_since.is_some_and(|t| now >= t + 10_000) {
                c.back_off(now);
            }
        }
        let dialing = self
            .candidates
            .values()
            .filter(|c| c.dialing_since.is_some())
            .count();
        let used = self.neighbors.len() + dialing;
        if used >= self.cfg.max_degree {
            return;
        }
        let mut ready: Vec<P> = self
            .candidates
            .iter()
            .filter(|(p, c)| {
                c.dialing_since.is_none() && now >= c.retry_at && !self.neighbors.contains_key(p)
            })
            .map(|(p, _)| p.clone())
            .collect();
        rand::seq::SliceRandom::shuffle(ready.as_mut_slice(), &mut self.rng);
        let starved = std::mem::take(&mut self.starved);
        if self.cfg.selection != Selection::Random && !starved {
            // Closest predicted first (a stable sort keeps the shuffle among
            // candidates without a usable coordinate), but every fourth dial
            // goes to a random candidate: long links keep the regions joined
            // and teach the coordinates the far side of the map.
            ready.sort_by(|a, b| {
                let (a, b) = (self.predicted_rtt(a), self.predicted_rtt(b));
                a.unwrap_or(f32::MAX).total_cmp(&b.unwrap_or(f32::MAX))
            });
        }
        let mut picks = Vec::new();
        for i in 0..(self.cfg.max_degree - used).min(ready.len()) {
            let random_pick =
                self.cfg.selection != Selection::Random && (self.dials + i as u64) % 4 == 3;
            let idx = if random_pick {
                rand::Rng::gen_range(&mut self.rng, 0..ready.len())
            } else {
                0
            };
            picks.push(ready.remove(idx));
        }
        self.dials += picks.len() as u64;
        for p in picks {
            if let Some(c) = self.candidates.get_mut(&p) {
                c.dialing_since = Some(now);
                c.tried = true;
                self.outputs.push_back(Output::Connect(c.info.clone()));
            }
        }
    }
}

use super::Output;
