//! A stream mix: how many streams a lab run carries and how many viewers
//! each has, written `150,3x10,1` on the command line (one 150-viewer
//! stream, ten 3-viewer streams, one singleton) and `streams = [150, "3x10",
//! 1]` in a scenario file.
//!
//! A mix is kept expanded, one entry per stream in the order written, and
//! is written back out (JSON, TOML) as that plain list of viewer counts, a
//! form it also reads: what `bench` hands its child runs is the same mix.

use std::{fmt, str::FromStr};

use rand::{seq::SliceRandom, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Most streams in a run of real processes: each is a real seeder on this
/// machine ([`Scenario::validate_lab`](super::scenario::Scenario::validate_lab)).
pub const MAX_STREAMS: usize = 200;
/// Most streams in one mix: the simulator's bound (a simulated swarm
/// costs far less than a process).
pub const MAX_SIM_STREAMS: usize = 10_000;

/// Viewers per stream, in the order written; never empty, none zero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamMix(Vec<usize>);

/// Why a mix is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    #[error("a stream mix needs at least one stream, e.g. 150,3x10,1")]
    Empty,
    #[error("'{0}' is not a mix entry: VIEWERS or VIEWERSxSTREAMS, e.g. 150 or 3x10")]
    Entry(String),
    #[error("'{0}': every stream needs at least one viewer and every repeat at least one stream")]
    Zero(String),
    #[error("a mix of {0} streams is more than {MAX_SIM_STREAMS}")]
    TooManyStreams(usize),
    #[error(
        "a Zipf mix needs at least one viewer per stream ({viewers} viewers for {streams} streams)"
    )]
    TooFewViewers { streams: usize, viewers: usize },
}

impl StreamMix {
    /// A mix of these streams' viewer counts.
    pub fn new(viewers: Vec<usize>) -> Result<StreamMix, MixError> {
        if viewers.is_empty() {
            return Err(MixError::Empty);
        }
        if viewers.contains(&0) {
            return Err(MixError::Zero("0".into()));
        }
        if viewers.len() > MAX_SIM_STREAMS {
            return Err(MixError::TooManyStreams(viewers.len()));
        }
        Ok(StreamMix(viewers))
    }

