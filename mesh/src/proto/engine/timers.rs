//! The engine's timers: one table of deadlines indexed by an enum, so that
//! what is due is one lookup and the next wake-up one `min` (as in
//! quinn-proto's `connection/timer.rs`). Times are on the monotonic clock.

/// Something the engine does at a time of its choosing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// Pings, dial timeouts, the neighbour set: once per `tick_ms`.
    Tick,
    /// Batched `Have`s go out (armed while some are pending).
    Have,
    /// The pull scheduler runs (see `schedule::next_due`).
    Schedule,
    /// The neighbour set is reconsidered; runs with the tick at or after it.
    Optimize,
    /// Peer exchange; runs with the tick at or after it.
    Exchange,
    /// A run of probes starts; runs with the tick at or after it.
    Probe,
    /// A viewer not playing yet checks whether to ask infrastructure
    /// where the live edge is (see `edge_query`); runs with the tick at or
    /// after it, armed until the viewer plays.
    EdgeQuery,
}

impl Timer {
    const ALL: [Timer; 7] = [
        Timer::Tick,
        Timer::Have,
        Timer::Schedule,
        Timer::Optimize,
        Timer::Exchange,
        Timer::Probe,
        Timer::EdgeQuery,
    ];

    /// Timers that wake the engine. The others are upkeep that shares the
    /// tick's pass over the neighbours, and waits for it.
    const WAKES: [Timer; 3] = [Timer::Tick, Timer::Have, Timer::Schedule];
}

/// When each timer is next due (`None`: not armed).
#[derive(Clone, Debug, Default)]
pub(super) struct Timers([Option<u64>; Timer::ALL.len()]);

impl Timers {
    /// A new engine's timers at `now`: the tick and the scheduler at once,
    /// the periods after their first interval.
    pub(super) fn starting(now: u64, optimize_ms: u64) -> Self {
        let mut timers = Timers::default();
        timers.set(Timer::Tick, now);
        timers.set(Timer::Schedule, now);
        timers.set(Timer::Optimize, now + optimize_ms);
        timers.set(Timer::Exchange, now + super::EXCHANGE_MS);
        timers.set(Timer::Probe, now + super::peers::probe::PROBE_MS);
        timers
    }

    pub(super) fn set(&mut self, timer: Timer, at: u64) {
        self.0[timer as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<u64> {
        self.0[timer as usize]
    }

    pub(super) fn is_armed(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// Whether `timer` is armed and due at `now`.
    pub(super) fn is_due(&self, timer: Timer, now: u64) -> bool {
        self.get(timer).is_some_and(|t| now >= t)
    }

    /// The earliest deadline of the timers that wake the engine.
    pub(super) fn next_wake(&self) -> Option<u64> {
        Timer::WAKES.iter().filter_map(|&t| self.get(t)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_waking_timers_set_the_next_wake() {
        let mut t = Timers::starting(1_000, 5_000);
        assert_eq!(t.next_wake(), Some(1_000));
        t.set(Timer::Tick, 2_000);
        t.set(Timer::Schedule, 1_500);
        t.set(Timer::Probe, 1_100);
        assert_eq!(t.next_wake(), Some(1_500), "a probe waits for the tick");
        t.set(Timer::Have, 1_200);
        assert_eq!(t.next_wake(), Some(1_200));
        t.stop(Timer::Have);
        assert!(!t.is_armed(Timer::Have));
        assert!(!t.is_due(Timer::Have, u64::MAX));
        assert!(t.is_due(Timer::Probe, 1_100) && !t.is_due(Timer::Probe, 1_099));
    }
}
