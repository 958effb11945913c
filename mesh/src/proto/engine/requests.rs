//! Pieces asked for and not yet answered: of whom (a neighbour, or
//! infrastructure over HTTP), when, and how long the answer is awaited.

use std::collections::BTreeMap;

use super::PeerId;

/// A piece asked of a neighbour (`from: None`: of infrastructure over HTTP).
#[derive(Clone, Debug)]
pub(super) struct Ask<P> {
    pub(super) from: Option<P>,
    pub(super) at: u64,
    /// Asked elsewhere if not answered by then.
    pub(super) until: u64,
}

/// Every open request, at most one per piece.
#[derive(Debug)]
pub(super) struct Requests<P> {
    asks: BTreeMap<u64, Ask<P>>,
}

impl<P> Default for Requests<P> {
    fn default() -> Self {
        Requests {
            asks: BTreeMap::new(),
        }
    }
}

impl<P: PeerId> Requests<P> {
    pub(super) fn contains(&self, seq: u64) -> bool {
        self.asks.contains_key(&seq)
    }

    /// Whom `seq` was asked of, if anyone: `Some(None)` is infrastructure.
    pub(super) fn asked_of(&self, seq: u64) -> Option<Option<&P>> {
        self.asks.get(&seq).map(|a| a.from.as_ref())
    }

    /// Asks `seq` of `from` (`None`: infrastructure) at `at`, awaiting the
    /// answer until `until`.
    pub(super) fn ask(&mut self, seq: u64, from: Option<P>, at: u64, until: u64) {
        self.asks.insert(seq, Ask { from, at, until });
    }

    /// The request for `seq`, closed if it was made of `from` (`None`:
    /// infrastructure); a piece or `Missing` from anyone else closes
    /// nothing.
    pub(super) fn close(&mut self, seq: u64, from: Option<&P>) -> Option<Ask<P>> {
        if self.asks.get(&seq)?.from.as_ref() != from {
            return None;
        }
        self.asks.remove(&seq)
    }

    /// The request for `seq`, withdrawn whoever it was made of.
    pub(super) fn withdraw(&mut self, seq: u64) -> Option<Ask<P>> {
        self.asks.remove(&seq)
    }

    /// Infrastructure did not have `seq`: it is asked again by `at` the
    /// latest, not at once, or a piece nobody has becomes a busy loop.
    pub(super) fn retry_infra_by(&mut self, seq: u64, at: u64) {
        if let Some(a) = self.asks.get_mut(&seq) {
            if a.from.is_none() {
                a.until = a.until.min(at);
            }
        }
    }

    /// Forgets every request made of `peer` (its session ended).
    pub(super) fn forget_peer(&mut self, peer: &P) {
        self.asks.retain(|_, a| a.from.as_ref() != Some(peer));
    }

    /// Requests open with infrastructure.
    pub(super) fn of_infra(&self) -> usize {
        self.asks.values().filter(|a| a.from.is_none()).count()
    }

    /// Removes and returns the requests not answered by `now`, in seq
    /// order, with whom each was made of.
    pub(super) fn take_expired(&mut self, now: u64) -> Vec<(u64, Option<P>)> {
        let expired: Vec<(u64, Option<P>)> = self
            .asks
            .iter()
            .filter(|(_, a)| now >= a.until)
            .map(|(s, a)| (*s, a.from.clone()))
            .collect();
        for (seq, _) in &expired {
            self.asks.remove(seq);
        }
        expired
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Ask<P>)> {
        self.asks.iter().map(|(&s, a)| (s, a))
    }

    /// The lowest seq asked for.
    pub(super) fn first_seq(&self) -> Option<u64> {
        self.asks.first_key_value().map(|(&s, _)| s)
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.asks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whom_a_piece_was_asked_of_closes_the_request() {
        let mut r = Requests::<u32>::default();
        r.ask(1, Some(7), 0, 100);
        r.ask(2, None, 0, 100);
        assert!(r.close(1, Some(&8)).is_none(), "another neighbour");
        assert!(r.close(1, None).is_none(), "infrastructure");
        assert!(r.close(2, Some(&7)).is_none(), "a neighbour");
        assert_eq!(r.close(1, Some(&7)).map(|a| a.at), Some(0));
        assert!(r.close(2, None).is_some());
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn a_failed_infrastructure_request_is_retried_after_a_pause_not_at_once() {
        let mut r = Requests::<u32>::default();
        r.ask(1, None, 0, 3_000);
        r.ask(2, Some(7), 0, 3_000);
        r.retry_infra_by(1, 250);
        r.retry_infra_by(2, 250);
        assert!(r.take_expired(249).is_empty());
        assert_eq!(r.take_expired(250), vec![(1, None)]);
        assert_eq!(r.take_expired(3_000), vec![(2, Some(7))]);
    }

    #[test]
    fn a_closed_session_takes_its_requests_with_it() {
        let mut r = Requests::<u32>::default();
        r.ask(1, Some(7), 0, 100);
        r.ask(2, Some(8), 0, 100);
        r.ask(3, None, 0, 100);
        r.forget_peer(&7);
        assert_eq!(r.first_seq(), Some(2));
        assert_eq!(r.of_infra(), 1);
    }
}
