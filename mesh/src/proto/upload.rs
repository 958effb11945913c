//! The viewer's own upload limit, as a token bucket over payload bytes.

use super::piece::MAX_PIECE_BYTES;

/// Token bucket in bytes. `rate: None` never limits.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: Option<u64>,
    burst: f64,
    tokens: f64,
    last: u64,
}

impl TokenBucket {
    /// Burst is a quarter second of rate, but at least two pieces, so a
    /// whole piece can always go out eventually.
    pub(crate) fn new(rate: Option<u64>, now: u64) -> Self {
        let burst = rate.map_or(0.0, |r| (r as f64 / 4.0).max(2.0 * MAX_PIECE_BYTES as f64));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: u64) {
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_sub(self.last) as f64;
            self.tokens = (self.tokens + elapsed * rate as f64 / 1000.0).min(self.burst);
        }
        self.last = self.last.max(now);
    }

    /// Takes `bytes` if the budget allows now.
    pub(crate) fn take(&mut self, bytes: u64, now: u64) -> bool {
        if self.rate.is_none() {
            return true;
        }
        self.refill(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }

    /// How long sending `bytes` would take from `now`, in ms (0 if unlimited).
    pub(crate) fn drain_ms(&self, bytes: u64, now: u64) -> u64 {
        match self.rate {
            None => 0,
            Some(0) => u64::MAX,
            Some(rate) => {
                let elapsed = now.saturating_sub(self.last) as f64;
                let tokens = (self.tokens + elapsed * rate as f64 / 1000.0).min(self.burst);
                let short = (bytes as f64 - tokens).max(0.0);
                (short * 1000.0 / rate as f64).ceil() as u64
            }
        }
    }

    /// Earliest time `bytes` can be taken.
    pub(crate) fn ready_at(&self, bytes: u64) -> u64 {
        match self.rate {
            None => self.last,
            Some(0) => u64::MAX,
            Some(rate) => {
                let short = (bytes as f64 - self.tokens).max(0.0);
                self.last + (short * 1000.0 / rate as f64).ceil() as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_to_rate() {
        let mut b = TokenBucket::new(Some(1_000_000), 0);
        let mut sent = 0u64;
        for ms in 0..=10_000u64 {
            while b.take(10_000, ms) {
                sent += 10_000;
            }
        }
        // 10 s at 1 MB/s plus the initial burst (250 kB).
        assert!((10_000_000..=10_260_000).contains(&sent), "{sent}");
    }

    #[test]
    fn ready_at_is_when_take_succeeds() {
        let mut b = TokenBucket::new(Some(100_000), 0);
        while b.take(65_536, 0) {}
        let t = b.ready_at(65_536);
        assert!(t > 0);
        assert!(!b.take(65_536, t - 1));
        assert!(b.take(65_536, t));
    }

    #[test]
    fn unlimited_always_takes() {
        let mut b = TokenBucket::new(None, 0);
        assert!(b.take(u64::MAX, 0));
    }
}
