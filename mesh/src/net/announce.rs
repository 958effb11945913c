//! Keeps a node known to the tracker and feeds its hints to the engine.
//!
//! The tracker is advice only: when it is unreachable the node logs it,
//! keeps its neighbours and tries again next interval.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::watch;

use super::{Command, Commander};
use crate::{
    allocation::ViewerReport,
    hints::{Announce, Role},
    proto::{wire, Locality, PeerInfo, Stats, StreamId},
    shards::Trackers,
};

/// What a node says of itself in each announce.
#[derive(Clone, Debug)]
pub struct Announcer {
    /// The stream's tracker is the one rendezvous hashing names among
    /// these, or the next that answers.
    pub trackers: Trackers,
    pub stream: StreamId,
    pub role: Role,
    pub max_degree: u32,
    pub upload_kbps: u32,
    /// Infrastructure: its HTTP origin.
    pub http: Option<String>,
    /// Seeders: the stream's name.
    pub name: Option<String>,
    /// Whether hints become neighbour candidates (seeders wait to be dialled).
    pub use_candidates: bool,
    /// Infrastructure: the stream's bitrate as measured, kbit/s, for the
    /// coordinator (`None`: not measured).
    pub bitrate_kbps: Option<watch::Receiver<u32>>,
}

impl NetHandleParts {
    fn from(handle: &super::NetHandle) -> Self {
        NetHandleParts {
            peer_id: handle.peer_id,
            host: handle.host().clone(),
            commands: handle.commander(),
            stats: handle.stats_watch(),
        }
    }
}

struct NetHandleParts {
    peer_id: PeerId,
    host: super::Host,
    commands: Commander,
    stats: watch::Receiver<Stats>,
}

impl Announcer {
    /// Announces now and then every interval the tracker asks for, until the
    /// node stops. Returns the task.
    pub fn spawn(self, handle: &super::NetHandle) -> tokio::task::JoinHandle<()> {
        let parts = NetHandleParts::from(handle);
        tokio::spawn(self.run(parts))
    }

