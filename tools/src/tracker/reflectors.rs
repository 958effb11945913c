//! The reflector tier as the tracker holds it: each reflector as it last
//! announced itself (`POST /v1/reflectors`), soft state with the peers'
//! TTL, and the plan of which reflector carries which stream
//! ([`assignment`](super::assignment)), redone once per interval and at
//! once when a reflector comes or goes. Every method takes `now`.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use serde::Serialize;
use shoal_mesh::hints::{Assignment, ParentHint, ReflectorAnnounce, Role, MAX_PARENT_ADDRS};

use super::{
    assignment::{assign, Parent, Plan, ReflectorSlot, StreamLoad},
    registry::AnnounceError,
    swarm::Swarm,
};

/// One of a stream's reflectors as an operator sees it
/// (`GET /v1/streams/{stream}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReflectorRecord {
    pub peer_id: String,
    /// Its downstream sessions for the stream.
    pub max_degree: u32,
    pub parents: Vec<ParentHint>,
    pub failure_domain: Option<String>,
    /// Whether it has announced the stream (it is then its viewers' fallback).
    pub announced: bool,
    /// Whether it says it carries the stream.
    pub carrying: bool,
}

#[derive(Debug, Default)]
pub(super) struct Reflectors {
    table: HashMap<String, ReflectorEntry>,
    plan: Plan,
    next_round: Option<Instant>,
    /// A reflector came or went since the last round: the plan is stale.
    changed: bool,
}

#[derive(Debug)]
struct ReflectorEntry {
    addrs: Vec<String>,
    fan_out: u32,
    carrying: HashSet<String>,
    failure_domain: Option<String>,
    last_seen: Instant,
}

impl ReflectorEntry {
    fn is_live(&self, now: Instant, ttl: Duration) -> bool {
        now.saturating_duration_since(self.last_seen) < ttl
    }
}

impl Reflectors {
    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Keeps `a` (already validated, stream ids lower-case) as the
    /// reflector's state; a new one makes the plan stale. Refuses a new
    /// reflector beyond `max`.
    pub(super) fn record(
        &mut self,
        a: ReflectorAnnounce,
        now: Instant,
        max: usize,
    ) -> Result<(), AnnounceError> {
        let known = self.table.contains_key(&a.peer_id);
        if !known && self.table.len() >= max {
            tracing::warn!(peer = %a.peer_id, "refusing reflector: max_reflectors reached");
            return Err(AnnounceError::Full("too many reflectors"));
        }
        if !known {
            tracing::info!(peer = %a.peer_id, fan_out = a.fan_out, "new reflector");
            self.changed = true;
        }
        let entry = ReflectorEntry {
            addrs: a.addrs,
            fan_out: a.fan_out,
            carrying: a.carrying.into_iter().collect(),
            failure_domain: a.failure_domain,
            last_seen: now,
        };
        self.table.insert(a.peer_id, entry);
        Ok(())
    }

    /// Forgets reflectors not heard from within `ttl`; losing one makes
    /// the plan stale, so its streams move in the next round.
    pub(super) fn purge(&mut self, now: Instant, ttl: Duration) {
        let before = self.table.len();
        self.table.retain(|peer, r| {
            let live = r.is_live(now, ttl);
            if !live {
                tracing::info!(%peer, "reflector gone");
            }
            live
        });
        self.changed |= self.table.len() < before;
    }

