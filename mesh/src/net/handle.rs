//! What the application holds: a [`Host`] (the libp2p node, whatever
//! streams it carries) and one [`NetHandle`] per stream it joined.

use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch};

use super::{BudgetGate, Command, NetError, NetStatus, OnPiece};
use crate::proto::{Config, Stats, StreamId};

/// What the handles ask of the driver task.
pub(super) enum HostCommand {
    /// Start carrying a stream: a new engine, and inbound sessions for it.
    Join {
        engine: Config,
        on_piece: Option<OnPiece>,
        reply: oneshot::Sender<Result<LaneWatch, NetError>>,
    },
    /// Stop carrying a stream: its sessions close.
    Leave(StreamId),
    /// A command for one stream's engine.
    Lane(StreamId, Command),
}

/// What a new lane reports, for its handle.
pub(super) struct LaneWatch {
    pub(super) stats: watch::Receiver<Stats>,
    pub(super) neighbors: watch::Receiver<Vec<PeerId>>,
    pub(super) gate: BudgetGate,
}

/// Aborts the driver task when the last handle goes.
#[derive(Debug)]
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running host. Clones share it; it stops when the last clone and the
/// last [`NetHandle`] of it are dropped, or on [`Host::shutdown`].
#[derive(Clone, Debug)]
pub struct Host {
    pub peer_id: PeerId,
    /// Addresses it listens on.
    pub addrs: Vec<Multiaddr>,
    status: watch::Receiver<NetStatus>,
    commands: mpsc::Sender<HostCommand>,
    task: Arc<TaskGuard>,
}

impl Host {
    pub(super) fn new(
        peer_id: PeerId,
        addrs: Vec<Multiaddr>,
        status: watch::Receiver<NetStatus>,
        commands: mpsc::Sender<HostCommand>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Host {
            peer_id,
            addrs,
            status,
            commands,
            task: Arc::new(TaskGuard(task)),
        }
    }

    /// Its NAT status, the addresses it announces and its links to peers.
    pub fn net_status(&self) -> NetStatus {
        self.status.borrow().clone()
    }

    /// Starts carrying `engine.stream`; pieces new to this host go to
    /// `on_piece`. Fails when the host carries the stream already.
    pub async fn join(
        &self,
        engine: Config,
        on_piece: Option<OnPiece>,
    ) -> Result<NetHandle, NetError> {
        let stream = engine.stream;
        let (reply, answer) = oneshot::channel();
        let join = HostCommand::Join {
            engine,
            on_piece,
            reply,
        };
        self.commands
            .send(join)
            .await
            .map_err(|_| NetError::Stopped)?;
        let watch = answer.await.map_err(|_| NetError::Stopped)??;
        Ok(NetHandle {
            peer_id: self.peer_id,
            addrs: self.addrs.clone(),
            stream,
            commands: Commander {
                stream,
                tx: self.commands.clone(),
            },
            stats: watch.stats,
            neighbors: watch.neighbors,
            gate: watch.gate,
            host: self.clone(),
        })
    }

    pub fn is_running(&self) -> bool {
        !self.task.0.is_finished()
    }

    /// Stops the host: every stream's connections close.
    pub fn shutdown(&self) {
        self.task.0.abort();
    }
}

/// Sends commands to one stream's engine; for tasks that outlive a borrow
/// of the handle.
#[derive(Clone, Debug)]
pub struct Commander {
    stream: StreamId,
    tx: mpsc::Sender<HostCommand>,
}

impl Commander {
    pub async fn send(&self, cmd: Command) -> Result<(), NetError> {
        self.tx
            .send(HostCommand::Lane(self.stream, cmd))
            .await
            .map_err(|_| NetError::Stopped)
    }

    /// Whether the host stopped.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// One stream on a running host. Dropping it leaves the stream (and stops
/// the host if nothing else holds it).
#[derive(Debug)]
pub struct NetHandle {
    pub peer_id: PeerId,
    /// Addresses the host listens on.
    pub addrs: Vec<Multiaddr>,
    pub stream: StreamId,
    commands: Commander,
    stats: watch::Receiver<Stats>,
    neighbors: watch::Receiver<Vec<PeerId>>,
    gate: BudgetGate,
    host: Host,
}

impl NetHandle {
    pub async fn send(&self, cmd: Command) -> Result<(), NetError> {
        self.commands.send(cmd).await
    }

    /// A sender for commands, for tasks that outlive a borrow of the handle.
    pub fn commander(&self) -> Commander {
        self.commands.clone()
    }

    /// A receiver of stats snapshots.
    pub fn stats_watch(&self) -> watch::Receiver<Stats> {
        self.stats.clone()
    }

    /// The latest stats (refreshed four times a second).
    pub fn stats(&self) -> Stats {
        self.stats.borrow().clone()
    }

    /// Active neighbours (refreshed with the stats).
    pub fn neighbors(&self) -> Vec<PeerId> {
        self.neighbors.borrow().clone()
    }

    /// Degree now.
    pub fn degree(&self) -> u32 {
        self.stats.borrow().neighbors
    }

    /// The coordinator's budget for this stream, for the node's HTTP
    /// origin to ask before it serves.
    pub fn budget_gate(&self) -> BudgetGate {
        self.gate.clone()
    }

    /// The host this stream runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn is_running(&self) -> bool {
        self.host.is_running()
    }

    /// Stops the whole host (every stream it carries).
    pub fn shutdown(&self) {
        self.host.shutdown();
    }
}

impl Drop for NetHandle {
    fn drop(&mut self) {
        // Best effort: a full queue or a stopped host needs no leave.
        let _ = self
            .commands
            .tx
            .try_send(HostCommand::Leave(self.commands.stream));
    }
}