    async fn run(self, node: NetHandleParts) {
        let mut warned = false;
        // The tracker that answered last (its index in `trackers`).
        let mut answering = None;
        // What the engine was last told of its own locality (it starts
        // with unknown, zero).
        let mut located = Locality::default();
        let mut viewers = 0u32;
        let mut budget = None;
        let mut reflected = false;
        // The stats at the last announce: a viewer reports what came since.
        let mut reported = node.stats.borrow().clone();
        // Whether the host was last told a tracker answers (it starts
        // looking the stream up in the DHT as if none did).
        let mut tracked = false;
        loop {
            let stats = node.stats.borrow().clone();
            let report = (self.role == Role::Viewer)
                .then(|| viewer_report(&stats, &reported, self.upload_kbps));
            let announce = Announce {
                stream: self.stream.to_string(),
                peer_id: node.peer_id.to_string(),
                // Only what others can dial (docs/nat.md), as it stands now.
                addrs: node.host.net_status().addrs,
                role: self.role,
                degree: stats.neighbors,
                max_degree: self.max_degree,
                upload_kbps: self.upload_kbps,
                http: self.http.clone(),
                name: self.name.clone(),
                want: self.max_degree * 2,
                // The tracker keeps infrastructure's only (docs/protocol.md §12.4).
                counters: if self.role.is_infra() {
                    stats.report()
                } else {
                    serde_json::Value::Null
                },
                coord: stats.coord,
                report,
                bitrate_kbps: self.bitrate_kbps.as_ref().map_or(0, |b| *b.borrow()),
            };
            let answer = self.trackers.announce(&announce).await;
            if answer.is_ok() != tracked {
                tracked = answer.is_ok();
                if node.commands.send(Command::Tracked(tracked)).await.is_err() {
                    return;
                }
            }
            let interval = match answer {
                Ok((hints, tracker)) => {
                    if warned {
                        tracing::info!("tracker reachable again");
                        warned = false;
                    }
                    if answering != Some(tracker) {
                        answering = Some(tracker);
                        let url = &self.trackers.urls()[tracker];
                        tracing::info!(%url, "announcing to this tracker");
                    }
                    let interval = Duration::from_secs(u64::from(hints.interval_s.clamp(1, 300)));
                    let origins: Vec<String> = hints
                        .seeders
                        .iter()
                        .filter_map(|s| s.http.clone())
                        .collect();
                    if node.commands.send(Command::Origins(origins)).await.is_err() {
                        return;
                    }
                    let relays = hints
                        .seeders
                        .iter()
                        .filter_map(|s| {
                            Some(PeerInfo::new(
                                s.peer_id.parse().ok()?,
                                dialable(s.addrs.clone()),
                            ))
                        })
                        .collect();
                    if node.commands.send(Command::Relays(relays)).await.is_err() {
                        return;
                    }
                    if hints.viewers > 0 && hints.viewers != viewers {
                        viewers = hints.viewers;
                        if node.commands.send(Command::Swarm(viewers)).await.is_err() {
                            return;
                        }
                    }
                    reported = stats;
                    if self.role.is_infra() && hints.budget_bps != budget {
                        budget = hints.budget_bps;
                        match budget {
                            Some(bps) => {
                                tracing::info!(bps, "coordinator's upload budget for the stream")
                            }
                            None => tracing::info!("no upload budget for the stream"),
                        }
                        if node.commands.send(Command::Budget(budget)).await.is_err() {
                            return;
                        }
                    }
                    if self.role == Role::Seeder && hints.reflected != reflected {
                        reflected = hints.reflected;
                        tracing::info!(reflected, "reflectors serve the stream's viewers");
                        let cmd = Command::Reflected(reflected);
                        if node.commands.send(cmd).await.is_err() {
                            return;
                        }
                    }
                    if hints.you != located {
                        located = hints.you;
                        if node.commands.send(Command::Located(located)).await.is_err() {
                            return;
                        }
                    }
                    if self.use_candidates {
                        let peers = hints
                            .candidates
                            .into_iter()
                            .filter_map(|c| {
                                Some(PeerInfo {
                                    peer: c.peer_id.parse::<PeerId>().ok()?,
                                    addrs: dialable(c.addrs),
                                    coord: c.coord.filter(|c| c.is_valid()),
                                    loc: c.loc,
                                    free: Some(
                                        c.max_degree.saturating_sub(c.degree).min(u16::MAX.into())
                                            as u16,
                                    ),
                                })
                            })
                            .collect();
                        if node
                            .commands
                            .send(Command::Candidates(peers))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                    interval
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!("tracker announce failed (the mesh carries on): {e}");
                        warned = true;
                    }
                    Duration::from_secs(2)
                }
            };
            // The host stopped, or the stream was left (its stats go).
            if node.commands.is_closed() || node.stats.has_changed().is_err() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// What a viewer's stats say of the time between two announces.
fn viewer_report(now: &Stats, then: &Stats, upload_kbps: u32) -> ViewerReport {
    ViewerReport {
        infra_bytes: now
            .payload_from_infra
            .saturating_sub(then.payload_from_infra),
        pieces_due: now.pieces_due.saturating_sub(then.pieces_due),
        pieces_in_time: now.pieces_on_time.saturating_sub(then.pieces_on_time),
        playing: now.startup_ms.is_some(),
        upload_bps: u64::from(upload_kbps) * 1000,
    }
}

/// A hint's addresses that parse as multiaddrs, within the wire's bounds:
/// what the tracker says is checked like what a peer says before it is
/// dialled or passed on.
pub fn dialable(addrs: Vec<String>) -> Vec<String> {
    addrs
        .into_iter()
        .filter(|a| a.len() <= wire::MAX_ADDR_LEN && a.parse::<Multiaddr>().is_ok())
        .take(wire::MAX_ADDRS)
        .collect()
}
