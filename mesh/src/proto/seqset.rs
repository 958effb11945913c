//! A set of piece numbers near the live edge: a sliding bitmap.
//!
//! What a neighbour holds spans a window of a few hundred pieces, so a bit
//! per seq from a moving base is both smaller and faster than a tree. The
//! span is bounded: a seq too far ahead moves the base up (forgetting the
//! oldest), so nothing a peer announces can make the set grow past
//! [`MAX_SPAN`] bits.

use std::collections::VecDeque;

/// Most seqs a set spans, in bits (the buffer map's bound, 32,768).
pub(crate) const MAX_SPAN: u64 = (super::wire::MAX_BITMAP_BYTES * 8) as u64;

/// Words kept inline: 512 seqs, a minute of a 2 Mbit/s stream in 32 KiB
/// pieces, more than a neighbour's window usually spans.
const INLINE_WORDS: usize = 8;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SeqSet {
    /// Seq of bit 0 of `words[0]`; a multiple of 64.
    base: u64,
    words: Words,
}

/// The bitmap's words, oldest first: a ring inside the set while they fit,
/// so that asking every neighbour whether it holds a piece (the scheduler
/// and each stored piece do) reads the neighbour's own record and not a
/// buffer elsewhere in memory; a deque beyond that.
#[derive(Clone, Debug)]
enum Words {
    Inline {
        ring: [u64; INLINE_WORDS],
        /// Index in `ring` of the first word.
        head: u8,
        len: u8,
    },
    Heap(VecDeque<u64>),
}

impl Default for Words {
    fn default() -> Self {
        Words::Inline {
            ring: [0; INLINE_WORDS],
            head: 0,
            len: 0,
        }
    }
}

impl PartialEq for Words {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && (0..self.len()).all(|i| self.get(i) == other.get(i))
    }
}

impl Eq for Words {}

