//! The seeder's MPEG-TS ingest (packet sync, PSI, keyframes, segmenter) on
//! arbitrary bytes (docs/fuzzing.md).
//!
//! Input layout: 2 bytes of target segment duration (ms, little endian),
//! 1 byte choosing the chunk sizes, then the transport stream itself, so a
//! real `.ts` file behind a 3-byte prefix is a good seed.
//!
//! Asserts: no panic; every cut is whole 188-byte packets starting with the
//! sync byte, non-empty and at most `MAX_PIECE_BYTES`; segments are numbered
//! from 0 without gaps, each opened by a `first` cut and closed by one `last`
//! cut (only the last carries a duration); the output is bounded by the
//! input (at most the input's packets plus one PAT and PMT per segment); and
//! the cuts do not depend on how the input was chunked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_mesh::proto::MAX_PIECE_BYTES;
use shoal_seeder::ingest::{Cut, TsSegmenter};

const PACKET_LEN: usize = 188;
/// PAT and PMT sections are at most 6 packets each.
const MAX_TABLE_PACKETS: usize = 12;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let target_ms = u32::from(u16::from_le_bytes([data[0], data[1]]));
    let chunking = data[2];
    let ts = &data[3..];

    let whole = run(target_ms, ts, &mut std::iter::once(ts.len()));
    let mut rng = u32::from(chunking) | 1;
    let max_chunk = 1 + usize::from(chunking) * 16;
    let mut sizes = std::iter::from_fn(move || {
        // xorshift32: any chunking, decided by the input.
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        Some(1 + rng as usize % max_chunk)
    });
    let chunked = run(target_ms, ts, &mut sizes);
    assert_eq!(whole.len(), chunked.len(), "cuts depend on chunking");
    for (a, b) in whole.iter().zip(&chunked) {
        assert_eq!(
            (&a.data, a.segment, a.first, a.last, a.duration_ms),
            (&b.data, b.segment, b.first, b.last, b.duration_ms),
            "cuts depend on chunking"
        );
    }
    check(&whole, ts.len());
});

fn run(target_ms: u32, ts: &[u8], sizes: &mut dyn Iterator<Item = usize>) -> Vec<Cut> {
    let mut segmenter = TsSegmenter::new(target_ms);
    let mut cuts = Vec::new();
    let mut rest = ts;
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(rest.len()).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        cuts.extend(segmenter.push(chunk));
        rest = tail;
    }
    cuts.extend(segmenter.finish());
    assert_eq!(segmenter.bytes_in(), ts.len() as u64);
    cuts
}

fn check(cuts: &[Cut], input_len: usize) {
    let mut packets_out = 0;
    let mut open: Option<u64> = None;
    let mut next_segment = 0;
    for cut in cuts {
        assert!(!cut.data.is_empty(), "empty cut");
        assert!(cut.data.len() <= MAX_PIECE_BYTES);
        assert_eq!(cut.data.len() % PACKET_LEN, 0, "cut of partial packets");
        assert!(cut.data.chunks(PACKET_LEN).all(|p| p[0] == 0x47));
        packets_out += cut.data.len() / PACKET_LEN;
        match open {
            Some(s) => {
                assert_eq!(cut.segment, s, "segment left unclosed");
                assert!(!cut.first, "second first cut in a segment");
            }
            None => {
                assert_eq!(cut.segment, next_segment, "segment numbers skip");
                assert!(cut.first, "segment opened without a first cut");
            }
        }
        if cut.last {
            open = None;
            next_segment = cut.segment + 1;
        } else {
            assert_eq!(cut.duration_ms, 0, "duration before the last cut");
            open = Some(cut.segment);
        }
    }
    assert!(open.is_none(), "finish left a segment open");
    let packets_in = input_len / PACKET_LEN;
    let segments = next_segment as usize;
    assert!(segments <= packets_in, "more segments than packets");
    assert!(
        packets_out <= packets_in + segments * MAX_TABLE_PACKETS,
        "{packets_out} packets out of {packets_in} in {segments} segments"
    );
}
