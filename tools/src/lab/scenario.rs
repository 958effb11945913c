//! Scenarios: everything that defines a lab run, so a run is reproducible by
//! name (`lab/scenarios/*.toml`) or from command-line flags.

use std::{fmt, path::Path, str::FromStr, time::Duration};

use serde::{Deserialize, Serialize};
use shoal_mesh::{allocation::Policy, proto::engine::DEGREE_CAPS};

use super::mix::{StreamMix, MAX_SIM_STREAMS, MAX_STREAMS};

/// How latency between nodes is drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TopologySpec {
    /// Nodes in regions: ~5–40 ms RTT within a region, 60–300 ms across,
    /// plus per-node access delay and jitter.
    Geo,
    /// The same RTT between every pair.
    Uniform { rtt_ms: u64 },
    /// A CSV file `a,b,rtt_ms` (indices from 0; the seeder is node 0).
    Matrix { path: String },
}

/// Upload capacity of viewers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum UploadSpec {
    Unlimited,
    /// Every viewer the same, bits/s.
    Fixed {
        bps: u64,
    },
    /// A realistic spread: about 30 % of viewers below the stream bitrate.
    Mixed,
}

/// The infrastructure a restart stops and starts again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartRole {
    /// The seeder (for gossipsub, with its publisher).
    Seeder,
    Tracker,
    /// One of the run's reflectors (`reflectors`), as a process: its host
    /// and its HTTP origin.
    Reflector,
    /// One of several trackers (`trackers` > 1): the first; the others
    /// stay up and take its streams.
    Shard,
}

impl RestartRole {
    pub const ALL: [RestartRole; 4] = [
        RestartRole::Seeder,
        RestartRole::Tracker,
        RestartRole::Reflector,
        RestartRole::Shard,
    ];
}

impl fmt::Display for RestartRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RestartRole::Seeder => "seeder",
            RestartRole::Tracker => "tracker",
            RestartRole::Reflector => "reflector",
            RestartRole::Shard => "shard",
        })
    }
}

impl FromStr for RestartRole {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RestartRole::ALL
            .into_iter()
            .find(|role| role.to_string() == s)
            .ok_or_else(|| {
                format!("unknown restart role '{s}': seeder, tracker, reflector or shard")
            })
    }
}

/// A restart of infrastructure during the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Restart {
    pub role: RestartRole,
    /// Seconds after the start.
    pub at_s: f64,
    /// Seconds it stays down; infinite: it never comes back (written
    /// `"never"` in TOML and JSON).
    #[serde(default = "default_down", with = "downtime")]
    pub down_s: f64,
}

impl Restart {
    /// Whether it comes back before the run ends.
    pub fn comes_back(&self) -> bool {
        self.down_s.is_finite()
    }
}

impl Scenario {
    /// Whether every tracker is down for good at `t` s into the run.
    pub fn trackers_gone(&self, t: f64) -> bool {
        self.restarts
            .iter()
            .any(|r| r.role == RestartRole::Tracker && !r.comes_back() && t >= r.at_s)
    }
}

fn default_down() -> f64 {
    2.0
}

/// A downtime in seconds, or `"never"` for one that does not end (JSON
/// has no infinity).
pub(crate) mod downtime {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) const NEVER: &str = "never";

    pub(crate) fn serialize<S: Serializer>(down_s: &f64, s: S) -> Result<S::Ok, S::Error> {
        if down_s.is_finite() {
            s.serialize_f64(*down_s)
        } else {
            s.serialize_str(NEVER)
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Down {
        Seconds(f64),
        Word(String),
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Down::deserialize(d)? {
            Down::Seconds(s) if s.is_finite() && s >= 0.0 => Ok(s),
            Down::Word(w) if w == NEVER => Ok(f64::INFINITY),
            _ => Err(serde::de::Error::custom(
                "down_s must be seconds (≥ 0) or \"never\"",
            )),
        }
    }
}

/// How the lab's tracker splits the infrastructure budget across streams:
/// a coordinator policy, or no coordinator at all (no budgets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Allocation {
    /// The tracker's default: Antfarm.
    #[default]
    Antfarm,
    FirstCome,
    ByViewers,
    Off,
}

impl Allocation {
    pub const ALL: [Allocation; 4] = [
        Allocation::Antfarm,
        Allocation::FirstCome,
        Allocation::ByViewers,
        Allocation::Off,
    ];