impl Words {
    fn len(&self) -> usize {
        match self {
            Words::Inline { len, .. } => usize::from(*len),
            Words::Heap(d) => d.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(&self, i: usize) -> Option<u64> {
        match self {
            Words::Inline { ring, head, len } => {
                (i < usize::from(*len)).then(|| ring[(usize::from(*head) + i) % INLINE_WORDS])
            }
            Words::Heap(d) => d.get(i).copied(),
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut u64> {
        match self {
            Words::Inline { ring, head, len } => {
                if i < usize::from(*len) {
                    Some(&mut ring[(usize::from(*head) + i) % INLINE_WORDS])
                } else {
                    None
                }
            }
            Words::Heap(d) => d.get_mut(i),
        }
    }

    /// Takes the words out as a deque (leaving none).
    fn take_heap(&mut self) -> VecDeque<u64> {
        match std::mem::take(self) {
            Words::Heap(d) => d,
            inline => (0..inline.len()).filter_map(|i| inline.get(i)).collect(),
        }
    }

    fn push_front(&mut self, w: u64) {
        match self {
            Words::Inline { ring, head, len } if usize::from(*len) < INLINE_WORDS => {
                *head = ((usize::from(*head) + INLINE_WORDS - 1) % INLINE_WORDS) as u8;
                ring[usize::from(*head)] = w;
                *len += 1;
            }
            Words::Heap(d) => d.push_front(w),
            Words::Inline { .. } => {
                let mut d = self.take_heap();
                d.push_front(w);
                *self = Words::Heap(d);
            }
        }
    }

    fn pop_front(&mut self) -> Option<u64> {
        let w = match self {
            Words::Inline { ring, head, len } => {
                if *len == 0 {
                    return None;
                }
                let w = ring[usize::from(*head)];
                *head = ((usize::from(*head) + 1) % INLINE_WORDS) as u8;
                *len -= 1;
                Some(w)
            }
            Words::Heap(d) => d.pop_front(),
        };
        if self.is_empty() {
            // Back inline once empty.
            *self = Words::default();
        }
        w
    }

    /// Appends zero words up to `n` words.
    fn grow_to(&mut self, n: usize) {
        match self {
            Words::Inline { ring, head, len } if n <= INLINE_WORDS => {
                while usize::from(*len) < n {
                    ring[(usize::from(*head) + usize::from(*len)) % INLINE_WORDS] = 0;
                    *len += 1;
                }
            }
            Words::Heap(d) => {
                if d.len() < n {
                    d.resize(n, 0);
                }
            }
            Words::Inline { .. } => {
                let mut d = self.take_heap();
                d.resize(n, 0);
                *self = Words::Heap(d);
            }
        }
    }

    #[cfg(test)]
    fn count_ones(&self) -> usize {
        (0..self.len())
            .filter_map(|i| self.get(i))
            .map(|w| w.count_ones() as usize)
            .sum()
    }
}

impl SeqSet {
    pub(crate) fn contains(&self, seq: u64) -> bool {
        let Some(i) = seq.checked_sub(self.base) else {
            return false;
        };
        usize::try_from(i / 64)
            .ok()
            .and_then(|w| self.words.get(w))
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    pub(crate) fn insert(&mut self, seq: u64) {
        if seq > u64::MAX - 2 * MAX_SPAN {
            return; // no stream gets there; keeps the arithmetic in range
        }
        if self.words.is_empty() {
            self.base = seq - seq % 64;
        }
        if seq < self.base {
            // Older than what we track: grow down only within the span.
            let new_base = seq - seq % 64;
            let top = self.base + 64 * self.words.len() as u64;
            if top - new_base > MAX_SPAN {
                return;
            }
            for _ in 0..(self.base - new_base) / 64 {
                self.words.push_front(0);
            }
            self.base = new_base;
        }
        let top = seq - seq % 64 + 64;
        if top - self.base > MAX_SPAN {
            self.retain_from(top - MAX_SPAN);
            if self.words.is_empty() {
                self.base = top - 64;
            }
        }
        let i = seq - self.base;
        let w = (i / 64) as usize;
        self.words.grow_to(w + 1);
        if let Some(word) = self.words.get_mut(w) {
            *word |= 1 << (i % 64);
        }
    }

    pub(crate) fn remove(&mut self, seq: u64) {
        let Some(i) = seq.checked_sub(self.base) else {
            return;
        };
        if let Some(w) = usize::try_from(i / 64)
            .ok()
            .and_then(|w| self.words.get_mut(w))
        {
            *w &= !(1 << (i % 64));
        }
    }

    /// Forgets every seq below `low`.
    pub(crate) fn retain_from(&mut self, low: u64) {
        while self.base + 64 <= low {
            if self.words.pop_front().is_none() {
                break;
            }
            self.base += 64;
        }
        if let Some(first) = self.words.get_mut(0) {
            if low > self.base {
                *first &= !((1u64 << (low - self.base)) - 1);
            }
        }
        if self.words.is_empty() {
            self.base = 0;
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.words.count_ones()
    }
}

impl Extend<u64> for SeqSet {
    fn extend<I: IntoIterator<Item = u64>>(&mut self, iter: I) {
        for s in iter {
            self.insert(s);
        }
    }
}

impl FromIterator<u64> for SeqSet {
    fn from_iter<I: IntoIterator<Item = u64>>(iter: I) -> Self {
        let mut s = SeqSet::default();
        s.extend(iter);
        s
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    /// Behaves as a `BTreeSet` restricted to the last `MAX_SPAN` seqs.
    #[test]
    fn matches_a_tree_within_the_span() {
        // Spans that fit inline, that do not, and that move between both.
        for spread in [300, 700, 2_000] {
            matches_a_tree(spread);
        }
    }

    fn matches_a_tree(spread: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut set = SeqSet::default();
        let mut tree = BTreeSet::new();
        let mut edge = 3_000u64;
        for _ in 0..20_000 {
            edge += rng.gen_range(0..3);
            let s = edge - rng.gen_range(0..spread);
            match rng.gen_range(0..10) {
                0 => {
                    set.remove(s);
                    tree.remove(&s);
                }
                1 => {
                    let low = edge - spread + 50;
                    set.retain_from(low);
                    tree = tree.split_off(&low);
                }
                _ => {
                    set.insert(s);
                    tree.insert(s);
                }
            }
            let low = tree.iter().next().copied().unwrap_or(0);
            for q in low.saturating_sub(70)..edge + 70 {
                assert_eq!(set.contains(q), tree.contains(&q), "seq {q}");
            }
        }
        assert_eq!(set.len(), tree.len());
    }

    #[test]
    fn a_far_seq_moves_the_base_and_stays_bounded() {
        let mut set: SeqSet = (100..200).collect();
        set.insert(u64::MAX / 2);
        assert!(set.contains(u64::MAX / 2));
        set.insert(u64::MAX);
        assert!(!set.contains(u64::MAX));
        assert!(!set.contains(150));
        assert!(set.words.len() as u64 * 64 <= MAX_SPAN);
        // Far below the span: ignored.
        set.insert(3);
        assert!(!set.contains(3));
        assert!(set.words.len() as u64 * 64 <= MAX_SPAN);
        set.insert(0);
        let mut low = SeqSet::default();
        low.insert(0);
        assert!(low.contains(0) && !low.contains(1));
    }
}
