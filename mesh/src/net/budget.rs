//! The coordinator's budget for one stream on one node, shared by the
//! node's two ways of uploading it: the mesh and its HTTP origin.
//!
//! The engine holds its mesh uploads to the budget itself (its upload
//! queue drains under it); every piece it sends is also charged here. The
//! HTTP origin asks here before each fallback answer and is refused while
//! the balance is spent, so the two together stay within the budget: HTTP
//! gets what the mesh leaves.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Instant,
};

use crate::proto::upload::TokenBucket;

/// A shared token bucket over payload bytes; unlimited until a budget is
/// set. Clones share it.
#[derive(Clone, Debug)]
pub struct BudgetGate {
    inner: Arc<Mutex<Gate>>,
}

#[derive(Debug)]
struct Gate {
    bucket: TokenBucket,
    rate: Option<u64>,
    epoch: Instant,
}

impl Default for BudgetGate {
    fn default() -> Self {
        BudgetGate {
            inner: Arc::new(Mutex::new(Gate {
                bucket: TokenBucket::new(None, 0),
                rate: None,
                epoch: Instant::now(),
            })),
        }
    }
}

impl BudgetGate {
    fn with<T>(&self, f: impl FnOnce(&mut Gate, u64) -> T) -> T {
        let mut gate = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let now = gate.epoch.elapsed().as_millis() as u64;
        f(&mut gate, now)
    }

    /// The budget in bytes/s (`None`: no budget, nothing is refused).
    pub(crate) fn set_rate(&self, rate: Option<u64>) {
        self.with(|gate, now| {
            if gate.rate != rate {
                gate.rate = rate;
                gate.bucket = TokenBucket::new(rate, now);
            }
        });
    }

    /// Payload that left over the mesh (already held to the budget there).
    pub(crate) fn charge(&self, bytes: u64) {
        self.with(|gate, now| gate.bucket.charge(bytes, now));
    }

    /// Whether `bytes` of payload may go out over HTTP now; if so they are
    /// taken.
    pub fn try_spend(&self, bytes: u64) -> bool {
        self.with(|gate, now| gate.bucket.take(bytes, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_budget_nothing_is_refused() {
        let gate = BudgetGate::default();
        gate.charge(10_000_000);
        assert!((0..100).all(|_| gate.try_spend(1_000_000)));
    }

    #[test]
    fn what_the_mesh_spent_is_not_left_for_http() {
        let gate = BudgetGate::default();
        gate.set_rate(Some(100_000));
        // The mesh sent a second's worth at once: HTTP waits.
        gate.charge(100_000);
        assert!(!gate.try_spend(1_000));
        // Lifting the budget lets HTTP through again.
        gate.set_rate(None);
        assert!(gate.try_spend(1_000));
    }

    #[test]
    fn http_alone_is_held_to_the_budget() {
        let gate = BudgetGate::default();
        gate.set_rate(Some(100_000));
        // Within one instant: the burst (50 ms of rate) and one piece of
        // debt, no more.
        let served = (0..100).filter(|_| gate.try_spend(10_000)).count();
        assert!(served <= 2, "{served} pieces of 10 kB served at once");
        assert!(served >= 1);
    }
}
