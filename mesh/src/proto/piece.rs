//! Pieces: the signed unit of exchange.
//!
//! Every piece is signed by the broadcaster on its own, so it can enter the
//! mesh the moment the seeder cuts it and every receiver can verify it before
//! storing, relaying or playing it. The stream id *is* the broadcaster's
//! ed25519 public key, so knowing the id is enough to verify every byte.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    str::FromStr,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use libp2p::identity::{ed25519, Keypair};
use serde::{Deserialize, Serialize};

/// Largest piece payload, in bytes.
pub const MAX_PIECE_BYTES: usize = 64 * 1024;

/// Domain separation for piece signatures.
const SIGNING_CONTEXT: &[u8] = b"shoal/piece/v1";

/// Identifies a stream: the broadcaster's ed25519 public key (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamId(pub [u8; 32]);

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({})", &self.to_string()[..12])
    }
}

/// Why a stream id string was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stream id is 64 lowercase hex characters (an ed25519 public key)")]
pub struct BadStreamId;

impl FromStr for StreamId {
    type Err = BadStreamId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(BadStreamId);
        }
        let mut out = [0u8; 32];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let hex = |c: u8| match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                _ => Err(BadStreamId),
            };
            out[i] = hex(chunk[0])? << 4 | hex(chunk[1])?;
        }
        Ok(StreamId(out))
    }
}

/// Flags of a piece within its segment.
pub mod flags {
    /// The piece starts a segment (it begins with a video keyframe for TS input).
    pub const FIRST: u8 = 1;
    /// The piece ends a segment.
    pub const LAST: u8 = 2;
}

/// What the broadcaster signs for each piece.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceHeader {
    pub stream: StreamId,
    /// Increasing over the whole stream, without gaps.
    pub seq: u64,
    /// Segment (player unit) this piece belongs to; increasing, without gaps.
    pub segment: u64,
    /// [`flags::FIRST`] and/or [`flags::LAST`].
    pub flags: u8,
    /// Broadcaster's wall clock when the piece was cut (ms since the Unix epoch).
    pub produced_at: u64,
    /// Segment duration in ms, set on the last piece of a segment (0 otherwise).
    pub duration_ms: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// BLAKE3 of the payload.
    pub hash: [u8; 32],
}

impl PieceHeader {
    pub fn is_first(&self) -> bool {
        self.flags & flags::FIRST != 0
    }

    pub fn is_last(&self) -> bool {
        self.flags & flags::LAST != 0
    }

    fn signing_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(SIGNING_CONTEXT);
        out.extend_from_slice(&self.stream.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.segment.to_be_bytes());
        out.push(self.flags);
        out.extend_from_slice(&self.produced_at.to_be_bytes());
        out.extend_from_slice(&self.duration_ms.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out
    }
}

/// A signed piece of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    pub header: PieceHeader,
    /// ed25519 signature (64 bytes) over the header.
    pub signature: Bytes,
    pub data: Bytes,
}

/// Why a piece failed verification.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PieceError {
    #[error("piece belongs to another stream")]
    WrongStream,
    #[error("piece payload of {0} bytes exceeds the limit or its header")]
    BadLength(usize),
    #[error("piece payload does not match its hash")]
    BadHash,
    #[error("piece signature is invalid")]
    BadSignature,
    #[error("stream key is not a valid ed25519 public key")]
    BadKey,
}

/// The broadcaster's verifying key, parsed once per stream.
#[derive(Clone)]
pub struct StreamKey {
    id: StreamId,
    key: ed25519::PublicKey,
    /// Pieces already verified, when the key is shared by engines that
    /// pass the same buffers around (the simulator).
    memo: Option<Arc<Mutex<Verified>>>,
}

/// Recently verified pieces, each holding its payload buffer.
#[derive(Default)]
struct Verified {
    by_seq: HashMap<u64, Arc<Piece>>,
    order: VecDeque<u64>,
}

/// Verified pieces remembered by a shared key.
const VERIFIED_MEMO: usize = 4096;

impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StreamKey").field(&self.id).finish()
    }
}

