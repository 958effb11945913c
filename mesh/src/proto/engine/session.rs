//! Sessions: handshake, the degree cap, and each message a neighbour sends.

use super::{window::SeqWindow, Ask, Engine, PeerId, Selection};
use crate::proto::{
    coords::Coord,
    engine::peers::{
        candidates::{Candidate, AFTER_SESSION_MS, DROPPED_MS, HANDSHAKE_TIMEOUT_MS, SHUNNED_MS},
        neighbors::{Neighbor, Phase},
    },
    piece::Piece,
    wire::{self, Hello, Locality, Message, PeerInfo, RefuseReason, PROTOCOL_VERSION},
};

/// Coordinates with a larger relative error are not used to choose.
const USABLE_ERROR: f32 = 0.75;
/// Upload backlog accepted, in ms of the upload limit: a longer queue only
/// adds lag, and the requester does better asking elsewhere or waiting.
const MAX_BACKLOG_MS: u64 = 250;
/// Bad pieces a neighbour may send before it is disconnected.
const MAX_PENALTY: u32 = 3;
/// Candidates remembered, at most: new ones beyond it wait for a prune.
pub(super) const MAX_CANDIDATES: usize = 160;
/// Candidates kept by each prune (see `prune_candidates`), and how many of
/// them are drawn at random rather than the closest.
pub(super) const KEEP_CANDIDATES: usize = 128;
pub(super) const KEEP_RANDOM: usize = 24;
/// Random draws of which every other probe takes the farthest.
const FAR_PROBE_DRAWS: usize = 8;
/// A refused or failed candidate is not tried again before this.
const REFUSED_BACKOFF_MS: u64 = 15_000;
/// A full neighbourhood silent this long is starved (see
/// `replace_if_starved`).
const STARVED_MS: u64 = 4_000;
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
/// bound. With 1 rather than 2, 2,000 simulated viewers with the mixed
/// upload spread lost offload to needless swaps (0.976 vs 0.988).
const PREDICTION_ERRORS: f32 = 2.0;
/// A full node lets a newcomer in by eviction at most this often.
const EVICT_GAP_MS: u64 = 1_000;
/// A node with half its cap of neighbours or more dials candidates scoring
/// up to this many times its neighbours' median proximity.
const DIAL_FACTOR: f32 = 2.0;
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
            .open(peer.clone(), Neighbor::new(outbound, now));
        // The dialled side sends its `Hello` only once it accepts the
        // dialler's (docs/protocol.md §6.2): to the dialler, the peer's
        // `Hello` means a slot, which a swap waits for before it drops the
        // neighbour it replaces.
        if outbound {
            let hello = self.hello_for(&peer);
            self.send(&peer, &hello);
        }
    }

    /// Our `Hello` to `peer`.
    fn hello_for(&self, peer: &P) -> Message<P> {
        Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            stream: self.cfg.stream,
            role: self.cfg.role,
            degree: self.degree() as u16,
            // A probe asks for no slot (docs/protocol.md §6.9).
            max_degree: if self.probe.as_ref() == Some(peer) {
                0
            } else {
                self.cfg.max_degree as u16
            },
            upload_kbps: self.cfg.upload_kbps,
            coord: self.coord,
            loc: self.cfg.loc,
            rtt_ms: self.measured_rtt(peer).unwrap_or(0),
        })
    }

    /// The RTT we measured to `peer`, if any: in a session now, else in
    /// an earlier session or probe.
    fn measured_rtt(&self, peer: &P) -> Option<u32> {
        let in_session = self.neighbors.get(peer).and_then(|n| n.rtt.base_median());
        in_session
            .and_then(|ms| u32::try_from(ms).ok())
            .or_else(|| self.candidates.get(peer)?.measured_ms)
    }

    pub(super) fn on_disconnected(&mut self, peer: &P, now: u64) {
        if let Some(n) = self.neighbors.remove(peer) {
            self.news = true;
            self.forget_requests_to(peer);
            self.upload_queue.retain(|(p, _)| p != peer);
            if let Some(c) = self.candidates.get_mut(peer) {
                c.retry_at = c.retry_at.max(now + AFTER_SESSION_MS);
                if let Some(rtt) = n.rtt.base_median() {
                    c.measured_ms = Some(u32::try_from(rtt).unwrap_or(u32::MAX));
                }
            }
            self.update_neighbor_stats();
        }
        if let Some(c) = self.candidates.get_mut(peer) {
            c.dialing_since = None;
        }
        if self.swap.as_ref().is_some_and(|s| &s.to == peer) {
            self.swap = None;
        }
        if self.probe.as_ref() == Some(peer) {
            self.probe = None;
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
            c.retry_at = c.retry_at.max(now + SHUNNED_MS);
        }
        self.drop_peer(peer, reason, now);
    }

    fn forget_requests_to(&mut self, peer: &P) {
        self.inflight.retain(|_, a| a.from.as_ref() != Some(peer));
    }

    pub(super) fn on_frame(&mut self, from: P, body: wire::Body, now: u64) {
        let Some(phase) = self.neighbors.get(&from).map(|n| n.phase()) else {
            return; // Session already closed; late frame.
        };
        let msg = match wire::decode_body::<P>(&body) {
            Ok(m) => m,
            Err(_) => return self.violation(&from, "malformed frame", now),
        };
        if !self.names_seqs_in_window(&msg) {
            return self.violation(&from, "sequence number out of window", now);
        }
        match (phase, msg) {
            (Phase::Greeting, Message::Hello(h)) => self.on_hello(from, h, now),
            // Both sides greet at once, so a refusal can follow the
            // refuser's own Hello: it is a refusal in either phase.
            // Our probe's answer to our Hello (a Refuse as asked, or
            // whatever a peer that let us in sends first): one RTT.
            (Phase::Greeting, msg) if self.probe.as_ref() == Some(&from) => {
                if let Message::Refuse { suggestions, .. } = msg {
                    self.add_candidates(suggestions);
                }
                self.probe_answered(&from, now);
            }
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
                        n.has.remove(*s);
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

    /// Whether every seq `msg` names lies in the window around our newest
    /// verified piece (a piece's own seq is checked by its signature).
    fn names_seqs_in_window(&self, msg: &Message<P>) -> bool {
        let window = SeqWindow::around(self.store.last().map(|p| p.header.seq));
        match msg {
            Message::BufferMap {
                base,
                bits,
                segment_starts,
            } => window.admits_map(*base, bits) && window.admits_all(segment_starts),
            Message::Have {
                seqs,
                segment_starts,
            } => window.admits_all(seqs) && window.admits_all(segment_starts),
            Message::Request { seqs } | Message::Missing { seqs } | Message::Cancel { seqs } => {
                window.admits_all(seqs)
            }
            _ => true,
        }
    }

    /// An RTT sample: for the neighbour's median, and to move our coordinate.
    fn on_pong(&mut self, from: &P, nonce: u64, coord: Coord, now: u64) {
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
        if self.probe.as_ref() == Some(&from) {
            // Our probe's target greets us first, then refuses: keep its
            // coordinate for the sample.
            if let Some(n) = self.neighbors.get_mut(&from) {
                n.coord = Some(hello.coord);
            }
            return;
        }
        let probed = hello.max_degree == 0;
        let inbound = self.neighbors.get(&from).is_some_and(|n| !n.outbound);
        let refuse = if hello.version != PROTOCOL_VERSION {
            Some(RefuseReason::Version)
        } else if hello.stream != self.cfg.stream {
            Some(RefuseReason::UnknownStream)
        } else {
            let full = inbound && self.degree() >= self.cfg.max_degree;
            // Infrastructure always gets a slot: its pushes are the
            // stream's way into this part of the mesh (see `spread`).
            // Infrastructure itself takes no newcomer by eviction: its
            // neighbours are chosen to cover the map.
            let admitted = !probed
                && (!full
                    || hello.role.is_infra()
                    || (!self.cfg.role.is_infra() && self.evict_for(&from, &hello, now)));
            if full && admitted && hello.role.is_infra() {
                self.make_room_for_infra(now);
            }
            (!admitted).then_some(RefuseReason::Full)
        };
        if let Some(reason) = refuse {
            if probed && inbound && reason == RefuseReason::Full {
                // A probe gets our `Hello` before the refusal: our
                // coordinate, for its sample.
                let ours = self.hello_for(&from);
                self.send(&from, &ours);
            }
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
        if self.cfg.role.is_infra() && !inbound && !self.relays(&hello) {
            if let Some(c) = self.candidates.get_mut(&from) {
                c.retry_at = now + SHUNNED_MS;
            }
            return self.drop_peer(&from, "too little upload to relay pushes", now);
        }
        // The closer candidate of a swap accepted: the neighbour it
        // replaces goes now, so the cap holds.
        if let Some(swap) = self.swap.take_if(|s| s.to == from) {
            if self.neighbors.contains_key(&swap.victim) {
                if let Some(c) = self.candidates.get_mut(&swap.victim) {
                    c.retry_at = c.retry_at.max(now + SHUNNED_MS);
                }
                self.stats.neighbor_swaps += 1;
                self.drop_peer(&swap.victim, "replaced by a closer candidate", now);
            }
        }
        // An outbound session over the cap (several dials completed at once)
        // is closed too: the cap is never exceeded.
        if self.degree() >= self.degree_cap() {
            return self.drop_peer(&from, "degree cap", now);
        }
        let Some(n) = self.neighbors.activate(&from) else {
            return;
        };
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
        if inbound {
            let ours = self.hello_for(&from);
            self.send(&from, &ours);
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
    fn evict_for(&mut self, from: &P, hello: &Hello, now: u64) -> bool {
        if self.last_evict.is_some_and(|t| now < t + EVICT_GAP_MS) {
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
        if let Some(c) = self.candidates.get_mut(&victim) {
            c.retry_at = c.retry_at.max(now + DROPPED_MS);
        }
        self.last_evict = Some(now);
        self.drop_peer(&victim, reason, now);
        true
    }

    /// A dialler's score (as for a candidate): its RTT as measured in an
    /// earlier session, else as predicted from the coordinate in its `Hello`.
    fn hello_score(&self, from: &P, hello: &Hello) -> Option<Score> {
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

    pub(super) fn buffer_map(&self) -> Message<P> {
        let base = self.store.keys().next().copied().unwrap_or(0);
        let mut bits = Vec::new();
        let max_seq = base + (wire::MAX_BITMAP_BYTES * 8) as u64;
        for &s in self.store.keys().take_while(|&&s| s < max_seq) {
            wire::set_bit(&mut bits, base, s);
        }
        // Starts from the pieces themselves: only verified ones are passed on.
        let starts: Vec<u64> = self
            .store
            .values()
            .rev()
            .filter(|p| p.header.is_first())
            .take(wire::MAX_LIST)
            .map(|p| p.header.seq)
            .collect();
        Message::BufferMap {
            base,
            bits,
            segment_starts: starts,
        }
    }

    /// Notes pieces and segment starts a neighbour announced.
    fn learn(&mut self, seqs: &[u64], starts: &[u64], now: u64) {
        // News for the scheduler: a segment start, or a piece we neither
        // hold nor have asked for (a new holder of a piece in flight
        // changes nothing until the request times out).
        self.news |= !starts.is_empty();
        let low = self.store.first_seq().unwrap_or(0);
        let wall = self.wall(now);
        for &s in seqs {
            if s >= low && !self.store.contains_key(&s) {
                self.heard.entry(s).or_insert(wall);
                self.news |= !self.inflight.contains_key(&s);
            }
            // A newer seq is news for the scheduler, not for starvation
            // (`replace_if_starved`): only a verified piece proves the
            // neighbourhood is fed.
            self.news |= self.newest_known.is_none_or(|n| s > n);
            self.newest_known = self.newest_known.max(Some(s));
        }
        // Bound what unverified announcements can make us remember. The
        // farthest ahead go first: a flood of claims displaces only other
        // claims beyond the live edge, never what is due next.
        while self.heard.len() > 4 * wire::MAX_LIST {
            self.heard.pop_last();
        }
        self.segment_starts.extend(starts.iter().copied());
        while self.segment_starts.len() > wire::MAX_LIST {
            self.segment_starts.pop_last();
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
        let requested = self.inflight.contains_key(&seq);
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
        let fresh = !self.store.contains_key(&seq);
        self.accept(piece, Some(&from), infra, now);
        if infra && !requested && fresh {
            self.relay_push(seq, &from, now);
        }
    }

    /// A piece the seeder pushed (its first copies in the mesh) goes on at
    /// once to our `relay_push` best-provisioned viewer neighbours that lack
    /// it, through the upload queue: the stream fans out a tree level
    /// before any `Have` round trip, from the viewers the seeder chose for
    /// their upload (DESIGN.md "Push for latency").
    fn relay_push(&mut self, seq: u64, from: &P, now: u64) {
        let mut targets: Vec<(u32, P)> = self
            .neighbors
            .iter()
            .filter(|(p, n)| {
                *p != from
                    && n.is_active()
                    && n.role == crate::proto::Role::Viewer
                    && !n.has.contains(seq)
            })
            .map(|(p, n)| (n.capacity(), p.clone()))
            .collect();
        targets.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, to) in targets.into_iter().take(self.cfg.relay_push) {
            if self.upload_queue.len() >= super::UPLOAD_QUEUE {
                break;
            }
            if let Some(n) = self.neighbors.get_mut(&to) {
                n.has.insert(seq);
            }
            self.upload_queue.push_back((to, seq));
        }
        self.drain_upload(now);
    }

    /// RTT to a candidate: as measured while it was our neighbour, else as
    /// predicted from coordinates when both are usable.
    fn candidate_rtt(&self, c: &Candidate<P>) -> Option<Score> {
        self.rtt_estimate(c.measured_ms, c.info.coord.as_ref())
    }

    /// RTT to a peer: `measured` if known, else predicted from its
    /// coordinate when both ours and its are usable (affinity 1).
    fn rtt_estimate(&self, measured: Option<u32>, coord: Option<&Coord>) -> Option<Score> {
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
    fn affinity(&self, loc: &Locality) -> f32 {
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
    pub(super) fn candidate_score(&self, c: &Candidate<P>) -> Option<Score> {
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
    fn candidate_proximity(&self, c: &Candidate<P>) -> Option<Score> {
        let score = self.candidate_rtt(c)?;
        Some(score.discounted(self.affinity(&c.info.loc)))
    }

    /// A neighbour's proximity in ms, comparable with a candidate's score:
    /// its measured RTT median, discounted for proximity (full score).
    fn neighbor_proximity(&self, n: &Neighbor) -> Option<f32> {
        Some(n.rtt.base_median()? as f32 * self.affinity(&n.loc))
    }

    /// A neighbour's score in ms (lower is better): its measured RTT
    /// median; with the full score, plus its spread (stability), discounted
    /// for proximity, and raised when it delivers slower than the stream.
    pub(super) fn neighbor_score(&self, n: &Neighbor) -> Option<f32> {
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
    fn slow_penalty(&self, n: &Neighbor) -> f32 {
        match self.stream_rate() {
            Some(stream) if self.cfg.selection == Selection::Full => {
                SLOW_PENALTY_MS * (1.0 - n.rate / stream).clamp(0.0, 1.0) as f32
            }
            _ => 0.0,
        }
    }

    /// The stream's payload rate in bytes/s, once its pace is known.
    pub(super) fn stream_rate(&self) -> Option<f64> {
        let ms = self.ms_per_piece?;
        let bytes = self.store.values().next_back()?.data.len() as f64;
        (ms > 0.0).then(|| bytes * 1000.0 / ms)
    }

    /// Probes a candidate (far, random or close, see below): dials it and
    /// greets it asking for no slot (`max_degree` 0), which it answers
    /// with its `Hello` and a `Refuse` with suggestions, changing nothing
    /// on its side. The time from our `Hello` to its `Refuse` is one RTT:
    /// a sample for the coordinate from beyond the neighbourhood (Vivaldi
    /// needs far samples to place the regions, and a neighbourhood of
    /// close peers gives none), and it is remembered as the candidate's
    /// measured RTT (which our `Hello` carries if we dial it again, §6.2).
    pub(super) fn probe(&mut self, now: u64) {
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
    fn probe_answered(&mut self, from: &P, now: u64) {
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

    /// The worst score a node with enough neighbours still dials:
    /// [`DIAL_FACTOR`] × the median proximity of its viewer neighbours.
    fn dial_limit(&self) -> Option<f32> {
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
    pub(super) fn optimize_neighbors(&mut self, now: u64) {
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
        for (p, c) in &self.candidates {
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
            self.swap = Some(super::Swap { to, victim });
        }
    }

    /// Whether no swap is under way: a finished one is forgotten (a dial
    /// that never answers is backed off and forgotten after 10 s by
    /// `fill_neighbors`).
    pub(super) fn swap_done(&mut self) -> bool {
        if let Some(swap) = &self.swap {
            if self
                .candidates
                .get(&swap.to)
                .is_some_and(|c| c.dialing_since.is_some())
                || self.neighbors.contains_key(&swap.to)
            {
                return false;
            }
            self.swap = None;
        }
        true
    }

    /// The viewer neighbour to replace for `offer`: among those connected
    /// for a period (the long link excepted), the ones the offer is clearly
    /// closer than; of them the worst by the full score, so that spread and
    /// a slow delivery rate choose which goes. Rate alone never causes a
    /// swap: a slow viewer has to be somebody's neighbour.
    fn victim_for(&self, offer: Score, now: u64) -> Option<P> {
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
            .active_viewers()
            .map(|(p, _)| p.clone())
            .collect();
        rand::seq::SliceRandom::shuffle(viewers.as_mut_slice(), &mut self.rng);
        // Half go, so that full nodes elsewhere let this one in (`evict_for`).
        let keep = (self.cfg.max_degree / 2).saturating_sub(1);
        for victim in viewers.into_iter().skip(keep) {
            if let Some(c) = self.candidates.get_mut(&victim) {
                c.retry_at = now + DROPPED_MS;
            }
            self.drop_peer(&victim, "no news from the neighbourhood", now);
        }
    }

    /// Every `optimize_ms`, cuts the candidate table back to
    /// [`KEEP_CANDIDATES`]: peers with a session or a dial under way stay
    /// (a probe or a swap is one or the other), then the closest by
    /// proximity, then [`KEEP_RANDOM`] drawn at random from the rest (long
    /// links and probes need far peers too); with `Random` selection, all
    /// at random. Without it the table filled in
    /// the first seconds, while coordinates were still poor, and froze:
    /// the closer peers the tracker and peer exchange named later were
    /// ignored.
    pub(super) fn prune_candidates(&mut self) {
        if self.candidates.len() <= KEEP_CANDIDATES {
            return;
        }
        // Infrastructure wants candidates all over the map, not the closest.
        let ranked = self.cfg.selection != Selection::Random && !self.cfg.role.is_infra();
        let mut open: Vec<(u32, P)> = self
            .candidates
            .iter()
            .filter(|(p, c)| c.dialing_since.is_none() && !self.neighbors.contains_key(*p))
            .map(|(p, c)| {
                // Finite, non-negative scores sort by their bits; none last.
                let score = ranked.then(|| self.candidate_proximity(c)).flatten();
                let key = score.map_or(u32::MAX, |s| s.ms.max(0.0).to_bits());
                (key, p.clone())
            })
            .collect();
        let keep = KEEP_CANDIDATES.saturating_sub(self.candidates.len() - open.len());
        if open.len() <= keep {
            return;
        }
        let closest = if ranked {
            keep.saturating_sub(KEEP_RANDOM)
        } else {
            0
        };
        open.sort_unstable();
        let mut rest = open.split_off(closest);
        rand::seq::SliceRandom::shuffle(rest.as_mut_slice(), &mut self.rng);
        for (_, p) in rest.into_iter().skip(keep - closest) {
            self.candidates.remove(&p);
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
            if c.dialing_since.is_some() && self.probe.as_ref() != Some(p) {
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
        let starved = std::mem::take(&mut self.starved);
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
                && (starved || self.long_link() && (self.dials + i as u64) % 4 == 3);
            let idx = if random_pick {
                rand::Rng::gen_range(&mut self.rng, 0..ready.len())
            } else if limit.is_some_and(|l| key(self, &ready[0]) > l.to_bits()) {
                continue;
            } else {
                0
            };
            picks.push(ready.remove(idx));
        }
        self.dials += picks.len() as u64;
        for p in picks {
            self.dial(&p, now);
        }
    }

    /// A candidate we may dial now: no session, no dial pending, retry
    /// time passed.
    pub(super) fn is_ready(&self, peer: &P, c: &Candidate<P>, now: u64) -> bool {
        now >= c.retry_at && c.dialing_since.is_none() && !self.neighbors.contains_key(peer)
    }

    /// Asks the driver to dial a candidate; `false` if it is unknown.
    pub(super) fn dial(&mut self, peer: &P, now: u64) -> bool {
        let Some(c) = self.candidates.get_mut(peer) else {
            return false;
        };
        c.dialing_since = Some(now);
        self.outputs.push_back(Output::Connect(c.info.clone()));
        true
    }
}

use super::Output;

/// A candidate's or dialler's score, and how far to trust it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Score {
    /// RTT (measured or predicted) × `affinity`.
    pub(super) ms: f32,
    pub(super) measured: bool,
    /// Relative error of a prediction, as estimated: the two coordinates'
    /// own error estimates (running means of their relative errors) added
    /// (0 when measured).
    pub(super) error: f32,
    /// The proximity discount `ms` carries (1: none).
    pub(super) affinity: f32,
}

impl Score {
    fn discounted(self, affinity: f32) -> Score {
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
fn clearly_better(candidate: Score, worst: f32) -> bool {
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
