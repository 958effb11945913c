//! Cutting an MPEG-TS stream into segments at video keyframes, and segments
//! into pieces.
//!
//! A segment is what an HLS player fetches: it must start with PAT, PMT and a
//! keyframe so it decodes on its own. A piece is what the mesh moves: at most
//! 64 KiB, whole TS packets. Pieces leave as soon as they are full, so a
//! segment's first pieces are in the mesh long before the segment ends.

use bytes::Bytes;
use shoal_mesh::proto::MAX_PIECE_BYTES;

use super::{
    keyframe,
    psi::ProgramInfo,
    sync::PacketSync,
    ts::{self, ContinuityCounters, Packet, NULL_PID, PACKET_LEN},
    Cut,
};

/// Largest piece that holds whole packets.
const PIECE_CAPACITY: usize = MAX_PIECE_BYTES / PACKET_LEN * PACKET_LEN;
/// A segment is cut at the first keyframe after this share of the target, so
/// small timestamp jitter does not merge two GOPs into one segment.
const MIN_SHARE_PERCENT: u64 = 90;
/// Without a keyframe, a segment is cut anyway after this many targets, so
/// segments (and what players and peers buffer for them) stay bounded.
const MAX_TARGETS: u64 = 4;
/// ... or after this many bytes, for streams whose clocks do not advance.
const MAX_SEGMENT_BYTES: usize = 16 * 1024 * 1024;
/// A jump between timestamps larger than this many targets is a
/// discontinuity (splice, encoder restart), not a duration.
const DISCONTINUITY_TARGETS: u64 = 8;
/// At most this many PAT/PMT packets are held back waiting for the next
/// media packet; more means a broken stream, so they are let through.
const MAX_HELD_TABLES: usize = 16;

/// Turns MPEG-TS bytes into [`Cut`]s. Sans-IO: feed bytes with
/// [`push`](Self::push) in chunks of any size, get the cuts that completed;
/// call [`finish`](Self::finish) at the end of the input for the last piece.
///
/// Output packets have their continuity counters renumbered per PID, so the
/// concatenation of all cuts is a valid stream even though PAT/PMT packets
/// are inserted at segment starts and null packets are dropped.
#[derive(Debug)]
pub struct TsSegmenter {
    target_ticks: u64,
    sync: PacketSync,
    program: ProgramInfo,
    counters: ContinuityCounters,
    segment: Option<Segment>,
    next_segment: u64,
    /// PAT/PMT packets not yet placed: if the next media packet starts a
    /// segment, fresh tables are written there instead of these.
    held_tables: Vec<Packet>,
    clocks: Clocks,
    bytes_in: u64,
}

#[derive(Debug)]
struct Segment {
    index: u64,
    /// Clocks when the segment started (at its keyframe, when it has one).
    start: Clocks,
    /// Packets not yet emitted as a piece.
    piece: Vec<u8>,
    first_emitted: bool,
    bytes: usize,
}

/// Latest presentation times seen (90 kHz).
#[derive(Debug, Clone, Copy, Default)]
struct Clocks {
    /// Of the video stream: segments are timed by it.
    video: Option<u64>,
    /// Of any stream: still moves if the video stalls.
    any: Option<u64>,
}

impl TsSegmenter {
    /// `target_segment_ms`: wanted segment duration; segments end at the
    /// first keyframe after 90 % of it.
    pub fn new(target_segment_ms: u32) -> Self {
        Self {
            target_ticks: u64::from(target_segment_ms.max(1)) * 90,
            sync: PacketSync::default(),
            program: ProgramInfo::default(),
            counters: ContinuityCounters::new(),
            segment: None,
            next_segment: 0,
            held_tables: Vec::new(),
            clocks: Clocks::default(),
            bytes_in: 0,
        }
    }

