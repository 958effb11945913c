//! A swarm's response curve (Antfarm): the goodput it delivers to its
//! viewers as a function of the infrastructure bandwidth it is given.
//!
//! A big swarm with upload to spare turns a little infrastructure into a
//! whole stream for every viewer, so its curve is steep and then flat; a
//! singleton's rises with slope 1 up to the bitrate. The estimate is
//! concave and piecewise linear: the upper hull of what the swarm was seen
//! to do, flat once it was seen to want no more.

use smallvec::SmallVec;

/// Observations a curve remembers: enough for a hull around the operating
/// point, few enough that a changed swarm is relearnt in a few rounds.
pub const MAX_POINTS: usize = 8;

/// A swarm that used at least this share of its budget was held back by it.
const BINDING: f64 = 0.9;

/// A swarm with more than this share of its demand yet to start playing is
/// joining: its viewers will take more once they play, so what it used then
/// is not what it wants.
const JOINING: f64 = 0.05;

/// A swarm whose demand moved by more than this since an observation is no
/// longer the swarm that was observed.
const DEMAND_DRIFT: f64 = 0.25;

/// One straight piece of a curve: over `width` bit/s of budget, each more
/// bit/s of budget buys `slope` bit/s of goodput.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Segment {
    pub width: f64,
    pub slope: f64,
}

/// A concave, non-decreasing, piecewise-linear curve from (0, 0): slopes
/// never increase, and past the last segment it is flat.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Curve {
    segments: SmallVec<[Segment; MAX_POINTS + 2]>,
}

impl Curve {
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Budget past which more buys nothing.
    pub fn knee(&self) -> f64 {
        self.segments.iter().map(|s| s.width).sum()
    }

    /// Goodput at budget `s`.
    pub fn value(&self, s: f64) -> f64 {
        let mut left = s.max(0.0);
        let mut y = 0.0;
        for seg in &self.segments {
            let w = seg.width.min(left);
            y += w * seg.slope;
            left -= w;
            if left <= 0.0 {
                break;
            }
        }
        y
    }

    /// A curve of `(width, slope)` segments, for tests.
    #[cfg(test)]
    pub(crate) fn from_segments(segments: &[(f64, f64)]) -> Curve {
        let mut c = Curve::default();
        for &(width, slope) in segments {
            c.push(width, slope);
        }
        c
    }

    /// Appends a segment, merging it into the last when they are one line.
    fn push(&mut self, width: f64, slope: f64) {
        let positive = |x: f64| x.is_finite() && x > 0.0;
        if !positive(width) || !positive(slope) {
            return;
        }
        match self.segments.last_mut() {
            Some(last) if (last.slope - slope).abs() <= 1e-9 * last.slope => last.width += width,
            _ => self.segments.push(Segment { width, slope }),
        }
    }
}

/// One interval of one swarm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The infrastructure budget the swarm had, bit/s.
    pub given_bps: f64,
    /// Infrastructure payload its viewers received, bit/s.
    pub infra_bps: f64,
    /// What it delivered: the sum over its viewers of bitrate × continuity.
    pub goodput_bps: f64,
    /// What it would deliver if every viewer played: viewers × bitrate.
    pub demand_bps: f64,
    /// The demand of viewers yet to start playing, bit/s.
    pub waiting_bps: f64,
}

impl Observation {
    /// The budget held the swarm back: it used (nearly) all of it.
    fn binding(&self) -> bool {
        self.infra_bps >= BINDING * self.given_bps
    }

    /// The swarm took what it wanted: the budget did not hold it back, and
    /// its viewers had started, so none was still on its way to wanting more.
    fn satisfied(&self) -> bool {
        !self.binding() && self.waiting_bps <= JOINING * self.demand_bps
    }
}

/// What is known of a swarm before it is observed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Prior {
    pub viewers: u32,
    pub bitrate_bps: f64,
    /// Its viewers' upload in all, bit/s.
    pub upload_bps: f64,
}

impl Prior {
    /// The fluid bound: a first copy of the stream reaches at most every
    /// viewer, and at most once plus what the viewers can forward; past one
    /// copy, every bit of budget beyond the viewers' upload is a bit of
    /// goodput.
    pub fn curve(&self) -> Curve {
        let mut c = Curve::default();
        let r = self.bitrate_bps;
        let demand = f64::from(self.viewers) * r;
        if self.viewers == 0 || !(r.is_finite() && r > 0.0) {
            return c;
        }
        let amplify = f64::from(self.viewers).min(1.0 + self.upload_bps.max(0.0) / r);
        let first = r.min(demand / amplify);
        c.push(first, amplify);
        c.push(demand - first * amplify, 1.0);
        c
    }
}

