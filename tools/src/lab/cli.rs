//! Command-line shapes of lab options: how a person writes a scenario.

use std::path::{Path, PathBuf};

use clap::Args;
use shoal_mesh::rate::rate_arg;

use super::{
    mix::StreamMix,
    scenario::{Allocation, Restart, RestartRole, Scenario, TopologySpec, UploadSpec},
};

/// Scenario flags shared by `run` and `bench`. Flags override the named
/// scenario's values.
#[derive(Args, Debug, Clone, Default)]
pub struct ScenarioArgs {
    /// A scenario by name (lab/scenarios/NAME.toml) or path.
    #[arg(long)]
    pub scenario: Option<String>,
    /// Viewers in all (with --streams, the mix's total; leave it out).
    #[arg(long)]
    pub nodes: Option<usize>,
    /// Several streams, each with its own seeder: viewers per stream,
    /// e.g. 150,3x10,1 (one of 150, ten of 3, one of 1).
    #[arg(long, value_parser = mix)]
    pub streams: Option<StreamMix>,
    /// How the tracker splits the infrastructure budget across streams:
    /// antfarm, first-come, by-viewers or off.
    #[arg(long)]
    pub allocation: Option<Allocation>,
    /// The infrastructure tier's budget to split, e.g. 3mbps (default:
    /// the seeders' announced upload).
    #[arg(long, value_parser = rate_arg)]
    pub infra_budget: Option<u64>,
    /// e.g. 60s, 2m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Stream bitrate, e.g. 2mbps.
    #[arg(long, value_parser = rate_arg)]
    pub bitrate: Option<u64>,
    /// `geo` or `uniform:50ms`.
    #[arg(long, value_parser = topology)]
    pub topology: Option<TopologySpec>,
    /// CSV `a,b,rtt_ms` (nodes 0..S-1 are the S streams' seeders, then
    /// the viewers; node 0 is the seeder of a single stream).
    #[arg(long)]
    pub rtt_matrix: Option<PathBuf>,
    /// Viewer upload: a rate (4mbps), `mixed` or `unlimited`.
    #[arg(long, value_parser = upload)]
    pub upload: Option<UploadSpec>,
    /// Viewer download cap, e.g. 20mbps.
    #[arg(long, value_parser = rate_arg)]
    pub download: Option<u64>,
    /// Viewers replaced per minute, e.g. 10%/min.
    #[arg(long, value_parser = churn)]
    pub churn: Option<f64>,
    /// Viewers join evenly over this span, e.g. 10s (a flash crowd).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub join_over: Option<std::time::Duration>,
    /// Reflectors beside the seeders, assigned to streams by the tracker's
    /// coordinator (shoal, rtt and random only).
    #[arg(long)]
    pub reflectors: Option<usize>,
    /// `seeder@30s` (down 2 s), `tracker@60s+5s` (down 5 s, every
    /// tracker), `reflector@30s+never` (one reflector killed for good),
    /// `shard@30s+never` (the first of several trackers); repeatable.
    #[arg(long, value_parser = restart)]
    pub restart: Vec<Restart>,
    /// Trackers sharding the streams by rendezvous hashing, every node
    /// given all their URLs (a `shard@30s+never` restart kills the first).
    #[arg(long)]
    pub trackers: Option<usize>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Neighbours per viewer, at most.
    #[arg(long, value_parser = shoal_mesh::proto::engine::parse_degree_cap)]
    pub max_degree: Option<usize>,
    /// Every host runs Shoal's DHT; viewers joining after a
    /// `tracker@…+never` get no tracker, only their seeder to bootstrap
    /// from (docs/discovery.md).
    #[arg(long)]
    pub dht: bool,
}