    /// The coordinator's policy; `None` when allocation is off.
    pub fn policy(self) -> Option<Policy> {
        match self {
            Allocation::Antfarm => Some(Policy::Antfarm),
            Allocation::FirstCome => Some(Policy::FirstCome),
            Allocation::ByViewers => Some(Policy::ByViewers),
            Allocation::Off => None,
        }
    }
}

impl From<Policy> for Allocation {
    fn from(p: Policy) -> Allocation {
        match p {
            Policy::Antfarm => Allocation::Antfarm,
            Policy::FirstCome => Allocation::FirstCome,
            Policy::ByViewers => Allocation::ByViewers,
        }
    }
}

impl fmt::Display for Allocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.policy() {
            Some(p) => f.write_str(p.name()),
            None => f.write_str("off"),
        }
    }
}

impl FromStr for Allocation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Allocation::ALL
            .into_iter()
            .find(|a| a.to_string() == s)
            .ok_or_else(|| {
                format!("unknown allocation '{s}': antfarm, first-come, by-viewers or off")
            })
    }
}

impl TryFrom<String> for Allocation {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Allocation> for String {
    fn from(a: Allocation) -> String {
        a.to_string()
    }
}

/// A whole lab run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    #[serde(default = "default_name")]
    pub name: String,
    /// Viewers in all (the seeders come on top). With `streams`, it may be
    /// left out of a scenario file: it is the mix's total.
    #[serde(default)]
    pub nodes: usize,
    pub duration_s: f64,
    #[serde(default = "default_bitrate")]
    pub bitrate_bps: u64,
    #[serde(default = "default_topology")]
    pub topology: TopologySpec,
    #[serde(default = "default_upload")]
    pub upload: UploadSpec,
    /// Viewer download cap, bits/s.
    #[serde(default)]
    pub download_bps: Option<u64>,
    /// Share of viewers replaced per minute (0.10 = 10 %/min).
    #[serde(default)]
    pub churn_per_min: f64,
    /// Viewers join evenly over this many seconds.
    #[serde(default = "default_join_over")]
    pub join_over_s: f64,
    #[serde(default)]
    pub restarts: Vec<Restart>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    #[serde(default = "default_degree")]
    pub max_degree: usize,
    /// Several streams, each with its own seeder and viewers (`None`: one
    /// stream of `nodes` viewers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamMix>,
    /// The tracker's split of the infrastructure budget across streams.
    #[serde(default)]
    pub allocation: Allocation,
    /// The infrastructure tier's budget to split, bits/s (`None`: what
    /// the seeders announce as their upload).
    #[serde(default)]
    pub infra_budget_bps: Option<u64>,
    /// Reflectors the run starts beside the seeders; the tracker's
    /// coordinator assigns them to streams.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reflectors: usize,
    /// Trackers sharding the streams; every node is given all of them.
    #[serde(default = "default_trackers", skip_serializing_if = "is_one")]
    pub trackers: usize,
    /// Every host runs Shoal's DHT (docs/discovery.md), the viewers
    /// bootstrapping from their stream's seeder; a viewer that joins once
    /// the tracker is down for good (`tracker@…+never`) is given no
    /// tracker at all. Single-process runs only: a worker process does not
    /// know the seeders' addresses.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dht: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_trackers() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn default_name() -> String {
    "custom".into()
}
fn default_bitrate() -> u64 {
    2_000_000
}
fn default_topology() -> TopologySpec {
    TopologySpec::Geo
}
fn default_upload() -> UploadSpec {
    UploadSpec::Unlimited
}
fn default_join_over() -> f64 {
    5.0
}
fn default_seed() -> u64 {
    1
}
fn default_degree() -> usize {
    8
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: default_name(),
            nodes: 20,
            duration_s: 60.0,
            bitrate_bps: default_bitrate(),
            topology: default_topology(),
            upload: default_upload(),
            download_bps: None,
            churn_per_min: 0.0,
            join_over_s: default_join_over(),
            restarts: Vec::new(),
            seed: default_seed(),
            max_degree: default_degree(),
            streams: None,
            allocation: Allocation::default(),
            infra_budget_bps: None,
            reflectors: 0,
            trackers: default_trackers(),
            dht: false,
        }
    }
}

/// Most trackers of a lab run.
pub const MAX_TRACKERS: usize = 16;

/// Most viewers of a run of real processes.
pub const MAX_LAB_NODES: usize = 2_000;
/// Most viewers of a simulated run.
pub const MAX_SIM_NODES: usize = 200_000;
/// Most reflectors of a lab run.
pub const MAX_REFLECTORS: usize = 64;

