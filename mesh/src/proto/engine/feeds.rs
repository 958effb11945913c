//! Feeds: the infrastructure tier's backbone (docs/protocol.md §7.7).
//!
//! A reflector takes each stream from k ≥ 2 parents (seeders or other
//! reflectors) that each push it every new piece in full, and keeps the
//! first valid copy: losses on independent paths multiply (Akamai's
//! reflectors, DESIGN.md "Reflector tier"). It asks a parent with
//! `Feed { on: true }`; a parent then sends each new piece at once to
//! every neighbour that asked. Feeds go past the upload queue, never
//! refused nor queued behind viewers' requests, but are charged to the
//! same limit and budget.

use super::{peers::candidates::HANDSHAKE_TIMEOUT_MS, Engine, Output, PeerId};
use crate::proto::{
    piece::Piece,
    wire::{self, Message, PeerInfo, Role},
};

/// Sessions infrastructure keeps with other infrastructure besides its
/// parents, at most: they are outside its cap of viewers (`capped_degree`),
/// so that the tier's backbone never costs a viewer its slot, and within
/// this, so that peers that greet as reflectors cannot open sessions
/// without end.
pub(super) const MAX_BACKBONE: usize = 16;

impl<P: PeerId> Engine<P> {
    /// Whether a session with a peer that greeted as `role` is part of the
    /// tier's backbone: both sides are infrastructure.
    pub(super) fn is_backbone(&self, role: Role) -> bool {
        self.cfg.role.is_infra() && role.is_infra()
    }

    /// Whether a backbone session with `peer` fits: a parent's always,
    /// another's within [`MAX_BACKBONE`].
    pub(super) fn backbone_has_room(&self, peer: &P) -> bool {
        self.parents.contains(peer) || self.backbone_degree() < MAX_BACKBONE
    }

    /// `Feed` from an active neighbour: only a reflector takes feeds, so
    /// from anyone else it is a violation.
    pub(super) fn on_feed(&mut self, from: &P, on: bool, now: u64) {
        match self.neighbors.get_mut(from) {
            Some(n) if n.role == Role::Reflector => n.fed = on,
            Some(_) => self.violation(from, "feed from a non-reflector", now),
            None => {}
        }
    }

    /// Sends a new verified piece at once to every fed neighbour but its
    /// source (`from`) that is not known to hold it, marking it as holding
    /// it (so it gets no `Have`).
    pub(super) fn feed(&mut self, piece: &Piece, from: Option<&P>, now: u64) {
        let seq = piece.header.seq;
        let children: Vec<P> = self
            .neighbors
            .iter()
            .filter(|(p, n)| n.fed && Some(*p) != from && !n.has.contains(seq))
            .map(|(p, _)| p.clone())
            .collect();
        if children.is_empty() {
            return;
        }
        let (frame, len) = (wire::encode_piece_frame(piece), piece.data.len());
        for to in children {
            if let Some(n) = self.neighbors.get_mut(&to) {
                n.has.insert(seq);
            }
            self.uploads.charge_feed(len as u64, now);
            self.send_frame(&to, frame.clone(), len);
        }
    }

    /// Takes the coordinator's list of parents: a parent dropped from it
    /// is told to stop feeding us and, unless we feed it, closed (two
    /// infrastructure nodes have no other use for a session); the others
    /// are asked to feed us, or dialled.
    /// Only a reflector has parents: a viewer pulls, a seeder publishes,
    /// and their feeds would be refused as violations.
    pub(super) fn set_parents(&mut self, mut list: Vec<PeerInfo<P>>, now: u64) {
        if self.cfg.role != Role::Reflector {
            return;
        }
        list.retain(wire::is_valid_peer_info);
        for (peer, asked) in self.parents.replace(list) {
            let Some(fed) = self.neighbors.get(&peer).map(|n| n.fed) else {
                continue;
            };
            if asked {
                self.send(&peer, &Message::Feed { on: false });
            }
            if !fed {
                self.drop_peer(&peer, "no longer a parent", now);
            }
        }
        let active: Vec<P> = self.neighbors.active().map(|(p, _)| p.clone()).collect();
        for p in active {
            self.ask_to_feed(&p);
        }
        self.dial_parents(now);
    }

    /// Dials every parent without a session whose back-off is over.
    pub(super) fn dial_parents(&mut self, now: u64) {
        let neighbors = &self.neighbors;
        let due = self
            .parents
            .due(now, HANDSHAKE_TIMEOUT_MS, |p| neighbors.contains_key(p));
        for info in due {
            self.outputs.push_back(Output::Connect(info));
        }
    }

    /// The session with `peer` is active: a parent is asked, once per
    /// session, to feed us.
    pub(super) fn ask_to_feed(&mut self, peer: &P) {
        if self.parents.ask(peer) {
            self.send(peer, &Message::Feed { on: true });
        }
    }
}
