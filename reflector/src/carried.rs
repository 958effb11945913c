//! One stream a reflector carries: its lane on the host, its HTTP origin,
//! its announcer and the parents it takes the stream from.

use libp2p::PeerId;
use shoal_mesh::{
    hints::{self, Assignment},
    net::{dialable, Announcer, Command, Host, NetError, NetHandle, OnPiece},
    proto::{Config, PeerInfo, StreamId},
    shards::Trackers,
};
use shoal_seeder::origin::Origin;
use tokio::task::JoinHandle;

use crate::http::{base_url, Origins};

/// What a carried stream needs from the reflector.
pub(crate) struct Setting<'a> {
    pub host: &'a Host,
    pub client: &'a Trackers,
    pub origins: &'a Origins,
    /// The HTTP origin's base URL (`http://addr`).
    pub http: &'a str,
    pub upload_limit_bps: Option<u64>,
}

pub(crate) struct Carried {
    net: NetHandle,
    announcer: JoinHandle<()>,
    parents: Vec<PeerInfo<PeerId>>,
}

impl Carried {
    /// Joins the stream the coordinator assigned.
    pub(crate) async fn start(
        stream: StreamId,
        assignment: &Assignment,
        at: &Setting<'_>,
    ) -> Result<Carried, NetError> {
        let mut engine = Config::reflector(stream);
        engine.max_degree = assignment.max_degree.clamp(1, 64) as usize;
        engine.upload_limit = at.upload_limit_bps.map(|b| b / 8);
        engine.upload_kbps = upload_kbps(at.upload_limit_bps);
        let origin = Origin::new(stream, String::new(), engine.window_ms);
        let feed = origin.clone();
        let on_piece: OnPiece = Box::new(move |p| feed.insert(p));
        let net = at.host.join(engine.clone(), Some(on_piece)).await?;
        origin.set_budget_gate(net.budget_gate());
        at.origins.insert(stream, origin);
        let announcer = Announcer {
            trackers: at.client.clone(),
            stream,
            role: hints::Role::Reflector,
            max_degree: engine.max_degree as u32,
            upload_kbps: engine.upload_kbps,
            http: Some(base_url(at.http, &stream)),
            name: None,
            // Viewers to spread its pushes over, as a seeder's.
            use_candidates: true,
            bitrate_kbps: None,
        }
        .spawn(&net);
        let mut carried = Carried {
            net,
            announcer,
            parents: Vec::new(),
        };
        carried.update(assignment).await?;
        Ok(carried)
    }

    /// Takes a new assignment of the same stream: its parents may change.
    pub(crate) async fn update(&mut self, assignment: &Assignment) -> Result<(), NetError> {
        let parents = parents(assignment);
        if parents != self.parents {
            tracing::info!(
                stream = %self.net.stream,
                parents = ?parents.iter().map(|p| p.peer.to_string()).collect::<Vec<_>>(),
                "parents assigned"
            );
            self.parents = parents.clone();
            self.net.send(Command::Parents(parents)).await?;
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> shoal_mesh::proto::Stats {
        self.net.stats()
    }

    /// The lane's stats as they change (refreshed four times a second).
    pub(crate) fn stats_watch(&self) -> tokio::sync::watch::Receiver<shoal_mesh::proto::Stats> {
        self.net.stats_watch()
    }
}

impl Drop for Carried {
    fn drop(&mut self) {
        // The lane goes with `net`; its announcer with it.
        self.announcer.abort();
    }
}

/// The assignment's parents that can be dialled.
fn parents(assignment: &Assignment) -> Vec<PeerInfo<PeerId>> {
    assignment
        .parents
        .iter()
        .filter_map(|p| {
            let peer = p.peer_id.parse::<PeerId>().ok()?;
            Some(PeerInfo::new(peer, dialable(p.addrs.clone())))
        })
        .collect()
}

pub(crate) fn upload_kbps(limit_bps: Option<u64>) -> u32 {
    limit_bps.map_or(0, |b| u32::try_from(b / 1000).unwrap_or(u32::MAX))
}
