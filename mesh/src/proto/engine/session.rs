//! Sessions: handshake, the degree cap, and each message a neighbour sends.

use super::{window::SeqWindow, Engine, PeerId};
use crate::proto::{
    engine::peers::{
        candidates::{AFTER_SESSION_MS, SHUNNED_MS},
        neighbors::{Neighbor, Phase},
    },
    piece::Piece,
    wire::{self, Hello, Message, RefuseReason, Role, PROTOCOL_VERSION},
};

/// Bad pieces a neighbour may send before it is disconnected.
const MAX_PENALTY: u32 = 3;
/// A refused or failed candidate is not tried again before this.
const REFUSED_BACKOFF_MS: u64 = 15_000;

impl<P: PeerId> Engine<P> {
    pub(super) fn on_connected(&mut self, peer: P, outbound: bool, now: u64) {
        if self.neighbors.contains_key(&peer) {
            // The driver keeps one session per peer; a second is a bug there,
            // but must not reset the state of the first.
            return;
        }
        self.candidates.dialled(&peer);
        self.parents.connected(&peer);
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
            max_degree: if self.prober.is_target(peer) {
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
            self.requests.forget_peer(peer);
            self.uploads.forget_peer(peer);
            self.parents.lost(peer, now);
            if let Some(c) = self.candidates.get_mut(peer) {
                c.retry_at = c.retry_at.max(now + AFTER_SESSION_MS);
                if let Some(rtt) = n.rtt.base_median() {
                    c.measured_ms = Some(u32::try_from(rtt).unwrap_or(u32::MAX));
                }
            }
            self.update_neighbor_stats();
        }
        self.candidates.dialled(peer);
        self.selector.swap_failed(peer);
        self.prober.ended(peer);
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
        self.candidates.failed(peer, now);
        self.candidates.hold_off(peer, now + SHUNNED_MS);
        self.drop_peer(peer, reason, now);
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
            (Phase::Greeting, msg) if self.prober.is_target(&from) => {
                if let Message::Refuse { suggestions, .. } = msg {
                    self.add_candidates(suggestions);
                }
                self.probe_answered(&from, now);
            }
            (_, Message::Refuse { suggestions, .. }) => {
                self.add_candidates(suggestions);
                self.candidates.retry_at(&from, now + REFUSED_BACKOFF_MS);
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
                    self.requests.close(s, Some(&from));
                }
            }
            (Phase::Active, Message::Cancel { seqs }) => {
                self.uploads.cancel(&from, &seqs);
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
            (Phase::Active, Message::Feed { on }) => self.on_feed(&from, on, now),
        }
    }

    /// Notes pieces and segment starts a neighbour announced.
    fn learn(&mut self, seqs: &[u64], starts: &[u64], now: u64) {
        let wall = self.wall(now);
        let requests = &self.requests;
        let asked = |s| requests.contains(s);
        self.news |= self.edge.learn(seqs, starts, &self.store, asked, wall);
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

    fn on_hello(&mut self, from: P, hello: Hello, now: u64) {
        if self.prober.is_target(&from) {
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
            let full = inbound && self.capped_degree() >= self.cfg.max_degree;
            // Infrastructure always gets a slot at a viewer: its pushes are
            // the stream's way into this part of the mesh (see `spread`).
            // Infrastructure itself takes no newcomer by eviction: its
            // neighbours are chosen to cover the map; and its sessions with
            // infrastructure have their own bound (see `feeds`).
            let backbone = self.is_backbone(hello.role);
            let admitted = !probed
                && if backbone {
                    self.backbone_has_room(&from)
                } else {
                    !full
                        || hello.role.is_infra()
                        || (!self.cfg.role.is_infra() && self.evict_for(&from, &hello, now))
                };
            if full && admitted && hello.role.is_infra() && !backbone {
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
        let parent = self.parents.contains(&from);
        if self.cfg.role.is_infra() && !inbound && !parent && !self.relays(&hello) {
            self.candidates.retry_at(&from, now + SHUNNED_MS);
            return self.drop_peer(&from, "too little upload to relay pushes", now);
        }
        // The closer candidate of a swap accepted: the neighbour it
        // replaces goes now, so the cap holds.
        if let Some(swap) = self.selector.swap_accepted(&from) {
            if self.neighbors.contains_key(&swap.victim) {
                self.candidates.hold_off(&swap.victim, now + SHUNNED_MS);
                self.stats.neighbor_swaps += 1;
                self.drop_peer(&swap.victim, "replaced by a closer candidate", now);
            }
        }
        // An outbound session over the cap (several dials completed at once)
        // is closed too: the cap is never exceeded. Infrastructure's
        // sessions with infrastructure are outside it (`capped_degree`),
        // within their own bound.
        let over = if self.is_backbone(hello.role) {
            !self.backbone_has_room(&from)
        } else {
            self.capped_degree() >= self.degree_cap()
        };
        if over {
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
        self.ask_to_feed(&from);
        self.update_neighbor_stats();
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
            self.requests.close(seq, Some(&from));
            if strikes >= MAX_PENALTY {
                self.violation(&from, "bad pieces", now);
            }
            return;
        }
        let requested = self.requests.contains(seq);
        if let Some(ask) = self.requests.close(seq, Some(&from)) {
            let elapsed = now.saturating_sub(ask.at);
            if let Some(n) = self.neighbors.get_mut(&from) {
                n.inflight.remove(&seq);
                let queued = n.inflight.len();
                n.observe_delivery(piece.data.len(), elapsed, queued);
            }
        }
        let infra = self.neighbors.get(&from).is_some_and(|n| n.role.is_infra());
        let fresh = !self.store.contains_key(&seq);
        self.accept(piece, Some(&from), infra, now);
        // A reflector passed it on already (`accept`).
        if infra && !requested && fresh && self.cfg.role != Role::Reflector {
            self.relay_push(seq, &from, now);
        }
    }
}

use super::Output;
