//! Pieces owed to neighbours, sent as the upload limit allows: requests
//! admitted only while they can go out before the requester gives up, and
//! relayed pushes.

use std::collections::VecDeque;

use super::{store::Store, PeerId};
use crate::proto::upload::TokenBucket;

/// Upload backlog accepted, in ms of the upload limit: a longer queue only
/// adds lag, and the requester does better asking elsewhere or waiting.
const MAX_BACKLOG_MS: u64 = 250;
/// Requests a neighbour may have queued with us before we answer `Missing`.
const MAX_QUEUED_PER_PEER: usize = 16;
/// Requests queued for upload budget, at most.
pub(super) const UPLOAD_QUEUE: usize = 64;

/// The upload queue and the budget it drains under.
#[derive(Debug)]
pub(super) struct Uploads<P> {
    /// The node's own limit, bytes/s (`None`: unlimited).
    configured: Option<u64>,
    /// The coordinator's budget for this stream, bytes/s (infrastructure).
    budget: Option<u64>,
    limit: TokenBucket,
    /// First copies of new pieces pushed under a budget, and to whom: they
    /// go before `queue`.
    firsts: VecDeque<(P, u64)>,
    /// Pieces to send, and to whom, in order.
    queue: VecDeque<(P, u64)>,
}

/// What the queue's head asks for once the budget allows.
pub(super) enum Upload<P> {
    /// Send the piece `seq` to the peer.
    Due(P, u64),
    /// The piece left the store while queued: tell the peer it is missing.
    Gone(P, u64),
}

impl<P: PeerId> Uploads<P> {
    /// An empty queue under `limit` bytes per second (`None`: unlimited).
    pub(super) fn new(limit: Option<u64>, now: u64) -> Self {
        Uploads {
            configured: limit,
            budget: None,
            limit: TokenBucket::new(limit, now),
            firsts: VecDeque::new(),
            queue: VecDeque::new(),
        }
    }

    /// The coordinator's budget for this stream, bytes/s.
    pub(super) fn budget(&self) -> Option<u64> {
        self.budget
    }

    /// Holds sending to `budget` bytes/s as well as the node's own limit,
    /// whichever is less (`None`: the node's own limit alone).
    pub(super) fn set_budget(&mut self, budget: Option<u64>, now: u64) {
        if budget == self.budget {
            return;
        }
        self.budget = budget;
        let rate = match (self.configured, budget) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.limit = TokenBucket::new(rate, now);
    }

    /// Queues what of `seqs` (asked by `from`) is held and fits: within
    /// the queue's bounds, and sent before [`MAX_BACKLOG_MS`] of the limit
    /// has passed. Returns the rest, to be answered `Missing`.
    pub(super) fn admit(&mut self, from: &P, seqs: Vec<u64>, store: &Store, now: u64) -> Vec<u64> {
        let mut queued = self.queue.iter().filter(|(p, _)| p == from).count();
        // Queued payload, to refuse what the upload limit could not send
        // before the requester gives up: it does better asking elsewhere.
        let mut backlog: u64 = (self.firsts.iter().chain(&self.queue))
            .filter_map(|(_, s)| store.get(s))
            .map(|p| p.data.len() as u64)
            .sum();
        let mut refused = Vec::new();
        for seq in seqs {
            let Some(len) = store.get(&seq).map(|p| p.data.len() as u64) else {
                refused.push(seq);
                continue;
            };
            let room = queued < MAX_QUEUED_PER_PEER
                && self.queue.len() < UPLOAD_QUEUE
                && (backlog == 0 || self.limit.drain_ms(backlog + len, now) <= MAX_BACKLOG_MS);
            if room {
                self.queue.push_back((from.clone(), seq));
                queued += 1;
                backlog += len;
            } else {
                refused.push(seq);
            }
        }
        refused
    }

    pub(super) fn is_full(&self) -> bool {
        self.queue.len() >= UPLOAD_QUEUE
    }

