//! Where candidates come from and go: tracker hints, peer exchange and
//! suggestions in, a bounded table pruned to the closest, dials out.

use crate::{
    proto::{
        engine::{peers::candidates::Candidate, Engine, Output, PeerId, Selection},
        wire::{self, Message, PeerInfo},
    },
    reach::shareable,
};

/// Candidates kept by each prune (see `prune_candidates`), and how many of
/// them are drawn at random rather than the closest.
pub(crate) const KEEP_CANDIDATES: usize = 128;
pub(crate) const KEEP_RANDOM: usize = 24;

impl<P: PeerId> Engine<P> {
    /// Every `optimize_ms`, cuts the candidate table back to
    /// [`KEEP_CANDIDATES`]: peers with a session or a dial under way stay
    /// (a probe or a swap is one or the other), then the closest by
    /// proximity, then [`KEEP_RANDOM`] drawn at random from the rest (long
    /// links and probes need far peers too); with `Random` selection, all
    /// at random. Without it the table filled in
    /// the first seconds, while coordinates were still poor, and froze:
    /// the closer peers the tracker and peer exchange named later were
    /// ignored.
    pub(crate) fn prune_candidates(&mut self) {
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

    pub(crate) fn add_candidates(&mut self, peers: Vec<PeerInfo<P>>) {
        for info in peers {
            self.candidates.add(info);
        }
    }

    /// A candidate we may dial now: no session, no dial pending, retry
    /// time passed, and not a parent (those are dialled as parents).
    pub(crate) fn is_ready(&self, peer: &P, c: &Candidate<P>, now: u64) -> bool {
        now >= c.retry_at
            && c.dialing_since.is_none()
            && !self.neighbors.contains_key(peer)
            && !self.parents.contains(peer)
    }

    /// Asks the driver to dial a candidate; `false` if it is unknown.
    pub(crate) fn dial(&mut self, peer: &P, now: u64) -> bool {
        let Some(info) = self.candidates.dial(peer, now) else {
            return false;
        };
        self.outputs.push_back(Output::Connect(info.clone()));
        true
    }

    /// Sends each neighbour a sample of our other neighbours (peer exchange).
    pub(crate) fn exchange_peers(&mut self, peers: &[P]) {
        let known: Vec<PeerInfo<P>> = peers
            .iter()
            .filter_map(|p| {
                let c = self.candidates.get(p)?;
                let n = self.neighbors.get(p)?;
                let addrs = shareable(&c.info.addrs, wire::MAX_ADDRS);
                (!addrs.is_empty()).then(|| PeerInfo {
                    peer: p.clone(),
                    addrs,
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

    /// Active viewers we know addresses of, for a peer we turn away.
    pub(crate) fn suggestions(&self, except: &P) -> Vec<PeerInfo<P>> {
        self.neighbors
            .iter()
            .filter(|(p, n)| *p != except && n.is_active())
            .filter_map(|(p, _)| self.candidates.get(p))
            .map(|c| (c, shareable(&c.info.addrs, wire::MAX_ADDRS)))
            .filter(|(_, addrs)| !addrs.is_empty())
            .take(wire::MAX_SUGGESTIONS)
            .map(|(c, addrs)| PeerInfo {
                peer: c.info.peer.clone(),
                addrs,
                coord: c.info.coord,
                loc: c.info.loc,
                free: c.info.free,
            })
            .collect()
    }
}