    /// Redoes the plan once per `interval`, or at once when it is stale.
    pub(super) fn maybe_assign(
        &mut self,
        streams: &HashMap<String, Swarm>,
        now: Instant,
        interval: Duration,
        ttl: Duration,
    ) {
        let due = self.next_round.is_none_or(|at| now >= at);
        if !(due || self.changed) {
            return;
        }
        self.next_round = Some(now + interval);
        self.changed = false;
        let loads: Vec<StreamLoad<'_>> = (streams.iter())
            .map(|(id, swarm)| {
                let mut seeders: Vec<&str> = (swarm.infra.live(now))
                    .filter(|p| p.role == Role::Seeder)
                    .map(|p| &*p.peer_id)
                    .collect();
                seeders.sort_unstable();
                let viewers = swarm.viewers.live(now).count();
                StreamLoad {
                    id,
                    viewers: viewers.try_into().unwrap_or(u32::MAX),
                    seeders,
                }
            })
            .collect();
        let slots: Vec<ReflectorSlot<'_>> = (self.table.iter())
            .filter(|(_, r)| r.is_live(now, ttl))
            .map(|(id, r)| ReflectorSlot {
                id,
                fan_out: r.fan_out,
                domain: r.failure_domain.as_deref(),
            })
            .collect();
        self.plan = assign(&loads, &slots);
    }

