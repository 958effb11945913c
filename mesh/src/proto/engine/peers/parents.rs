//! A reflector's parents: the infrastructure it takes the stream from,
//! as the coordinator assigned them (`Input::Parents`), and when each is
//! dialled again.
//!
//! Not candidates: the candidate table is bounded and pruned, infrastructure
//! dials its candidates to cover the map, and a failed candidate waits up to
//! a minute. A parent is one of only k paths the stream takes into this
//! node (Akamai's reflectors: losses on independent paths multiply), so it
//! is never pruned nor chosen against, and a lost one is dialled again
//! within seconds.

use std::collections::BTreeMap;

use crate::proto::{engine::PeerId, wire::PeerInfo};

/// Parents kept, at most: the coordinator assigns two or three.
pub(crate) const MAX_PARENTS: usize = 8;
/// A lost parent is dialled again after this, doubling with each loss
/// that no piece from it redeems ...
const FIRST_RETRY_MS: u64 = 1_000;
/// ... up to this: a dead parent is not dialled in a loop, a restarted one
/// is back soon.
const MAX_RETRY_MS: u64 = 16_000;

/// One parent.
#[derive(Debug)]
struct Parent<P> {
    info: PeerInfo<P>,
    /// Not dialled before this.
    retry_at: u64,
    /// Losses since it last delivered a new piece.
    losses: u32,
    /// When we dialled it, while the dial is pending.
    dialing_since: Option<u64>,
    /// We sent it `Feed { on: true }` in the session now open.
    asked: bool,
}

/// The parents, in peer order.
#[derive(Debug)]
pub(crate) struct Parents<P> {
    table: BTreeMap<P, Parent<P>>,
}

impl<P> Default for Parents<P> {
    fn default() -> Self {
        Parents {
            table: BTreeMap::new(),
        }
    }
}

impl<P: PeerId> Parents<P> {
    pub(crate) fn contains(&self, peer: &P) -> bool {
        self.table.contains_key(peer)
    }

    /// Takes `list` (at most [`MAX_PARENTS`] of it) as the parents: one
    /// kept keeps its state. Returns those dropped, with whether we had
    /// asked each to feed us.
    pub(crate) fn replace(&mut self, list: Vec<PeerInfo<P>>) -> Vec<(P, bool)> {
        let mut old = std::mem::take(&mut self.table);
        for info in list.into_iter().take(MAX_PARENTS) {
            let parent = match old.remove(&info.peer) {
                Some(kept) => Parent { info, ..kept },
                None => Parent {
                    info,
                    retry_at: 0,
                    losses: 0,
                    dialing_since: None,
                    asked: false,
                },
            };
            self.table.insert(parent.info.peer.clone(), parent);
        }
        old.into_iter()
            .map(|(p, parent)| (p, parent.asked))
            .collect()
    }

    /// The parents to dial at `now`: no session (`in_session`), no dial
    /// pending, and their retry time passed. Each is marked as dialling; a
    /// dial pending longer than `timeout` counts as a loss first.
    pub(crate) fn due(
        &mut self,
        now: u64,
        timeout: u64,
        in_session: impl Fn(&P) -> bool,
    ) -> Vec<PeerInfo<P>> {
        let mut due = Vec::new();
        for (p, parent) in self.table.iter_mut() {
            if parent.dialing_since.is_some_and(|t| now >= t + timeout) {
                parent.lost(now);
            }
            if parent.dialing_since.is_none() && now >= parent.retry_at && !in_session(p) {
                parent.dialing_since = Some(now);
                due.push(parent.info.clone());
            }
        }
        due
    }

    /// A session with `peer` is up: its dial, if any, is over.
    pub(crate) fn connected(&mut self, peer: &P) {
        if let Some(parent) = self.table.get_mut(peer) {
            parent.dialing_since = None;
        }
    }