    /// Queues `seq` for `to`, unasked (a relayed push); see [`Self::is_full`].
    pub(super) fn push(&mut self, to: P, seq: u64) {
        self.queue.push_back((to, seq));
    }

    /// Queues the first copy of a new piece for `to`, ahead of everything
    /// but earlier first copies; false if [`UPLOAD_QUEUE`] of them wait.
    /// Requests for pieces a swarm is short of could otherwise keep the
    /// budget spent, so that new pieces got in only by request and a swarm
    /// fell further behind for good.
    pub(super) fn push_first(&mut self, to: P, seq: u64) -> bool {
        if self.firsts.len() >= UPLOAD_QUEUE {
            return false;
        }
        self.firsts.push_back((to, seq));
        true
    }

    /// Whether infrastructure's push to its spread waits its turn in the
    /// queue rather than going at once. Without a budget it goes at once:
    /// it is the stream's way into the mesh. Under the coordinator's
    /// budget it is queued (the first copy of each piece before requests,
    /// [`Self::push_first`]), so that the budget holds everything the node
    /// sends for the stream but its feeds, and a segment cut all at once is
    /// paced out rather than cut short.
    pub(super) fn paces_pushes(&self) -> bool {
        self.budget.is_some()
    }

    /// Counts `bytes` a feed sent past the queue (docs/protocol.md §7.7):
    /// the tier's backbone is never held back, but its bytes come out of
    /// the same limit and budget, so the queue waits and requests are
    /// refused sooner while feeds are busy.
    pub(super) fn charge_feed(&mut self, bytes: u64, now: u64) {
        self.limit.charge(bytes, now);
    }

    /// When the head of the queue can go out under the limit.
    pub(super) fn ready_at(&self, store: &Store) -> Option<u64> {
        let (_, seq) = self.firsts.front().or(self.queue.front())?;
        let len = store.get(seq).map_or(0, |p| p.data.len());
        Some(self.limit.ready_at(len as u64))
    }

    /// The head of the queue, taken out if the budget allows at `now`
    /// (spending it) or its piece is gone.
    pub(super) fn next(&mut self, store: &Store, now: u64) -> Option<Upload<P>> {
        let lane = if self.firsts.is_empty() {
            &mut self.queue
        } else {
            &mut self.firsts
        };
        let (peer, seq) = lane.front().cloned()?;
        let Some(piece) = store.get(&seq) else {
            lane.pop_front();
            return Some(Upload::Gone(peer, seq));
        };
        if !self.limit.take(piece.data.len() as u64, now) {
            return None;
        }
        lane.pop_front();
        Some(Upload::Due(peer, seq))
    }

    /// Drops what `peer` asked for in `seqs` (a `Cancel`).
    pub(super) fn cancel(&mut self, peer: &P, seqs: &[u64]) {
        self.firsts.retain(|(p, s)| p != peer || !seqs.contains(s));
        self.queue.retain(|(p, s)| p != peer || !seqs.contains(s));
    }

