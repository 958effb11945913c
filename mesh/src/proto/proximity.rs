//! How close two peers are, as far as can be told before measuring: the
//! one rule behind the engine's neighbour score, the tracker's ranking of
//! candidates and the simulator's model of that tracker.
//!
//! A predicted RTT (network coordinates, §6.8) is discounted by locality:
//! a peer in the same /24 (IPv6 /48) counts at half its RTT, one in the
//! same AS at three quarters (Panda Live: subnet and AS affinity keep
//! traffic inside networks, which is cheaper and steadier than RTT alone
//! says).

use rand::Rng;

use super::{coords::Coord, wire::Locality};

/// What the same /24 (or /48) makes of a distance.
pub const SUBNET_AFFINITY: f32 = 0.5;
/// What the same AS (a different subnet) makes of a distance.
pub const AS_AFFINITY: f32 = 0.75;
/// Coordinates less sure than this (relative error) are not ranked by.
pub const MAX_RANK_COORD_ERROR: f32 = 1.0;

impl Locality {
    /// The discount `other`'s locality earns as seen from this one:
    /// [`SUBNET_AFFINITY`], [`AS_AFFINITY`] or 1. Unknown (zero) fields
    /// never match.
    pub fn affinity(&self, other: &Locality) -> f32 {
        if self.same_subnet(other) {
            SUBNET_AFFINITY
        } else if self.same_as(other) {
            AS_AFFINITY
        } else {
            1.0
        }
    }
}

/// A coordinate, if it is valid and its owner sure enough of it to rank by.
pub fn usable_coord(coord: Option<Coord>) -> Option<Coord> {
    coord.filter(|c| c.is_valid() && c.error < MAX_RANK_COORD_ERROR)
}

/// What a ranking knows of a peer.
#[derive(Clone, Copy, Debug)]
pub struct RankView {
    /// It has a neighbour slot free.
    pub has_free_degree: bool,
    pub coord: Option<Coord>,
    pub loc: Locality,
    /// Its neighbours now.
    pub degree: u32,
}

/// The `n` best of `pool` for a peer at `me` with coordinate `coord`, best
/// first (docs/protocol.md §12.3), by key ascending:
///
/// 1. no free degree last;
/// 2. proximity: predicted RTT in ms × [`Locality::affinity`], when both
///    coordinates are usable ([`usable_coord`]); peers without a
///    prediction after every peer with one;
/// 3. affinity itself (orders the peers without a prediction);
/// 4. the peer's own coordinate error, lowest first (for an announcer
///    without a usable coordinate: settled peers teach it its place);
/// 5. fewer neighbours first;
/// 6. random, to spread load (`rng`).
pub fn rank_best<T, R: Rng>(
    pool: impl Iterator<Item = T>,
    me: Locality,
    coord: Option<Coord>,
    n: usize,
    rng: &mut R,
    view: impl Fn(&T) -> RankView,
) -> Vec<T> {
    if n == 0 {
        return Vec::new();
    }
    let coord = usable_coord(coord);
    let mut ranked: Vec<_> = pool
        .map(|p| {
            let v = view(&p);
            let affinity = me.affinity(&v.loc);
            // Non-negative finite floats order as their bits do; no
            // prediction sorts after every one.
            let theirs = usable_coord(v.coord);
            let proximity = match (coord, theirs) {
                (Some(a), Some(b)) => (a.rtt_ms(&b) * affinity).max(0.0).to_bits(),
                _ => u32::MAX,
            };
            // Without a prediction, a peer whose coordinate has settled
            // first: a session with it teaches a newcomer its place in the
            // map, where one with another newcomer teaches nothing.
            let settled = theirs.map_or(u32::MAX, |c| c.error.to_bits());
            let key = (
                !v.has_free_degree,
                proximity,
                affinity.to_bits(),
                settled,
                v.degree,
                rng.gen::<u32>(),
            );
            (key, p)
        })
        .collect();
    if ranked.len() > n {
        ranked.select_nth_unstable_by_key(n - 1, |(key, _)| *key);
        ranked.truncate(n);
    }
    ranked.sort_unstable_by_key(|(key, _)| *key);
    ranked.into_iter().map(|(_, p)| p).collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn at(x: f32, asn: u32, subnet: u64) -> RankView {
        RankView {
            has_free_degree: true,
            coord: Some(Coord {
                x,
                y: 0.0,
                height: 0.0,
                error: 0.1,
            }),
            loc: Locality { asn, subnet },
            degree: 1,
        }
    }

    #[test]
    fn affinity_discounts_subnet_then_as_and_never_unknowns() {
        let me = Locality { asn: 7, subnet: 42 };
        assert_eq!(me.affinity(&Locality { asn: 7, subnet: 42 }), 0.5);
        assert_eq!(me.affinity(&Locality { asn: 7, subnet: 43 }), 0.75);
        assert_eq!(me.affinity(&Locality { asn: 8, subnet: 43 }), 1.0);
        assert_eq!(Locality::default().affinity(&Locality::default()), 1.0);
    }

    #[test]
    fn ranks_free_first_then_discounted_rtt_then_affinity() {
        let me = Locality { asn: 7, subnet: 42 };
        let origin = at(0.0, 7, 42).coord;
        let pool = vec![
            ("far", at(30.0, 9, 1)),
            ("same-as at 36", at(36.0, 7, 2)),   // 27 ms
            ("same /24 at 50", at(50.0, 7, 42)), // 25 ms
            (
                "near but full",
                RankView {
                    has_free_degree: false,
                    ..at(1.0, 9, 1)
                },
            ),
            (
                "no coordinate",
                RankView {
                    coord: None,
                    ..at(0.0, 7, 42)
                },
            ),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let best: Vec<&str> = rank_best(pool.into_iter(), me, origin, 5, &mut rng, |p| p.1)
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(
            best,
            [
                "same /24 at 50",
                "same-as at 36",
                "far",
                "no coordinate",
                "near but full"
            ]
        );
    }
}
