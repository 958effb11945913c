//! What this node gives: requests answered under the upload limit, pushes
//! relayed, and what it holds announced (buffer maps, batched `Have`s).

use super::{uploads::Upload, Engine, PeerId, Timer};
use crate::proto::wire::{self, Message};

impl<P: PeerId> Engine<P> {
    pub(super) fn on_request(&mut self, from: P, seqs: Vec<u64>, now: u64) {
        let missing = self.uploads.admit(&from, seqs, &self.store, now);
        if !missing.is_empty() {
            self.send(&from, &Message::Missing { seqs: missing });
        }
        self.drain_upload(now);
    }

    /// A piece the seeder pushed (its first copies in the mesh) goes on at
    /// once to our `relay_push` best-provisioned viewer neighbours that lack
    /// it, through the upload queue: the stream fans out a tree level
    /// before any `Have` round trip, from the viewers the seeder chose for
    /// their upload (DESIGN.md "Push for latency").
    pub(super) fn relay_push(&mut self, seq: u64, from: &P, now: u64) {
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
            if self.uploads.is_full() {
                break;
            }
            if let Some(n) = self.neighbors.get_mut(&to) {
                n.has.insert(seq);
            }
            self.uploads.push(to, seq);
        }
        self.drain_upload(now);
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

    pub(super) fn flush_haves(&mut self, now: u64) {
        self.timers.stop(Timer::Have);
        // One pass over the neighbours (a lookup per neighbour would read
        // the map again); frames go out in neighbour order.
        let mut haves: Vec<(P, Message<P>)> = Vec::new();
        let mut more = false;
        for (p, n) in self.neighbors.iter_mut() {
            if n.pending_have.is_empty() {
                continue;
            }
            // Anything over a frame's bound goes in the next batch; a
            // batch within it is handed over whole, not copied.
            let seqs = take_batch(&mut n.pending_have);
            let starts = take_batch(&mut n.pending_starts);
            more |= !n.pending_have.is_empty() || !n.pending_starts.is_empty();
            haves.push((
                p.clone(),
                Message::Have {
                    seqs,
                    segment_starts: starts,
                },
            ));
        }
        if more {
            self.timers
                .set(Timer::Have, now + self.cfg.have_interval_ms);
        }
        for (p, msg) in &haves {
            self.send(p, msg);
        }
    }

    /// Serves queued requests as the upload budget allows.
    pub(super) fn drain_upload(&mut self, now: u64) {
        while let Some(upload) = self.uploads.next(&self.store, now) {
            match upload {
                Upload::Gone(peer, seq) => self.send(&peer, &Message::Missing { seqs: vec![seq] }),
                Upload::Due(peer, seq) => {
                    let active = self.neighbors.get(&peer).is_some_and(|n| n.is_active());
                    if let Some(piece) = self.store.get(&seq).filter(|_| active) {
                        // Encoded from the store: the piece is not cloned to be sent.
                        let (frame, payload) = (wire::encode_piece_frame(piece), piece.data.len());
                        self.send_frame(&peer, frame, payload);
                    }
                }
            }
        }
    }
}

/// The first [`wire::MAX_LIST`] entries of `pending`, taken out of it.
fn take_batch(pending: &mut Vec<u64>) -> Vec<u64> {
    if pending.len() <= wire::MAX_LIST {
        std::mem::take(pending)
    } else {
        pending.drain(..wire::MAX_LIST).collect()
    }
}