    /// `streams` streams sharing `viewers` by Zipf popularity with
    /// `exponent` (the `k`-th most popular has a share ∝ 1/k^exponent),
    /// each with at least one viewer; the counts add up to `viewers`. The
    /// streams are then put in an order drawn from `seed`: the order is
    /// the one they arrive in (what `first-come` serves by), and a stream's
    /// popularity does not tell when it started.
    pub fn zipf(
        streams: usize,
        viewers: usize,
        exponent: f64,
        seed: u64,
    ) -> Result<StreamMix, MixError> {
        if streams == 0 {
            return Err(MixError::Empty);
        }
        if streams > MAX_SIM_STREAMS {
            return Err(MixError::TooManyStreams(streams));
        }
        if viewers < streams {
            return Err(MixError::TooFewViewers { streams, viewers });
        }
        let weights: Vec<f64> = (1..=streams).map(|k| (k as f64).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        // One viewer each, then the rest by weight, largest remainders
        // first (ties to the more popular).
        let spare = (viewers - streams) as f64;
        let exact: Vec<f64> = weights.iter().map(|w| spare * w / total).collect();
        let mut counts: Vec<usize> = exact.iter().map(|x| 1 + x.floor() as usize).collect();
        let mut by_remainder: Vec<usize> = (0..streams).collect();
        by_remainder.sort_by(|&a, &b| {
            let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
            rb.total_cmp(&ra).then(a.cmp(&b))
        });
        let short = viewers - counts.iter().sum::<usize>();
        for &i in by_remainder.iter().cycle().take(short) {
            counts[i] += 1;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x21FF);
        counts.shuffle(&mut rng);
        StreamMix::new(counts)
    }

    /// One stream of `viewers`: what a run without a mix carries.
    pub fn single(viewers: usize) -> StreamMix {
        StreamMix(vec![viewers])
    }

    /// Viewers of each stream, in order.
    pub fn viewers(&self) -> &[usize] {
        &self.0
    }

    pub fn streams(&self) -> usize {
        self.0.len()
    }

    /// Viewers of all streams.
    pub fn total(&self) -> usize {
        self.0.iter().sum()
    }

    /// Which stream each viewer (0-based, in slot order) belongs to. The
    /// streams are interleaved in proportion to their sizes (smooth
    /// weighted round robin), so that viewers joining in slot order fill
    /// every stream evenly over the join span rather than one stream
    /// after another.
    pub fn stream_of_viewers(&self) -> Vec<usize> {
        let total = self.total() as i64;
        let mut credit = vec![0i64; self.0.len()];
        let mut out = Vec::with_capacity(self.total());
        for _ in 0..total {
            for (c, &w) in credit.iter_mut().zip(&self.0) {
                *c += w as i64;
            }
            let pick = (0..credit.len())
                .max_by_key(|&i| (credit[i], std::cmp::Reverse(i)))
                .expect("not empty");
            credit[pick] -= total;
            out.push(pick);
        }
        out
    }
}

/// One entry as written: `150` or `3x10`.
fn parse_entry(s: &str) -> Result<Vec<usize>, MixError> {
    let s = s.trim();
    let number = |n: &str| {
        n.trim()
            .parse::<usize>()
            .map_err(|_| MixError::Entry(s.into()))
    };
    let (viewers, repeat) = match s.split_once(['x', 'X']) {
        Some((v, r)) => (number(v)?, number(r)?),
        None => (number(s)?, 1),
    };
    if viewers == 0 || repeat == 0 {
        return Err(MixError::Zero(s.into()));
    }
    if repeat > MAX_SIM_STREAMS {
        return Err(MixError::TooManyStreams(repeat));
    }
    Ok(vec![viewers; repeat])
}

impl FromStr for StreamMix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(MixError::Empty);
        }
        let mut viewers = Vec::new();
        for entry in s.split(',') {
            viewers.extend(parse_entry(entry)?);
        }
        StreamMix::new(viewers)
    }
}

impl fmt::Display for StreamMix {
    /// The compact form: runs of equal streams as `VIEWERSxSTREAMS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let mut i = 0;
        while i < self.0.len() {
            let run = self.0[i..].iter().take_while(|&&v| v == self.0[i]).count();
            parts.push(match run {
                1 => self.0[i].to_string(),
                n => format!("{}x{n}", self.0[i]),
            });
            i += run;
        }
        f.write_str(&parts.join(","))
    }
}

impl Serialize for StreamMix {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// An entry of the TOML/JSON list: a count, or a `"3x10"` string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Viewers(usize),
    Repeated(String),
}

