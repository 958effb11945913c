//! What an engine is told to be: its tunables, the degree caps it
//! accepts, and how it chooses neighbours.

use super::super::{
    piece::StreamId,
    wire::{Locality, Role},
};

/// Tunables. Times in milliseconds.
#[derive(Clone, Debug)]
pub struct Config {
    pub stream: StreamId,
    pub role: Role,
    /// Active neighbours never exceed this; within [`DEGREE_CAPS`].
    pub max_degree: usize,
    /// Pieces older than this (behind the newest) are dropped from the store.
    pub window_ms: u64,
    /// Bound on stored payload, whatever the window says.
    pub max_store_bytes: usize,
    /// Deadline of a piece = produced-at + this (or more if start-up took longer).
    pub playout_delay_ms: u64,
    /// A piece still missing at deadline − margin is fetched from infrastructure.
    pub fallback_margin_ms: u64,
    /// Requests in flight per neighbour.
    pub max_inflight_per_peer: usize,
    /// Requests in flight to infrastructure over HTTP.
    pub max_infra_inflight: usize,
    /// Payload upload limit in bytes/s (`None`: unlimited).
    pub upload_limit: Option<u64>,
    /// Haves are batched over this interval; 0 (the default): each input's
    /// new pieces are announced as soon as it is handled.
    pub have_interval_ms: u64,
    /// Ping and neighbour upkeep interval.
    pub tick_ms: u64,
    /// A request not answered within this is asked again elsewhere.
    pub request_timeout_ms: u64,
    /// New pieces pushed eagerly to this many neighbours (seeders: 1, so each
    /// piece leaves the origin about once).
    pub push_fanout: usize,
    /// A piece pushed by infrastructure is relayed at once to this many
    /// viewer neighbours (best provisioned first) that lack it.
    pub relay_push: usize,
    /// Upload kbit/s advertised in the handshake.
    pub upload_kbps: u32,
    /// How neighbours are chosen (the full score, or an ablation).
    pub selection: Selection,
    /// This node's AS and subnet, when known (see [`Input::Located`]).
    pub loc: Locality,
    /// How often the neighbour set is reconsidered.
    pub optimize_ms: u64,
    /// Hand each new verified piece to the player as [`Output::Deliver`]
    /// (the default). The simulator, which has no player, turns it off.
    pub deliver: bool,
}

impl Config {
    /// Defaults for a viewer.
    pub fn viewer(stream: StreamId) -> Self {
        Config {
            stream,
            role: Role::Viewer,
            max_degree: 8,
            window_ms: 30_000,
            max_store_bytes: 64 << 20,
            playout_delay_ms: 3_000,
            fallback_margin_ms: 1_000,
            max_inflight_per_peer: 8,
            max_infra_inflight: 16,
            upload_limit: None,
            have_interval_ms: 0,
            tick_ms: 1_000,
            request_timeout_ms: 1_500,
            push_fanout: 0,
            relay_push: 2,
            upload_kbps: 0,
            selection: Selection::Full,
            loc: Locality::default(),
            optimize_ms: 5_000,
            deliver: true,
        }
    }

    /// Defaults for a seeder (origin).
    pub fn seeder(stream: StreamId) -> Self {
        Config {
            role: Role::Seeder,
            max_degree: 8,
            push_fanout: 1,
            ..Config::viewer(stream)
        }
    }

    /// Defaults for a reflector: infrastructure like a seeder, fed by its
    /// parents ([`Input::Parents`](super::Input::Parents)) instead of the
    /// broadcaster. It delivers each new piece, which is how its HTTP
    /// origin is filled.
    pub fn reflector(stream: StreamId) -> Self {
        Config {
            role: Role::Reflector,
            deliver: true,
            ..Config::seeder(stream)
        }
    }
}

/// The degree caps an engine accepts (and so every CLI): at least one
/// neighbour, and few enough that every pass over them stays short.
pub const DEGREE_CAPS: std::ops::RangeInclusive<usize> = 1..=64;

/// Parses a degree cap given on a command line: a number in [`DEGREE_CAPS`].
pub fn parse_degree_cap(s: &str) -> Result<usize, String> {
    let (min, max) = (DEGREE_CAPS.start(), DEGREE_CAPS.end());
    s.parse::<usize>()
        .ok()
        .filter(|d| DEGREE_CAPS.contains(d))
        .ok_or_else(|| format!("'{s}' is not a neighbour count from {min} to {max}"))
}

/// A configuration the engine cannot run with.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the stream key is invalid: {0}")]
    Key(#[from] crate::proto::PieceError),
    #[error("max_degree {0} is outside {min}..={max}", min = DEGREE_CAPS.start(), max = DEGREE_CAPS.end())]
    MaxDegree(usize),
}

impl Config {
    /// Whether the engine can run with this configuration.
    pub fn check(&self) -> Result<(), EngineError> {
        if !DEGREE_CAPS.contains(&self.max_degree) {
            return Err(EngineError::MaxDegree(self.max_degree));
        }
        Ok(())
    }
}

/// How a node chooses its neighbours: the full score and two ablations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Whatever chance gives: candidates in random order, never replaced.
    Random,
    /// RTT alone: measured median, or predicted from coordinates.
    Rtt,
    /// RTT median and stability, AS and subnet affinity, delivered rate
    /// and free capacity.
    #[default]
    Full,
}
