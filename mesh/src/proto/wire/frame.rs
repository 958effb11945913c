//! Frames: a message encoded behind its length prefix and version byte,
//! and a received body decoded back, a piece's payload shared, not copied.

use bincode::enc::write::{SizeWriter, Writer};
use bytes::{BufMut, Bytes, BytesMut};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::{bounds::check_bounds, Message, WireError, FRAME_VERSION, MAX_FRAME_BYTES};
use crate::proto::piece::{Piece, PieceHeader};

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
    header: PieceHeader,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        coords::Coord,
        piece::{Signer, MAX_PIECE_BYTES},
        wire::{Hello, Locality, PeerInfo, RefuseReason, Role, MAX_LIST, PROTOCOL_VERSION},
    };

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
            Message::Feed { on: true },
            Message::Feed { on: false },
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
}
