//! The wire format: length-prefixed, versioned bincode frames.
//!
//! ```text
//! frame = len:u32 (big endian, bytes that follow) | version:u8 | bincode(Message)
//! ```
//! `len` is checked against [`MAX_FRAME_BYTES`] before anything is allocated;
//! a frame that is too long, of another version, not decodable, with trailing
//! bytes or with lists over their bounds is a protocol violation and the peer
//! is disconnected. `docs/protocol.md` is the normative description.

use bincode::enc::write::{SizeWriter, Writer};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{
    coords::Coord,
    piece::{Piece, StreamId, MAX_PIECE_BYTES},
};

/// Version of the handshake and message set.
pub const PROTOCOL_VERSION: u16 = 2;
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

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_BYTES>()
}

/// Checks a length prefix before its body is read.
pub fn check_len(len: u32) -> Result<usize, WireError> {
    let len = len as usize;
    if len > MAX_FRAME_BYTES {
        return Err(WireError::TooLong(len));
    }
    if len == 0 {
        return Err(WireError::Empty);
    }
    Ok(len)
}

/// Encodes a message as a whole frame, length prefix included.
pub fn encode<P: Serialize>(msg: &Message<P>) -> Bytes {
    encode_frame(msg).to_bytes()
}

/// Index of `Message::Piece` in the enum: its varint is this one byte.
const PIECE_VARIANT: u8 = 5;

/// A frame ready to write: the length prefix and encoded message, and for a
/// `Piece` its payload kept apart, so a payload is never copied on its way
/// through a node (the bytes on the wire are `head` then `data`).
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    head: Bytes,
    data: Bytes,
}

impl Frame {
    /// Bytes on the wire, length prefix included.
    pub fn len(&self) -> usize {
        self.head.len() + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The two parts to write in order (the second is empty but for pieces).
    pub fn parts(&self) -> (&Bytes, &Bytes) {
        (&self.head, &self.data)
    }

    /// The body after the length prefix, as a receiver sees it.
    pub fn body(&self) -> Body {
        Body {
            head: self.head.slice(4..),
            data: self.data.clone(),
        }
    }

    /// The whole frame in one buffer (copies a piece's payload).
    pub fn to_bytes(&self) -> Bytes {
        if self.data.is_empty() {
            return self.head.clone();
        }
        let mut out = BytesMut::with_capacity(self.len());
        out.extend_from_slice(&self.head);
        out.extend_from_slice(&self.data);
        out.freeze()
    }
}

/// A received frame body (after the length prefix): one buffer as read from
/// a stream, or the two parts of a [`Frame`] (the simulator hands them over
/// as sent). Either way a piece's payload is a slice, never a copy.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Body {
    head: Bytes,
    data: Bytes,
}

impl From<Bytes> for Body {
    fn from(head: Bytes) -> Self {
        Body {
            head,
            data: Bytes::new(),
        }
    }
}

impl Body {
    pub fn len(&self) -> usize {
        self.head.len() + self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes a message as a frame; a piece's payload is shared, not copied.
///
/// The frame is written once into a buffer of its exact size (measured by a
/// first, allocation-free pass): frames are the engine's most frequent
/// allocation, and growing a buffer while encoding reallocates it several
/// times.
pub fn encode_frame<P: Serialize>(msg: &Message<P>) -> Frame {
    match msg {
        Message::Piece(p) => encode_piece_frame(p),
        _ => encode_head(msg, Bytes::new()),
    }
}

/// Encodes `Message::Piece(piece)` as a frame, from a borrowed piece (the
/// engine sends pieces straight from its store).
pub fn encode_piece_frame(piece: &Piece) -> Frame {
    // The payload is the last field of the last struct: the message is the
    // variant's index, the header, the signature and the payload's length,
    // then the payload, which travels as the frame's second part.
    let head = (
        u32::from(PIECE_VARIANT),
        &piece.header,
        &piece.signature,
        piece.data.len() as u64,
    );
    encode_head(&head, piece.data.clone())
}

/// A frame of the encoded `head` followed by `data`.
fn encode_head<T: Serialize>(head: &T, data: Bytes) -> Frame {
    let mut size = SizeWriter::default();
    bincode::serde::encode_into_writer(head, &mut size, config())
        .expect("messages we build are within the frame limit");
    let head_len = size.bytes_written;
    let body_len = 1 + head_len + data.len();
    let mut out = BytesMut::with_capacity(4 + 1 + head_len);
    out.put_u32(body_len as u32);
    out.put_u8(FRAME_VERSION);
    bincode::serde::encode_into_writer(head, BytesWriter(&mut out), config())
        .expect("messages we build are within the frame limit");
    Frame {
        head: out.freeze(),
        data,
    }
}

/// Appends what bincode writes to a buffer.
struct BytesWriter<'a>(&'a mut BytesMut);

impl Writer for BytesWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> Result<(), bincode::error::EncodeError> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }
}

