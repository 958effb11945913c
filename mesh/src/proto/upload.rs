//! The viewer's own upload limit, as a token bucket over payload bytes.
//!
//! The bucket may go into debt by one piece: a piece is sent whenever the
//! balance is not negative, so a piece larger than the burst still goes out,
//! and the burst itself can stay small (50 ms of rate). A small burst keeps
//! the link's queue short, so haves, requests and pings sent on the same
//! stream are not stuck behind a second of payload.

/// Debt that bytes sent outside the queue ([`TokenBucket::charge`]) may
/// leave, in ms of rate: enough to refuse every request (whose backlog may
/// not pass 250 ms) while they exceed the rate, little enough that the
/// queue resumes within a second once they no longer do.
const MAX_CHARGED_DEBT_MS: f64 = 1_000.0;

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

    /// Spends `bytes` that went out whatever the balance (a feed, which is
    /// never held back): the debt they leave delays what is queued and
    /// refuses requests sooner ([`Self::drain_ms`]). It never takes the
    /// balance below [`MAX_CHARGED_DEBT_MS`] of rate, nor raises it.
    pub(crate) fn charge(&mut self, bytes: u64, now: u64) {
        let Some(rate) = self.rate else {
            return;
        };
        let balance = self.balance(now);
        self.last = self.last.max(now);
        let floor = -(rate as f64) * MAX_CHARGED_DEBT_MS / 1000.0;
        self.tokens = (balance - bytes as f64).max(floor).min(balance);
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
    fn charged_bytes_delay_what_is_taken_and_their_debt_is_bounded() {
        let mut b = TokenBucket::new(Some(100_000), 0);
        b.charge(50_000, 0);
        assert!(!b.take(1, 0), "the burst is spent");
        // 45 kB of debt: 450 ms before anything more goes.
        assert_eq!(b.drain_ms(0, 0), 450);
        assert_eq!(b.drain_ms(10_000, 0), 550);
        // A flood leaves at most a second of debt.
        b.charge(10_000_000, 0);
        assert_eq!(b.drain_ms(0, 0), 1_000);
        assert!(b.take(1, 1_000));
        // A charge never raises a balance already below the bound.
        let mut deep = TokenBucket::new(Some(10_000), 0);
        assert!(deep.take(65_536, 0));
        let before = deep.drain_ms(0, 0);
        deep.charge(1, 0);
        assert_eq!(deep.drain_ms(0, 0), before);
        let mut free = TokenBucket::new(None, 0);
        free.charge(u64::MAX, 0);
        assert!(free.take(1, 0));
    }

    #[test]
    fn unlimited_always_takes() {
        let mut b = TokenBucket::new(None, 0);
        assert!(b.take(u64::MAX, 0));
    }
}