    /// The session with `peer` is active: whether it is a parent not yet
    /// asked to feed us in it (it is asked now).
    pub(crate) fn ask(&mut self, peer: &P) -> bool {
        self.table
            .get_mut(peer)
            .is_some_and(|parent| !std::mem::replace(&mut parent.asked, true))
    }

    /// The dial of `peer` failed or its session closed at `now`.
    pub(crate) fn lost(&mut self, peer: &P, now: u64) {
        if let Some(parent) = self.table.get_mut(peer) {
            parent.lost(now);
        }
    }

    /// `peer` delivered a new verified piece: it works, so its next loss
    /// is retried soon again.
    pub(crate) fn delivered(&mut self, peer: &P) {
        if let Some(parent) = self.table.get_mut(peer) {
            parent.losses = 0;
        }
    }
}

impl<P> Parent<P> {
    fn lost(&mut self, now: u64) {
        let wait = FIRST_RETRY_MS << self.losses.min(8);
        self.retry_at = now + wait.min(MAX_RETRY_MS);
        self.losses = self.losses.saturating_add(1);
        self.dialing_since = None;
        self.asked = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parents(ids: &[u32]) -> Vec<PeerInfo<u32>> {
        ids.iter().map(|&p| PeerInfo::new(p, vec![])).collect()
    }

    fn dial(table: &mut Parents<u32>, now: u64) -> Vec<u32> {
        let due = table.due(now, 10_000, |_| false);
        due.into_iter().map(|i| i.peer).collect()
    }

    #[test]
    fn every_parent_is_dialled_once_until_its_dial_ends() {
        let mut t = Parents::default();
        assert!(t.replace(parents(&[1, 2])).is_empty());
        assert_eq!(dial(&mut t, 0), vec![1, 2]);
        assert!(dial(&mut t, 100).is_empty(), "dials pending");
        t.connected(&1);
        let in_session = |p: &u32| *p == 1;
        assert!(
            t.due(10_000, 10_000, in_session).is_empty(),
            "2's dial timed out: a loss"
        );
        assert_eq!(t.due(11_000, 10_000, in_session).len(), 1);
    }

    #[test]
    fn losses_back_off_up_to_a_bound_and_a_delivery_resets_them() {
        let mut t = Parents::default();
        t.replace(parents(&[1]));
        let mut now = 0;
        assert_eq!(dial(&mut t, now), vec![1]);
        for wait in [1_000, 2_000, 4_000, 8_000, 16_000, 16_000, 16_000] {
            t.lost(&1, now);
            assert!(dial(&mut t, now + wait - 1).is_empty(), "before {wait}");
            now += wait;
            assert_eq!(dial(&mut t, now), vec![1], "after {wait}");
        }
        t.delivered(&1);
        t.lost(&1, now);
        assert_eq!(dial(&mut t, now + FIRST_RETRY_MS), vec![1]);
    }

    #[test]
    fn a_parent_is_asked_to_feed_once_per_session() {
        let mut t = Parents::default();
        t.replace(parents(&[1]));
        assert!(t.ask(&1));
        assert!(!t.ask(&1));
        assert!(!t.ask(&2), "not a parent");
        t.lost(&1, 0);
        assert!(t.ask(&1), "a new session");
    }

    #[test]
    fn a_new_list_keeps_the_state_of_parents_it_keeps_and_names_those_dropped() {
        let mut t = Parents::default();
        t.replace(parents(&[1, 2]));
        assert!(t.ask(&1));
        t.lost(&2, 0);
        let dropped = t.replace(parents(&[2, 3]));
        assert_eq!(dropped, vec![(1, true)]);
        assert!(!t.contains(&1) && t.contains(&3));
        assert_eq!(dial(&mut t, 0), vec![3], "2 still backs off");
        let many: Vec<u32> = (10..30).collect();
        t.replace(parents(&many));
        assert_eq!(dial(&mut t, 0).len(), MAX_PARENTS);
    }
}