/// Decodes a frame body held in one buffer (copies a piece's payload; the
/// engine uses [`decode_body`]).
pub fn decode<P: DeserializeOwned>(body: &[u8]) -> Result<Message<P>, WireError> {
    decode_body(&Bytes::copy_from_slice(body).into())
}

/// Decodes a frame body. A piece's payload is sliced out of the buffer it
/// arrived in, not copied.
pub fn decode_body<P: DeserializeOwned>(body: &Body) -> Result<Message<P>, WireError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(WireError::TooLong(body.len()));
    }
    let (&version, _) = body.head.split_first().ok_or(WireError::Empty)?;
    if version != FRAME_VERSION {
        return Err(WireError::Version(version));
    }
    let rest = &body.head[1..];
    let msg = if rest.first() == Some(&PIECE_VARIANT) {
        Message::Piece(decode_piece(body)?)
    } else {
        if !body.data.is_empty() {
            return Err(WireError::Decode(
                "payload after a message that has none".into(),
            ));
        }
        let (msg, used): (Message<P>, usize) = bincode::serde::decode_from_slice(rest, config())
            .map_err(|e| WireError::Decode(e.to_string()))?;
        if used != rest.len() {
            return Err(WireError::Trailing(rest.len() - used));
        }
        msg
    };
    check_bounds(&msg)?;
    Ok(msg)
}

/// The fields of a piece before its payload.
#[derive(Deserialize)]
struct PieceHead {
    header: super::piece::PieceHeader,
    signature: Bytes,
    len: u64,
}

/// Decodes `Message::Piece`: the head with bincode, then the payload as the
/// rest of the body (the head's buffer, or the separate payload part).
fn decode_piece(body: &Body) -> Result<Piece, WireError> {
    // Skip the version byte and the variant index.
    let rest = &body.head[2..];
    let (head, used): (PieceHead, usize) = bincode::serde::decode_from_slice(rest, config())
        .map_err(|e| WireError::Decode(e.to_string()))?;
    let after = 2 + used;
    let tail = body.head.len() - after;
    let data = if body.data.is_empty() {
        body.head.slice(after..)
    } else if tail == 0 {
        body.data.clone()
    } else {
        return Err(WireError::Decode(
            "piece head split from its payload".into(),
        ));
    };
    let len = head.len as usize;
    if data.len() < len {
        return Err(WireError::Decode(
            "piece payload shorter than its length".into(),
        ));
    }
    if data.len() > len {
        return Err(WireError::Trailing(data.len() - len));
    }
    Ok(Piece {
        header: head.header,
        signature: head.signature,
        data,
    })
}

fn check_bounds<P>(msg: &Message<P>) -> Result<(), WireError> {
    let list = |seqs: &[u64], what| {
        if seqs.len() > MAX_LIST {
            Err(WireError::Bound(what))
        } else if seqs.iter().any(|&s| s >= MAX_SEQ) {
            Err(WireError::Bound("sequence number"))
        } else {
            Ok(())
        }
    };
    match msg {
        Message::Refuse { suggestions, .. } => peer_list(suggestions)?,
        Message::Peers { peers } => peer_list(peers)?,
        Message::BufferMap {
            base,
            bits,
            segment_starts,
        } => {
            if bits.len() > MAX_BITMAP_BYTES {
                return Err(WireError::Bound("bitmap"));
            }
            if *base >= MAX_SEQ {
                return Err(WireError::Bound("sequence number"));
            }
            list(segment_starts, "segment starts")?;
        }
        Message::Have {
            seqs,
            segment_starts,
        } => {
            list(seqs, "have")?;
            list(segment_starts, "segment starts")?;
        }
        Message::Request { seqs } => list(seqs, "request")?,
        Message::Missing { seqs } => list(seqs, "missing")?,
        Message::Cancel { seqs } => list(seqs, "cancel")?,
        Message::Piece(p) => {
            if p.data.len() > MAX_PIECE_BYTES || p.signature.len() != 64 {
                return Err(WireError::Bound("piece"));
            }
            if p.header.seq >= MAX_SEQ {
                return Err(WireError::Bound("sequence number"));
            }
        }
        Message::Hello(Hello { coord, .. })
        | Message::Ping { coord, .. }
        | Message::Pong { coord, .. } => {
            if !coord.is_valid() {
                return Err(WireError::Bound("coordinate"));
            }
        }
    }
    Ok(())
}

fn peer_list<P>(peers: &[PeerInfo<P>]) -> Result<(), WireError> {
    if peers.len() <= MAX_SUGGESTIONS && peers.iter().all(is_valid_peer_info) {
        Ok(())
    } else {
        Err(WireError::Bound("peer list"))
    }
}

