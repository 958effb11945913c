//! The bounds a decoded message must be within (docs/protocol.md §5): a
//! message that decodes but breaks one is a protocol violation.

use super::{
    Hello, Message, PeerInfo, WireError, MAX_ADDRS, MAX_ADDR_LEN, MAX_BITMAP_BYTES, MAX_LIST,
    MAX_SEQ, MAX_SUGGESTIONS,
};
use crate::proto::piece::MAX_PIECE_BYTES;

pub(super) fn check_bounds<P>(msg: &Message<P>) -> Result<(), WireError> {
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
        Message::Feed { .. } => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::wire::{decode, encode, iter_bits};

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
            decode::<u32>(&frame[4..]),
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
                decode::<u32>(&frame[4..]),
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
        let Ok(Message::BufferMap { base, bits, .. }) = decode::<u32>(&frame[4..]) else {
            panic!("a bitmap based below MAX_SEQ decodes");
        };
        assert_eq!(iter_bits(base, &bits).last(), Some(top + 32_767));
    }
}
