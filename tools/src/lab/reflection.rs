//! What reflection did to each stream of a run with reflectors: how many
//! copies its seeder sent against what the coordinator's parent scheme
//! needs of it, what its reflectors sent, and whose payload its viewers'
//! infrastructure share was (docs/lab.md §7.2).

use shoal_mesh::proto::Stats;

use super::{
    reflectors::LabReflectors,
    result::StreamReflection,
    system::Infra,
    upload_split::{from_reflectors, UploadSplit},
};

/// Viewers one entry point of infrastructure serves: the engine's spread
/// rule (protocol.md §6.10, coordinator.md "Sessions a stream needs").
const VIEWERS_PER_ENTRY: usize = 250;

/// A stream's reflector tree as the tracker's last round left it
/// (`GET /v1/streams/{id}`, `reflectors`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tree {
    pub reflectors: usize,
    /// Reflectors that have one of the stream's seeders among their parents.
    pub fed_by_seeder: usize,
}

impl Tree {
    /// Reads the tree from a stream's detail; none without the field.
    pub(crate) fn of_detail(detail: &serde_json::Value) -> Tree {
        let records = detail
            .get("reflectors")
            .and_then(|r| r.as_array())
            .map_or(&[][..], Vec::as_slice);
        let fed = |r: &serde_json::Value| {
            (r.get("parents").and_then(|p| p.as_array()))
                .is_some_and(|ps| ps.iter().any(|p| p["role"] == "seeder"))
        };
        Tree {
            reflectors: records.len(),
            fed_by_seeder: records.iter().filter(|r| fed(r)).count(),
        }
    }

    /// Copies of the stream its seeder must send: one to each reflector
    /// feeding from it; unreflected, one per entry point of the spread.
    pub(crate) fn seeder_copies_needed(&self, viewers: usize) -> f64 {
        if self.fed_by_seeder > 0 {
            self.fed_by_seeder as f64
        } else {
            viewers.div_ceil(VIEWERS_PER_ENTRY).max(1) as f64
        }
    }
}

/// One stream's seeder, with what its links carried to viewers.
pub(crate) struct SeederSide<'a> {
    pub infra: &'a Infra,
    pub split: &'a UploadSplit,
    pub viewers: usize,
    pub tree: Tree,
}

/// Infrastructure payload that reached one stream's viewers, by source.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ToViewers {
    pub seeder: u64,
    pub reflectors: u64,
}

/// The stream's reflection figures over a run of `duration_s` seconds,
/// and what reached its viewers from whom.
pub(crate) fn stream_reflection(
    seeder: &SeederSide<'_>,
    reflectors: &LabReflectors,
    duration_s: f64,
) -> (StreamReflection, ToViewers) {
    let (seeder_stats, seeder_http) = seeder.infra.egress();
    let seeder_mesh: u64 = seeder_stats.iter().map(|s: &Stats| s.payload_sent).sum();
    let published = seeder.infra.published();
    let refl = reflectors.stream_egress(seeder.infra.stream());
    let refl_mesh: u64 = refl.mesh.iter().map(|s| s.payload_sent).sum();
    let to_viewers = ToViewers {
        seeder: seeder.split.to_viewers(seeder_mesh) + seeder_http,
        reflectors: refl.to_viewers,
    };
    let bps = |bytes: u64| bytes as f64 * 8.0 / duration_s.max(1e-9);
    let reflection = StreamReflection {
        published_bytes: published,
        seeder_copies: (seeder_mesh + seeder_http) as f64 / published.max(1) as f64,
        seeder_copies_needed: seeder.tree.seeder_copies_needed(seeder.viewers),
        reflectors: seeder.tree.reflectors,
        fed_by_seeder: seeder.tree.fed_by_seeder,
        reflectors_mesh_bps: bps(refl_mesh),
        reflectors_http_bps: bps(refl.http),
        fallback_from_reflectors: from_reflectors(to_viewers.seeder, to_viewers.reflectors),
    };
    (reflection, to_viewers)
}

/// The run's share of viewers' infrastructure payload from reflectors.
pub(crate) fn run_share(per_stream: &[ToViewers]) -> Option<f64> {
    from_reflectors(
        per_stream.iter().map(|t| t.seeder).sum(),
        per_stream.iter().map(|t| t.reflectors).sum(),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_seeder_owes_a_copy_to_each_reflector_it_feeds() {
        // Two tier-1 reflectors fed by the seeder (and each other), one
        // tier-2 fed by them.
        let detail = json!({ "budget_bps": 1, "reflectors": [
            { "peer_id": "a", "parents": [{ "peer_id": "s", "role": "seeder" },
                                          { "peer_id": "b", "role": "reflector" }] },
            { "peer_id": "b", "parents": [{ "peer_id": "s", "role": "seeder" },
                                          { "peer_id": "a", "role": "reflector" }] },
            { "peer_id": "c", "parents": [{ "peer_id": "a", "role": "reflector" },
                                          { "peer_id": "b", "role": "reflector" }] },
        ]});
        let tree = Tree::of_detail(&detail);
        assert_eq!(
            tree,
            Tree {
                reflectors: 3,
                fed_by_seeder: 2
            }
        );
        assert_eq!(tree.seeder_copies_needed(100), 2.0);
        // Unreflected: one copy per 250 viewers, at least one.
        let none = Tree::of_detail(&json!({ "reflectors": [] }));
        assert_eq!(none.seeder_copies_needed(1), 1.0);
        assert_eq!(none.seeder_copies_needed(600), 3.0);
        assert_eq!(Tree::of_detail(&json!({})), Tree::default());
    }

    #[test]
    fn the_runs_share_weighs_streams_by_what_their_viewers_got() {
        let streams = [
            ToViewers {
                seeder: 10,
                reflectors: 990,
            },
            ToViewers {
                seeder: 40,
                reflectors: 0,
            },
        ];
        assert_eq!(run_share(&streams), Some(0.99 * 1000.0 / 1040.0));
        assert_eq!(run_share(&[]), None);
    }
}
