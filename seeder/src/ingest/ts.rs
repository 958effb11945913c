//! MPEG transport stream packets (ISO/IEC 13818-1 §2.4.3), read and patched in
//! place: just enough to find programs, keyframes and clocks, and to rewrite
//! timestamps and continuity counters without re-muxing.
//!
//! Every accessor is total: a packet is always 188 bytes, and a lying length
//! field gives `None`/`false`, never a panic.

/// Size of a transport stream packet.
pub(crate) const PACKET_LEN: usize = 188;
/// First byte of every packet.
pub(crate) const SYNC_BYTE: u8 = 0x47;
/// PID of the program association table.
pub(crate) const PAT_PID: u16 = 0;
/// PID of stuffing packets, which carry nothing worth sending.
pub(crate) const NULL_PID: u16 = 0x1FFF;
/// PTS, DTS and the PCR base are 33-bit counters of a 90 kHz clock.
pub(crate) const TIMESTAMP_WRAP: u64 = 1 << 33;
/// The full PCR (base × 300 + extension) counts a 27 MHz clock.
pub(crate) const PCR_WRAP: u64 = TIMESTAMP_WRAP * 300;

pub(crate) type Packet = [u8; PACKET_LEN];

pub(crate) fn pid(p: &Packet) -> u16 {
    u16::from(p[1] & 0x1F) << 8 | u16::from(p[2])
}

/// payload_unit_start_indicator: a PES packet or PSI section starts here.
pub(crate) fn unit_start(p: &Packet) -> bool {
    p[1] & 0x40 != 0
}

fn has_adaptation_field(p: &Packet) -> bool {
    p[3] & 0x20 != 0
}

pub(crate) fn has_payload(p: &Packet) -> bool {
    p[3] & 0x10 != 0
}

#[cfg(test)]
pub(crate) fn continuity_counter(p: &Packet) -> u8 {
    p[3] & 0x0F
}

fn set_continuity_counter(p: &mut Packet, cc: u8) {
    p[3] = (p[3] & 0xF0) | (cc & 0x0F);
}

/// Byte range of the adaptation field's body (after its length byte), if the
/// packet has one that fits.
fn adaptation_field(p: &Packet) -> Option<std::ops::Range<usize>> {
    if !has_adaptation_field(p) {
        return None;
    }
    let len = usize::from(p[4]);
    (len >= 1 && 5 + len <= PACKET_LEN).then_some(5..5 + len)
}

/// Random access indicator: the encoder/muxer marks the start of a keyframe.
pub(crate) fn random_access(p: &Packet) -> bool {
    adaptation_field(p).is_some_and(|af| p[af.start] & 0x40 != 0)
}

/// Offset of the PCR inside the packet, if present.
fn pcr_offset(p: &Packet) -> Option<usize> {
    let af = adaptation_field(p)?;
    (p[af.start] & 0x10 != 0 && af.len() >= 7).then_some(af.start + 1)
}

/// Offset of the OPCR inside the packet, if present.
fn opcr_offset(p: &Packet) -> Option<usize> {
    let af = adaptation_field(p)?;
    let start = af.start + 1 + if p[af.start] & 0x10 != 0 { 6 } else { 0 };
    (p[af.start] & 0x08 != 0 && start + 6 <= af.end).then_some(start)
}

/// Program clock reference in 27 MHz ticks.
pub(crate) fn pcr(p: &Packet) -> Option<u64> {
    pcr_offset(p).map(|at| read_clock_reference(&p[at..at + 6]))
}

fn read_clock_reference(b: &[u8]) -> u64 {
    let base = u64::from(b[0]) << 25
        | u64::from(b[1]) << 17
        | u64::from(b[2]) << 9
        | u64::from(b[3]) << 1
        | u64::from(b[4]) >> 7;
    let ext = u64::from(b[4] & 0x01) << 8 | u64::from(b[5]);
    base * 300 + ext
}

/// Adds `ticks` (90 kHz) to the base of a clock reference; the 27 MHz
/// extension is unchanged because the offset is a whole number of base ticks.
fn shift_clock_reference(b: &mut [u8], ticks: u64) {
    let base = read_clock_reference(b) / 300;
    let base = (base + ticks) % TIMESTAMP_WRAP;
    b[0] = (base >> 25) as u8;
    b[1] = (base >> 17) as u8;
    b[2] = (base >> 9) as u8;
    b[3] = (base >> 1) as u8;
    // Keep the 6 reserved bits and the extension's top bit.
    b[4] = ((base & 1) as u8) << 7 | (b[4] & 0x7F);
}

/// The packet's payload bytes, if it has a payload and a sane adaptation field.
pub(crate) fn payload(p: &Packet) -> Option<&[u8]> {
    if !has_payload(p) {
        return None;
    }
    let start = if has_adaptation_field(p) {
        5 + usize::from(p[4])
    } else {
        4
    };
    (start < PACKET_LEN).then(|| &p[start..])
}

fn payload_offset(p: &Packet) -> Option<usize> {
    payload(p).map(|b| PACKET_LEN - b.len())
}

