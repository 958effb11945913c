//! The driver's clocks: the engine's timers run on a monotonic one, and
//! the broadcaster's produced-at stamps are on the wall clock.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::proto::engine::Time;

/// Milliseconds since the Unix epoch: the clock of the broadcaster's
/// produced-at stamps (the engine's `Time::wall`).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The engine's two clocks: steady milliseconds since the driver started
/// for its timers, and the wall clock for produced-at stamps.
#[derive(Clone, Copy, Debug)]
pub(super) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(super) fn start() -> Self {
        Clock {
            origin: Instant::now(),
        }
    }

    pub(super) fn now(&self) -> Time {
        Time {
            mono: self.origin.elapsed().as_millis() as u64,
            wall: now_ms(),
        }
    }
}
