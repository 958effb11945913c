//! The wire format: length-prefixed, versioned bincode frames.
//!
//! ```text
//! frame = len:u32 (big endian, bytes that follow) | version:u8 | bincode(Message)
//! ```
//! `len` is checked against [`MAX_FRAME_BYTES`] before anything is allocated;
//! a frame that is too long, of another version, not decodable, with trailing
//! bytes or with lists over their bounds is a protocol violation and the peer
//! is disconnected. `docs/protocol.md` is the normative description.

mod bitmap;
mod bounds;
mod frame;

use serde::{Deserialize, Serialize};

use super::{
    coords::Coord,
    piece::{Piece, StreamId, MAX_PIECE_BYTES},
};

pub use bitmap::{iter_bits, set_bit};
pub use bounds::is_valid_peer_info;
pub use frame::{
    check_len, decode, decode_body, encode, encode_frame, encode_piece_frame, Body, Frame,
};

/// Version of the handshake and message set.
pub const PROTOCOL_VERSION: u16 = 3;
/// Version byte that opens every frame body.
pub const FRAME_VERSION: u8 = 1;
/// Largest frame body (after the length prefix): one full piece plus headers.
pub const MAX_FRAME_BYTES: usize = MAX_PIECE_BYTES + 4 * 1024;
/// Most entries in a `Have`, `Request` or `Missing` list, or segment starts.
pub const MAX_LIST: usize = 1024;
/// Every sequence number on the wire is below this (2^48: a stream of 40
/// pieces a second takes 200,000 years to reach it), so that a peer's seq
/// plus any window or list length cannot overflow.
pub const MAX_SEQ: u64 = 1 << 48;
/// Largest buffer-map bitmap, in bytes (32,768 pieces).
pub const MAX_BITMAP_BYTES: usize = 4096;
/// Most peers suggested in a `Refuse`, and addresses per peer.
pub const MAX_SUGGESTIONS: usize = 16;
pub const MAX_ADDRS: usize = 8;
/// Longest address string in a peer list.
pub const MAX_ADDR_LEN: usize = 256;

/// What a node is in the mesh. On the wire it is a variant index (§5);
/// in the tracker's JSON, the name in lower case (§12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    /// Origin: cuts and signs the stream. Counts as infrastructure.
    Seeder,
    /// Relays from upstream seeders. Counts as infrastructure.
    Reflector,
}

impl Role {
    /// Seeders and reflectors are infrastructure: the fallback of last resort.
    pub fn is_infra(self) -> bool {
        !matches!(self, Role::Viewer)
    }
}

/// A peer and where to reach it. `addrs` are opaque to the engine (the
/// driver's multiaddrs as strings; empty in the simulator).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo<P> {
    pub peer: P,
    pub addrs: Vec<String>,
    /// Its network coordinate, when known.
    pub coord: Option<Coord>,
    /// Its AS and subnet, as the tracker saw them (zero: unknown).
    pub loc: Locality,
    /// Neighbour slots it had free when last heard of (`None`: unknown).
    pub free: Option<u16>,
}

impl<P> PeerInfo<P> {
    /// A peer known only by id and addresses.
    pub fn new(peer: P, addrs: Vec<String>) -> Self {
        PeerInfo {
            peer,
            addrs,
            coord: None,
            loc: Locality::default(),
            free: None,
        }
    }
}

/// Where a node sits in the Internet's structure: its autonomous system and
/// its /24 (IPv4) or /48 (IPv6) prefix. The tracker tells each node its own
/// (from the address it sees and an IP→AS table); nodes pass them on in
/// `Hello` and peer lists. Zero means unknown in both fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Locality {
    pub asn: u32,
    pub subnet: u64,
}

impl Locality {
    /// The locality of an address in AS `asn` (0: unknown AS).
    pub fn of_ip(ip: std::net::IpAddr, asn: u32) -> Self {
        let subnet = match ip {
            // Tag bits keep the IPv4 and IPv6 prefixes apart and non-zero.
            std::net::IpAddr::V4(v4) => (1 << 32) | u64::from(u32::from(v4) >> 8),
            std::net::IpAddr::V6(v6) => (1 << 63) | (u128::from(v6) >> 80) as u64,
        };
        Locality { asn, subnet }
    }

    /// Both in the same known AS.
    pub fn same_as(&self, other: &Locality) -> bool {
        self.asn != 0 && self.asn == other.asn
    }

    /// Both in the same known /24 (or /48).
    pub fn same_subnet(&self, other: &Locality) -> bool {
        self.subnet != 0 && self.subnet == other.subnet
    }
}

/// Opens every session, sent by both sides.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u16,
    pub stream: StreamId,
    pub role: Role,
    pub degree: u16,
    pub max_degree: u16,
    /// Upload capacity the node offers, kbit/s (0 = not limited).
    pub upload_kbps: u32,
    /// The sender's network coordinate.
    pub coord: Coord,
    /// The sender's AS and subnet, as its tracker told it (zero: unknown).
    pub loc: Locality,
    /// The RTT the sender measured to the receiver, ms (0: none): a full
    /// receiver weighs a dialler on it (docs/protocol.md §6.2).
    pub rtt_ms: u32,
}

/// Why a session was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefuseReason {
    /// At the degree cap: try the suggested peers instead.
    Full,
    UnknownStream,
    Version,
}

/// Every message of the protocol.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message<P> {
    Hello(Hello),
    Refuse {
        reason: RefuseReason,
        suggestions: Vec<PeerInfo<P>>,
    },
    /// Pieces held: bit `i` (LSB first within each byte) stands for `base + i`.
    /// `segment_starts` lists held pieces that open a segment.
    BufferMap {
        base: u64,
        bits: Vec<u8>,
        segment_starts: Vec<u64>,
    },
    /// Pieces newly held since the last `Have` (batched).
    Have {
        seqs: Vec<u64>,
        segment_starts: Vec<u64>,
    },
    Request {
        seqs: Vec<u64>,
    },
    Piece(Piece),
    /// Requested pieces the sender cannot serve (not held, or upload saturated).
    Missing {
        seqs: Vec<u64>,
    },
    /// Carries the sender's coordinate, so every RTT sample comes with the
    /// remote's place in the map.
    Ping {
        nonce: u64,
        coord: Coord,
    },
    Pong {
        nonce: u64,
        coord: Coord,
    },
    /// Requests the sender no longer wants (it went elsewhere): drop them
    /// from the upload queue if not yet sent.
    Cancel {
        seqs: Vec<u64>,
    },
    /// Peer exchange: a sample of the sender's neighbours, with addresses
    /// and coordinates, so nodes improve their set without the tracker.
    Peers {
        peers: Vec<PeerInfo<P>>,
    },
    /// From a reflector to one of its parents: push me every new piece as
    /// you get it (`on`), or stop (docs/protocol.md §7.7). Last, so that the
    /// variants before it keep their tags.
    Feed {
        on: bool,
    },
}

/// A frame that breaks the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME_BYTES}")]
    TooLong(usize),
    #[error("empty frame")]
    Empty,
    #[error("frame version {0} is not supported")]
    Version(u8),
    #[error("frame does not decode: {0}")]
    Decode(String),
    #[error("frame has {0} trailing bytes")]
    Trailing(usize),
    #[error("message exceeds a bound: {0}")]
    Bound(&'static str),
}
