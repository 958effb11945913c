//! The viewer-side measurement for systems that are not the Shoal engine.
//!
//! [`Meter`] keeps exactly the counters a Shoal [`Engine`] keeps for its
//! viewer, by the same rules, so [`Summary::new`] compares like with like:
//!
//! - **Payload**: the first copy of a piece counts as `payload_from_infra` or
//!   `payload_from_peers` (by who sent it) and records `lag_ms = now −
//!   produced_at`; a copy of a piece already held counts as
//!   `payload_duplicate` (as `Engine::accept`).
//! - **Start-up** (`playback.rs`): the viewer starts at a segment start.
//!   When every piece from there to the segment's `LAST` piece is held,
//!   start-up is over: `startup_ms = now − joined_at`, and the playback delay
//!   is fixed at `delay = max(playout_delay, now − produced_at(start))`.
//! - **Continuity**: from then on piece `s` is due at `produced_at(s) +
//!   delay` and on time if held then; each piece is judged once, in order.
//!   A piece never received is still due: its produced-at is estimated as the
//!   engine's `produced_estimate` does — no later than the next held piece's,
//!   and, past the newest piece held, extrapolated from the piece rate seen
//!   (the engine's `extrapolate_edge`, one piece of slack), so a viewer that
//!   stops receiving keeps accruing due pieces instead of freezing.
//!
//! **Where the start is** — the one departure: the engine starts at the
//! *second newest* segment start it knows of when it first hears of pieces
//! (from buffer maps, before holding any). A push system (gossipsub) only
//! learns of pieces as they arrive, so by default the meter starts at the
//! *first `FIRST`-flagged piece received*, which is what such a viewer can
//! do. A system that can look back (client-server reads `/v1/stream` and
//! walks back) picks the engine's start itself and calls
//! [`Meter::start_at`] before passing any piece.
//!
//! The meter reads no clock: `now` (ms, Unix epoch like `produced_at`) is
//! passed in. Memory is bounded: held pieces are kept for the engine's
//! window (30 s of produced-at) and extrapolated ones for at most
//! `4 × wire::MAX_LIST`.
//!
//! [`Engine`]: shoal_mesh::proto::Engine
//! [`Summary::new`]: shoal_mesh::proto::Summary::new

use std::collections::BTreeMap;

use shoal_mesh::proto::{wire, PieceHeader, Stats};

/// The engine's default playout delay, ms.
pub const PLAYOUT_DELAY_MS: u64 = 3_000;
/// Buffer kept after a slow start (the engine's `fallback_margin_ms`).
pub const FALLBACK_MARGIN_MS: u64 = 1_000;
/// The engine's default window, ms of produced-at.
const WINDOW_MS: u64 = 30_000;
/// Most pieces judged per call (the engine's bound).
const JUDGE_MAX: usize = 100_000;

/// What the meter remembers of a held piece.
#[derive(Clone, Copy, Debug)]
struct Held {
    produced_at: u64,
    first: bool,
    last: bool,
}

/// Viewer-side counters with the Shoal engine's definitions.
#[derive(Debug)]
pub struct Meter {
    joined_at: u64,
    playout_delay: u64,
    /// Pieces held, by seq.
    held: BTreeMap<u64, Held>,
    /// Produced-at stand-ins of pieces not held, extrapolated from the rate.
    heard: BTreeMap<u64, u64>,
    newest_known: Option<u64>,
    /// First piece of the segment playback starts at.
    start: Option<u64>,
    /// Once the first segment is complete: (delay, next piece to judge).
    started: Option<(u64, u64)>,
    stats: Stats,
}

impl Meter {
    /// A viewer that joined at `joined_at_ms`, playing `playout_delay_ms`
    /// behind the broadcaster at least ([`PLAYOUT_DELAY_MS`] like the engine).
    pub fn new(joined_at_ms: u64, playout_delay_ms: u64) -> Self {
        Meter {
            joined_at: joined_at_ms,
            playout_delay: playout_delay_ms,
            held: BTreeMap::new(),
            heard: BTreeMap::new(),
            newest_known: None,
            start: None,
            started: None,
            stats: Stats::default(),
        }
    }

    /// Sets where playback starts (a `FIRST` piece's seq). Only before a
    /// start was chosen; later calls are ignored.
    pub fn start_at(&mut self, seq: u64) {
        if self.start.is_none() {
            self.start = Some(seq);
        }
    }

    /// Where playback starts, once known.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// The playback delay, once started.
    pub fn delay(&self) -> Option<u64> {
        self.started.map(|(d, _)| d)
    }

