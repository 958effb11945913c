//! Finding 188-byte packets in a byte stream that arrives in arbitrary chunks
//! and may contain garbage.

use super::ts::{Packet, PACKET_LEN, SYNC_BYTE};

/// Splits bytes into packets. While in sync, a packet is accepted when it
/// starts with 0x47 and so does the next one (one packet of lookahead, so a
/// garbage burst is caught where it starts). After garbage, a 0x47 is trusted
/// only if two more sync bytes follow at packet distance, because 0x47 alone
/// is common inside payloads. Decisions depend only on the bytes, never on
/// how they were chunked; the last packet of the input needs `at_end`.
#[derive(Debug, Default)]
pub(crate) struct PacketSync {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    pos: usize,
    in_sync: bool,
    /// Bytes thrown away while looking for sync.
    skipped: u64,
}

/// Sync bytes needed at packet distance to regain sync (including the first).
const RESYNC_PACKETS: usize = 3;

impl PacketSync {
    pub(crate) fn push(&mut self, data: &[u8]) {
        // Compact before growing, so the buffer holds at most about one
        // packet of leftovers plus the new chunk.
        self.buf.drain(..self.pos);
        self.pos = 0;
        self.buf.extend_from_slice(data);
    }

    /// Next whole packet, or `None` until more bytes are pushed. With
    /// `at_end`, a candidate packet is accepted without the sync bytes that
    /// would follow it, since none will come.
    pub(crate) fn next_packet(&mut self, at_end: bool) -> Option<Packet> {
        loop {
            let rest = &self.buf[self.pos..];
            if rest.len() < PACKET_LEN {
                return None;
            }
            if rest[0] == SYNC_BYTE {
                // In sync, one more sync byte must follow; regaining sync
                // takes more.
                let needed = if self.in_sync { 2 } else { RESYNC_PACKETS };
                let mut confirmed = true;
                for i in 1..needed {
                    match rest.get(i * PACKET_LEN) {
                        Some(&b) if b != SYNC_BYTE => confirmed = false,
                        None if !at_end => return None,
                        _ => {}
                    }
                }
                if confirmed {
                    let mut packet = [0u8; PACKET_LEN];
                    packet.copy_from_slice(&rest[..PACKET_LEN]);
                    self.pos += PACKET_LEN;
                    self.in_sync = true;
                    return Some(packet);
                }
            }
            // Lost: skip to the next candidate sync byte.
            self.in_sync = false;
            let skip = rest[1..]
                .iter()
                .position(|&b| b == SYNC_BYTE)
                .map_or(rest.len(), |i| i + 1);
            self.pos += skip;
            self.skipped += skip as u64;
        }
    }

    pub(crate) fn skipped(&self) -> u64 {
        self.skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(tag: u8) -> Vec<u8> {
        let mut p = vec![tag; PACKET_LEN];
        p[0] = SYNC_BYTE;
        p
    }

    fn drain(sync: &mut PacketSync, at_end: bool) -> Vec<Packet> {
        std::iter::from_fn(|| sync.next_packet(at_end)).collect()
    }

    #[test]
    fn reassembles_packets_split_across_chunks() {
        let stream: Vec<u8> = (1..=5).flat_map(packet).collect();
        let mut sync = PacketSync::default();
        let mut got = Vec::new();
        for chunk in stream.chunks(7) {
            sync.push(chunk);
            got.extend(drain(&mut sync, false));
        }
        got.extend(drain(&mut sync, true));
        let tags: Vec<u8> = got.iter().map(|p| p[1]).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5]);
        assert_eq!(sync.skipped(), 0);
    }

    #[test]
    fn resyncs_after_garbage() {
        let mut stream = packet(1);
        stream.extend(packet(2));
        stream.extend_from_slice(&[0x47, 0x00, 0x47, 0x12, 0x99]); // junk with false syncs
        for tag in 3..=6 {
            stream.extend(packet(tag));
        }
        let mut sync = PacketSync::default();
        sync.push(&stream);
        let mut got = drain(&mut sync, false);
        got.extend(drain(&mut sync, true));
        let tags: Vec<u8> = got.iter().map(|p| p[1]).collect();
        assert_eq!(tags, [1, 2, 3, 4, 5, 6]);
        assert_eq!(sync.skipped(), 5);
    }

    #[test]
    fn a_packet_cut_short_by_garbage_is_dropped() {
        let mut stream = packet(0);
        stream.extend(packet(1));
        stream.extend_from_slice(&packet(2)[..100]); // truncated
        stream.extend_from_slice(&[0x13; 150]);
        for tag in 3..=5 {
            stream.extend(packet(tag));
        }
        let mut sync = PacketSync::default();
        sync.push(&stream);
        let mut got = drain(&mut sync, false);
        got.extend(drain(&mut sync, true));
        let tags: Vec<u8> = got.iter().map(|p| p[1]).collect();
        assert_eq!(tags, [0, 1, 3, 4, 5]);
        assert_eq!(sync.skipped(), 250);
    }

    #[test]
    fn pure_garbage_yields_nothing() {
        let mut sync = PacketSync::default();
        let junk: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        sync.push(&junk);
        assert!(drain(&mut sync, true).is_empty());
    }
}