    /// Drops everything queued for `peer` (its session ended).
    pub(super) fn forget_peer(&mut self, peer: &P) {
        self.firsts.retain(|(p, _)| p != peer);
        self.queue.retain(|(p, _)| p != peer);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.firsts.len() + self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proto::engine::tests::{piece, signer};

    /// Pieces 0..n of 1,000 bytes.
    fn store(n: u64) -> Store {
        let s = signer();
        let mut store = Store::default();
        for seq in 0..n {
            store.insert(Arc::new(piece(&s, seq, 0, 0, 0, 1_000)));
        }
        store
    }

    #[test]
    fn requests_beyond_what_the_limit_sends_in_time_are_refused() {
        // 20 kB/s: 250 ms of backlog is five 1,000-byte pieces.
        let (mut up, store) = (Uploads::<u32>::new(Some(20_000), 0), store(10));
        let refused = up.admit(&1, (0..10).collect(), &store, 0);
        assert_eq!(up.len() + refused.len(), 10);
        assert!((4..=6).contains(&up.len()), "queued {}", up.len());
        assert_eq!(refused.last(), Some(&9));
    }

    #[test]
    fn a_budget_holds_sending_under_the_limit_and_lifting_it_restores_the_limit() {
        let store = store(20);
        let queued = |up: &mut Uploads<u32>| {
            let refused = up.admit(&1, (0..10).collect(), &store, 0);
            let n = up.len();
            up.forget_peer(&1);
            assert_eq!(n + refused.len(), 10);
            n
        };
        let mut up = Uploads::<u32>::new(Some(40_000), 0);
        let own = queued(&mut up);
        up.set_budget(Some(8_000), 0);
        let budgeted = queued(&mut up);
        assert!(budgeted < own, "{budgeted} < {own}");
        // A budget above the node's own limit does not raise it.
        up.set_budget(Some(1_000_000), 0);
        assert_eq!(queued(&mut up), own);
        up.set_budget(None, 0);
        assert_eq!(queued(&mut up), own);
        // An unlimited node is held to its budget.
        let mut free = Uploads::<u32>::new(None, 0);
        free.set_budget(Some(8_000), 0);
        assert_eq!(queued(&mut free), budgeted);
    }

    #[test]
    fn a_first_copy_goes_before_queued_requests() {
        let (mut up, store) = (Uploads::<u32>::new(None, 0), store(4));
        up.set_budget(Some(1_000), 0);
        assert!(up.admit(&1, vec![0], &store, 0).is_empty());
        assert!(up.push_first(2, 3));
        assert!(matches!(up.next(&store, 0), Some(Upload::Due(2, 3))));
        let t = up.ready_at(&store).unwrap();
        assert!(matches!(up.next(&store, t), Some(Upload::Due(1, 0))));
    }

    #[test]
    fn a_feed_charged_to_the_limit_refuses_requests_sooner() {
        let store = store(10);
        let mut calm = Uploads::<u32>::new(Some(20_000), 0);
        let served = 10 - calm.admit(&1, (0..10).collect(), &store, 0).len();
        let mut busy = Uploads::<u32>::new(Some(20_000), 0);
        busy.charge_feed(4_000, 0);
        let refused = busy.admit(&1, (0..10).collect(), &store, 0);
        assert!(10 - refused.len() < served, "{refused:?}");
    }

    #[test]
    fn one_neighbour_cannot_take_the_whole_queue() {
        let (mut up, store) = (Uploads::<u32>::new(None, 0), store(40));
        let refused = up.admit(&1, (0..40).collect(), &store, 0);
        assert_eq!(up.len(), MAX_QUEUED_PER_PEER);
        assert_eq!(refused.len(), 40 - MAX_QUEUED_PER_PEER);
        assert!(up.admit(&2, vec![0], &store, 0).is_empty());
    }

    #[test]
    fn a_piece_not_held_is_refused_and_one_gone_is_reported() {
        let (mut up, mut store) = (Uploads::<u32>::new(None, 0), store(2));
        assert_eq!(up.admit(&1, vec![0, 1, 5], &store, 0), vec![5]);
        store.pop_first();
        assert!(matches!(up.next(&store, 0), Some(Upload::Gone(1, 0))));
        assert!(matches!(up.next(&store, 0), Some(Upload::Due(1, 1))));
        assert!(up.next(&store, 0).is_none());
    }

    #[test]
    fn cancelled_and_disconnected_requests_leave_the_queue() {
        let (mut up, store) = (Uploads::<u32>::new(None, 0), store(4));
        up.admit(&1, vec![0, 1], &store, 0);
        up.admit(&2, vec![2, 3], &store, 0);
        up.cancel(&1, &[1, 2]);
        assert_eq!(up.len(), 3);
        up.forget_peer(&2);
        assert!(matches!(up.next(&store, 0), Some(Upload::Due(1, 0))));
        assert!(up.next(&store, 0).is_none());
    }
}