impl StreamKey {
    pub fn new(id: StreamId) -> Result<Self, PieceError> {
        let key = ed25519::PublicKey::try_from_bytes(&id.0).map_err(|_| PieceError::BadKey)?;
        Ok(StreamKey {
            id,
            key,
            memo: None,
        })
    }

    /// A key for many engines in one process that hand each other the same
    /// payload buffers (the simulator): a piece whose header, signature and
    /// payload *buffer* were verified before is accepted without hashing
    /// and checking the signature again. The memo holds each payload buffer
    /// it vouches for, so that buffer cannot be freed and reused while
    /// remembered, and buffers are immutable: same buffer, same bytes.
    pub fn shared(id: StreamId) -> Result<Self, PieceError> {
        Ok(StreamKey {
            memo: Some(Arc::default()),
            ..StreamKey::new(id)?
        })
    }

    pub fn id(&self) -> StreamId {
        self.id
    }

    /// Checks stream, length, hash and signature; cheap checks first.
    pub fn verify(&self, piece: &Piece) -> Result<(), PieceError> {
        let h = &piece.header;
        if h.stream != self.id {
            return Err(PieceError::WrongStream);
        }
        if piece.data.len() > MAX_PIECE_BYTES || piece.data.len() != h.len as usize {
            return Err(PieceError::BadLength(piece.data.len()));
        }
        let Some(memo) = &self.memo else {
            return self.verify_fully(piece);
        };
        let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
        let known = memo.by_seq.get(&h.seq).is_some_and(|m| {
            m.header == *h
                && m.signature == piece.signature
                && m.data.as_ptr() == piece.data.as_ptr()
                && m.data.len() == piece.data.len()
        });
        if known {
            return Ok(());
        }
        self.verify_fully(piece)?;
        if memo.by_seq.insert(h.seq, Arc::new(piece.clone())).is_none() {
            memo.order.push_back(h.seq);
        }
        while memo.order.len() > VERIFIED_MEMO {
            if let Some(old) = memo.order.pop_front() {
                memo.by_seq.remove(&old);
            }
        }
        Ok(())
    }

    /// The piece to keep: with a shared key, the one copy all engines keep
    /// of a verified piece when `piece` is that piece (same header,
    /// signature and payload buffer), so a run holds one header and
    /// signature per piece rather than one per node.
    pub fn intern(&self, piece: Piece) -> Arc<Piece> {
        if let Some(memo) = &self.memo {
            let memo = memo.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = memo.by_seq.get(&piece.header.seq) {
                if m.data.as_ptr() == piece.data.as_ptr()
                    && m.data.len() == piece.data.len()
                    && m.header == piece.header
                    && m.signature == piece.signature
                {
                    return m.clone();
                }
            }
        }
        Arc::new(piece)
    }

    fn verify_fully(&self, piece: &Piece) -> Result<(), PieceError> {
        let h = &piece.header;
        if blake3::hash(&piece.data).as_bytes() != &h.hash {
            return Err(PieceError::BadHash);
        }
        if !self.key.verify(&h.signing_bytes(), &piece.signature) {
            return Err(PieceError::BadSignature);
        }
        Ok(())
    }
}

/// The broadcaster's side: holds the secret key and signs pieces.
pub struct Signer {
    keypair: ed25519::Keypair,
    id: StreamId,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Signer").field(&self.id).finish()
    }
}

