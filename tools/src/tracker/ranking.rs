//! Which peers an announcer is told about, and in what order
//! (docs/protocol.md §12.3): viewers get the candidates closest to them by
//! what the tracker can see (free degree, subnet, predicted RTT, AS),
//! infrastructure gets a fair sample of the swarm, and everyone gets the
//! stream's closest seeders/reflectors to fall back to.

use std::{collections::HashSet, net::IpAddr, sync::Arc, time::Instant};

use rand::{rngs::StdRng, seq::IteratorRandom};
use shoal_mesh::hints::{InfraHint, PeerHint, Role};
use shoal_mesh::proto::{
    proximity::{rank_best, RankView},
    Coord, Locality,
};
use shoal_mesh::reach::{reachable_from, Scope};

use super::registry::{MAX_SEEDER_HINTS, MIN_SCAN, SCAN_LIMIT, SCAN_PER_WANTED};
use super::swarm::{PeerEntry, Swarm};

pub(super) use shoal_mesh::proto::proximity::usable_coord;

/// One announce as the ranking sees it: who asks, for how many, and when.
#[derive(Debug)]
pub(super) struct Query<'a> {
    /// The announcer's own id as its entry holds it: told apart by
    /// pointer, so scanning a window never reads other peers' ids.
    pub(super) peer_id: &'a Arc<str>,
    pub(super) role: Role,
    pub(super) loc: Locality,
    /// Already filtered by [`usable_coord`].
    pub(super) coord: Option<Coord>,
    /// Where the announce came from.
    pub(super) seen_at: Option<IpAddr>,
    pub(super) want: usize,
    pub(super) now: Instant,
    /// The stream's serving reflectors, when it has any: its viewers then
    /// see no seeders, and its seeders no viewers (docs/coordinator.md).
    pub(super) reflectors: Option<&'a HashSet<&'a str>>,
}

impl Query<'_> {
    /// A live peer other than the announcer.
    fn usable(&self, p: &PeerEntry) -> bool {
        !Arc::ptr_eq(&p.peer_id, self.peer_id) && p.is_live(self.now)
    }

    /// `p`'s addresses the announcer can dial.
    fn addrs(&self, p: &PeerEntry) -> Vec<String> {
        reachable_from(&p.addrs, p.seen_at, self.seen_at)
            .cloned()
            .collect()
    }

    /// `p` has an address the announcer can dial. Called for every peer
    /// of the window, so a peer with a global address (or none that any
    /// peer can dial) is told from the scope kept with its entry, without
    /// parsing its addresses again.
    fn reaches(&self, p: &PeerEntry) -> bool {
        match p.widest {
            Scope::Global => true,
            Scope::Unroutable => false,
            Scope::Lan | Scope::Host => reachable_from(&p.addrs, p.seen_at, self.seen_at)
                .next()
                .is_some(),
        }
    }
}

/// Up to `q.want` neighbour candidates for the announcer, best first.
pub(super) fn candidates(swarm: &Swarm, q: &Query<'_>, rng: &mut StdRng) -> Vec<PeerHint> {
    let usable = |p: &&PeerEntry| q.usable(p);
    let reflected = q.reflectors.is_some();
    // Seeders of a reflected stream feed its reflectors only, which dial them.
    let hide_seeders = reflected && q.role == Role::Viewer;
    let hide_viewers = reflected && q.role == Role::Seeder;
    // Infra only as a neighbour with room to spare: otherwise it is a fallback.
    let scan = (q.want * SCAN_PER_WANTED).clamp(MIN_SCAN, SCAN_LIMIT);
    let infra = swarm.infra.window(scan, rng).filter(usable);
    let candidates = infra.filter(|p| p.has_free_degree() && q.reaches(p));
    let candidates = candidates.filter(|p| !(hide_seeders && p.role == Role::Seeder));
    let viewers = swarm.viewers.window(scan, rng).filter(usable);
    let viewers = viewers.filter(|_| !hide_viewers);
    let candidates = candidates.chain(viewers.filter(|p| q.reaches(p)));
    let candidates = if q.role.is_infra() {
        // Infrastructure spreads its pushes over the map, choosing by
        // coordinates itself: it gets a fair sample of the swarm.
        candidates.choose_multiple(rng, q.want)
    } else {
        best(candidates, q.loc, q.coord, q.want, rng)
    };
    candidates
        .into_iter()
        .map(|p| PeerHint {
            peer_id: p.peer_id.to_string(),
            addrs: q.addrs(p),
            role: p.role,
            degree: p.degree,
            max_degree: p.max_degree,
            coord: p.coord,
            loc: p.loc,
        })
        .collect()
}

