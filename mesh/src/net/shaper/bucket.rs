//! The node-wide token buckets that pace a node's upload and download.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Smallest token bucket burst, in bytes.
const MIN_BURST: f64 = 16.0 * 1024.0;
/// Smallest sleep while waiting for tokens: no timer storms at low rates.
const MIN_WAIT: Duration = Duration::from_millis(1);

/// A node-wide token bucket, in bytes.
#[derive(Debug)]
pub(super) struct Bucket {
    /// Bytes per second.
    rate: f64,
    burst: f64,
    /// Waiting callers wait for this many tokens at least (or what they
    /// want, if less): fewer, larger writes at low rates.
    quantum: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(bits_per_sec: u64, now: Instant) -> Self {
        let rate = (bits_per_sec as f64 / 8.0).max(1.0);
        let burst = (rate * 0.010).max(MIN_BURST);
        let quantum = (rate * 0.005).clamp(1500.0, burst).floor();
        Bucket {
            rate,
            burst,
            quantum,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = self.last.max(now);
    }

    /// Takes up to `want` (> 0) tokens, or says how long to wait for some.
    fn take(&mut self, want: usize, now: Instant) -> Result<usize, Duration> {
        self.refill(now);
        let target = (want as f64).min(self.quantum);
        // The tolerance absorbs rounding: a caller that slept exactly as
        // long as told gets its tokens.
        let tokens = self.tokens + 1e-6;
        if tokens >= target {
            let n = (tokens.floor() as usize).min(want);
            self.tokens -= n as f64;
            Ok(n)
        } else {
            let wait = Duration::from_secs_f64((target - self.tokens) / self.rate);
            Err(wait.max(MIN_WAIT))
        }
    }

    /// Gives back tokens taken and not used.
    fn refund(&mut self, n: usize) {
        self.tokens = (self.tokens + n as f64).min(self.burst);
    }
}

/// Takes from an optional shared bucket; `Ok(want)` when there is none.
pub(super) fn take(bucket: &Option<Mutex<Bucket>>, want: usize) -> Result<usize, Duration> {
    match bucket {
        None => Ok(want),
        Some(b) => lock(b).take(want, Instant::now()),
    }
}

pub(super) fn refund(bucket: &Option<Mutex<Bucket>>, n: usize) {
    if let (Some(b), true) = (bucket, n > 0) {
        lock(b).refund(n);
    }
}

fn lock(b: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    // A panic elsewhere cannot leave a bucket inconsistent: keep going.
    b.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::Bucket;

    #[test]
    fn bucket_grants_burst_then_waits() {
        let now = Instant::now();
        let mut b = Bucket::new(8_000_000, now); // 1 MB/s: burst 16 KiB
        assert_eq!(b.take(100_000, now), Ok(16 * 1024));
        let wait = b.take(100_000, now).unwrap_err();
        // Waits for a quantum (5 ms of rate), not for one byte.
        assert_eq!(wait, Duration::from_millis(5));
        assert_eq!(b.take(100_000, now + wait), Ok(5000));
        b.refund(1000);
        assert_eq!(b.take(100, now + wait), Ok(100));
    }
}