    /// Whether this piece is held.
    pub fn holds(&self, seq: u64) -> bool {
        self.held.contains_key(&seq)
    }

    /// A verified copy of a piece arrived; `from_infra`: sent by a seeder or
    /// reflector. Returns whether it was the first copy.
    pub fn on_piece(&mut self, header: &PieceHeader, from_infra: bool, now: u64) -> bool {
        // Deadlines that passed before this arrival are judged first, as the
        // engine's timer would have judged them.
        self.judge(now);
        let len = u64::from(header.len);
        let held = self.held.contains_key(&header.seq);
        let lag = now.saturating_sub(header.produced_at);
        if !self.stats.count_receipt(len, held, from_infra, lag) {
            return false;
        }
        self.store(header, now);
        true
    }

    /// Duplicate payload seen below the application (e.g. copies gossipsub
    /// drops before delivering), counted like [`Meter::on_piece`] would.
    pub fn on_duplicate(&mut self, payload_bytes: u64) {
        self.stats.payload_duplicate += payload_bytes;
    }

    /// A piece that failed verification.
    pub fn on_bad_piece(&mut self) {
        self.stats.bad_pieces += 1;
    }

    /// Judges every piece whose deadline has passed by `now`.
    pub fn tick(&mut self, now: u64) {
        self.judge(now);
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats.clone()
    }

    fn store(&mut self, h: &PieceHeader, now: u64) {
        let seq = h.seq;
        self.heard.remove(&seq);
        if self.start.is_none() && h.is_first() {
            self.start = Some(seq);
        }
        self.newest_known = self.newest_known.max(Some(seq));
        self.stats.newest_seq = self.stats.newest_seq.max(Some(seq));
        self.held.insert(
            seq,
            Held {
                produced_at: h.produced_at,
                first: h.is_first(),
                last: h.is_last(),
            },
        );
        self.check_startup(now);
        self.prune();
        self.judge(now);
    }

    /// Start-up ends when the pieces from a segment start to a `LAST` are
    /// held. A hole in the first segment (a gossip repair that never came)
    /// does not hold the viewer forever: any later complete segment will do,
    /// as a player skips a broken first segment.
    fn check_startup(&mut self, now: u64) {
        let (Some(start), None) = (self.start, self.started) else {
            return;
        };
        let complete = |from: u64| {
            let mut seq = from;
            loop {
                match self.held.get(&seq) {
                    Some(p) if p.last => return true,
                    Some(_) => seq += 1,
                    None => return false,
                }
            }
        };
        let Some((begin, produced)) = self
            .held
            .range(start..)
            .filter(|(&seq, p)| (seq == start || p.first) && complete(seq))
            .map(|(&seq, p)| (seq, p.produced_at))
            .next()
        else {
            return;
        };
        // As the engine: a slow start keeps a fallback margin of buffer.
        let elapsed = now.saturating_sub(produced);
        let delay = self.playout_delay.max(elapsed + FALLBACK_MARGIN_MS);
        self.start = Some(begin);
        self.started = Some((delay, begin));
        self.stats.startup_ms = Some(now.saturating_sub(self.joined_at));
    }

    /// Drops what fell out of the window (the engine's `prune`).
    fn prune(&mut self) {
        let Some(newest_at) = self.held.values().next_back().map(|p| p.produced_at) else {
            return;
        };
        while let Some((&seq, oldest)) = self.held.iter().next() {
            if oldest.produced_at + WINDOW_MS >= newest_at {
                break;
            }
            self.held.remove(&seq);
        }
        if let Some(&low) = self.held.keys().next() {
            self.heard.retain(|s, _| *s >= low);
        }
    }

