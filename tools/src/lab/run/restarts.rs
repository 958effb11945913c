//! The scenario's restarts as the run reaches them: infrastructure taken
//! down and brought back (docs/lab.md §5).

use std::io::Write;

use anyhow::Context;
use shoal_mesh::proto::StreamId;

use super::Lab;
use crate::lab::{
    scenario::{Restart, RestartRole},
    system::Infra,
};

impl Lab<'_> {
    /// Takes infrastructure down, and brings it back, as the scenario's
    /// restarts fall due. A reflector restart takes down the running
    /// reflector whose streams have the most viewers, and brings that one
    /// back (unless it is down for good).
    pub(super) async fn apply_restarts(
        &mut self,
        t: f64,
        out: &mut (dyn Write + Send),
    ) -> anyhow::Result<()> {
        for r in &mut self.restarts {
            let Restart { role, at_s, down_s } = r.restart;
            if r.phase == RestartPhase::Scheduled && t >= at_s {
                r.phase = RestartPhase::Down;
                let what = match role {
                    RestartRole::Tracker => {
                        self.tracker.stop(None, t);
                        role.to_string()
                    }
                    RestartRole::Shard => {
                        self.tracker.stop(Some(0), t);
                        "tracker 0 of several".to_string()
                    }
                    RestartRole::Seeder => {
                        self.infra.iter_mut().for_each(Infra::stop);
                        role.to_string()
                    }
                    RestartRole::Reflector => {
                        let streams: Vec<(StreamId, usize)> = (self.infra.iter())
                            .map(Infra::stream)
                            .zip(self.sc.mix().viewers().iter().copied())
                            .collect();
                        let reflectors = self.reflectors.as_mut().context("no reflectors")?;
                        r.victim = reflectors.most_loaded(&streams);
                        match r.victim {
                            Some(i) => {
                                reflectors.stop(i, t);
                                format!("reflector {i}")
                            }
                            None => "no reflector (none running)".to_string(),
                        }
                    }
                };
                if r.restart.comes_back() {
                    writeln!(out, "  {t:.0}s: {what} goes down for {down_s} s")?;
                } else {
                    writeln!(out, "  {t:.0}s: {what} goes down for good")?;
                }
            }
            if r.phase == RestartPhase::Down && t >= at_s + down_s {
                r.phase = RestartPhase::Back;
                match role {
                    RestartRole::Tracker | RestartRole::Shard => self.tracker.restart().await?,
                    RestartRole::Seeder => {
                        for infra in &mut self.infra {
                            infra
                                .restart()
                                .await
                                .context("the seeder failed to restart")?;
                        }
                    }
                    RestartRole::Reflector => {
                        if let (Some(i), Some(reflectors)) = (r.victim, self.reflectors.as_mut()) {
                            reflectors.start_one(i).await?;
                        }
                    }
                }
                match (role, r.victim) {
                    (RestartRole::Reflector, Some(i)) => {
                        writeln!(out, "  {t:.0}s: reflector {i} is back")?
                    }
                    _ => writeln!(out, "  {t:.0}s: {role} is back")?,
                }
            }
        }
        Ok(())
    }
}

/// A scenario's restart and how far it has gone.
pub(super) struct ScheduledRestart {
    restart: Restart,
    phase: RestartPhase,
    /// The reflector a reflector restart took down.
    victim: Option<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RestartPhase {
    Scheduled,
    Down,
    Back,
}

impl ScheduledRestart {
    pub(super) fn new(restart: Restart) -> ScheduledRestart {
        ScheduledRestart {
            restart,
            phase: RestartPhase::Scheduled,
            victim: None,
        }
    }
}
