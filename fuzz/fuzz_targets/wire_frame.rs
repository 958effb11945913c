//! The wire frame decoder on arbitrary frame bodies (docs/fuzzing.md).
//!
//! Asserts: decoding never panics; whatever decodes is within the bounds
//! `check_bounds` promises, re-encodes to a frame whose length prefix passes
//! `check_len`, and decodes again to the same message (whole, and as the two
//! parts the simulator hands over); a decoded buffer map's bits can be
//! walked. Run for both peer-id types the code uses (`u32` in the
//! simulator, libp2p's `PeerId` in the driver).

#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde::{de::DeserializeOwned, Serialize};
use shoal_mesh::proto::wire::{
    check_len, decode, decode_body, encode, encode_frame, iter_bits, Message, MAX_ADDRS,
    MAX_ADDR_LEN, MAX_BITMAP_BYTES, MAX_FRAME_BYTES, MAX_LIST, MAX_SUGGESTIONS,
};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
        if let Ok(n) = check_len(len) {
            assert!(n > 0 && n <= MAX_FRAME_BYTES);
        }
    }
    check::<u32>(data);
    check::<libp2p::PeerId>(data);
});

fn check<P>(body: &[u8])
where
    P: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug + Clone,
{
    let Ok(msg) = decode::<P>(body) else {
        return;
    };
    // The one-buffer path the driver takes agrees with `decode`.
    assert_eq!(
        decode_body::<P>(&Bytes::copy_from_slice(body).into()).as_ref(),
        Ok(&msg)
    );
    bounded(&msg);

    let frame = encode(&msg);
    let len = u32::from_be_bytes(frame[..4].try_into().expect("a length prefix"));
    assert_eq!(check_len(len), Ok(frame.len() - 4));
    assert_eq!(decode::<P>(&frame[4..]).as_ref(), Ok(&msg), "round trip");
    assert_eq!(
        decode_body::<P>(&encode_frame(&msg).body()).as_ref(),
        Ok(&msg),
        "round trip in two parts"
    );
}

/// What a decoded message promises its reader.
fn bounded<P>(msg: &Message<P>) {
    match msg {
        Message::BufferMap {
            base,
            bits,
            segment_starts,
        } => {
            assert!(bits.len() <= MAX_BITMAP_BYTES && segment_starts.len() <= MAX_LIST);
            // The engine walks every set bit as `base + i`.
            assert!(iter_bits(*base, bits).count() <= MAX_BITMAP_BYTES * 8);
        }
        Message::Have {
            seqs,
            segment_starts,
        } => assert!(seqs.len() <= MAX_LIST && segment_starts.len() <= MAX_LIST),
        Message::Request { seqs } | Message::Missing { seqs } | Message::Cancel { seqs } => {
            assert!(seqs.len() <= MAX_LIST)
        }
        Message::Refuse {
            suggestions: peers, ..
        }
        | Message::Peers { peers } => {
            assert!(peers.len() <= MAX_SUGGESTIONS);
            for p in peers {
                assert!(p.addrs.len() <= MAX_ADDRS);
                assert!(p.addrs.iter().all(|a| a.len() <= MAX_ADDR_LEN));
                assert!(p.coord.is_none_or(|c| c.is_valid()));
            }
        }
        Message::Piece(p) => {
            assert!(p.data.len() <= shoal_mesh::proto::MAX_PIECE_BYTES);
            assert_eq!(p.signature.len(), 64);
        }
        Message::Hello(h) => assert!(h.coord.is_valid()),
        Message::Ping { coord, .. } | Message::Pong { coord, .. } => assert!(coord.is_valid()),
        Message::Feed { .. } => {}
    }
}
