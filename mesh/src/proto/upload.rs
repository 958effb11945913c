//! The viewer's own upload limit, as a token bucket over payload bytes.
//!
//! The bucket may go into debt by one piece: a piece is sent whenever the
//! balance is not negative, so a piece larger than the burst still goes out,
//! and the burst itself can stay small (50 ms of rate). A small burst keeps
//! the link's queue short, so haves, requests and pings sent on the same
//! stream are not stuck behind a second of payload.

/// Token bucket in bytes. `rate: None` never limits.
#[derive(Clone, Debug)]
pub(crate) struct TokenBucket {
    rate: Option<u64>,
    burst: f64,
    tokens: f64,
    last: u64,
}

impl TokenBucket {
    pub(crate) fn new(rate: Option<u64>, now: u64) -> Self {
        let burst = rate.map_or(0.0, |r| r as f64 / 20.0);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn balance(&self, now: u64) -> f64 {
        match self.rate {
            Some(rate) => {
                let elapsed = now.saturating_sub(self.last) as f64;
                (self.tokens + elapsed * rate as f64 / 1000.0).min(self.burst)
            }
            None => f64::MAX,
        }
    }

    /// Takes `bytes` if the balance allows now (it may go negative).
    pub(crate) fn take(&mut self, bytes: u64, now: u64) -> bool {
        if self.rate.is_none() {
            return true;
        }
        let balance = self.balance(now);
        self.last = self.last.max(now);
        if balance >= 0.0 {
            self.tokens = balance - bytes as f64;
            true
        } else {
            self.tokens = balance;
            false
        }
    }

    /// How long sending `bytes` more would take from `now`, in ms (0 if
    /// unlimited): the debt to pay off plus the bytes themselves.
    pub(crate) fn drain_ms(&self, bytes: u64, now: u64) -> u64 {
        match self.rate {
            None => 0,
            Some(0) => u64::MAX,
            Some(rate) => {
                let short = (bytes as f64 - self.balance(now)).max(0.0);
                (short * 1000.0 / rate as f64).ceil() as u64
            }
        }
    }

    /// Earliest time something can be taken again.
    pub(crate) fn ready_at(&self, _bytes: u64) -> u64 {
        match self.rate {
            None => self.last,
            Some(0) => u64::MAX,
            Some(rate) => {
                let debt = (-self.tokens).max(0.0);
                self.last + (debt * 1000.0 / rate as f64).ceil() as u64
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
        // 10 s at 1 MB/s, plus the burst (50 kB) and one piece of debt.
        assert!((10_000_000..=10_070_000).contains(&sent), "{sent}");
    }

    #[test]
    fn a_piece_larger_than_the_burst_still_goes() {
        let mut b = TokenBucket::new(Some(100_000), 0);
        assert!(b.take(65_536, 0));
        assert!(!b.take(65_536, 0));
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