/// A swarm's recent observations, and the curve they imply.
#[derive(Clone, Debug, Default)]
pub struct CurveEstimate {
    points: SmallVec<[Observation; MAX_POINTS]>,
}

impl CurveEstimate {
    /// Remembers `o`, forgetting the oldest observation once full and every
    /// observation of a swarm whose demand has since moved.
    pub fn observe(&mut self, o: Observation) {
        let rates = [
            o.given_bps,
            o.infra_bps,
            o.goodput_bps,
            o.demand_bps,
            o.waiting_bps,
        ];
        if !rates.iter().all(|r| r.is_finite() && *r >= 0.0) {
            return;
        }
        self.points
            .retain(|p| (p.demand_bps - o.demand_bps).abs() <= DEMAND_DRIFT * o.demand_bps);
        // Held back, it did worse than an earlier interval did on as much
        // budget or less: the swarm has changed, and the earlier one would
        // hide that from the hull.
        if o.binding() {
            self.points
                .retain(|p| !(p.infra_bps <= o.infra_bps && p.goodput_bps > o.goodput_bps));
        }
        if self.points.len() == MAX_POINTS {
            self.points.remove(0);
        }
        self.points.push(o);
    }

    pub fn observations(&self) -> &[Observation] {
        &self.points
    }

    /// The curve: `prior` until the swarm has been observed; then the upper
    /// concave hull of (0, 0), the intervals held back and the knee (the
    /// most used by an interval that took what it wanted since the last
    /// held back), flat past the knee, and beyond the last observed budget the last
    /// slope seen, up to the demand. That is optimistic, so a swarm held
    /// back is given more and its next observation corrects the estimate.
    /// Where nothing was seen to help, the slope is 1: a viewer short of a
    /// piece fetches it from infrastructure itself.
    pub fn curve(&self, demand_bps: f64, prior: &Prior) -> Curve {
        if self.points.is_empty() {
            return prior.curve();
        }
        let demand = demand_bps.max(0.0);
        // The knee: the most the swarm used while it took what it wanted,
        // since it was last held back. Use between intervals varies, so the
        // most, not the least; and a later interval that used its whole
        // budget says it wants more than before.
        // Intervals since the swarm was last held back.
        let since = self
            .points
            .iter()
            .rposition(|p| p.binding())
            .map_or(0, |i| i + 1);
        // (most used, best goodput): every interval that took what it
        // wanted did so, so their goodputs differ by noise only.
        let knee = self.points[since..].iter().filter(|p| p.satisfied()).fold(
            None,
            |k: Option<(f64, f64)>, p| {
                let (used, good) = k.unwrap_or((0.0, 0.0));
                Some((used.max(p.infra_bps), good.max(p.goodput_bps.min(demand))))
            },
        );
        let mut pts: SmallVec<[(f64, f64); MAX_POINTS + 1]> = SmallVec::new();
        pts.push((0.0, 0.0));
        for p in &self.points {
            // An interval that took what it wanted is the knee's, or older
            // than a later one held back, which says the swarm wants more
            // now. Its budget did not bind, so what it used is no point of
            // the curve. Past the knee the curve is flat.
            if p.satisfied() || knee.is_some_and(|(used, _)| p.infra_bps >= used) {
                continue;
            }
            pts.push((p.infra_bps, p.goodput_bps.min(demand)));
        }
        pts.extend(knee);
        pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        pts.dedup_by(|later, earlier| later.0 == earlier.0);
        let hull = upper_hull(&pts);

        let mut c = Curve::default();
        for w in hull.windows(2) {
            let (dx, dy) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
            if dy <= 0.0 {
                break;
            }
            c.push(dx, dy / dx);
        }
        let top = c.value(c.knee());
        if knee.is_none() && top < demand {
            let slope = c.segments.last().map_or(1.0, |s| s.slope);
            c.push((demand - top) / slope, slope);
        }
        c
    }
}

