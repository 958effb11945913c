//! Program-specific information: following PAT → PMT to the video stream, and
//! keeping the latest PAT and PMT packets so every segment can start with them.

use super::ts::{self, Packet, PAT_PID};

/// Video codecs we know how to find keyframes in (PMT stream_type, Table 2-34).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VideoCodec {
    /// stream_type 0x01 (MPEG-1) and 0x02 (MPEG-2): same start-code syntax.
    Mpeg2,
    /// stream_type 0x1B.
    H264,
    /// stream_type 0x24.
    Hevc,
}

impl VideoCodec {
    fn from_stream_type(stream_type: u8) -> Option<Self> {
        match stream_type {
            0x01 | 0x02 => Some(Self::Mpeg2),
            0x1B => Some(Self::H264),
            0x24 => Some(Self::Hevc),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct VideoStream {
    pub(crate) pid: u16,
    pub(crate) codec: VideoCodec,
}

/// Tracks the PAT and the first program's PMT.
#[derive(Debug, Default)]
pub(crate) struct ProgramInfo {
    pmt_pid: Option<u16>,
    video: Option<VideoStream>,
    pat: Section,
    pmt: Section,
}

impl ProgramInfo {
    /// Feeds one packet; returns true if it carries the PAT or the PMT (in
    /// which case the caller decides where, and whether, it goes out).
    pub(crate) fn on_packet(&mut self, p: &Packet) -> bool {
        let pid = ts::pid(p);
        if pid == PAT_PID {
            if let Some(section) = self.pat.push(p) {
                self.on_pat(&section);
            }
            true
        } else if Some(pid) == self.pmt_pid {
            if let Some(section) = self.pmt.push(p) {
                self.on_pmt(&section);
            }
            true
        } else {
            false
        }
    }

    pub(crate) fn video(&self) -> Option<VideoStream> {
        self.video
    }

    /// The latest complete PAT and PMT, as the packets that carried them.
    pub(crate) fn tables(&self) -> impl Iterator<Item = &Packet> {
        self.pat.packets.iter().chain(&self.pmt.packets)
    }

    fn on_pat(&mut self, s: &[u8]) {
        if s[0] != 0x00 {
            return;
        }
        // Program loop: 4 bytes per program, between the 8-byte header and the CRC.
        let pmt_pid = s[8..s.len() - 4]
            .chunks_exact(4)
            .find(|e| u16::from_be_bytes([e[0], e[1]]) != 0) // 0 is the network PID
            .map(|e| u16::from_be_bytes([e[2], e[3]]) & 0x1FFF);
        if pmt_pid != self.pmt_pid {
            self.pmt_pid = pmt_pid;
            self.pmt = Section::default();
            self.video = None;
        }
    }

    fn on_pmt(&mut self, s: &[u8]) {
        if s[0] != 0x02 || s.len() < 16 {
            return;
        }
        let program_info_len = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0FFF);
        let mut at = 12 + program_info_len;
        let end = s.len() - 4;
        self.video = None;
        while at + 5 <= end {
            let stream_type = s[at];
            let pid = u16::from_be_bytes([s[at + 1], s[at + 2]]) & 0x1FFF;
            let es_info_len = usize::from(u16::from_be_bytes([s[at + 3], s[at + 4]]) & 0x0FFF);
            if let Some(codec) = VideoCodec::from_stream_type(stream_type) {
                self.video = Some(VideoStream { pid, codec });
                break;
            }
            at += 5 + es_info_len;
        }
    }
}

/// Reassembles one PSI table section (§2.4.4) from the packets of its PID.
#[derive(Debug, Default)]
struct Section {
    /// Packets of the last complete, CRC-valid section.
    packets: Vec<Packet>,
    /// The section being collected, and its packets.
    data: Vec<u8>,
    collecting: Vec<Packet>,
}

/// A section is at most 1024 bytes (§2.4.4.4), so at most 6 packets.
const MAX_SECTION_LEN: usize = 1024;
const MAX_SECTION_PACKETS: usize = 6;

impl Section {
    /// Adds a packet; returns the section bytes (table_id … CRC) when one
    /// completes with a valid CRC.
    fn push(&mut self, p: &Packet) -> Option<Vec<u8>> {
        let payload = ts::payload(p)?;
        if ts::unit_start(p) {
            // pointer_field: bytes that finish a previous section come first.
            let start = 1 + usize::from(*payload.first()?);
            self.data.clear();
            self.data.extend_from_slice(payload.get(start..)?);
            self.collecting.clear();
        } else if !self.collecting.is_empty() {
            self.data.extend_from_slice(payload);
        } else {
            return None;
        }
        self.collecting.push(*p);
        if self.data.len() < 3 {
            return None;
        }
        let len = 3 + usize::from(u16::from_be_bytes([self.data[1], self.data[2]]) & 0x0FFF);
        // 12 bytes: the shortest section with a header and a CRC.
        if !(12..=MAX_SECTION_LEN + 3).contains(&len) || self.collecting.len() > MAX_SECTION_PACKETS
        {
            self.collecting.clear();
            return None;
        }
        if self.data.len() < len {
            return None;
        }
        let section = self.data[..len].to_vec();
        let packets = std::mem::take(&mut self.collecting);
        // A garbage table would send us after a bogus PID; trust only valid ones.
        if ts::crc32_mpeg2(&section) != 0 {
            return None;
        }
        self.packets = packets;
        Some(section)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::clip::CLIP;
    use crate::ingest::sync::PacketSync;

    #[test]
    fn finds_the_clips_video_stream_and_tables() {
        let mut sync = PacketSync::default();
        sync.push(&CLIP[..188 * 10]);
        let mut info = ProgramInfo::default();
        while let Some(p) = sync.next_packet(true) {
            info.on_packet(&p);
        }
        assert_eq!(
            info.video(),
            Some(VideoStream {
                pid: 256,
                codec: VideoCodec::H264
            })
        );
        let pids: Vec<u16> = info.tables().map(ts::pid).collect();
        assert_eq!(pids, [0, 4096]);
    }

    #[test]
    fn rejects_a_corrupted_pmt() {
        let mut sync = PacketSync::default();
        sync.push(&CLIP[..188 * 10]);
        let mut info = ProgramInfo::default();
        while let Some(mut p) = sync.next_packet(true) {
            if ts::pid(&p) == 4096 {
                p[20] ^= 0x01; // inside the section: the CRC no longer matches
            }
            info.on_packet(&p);
        }
        assert_eq!(info.video(), None);
    }
}
