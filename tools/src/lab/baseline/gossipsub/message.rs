//! What a gossipsub message is to the baseline: the stream's topic, the
//! piece it carries and its id.

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
};

use libp2p::{
    gossipsub::{self, IdentTopic},
    PeerId,
};
use shoal_mesh::proto::{wire, Message, Piece, StreamId};

pub(super) fn topic(stream: StreamId) -> IdentTopic {
    IdentTopic::new(format!("/shoal/gossipsub/{stream}"))
}

/// The piece a message carries, if its data is one whole Piece frame.
pub(super) fn piece_of(data: &[u8]) -> Option<Piece> {
    let (prefix, body) = data.split_at_checked(4)?;
    let len = u32::from_be_bytes(prefix.try_into().ok()?) as usize;
    if len != body.len() {
        return None;
    }
    match wire::decode::<PeerId>(body) {
        Ok(Message::Piece(p)) => Some(p),
        _ => None,
    }
}

/// Message id: the piece seq; a hash of the bytes for anything else.
pub(super) fn message_id(msg: &gossipsub::Message) -> gossipsub::MessageId {
    match piece_of(&msg.data) {
        Some(p) => gossipsub::MessageId::new(&p.header.seq.to_be_bytes()),
        None => {
            let mut h = DefaultHasher::new();
            msg.data.hash(&mut h);
            let mut id = b"?".to_vec();
            id.extend_from_slice(&h.finish().to_be_bytes());
            gossipsub::MessageId::new(&id)
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use libp2p::identity::Keypair;
    use shoal_mesh::proto::{piece::flags, Signer};

    use super::*;

    #[test]
    fn message_id_is_the_seq() {
        let key = Keypair::generate_ed25519();
        let signer = Signer::new(&key).unwrap();
        let piece = signer
            .sign(42, 10, flags::FIRST, 1, 0, Bytes::from_static(b"abc"))
            .unwrap();
        let data = wire::encode::<PeerId>(&Message::Piece(piece)).to_vec();
        let msg = |data: Vec<u8>| gossipsub::Message {
            source: None,
            data,
            sequence_number: None,
            topic: topic(signer.stream()).hash(),
        };
        assert_eq!(
            message_id(&msg(data.clone())),
            gossipsub::MessageId::new(&42u64.to_be_bytes())
        );
        assert!(piece_of(&data).is_some());
        let mut bad = data.clone();
        bad.truncate(20);
        assert!(piece_of(&bad).is_none());
        assert_ne!(message_id(&msg(bad)), message_id(&msg(data)));
    }
}