    /// The engine's `produced_estimate`: own stamp when held, else no later
    /// than the next held piece's, else the extrapolated stamp.
    fn produced_estimate(&self, seq: u64) -> Option<u64> {
        if let Some(p) = self.held.get(&seq) {
            return Some(p.produced_at);
        }
        let next_held = self.held.range(seq..).next().map(|(_, p)| p.produced_at);
        match (self.heard.get(&seq).copied(), next_held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The engine's `extrapolate_edge`: pieces the broadcaster must have cut
    /// by now, from the rate seen, count as known.
    fn extrapolate_edge(&mut self, now: u64) {
        let (Some((&s0, p0)), Some((&s1, p1))) =
            (self.held.iter().next(), self.held.iter().next_back())
        else {
            return;
        };
        let span = p1.produced_at.saturating_sub(p0.produced_at);
        if s1 <= s0 || span == 0 {
            return;
        }
        let ms_per_piece = span as f64 / (s1 - s0) as f64;
        let behind = now.saturating_sub(p1.produced_at) as f64;
        let expected = (behind / ms_per_piece).floor() as u64;
        let edge = s1 + expected.saturating_sub(1).min(wire::MAX_LIST as u64);
        let p1_at = p1.produced_at;
        for seq in self.newest_known.unwrap_or(s1).max(s1) + 1..=edge {
            let produced = p1_at + ((seq - s1) as f64 * ms_per_piece) as u64;
            self.heard.entry(seq).or_insert(produced);
        }
        while self.heard.len() > 4 * wire::MAX_LIST {
            self.heard.pop_first();
        }
        self.newest_known = self.newest_known.max(Some(edge));
    }

    /// The engine's `playback_check`.
    fn judge(&mut self, now: u64) {
        if self.start.is_some() {
            self.extrapolate_edge(now);
        }
        let Some((delay, mut next)) = self.started else {
            return;
        };
        for _ in 0..JUDGE_MAX {
            if self.newest_known.is_none_or(|n| next > n) {
                break;
            }
            let Some(produced) = self.produced_estimate(next) else {
                break;
            };
            if now < produced + delay {
                break;
            }
            self.stats.pieces_due += 1;
            if self.held.contains_key(&next) {
                self.stats.pieces_on_time += 1;
            }
            next += 1;
        }
        self.started = Some((delay, next));
    }
}

#[cfg(test)]
mod tests {
    use shoal_mesh::proto::{piece::flags, StreamId};

    use super::*;

    const LEN: u32 = 1_000;
    /// Pieces every 250 ms, four to a segment.
    const PERIOD: u64 = 250;
    const T0: u64 = 1_000_000;

    fn header(seq: u64) -> PieceHeader {
        let mut f = 0;
        match seq % 4 {
            0 => f |= flags::FIRST,
            3 => f |= flags::LAST,
            _ => {}
        }
        PieceHeader {
            stream: StreamId([7; 32]),
            seq,
            segment: seq / 4,
            flags: f,
            produced_at: T0 + seq * PERIOD,
            duration_ms: if seq % 4 == 3 { 1_000 } else { 0 },
            len: LEN,
            hash: [0; 32],
        }
    }

    fn produced(seq: u64) -> u64 {
        T0 + seq * PERIOD
    }

    #[test]
    fn starts_at_first_segment_start_and_plays_on_time() {
        let joined = produced(2) - 10;
        let mut m = Meter::new(joined, PLAYOUT_DELAY_MS);
        // Pieces 2 and 3 (mid-segment) come first: no start yet.
        for seq in 2..4 {
            m.on_piece(&header(seq), true, produced(seq) + 50);
        }
        assert_eq!(m.start(), None);
        for seq in 4..40 {
            m.on_piece(&header(seq), seq % 2 == 0, produced(seq) + 50);
            m.tick(produced(seq) + 60);
        }
        assert_eq!(m.start(), Some(4));
        let s = m.stats();
        // Segment 4..=7 complete when piece 7 arrived.
        assert_eq!(s.startup_ms, Some(produced(7) + 50 - joined));
        assert_eq!(m.delay(), Some(PLAYOUT_DELAY_MS));
        // Due by the last tick: produced + 3 s <= produced(39) + 60.
        let now = produced(39) + 60;
        let due = (4..40).filter(|&q| produced(q) + 3_000 <= now).count() as u64;
        assert_eq!(s.pieces_due, due);
        assert_eq!(s.pieces_on_time, due);
        assert_eq!(s.continuity(), Some(1.0));
        assert_eq!(s.payload_received(), 38 * u64::from(LEN));
        assert_eq!(s.payload_from_infra, 20 * u64::from(LEN));
        assert_eq!(s.lag_ms.quantile(1.0), Some(50));
        assert_eq!(s.newest_seq, Some(39));
    }

    #[test]
    fn a_hole_in_the_first_segment_does_not_hold_start_up_forever() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        // Segment 0 misses piece 1 for good; segment 1 arrives whole.
        for seq in [0, 2, 3, 4, 5, 6, 7] {
            m.on_piece(&header(seq), false, produced(seq) + 50);
        }
        assert_eq!(m.start(), Some(4));
        assert!(m.stats().startup_ms.is_some());
    }

    #[test]
    fn delay_grows_with_a_slow_first_segment() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        // The start segment completes 4 s after its first piece was cut.
        for seq in 0..4 {
            m.on_piece(&header(seq), true, produced(0) + 4_000);
        }
        // Elapsed plus the fallback margin of buffer, as the engine.
        assert_eq!(m.delay(), Some(4_000 + FALLBACK_MARGIN_MS));
        assert_eq!(m.stats().startup_ms, Some(4_000));
    }

