//! The run's trackers: one, or several sharding the streams by rendezvous
//! hashing (docs/protocol.md §12.9), every node given all their URLs. Once
//! a second the run asks each live tracker which streams it holds, so the
//! result shows where each stream landed and, when one tracker is killed,
//! how soon its streams were whole on the next.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use anyhow::{bail, Context};
use shoal_mesh::{hints::TrackerClient, proto::StreamId, shards::rendezvous_order};

use crate::{
    lab::result::{ShardResult, StreamShard},
    tracker::{self, RunningTracker, TrackerConfig},
};

/// One tracker of the run, which a restart stops and starts again at the
/// same address.
struct LabTracker {
    addr: SocketAddr,
    running: Option<RunningTracker>,
    client: TrackerClient,
}

/// The run's trackers and what they were seen to hold.
pub(super) struct LabTrackers {
    config: TrackerConfig,
    list: Vec<LabTracker>,
    urls: Vec<String>,
    watch: ShardWatch,
}

impl LabTrackers {
    pub(super) async fn start(n: usize, config: TrackerConfig) -> anyhow::Result<LabTrackers> {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut list = Vec::with_capacity(n);
        for _ in 0..n.max(1) {
            let running = tracker::start(any, config.clone())
                .await
                .context("tracker")?;
            let addr = running.addr;
            list.push(LabTracker {
                addr,
                running: Some(running),
                client: TrackerClient::with_timeout(
                    &format!("http://{addr}"),
                    Duration::from_secs(2),
                )?,
            });
        }
        let urls = list.iter().map(|t| format!("http://{}", t.addr)).collect();
        Ok(LabTrackers {
            config,
            list,
            urls,
            watch: ShardWatch::default(),
        })
    }

    /// What every node is given: all the URLs, comma-separated.
    pub(super) fn url(&self) -> String {
        self.urls.join(",")
    }

    /// Stops tracker `i`, or all of them (`None`).
    pub(super) fn stop(&mut self, which: Option<usize>, t: f64) {
        for (i, tr) in self.list.iter_mut().enumerate() {
            if which.is_none_or(|w| w == i) {
                if let Some(mut r) = tr.running.take() {
                    r.stop();
                }
                if which.is_some() {
                    self.watch.killed.get_or_insert((i, t));
                }
            }
        }
    }

