//! Peers we may connect to, and when we may try them again.

use std::collections::BTreeMap;

use crate::proto::{engine::PeerId, wire::PeerInfo};

/// Candidates remembered, at most: new ones beyond it wait for a prune
/// (`prune_candidates`).
pub(crate) const MAX_CANDIDATES: usize = 160;

/// A dial or a session still greeting after this long is given up: a peer
/// that cannot finish a handshake in ten seconds is of no use to a live
/// stream.
pub(crate) const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Failures back off up to this.
const MAX_BACKOFF_MS: u64 = 60_000;
/// A peer whose session just ended is not dialled again at once: whatever
/// ended it (a refusal, a restart) likely still holds.
pub(crate) const AFTER_SESSION_MS: u64 = 2_000;
/// A peer is not dialled again for this long after it broke the protocol,
/// after it was replaced by a closer candidate (it would only be replaced
/// again), or, for infrastructure, after it proved too weak to relay.
pub(crate) const SHUNNED_MS: u64 = 60_000;
/// A neighbour dropped to make room (for a newcomer, or because the
/// neighbourhood starved) is not dialled again for this long, so that the
/// slot goes to someone else.
pub(crate) const DROPPED_MS: u64 = 30_000;

/// A peer we may connect to.
#[derive(Debug)]
pub(crate) struct Candidate<P> {
    pub(crate) info: PeerInfo<P>,
    /// Not before this time (after a failure or a refusal).
    pub(crate) retry_at: u64,
    pub(crate) failures: u32,
    /// When we dialled it, while the dial is pending.
    pub(crate) dialing_since: Option<u64>,
    /// Its RTT (queue-filtered median) as measured while it was our
    /// neighbour: once known, it replaces the coordinate's prediction.
    pub(crate) measured_ms: Option<u32>,
}

impl<P> Candidate<P> {
    pub(crate) fn new(info: PeerInfo<P>) -> Self {
        Candidate {
            info,
            retry_at: 0,
            failures: 0,
            dialing_since: None,
            measured_ms: None,
        }
    }

    /// Exponential back-off after a failure: 2 s, 4 s, … up to 60 s.
    pub(crate) fn back_off(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        let wait = 1_000u64 << self.failures.min(6);
        self.retry_at = now + wait.min(MAX_BACKOFF_MS);
        self.dialing_since = None;
    }
}

/// The candidate table, bounded by [`MAX_CANDIDATES`].
#[derive(Debug)]
pub(crate) struct Candidates<P> {
    table: BTreeMap<P, Candidate<P>>,
}

impl<P> Default for Candidates<P> {
    fn default() -> Self {
        Candidates {
            table: BTreeMap::new(),
        }
    }
}

impl<P: PeerId> Candidates<P> {
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn get(&self, peer: &P) -> Option<&Candidate<P>> {
        self.table.get(peer)
    }

    pub(crate) fn get_mut(&mut self, peer: &P) -> Option<&mut Candidate<P>> {
        self.table.get_mut(peer)
    }

    #[cfg(test)]
    pub(crate) fn contains_key(&self, peer: &P) -> bool {
        self.table.contains_key(peer)
    }

    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = &P> {
        self.table.keys()
    }

    /// In peer order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&P, &Candidate<P>)> {
        self.table.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&P, &mut Candidate<P>)> {
        self.table.iter_mut()
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &Candidate<P>> {
        self.table.values()
    }

    pub(crate) fn remove(&mut self, peer: &P) {
        self.table.remove(peer);
    }

    /// Learns of a peer, or of new addresses or a coordinate of one known;
    /// a new peer is ignored while the table is full.
    pub(crate) fn add(&mut self, info: PeerInfo<P>) {
        if let Some(c) = self.table.get_mut(&info.peer) {
            if !info.addrs.is_empty() {
                c.info.addrs = info.addrs;
            }
            if info.coord.is_some() {
                c.info.coord = info.coord;
            }
        } else if self.table.len() < MAX_CANDIDATES {
            self.table.insert(info.peer.clone(), Candidate::new(info));
        }
    }

    /// A dial of `peer` starts at `now`: its address, to hand the driver.
    pub(crate) fn dial(&mut self, peer: &P, now: u64) -> Option<&PeerInfo<P>> {
        let c = self.table.get_mut(peer)?;
        c.dialing_since = Some(now);
        Some(&c.info)
    }

    /// The dial of `peer` is over (a session is up, or it is gone).
    pub(crate) fn dialled(&mut self, peer: &P) {
        if let Some(c) = self.table.get_mut(peer) {
            c.dialing_since = None;
        }
    }

    /// A dial failed: back off (see [`Candidate::back_off`]).
    pub(crate) fn failed(&mut self, peer: &P, now: u64) {
        if let Some(c) = self.table.get_mut(peer) {
            c.back_off(now);
        }
    }

    /// `peer` is not tried again before `at`.
    pub(crate) fn retry_at(&mut self, peer: &P, at: u64) {
        if let Some(c) = self.table.get_mut(peer) {
            c.retry_at = at;
        }
    }

    /// `peer` is not tried again before `at`, or later if it was so held.
    pub(crate) fn hold_off(&mut self, peer: &P, at: u64) {
        if let Some(c) = self.table.get_mut(peer) {
            c.retry_at = c.retry_at.max(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_is_bounded() {
        let mut c = Candidate::new(PeerInfo::new(1u32, vec![]));
        for _ in 0..20 {
            c.back_off(0);
        }
        assert_eq!(c.retry_at, 60_000);
    }

    #[test]
    fn a_full_table_learns_of_peers_it_knows_and_of_no_others() {
        let mut table = Candidates::default();
        for p in 0..MAX_CANDIDATES as u32 + 10 {
            table.add(PeerInfo::new(p, vec![]));
        }
        assert_eq!(table.len(), MAX_CANDIDATES);
        assert!(!table.contains_key(&(MAX_CANDIDATES as u32)));
        table.add(PeerInfo::new(3, vec!["/ip4/10.0.0.3/tcp/1".into()]));
        assert_eq!(table.get(&3).map(|c| c.info.addrs.len()), Some(1));
    }

    #[test]
    fn a_hold_never_shortens_a_longer_one() {
        let mut table = Candidates::default();
        table.add(PeerInfo::new(1u32, vec![]));
        table.retry_at(&1, 60_000);
        table.hold_off(&1, 30_000);
        assert_eq!(table.get(&1).map(|c| c.retry_at), Some(60_000));
        table.retry_at(&1, 30_000);
        assert_eq!(table.get(&1).map(|c| c.retry_at), Some(30_000));
    }
}