/// Whether a peer's record is within the bounds of §5: the same check for
/// a peer list on the wire and for the tracker's hints, so that no hint
/// is dialled or passed on that a peer could not have sent.
pub fn is_valid_peer_info<P>(p: &PeerInfo<P>) -> bool {
    p.addrs.len() <= MAX_ADDRS
        && p.addrs.iter().all(|a| a.len() <= MAX_ADDR_LEN)
        && p.coord.is_none_or(|c| c.is_valid())
}

/// Sets bit `seq - base` in a bitmap.
pub fn set_bit(bits: &mut Vec<u8>, base: u64, seq: u64) {
    let i = (seq - base) as usize;
    if bits.len() <= i / 8 {
        bits.resize(i / 8 + 1, 0);
    }
    bits[i / 8] |= 1 << (i % 8);
}

/// The sequence numbers whose bits are set.
pub fn iter_bits(base: u64, bits: &[u8]) -> impl Iterator<Item = u64> + '_ {
    bits.iter().enumerate().flat_map(move |(byte, &b)| {
        (0..8)
            .filter(move |bit| b & (1 << bit) != 0)
            .map(move |bit| base + (byte * 8 + bit) as u64)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::piece::Signer;

    fn body(frame: &Bytes) -> &[u8] {
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap());
        assert_eq!(check_len(len), Ok(frame.len() - 4));
        &frame[4..]
    }

    #[test]
    fn messages_round_trip() {
        let signer = Signer::new(&libp2p::identity::Keypair::generate_ed25519()).unwrap();
        let piece = signer
            .sign(3, 0, 1, 42, 0, Bytes::from(vec![7u8; MAX_PIECE_BYTES]))
            .unwrap();
        let msgs: Vec<Message<u32>> = vec![
            Message::Hello(Hello {
                version: PROTOCOL_VERSION,
                stream: signer.stream(),
                role: Role::Viewer,
                degree: 3,
                max_degree: 8,
                upload_kbps: 0,
                coord: Coord::default(),
                loc: Locality {
                    asn: 64512,
                    subnet: 7,
                },
                rtt_ms: 23,
            }),
            Message::Refuse {
                reason: RefuseReason::Full,
                suggestions: vec![PeerInfo::new(9, vec!["/ip4/127.0.0.1/tcp/1".into()])],
            },
            Message::BufferMap {
                base: 100,
                bits: vec![0b101],
                segment_starts: vec![100],
            },
            Message::Have {
                seqs: vec![1, 2],
                segment_starts: vec![],
            },
            Message::Request { seqs: vec![5] },
            Message::Piece(piece),
            // Payload lengths of one- and two-byte varints.
            Message::Piece(signer.sign(4, 0, 0, 43, 0, Bytes::new()).unwrap()),
            Message::Piece(
                signer
                    .sign(5, 0, 0, 44, 0, Bytes::from(vec![1u8; 100]))
                    .unwrap(),
            ),
            Message::Missing { seqs: vec![5] },
            Message::Ping {
                nonce: 1,
                coord: Coord::default(),
            },
            Message::Pong {
                nonce: 1,
                coord: Coord::default(),
            },
            Message::Cancel { seqs: vec![4, 5] },
            Message::Peers {
                peers: vec![PeerInfo {
                    peer: 3,
                    addrs: vec![],
                    coord: Some(Coord::default()),
                    loc: Locality::default(),
                    free: Some(2),
                }],
            },
        ];
        for m in msgs {
            let frame = encode(&m);
            assert!(frame.len() - 4 <= MAX_FRAME_BYTES);
            // The split encoding is plain bincode of the whole message.
            let plain = bincode::serde::encode_to_vec(&m, config()).unwrap();
            assert_eq!(&body(&frame)[1..], &plain[..]);
            assert_eq!(decode::<u32>(body(&frame)), Ok(m.clone()));
            // As two parts, the way the simulator hands frames over.
            assert_eq!(decode_body::<u32>(&encode_frame(&m).body()), Ok(m));
        }
    }

    #[test]
    fn piece_payloads_are_shared_not_copied() {
        let signer = Signer::new(&libp2p::identity::Keypair::generate_ed25519()).unwrap();
        let data = Bytes::from(vec![7u8; 1000]);
        let piece = signer.sign(3, 0, 1, 42, 0, data.clone()).unwrap();
        let frame = encode_frame::<u32>(&Message::Piece(piece));
        assert_eq!(frame.parts().1.as_ptr(), data.as_ptr());
        let Ok(Message::Piece(p)) = decode_body::<u32>(&frame.body()) else {
            panic!("a piece");
        };
        assert_eq!(p.data.as_ptr(), data.as_ptr());
        // Read into one buffer, the payload is a slice of that buffer.
        let whole = frame.to_bytes().slice(4..);
        let Ok(Message::Piece(p)) = decode_body::<u32>(&whole.clone().into()) else {
            panic!("a piece");
        };
        let start = whole.as_ptr() as usize;
        let at = p.data.as_ptr() as usize;
        assert!(at > start && at + p.data.len() == start + whole.len());
    }

    #[test]
    fn split_bodies_must_add_up() {
        let signer = Signer::new(&libp2p::identity::Keypair::generate_ed25519()).unwrap();
        let piece = signer
            .sign(3, 0, 1, 42, 0, Bytes::from(vec![7u8; 100]))
            .unwrap();
        let frame = encode_frame::<u32>(&Message::Piece(piece));
        let (head, data) = frame.parts();
        let head = head.slice(4..);
        for data in [data.slice(..99), {
            let mut d = data.to_vec();
            d.push(1);
            Bytes::from(d)
        }] {
            let body = Body {
                head: head.clone(),
                data,
            };
            assert!(decode_body::<u32>(&body).is_err());
        }
        // A payload part after a message without one.
        let ping = encode_frame::<u32>(&Message::Cancel { seqs: vec![1] });
        let body = Body {
            head: ping.parts().0.slice(4..),
            data: Bytes::from_static(b"x"),
        };
        assert!(decode_body::<u32>(&body).is_err());
    }

    #[test]
    fn bad_frames_are_rejected() {
        assert_eq!(
            check_len(MAX_FRAME_BYTES as u32 + 1),
            Err(WireError::TooLong(MAX_FRAME_BYTES + 1))
        );
        assert_eq!(check_len(0), Err(WireError::Empty));
        assert_eq!(decode::<u32>(&[]), Err(WireError::Empty));
        assert_eq!(decode::<u32>(&[9, 0]), Err(WireError::Version(9)));
        assert!(matches!(
            decode::<u32>(&[FRAME_VERSION, 200, 200, 200]),
            Err(WireError::Decode(_))
        ));
        let frame = encode::<u32>(&Message::Cancel { seqs: vec![5] });
        let mut long = body(&frame).to_vec();
        long.push(0);
        assert_eq!(decode::<u32>(&long), Err(WireError::Trailing(1)));
        let huge = encode::<u32>(&Message::Request {
            seqs: (0..MAX_LIST as u64 + 1).collect(),
        });
        assert_eq!(decode::<u32>(body(&huge)), Err(WireError::Bound("request")));
    }

    #[test]
    fn a_lying_length_inside_bincode_does_not_allocate() {
        // A Request claiming 2^60 entries: bincode's limit stops it early.
        let mut body = vec![FRAME_VERSION, 4]; // variant index of Request
        body.extend_from_slice(&[0xFF, 0, 0, 0, 0, 0, 0, 0, 0x10]);
        assert!(decode::<u32>(&body).is_err());
    }

    #[test]
    fn a_seq_at_or_above_max_seq_is_out_of_bounds() {
        // Found by the wire_frame fuzz target: a buffer map based at
        // u64::MAX overflowed `iter_bits` (debug) or wrapped to seq 0.
        let frame = encode::<u32>(&Message::BufferMap {
            base: u64::MAX,
            bits: vec![0x01],
            segment_starts: vec![],
        });
        assert_eq!(
            decode::<u32>(body(&frame)),
            Err(WireError::Bound("sequence number"))
        );
        for msg in [
            Message::Have {
                seqs: vec![MAX_SEQ],
                segment_starts: vec![],
            },
            Message::Have {
                seqs: vec![],
                segment_starts: vec![u64::MAX],
            },
            Message::Request {
                seqs: vec![MAX_SEQ],
            },
            Message::Missing {
                seqs: vec![MAX_SEQ],
            },
            Message::Cancel {
                seqs: vec![MAX_SEQ],
            },
        ] {
            let frame = encode::<u32>(&msg);
            assert_eq!(
                decode::<u32>(body(&frame)),
                Err(WireError::Bound("sequence number")),
                "{msg:?}"
            );
        }
        // The highest a full bitmap can name still fits a u64.
        let top = MAX_SEQ - 1;
        let frame = encode::<u32>(&Message::BufferMap {
            base: top,
            bits: vec![0xFF; MAX_BITMAP_BYTES],
            segment_starts: vec![],
        });
        let Ok(Message::BufferMap { base, bits, .. }) = decode::<u32>(body(&frame)) else {
            panic!("a bitmap based below MAX_SEQ decodes");
        };
        assert_eq!(iter_bits(base, &bits).last(), Some(top + 32_767));
    }

    #[test]
    fn bitmaps_round_trip() {
        let mut bits = Vec::new();
        for s in [10, 11, 17, 40] {
            set_bit(&mut bits, 10, s);
        }
        assert_eq!(
            iter_bits(10, &bits).collect::<Vec<_>>(),
            vec![10, 11, 17, 40]
        );
    }
}