    /// Feeds input bytes (any chunking); returns the cuts completed by them.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Cut> {
        self.bytes_in += bytes.len() as u64;
        self.sync.push(bytes);
        let mut out = Vec::new();
        while let Some(packet) = self.sync.next_packet(false) {
            self.on_packet(packet, &mut out);
        }
        out
    }

    /// Feeds one whole packet, for callers that already split the input
    /// into packets; not to be mixed with [`push`](Self::push).
    pub(crate) fn push_packet(&mut self, packet: Packet, out: &mut Vec<Cut>) {
        self.bytes_in += PACKET_LEN as u64;
        self.on_packet(packet, out);
    }

    /// Ends the input: returns the rest, ending with the last piece of the
    /// current segment (its duration runs to the latest timestamp seen).
    pub fn finish(&mut self) -> Vec<Cut> {
        let mut out = Vec::new();
        while let Some(packet) = self.sync.next_packet(true) {
            self.on_packet(packet, &mut out);
        }
        self.place_held_tables(&mut out);
        if let Some(segment) = self.segment.take() {
            let duration = self.duration(segment.start, self.clocks);
            self.close(segment, duration, &mut out);
        }
        out
    }

    /// Whether the PMT named a video stream we can cut at.
    pub fn has_video(&self) -> bool {
        self.program.video().is_some()
    }

    /// Total bytes pushed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    fn on_packet(&mut self, packet: Packet, out: &mut Vec<Cut>) {
        let pid = ts::pid(&packet);
        if pid == NULL_PID {
            return;
        }
        if self.program.on_packet(&packet) {
            self.held_tables.push(packet);
            if self.held_tables.len() > MAX_HELD_TABLES {
                self.place_held_tables(out);
            }
            return;
        }

        let times = ts::pes_times(&packet);
        let pts = times.pts.or(times.dts);
        let video = self.program.video().filter(|v| v.pid == pid);
        let keyframe = video.is_some_and(|v| {
            ts::unit_start(&packet) && keyframe::starts_keyframe(v.codec, &packet)
        });
        if pts.is_some() {
            self.clocks.any = pts;
            if video.is_some() {
                self.clocks.video = pts;
            }
        }

        let cut = match &self.segment {
            // Nothing is playable before the first keyframe: drop it.
            None if !keyframe => {
                self.held_tables.clear();
                return;
            }
            None => true,
            Some(segment) => self.should_cut(segment, keyframe),
        };
        if cut {
            // Tables written with the new segment replace any held ones.
            self.held_tables.clear();
            if let Some(segment) = self.segment.take() {
                let duration = self.duration(segment.start, self.clocks);
                self.close(segment, duration, out);
            }
            self.open(out);
        } else {
            self.place_held_tables(out);
        }
        self.append(packet, out);
    }

    /// Whether to end `segment` before the current packet (whose PTS, if
    /// any, is already in `self.clocks`).
    fn should_cut(&self, segment: &Segment, keyframe: bool) -> bool {
        let start = segment.start;
        if keyframe {
            return match ts::ticks_between_opt(start.video, self.clocks.video) {
                Some(e) if e <= DISCONTINUITY_TARGETS * self.target_ticks => {
                    e * 100 >= self.target_ticks * MIN_SHARE_PERCENT
                }
                // No usable clock, or it jumped: a keyframe is a fine place to cut.
                _ => true,
            };
        }
        // No keyframe in sight: bound the segment, by either clock (the video
        // may have stalled while audio goes on) or by size.
        let bound = MAX_TARGETS * self.target_ticks;
        let over = |a, b| ts::ticks_between_opt(a, b).is_some_and(|e| e >= bound);
        over(start.video, self.clocks.video)
            || over(start.any, self.clocks.any)
            || segment.bytes >= MAX_SEGMENT_BYTES
    }

    /// Segment duration in ms, by the video clock if there is one; the
    /// target when clocks are missing or jumped.
    fn duration(&self, start: Clocks, end: Clocks) -> u32 {
        let plausible = |t: &u64| *t <= DISCONTINUITY_TARGETS * self.target_ticks;
        let ticks = match (start.video, end.video) {
            (Some(_), Some(_)) => ts::ticks_between_opt(start.video, end.video),
            _ => ts::ticks_between_opt(start.any, end.any),
        };
        let ticks = ticks.filter(plausible).unwrap_or(self.target_ticks);
        u32::try_from(ticks / 90).unwrap_or(u32::MAX)
    }

    fn open(&mut self, out: &mut Vec<Cut>) {
        let mut segment = Segment {
            index: self.next_segment,
            start: self.clocks,
            piece: Vec::with_capacity(PIECE_CAPACITY),
            first_emitted: false,
            bytes: 0,
        };
        self.next_segment += 1;
        // Every segment opens with the latest PAT and PMT so it plays alone.
        let tables: Vec<Packet> = self.program.tables().copied().collect();
        for packet in tables {
            self.write(&mut segment, packet, out);
        }
        self.segment = Some(segment);
    }

    fn append(&mut self, packet: Packet, out: &mut Vec<Cut>) {
        if let Some(mut segment) = self.segment.take() {
            self.write(&mut segment, packet, out);
            self.segment = Some(segment);
        }
    }

    fn place_held_tables(&mut self, out: &mut Vec<Cut>) {
        for packet in std::mem::take(&mut self.held_tables) {
            self.append(packet, out);
        }
    }

    /// Adds a packet to the segment, first emitting the current piece if the
    /// packet does not fit. Emitting lazily means a segment's last piece is
    /// never empty, so it can carry `last` and the duration.
    fn write(&mut self, segment: &mut Segment, mut packet: Packet, out: &mut Vec<Cut>) {
        if segment.piece.len() + PACKET_LEN > PIECE_CAPACITY {
            let data = std::mem::replace(&mut segment.piece, Vec::with_capacity(PIECE_CAPACITY));
            out.push(Cut {
                data: Bytes::from(data),
                segment: segment.index,
                first: !segment.first_emitted,
                last: false,
                duration_ms: 0,
            });
            segment.first_emitted = true;
        }
        self.counters.stamp(&mut packet);
        segment.piece.extend_from_slice(&packet);
        segment.bytes += PACKET_LEN;
    }

    fn close(&mut self, segment: Segment, duration_ms: u32, out: &mut Vec<Cut>) {
        out.push(Cut {
            data: Bytes::from(segment.piece),
            segment: segment.index,
            first: !segment.first_emitted,
            last: true,
            duration_ms,
        });
    }
}