impl Signer {
    /// Uses an ed25519 libp2p identity key; other key types are refused.
    pub fn new(keypair: &Keypair) -> Result<Self, PieceError> {
        let keypair = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| PieceError::BadKey)?;
        let id = StreamId(keypair.public().to_bytes());
        Ok(Signer { keypair, id })
    }

    pub fn stream(&self) -> StreamId {
        self.id
    }

    /// Cuts a signed piece. `data` must be at most [`MAX_PIECE_BYTES`].
    pub fn sign(
        &self,
        seq: u64,
        segment: u64,
        flags: u8,
        produced_at: u64,
        duration_ms: u32,
        data: Bytes,
    ) -> Result<Piece, PieceError> {
        if data.len() > MAX_PIECE_BYTES {
            return Err(PieceError::BadLength(data.len()));
        }
        let header = PieceHeader {
            stream: self.id,
            seq,
            segment,
            flags,
            produced_at,
            duration_ms,
            len: data.len() as u32,
            hash: *blake3::hash(&data).as_bytes(),
        };
        let signature = Bytes::from(self.keypair.sign(&header.signing_bytes()));
        Ok(Piece {
            header,
            signature,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> Signer {
        Signer::new(&Keypair::generate_ed25519()).unwrap()
    }

    #[test]
    fn signed_piece_verifies() {
        let s = signer();
        let p = s
            .sign(7, 1, flags::FIRST, 1000, 0, Bytes::from_static(b"hello"))
            .unwrap();
        StreamKey::new(s.stream()).unwrap().verify(&p).unwrap();
    }

    #[test]
    fn tampering_is_detected() {
        tampering_is_detected_by(|s| StreamKey::new(s).unwrap());
    }

    #[test]
    fn a_shared_key_remembers_buffers_not_contents() {
        let s = signer();
        let key = StreamKey::shared(s.stream()).unwrap();
        let p = s
            .sign(7, 1, 0, 1000, 0, Bytes::from(vec![1u8; 64]))
            .unwrap();
        key.verify(&p).unwrap();
        key.verify(&p.clone()).unwrap();
        // The same bytes in another buffer are checked in full, and so is
        // the remembered buffer under a changed header or signature.
        let copy = Piece {
            data: Bytes::from(p.data.to_vec()),
            ..p.clone()
        };
        key.verify(&copy).unwrap();
        let mut bad = p.clone();
        bad.data = Bytes::from(vec![2u8; 64]);
        assert_eq!(key.verify(&bad), Err(PieceError::BadHash));
        let mut bad = p.clone();
        bad.header.produced_at += 1;
        assert_eq!(key.verify(&bad), Err(PieceError::BadSignature));
        let mut bad = p.clone();
        bad.signature = Bytes::from(vec![0u8; 64]);
        assert_eq!(key.verify(&bad), Err(PieceError::BadSignature));
        // A memo that remembers: everything above still holds for it.
        tampering_is_detected_by(|s| StreamKey::shared(s).unwrap());
    }

    fn tampering_is_detected_by(new_key: impl Fn(StreamId) -> StreamKey) {
        let s = signer();
        let key = new_key(s.stream());
        let p = s
            .sign(7, 1, 0, 1000, 0, Bytes::from_static(b"hello"))
            .unwrap();
        key.verify(&p).unwrap();

        let mut data = p.clone();
        data.data = Bytes::from_static(b"jello");
        assert_eq!(key.verify(&data), Err(PieceError::BadHash));

        let mut seq = p.clone();
        seq.header.seq = 8;
        assert_eq!(key.verify(&seq), Err(PieceError::BadSignature));

        let other = signer().sign(7, 1, 0, 1000, 0, p.data.clone()).unwrap();
        assert_eq!(key.verify(&other), Err(PieceError::WrongStream));

        let mut forged = other.clone();
        forged.header.stream = s.stream();
        assert_eq!(key.verify(&forged), Err(PieceError::BadSignature));

        let mut short = p.clone();
        short.data = Bytes::from_static(b"hell");
        assert_eq!(key.verify(&short), Err(PieceError::BadLength(4)));
    }

    #[test]
    fn oversized_piece_is_refused() {
        let big = Bytes::from(vec![0u8; MAX_PIECE_BYTES + 1]);
        assert!(signer().sign(0, 0, 0, 0, 0, big).is_err());
    }

    #[test]
    fn stream_id_round_trips_as_hex() {
        let id = signer().stream();
        assert_eq!(id.to_string().parse::<StreamId>(), Ok(id));
        assert_eq!("xyz".parse::<StreamId>(), Err(BadStreamId));
        assert_eq!("G".repeat(64).parse::<StreamId>(), Err(BadStreamId));
    }
}
