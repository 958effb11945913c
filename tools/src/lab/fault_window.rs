//! Continuity over the minute after a fault: for each restart of the
//! scenario, every viewer's pieces due and on time when it strikes and a
//! minute later (or at the end of the run, if sooner), so that a fault's
//! damage is not averaged away over the whole run.
//!
//! Each viewer's continuity over the window is its on-time pieces / due
//! pieces between the two moments; a viewer that joined or left within
//! the window, or had nothing due in it, is left out. The run samples once
//! a second, so the window opens at the first sample at or after the
//! fault.

use std::collections::HashMap;

use shoal_mesh::proto::stats::MeanMin;

use super::{population::NodeSnap, result::FaultResult, scenario::Restart};

/// How long after a fault continuity is judged, seconds.
pub(crate) const WINDOW_S: f64 = 60.0;

/// A viewer occupant: slot and generation.
type Occupant = (usize, u32);
/// Each occupant's pieces due and on time at one moment.
type Counters = HashMap<Occupant, (u64, u64)>;

/// One restart's window, as the run goes.
#[derive(Debug)]
pub(crate) struct FaultWindow {
    restart: Restart,
    /// When the window opened, and the viewers' counters then.
    opened: Option<(f64, Counters)>,
    result: Option<FaultResult>,
}

impl FaultWindow {
    pub(crate) fn new(restart: Restart) -> FaultWindow {
        FaultWindow {
            restart,
            opened: None,
            result: None,
        }
    }

    /// Whether `observe` needs the viewers' snapshots at `t`.
    pub(crate) fn wants(&self, t: f64) -> bool {
        match &self.opened {
            None => t >= self.restart.at_s,
            Some((from, _)) => self.result.is_none() && t >= from + WINDOW_S,
        }
    }

    /// Takes the viewers as they are at `t` (call when [`wants`](Self::wants)).
    pub(crate) fn observe(&mut self, t: f64, viewers: &[NodeSnap]) {
        match &self.opened {
            None => self.opened = Some((t, counters(viewers))),
            Some(_) => self.close(t, viewers),
        }
    }

    /// Closes the window at `t` if it is open; the result, if any.
    pub(crate) fn finish(mut self, t: f64, viewers: &[NodeSnap]) -> Option<FaultResult> {
        if self.result.is_none() && self.opened.is_some() {
            self.close(t, viewers);
        }
        self.result
    }

    fn close(&mut self, t: f64, viewers: &[NodeSnap]) {
        let Some((from, before)) = &self.opened else {
            return;
        };
        let continuities: Vec<f64> = (counters(viewers).into_iter())
            .filter_map(|(who, (due, on_time))| {
                let (due0, on_time0) = before.get(&who)?;
                let due = due.checked_sub(*due0).filter(|&d| d > 0)?;
                Some(on_time.saturating_sub(*on_time0) as f64 / due as f64)
            })
            .collect();
        let n = continuities.len();
        self.result = Some(FaultResult {
            role: self.restart.role.to_string(),
            at_s: self.restart.at_s,
            down_s: self.restart.down_s,
            from_s: *from,
            to_s: t,
            viewers: n,
            continuity: MeanMin {
                mean: continuities.iter().sum::<f64>() / n.max(1) as f64,
                min: continuities.iter().copied().fold(1.0, f64::min),
            },
        });
    }
}

fn counters(viewers: &[NodeSnap]) -> Counters {
    (viewers.iter())
        .map(|v| {
            (
                (v.slot, v.gen),
                (v.stats.pieces_due, v.stats.pieces_on_time),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use shoal_mesh::proto::Stats;

    use super::*;
    use crate::lab::scenario::RestartRole;

    fn viewer(slot: usize, due: u64, on_time: u64) -> NodeSnap {
        NodeSnap {
            slot,
            gen: 0,
            peer_id: String::new(),
            joined_at_s: 0.0,
            left_at_s: None,
            stats: Stats {
                pieces_due: due,
                pieces_on_time: on_time,
                ..Stats::default()
            },
            neighbors: Vec::new(),
        }
    }

    #[test]
    fn continuity_is_judged_over_the_minute_after_the_fault_only() {
        let kill = Restart {
            role: RestartRole::Reflector,
            at_s: 30.0,
            down_s: f64::INFINITY,
        };
        let mut w = FaultWindow::new(kill);
        assert!(!w.wants(29.5));
        assert!(w.wants(30.2));
        // Before the fault, viewer 5 lost 50 pieces; that is not the fault's.
        w.observe(30.2, &[viewer(5, 100, 50), viewer(6, 100, 100)]);
        assert!(!w.wants(89.0));
        assert!(w.wants(90.2));
        // In the window: viewer 5 missed 1 of 200, viewer 6 none; viewer 7
        // joined within it and is left out.
        w.observe(
            90.2,
            &[viewer(5, 300, 249), viewer(6, 300, 300), viewer(7, 50, 0)],
        );
        assert!(!w.wants(120.0));
        let r = w.finish(95.0, &[]).unwrap();
        assert_eq!((r.from_s, r.to_s, r.viewers), (30.2, 90.2, 2));
        assert_eq!(r.continuity.min, 0.995);
        assert_eq!(r.continuity.mean, (0.995 + 1.0) / 2.0);
    }

    #[test]
    fn a_window_cut_short_by_the_end_closes_there() {
        let r = Restart {
            role: RestartRole::Seeder,
            at_s: 10.0,
            down_s: 5.0,
        };
        let mut w = FaultWindow::new(r.clone());
        w.observe(10.0, &[viewer(5, 10, 10)]);
        let r = w.finish(40.0, &[viewer(5, 100, 91)]).unwrap();
        assert_eq!((r.to_s, r.continuity.min), (40.0, 0.9));
        // A fault after the run's end has no window.
        assert!(FaultWindow::new(Restart {
            at_s: 99.0,
            ..r_restart()
        })
        .finish(40.0, &[])
        .is_none());
    }

    fn r_restart() -> Restart {
        Restart {
            role: RestartRole::Tracker,
            at_s: 0.0,
            down_s: 2.0,
        }
    }
}
