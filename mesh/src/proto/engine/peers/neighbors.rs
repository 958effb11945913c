//! The neighbour table: one record per session, and the degree.
//!
//! The degree (active sessions) is asked for often (the simulator's
//! tracker asks every peer it ranks), so it is kept rather than counted;
//! the table is the only place a session becomes active or goes, so the
//! count cannot drift from the records.

use std::collections::{btree_map, BTreeMap, BTreeSet};

use super::rtt::Rtt;
use crate::proto::{
    coords::Coord,
    seqset::SeqSet,
    wire::{Locality, Role},
};

/// Delivery rate assumed before a neighbour has delivered anything, bytes/s.
const INITIAL_RATE: f64 = 1_000_000.0;

/// Where a session is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Transport is up; waiting for the peer's `Hello`.
    Greeting,
    /// Handshake done: pieces may flow.
    Active,
}

/// A connected peer.
#[derive(Debug)]
pub(crate) struct Neighbor {
    /// Changed only by the table ([`Neighbors::activate`]).
    phase: Phase,
    /// We dialled it (outbound sessions are never refused for the cap).
    pub(crate) outbound: bool,
    pub(crate) role: Role,
    pub(crate) connected_at: u64,
    /// Pieces it holds, as far as its buffer map and haves tell.
    pub(crate) has: SeqSet,
    /// Pieces we asked of it and when.
    pub(crate) inflight: BTreeSet<u64>,
    /// Haves not yet sent to it.
    pub(crate) pending_have: Vec<u64>,
    pub(crate) pending_starts: Vec<u64>,
    pub(crate) rtt: Rtt,
    /// Nonce and send time of the ping awaiting its pong.
    pub(crate) ping: Option<(u64, u64)>,
    /// Smoothed delivery rate of requested pieces, bytes/s.
    pub(crate) rate: f64,
    /// Strikes for bad pieces and timeouts.
    pub(crate) penalty: u32,
    /// Upload it advertised in its Hello, kbit/s (0: not limited).
    pub(crate) upload_kbps: u32,
    /// Its latest network coordinate.
    pub(crate) coord: Option<Coord>,
    /// Its AS and subnet, from its Hello.
    pub(crate) loc: Locality,
    /// Neighbour slots it had free when it greeted us.
    pub(crate) free: Option<u16>,
    /// A reflector that asked us for every new piece (`Feed { on: true }`,
    /// docs/protocol.md §7.7).
    pub(crate) fed: bool,
}

impl Neighbor {
    pub(crate) fn new(outbound: bool, now: u64) -> Self {
        Neighbor {
            phase: Phase::Greeting,
            outbound,
            role: Role::Viewer,
            connected_at: now,
            has: SeqSet::default(),
            inflight: BTreeSet::new(),
            pending_have: Vec::new(),
            pending_starts: Vec::new(),
            rtt: Rtt::default(),
            ping: None,
            rate: INITIAL_RATE,
            penalty: 0,
            upload_kbps: 0,
            coord: None,
            loc: Locality::default(),
            free: None,
            fed: false,
        }
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase
    }

    pub(crate) fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// Expected time until a piece of `bytes` asked now would arrive, in ms:
    /// RTT plus everything already queued at the delivery rate (DESIGN.md,
    /// "lowest expected completion time").
    /// Advertised upload, with "not limited" as the most.
    pub(crate) fn capacity(&self) -> u32 {
        if self.upload_kbps == 0 {
            u32::MAX
        } else {
            self.upload_kbps
        }
    }

    pub(crate) fn expected_ms(&self, bytes: usize, queued_bytes: usize) -> f64 {
        let rtt = self.rtt.median().unwrap_or(100) as f64;
        rtt + (queued_bytes + bytes) as f64 * 1000.0 / self.rate
    }

    /// A requested piece arrived `elapsed_ms` after it was asked for, with
    /// `queued` other requests to this neighbour ahead of or beside it.
    /// The service time is what is left after the round trip, shared by
    /// the pieces served in that time; the rate never exceeds what the
    /// neighbour advertised.
    pub(crate) fn observe_delivery(&mut self, bytes: usize, elapsed_ms: u64, queued: usize) {
        let rtt = self.rtt.median().unwrap_or(0);
        let service_ms = elapsed_ms.saturating_sub(rtt).max(1) as f64;
        let sample = (bytes * (queued + 1)) as f64 * 1000.0 / service_ms;
        let mut rate = 0.8 * self.rate + 0.2 * sample;
        if self.upload_kbps > 0 {
            rate = rate.min(f64::from(self.upload_kbps) * 1000.0 / 8.0);
        }
        self.rate = rate.max(1_000.0);
    }
}