impl ScenarioArgs {
    /// The scenario these flags describe.
    pub fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = match &self.scenario {
            Some(name) => Scenario::load(&scenario_path(name))?,
            None => Scenario::default(),
        };
        if let Some(v) = self.nodes {
            s.nodes = v;
        }
        if let Some(mix) = &self.streams {
            if self.nodes.is_none() {
                s.nodes = mix.total();
            }
            s.streams = Some(mix.clone());
        }
        if let Some(v) = self.allocation {
            s.allocation = v;
        }
        if let Some(v) = self.reflectors {
            s.reflectors = v;
        }
        if let Some(v) = self.trackers {
            s.trackers = v;
        }
        if self.infra_budget.is_some() {
            s.infra_budget_bps = self.infra_budget;
        }
        if let Some(v) = self.duration {
            s.duration_s = v.as_secs_f64();
        }
        if let Some(v) = self.bitrate {
            s.bitrate_bps = v;
        }
        if let Some(v) = &self.topology {
            s.topology = v.clone();
        }
        if let Some(p) = &self.rtt_matrix {
            s.topology = TopologySpec::Matrix {
                path: p.display().to_string(),
            };
        }
        if let Some(v) = &self.upload {
            s.upload = v.clone();
        }
        if self.download.is_some() {
            s.download_bps = self.download;
        }
        if let Some(v) = self.churn {
            s.churn_per_min = v;
        }
        if let Some(v) = self.join_over {
            s.join_over_s = v.as_secs_f64();
        }
        if !self.restart.is_empty() {
            s.restarts = self.restart.clone();
        }
        if let Some(v) = self.seed {
            s.seed = v;
        }
        if self.dht {
            s.dht = true;
        }
        if let Some(v) = self.max_degree {
            s.max_degree = v;
        }
        if s.join_over_s > s.duration_s {
            s.join_over_s = s.duration_s / 2.0;
        }
        s.validate()?;
        Ok(s)
    }
}

/// A name resolves to lab/scenarios/NAME.toml in the working directory or
/// in the source tree; anything with a slash or `.toml` is a path.
fn scenario_path(name: &str) -> PathBuf {
    if name.contains('/') || name.ends_with(".toml") {
        return PathBuf::from(name);
    }
    let local = Path::new("lab/scenarios").join(format!("{name}.toml"));
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lab/scenarios")
        .join(format!("{name}.toml"))
}

fn mix(s: &str) -> Result<StreamMix, String> {
    s.parse().map_err(|e| format!("{e}"))
}

fn topology(s: &str) -> Result<TopologySpec, String> {
    if s == "geo" {
        return Ok(TopologySpec::Geo);
    }
    let ms = s
        .strip_prefix("uniform:")
        .and_then(|d| humantime::parse_duration(d).ok())
        .ok_or_else(|| format!("'{s}' is not a topology: geo or uniform:50ms"))?;
    Ok(TopologySpec::Uniform {
        rtt_ms: ms.as_millis() as u64,
    })
}

fn upload(s: &str) -> Result<UploadSpec, String> {
    match s {
        "mixed" => Ok(UploadSpec::Mixed),
        "unlimited" => Ok(UploadSpec::Unlimited),
        _ => rate_arg(s).map(|bps| UploadSpec::Fixed { bps }),
    }
}

fn churn(s: &str) -> Result<f64, String> {
    let pct = s
        .strip_suffix("%/min")
        .and_then(|p| p.trim().parse::<f64>().ok())
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("'{s}' is not a churn rate like 10%/min"))?;
    Ok(pct / 100.0)
}