/// Upper concave hull of points sorted by x with distinct x, from the first.
fn upper_hull(pts: &[(f64, f64)]) -> SmallVec<[(f64, f64); MAX_POINTS + 1]> {
    let mut hull: SmallVec<[(f64, f64); MAX_POINTS + 1]> = SmallVec::new();
    for &p in pts {
        while hull.len() >= 2 {
            let (a, b) = (hull[hull.len() - 2], hull[hull.len() - 1]);
            // b lies on or under the chord a–p: not on the upper hull.
            if (b.0 - a.0) * (p.1 - a.1) - (b.1 - a.1) * (p.0 - a.0) >= 0.0 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(p);
    }
    hull
}

#[cfg(test)]
mod tests {
    use super::*;

    const MBPS: f64 = 1_000_000.0;

    fn obs(given: f64, infra: f64, goodput: f64, demand: f64) -> Observation {
        Observation {
            given_bps: given * MBPS,
            infra_bps: infra * MBPS,
            goodput_bps: goodput * MBPS,
            demand_bps: demand * MBPS,
            waiting_bps: 0.0,
        }
    }

    /// A swarm of `viewers` at 2 Mbit/s whose upload is not known.
    fn without_upload(viewers: u32) -> Prior {
        Prior {
            viewers,
            bitrate_bps: 2.0 * MBPS,
            upload_bps: 0.0,
        }
    }

    fn assert_concave(c: &Curve) {
        for w in c.segments().windows(2) {
            assert!(w[1].slope <= w[0].slope, "{c:?}");
        }
        assert!(
            c.segments().iter().all(|s| s.width > 0.0 && s.slope > 0.0),
            "{c:?}"
        );
    }

    #[test]
    fn a_singleton_rises_with_slope_one_to_its_bitrate() {
        let prior = Prior {
            viewers: 1,
            bitrate_bps: 2.0 * MBPS,
            upload_bps: 5.0 * MBPS,
        };
        let c = prior.curve();
        assert_eq!(
            c.segments(),
            &[Segment {
                width: 2.0 * MBPS,
                slope: 1.0
            }]
        );
        assert_eq!(c.value(10.0 * MBPS), 2.0 * MBPS);
    }

    #[test]
    fn a_big_swarm_with_upload_to_spare_flattens_after_one_copy() {
        let prior = Prior {
            viewers: 100,
            bitrate_bps: 2.0 * MBPS,
            upload_bps: 400.0 * MBPS,
        };
        let c = prior.curve();
        assert_concave(&c);
        assert!((c.knee() - 2.0 * MBPS).abs() < 1.0, "{c:?}");
        assert!((c.value(c.knee()) - 200.0 * MBPS).abs() < 1.0);
    }

    #[test]
    fn a_swarm_short_of_upload_needs_the_rest_from_infrastructure() {
        // 100 viewers at 2 Mbit/s, 100 Mbit/s of upload: 100 Mbit/s more.
        let prior = Prior {
            viewers: 100,
            bitrate_bps: 2.0 * MBPS,
            upload_bps: 100.0 * MBPS,
        };
        let c = prior.curve();
        assert_concave(&c);
        assert!((c.value(c.knee()) - 200.0 * MBPS).abs() < 1.0);
        assert!(
            (c.knee() - 2.0 * MBPS - (200.0 - 2.0 * 51.0) * MBPS).abs() < 1.0,
            "{c:?}"
        );
    }

    #[test]
    fn a_swarm_that_left_budget_unused_is_flat_past_what_it_used() {
        let mut e = CurveEstimate::default();
        e.observe(obs(10.0, 3.0, 200.0, 200.0));
        let c = e.curve(200.0 * MBPS, &without_upload(100));
        assert_concave(&c);
        assert!((c.knee() - 3.0 * MBPS).abs() < 1.0);
        assert_eq!(c.value(50.0 * MBPS), c.value(3.0 * MBPS));
    }

    #[test]
    fn a_joining_swarm_is_not_flat_past_what_it_used() {
        // A fifth of the viewers had yet to start: they would have taken
        // more, so a later interval that used the whole budget counts.
        let mut e = CurveEstimate::default();
        e.observe(Observation {
            waiting_bps: 40.0 * MBPS,
            ..obs(10.0, 3.0, 150.0, 200.0)
        });
        e.observe(obs(4.0, 4.0, 180.0, 200.0));
        let c = e.curve(200.0 * MBPS, &without_upload(100));
        assert_concave(&c);
        assert!((c.value(4.0 * MBPS) - 180.0 * MBPS).abs() < 1.0, "{c:?}");
        assert!((c.value(c.knee()) - 200.0 * MBPS).abs() < 1.0, "{c:?}");

        // Once they play, an interval with budget to spare is the knee.
        e.observe(obs(10.0, 5.0, 200.0, 200.0));
        let c = e.curve(200.0 * MBPS, &without_upload(100));
        assert!((c.knee() - 5.0 * MBPS).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn the_knee_is_the_most_used_by_intervals_that_took_what_they_wanted() {
        // Given 10, the swarm used 8; given 8, a lucky interval used 4.6.
        // A knee at 4.6 would hold it to 4.6 and starve it the next time.
        let mut e = CurveEstimate::default();
        e.observe(obs(10.0, 8.0, 199.0, 200.0));
        e.observe(obs(8.0, 4.6, 200.0, 200.0));
        let c = e.curve(200.0 * MBPS, &without_upload(100));
        assert_concave(&c);
        assert!((c.knee() - 8.0 * MBPS).abs() < 1.0, "{c:?}");
        assert!((c.value(8.0 * MBPS) - 200.0 * MBPS).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn a_swarm_held_back_after_its_knee_has_none() {
        let mut e = CurveEstimate::default();
        e.observe(obs(10.0, 5.0, 200.0, 200.0));
        // Then it wanted more than 5 and used all of its 6.
        e.observe(obs(6.0, 6.0, 180.0, 200.0));
        let c = e.curve(200.0 * MBPS, &without_upload(100));
        assert_concave(&c);
        assert!(c.knee() > 6.0 * MBPS, "{c:?}");
        assert!((c.value(c.knee()) - 200.0 * MBPS).abs() < 1.0, "{c:?}");
    }

    #[test]
    fn a_swarm_that_plays_worse_on_the_same_budget_is_given_more() {
        // It played in full on 2, then missed pieces on the same 2.
        let mut e = CurveEstimate::default();
        for _ in 0..3 {
            e.observe(obs(2.0, 2.0, 78.0, 78.0));
        }
        e.observe(obs(2.0, 2.0, 74.0, 78.0));
        let c = e.curve(78.0 * MBPS, &without_upload(39));
        assert_concave(&c);
        assert!((c.value(2.0 * MBPS) - 74.0 * MBPS).abs() < 1.0, "{c:?}");
        assert!(c.knee() > 2.0 * MBPS, "{c:?}");
    }

    #[test]
    fn a_swarm_held_back_keeps_rising_past_the_last_budget_seen() {
        let mut e = CurveEstimate::default();
        e.observe(obs(1.0, 1.0, 50.0, 200.0));
        let c = e.curve(200.0 * MBPS, &without_upload(100));
        assert_concave(&c);
        assert!((c.value(1.0 * MBPS) - 50.0 * MBPS).abs() < 1.0);
        assert!(c.value(2.0 * MBPS) > 50.0 * MBPS);
        assert!((c.value(c.knee()) - 200.0 * MBPS).abs() < 1.0);
    }

    #[test]
    fn the_estimate_is_the_upper_hull_of_what_was_seen() {
        let mut e = CurveEstimate::default();
        // A dip at 2 Mbit/s lies under the chord from 1 to 3.
        e.observe(obs(1.0, 1.0, 40.0, 100.0));
        e.observe(obs(2.0, 2.0, 45.0, 100.0));
        e.observe(obs(3.0, 3.0, 90.0, 100.0));
        let c = e.curve(100.0 * MBPS, &without_upload(50));
        assert_concave(&c);
        assert!(c.value(2.0 * MBPS) > 45.0 * MBPS);
        assert!((c.value(3.0 * MBPS) - 90.0 * MBPS).abs() < 1.0);
        assert!((c.value(c.knee()) - 100.0 * MBPS).abs() < 1.0);
    }

    #[test]
    fn past_the_last_budget_seen_the_last_slope_goes_on() {
        let mut e = CurveEstimate::default();
        e.observe(obs(4.0, 4.0, 40.0, 100.0));
        e.observe(obs(8.0, 8.0, 42.0, 100.0));
        let c = e.curve(100.0 * MBPS, &without_upload(50));
        assert_concave(&c);
        assert!((c.value(12.0 * MBPS) - 44.0 * MBPS).abs() < 1.0, "{c:?}");
        assert!((c.value(c.knee()) - 100.0 * MBPS).abs() < 1.0);
    }

    #[test]
    fn a_swarm_that_never_played_rises_with_slope_one() {
        let mut e = CurveEstimate::default();
        e.observe(obs(0.0, 0.0, 0.0, 2.0));
        let c = e.curve(2.0 * MBPS, &without_upload(1));
        assert_eq!(
            c.segments(),
            &[Segment {
                width: 2.0 * MBPS,
                slope: 1.0
            }]
        );
    }

    #[test]
    fn a_swarm_that_changed_is_relearnt() {
        let mut e = CurveEstimate::default();
        e.observe(obs(5.0, 5.0, 100.0, 100.0));
        e.observe(obs(5.0, 5.0, 200.0, 400.0));
        assert_eq!(e.observations().len(), 1);
        for i in 0..2 * MAX_POINTS {
            e.observe(obs(5.0 + i as f64, 5.0, 200.0, 400.0));
        }
        assert_eq!(e.observations().len(), MAX_POINTS);
    }

    #[test]
    fn nonsense_observations_are_ignored() {
        let mut e = CurveEstimate::default();
        e.observe(obs(f64::NAN, 1.0, 1.0, 1.0));
        e.observe(obs(1.0, -1.0, 1.0, 1.0));
        e.observe(obs(1.0, 1.0, f64::INFINITY, 1.0));
        assert!(e.observations().is_empty());
    }
}
