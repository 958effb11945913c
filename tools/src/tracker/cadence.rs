//! How often each peer announces (docs/protocol.md §12.4): the tracker sets
//! it in every answer. A viewer that plays, has its neighbours and whose
//! last report shows every piece in time has little to learn from the
//! tracker and little to tell it, so it is asked back `settled_factor` times
//! later than the base interval; joining or struggling viewers, and
//! infrastructure (whose budgets and bitrates the coordinator needs fresh),
//! keep the base interval. A peer's time to live stretches by the same
//! factor, so a settled viewer is not forgotten between its announces.

use shoal_mesh::hints::{Announce, Role};

/// Continuity a viewer's last report must show to count as settled, in
/// pieces per thousand: one late piece in a few hundred already says the
/// mesh is not carrying it on its own.
const SETTLED_PER_MILLE: u64 = 999;

/// By how much the base interval (and time to live) stretches for the peer
/// that sent `a`: `settled_factor` for a settled viewer, else 1.
pub(super) fn stretch(a: &Announce, settled_factor: u8) -> u8 {
    let Some(report) = &a.report else {
        return 1;
    };
    let neighbours = a.degree >= a.max_degree.div_ceil(2).max(1);
    let in_time = report.pieces_due > 0
        && report.pieces_in_time.min(report.pieces_due) * 1000
            >= report.pieces_due * SETTLED_PER_MILLE;
    let settled = a.role == Role::Viewer && report.playing && neighbours && in_time;
    if settled {
        settled_factor.max(1)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use shoal_mesh::allocation::ViewerReport;

    use super::*;
    use crate::tracker::fixtures::viewer;

    fn settled() -> Announce {
        let mut a = viewer("v", "10.0.0.1", 6);
        a.max_degree = 8;
        a.report = Some(ViewerReport {
            infra_bytes: 0,
            pieces_due: 1000,
            pieces_in_time: 1000,
            playing: true,
            upload_bps: 0,
        });
        a
    }

    #[test]
    fn only_a_settled_viewer_is_stretched() {
        assert_eq!(stretch(&settled(), 5), 5);
        assert_eq!(stretch(&settled(), 0), 1, "a factor of 0 means none");
        let mut joining = settled();
        joining.report = None;
        assert_eq!(stretch(&joining, 5), 1, "no report yet");
        let mut few = settled();
        few.degree = 3;
        assert_eq!(stretch(&few, 5), 1, "fewer than half its neighbours");
        let mut late = settled();
        late.report.as_mut().unwrap().pieces_in_time = 998;
        assert_eq!(stretch(&late, 5), 1, "two late pieces in 1000");
        let mut nothing_due = settled();
        nothing_due.report.as_mut().unwrap().pieces_due = 0;
        assert_eq!(stretch(&nothing_due, 5), 1, "nothing due: not yet judged");
        let mut stalled = settled();
        stalled.report.as_mut().unwrap().playing = false;
        assert_eq!(stretch(&stalled, 5), 1);
        let mut seeder = settled();
        seeder.role = Role::Seeder;
        assert_eq!(stretch(&seeder, 5), 1, "infrastructure keeps the base");
        let mut bragging = settled();
        bragging.report.as_mut().unwrap().pieces_in_time = u64::MAX / 2;
        assert_eq!(stretch(&bragging, 5), 5, "in time beyond due counts as due");
    }
}
