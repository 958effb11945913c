//! What viewers report each interval, summed up per swarm.

use serde::{Deserialize, Serialize};

/// One viewer's interval, as it reports it to the coordinator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewerReport {
    /// Infrastructure payload it received in the interval, bytes.
    pub infra_bytes: u64,
    /// Pieces due at its player in the interval, and those there in time.
    pub pieces_due: u64,
    pub pieces_in_time: u64,
    /// It has started playing: a viewer that cannot start delivers nothing.
    pub playing: bool,
    /// The upload it offers its swarm, bit/s (0: not known).
    pub upload_bps: u64,
}

/// Infrastructure payload a viewer can have received in an interval, in
/// copies of the stream: a few, with fallback duplicates and catching up.
/// A report of more describes no real interval, and would bend its
/// swarm's response curve.
pub const MAX_INFRA_COPIES: u64 = 4;

impl ViewerReport {
    /// The report with its infrastructure bytes held to
    /// [`MAX_INFRA_COPIES`] of a stream at `bitrate_bps` over `interval_ms`:
    /// a viewer's report is its word, and one viewer must not be able to
    /// make its swarm look like a bad use of budget.
    pub fn bounded(mut self, bitrate_bps: u64, interval_ms: u64) -> Self {
        let stream_bytes = u128::from(bitrate_bps) * u128::from(interval_ms) / 8_000;
        let most = (stream_bytes * u128::from(MAX_INFRA_COPIES)).min(u128::from(u64::MAX)) as u64;
        self.infra_bytes = self.infra_bytes.min(most);
        self
    }

    /// The report of an announce that came `span_ms` after the one
    /// before, as the counts of an interval of `interval_ms`: a settled
    /// viewer reports once in several intervals (docs/protocol.md §12.4),
    /// and summed as it is its report would count several times over.
    pub fn rescaled(mut self, span_ms: u64, interval_ms: u64) -> Self {
        let scale = |v: u64| {
            let v = u128::from(v) * u128::from(interval_ms) / u128::from(span_ms.max(1));
            v.min(u128::from(u64::MAX)) as u64
        };
        self.infra_bytes = scale(self.infra_bytes);
        self.pieces_due = scale(self.pieces_due);
        self.pieces_in_time = scale(self.pieces_in_time);
        self
    }

    /// Its continuity in the interval; a viewer with nothing due yet is
    /// judged by whether it plays.
    fn continuity(&self) -> f64 {
        if !self.playing {
            0.0
        } else if self.pieces_due == 0 {
            1.0
        } else {
            self.pieces_in_time.min(self.pieces_due) as f64 / self.pieces_due as f64
        }
    }
}

/// One swarm's interval, summed over its viewers.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SwarmReport {
    pub viewers: u32,
    /// The stream's bitrate, bit/s.
    pub bitrate_bps: f64,
    /// Its viewers' upload in all, bit/s.
    pub upload_bps: f64,
    /// Infrastructure payload its viewers received, bit/s.
    pub infra_bps: f64,
    /// Bitrate × continuity, summed over its viewers.
    pub goodput_bps: f64,
    /// Viewers that have started playing.
    pub playing: u32,
}

impl SwarmReport {
    pub fn demand_bps(&self) -> f64 {
        f64::from(self.viewers) * self.bitrate_bps
    }

    /// Demand of the viewers yet to start playing.
    pub fn waiting_bps(&self) -> f64 {
        f64::from(self.viewers.saturating_sub(self.playing)) * self.bitrate_bps
    }
}

/// Viewer reports of one swarm, added up as they arrive.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SwarmTally {
    viewers: u32,
    infra_bytes: u64,
    continuity: f64,
    upload_bps: u64,
    playing: u32,
}

impl SwarmTally {
    pub fn add(&mut self, r: &ViewerReport) {
        self.viewers = self.viewers.saturating_add(1);
        self.infra_bytes = self.infra_bytes.saturating_add(r.infra_bytes);
        self.continuity += r.continuity();
        self.upload_bps = self.upload_bps.saturating_add(r.upload_bps);
        self.playing = self.playing.saturating_add(u32::from(r.playing));
    }

