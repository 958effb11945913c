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
    registry::{AnnounceError, Swarm},
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
                let mut seeders: Vec<&str> = (swarm.infra.live(now, ttl))
                    .filter(|p| p.role == Role::Seeder)
                    .map(|p| p.peer_id.as_str())
                    .collect();
                seeders.sort_unstable();
                let viewers = swarm.viewers.live(now, ttl).count();
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
        ttl: Duration,
    ) -> Option<HashSet<&'a str>> {
        let serving: HashSet<&str> = (self.plan.of_stream(stream).iter())
            .map(|p| p.reflector.as_str())
            .filter(|id| {
                (swarm.infra.get(id))
                    .is_some_and(|p| p.role == Role::Reflector && p.is_live(now, ttl))
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
                    announced: announced.is_some_and(|p| p.is_live(now, ttl)),
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
                .filter(|s| s.is_live(now, ttl))
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
