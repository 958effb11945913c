//! The simulator's event queue: a calendar of 1 ms buckets.

use std::collections::{BTreeMap, VecDeque};

/// Buckets of the calendar: one per ms over this span (a power of two).
const CALENDAR_MS: u64 = 1 << 13;
/// Events per chunk of a bucket.
const CHUNK: usize = 32;

/// A calendar of one bucket per ms, each a FIFO of fixed-size chunks, so
/// events of the same ms come out in the order they were scheduled: the
/// order of (time, insertion number), without a heap, and the next events
/// lie side by side (see [`Queue::loaded`]). Events further ahead than the
/// calendar wait in `later`, keyed by (time, insertion number), and move
/// into their bucket before any event of their ms can be scheduled
/// directly, which keeps that order.
///
/// The simulator drains one ms at a time across several queues (one per
/// partition, one for serial events): [`Queue::next_time`] says when a
/// queue's next event is without moving it, [`Queue::advance_to`] moves it
/// to the ms every queue is about to drain, and [`Queue::pop_now`] drains
/// that ms, events scheduled for it meanwhile included.
pub(super) struct Queue<E> {
    /// The ms being drained.
    now: u64,
    /// Chunks of each ms, by ms modulo the span.
    buckets: Vec<VecDeque<VecDeque<E>>>,
    /// The chunk being drained (taken from the front of `now`'s bucket).
    current: VecDeque<E>,
    /// `current` was just refilled.
    loaded: bool,
    /// Empty chunks, to reuse.
    spare: Vec<VecDeque<E>>,
    /// Events in `buckets` and `current`.
    queued: usize,
    /// Buckets from `now` up to this ms are known to be empty (a cache for
    /// [`Queue::next_time`], so a queue idle for a while is not rescanned
    /// at every ms).
    empty_until: u64,
    later: BTreeMap<(u64, u64), E>,
    next_id: u64,
}

impl<E> Default for Queue<E> {
    fn default() -> Self {
        Queue {
            now: 0,
            buckets: (0..CALENDAR_MS).map(|_| VecDeque::new()).collect(),
            current: VecDeque::new(),
            loaded: false,
            spare: Vec::new(),
            queued: 0,
            empty_until: 0,
            later: BTreeMap::new(),
            next_id: 0,
        }
    }
}

impl<E> Queue<E> {
    /// Schedules `event` at `t` (not before the ms being drained).
    pub(super) fn push(&mut self, t: u64, event: E) {
        debug_assert!(t >= self.now, "no event in the past");
        let t = t.max(self.now);
        if t >= self.now + CALENDAR_MS {
            self.later.insert((t, self.next_id), event);
            self.next_id += 1;
            return;
        }
        self.append(t, event);
    }

    fn append(&mut self, t: u64, event: E) {
        self.empty_until = self.empty_until.min(t);
        let bucket = &mut self.buckets[(t % CALENDAR_MS) as usize];
        if bucket.back().is_none_or(|c| c.len() == CHUNK) {
            let chunk = self
                .spare
                .pop()
                .unwrap_or_else(|| VecDeque::with_capacity(CHUNK));
            bucket.push_back(chunk);
        }
        bucket.back_mut().expect("a chunk").push_back(event);
        self.queued += 1;
    }

    /// The ms of the earliest event, if any; the queue stays where it is.
    pub(super) fn next_time(&mut self) -> Option<u64> {
        if !self.current.is_empty() {
            return Some(self.now);
        }
        if self.queued == 0 {
            return self.later.first_key_value().map(|(&(t, _), _)| t);
        }
        // Every event in `later` is at least a span ahead, so the earliest
        // is in a bucket, less than a span ahead (chunks are never empty).
        let mut t = self.empty_until.max(self.now);
        while self.buckets[(t % CALENDAR_MS) as usize].is_empty() {
            t += 1;
        }
        self.empty_until = t;
        Some(t)
    }

    /// Moves to ms `t`, at most [`Queue::next_time`]: this ms is drained.
    pub(super) fn advance_to(&mut self, t: u64) {
        debug_assert!(self.current.is_empty() && t >= self.now);
        self.now = t;
        while let Some(entry) = self.later.first_entry() {
            if entry.key().0 >= t + CALENDAR_MS {
                break;
            }
            let ((t, _), event) = entry.remove_entry();
            self.append(t, event);
        }
    }

    /// The next event of the ms being drained (first scheduled first).
    pub(super) fn pop_now(&mut self) -> Option<E> {
        loop {
            if let Some(event) = self.current.pop_front() {
                self.queued -= 1;
                return Some(event);
            }
            let b = (self.now % CALENDAR_MS) as usize;
            let chunk = self.buckets[b].pop_front()?;
            self.spare.push(std::mem::replace(&mut self.current, chunk));
            self.loaded = true;
        }
    }

    /// The events `pop_now` returns next, once per chunk: `Some` when a
    /// chunk was loaded since the last call, so the caller can touch what
    /// they need all at once (see `partition::warm`).
    pub(super) fn loaded(&mut self) -> Option<&VecDeque<E>> {
        std::mem::take(&mut self.loaded).then_some(&self.current)
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::Queue;
    use crate::sim::tests::seed;

    /// The calendar gives events in (time, insertion) order across its span,
    /// with events scheduled for the ms being drained, and jumps idle spans.
    #[test]
    fn queue_keeps_time_then_insertion_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed());
        let mut q = Queue::default();
        let mut pushed = 0u64;
        for _ in 0..2_000 {
            let t = rng.gen_range(0..30_000);
            q.push(t, (t, pushed));
            pushed += 1;
        }
        let mut last = (0, 0);
        let mut popped = 0;
        while let Some(t) = q.next_time() {
            assert!(t >= last.0);
            q.advance_to(t);
            while let Some((at, id)) = q.pop_now() {
                assert_eq!(at, t);
                assert!(
                    (at, id) > last || popped == 0,
                    "{last:?} then {:?}",
                    (at, id)
                );
                last = (at, id);
                popped += 1;
                // Now and later: same ms (runs in this drain) or far ahead.
                if rng.gen_bool(0.1) {
                    let ahead = [0, 1, 9_000][rng.gen_range(0..3)];
                    q.push(t + ahead, (t + ahead, pushed));
                    pushed += 1;
                }
            }
        }
        assert_eq!(popped, pushed);
    }
}