#[derive(Debug)]
pub(crate) struct Neighbors<P> {
    map: BTreeMap<P, Neighbor>,
    /// Records in `map` whose session is active.
    active: usize,
}

impl<P> Default for Neighbors<P> {
    fn default() -> Self {
        Neighbors {
            map: BTreeMap::new(),
            active: 0,
        }
    }
}

impl<P: Ord> Neighbors<P> {
    /// Active sessions.
    pub(crate) fn degree(&self) -> usize {
        #[cfg(test)]
        assert_eq!(
            self.active,
            self.map.values().filter(|n| n.is_active()).count(),
            "the kept degree is the count"
        );
        self.active
    }

    /// Sessions in either phase.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// A new session, greeting; one already there is kept as it is.
    pub(crate) fn open(&mut self, peer: P, neighbor: Neighbor) {
        self.map.entry(peer).or_insert(neighbor);
    }

    /// The handshake is done: the session counts towards the degree.
    pub(crate) fn activate(&mut self, peer: &P) -> Option<&mut Neighbor> {
        let n = self.map.get_mut(peer)?;
        if !n.is_active() {
            n.phase = Phase::Active;
            self.active += 1;
        }
        Some(n)
    }

    /// The session is gone.
    pub(crate) fn remove(&mut self, peer: &P) -> Option<Neighbor> {
        let n = self.map.remove(peer)?;
        if n.is_active() {
            self.active -= 1;
        }
        Some(n)
    }

    pub(crate) fn get(&self, peer: &P) -> Option<&Neighbor> {
        self.map.get(peer)
    }

    /// A record to update; its phase is the table's to change.
    pub(crate) fn get_mut(&mut self, peer: &P) -> Option<&mut Neighbor> {
        self.map.get_mut(peer)
    }

    pub(crate) fn contains_key(&self, peer: &P) -> bool {
        self.map.contains_key(peer)
    }

    /// Every session, in peer order.
    pub(crate) fn iter(&self) -> btree_map::Iter<'_, P, Neighbor> {
        self.map.iter()
    }

    pub(crate) fn iter_mut(&mut self) -> btree_map::IterMut<'_, P, Neighbor> {
        self.map.iter_mut()
    }

    pub(crate) fn values(&self) -> btree_map::Values<'_, P, Neighbor> {
        self.map.values()
    }

    pub(crate) fn values_mut(&mut self) -> btree_map::ValuesMut<'_, P, Neighbor> {
        self.map.values_mut()
    }

    /// Active sessions, in peer order.
    pub(crate) fn active(&self) -> impl Iterator<Item = (&P, &Neighbor)> {
        self.map.iter().filter(|(_, n)| n.is_active())
    }

    /// Active sessions with viewers, in peer order.
    pub(crate) fn active_viewers(&self) -> impl Iterator<Item = (&P, &Neighbor)> {
        self.active().filter(|(_, n)| n.role == Role::Viewer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_time_grows_with_queue() {
        let n = Neighbor::new(true, 0);
        assert!(n.expected_ms(1000, 100_000) > n.expected_ms(1000, 0));
    }

    #[test]
    fn the_degree_counts_active_sessions_through_every_change() {
        let mut t: Neighbors<u32> = Neighbors::default();
        t.open(1, Neighbor::new(true, 0));
        t.open(2, Neighbor::new(false, 0));
        assert_eq!((t.len(), t.degree()), (2, 0));
        assert!(t.activate(&1).is_some());
        assert!(t.activate(&1).is_some(), "twice counts once");
        assert_eq!(t.degree(), 1);
        t.open(1, Neighbor::new(false, 5));
        assert_eq!(t.degree(), 1, "a second open keeps the first session");
        assert!(t.remove(&2).is_some());
        assert_eq!(t.degree(), 1);
        assert!(t.remove(&1).is_some());
        assert_eq!((t.len(), t.degree()), (0, 0));
        assert!(t.activate(&3).is_none());
        assert_eq!(t.active().count(), 0);
    }
}