    /// Starts again the trackers stopped, at their addresses.
    pub(super) async fn restart(&mut self) -> anyhow::Result<()> {
        for tr in self.list.iter_mut().filter(|t| t.running.is_none()) {
            // The old listener may take a moment to be released.
            for _ in 0..50 {
                if let Ok(r) = tracker::start(tr.addr, self.config.clone()).await {
                    tr.running = Some(r);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if tr.running.is_none() {
                bail!("the tracker could not listen on {} again", tr.addr);
            }
        }
        Ok(())
    }

    /// The stream as operators read it (`GET /v1/streams/{id}`: its last
    /// budget from the coordinator, its reflectors), from the first tracker
    /// in its order that holds it; `None` if none answers.
    pub(super) async fn detail(&self, stream: StreamId) -> Option<serde_json::Value> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .ok()?;
        for i in rendezvous_order(&stream.to_string(), &self.urls) {
            let url = format!("{}/v1/streams/{stream}", self.urls[i]);
            let Ok(resp) = client.get(url).send().await else {
                continue;
            };
            if resp.status().is_success() {
                return resp.json().await.ok();
            }
        }
        None
    }

    /// Once a second: which live tracker holds which stream, with how many
    /// viewers.
    pub(super) async fn observe(&mut self, t: f64) {
        let mut held = HashMap::new();
        for (i, tr) in self.list.iter().enumerate() {
            if tr.running.is_none() {
                continue;
            }
            if let Ok(streams) = tr.client.streams().await {
                for s in streams {
                    held.entry(s.stream)
                        .or_insert_with(Vec::new)
                        .push((i, s.viewers));
                }
            }
        }
        self.watch.samples.push((t, held));
    }

    /// Where each stream landed and, after a kill, when it was whole on
    /// its next tracker; `None` with a single tracker.
    pub(super) fn result(&self, streams: &[StreamId], viewers: &[usize]) -> Option<ShardResult> {
        (self.list.len() > 1).then(|| self.watch.result(&self.urls, streams, viewers))
    }

    pub(super) fn stop_all(&mut self) {
        for tr in &mut self.list {
            if let Some(mut r) = tr.running.take() {
                r.stop();
            }
        }
    }
}

/// The mean `interval_s` of the viewers the streams' details list.
pub(super) fn mean_viewer_interval(details: &[Option<serde_json::Value>]) -> Option<f64> {
    let intervals: Vec<f64> = (details.iter().flatten())
        .filter_map(|d| d.get("peers")?.as_array())
        .flatten()
        .filter(|p| p.get("role").and_then(|r| r.as_str()) == Some("viewer"))
        .filter_map(|p| p.get("interval_s")?.as_f64())
        .collect();
    (!intervals.is_empty()).then(|| intervals.iter().sum::<f64>() / intervals.len() as f64)
}

/// Stream id → (tracker, viewers it lists) for each tracker listing it.
type Holdings = HashMap<String, Vec<(usize, u32)>>;

/// The trackers' holdings over the run.
#[derive(Default)]
struct ShardWatch {
    /// The first tracker killed, and when.
    killed: Option<(usize, f64)>,
    /// Per second, when.
    samples: Vec<(f64, Holdings)>,
}

impl ShardWatch {
    fn result(&self, urls: &[String], streams: &[StreamId], viewers: &[usize]) -> ShardResult {
        let killed_at = self.killed.map(|(_, t)| t);
        let per_stream = (streams.iter().zip(viewers).enumerate())
            .map(|(index, (stream, &n))| {
                let id = stream.to_string();
                let order = rendezvous_order(&id, urls);
                let holders = |t: f64| {
                    (self.samples.iter())
                        .filter(move |(at, _)| *at <= t)
                        .filter_map(|(_, held)| held.get(&id))
                };
                // Before any kill: every tracker that listed the stream.
                let mut landed_on: Vec<usize> = holders(killed_at.unwrap_or(f64::INFINITY))
                    .flatten()
                    .map(|&(i, _)| i)
                    .collect();
                landed_on.sort_unstable();
                landed_on.dedup();
                let moved = self.killed.filter(|&(k, _)| k == order[0]);
                let moved_after_s = moved.and_then(|(_, at)| {
                    (self.samples.iter())
                        .filter(|(t, _)| *t >= at)
                        .find(|(_, held)| {
                            held.get(&id).is_some_and(|h| {
                                h.iter().any(|&(i, v)| i == order[1] && v as usize >= n)
                            })
                        })
                        .map(|(t, _)| t - at)
                });
                StreamShard {
                    index,
                    tracker: order[0],
                    next_tracker: order[1],
                    landed_on,
                    moved: moved.is_some(),
                    moved_after_s,
                }
            })
            .collect();
        ShardResult {
            trackers: urls.len(),
            killed: self.killed.map(|(i, _)| i),
            killed_at_s: killed_at,
            streams: per_stream,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_trackers_streams_are_timed_to_their_next() {
        let urls = vec![
            "http://127.0.0.1:1".to_string(),
            "http://127.0.0.1:2".to_string(),
        ];
        let streams: Vec<StreamId> = (1..=8u8)
            .map(|i| format!("{i:02x}").repeat(32).parse().unwrap())
            .collect();
        let order = |s: &StreamId| rendezvous_order(&s.to_string(), &urls);
        let on = |t: usize| streams.iter().filter(move |s| order(s)[0] == t);
        assert!(on(0).count() > 0 && on(1).count() > 0, "both trackers used");
        let held = |tracker_of: &dyn Fn(&StreamId) -> Option<usize>, viewers: u32| {
            (streams.iter())
                .filter_map(|s| Some((s.to_string(), vec![(tracker_of(s)?, viewers)])))
                .collect::<HashMap<_, _>>()
        };
        let watch = ShardWatch {
            killed: Some((0, 10.0)),
            samples: vec![
                (9.0, held(&|s| Some(order(s)[0]), 3)),
                // After the kill: tracker 0's streams on 1, two viewers so far.
                (11.0, held(&|s| (order(s)[0] == 1).then_some(1), 3)),
                (12.0, held(&|_| Some(1), 2)),
                (13.0, held(&|_| Some(1), 3)),
            ],
        };
        let r = watch.result(&urls, &streams, &[3; 8]);
        assert_eq!(
            (r.trackers, r.killed, r.killed_at_s),
            (2, Some(0), Some(10.0))
        );
        for s in &r.streams {
            assert_eq!(s.landed_on, [s.tracker]);
            assert_eq!(s.moved, s.tracker == 0);
            let want = (s.tracker == 0).then_some(3.0);
            assert_eq!(s.moved_after_s, want, "stream {}", s.index);
        }
    }

    #[test]
    fn the_mean_interval_counts_viewers_only() {
        let detail = serde_json::json!({"peers": [
            {"role": "seeder", "interval_s": 2},
            {"role": "viewer", "interval_s": 2},
            {"role": "viewer", "interval_s": 10},
        ]});
        assert_eq!(mean_viewer_interval(&[Some(detail), None]), Some(6.0));
        assert_eq!(mean_viewer_interval(&[None]), None);
    }
}