/// The stream's seeders/reflectors closest to the announcer, at most
/// [`MAX_SEEDER_HINTS`], whether or not they have room for a neighbour; a
/// viewer of a reflected stream is given its serving reflectors only.
pub(super) fn fallbacks(swarm: &Swarm, q: &Query<'_>, rng: &mut StdRng) -> Vec<InfraHint> {
    let only = q.reflectors.filter(|_| q.role == Role::Viewer);
    let infra = swarm.infra.window(SCAN_LIMIT, rng).filter(|p| q.usable(p));
    let infra = infra.filter(|p| only.is_none_or(|set| set.contains(&*p.peer_id)));
    best(infra, q.loc, q.coord, MAX_SEEDER_HINTS, rng)
        .into_iter()
        .map(|p| InfraHint {
            peer_id: p.peer_id.to_string(),
            addrs: q.addrs(p),
            http: p.http.clone(),
        })
        .collect()
}

/// The `n` best of `pool` for an announcer at `me` / `coord`: the one
/// ranking rule of `proto::proximity`, which the simulator's model of the
/// tracker calls too.
fn best<'a>(
    pool: impl Iterator<Item = &'a PeerEntry>,
    me: Locality,
    coord: Option<Coord>,
    n: usize,
    rng: &mut StdRng,
) -> Vec<&'a PeerEntry> {
    rank_best(pool, me, coord, n, rng, |p| RankView {
        has_free_degree: p.has_free_degree(),
        coord: p.coord,
        loc: p.loc,
        degree: p.degree,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use shoal_mesh::hints::{Announce, MAX_WANT};

    use super::*;
    use crate::tracker::{fixtures::*, Registry, TrackerConfig, SCAN_LIMIT};

    #[test]
    fn candidates_rank_by_predicted_rtt() {
        let mut reg = Registry::new(TrackerConfig::default(), 1);
        let now = Instant::now();
        for (id, x) in [("far", 300.0), ("near", 10.0), ("mid", 100.0)] {
            let mut a = peer(id, "10.0.0.1", Role::Viewer, 1, 8);
            a.coord = at(x, 0.0);
            reg.announce(a, None, now).unwrap();
        }
        let unsure = Announce {
            coord: Some(Coord {
                error: 1.4,
                ..at(300.0, 0.0).unwrap()
            }),
            ..peer("me", "10.0.0.1", Role::Viewer, 0, 8)
        };
        let mut me = peer("me", "10.0.0.1", Role::Viewer, 0, 8);
        me.coord = at(0.0, 0.0);
        let hints = reg.announce(me, None, now).unwrap();
        let order: Vec<&str> = hints
            .candidates
            .iter()
            .map(|c| c.peer_id.as_str())
            .collect();
        assert_eq!(order, ["near", "mid", "far"]);
        assert_eq!(hints.candidates[0].coord, at(10.0, 0.0));
        // A coordinate its owner is unsure of is not used to rank.
        assert!(reg.announce(unsure, None, now).is_ok());
    }

    /// A seeder spreads its pushes over the map itself: it is handed a
    /// sample of the swarm, not the viewers closest to it.
    #[test]
    fn infrastructure_gets_a_sample_not_the_nearest() {
        let mut reg = Registry::new(TrackerConfig::default(), 1);
        let now = Instant::now();
        for i in 0..40u8 {
            let mut a = peer(&format!("v{i}"), "10.0.0.1", Role::Viewer, 1, 8);
            // Half near the seeder, half 300 ms away.
            a.coord = at(if i % 2 == 0 { 1.0 } else { 300.0 }, f32::from(i));
            reg.announce(a, None, now).unwrap();
        }
        let mut seeder = peer("seeder", "10.0.0.1", Role::Seeder, 0, 8);
        seeder.coord = at(0.0, 0.0);
        seeder.want = 10;
        let hints = reg.announce(seeder, None, now).unwrap();
        assert_eq!(hints.candidates.len(), 10);
        let far = hints
            .candidates
            .iter()
            .filter(|c| c.coord.is_some_and(|c| c.x > 100.0))
            .count();
        assert!((1..10).contains(&far), "{far} of 10 far");
        // A viewer in the same place gets the nearest.
        let mut me = peer("me", "10.0.0.1", Role::Viewer, 0, 8);
        me.coord = at(0.0, 0.0);
        me.want = 10;
        let hints = reg.announce(me, None, now).unwrap();
        assert!(hints.candidates.iter().all(|c| c.coord.unwrap().x < 100.0));
    }

    #[test]
    fn free_degree_first_then_subnet_then_fewer_neighbours() {
        let (mut r, t) = (registry(), Instant::now());
        r.announce(viewer("full-near", "10.0.0.9", 8), None, t)
            .unwrap();
        r.announce(viewer("far-2", "10.9.9.9", 2), None, t).unwrap();
        r.announce(viewer("near-5", "10.0.0.5", 5), None, t)
            .unwrap();
        r.announce(viewer("near-1", "10.0.0.4", 1), None, t)
            .unwrap();
        r.announce(viewer("far-0", "192.168.1.1", 0), None, t)
            .unwrap();
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
        assert_eq!(
            ids(&hints),
            ["near-1", "near-5", "far-0", "far-2", "full-near"]
        );
    }

    #[test]
    fn answers_localities_and_ranks_subnet_then_as() {
        let mut r = with_asn_table("10.0.0.0/16,64500\n10.1.0.0/16,64501\n198.51.100.0/24,64502");
        let t = Instant::now();
        r.announce(viewer("other-as", "10.1.0.5", 0), None, t)
            .unwrap();
        r.announce(viewer("no-as", "192.0.2.1", 1), None, t)
            .unwrap();
        r.announce(viewer("same-as", "10.0.7.5", 5), None, t)
            .unwrap();
        r.announce(viewer("same-24", "10.0.0.9", 7), None, t)
            .unwrap();
        r.announce(viewer("same-24-full", "10.0.0.8", 8), None, t)
            .unwrap();
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
        assert_eq!(hints.you, loc("10.0.0.1", 64500));
        // Free degree first; then the /24, then the AS, then fewer neighbours.
        assert_eq!(
            ids(&hints),
            ["same-24", "same-as", "other-as", "no-as", "same-24-full"]
        );
        let loc_of = |id: &str| {
            hints
                .candidates
                .iter()
                .find(|c| c.peer_id == id)
                .unwrap()
                .loc
        };
        assert_eq!(loc_of("same-as"), loc("10.0.7.5", 64500));
        assert_eq!(loc_of("other-as"), loc("10.1.0.5", 64501));
        assert_eq!(loc_of("no-as"), loc("192.0.2.1", 0), "not in the table");

        // The AS (like the subnet) is that of a public request address.
        let hints = r
            .announce(
                viewer("me", "10.0.0.1", 0),
                Some("198.51.100.7".parse().unwrap()),
                t,
            )
            .unwrap();
        assert_eq!(hints.you, loc("198.51.100.7", 64502));
        let detail = r.stream_detail(&stream(1), t).unwrap();
        let me = detail.peers.iter().find(|p| p.peer_id == "me").unwrap();
        assert_eq!(me.loc, loc("198.51.100.7", 64502));

        // No address at all: unknown.
        let mut nowhere = viewer("nowhere", "0.0.0.0", 0);
        nowhere.addrs.clear();
        let hints = r.announce(nowhere, None, t).unwrap();
        assert_eq!(hints.you, Locality::default());
    }

    /// The engine's rule (`proto::proximity`): predicted RTT × 0.5 in the
    /// same /24, × 0.75 in the same AS; no tier for the subnet.
    #[test]
    fn predicted_rtt_discounted_by_locality() {
        let mut r = with_asn_table("10.0.0.0/16,64500\n10.1.0.0/16,64501");
        let t = Instant::now();
        // Predicted RTT = distance + both heights (1 + 1).
        for (id, ip, x) in [
            ("far-same-as", "10.0.9.1", 38.0),  // 40 ms × 0.75 = 30
            ("near-other", "10.1.0.1", 26.0),   // 28 ms
            ("mid-other", "10.1.0.2", 33.0),    // 35 ms
            ("same-24-far", "10.0.0.2", 200.0), // 202 ms × 0.5 = 101
            ("same-24-mid", "10.0.0.3", 56.0),  // 58 ms × 0.5 = 29
        ] {
            let mut a = viewer(id, ip, 0);
            a.coord = at(x, 0.0);
            r.announce(a, None, t).unwrap();
        }
        // No coordinate: after every predicted peer, its AS first.
        r.announce(viewer("unknown-other", "10.1.0.3", 0), None, t)
            .unwrap();
        r.announce(viewer("unknown-same-as", "10.0.9.9", 0), None, t)
            .unwrap();
        let mut me = viewer("me", "10.0.0.1", 0);
        me.coord = at(0.0, 0.0);
        let hints = r.announce(me, None, t).unwrap();
        assert_eq!(
            ids(&hints),
            [
                "near-other",
                "same-24-mid",
                "far-same-as",
                "mid-other",
                "same-24-far",
                "unknown-same-as",
                "unknown-other"
            ]
        );
    }

    #[test]
    fn ranking_is_reproducible_from_the_seed() {
        let answer = |seed| {
            let mut r = Registry::new(TrackerConfig::default(), seed);
            let t = Instant::now();
            for i in 0..40 {
                r.announce(viewer(&format!("p{i}"), "10.0.0.1", 0), None, t)
                    .unwrap();
            }
            let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
            ids(&hints)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(answer(3), answer(3));
        assert_ne!(answer(3), answer(4), "ties are broken at random");
    }

    #[test]
    fn ipv6_uses_the_48_and_public_remote_wins() {
        let v6 = |id: &str, ip: &str| {
            let mut a = viewer(id, "0.0.0.0", 0);
            a.addrs = vec![format!("/ip6/{ip}/udp/1/quic-v1")];
            a
        };
        let (mut r, t) = (registry(), Instant::now());
        r.announce(v6("far", "2001:db8:2::1"), None, t).unwrap();
        r.announce(v6("near", "2001:db8:1:ffff::1"), None, t)
            .unwrap();
        let hints = r.announce(v6("me", "2001:db8:1::1"), None, t).unwrap();
        assert_eq!(ids(&hints), ["near", "far"]);

        // Two homes announcing the same private /24 are told apart by the
        // public addresses they connect from, and neither is given the
        // other's private address: it would dial its own LAN.
        let (mut r, t) = (registry(), Instant::now());
        let home = |id, public: &str| {
            let mut a = viewer(id, "192.168.1.2", 0);
            a.addrs.push(format!("/ip4/{public}/tcp/7091"));
            a
        };
        let remote = |ip: &str| Some(ip.parse().unwrap());
        r.announce(
            home("other-home", "198.51.100.7"),
            remote("198.51.100.7"),
            t,
        )
        .unwrap();
        r.announce(home("same-isp", "203.0.113.99"), remote("203.0.113.99"), t)
            .unwrap();
        r.announce(
            viewer("lan-only", "192.168.1.3", 0),
            remote("198.51.100.8"),
            t,
        )
        .unwrap();
        let hints = r
            .announce(home("me", "203.0.113.5"), remote("203.0.113.5"), t)
            .unwrap();
        assert_eq!(ids(&hints), ["same-isp", "other-home"]);
        for c in &hints.candidates {
            assert!(c.addrs.iter().all(|a| !a.contains("192.168.")), "{c:?}");
        }

        // Behind the same NAT, the private address is the one to dial.
        let hints = r
            .announce(home("housemate", "198.51.100.7"), remote("198.51.100.7"), t)
            .unwrap();
        let other = hints
            .candidates
            .iter()
            .find(|c| c.peer_id == "other-home")
            .unwrap();
        assert!(other.addrs.iter().any(|a| a.contains("192.168.1.2")));
    }

    #[test]
    fn never_more_candidates_than_wanted() {
        let (mut r, t) = (registry(), Instant::now());
        for i in 0..300 {
            r.announce(viewer(&format!("p{i}"), "10.0.0.1", 0), None, t)
                .unwrap();
        }
        for (want, got) in [(0, 0), (1, 1), (10, 10), (150, 150), (5000, 200)] {
            let mut me = viewer("me", "10.0.0.1", 0);
            me.want = want;
            let hints = r.announce(me, None, t).unwrap();
            assert_eq!(hints.candidates.len(), got, "want {want}");
        }
    }

    #[test]
    fn large_swarm_is_sampled_within_want() {
        let (mut r, t) = (registry(), Instant::now());
        for i in 0..SCAN_LIMIT + 500 {
            r.announce(viewer(&format!("p{i}"), "10.0.0.1", 1), None, t)
                .unwrap();
        }
        let mut me = viewer("p0", "10.0.0.1", 0);
        me.want = MAX_WANT;
        let hints = r.announce(me, None, t).unwrap();
        let mut got = ids(&hints);
        assert_eq!(got.len(), MAX_WANT as usize);
        assert!(!got.contains(&"p0"));
        got.sort_unstable();
        got.dedup();
        assert_eq!(got.len(), MAX_WANT as usize, "no duplicates");
    }

    #[test]
    fn seeders_listed_and_infra_candidates_need_free_degree() {
        let (mut r, t) = (registry(), Instant::now());
        let mut seeder = peer("seed", "10.0.0.2", Role::Seeder, 4, 4);
        seeder.http = Some("http://10.0.0.2:8080".into());
        r.announce(seeder, None, t).unwrap();
        r.announce(peer("refl", "10.0.0.3", Role::Reflector, 1, 16), None, t)
            .unwrap();
        r.announce(viewer("v", "10.0.0.4", 0), None, t).unwrap();
        let hints = r.announce(viewer("me", "10.0.0.1", 0), None, t).unwrap();
        let mut cands = ids(&hints);
        cands.sort_unstable();
        assert_eq!(cands, ["refl", "v"], "a full seeder is no candidate");
        let mut infra: Vec<_> = hints.seeders.iter().map(|s| s.peer_id.as_str()).collect();
        infra.sort_unstable();
        assert_eq!(infra, ["refl", "seed"]);
        let seed = hints.seeders.iter().find(|s| s.peer_id == "seed").unwrap();
        assert_eq!(seed.http.as_deref(), Some("http://10.0.0.2:8080"));

        // A seeder never gets itself back.
        let hints = r
            .announce(peer("seed", "10.0.0.2", Role::Seeder, 4, 4), None, t)
            .unwrap();
        assert!(hints.seeders.iter().all(|s| s.peer_id != "seed"));
        assert!(!ids(&hints).contains(&"seed"));
    }
}
