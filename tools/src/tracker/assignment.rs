//! Which reflectors carry which streams, and who feeds each of them
//! (docs/coordinator.md, "Reflectors"). A pure function of the live
//! streams and the live reflectors; the tracker runs it once per interval
//! and whenever a reflector comes or goes.
//!
//! Streams are taken largest first. Each picks its reflectors in its own
//! rendezvous order (highest hash of stream and reflector first), so a
//! round with nothing changed gives the same plan, and a reflector that
//! goes away moves only the streams it carried (while fan-out is not
//! scarce: a stream that takes over a dead reflector's place may take a
//! smaller stream's too).

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
};

use shoal_mesh::hints::{Role, MAX_CARRYING};

/// Viewers one downstream session of a reflector stands for: the engine's
/// spread (docs/protocol.md §6.10) puts one entry point into the mesh per
/// 250 viewers, and the mesh carries each piece on from there.
pub(super) const VIEWERS_PER_SESSION: u32 = 250;
/// Sessions a stream is given at least (fewer if it has fewer viewers):
/// a viewer's default degree, so that a small stream's viewers can all
/// hold a session with its reflectors.
pub(super) const MIN_SESSIONS: u32 = 8;
/// Most downstream sessions (viewers and fed reflectors) of one reflector
/// for one stream: the engine's largest degree cap.
pub(super) const MAX_DEGREE: u32 = 64;

/// A live stream as the assignment sees it.
#[derive(Debug, Clone)]
pub(super) struct StreamLoad<'a> {
    pub(super) id: &'a str,
    pub(super) viewers: u32,
    /// Its live seeders' peer ids; the first two in this order are parents.
    pub(super) seeders: Vec<&'a str>,
}

/// A live reflector as the assignment sees it.
#[derive(Debug, Clone)]
pub(super) struct ReflectorSlot<'a> {
    pub(super) id: &'a str,
    /// Downstream sessions it can hold across all streams.
    pub(super) fan_out: u32,
    pub(super) domain: Option<&'a str>,
}

/// One reflector placed on one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placement {
    pub(super) reflector: String,
    pub(super) parents: Vec<Parent>,
    /// Its downstream sessions for the stream: its share of the viewers
    /// plus the reflectors it feeds.
    pub(super) max_degree: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Parent {
    pub(super) peer_id: String,
    pub(super) role: Role,
}

/// The outcome of one round: each stream's reflectors, tier 1 first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Plan {
    streams: HashMap<String, Vec<Placement>>,
    /// Each reflector's streams, sorted.
    by_reflector: HashMap<String, Vec<String>>,
}

impl Plan {
    /// The stream's reflectors, tier 1 first; empty when it has none.
    pub(super) fn of_stream(&self, stream: &str) -> &[Placement] {
        self.streams.get(stream).map_or(&[], Vec::as_slice)
    }

    /// The streams `reflector` carries, with its place in each.
    pub(super) fn of_reflector<'a>(
        &'a self,
        reflector: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Placement)> + 'a {
        let streams = self
            .by_reflector
            .get(reflector)
            .map_or(&[][..], Vec::as_slice);
        streams.iter().filter_map(move |s| {
            let placed = self
                .of_stream(s)
                .iter()
                .find(|p| p.reflector == reflector)?;
            Some((s.as_str(), placed))
        })
    }

    /// `reflector`'s part of the stream's budget: in proportion to its
    /// `max_degree`, the sessions it serves. `None` if it does not carry it.
    pub(super) fn budget_share(&self, stream: &str, reflector: &str, budget: u64) -> Option<u64> {
        let placed = self.of_stream(stream);
        let mine = placed.iter().find(|p| p.reflector == reflector)?.max_degree;
        let total: u64 = placed.iter().map(|p| u64::from(p.max_degree)).sum();
        let share = u128::from(budget) * u128::from(mine) / u128::from(total.max(1));
        Some(share.try_into().unwrap_or(u64::MAX))
    }

    fn insert(&mut self, stream: &str, placed: Vec<Placement>) {
        for p in &placed {
            (self.by_reflector.entry(p.reflector.clone()).or_default()).push(stream.to_owned());
        }
        self.streams.insert(stream.to_owned(), placed);
    }
}

/// Downstream sessions a stream of `viewers` needs from its reflectors.
fn sessions_needed(viewers: u32) -> u32 {
    viewers
        .div_ceil(VIEWERS_PER_SESSION)
        .max(viewers.min(MIN_SESSIONS))
}

