//! The simulated tracker: the candidates it hands a node that announces.

use rand::Rng;

use super::{
    partition::{part_of, Soft},
    NodeId, Sim,
};
use crate::proto::{
    proximity::{rank_best, RankView},
    Coord, Locality, PeerInfo,
};

impl Sim<'_> {
    /// The tracker's answer: a random sample of joined peers ranked by the
    /// real tracker's rule (`proto::proximity::rank_best`), best first.
    pub(super) fn tracker_hints(&mut self, v: NodeId) -> Vec<PeerInfo<NodeId>> {
        if v == 0 {
            return self.random_hints();
        }
        let me = *self.parts[part_of(v)].soft(v).expect("present");
        let loc = self.world.loc(v);
        let mut pool: Vec<NodeId> = Vec::with_capacity(self.cfg().tracker_window + 1);
        pool.push(0); // infrastructure is always listed
        if self.present.len() <= self.cfg().tracker_window {
            pool.extend(self.present.iter().copied());
        } else {
            for _ in 0..self.cfg().tracker_window {
                pool.push(self.present[self.rng.gen_range(0..self.present.len())]);
            }
            pool.sort_unstable();
            pool.dedup();
        }
        // Ranked from each peer's soft state (`partition::Soft`, the
        // engine's own figures); only the hints handed out are built.
        let known: Vec<(NodeId, Soft, Locality)> = pool
            .into_iter()
            .filter(|&p| p != v)
            .filter_map(|p| Some((p, *self.parts[part_of(p)].soft(p)?, self.world.loc(p))))
            .collect();
        let hints = self.cfg().hints;
        let ranked = rank_best(
            known.into_iter(),
            loc,
            Some(me.coord),
            hints,
            &mut self.rng,
            |(_, soft, loc)| RankView {
                has_free_degree: soft.free > 0,
                coord: Some(soft.coord),
                loc: *loc,
                degree: u32::from(soft.degree),
            },
        );
        ranked
            .into_iter()
            .map(|(p, soft, _)| self.hint(p, soft.coord, soft.free))
            .collect()
    }

    /// The tracker's answer to infrastructure: a random sample of viewers
    /// (infrastructure spreads its neighbours over the map itself).
    fn random_hints(&mut self) -> Vec<PeerInfo<NodeId>> {
        let n = self.cfg().hints.min(self.present.len());
        let mut picked = Vec::with_capacity(n);
        for _ in 0..n {
            picked.push(self.present[self.rng.gen_range(0..self.present.len())]);
        }
        picked.sort_unstable();
        picked.dedup();
        picked
            .into_iter()
            .filter_map(|p| {
                let soft = *self.parts[part_of(p)].soft(p)?;
                Some(self.hint(p, soft.coord, soft.free))
            })
            .collect()
    }

    /// A hint naming `p`.
    fn hint(&self, p: NodeId, coord: Coord, free: u16) -> PeerInfo<NodeId> {
        PeerInfo {
            peer: p,
            // An address, as the real tracker gives: engines pass on in
            // peer exchange only peers a driver can dial.
            addrs: vec![String::new()],
            coord: Some(coord),
            loc: self.world.loc(p),
            free: Some(free),
        }
    }
}