    pub fn viewers(&self) -> u32 {
        self.viewers
    }

    /// The swarm's report for an interval of `interval_ms` of a stream at
    /// `bitrate_bps`.
    pub fn report(&self, interval_ms: u64, bitrate_bps: f64) -> SwarmReport {
        let seconds = interval_ms.max(1) as f64 / 1_000.0;
        SwarmReport {
            viewers: self.viewers,
            bitrate_bps,
            upload_bps: self.upload_bps as f64,
            infra_bps: self.infra_bytes as f64 * 8.0 / seconds,
            goodput_bps: self.continuity * bitrate_bps,
            playing: self.playing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_swarm_report_sums_its_viewers() {
        let mut t = SwarmTally::default();
        let playing = ViewerReport {
            infra_bytes: 125_000,
            pieces_due: 10,
            pieces_in_time: 9,
            playing: true,
            upload_bps: 4_000_000,
        };
        t.add(&playing);
        t.add(&ViewerReport {
            playing: true,
            ..ViewerReport::default()
        });
        t.add(&ViewerReport {
            upload_bps: 1_000_000,
            ..ViewerReport::default()
        });
        let r = t.report(1_000, 2_000_000.0);
        assert_eq!(r.viewers, 3);
        assert_eq!(r.infra_bps, 1_000_000.0);
        assert_eq!(r.upload_bps, 5_000_000.0);
        // 0.9 + 1 (nothing due yet, playing) + 0 (not started).
        assert!((r.goodput_bps - 1.9 * 2_000_000.0).abs() < 1e-6);
        assert_eq!(r.demand_bps(), 6_000_000.0);
        assert_eq!(r.playing, 2);
        assert_eq!(r.waiting_bps(), 2_000_000.0);
    }

    #[test]
    fn a_long_report_counts_as_one_interval() {
        let settled = ViewerReport {
            infra_bytes: 500_000,
            pieces_due: 250,
            pieces_in_time: 249,
            playing: true,
            upload_bps: 4_000_000,
        };
        let r = settled.rescaled(25_000, 5_000);
        assert_eq!(
            (r.infra_bytes, r.pieces_due, r.pieces_in_time),
            (100_000, 50, 49)
        );
        assert_eq!(r.upload_bps, 4_000_000, "a rate stays");
        assert_eq!(settled.rescaled(5_000, 5_000), settled);
        let r = settled.rescaled(0, u64::MAX);
        assert_eq!(r.infra_bytes, u64::MAX, "saturates, never wraps");
    }

    #[test]
    fn a_report_of_more_than_a_few_copies_of_the_stream_is_held_to_them() {
        let honest = ViewerReport {
            infra_bytes: 250_000,
            ..ViewerReport::default()
        };
        // 2 Mbit/s over 1 s is 250,000 bytes: one copy stands.
        assert_eq!(honest.bounded(2_000_000, 1_000), honest);
        let liar = ViewerReport {
            infra_bytes: u64::MAX,
            ..ViewerReport::default()
        };
        assert_eq!(
            liar.bounded(2_000_000, 1_000).infra_bytes,
            MAX_INFRA_COPIES * 250_000
        );
        assert_eq!(liar.bounded(u64::MAX, u64::MAX).infra_bytes, u64::MAX);
    }

    #[test]
    fn a_report_claiming_more_in_time_than_due_counts_as_whole() {
        let mut t = SwarmTally::default();
        t.add(&ViewerReport {
            pieces_due: 2,
            pieces_in_time: u64::MAX,
            playing: true,
            ..Default::default()
        });
        t.add(&ViewerReport {
            infra_bytes: u64::MAX,
            ..Default::default()
        });
        t.add(&ViewerReport {
            infra_bytes: u64::MAX,
            ..Default::default()
        });
        let r = t.report(0, 1.0);
        assert_eq!(r.goodput_bps, 1.0);
        assert!(r.infra_bps.is_finite());
    }
}