/// The plan for `streams` on `reflectors` (docs/coordinator.md): the
/// order of either slice does not matter.
pub(super) fn assign(streams: &[StreamLoad<'_>], reflectors: &[ReflectorSlot<'_>]) -> Plan {
    let mut plan = Plan::default();
    if reflectors.is_empty() {
        return plan;
    }
    let hashes: Vec<u64> = reflectors.iter().map(|r| id_hash(r.id)).collect();
    let mut left: Vec<u32> = reflectors.iter().map(|r| r.fan_out).collect();
    let mut carried = vec![0usize; reflectors.len()];

    let mut order: Vec<&StreamLoad<'_>> = (streams.iter())
        .filter(|s| s.viewers > 0 && !s.seeders.is_empty())
        .collect();
    order.sort_by(|a, b| (b.viewers, a.id).cmp(&(a.viewers, b.id)));
    for s in order {
        let ranked = Rendezvous::new(id_hash(s.id), &hashes, reflectors);
        let tree = Tree::pick(s, ranked, reflectors, &left, &carried);
        if tree.chosen.is_empty() {
            continue;
        }
        let placed = tree.place(s, reflectors, &mut left, &mut carried);
        plan.insert(s.id, placed);
    }
    for streams in plan.by_reflector.values_mut() {
        streams.sort_unstable();
    }
    plan
}

/// One stream's reflectors, as indices into the round's reflectors:
/// `chosen[..2]` are tier 1 (fed by the seeders), the rest tier 2 (fed by
/// both tier-1 reflectors).
#[derive(Debug)]
struct Tree {
    chosen: Vec<usize>,
    /// Whether the tier-1 reflectors feed each other (the stream has a
    /// single seeder, so each needs a second parent).
    cross: bool,
}