    pub(super) fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The stream's assigned reflectors that have announced it and are
    /// live in its swarm; `None` if there are none. While a stream has
    /// them, its viewers fall back to them only (docs/coordinator.md): until
    /// then, its seeders stay their fallback.
    pub(super) fn serving<'a>(
        &'a self,
        stream: &str,
        swarm: &Swarm,
        now: Instant,
    ) -> Option<HashSet<&'a str>> {
        let serving: HashSet<&str> = (self.plan.of_stream(stream).iter())
            .map(|p| p.reflector.as_str())
            .filter(|id| {
                (swarm.infra.get(id)).is_some_and(|p| p.role == Role::Reflector && p.is_live(now))
            })
            .collect();
        (!serving.is_empty()).then_some(serving)
    }

    /// What `reflector` is to carry, each stream with its budget as
    /// `budget` gives it (the stream's, split by `max_degree`).
    pub(super) fn assignments(
        &self,
        reflector: &str,
        streams: &HashMap<String, Swarm>,
        budget: impl Fn(&str) -> Option<u64>,
        now: Instant,
        ttl: Duration,
    ) -> Vec<Assignment> {
        (self.plan.of_reflector(reflector))
            .map(|(stream, placed)| Assignment {
                stream: stream.to_owned(),
                parents: self.parents(&placed.parents, streams.get(stream), now, ttl),
                max_degree: placed.max_degree,
                budget_bps: (budget(stream))
                    .and_then(|b| self.plan.budget_share(stream, reflector, b)),
            })
            .collect()
    }

    /// The stream's reflectors and their parents, for operators.
    pub(super) fn records(
        &self,
        stream: &str,
        swarm: &Swarm,
        now: Instant,
        ttl: Duration,
    ) -> Vec<ReflectorRecord> {
        (self.plan.of_stream(stream).iter())
            .map(|placed| {
                let entry = self.table.get(&placed.reflector);
                let announced = swarm.infra.get(&placed.reflector);
                ReflectorRecord {
                    peer_id: placed.reflector.clone(),
                    max_degree: placed.max_degree,
                    parents: self.parents(&placed.parents, Some(swarm), now, ttl),
                    failure_domain: entry.and_then(|r| r.failure_domain.clone()),
                    announced: announced.is_some_and(|p| p.is_live(now)),
                    carrying: entry.is_some_and(|r| r.carrying.contains(stream)),
                }
            })
            .collect()
    }

    /// Parents with the addresses they announce now; one gone since the
    /// round is left out (the next round replaces it).
    fn parents(
        &self,
        parents: &[Parent],
        swarm: Option<&Swarm>,
        now: Instant,
        ttl: Duration,
    ) -> Vec<ParentHint> {
        let addrs = |p: &Parent| match p.role {
            Role::Reflector => (self.table.get(&p.peer_id))
                .filter(|r| r.is_live(now, ttl))
                .map(|r| &r.addrs),
            _ => (swarm?.infra.get(&p.peer_id))
                .filter(|s| s.is_live(now))
                .map(|s| &s.addrs),
        };
        (parents.iter())
            .filter_map(|p| {
                Some(ParentHint {
                    peer_id: p.peer_id.clone(),
                    addrs: addrs(p)?.iter().take(MAX_PARENT_ADDRS).cloned().collect(),
                    role: p.role,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use shoal_mesh::hints::{Announce, Role};

    use crate::tracker::{fixtures::*, Registry};

    /// A reflector's announce of the stream it was assigned.
    fn carries(id: &str) -> Announce {
        peer(id, "10.0.9.1", Role::Reflector, 0, 16)
    }

    fn streams_of(reg: &mut Registry, id: &str, now: Instant) -> Vec<String> {
        let answer = reg.reflect(reflector(id, 100), now).unwrap();
        answer.streams.into_iter().map(|a| a.stream).collect()
    }

    /// One seeder, three viewers and reflectors r0..r{n}.
    fn reflected_stream(n: usize, now: Instant) -> Registry {
        let mut reg = registry();
        reg.announce(peer("seed", "10.0.0.1", Role::Seeder, 0, 8), None, now)
            .unwrap();
        for i in 0..3 {
            reg.announce(viewer(&format!("v{i}"), "10.0.1.1", 0), None, now)
                .unwrap();
        }
        for i in 0..n {
            reg.reflect(reflector(&format!("r{i}"), 100), now).unwrap();
        }
        reg
    }

    #[test]
    fn a_new_reflector_is_assigned_at_once_with_parents_it_can_dial() {
        let t = Instant::now();
        let mut reg = reflected_stream(0, t);
        let answer = reg.reflect(reflector("r0", 100), t).unwrap();
        assert_eq!(answer.interval_s, 5);
        let [a] = &answer.streams[..] else {
            panic!("{answer:?}")
        };
        assert_eq!(a.stream, stream(1));
        assert_eq!(a.parents.len(), 1, "one seeder, no other reflector");
        assert_eq!(a.parents[0].peer_id, "seed");
        assert_eq!(a.parents[0].addrs, ["/ip4/10.0.0.1/tcp/4001"]);
        // The second reflector arrives: each feeds the other.
        let answer = reg.reflect(reflector("r1", 100), t).unwrap();
        let parents: Vec<_> = (answer.streams[0].parents.iter())
            .map(|p| (&*p.peer_id, p.role))
            .collect();
        assert_eq!(parents, [("seed", Role::Seeder), ("r0", Role::Reflector)]);
        assert_eq!(answer.streams[0].parents[1].addrs, ["/dns4/r0/tcp/4001"]);
    }

    #[test]
    fn a_dead_reflectors_streams_move_within_an_interval() {
        let t0 = Instant::now();
        let mut reg = reflected_stream(3, t0);
        let ttl = reg.config().peer_ttl;
        let tree = |reg: &mut Registry, now| {
            let detail = reg.stream_detail(&stream(1), now).unwrap();
            let mut ids: Vec<String> = detail.reflectors.into_iter().map(|r| r.peer_id).collect();
            ids.sort_unstable();
            ids
        };
        let before = tree(&mut reg, t0);
        assert_eq!(before.len(), 2, "{before:?}");
        let dead = before[0].clone();
        let alive: Vec<String> = (0..3)
            .map(|i| format!("r{i}"))
            .filter(|r| *r != dead)
            .collect();
        // Everyone but `dead` goes on announcing.
        let mut now = t0;
        let mut expired_at = None;
        while now < t0 + ttl + Duration::from_secs(10) {
            now += Duration::from_secs(1);
            reg.announce(peer("seed", "10.0.0.1", Role::Seeder, 0, 8), None, now)
                .unwrap();
            reg.announce(viewer("v0", "10.0.1.1", 0), None, now)
                .unwrap();
            for id in &alive {
                streams_of(&mut reg, id, now);
            }
            if now >= t0 + ttl && expired_at.is_none() {
                expired_at = Some(now);
            }
            if tree(&mut reg, now) == alive {
                break;
            }
        }
        assert_eq!(tree(&mut reg, now), alive, "the spare took its place");
        let expired_at = expired_at.unwrap();
        assert!(
            now <= expired_at + Duration::from_secs(5),
            "within an interval"
        );
        assert_eq!(reg.reflector_count(), 2);
    }

    #[test]
    fn viewers_fall_back_to_the_reflectors_once_one_has_announced() {
        let t = Instant::now();
        let mut reg = reflected_stream(2, t);
        // Assigned, but no reflector has announced the stream yet: as before.
        let hints = reg.announce(viewer("me", "10.0.1.2", 0), None, t).unwrap();
        let fallbacks: Vec<&str> = hints.seeders.iter().map(|s| s.peer_id.as_str()).collect();
        assert_eq!(fallbacks, ["seed"]);
        assert!(ids(&hints).contains(&"seed"));

        reg.announce(carries("r0"), None, t).unwrap();
        // An unassigned reflector of the stream is nobody's fallback.
        reg.announce(carries("stray"), None, t).unwrap();
        let hints = reg.announce(viewer("me", "10.0.1.2", 0), None, t).unwrap();
        let fallbacks: Vec<&str> = hints.seeders.iter().map(|s| s.peer_id.as_str()).collect();
        assert_eq!(fallbacks, ["r0"]);
        assert!(
            !ids(&hints).contains(&"seed"),
            "viewers do not dial seeders"
        );
        assert!(ids(&hints).contains(&"r0"));

        // The seeder is handed no viewers: its reflectors dial it.
        let hints = (reg.announce(peer("seed", "10.0.0.1", Role::Seeder, 0, 8), None, t)).unwrap();
        assert!(
            ids(&hints).iter().all(|id| !id.starts_with('v')),
            "{hints:?}"
        );
        // A reflector still sees the swarm.
        let hints = reg.announce(carries("r0"), None, t).unwrap();
        assert!(ids(&hints).iter().any(|id| id.starts_with('v')));

        let detail = reg.stream_detail(&stream(1), t).unwrap();
        let r0 = detail
            .reflectors
            .iter()
            .find(|r| r.peer_id == "r0")
            .unwrap();
        assert!(r0.announced && !r0.carrying);
        assert_eq!(r0.parents.len(), 2);
    }

    #[test]
    fn a_reflected_streams_budget_goes_to_its_reflectors() {
        let t0 = Instant::now();
        let mut reg = registry();
        let mut seeder = peer("seed", "10.0.0.1", Role::Seeder, 0, 8);
        seeder.upload_kbps = 10_000;
        seeder.bitrate_kbps = 2_000;
        let mut refl = carries("r0");
        refl.bitrate_kbps = 2_000;
        for now in [t0, t0 + Duration::from_secs(5)] {
            reg.announce(seeder.clone(), None, now).unwrap();
            reg.announce(viewer("v", "10.0.1.1", 0), None, now).unwrap();
            reg.reflect(reflector("r0", 100), now).unwrap();
            reg.announce(refl.clone(), None, now).unwrap();
        }
        let now = t0 + Duration::from_secs(5);
        let stream_budget = reg.stream_detail(&stream(1), now).unwrap().budget_bps;
        assert!(stream_budget.is_some());
        let hints = reg.announce(refl, None, now).unwrap();
        assert_eq!(
            hints.budget_bps, stream_budget,
            "the only reflector: all of it"
        );
        let assigned = reg.reflect(reflector("r0", 100), now).unwrap();
        assert_eq!(assigned.streams[0].budget_bps, stream_budget);
        let hints = reg.announce(seeder, None, now).unwrap();
        assert_eq!(hints.budget_bps, None, "the seeder only feeds r0");
    }

    #[test]
    fn a_full_tier_refuses_new_reflectors_but_not_known_ones() {
        let config = crate::tracker::TrackerConfig {
            max_reflectors: 1,
            ..Default::default()
        };
        let (mut reg, t) = (Registry::new(config, 1), Instant::now());
        reg.reflect(reflector("r0", 10), t).unwrap();
        let err = reg.reflect(reflector("r1", 10), t).unwrap_err();
        assert!(err.to_string().contains("too many reflectors"), "{err}");
        reg.reflect(reflector("r0", 20), t).unwrap();
        assert_eq!(reg.reflector_count(), 1);
    }
}