fn restart(s: &str) -> Result<Restart, String> {
    let err = || {
        format!(
            "'{s}' is not a restart like seeder@30s, tracker@60s+5s or reflector@30s+never \
             (roles: seeder, tracker, reflector, shard)"
        )
    };
    let (role, when) = s.split_once('@').ok_or_else(err)?;
    let (at, down) = match when.split_once('+') {
        Some((a, d)) => (a, Some(d)),
        None => (when, None),
    };
    let at = humantime::parse_duration(at).map_err(|_| err())?;
    let down_s = match down {
        Some("never") => f64::INFINITY,
        Some(d) => humantime::parse_duration(d)
            .map_err(|_| err())?
            .as_secs_f64(),
        None => 2.0,
    };
    let role: RestartRole = role.parse().map_err(|e| format!("'{s}': {e}"))?;
    Ok(Restart {
        role,
        at_s: at.as_secs_f64(),
        down_s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(
            topology("uniform:50ms"),
            Ok(TopologySpec::Uniform { rtt_ms: 50 })
        );
        assert_eq!(topology("geo"), Ok(TopologySpec::Geo));
        assert!(topology("mars").is_err());
        assert_eq!(upload("4mbps"), Ok(UploadSpec::Fixed { bps: 4_000_000 }));
        assert_eq!(upload("mixed"), Ok(UploadSpec::Mixed));
        assert_eq!(churn("10%/min"), Ok(0.1));
        assert!(churn("10").is_err());
        let r = restart("tracker@60s+5s").unwrap();
        assert_eq!(
            (r.role, r.at_s, r.down_s),
            (RestartRole::Tracker, 60.0, 5.0)
        );
        assert!(restart("cdn@5s")
            .unwrap_err()
            .contains("seeder, tracker, reflector or shard"));
        assert_eq!(mix("4,1").unwrap().viewers(), [4, 1]);
        assert!(mix("4,x").unwrap_err().contains("VIEWERSxSTREAMS"));
    }

    #[test]
    fn a_mix_on_the_command_line_sets_the_viewers_and_the_tracker() {
        let args = ScenarioArgs {
            streams: Some("100,20,1".parse().unwrap()),
            allocation: Some(Allocation::FirstCome),
            infra_budget: Some(3_000_000),
            ..ScenarioArgs::default()
        };
        let s = args.scenario().unwrap();
        assert_eq!(s.nodes, 121);
        assert_eq!(s.mix().streams(), 3);
        assert_eq!(s.allocation, Allocation::FirstCome);
        assert_eq!(s.infra_budget_bps, Some(3_000_000));
        let disagree = ScenarioArgs {
            nodes: Some(5),
            ..args
        };
        assert!(disagree.scenario().is_err());
        let none = ScenarioArgs::default().scenario().unwrap();
        assert_eq!((none.streams, none.allocation), (None, Allocation::Antfarm));
    }

    #[test]
    fn reflectors_and_their_restarts_parse() {
        let r = restart("reflector@30s+never").unwrap();
        assert_eq!((r.role, r.at_s), (RestartRole::Reflector, 30.0));
        assert!(!r.comes_back());
        let r = restart("reflector@30s+5s").unwrap();
        assert_eq!((r.down_s, r.comes_back()), (5.0, true));
        // Without +DOWN every role is down 2 s, as seeder@ and tracker@ are.
        assert_eq!(restart("reflector@30s").unwrap().down_s, 2.0);
        assert!(restart("reflector@30s+soon").is_err());
        let args = ScenarioArgs {
            streams: Some("4,1".parse().unwrap()),
            reflectors: Some(2),
            restart: vec![restart("reflector@10s+never").unwrap()],
            ..ScenarioArgs::default()
        };
        let s = args.scenario().unwrap();
        assert_eq!(s.reflectors, 2);
        // The scenario file bench hands its children says "never".
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(r#""down_s":"never""#), "{json}");
        assert_eq!(
            serde_json::from_str::<crate::lab::scenario::Scenario>(&json).unwrap(),
            s
        );
        let none = ScenarioArgs {
            restart: vec![restart("reflector@10s").unwrap()],
            ..ScenarioArgs::default()
        };
        let err = none.scenario().unwrap_err().to_string();
        assert!(err.contains("--reflectors"), "{err}");
    }

    #[test]
    fn flags_override_a_named_scenario() {
        let args = ScenarioArgs {
            scenario: Some("geo-50".into()),
            nodes: Some(7),
            churn: Some(0.05),
            ..ScenarioArgs::default()
        };
        let s = args.scenario().unwrap();
        assert_eq!(
            (s.name.as_str(), s.nodes, s.churn_per_min),
            ("geo-50", 7, 0.05)
        );
    }
}