/// Why a scenario is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut s: Scenario = toml::from_str(&text).map_err(|source| ScenarioError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        if let (0, Some(mix)) = (s.nodes, &s.streams) {
            s.nodes = mix.total();
        }
        s.validate()?;
        Ok(s)
    }

    /// Checks a scenario for a run of real processes (`run`, `bench`,
    /// `demo`): at most [`MAX_LAB_NODES`] viewers on one machine.
    pub fn validate_lab(&self) -> Result<(), ScenarioError> {
        self.validate()?;
        if self.mix().streams() > MAX_STREAMS {
            return Err(ScenarioError::Invalid(format!(
                "at most {MAX_STREAMS} streams for real processes (the simulator takes up to {MAX_SIM_STREAMS})"
            )));
        }
        if self.nodes > MAX_LAB_NODES {
            return Err(ScenarioError::Invalid(format!(
                "nodes must be 1..={MAX_LAB_NODES} for real processes (the simulator takes up to {MAX_SIM_NODES})"
            )));
        }
        Ok(())
    }

    /// The streams of the run: the mix, or one stream of `nodes` viewers.
    pub fn mix(&self) -> StreamMix {
        self.streams
            .clone()
            .unwrap_or_else(|| StreamMix::single(self.nodes))
    }

    /// Checks a scenario (the simulator's bounds).
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |m: &str| Err(ScenarioError::Invalid(m.to_string()));
        if self.nodes == 0 || self.nodes > MAX_SIM_NODES {
            return bad("nodes must be 1..=200000");
        }
        if !(1.0..=86_400.0).contains(&self.duration_s) {
            return bad("duration must be 1 s .. 1 day");
        }
        if self.bitrate_bps < 10_000 {
            return bad("bitrate must be at least 10 kbps");
        }
        if !(0.0..=1.0).contains(&self.churn_per_min) {
            return bad("churn must be 0..=100 %/min");
        }
        if self.join_over_s < 0.0 || self.join_over_s > self.duration_s {
            return bad("join-over must be within the duration");
        }
        if let Some(mix) = &self.streams {
            if mix.total() != self.nodes {
                return bad(&format!(
                    "nodes ({}) must be the stream mix's viewers in all ({} in {mix}); \
                     leave nodes out to take the mix's",
                    self.nodes,
                    mix.total()
                ));
            }
        }
        if self.allocation == Allocation::Off && self.infra_budget_bps.is_some() {
            return bad("an infrastructure budget needs an allocation policy, not 'off'");
        }
        if self.infra_budget_bps == Some(0) {
            return bad("the infrastructure budget must be above 0");
        }
        if self.reflectors > MAX_REFLECTORS {
            return bad(&format!("reflectors must be 0..={MAX_REFLECTORS}"));
        }
        let restarts_a_reflector = (self.restarts.iter()).any(|r| r.role == RestartRole::Reflector);
        if restarts_a_reflector && self.reflectors == 0 {
            return bad("a reflector restart needs reflectors (--reflectors N)");
        }
        if !(1..=MAX_TRACKERS).contains(&self.trackers) {
            return bad(&format!("trackers must be 1..={MAX_TRACKERS}"));
        }
        let kills_a_shard = (self.restarts.iter()).any(|r| r.role == RestartRole::Shard);
        if kills_a_shard && self.trackers < 2 {
            return bad("a shard restart needs several trackers (--trackers 2 or more)");
        }
        if !DEGREE_CAPS.contains(&self.max_degree) {
            return bad(&format!(
                "max degree must be {}..={}",
                DEGREE_CAPS.start(),
                DEGREE_CAPS.end()
            ));
        }
        Ok(())
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trackers_are_gone_only_after_a_restart_for_good() {
        let never = |role, at_s| Restart {
            role,
            at_s,
            down_s: f64::INFINITY,
        };
        let sc = |restarts| Scenario {
            restarts,
            ..Scenario::default()
        };
        let killed = sc(vec![never(RestartRole::Tracker, 20.0)]);
        assert!(!killed.trackers_gone(19.9));
        assert!(killed.trackers_gone(20.0));
        let back = Restart {
            down_s: 5.0,
            ..never(RestartRole::Tracker, 20.0)
        };
        assert!(!sc(vec![back]).trackers_gone(30.0));
        assert!(!sc(vec![never(RestartRole::Shard, 20.0)]).trackers_gone(30.0));
        assert!(!sc(vec![never(RestartRole::Seeder, 20.0)]).trackers_gone(30.0));
    }

    #[test]
    fn bundled_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lab/scenarios");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Scenario::load(&path).unwrap();
                assert!(s.nodes >= 50, "{}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 3, "expected the 50/150/300-node scenarios");
    }

    #[test]
    fn bad_scenarios_are_refused() {
        assert!(toml::from_str::<Scenario>("nodes = 5\nduration_s = 10\nbogus = 1").is_err());
        let s = Scenario {
            churn_per_min: 2.0,
            ..Scenario::default()
        };
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_mix_sets_the_viewers_and_must_agree_with_nodes() {
        let s: Scenario =
            toml::from_str("duration_s = 10\nstreams = [4, \"2x3\"]\nallocation = \"by-viewers\"")
                .unwrap();
        assert_eq!(s.allocation, Allocation::ByViewers);
        assert_eq!(s.streams.as_ref().unwrap().total(), 10);
        let path = std::env::temp_dir().join(format!("shoal-mix-{}.toml", std::process::id()));
        std::fs::write(&path, "duration_s = 10\nstreams = [4, \"2x3\"]\n").unwrap();
        let loaded = Scenario::load(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!((loaded.nodes, loaded.mix().streams()), (10, 4));
        let disagree = Scenario {
            nodes: 9,
            streams: Some("4,2x3".parse().unwrap()),
            ..Scenario::default()
        };
        let err = disagree.validate().unwrap_err().to_string();
        assert!(
            err.contains("nodes (9)") && err.contains("10 in 4,2x3"),
            "{err}"
        );
        let too_many = Scenario {
            nodes: 2_001,
            streams: Some("2000,1".parse().unwrap()),
            ..Scenario::default()
        };
        assert!(too_many.validate_lab().is_err());
        let many_streams = Scenario {
            nodes: 300,
            streams: Some("1x300".parse().unwrap()),
            ..Scenario::default()
        };
        assert!(many_streams.validate().is_ok(), "the simulator takes them");
        let err = many_streams.validate_lab().unwrap_err().to_string();
        assert!(err.contains("at most 200 streams"), "{err}");
        let off_with_budget = Scenario {
            allocation: Allocation::Off,
            infra_budget_bps: Some(3_000_000),
            ..Scenario::default()
        };
        assert!(off_with_budget.validate().is_err());
        let err = toml::from_str::<Scenario>("nodes = 5\nduration_s = 10\nallocation = \"fair\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("first-come"), "{err}");
    }

    #[test]
    fn without_a_mix_a_run_is_one_stream_of_all_its_viewers() {
        let s = Scenario::default();
        assert_eq!(s.mix().viewers(), [s.nodes]);
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("streams"), "{json}");
        // Nor reflectors: a scenario without them writes what it always did.
        assert!(!json.contains("reflectors"), "{json}");
        assert_eq!(serde_json::from_str::<Scenario>(&json).unwrap(), s);
    }

    #[test]
    fn restart_roles_are_named_alike_in_toml_and_on_the_command_line() {
        for role in RestartRole::ALL {
            let toml = format!(
                "nodes = 5\nduration_s = 10\nrestarts = [{{ role = \"{role}\", at_s = 1 }}]"
            );
            let s: Scenario = toml::from_str(&toml).unwrap();
            assert_eq!(s.restarts[0].role, role);
            assert_eq!(role.to_string().parse::<RestartRole>(), Ok(role));
        }
        let err = toml::from_str::<Scenario>(
            "nodes = 5\nduration_s = 10\nrestarts = [{ role = \"cdn\", at_s = 1 }]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("cdn") && err.contains("tracker"), "{err}");
        let err = "cdn".parse::<RestartRole>().unwrap_err();
        assert!(
            err.contains("cdn") && err.contains("seeder, tracker, reflector or shard"),
            "{err}"
        );
        let s: Scenario = toml::from_str(
            "nodes = 5\nduration_s = 10\nreflectors = 2\n\
             restarts = [{ role = \"reflector\", at_s = 3, down_s = \"never\" }]",
        )
        .unwrap();
        assert_eq!((s.reflectors, s.restarts[0].comes_back()), (2, false));
        assert!(s.validate().is_ok());
        let err = toml::from_str::<Scenario>(
            "nodes = 5\nduration_s = 10\nrestarts = [{ role = \"seeder\", at_s = 3, down_s = \"later\" }]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("never"), "{err}");
    }
}