impl Tree {
    /// Picks the stream's reflectors in rendezvous order, skipping those
    /// whose fan-out or stream count is used up.
    fn pick(
        s: &StreamLoad<'_>,
        mut ranked: Rendezvous<'_>,
        reflectors: &[ReflectorSlot<'_>],
        left: &[u32],
        carried: &[usize],
    ) -> Tree {
        let cap = |i: usize| left[i].min(MAX_DEGREE);
        let free = |i: usize| cap(i) >= 1 && carried[i] < MAX_CARRYING;
        let total = reflectors.len() as u32;
        let want = sessions_needed(s.viewers)
            .div_ceil(MAX_DEGREE)
            .clamp(total.min(2), total) as usize;
        // With one seeder, each tier-1 reflector also feeds the other: it
        // needs a session for that besides one for viewers.
        let single = s.seeders.len() < 2;
        let tier1_free = |i: usize| free(i) && (!single || cap(i) >= 2);

        let mut chosen = Vec::with_capacity(want);
        let Some(first) = ranked.next(tier1_free) else {
            return Tree {
                chosen,
                cross: false,
            };
        };
        chosen.push(first);
        let domain = reflectors[first].domain;
        let apart = |i: usize| domain.is_none() || reflectors[i].domain != domain;
        let second = (want >= 2)
            .then(|| ranked.next_preferring(tier1_free, apart))
            .flatten();
        let Some(second) = second else {
            return Tree {
                chosen,
                cross: false,
            };
        };
        chosen.push(second);

        // Each tier-2 reflector costs both tier-1 reflectors a session;
        // each keeps one for its own viewers.
        let feeds = usize::from(single);
        let room = |i: usize| (cap(i) as usize).saturating_sub(1 + feeds);
        let children = room(first).min(room(second)).min(want - 2);
        while chosen.len() < 2 + children {
            let Some(next) = ranked.next(free) else {
                break;
            };
            chosen.push(next);
        }
        Tree {
            chosen,
            cross: single,
        }
    }

    /// Gives each chosen reflector its parents and its share, and takes
    /// both from what is left of the reflectors' fan-out.
    fn place(
        &self,
        s: &StreamLoad<'_>,
        reflectors: &[ReflectorSlot<'_>],
        left: &mut [u32],
        carried: &mut [usize],
    ) -> Vec<Placement> {
        let tier1 = &self.chosen[..self.chosen.len().min(2)];
        let children = self.chosen.len() - tier1.len();
        let reflector = |i: usize| Parent {
            peer_id: reflectors[i].id.to_owned(),
            role: Role::Reflector,
        };
        let per = sessions_needed(s.viewers).div_ceil(self.chosen.len() as u32);
        let mut placed = Vec::with_capacity(self.chosen.len());
        for (rank, &i) in self.chosen.iter().enumerate() {
            let me = reflectors[i].id;
            let (parents, feeds) = if rank < 2 {
                let mut parents: Vec<Parent> = (s.seeders.iter())
                    .filter(|&&id| id != me)
                    .take(2)
                    .map(|&id| Parent {
                        peer_id: id.to_owned(),
                        role: Role::Seeder,
                    })
                    .collect();
                let other = tier1.iter().copied().find(|&j| j != i);
                if let Some(j) = other.filter(|_| parents.len() < 2) {
                    parents.push(reflector(j));
                }
                (
                    parents,
                    children + usize::from(self.cross && other.is_some()),
                )
            } else {
                (tier1.iter().map(|&j| reflector(j)).collect(), 0)
            };
            let feeds = feeds as u32;
            let cap = left[i].min(MAX_DEGREE);
            let share = per.min(cap.saturating_sub(feeds)).max(1);
            let max_degree = (share + feeds).min(cap);
            left[i] -= max_degree;
            carried[i] += 1;
            placed.push(Placement {
                reflector: me.to_owned(),
                parents,
                max_degree,
            });
        }
        placed
    }
}

/// The round's reflectors in one stream's rendezvous order, drawn lazily:
/// a stream usually needs its first few of them, not all sorted.
struct Rendezvous<'a> {
    /// Highest score first; equal scores by id, whatever the slice's order.
    heap: BinaryHeap<(u64, Reverse<&'a str>, usize)>,
    /// Drawn but not taken: served first, in order.
    skipped: VecDeque<usize>,
}

impl<'a> Rendezvous<'a> {
    fn new(stream: u64, hashes: &[u64], reflectors: &[ReflectorSlot<'a>]) -> Self {
        let heap = (reflectors.iter().enumerate())
            .map(|(i, r)| (mix(stream ^ hashes[i]), Reverse(r.id), i))
            .collect();
        Rendezvous {
            heap,
            skipped: VecDeque::new(),
        }
    }

    /// The next reflector that is `ok`; the others are kept for later draws.
    fn next(&mut self, ok: impl Fn(usize) -> bool) -> Option<usize> {
        self.next_preferring(ok, |_| true)
    }

    /// The next `ok` reflector that is also `preferred`, else the first
    /// `ok` one; the others are kept for later draws.
    fn next_preferring(
        &mut self,
        ok: impl Fn(usize) -> bool,
        preferred: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let wanted = |i: usize| ok(i) && preferred(i);
        if let Some(at) = self.skipped.iter().position(|&i| wanted(i)) {
            return self.skipped.remove(at);
        }
        while let Some((_, _, i)) = self.heap.pop() {
            if wanted(i) {
                return Some(i);
            }
            self.skipped.push_back(i);
        }
        let at = self.skipped.iter().position(|&i| ok(i))?;
        self.skipped.remove(at)
    }
}

/// A stable 64-bit hash of an id (FNV-1a, then mixed): the same in every
/// process and build, so two trackers given the same input agree.
fn id_hash(id: &str) -> u64 {
    let fnv = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    mix(fnv)
}

/// SplitMix64's finaliser: every input bit moves every output bit.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// Owned inputs, so tests can build and change them freely.
    #[derive(Debug, Clone)]
    struct World {
        /// (id, viewers, seeders)
        streams: Vec<(String, u32, Vec<String>)>,
        /// (id, fan-out, domain)
        reflectors: Vec<(String, u32, Option<String>)>,
    }

    impl World {
        fn new(streams: &[(u32, usize)], reflectors: usize, fan_out: u32) -> Self {
            let streams = (streams.iter().enumerate())
                .map(|(i, &(viewers, seeders))| {
                    let seeders = (0..seeders).map(|k| format!("s{i}-{k}")).collect();
                    (format!("stream{i}"), viewers, seeders)
                })
                .collect();
            let reflectors = (0..reflectors)
                .map(|i| (format!("r{i}"), fan_out, None))
                .collect();
            World {
                streams,
                reflectors,
            }
        }

        fn plan(&self) -> Plan {
            let streams: Vec<StreamLoad<'_>> = (self.streams.iter())
                .map(|(id, viewers, seeders)| StreamLoad {
                    id,
                    viewers: *viewers,
                    seeders: seeders.iter().map(String::as_str).collect(),
                })
                .collect();
            let reflectors: Vec<ReflectorSlot<'_>> = (self.reflectors.iter())
                .map(|(id, fan_out, domain)| ReflectorSlot {
                    id,
                    fan_out: *fan_out,
                    domain: domain.as_deref(),
                })
                .collect();
            assign(&streams, &reflectors)
        }

        /// Checks what every plan must hold, whatever the input.
        fn check(&self, plan: &Plan) {
            let fan_out: HashMap<&str, u32> = (self.reflectors.iter())
                .map(|(id, f, _)| (id.as_str(), *f))
                .collect();
            let mut used: HashMap<&str, u32> = HashMap::new();
            for (stream, _, seeders) in &self.streams {
                let placed = plan.of_stream(stream);
                let ids: HashSet<&str> = placed.iter().map(|p| p.reflector.as_str()).collect();
                assert_eq!(ids.len(), placed.len(), "a reflector placed twice");
                for p in placed {
                    assert!((1..=MAX_DEGREE).contains(&p.max_degree), "{p:?}");
                    *used.entry(&p.reflector).or_default() += p.max_degree;
                    assert!(
                        p.parents.iter().all(|q| q.peer_id != p.reflector),
                        "self-parent"
                    );
                    let parents: HashSet<&str> =
                        p.parents.iter().map(|q| q.peer_id.as_str()).collect();
                    assert_eq!(parents.len(), p.parents.len(), "a parent twice");
                    // Infrastructure above it: the seeders, and the other
                    // reflectors for a tier-1 one; both tier-1 for others.
                    let above = seeders.len() + placed.len().min(2) - 1;
                    assert!(p.parents.len() >= above.min(2), "{stream}: {p:?}");
                    for q in &p.parents {
                        let known = match q.role {
                            Role::Seeder => seeders.contains(&q.peer_id),
                            _ => ids.contains(q.peer_id.as_str()),
                        };
                        assert!(known, "{q:?} is not of {stream}");
                    }
                    // It keeps a session for viewers besides its feeds.
                    let feeds = (placed.iter())
                        .filter(|c| c.parents.iter().any(|q| q.peer_id == p.reflector))
                        .count() as u32;
                    assert!(feeds < p.max_degree, "{p:?} feeds {feeds}");
                }
            }
            for (id, n) in used {
                assert!(n <= fan_out[id], "{id} holds {n} of {}", fan_out[id]);
            }
        }
    }

    #[test]
    fn streams_get_two_reflectors_fed_by_two_parents() {
        let w = World::new(&[(100, 2), (10, 1), (0, 1), (50, 0)], 6, 1000);
        let plan = w.plan();
        w.check(&plan);
        let two_seeders = plan.of_stream("stream0");
        assert_eq!(two_seeders.len(), 2);
        for p in two_seeders {
            let parents: Vec<_> = p.parents.iter().map(|q| q.role).collect();
            assert_eq!(parents, [Role::Seeder, Role::Seeder]);
            // 100 viewers: at least 8 sessions, 4 each.
            assert_eq!(p.max_degree, 4);
        }
        let one_seeder = plan.of_stream("stream1");
        assert_eq!(one_seeder.len(), 2);
        for p in one_seeder {
            let parents: Vec<_> = p.parents.iter().map(|q| q.role).collect();
            assert_eq!(parents, [Role::Seeder, Role::Reflector]);
            assert_eq!(p.max_degree, 5, "4 for viewers and 1 to feed the other");
        }
        assert!(plan.of_stream("stream2").is_empty(), "no viewers");
        assert!(plan.of_stream("stream3").is_empty(), "no seeder");
    }

    #[test]
    fn a_large_stream_gets_a_second_tier_fed_by_the_first() {
        // 100,000 viewers: 400 sessions, 7 reflectors.
        let w = World::new(&[(100_000, 1)], 20, 1000);
        let plan = w.plan();
        w.check(&plan);
        let placed = plan.of_stream("stream0");
        assert_eq!(placed.len(), 7);
        let tier1: Vec<&str> = placed[..2].iter().map(|p| p.reflector.as_str()).collect();
        for p in &placed[2..] {
            let parents: Vec<&str> = p.parents.iter().map(|q| q.peer_id.as_str()).collect();
            assert_eq!(parents, tier1);
        }
        // Tier 1 feeds five reflectors and each other.
        assert_eq!(placed[0].max_degree, 58 + 6);
        assert_eq!(placed[2].max_degree, 58);
    }

    #[test]
    fn one_reflector_takes_what_exists() {
        let w = World::new(&[(10, 1), (10, 3)], 1, 100);
        let plan = w.plan();
        w.check(&plan);
        assert_eq!(plan.of_stream("stream0")[0].parents.len(), 1);
        assert_eq!(plan.of_stream("stream1")[0].parents.len(), 2);
    }

    #[test]
    fn tier_one_spans_two_failure_domains_when_it_can() {
        let mut w = World::new(&[(10, 2)], 8, 100);
        for (i, r) in w.reflectors.iter_mut().enumerate() {
            r.2 = Some(if i == 7 { "b" } else { "a" }.into());
        }
        let plan = w.plan();
        let placed = plan.of_stream("stream0");
        assert_eq!(placed.len(), 2);
        assert!(placed.iter().any(|p| p.reflector == "r7"), "{placed:?}");
    }

    #[test]
    fn used_up_fan_out_is_skipped_and_smaller_streams_go_without() {
        // Two reflectors of fan-out 10: the big stream (8 sessions) takes
        // 4 + 1 of each; the next two take the rest; the last finds none.
        let w = World::new(&[(1000, 1), (8, 1), (8, 1), (8, 1)], 2, 10);
        let plan = w.plan();
        w.check(&plan);
        assert_eq!(plan.of_stream("stream0").len(), 2);
        let carried = (1..4)
            .filter(|i| !plan.of_stream(&format!("stream{i}")).is_empty())
            .count();
        assert!(carried < 3, "fan-out ran out");
    }

    #[test]
    fn budget_goes_by_max_degree() {
        let w = World::new(&[(40_000, 2)], 3, 1000);
        let plan = w.plan();
        let placed = plan.of_stream("stream0");
        let shares: Vec<u64> = (placed.iter())
            .map(|p| {
                plan.budget_share("stream0", &p.reflector, 1_000_000)
                    .unwrap()
            })
            .collect();
        assert!(shares.iter().sum::<u64>() <= 1_000_000);
        assert!(
            shares[0] > shares[2],
            "tier 1 also feeds tier 2: {shares:?}"
        );
        assert_eq!(plan.budget_share("stream0", "nobody", 1_000_000), None);
    }

    fn world() -> impl Strategy<Value = World> {
        let streams = prop::collection::vec((0u32..50_000, 0usize..4), 0..12);
        let reflectors = prop::collection::vec((1u32..200, prop::option::of(0u8..3)), 0..12);
        (streams, reflectors).prop_map(|(streams, reflectors)| {
            let mut w = World::new(&streams, 0, 0);
            w.reflectors = (reflectors.into_iter().enumerate())
                .map(|(i, (f, d))| (format!("r{i}"), f, d.map(|d| format!("d{d}"))))
                .collect();
            w
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_plan_keeps_the_rules(w in world()) {
            w.check(&w.plan());
        }

        #[test]
        fn the_order_of_the_input_does_not_matter(w in world()) {
            let mut shuffled = w.clone();
            shuffled.streams.reverse();
            shuffled.reflectors.reverse();
            prop_assert_eq!(w.plan(), shuffled.plan());
        }

        /// With fan-out to spare, a reflector's leaving moves only the
        /// streams it carried.
        #[test]
        fn a_leaving_reflector_moves_only_its_streams(
            viewers in prop::collection::vec((1u32..5_000, 1usize..3), 1..12),
            reflectors in 3usize..12,
            gone in 0usize..12,
        ) {
            let w = World::new(&viewers, reflectors, 4096);
            let before = w.plan();
            let mut after = w.clone();
            let gone = after.reflectors.remove(gone % reflectors).0;
            let after = after.plan();
            for (stream, ..) in &w.streams {
                let had = before.of_stream(stream).iter().any(|p| p.reflector == gone);
                if !had {
                    prop_assert_eq!(before.of_stream(stream), after.of_stream(stream));
                } else {
                    prop_assert!(after.of_stream(stream).iter().all(|p| p.reflector != gone));
                }
            }
        }
    }
}
