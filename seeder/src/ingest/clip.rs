//! The bundled clip, looped into one endless live channel.
//!
//! Each pass over the clip is shifted by the clip's duration (PTS, DTS and
//! PCR), and continuity counters are renumbered across the seam, so a player
//! sees one stream whose clocks never jump back. The clip is made for this by
//! `assets/make-clip.sh`: audio and video both fill exactly its duration.

use super::{
    psi::ProgramInfo,
    sync::PacketSync,
    ts::{self, ContinuityCounters, Packet, TIMESTAMP_WRAP},
    IngestError,
};

/// 8 s of 640x360 H.264 + AAC in MPEG-TS; see `assets/make-clip.sh`.
pub(crate) static CLIP: &[u8] = include_bytes!("../../assets/clip.ts");

/// An endless stream of packets: the clip, again and again.
#[derive(Debug)]
pub(crate) struct ClipLoop {
    packets: Vec<Packet>,
    /// Clip duration in 90 kHz ticks: the shift added on every pass.
    duration: u64,
    next: usize,
    passes: u64,
    counters: ContinuityCounters,
}

impl ClipLoop {
    pub(crate) fn new(clip: &[u8]) -> Result<Self, IngestError> {
        let mut sync = PacketSync::default();
        sync.push(clip);
        let packets: Vec<Packet> = std::iter::from_fn(|| sync.next_packet(true)).collect();
        let duration =
            video_duration(&packets).ok_or(IngestError::BadClip("no video timestamps found"))?;
        Ok(Self {
            packets,
            duration,
            next: 0,
            passes: 0,
            counters: ContinuityCounters::new(),
        })
    }

    /// Duration of one pass, in 90 kHz ticks.
    #[cfg(test)]
    pub(crate) fn duration_ticks(&self) -> u64 {
        self.duration
    }

    pub(crate) fn next_packet(&mut self) -> Packet {
        let mut packet = self.packets[self.next];
        let shift = self.passes.wrapping_mul(self.duration) % TIMESTAMP_WRAP;
        ts::shift_clocks(&mut packet, shift);
        self.counters.stamp(&mut packet);
        self.next += 1;
        if self.next == self.packets.len() {
            self.next = 0;
            self.passes += 1;
        }
        packet
    }
}

/// Span of the video's presentation times plus one frame: the time from the
/// first frame's start to the last frame's end.
fn video_duration(packets: &[Packet]) -> Option<u64> {
    let mut program = ProgramInfo::default();
    let mut first = None;
    let mut offsets = Vec::new();
    for p in packets {
        program.on_packet(p);
        let Some(video) = program.video() else {
            continue;
        };
        if ts::pid(p) != video.pid {
            continue;
        }
        if let Some(pts) = ts::pes_times(p).pts {
            let first = *first.get_or_insert(pts);
            offsets.push(pts.wrapping_sub(first) % TIMESTAMP_WRAP);
        }
    }
    offsets.sort_unstable();
    let frame = offsets
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&d| d > 0)
        .min()?;
    Some(offsets.last()? - offsets.first()? + frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::ts::PACKET_LEN;

    #[test]
    fn clip_is_eight_seconds_small_and_about_740_kbps() {
        let clip = ClipLoop::new(CLIP).expect("bundled clip parses");
        assert_eq!(clip.duration_ticks(), 8 * 90_000);
        assert_eq!(clip.packets.len() * PACKET_LEN, CLIP.len());
        assert!(CLIP.len() < 1_000_000);
        let kbps = CLIP.len() as u64 * 8 / 8 / 1000;
        assert!((500..=800).contains(&kbps), "{kbps} kbit/s");
    }

    #[test]
    fn second_pass_is_shifted_by_the_duration() {
        let mut clip = ClipLoop::new(CLIP).expect("bundled clip parses");
        let n = clip.packets.len();
        let first: Vec<Packet> = (0..n).map(|_| clip.next_packet()).collect();
        let second: Vec<Packet> = (0..n).map(|_| clip.next_packet()).collect();
        let mut shifted = 0;
        for (a, b) in first.iter().zip(&second) {
            if let (Some(x), Some(y)) = (ts::pes_times(a).pts, ts::pes_times(b).pts) {
                assert_eq!(y, x + 8 * 90_000);
                shifted += 1;
            }
            if let (Some(x), Some(y)) = (ts::pcr(a), ts::pcr(b)) {
                assert_eq!(y, x + 8 * 90_000 * 300);
            }
        }
        assert!(shifted >= 200, "{shifted} PES headers compared");
    }
}