    #[test]
    fn late_and_missing_pieces_count_as_due_not_on_time() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        for seq in 0..20 {
            let at = produced(seq) + 20;
            match seq {
                // Never arrives: due no later than piece 11's deadline.
                10 => {}
                // Arrives 1 s after its deadline.
                12 => {}
                _ => {
                    m.on_piece(&header(seq), false, at);
                }
            }
            m.tick(at);
        }
        let deadline12 = produced(12) + 3_000;
        m.on_piece(&header(12), false, deadline12 + 1_000);
        m.tick(produced(19) + 3_000);
        let s = m.stats();
        assert_eq!(s.pieces_due, 20);
        assert_eq!(s.pieces_on_time, 18);
        // The late piece still counts as payload, with its lag.
        assert_eq!(s.payload_from_peers, 19 * u64::from(LEN));
        assert_eq!(s.lag_ms.max(), 4_000);
    }

    #[test]
    fn pieces_past_the_newest_are_due_when_the_feed_stops() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        for seq in 0..8 {
            m.on_piece(&header(seq), true, produced(seq) + 10);
        }
        // Nothing more arrives; the broadcaster kept cutting every 250 ms.
        let mut now = produced(8);
        while now < produced(20) + 3_000 {
            m.tick(now);
            now += 100;
        }
        let s = m.stats();
        assert_eq!(s.pieces_on_time, 8);
        // Pieces 8.. are due from the extrapolated edge (one piece of slack).
        assert!(s.pieces_due >= 18, "due {}", s.pieces_due);
        assert!(s.continuity().unwrap() < 0.5);
    }

    #[test]
    fn duplicates_count_once_and_do_not_change_playback() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        for seq in 0..8 {
            assert!(m.on_piece(&header(seq), seq < 4, produced(seq)));
            assert!(!m.on_piece(&header(seq), false, produced(seq) + 5));
        }
        m.on_duplicate(500);
        let s = m.stats();
        assert_eq!(s.payload_received(), 8 * u64::from(LEN));
        assert_eq!(s.payload_from_infra, 4 * u64::from(LEN));
        assert_eq!(s.payload_duplicate, 8 * u64::from(LEN) + 500);
        assert_eq!(s.duplicate(), Some(8_500.0 / 16_500.0));
        assert_eq!(s.lag_ms.count(), 8);
    }

    #[test]
    fn no_startup_until_the_segment_is_whole() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        m.on_piece(&header(4), true, produced(4));
        m.on_piece(&header(5), true, produced(5));
        m.on_piece(&header(7), true, produced(7));
        m.tick(produced(7) + 10_000);
        let s = m.stats();
        assert_eq!(s.startup_ms, None);
        assert_eq!(s.pieces_due, 0);
        m.on_piece(&header(6), true, produced(7) + 10_000);
        assert_eq!(
            m.delay(),
            Some(10_000 + produced(7) - produced(4) + FALLBACK_MARGIN_MS)
        );
        assert!(m.stats().startup_ms.is_some());
    }

    #[test]
    fn an_explicit_start_overrides_the_first_flag() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        m.start_at(0);
        m.on_piece(&header(4), true, produced(4));
        assert_eq!(m.start(), Some(0));
        for seq in 0..4 {
            m.on_piece(&header(seq), true, produced(4) + 10);
        }
        assert_eq!(m.delay(), Some(PLAYOUT_DELAY_MS));
        m.tick(produced(4) + 3_000);
        // Pieces 0..=4 are due by then, all held.
        assert_eq!(m.stats().pieces_due, 5);
        assert_eq!(m.stats().pieces_on_time, 5);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut m = Meter::new(T0, PLAYOUT_DELAY_MS);
        for seq in 0..2_000 {
            m.on_piece(&header(seq), true, produced(seq) + 10);
        }
        // 30 s window at 4 pieces/s.
        assert!(m.held.len() <= 122, "{}", m.held.len());
        m.tick(produced(1_999) + 3_600_000);
        assert!(m.heard.len() <= 4 * wire::MAX_LIST);
    }
}
