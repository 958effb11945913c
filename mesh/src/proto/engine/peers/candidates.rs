//! Peers we may connect to, and when we may try them again.

use crate::proto::wire::PeerInfo;

/// A dial or a session still greeting after this long is given up: a peer
/// that cannot finish a handshake in ten seconds is of no use to a live
/// stream.
pub(crate) const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Failures back off up to this.
const MAX_BACKOFF_MS: u64 = 60_000;
/// A peer whose session just ended is not dialled again at once: whatever
/// ended it (a refusal, a restart) likely still holds.
pub(crate) const AFTER_SESSION_MS: u64 = 2_000;
/// A peer is not dialled again for this long after it broke the protocol,
/// after it was replaced by a closer candidate (it would only be replaced
/// again), or, for infrastructure, after it proved too weak to relay.
pub(crate) const SHUNNED_MS: u64 = 60_000;
/// A neighbour dropped to make room (for a newcomer, or because the
/// neighbourhood starved) is not dialled again for this long, so that the
/// slot goes to someone else.
pub(crate) const DROPPED_MS: u64 = 30_000;

/// A peer we may connect to.
#[derive(Debug)]
pub(crate) struct Candidate<P> {
    pub(crate) info: PeerInfo<P>,
    /// Not before this time (after a failure or a refusal).
    pub(crate) retry_at: u64,
    pub(crate) failures: u32,
    /// When we dialled it, while the dial is pending.
    pub(crate) dialing_since: Option<u64>,
    /// Its RTT (queue-filtered median) as measured while it was our
    /// neighbour: once known, it replaces the coordinate's prediction.
    pub(crate) measured_ms: Option<u32>,
}

impl<P> Candidate<P> {
    pub(crate) fn new(info: PeerInfo<P>) -> Self {
        Candidate {
            info,
            retry_at: 0,
            failures: 0,
            dialing_since: None,
            measured_ms: None,
        }
    }

    /// Exponential back-off after a failure: 2 s, 4 s, … up to 60 s.
    pub(crate) fn back_off(&mut self, now: u64) {
        self.failures = self.failures.saturating_add(1);
        let wait = 1_000u64 << self.failures.min(6);
        self.retry_at = now + wait.min(MAX_BACKOFF_MS);
        self.dialing_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_is_bounded() {
        let mut c = Candidate::new(PeerInfo::new(1u32, vec![]));
        for _ in 0..20 {
            c.back_off(0);
        }
        assert_eq!(c.retry_at, 60_000);
    }
}