/// Timestamps from a PES header, in 90 kHz ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PesTimes {
    pub(crate) pts: Option<u64>,
    pub(crate) dts: Option<u64>,
}

/// Where a PES header's PTS and DTS fields sit relative to the payload start.
fn pes_timestamp_offsets(payload: &[u8]) -> (Option<usize>, Option<usize>) {
    // packet_start_code_prefix, stream_id, PES_packet_length, then the
    // optional header — absent for a few stream ids (§2.4.3.7, Table 2-21).
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return (None, None);
    }
    if matches!(
        payload[3],
        0xBC | 0xBE | 0xBF | 0xF0 | 0xF1 | 0xF2 | 0xF8 | 0xFF
    ) {
        return (None, None);
    }
    let flags = payload[7] >> 6;
    let fits = |at: usize| (at + 5 <= payload.len()).then_some(at);
    match flags {
        0b10 => (fits(9), None),
        0b11 => (fits(9), fits(14)),
        _ => (None, None),
    }
}

fn read_timestamp(b: &[u8]) -> u64 {
    u64::from(b[0] >> 1 & 0x07) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

fn write_timestamp(b: &mut [u8], ts: u64) {
    // Keep the 4-bit prefix ('0010'/'0011'/'0001') and the marker bits.
    b[0] = (b[0] & 0xF1) | ((ts >> 29) as u8 & 0x0E);
    b[1] = (ts >> 22) as u8;
    b[2] = ((ts >> 14) as u8 & 0xFE) | (b[2] & 0x01);
    b[3] = (ts >> 7) as u8;
    b[4] = ((ts << 1) as u8 & 0xFE) | (b[4] & 0x01);
}

/// PTS/DTS of the PES packet starting in `p`, if it starts one.
pub(crate) fn pes_times(p: &Packet) -> PesTimes {
    if !unit_start(p) {
        return PesTimes::default();
    }
    let Some(payload) = payload(p) else {
        return PesTimes::default();
    };
    let (pts, dts) = pes_timestamp_offsets(payload);
    PesTimes {
        pts: pts.map(|at| read_timestamp(&payload[at..at + 5])),
        dts: dts.map(|at| read_timestamp(&payload[at..at + 5])),
    }
}

/// The elementary stream bytes after the PES header, if `p` starts a PES packet.
pub(crate) fn pes_data(p: &Packet) -> Option<&[u8]> {
    if !unit_start(p) {
        return None;
    }
    let payload = payload(p)?;
    if payload.len() < 9 || payload[..3] != [0, 0, 1] {
        return None;
    }
    payload.get(9 + usize::from(payload[8])..)
}

/// Moves every clock in the packet `ticks` (90 kHz) later, wrapping at 33 bits:
/// PCR and OPCR in the adaptation field, PTS and DTS in a PES header.
pub(crate) fn shift_clocks(p: &mut Packet, ticks: u64) {
    for at in [pcr_offset(p), opcr_offset(p)].into_iter().flatten() {
        shift_clock_reference(&mut p[at..at + 6], ticks);
    }
    if !unit_start(p) {
        return;
    }
    let Some(start) = payload_offset(p) else {
        return;
    };
    let (pts, dts) = pes_timestamp_offsets(&p[start..]);
    for at in [pts, dts].into_iter().flatten() {
        let field = &mut p[start + at..start + at + 5];
        let ts = (read_timestamp(field) + ticks) % TIMESTAMP_WRAP;
        write_timestamp(field, ts);
    }
}

/// `later − earlier` on a wrapping 33-bit clock, or `None` if `later` is
/// before `earlier` (more than half the range ahead counts as behind).
pub(crate) fn ticks_between(earlier: u64, later: u64) -> Option<u64> {
    let d = later.wrapping_sub(earlier) % TIMESTAMP_WRAP;
    (d < TIMESTAMP_WRAP / 2).then_some(d)
}

/// [`ticks_between`] for clocks that may be unknown.
pub(crate) fn ticks_between_opt(earlier: Option<u64>, later: Option<u64>) -> Option<u64> {
    ticks_between(earlier?, later?)
}

/// Renumbers continuity counters so that each PID's packets count up without
/// gaps, whatever was dropped, inserted or repeated upstream (§2.4.3.3).
#[derive(Debug)]
pub(crate) struct ContinuityCounters {
    /// Last counter written per PID, or `None` before the first packet.
    last: Vec<Option<u8>>,
}

impl ContinuityCounters {
    pub(crate) fn new() -> Self {
        Self {
            last: vec![None; 0x2000],
        }
    }

    pub(crate) fn stamp(&mut self, p: &mut Packet) {
        let slot = &mut self.last[usize::from(pid(p))];
        // Only packets with a payload advance the counter.
        let cc = match (*slot, has_payload(p)) {
            (Some(last), true) => (last + 1) & 0x0F,
            (Some(last), false) => last,
            (None, _) => 0,
        };
        *slot = Some(cc);
        set_continuity_counter(p, cc);
    }
}

/// CRC-32/MPEG-2, which ends every PSI section (Annex A).
pub(crate) fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                crc << 1 ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pes_packet(pts: u64, dts: u64, pcr_base: u64) -> Packet {
        let mut p = [0xFFu8; PACKET_LEN];
        p[..4].copy_from_slice(&[SYNC_BYTE, 0x41, 0x00, 0x35]); // PID 256, AF + payload, CC 5
        p[4] = 7; // adaptation field: flags + PCR
        p[5] = 0x50; // random access + PCR
        p[6..12].copy_from_slice(&[
            (pcr_base >> 25) as u8,
            (pcr_base >> 17) as u8,
            (pcr_base >> 9) as u8,
            (pcr_base >> 1) as u8,
            ((pcr_base & 1) as u8) << 7 | 0x7E | 1, // reserved bits, extension bit 8 = 1
            0x2A,                                   // extension low bits
        ]);
        let mut pes = vec![0, 0, 1, 0xE0, 0, 0, 0x80, 0xC0, 10];
        let mut field = |prefix: u8, ts: u64| {
            let mut b = [prefix << 4 | 1, 0, 1, 0, 1];
            write_timestamp(&mut b, ts);
            pes.extend_from_slice(&b);
        };
        field(0b0011, pts);
        field(0b0001, dts);
        p[12..12 + pes.len()].copy_from_slice(&pes);
        p
    }

    #[test]
    fn reads_header_fields() {
        let p = pes_packet(1234, 1000, 999);
        assert_eq!(pid(&p), 256);
        assert!(unit_start(&p));
        assert!(random_access(&p));
        assert_eq!(continuity_counter(&p), 5);
        assert_eq!(pcr(&p), Some(999 * 300 + 0x12A));
        let times = pes_times(&p);
        assert_eq!(times.pts, Some(1234));
        assert_eq!(times.dts, Some(1000));
        assert_eq!(pes_data(&p).map(|d| d[0]), Some(0xFF));
    }

    #[test]
    fn shifts_clocks_with_33_bit_wrap_and_keeps_markers() {
        let near_wrap = TIMESTAMP_WRAP - 100;
        let mut p = pes_packet(near_wrap, near_wrap - 50, near_wrap - 90_000);
        let before = p;
        shift_clocks(&mut p, 300);
        assert_eq!(pes_times(&p).pts, Some(200));
        assert_eq!(pes_times(&p).dts, Some(150));
        assert_eq!(pcr(&p), Some((near_wrap - 90_000 + 300) * 300 + 0x12A));
        // Marker bits and prefixes survive the rewrite.
        for at in [12 + 9, 12 + 14] {
            assert_eq!(p[at] & 0xF1, before[at] & 0xF1);
            assert_eq!(p[at + 2] & 1, 1);
            assert_eq!(p[at + 4] & 1, 1);
        }
        assert_eq!(p[10] & 0x7F, before[10] & 0x7F);
    }

    #[test]
    fn lying_lengths_do_not_panic() {
        let mut p = [0xFFu8; PACKET_LEN];
        p[0] = SYNC_BYTE;
        p[1] = 0x40;
        p[3] = 0x30;
        p[4] = 250; // adaptation field longer than the packet
        assert_eq!(pcr(&p), None);
        assert_eq!(payload(&p), None);
        assert_eq!(pes_times(&p), PesTimes::default());
        shift_clocks(&mut p, 1);
        p[4] = 183; // fills the packet: no room for a payload
        assert_eq!(payload(&p), None);
    }

    #[test]
    fn continuity_counters_count_payload_packets_only() {
        let mut ccs = ContinuityCounters::new();
        let mut p = pes_packet(0, 0, 0);
        let mut seen = Vec::new();
        for _ in 0..17 {
            ccs.stamp(&mut p);
            seen.push(continuity_counter(&p));
        }
        assert_eq!(seen[..3], [0, 1, 2]);
        assert_eq!(seen[16], 0);
        p[3] = (p[3] & 0xCF) | 0x20; // adaptation field only
        ccs.stamp(&mut p);
        assert_eq!(continuity_counter(&p), 0);
    }

    #[test]
    fn crc_matches_a_real_pat() {
        // PAT section from an ffmpeg-made stream; the last 4 bytes are its CRC.
        let section = [
            0x00, 0xB0, 0x0D, 0x00, 0x01, 0xC1, 0x00, 0x00, 0x00, 0x01, 0xF0, 0x00, 0x2A, 0xB1,
            0x04, 0xB2,
        ];
        assert_eq!(crc32_mpeg2(&section[..12]), 0x2AB1_04B2);
        assert_eq!(crc32_mpeg2(&section), 0);
    }

    #[test]
    fn wrapping_distance() {
        assert_eq!(ticks_between(10, 25), Some(15));
        assert_eq!(ticks_between(TIMESTAMP_WRAP - 5, 5), Some(10));
        assert_eq!(ticks_between(25, 10), None);
    }
}
