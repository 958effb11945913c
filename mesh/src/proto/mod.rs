//! The Shoal protocol as sans-IO state machines: no tokio, no sockets, no
//! clock reads. Time comes in as `now` (milliseconds), randomness from a
//! seeded RNG, so the same code runs under the libp2p driver and the simulator.

pub mod coords;
pub mod engine;
pub mod piece;
pub mod proximity;
mod seqset;
pub mod stats;
pub(crate) mod upload;
pub mod wire;

pub use coords::Coord;
pub use engine::{Config, Engine, Input, LiveEdge, Output, PeerId, Selection, Time};
pub use piece::{Piece, PieceError, PieceHeader, Signer, StreamId, StreamKey, MAX_PIECE_BYTES};
pub use stats::{MsHistogram, Stats, Summary};
pub use wire::{Locality, Message, PeerInfo, Role};