impl<'de> Deserialize<'de> for StreamMix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = Vec::<Written>::deserialize(d)?;
        let mut viewers = Vec::new();
        for e in entries {
            let written = match e {
                Written::Viewers(n) => n.to_string(),
                Written::Repeated(s) => s,
            };
            viewers.extend(parse_entry(&written).map_err(serde::de::Error::custom)?);
        }
        StreamMix::new(viewers).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mix_reads_counts_and_repeats() {
        let mix: StreamMix = "150,3x10,1".parse().unwrap();
        assert_eq!(mix.streams(), 12);
        assert_eq!(mix.total(), 181);
        assert_eq!(mix.viewers()[0], 150);
        assert_eq!(mix.viewers()[1..11], [3; 10]);
        assert_eq!(mix.to_string(), "150,3x10,1");
        assert_eq!(" 4 , 1 ".parse::<StreamMix>().unwrap().viewers(), [4, 1]);
    }

    #[test]
    fn bad_mixes_say_what_is_wrong() {
        assert_eq!("".parse::<StreamMix>(), Err(MixError::Empty));
        assert_eq!("4,0".parse::<StreamMix>(), Err(MixError::Zero("0".into())));
        assert_eq!(
            "3x0".parse::<StreamMix>(),
            Err(MixError::Zero("3x0".into()))
        );
        assert_eq!("4,,1".parse::<StreamMix>(), Err(MixError::Entry("".into())));
        assert_eq!(
            "big".parse::<StreamMix>(),
            Err(MixError::Entry("big".into()))
        );
        assert!(matches!(
            "1x20000".parse::<StreamMix>(),
            Err(MixError::TooManyStreams(20_000))
        ));
        // Real processes stop at 200 (`Scenario::validate_lab`); the
        // simulator takes more.
        assert_eq!("1x500".parse::<StreamMix>().unwrap().streams(), 500);
        assert_eq!(StreamMix::new(vec![]), Err(MixError::Empty));
    }

    #[test]
    fn toml_takes_counts_and_repeat_strings_and_json_round_trips() {
        #[derive(Deserialize)]
        struct T {
            streams: StreamMix,
        }
        let t: T = toml::from_str("streams = [150, \"3x10\", 1]").unwrap();
        assert_eq!(t.streams, "150,3x10,1".parse().unwrap());
        let err = toml::from_str::<T>("streams = []")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("at least one stream"), "{err}");
        let err = toml::from_str::<T>("streams = [\"3y2\"]")
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("'3y2'"), "{err}");
        let json = serde_json::to_string(&t.streams).unwrap();
        assert_eq!(serde_json::from_str::<StreamMix>(&json).unwrap(), t.streams);
    }

    #[test]
    fn a_zipf_mix_adds_up_and_gives_everyone_a_viewer() {
        let mix = StreamMix::zipf(1_000, 100_000, 1.0, 1).unwrap();
        assert_eq!((mix.streams(), mix.total()), (1_000, 100_000));
        let mut sorted = mix.viewers().to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        // One each, then 99,000 by weight; H(1000) ≈ 7.485: the most
        // popular has 1 + 99,000 / 7.485 ≈ 13,227 viewers, the 1000th 14.
        assert!((13_200..13_260).contains(&sorted[0]), "{}", sorted[0]);
        assert!((6_590..6_640).contains(&sorted[1]), "{}", sorted[1]);
        assert!((13..=15).contains(&sorted[999]), "{}", sorted[999]);
        // The order is drawn from the seed, the counts are not.
        assert_eq!(mix, StreamMix::zipf(1_000, 100_000, 1.0, 1).unwrap());
        let other = StreamMix::zipf(1_000, 100_000, 1.0, 2).unwrap();
        assert_ne!(mix, other);
        let mut other_sorted = other.viewers().to_vec();
        other_sorted.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(sorted, other_sorted);
        // A steep one still gives the tail one viewer each.
        let steep = StreamMix::zipf(50, 60, 3.0, 1).unwrap();
        assert_eq!(steep.total(), 60);
        assert!(steep.viewers().iter().all(|&v| v >= 1));
        assert!(StreamMix::zipf(10, 5, 1.0, 1).is_err());
    }

    #[test]
    fn viewers_are_spread_over_streams_in_proportion() {
        let mix: StreamMix = "4,1".parse().unwrap();
        let of = mix.stream_of_viewers();
        assert_eq!(of.iter().filter(|&&s| s == 0).count(), 4);
        assert_eq!(of.iter().filter(|&&s| s == 1).count(), 1);
        // The singleton is not left to the very end of the joins.
        assert!(of.iter().position(|&s| s == 1).unwrap() < 4, "{of:?}");
        let mix: StreamMix = "100,20,1".parse().unwrap();
        let of = mix.stream_of_viewers();
        for (s, &n) in mix.viewers().iter().enumerate() {
            assert_eq!(of.iter().filter(|&&x| x == s).count(), n);
        }
        // Each stream's first viewer joins early in the span.
        let first20 = &of[..20];
        assert!(first20.contains(&0) && first20.contains(&1), "{first20:?}");
        assert_eq!(StreamMix::single(5).stream_of_viewers(), [0; 5]);
    }
}
