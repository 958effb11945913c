//! Does this video PES packet start a picture a decoder can start from?

use super::{
    psi::VideoCodec,
    ts::{self, Packet},
};

/// Judged from the first TS packet of a video PES packet: the muxer's random
/// access indicator if set (ffmpeg sets it on keyframes), otherwise the NAL
/// units / start codes in that packet. Encoders put parameter sets (SPS,
/// sequence header) right before a keyframe, so they are in its first packet
/// even when the picture's own start code comes later (x264 follows the SPS
/// with a long SEI on the first frame).
pub(crate) fn starts_keyframe(codec: VideoCodec, p: &Packet) -> bool {
    if ts::random_access(p) {
        return true;
    }
    let Some(es) = ts::pes_data(p) else {
        return false;
    };
    for code in start_codes(es) {
        let verdict = match codec {
            VideoCodec::H264 => h264(code),
            VideoCodec::Hevc => hevc(code),
            VideoCodec::Mpeg2 => mpeg2(code),
        };
        if let Some(key) = verdict {
            return key;
        }
    }
    false
}

/// Bytes after each 00 00 01 start code.
fn start_codes(es: &[u8]) -> impl Iterator<Item = &[u8]> {
    es.windows(3)
        .enumerate()
        .filter(|(_, w)| *w == [0, 0, 1])
        .map(move |(i, _)| &es[i + 3..])
}

/// `Some(true)`: keyframe; `Some(false)`: a picture that is not one; `None`:
/// this unit does not tell (AUD, SEI, …), keep looking.
fn h264(unit: &[u8]) -> Option<bool> {
    match unit.first()? & 0x1F {
        5 | 7 => Some(true), // IDR slice, SPS
        1 => Some(false),    // non-IDR slice
        _ => None,
    }
}

fn hevc(unit: &[u8]) -> Option<bool> {
    match (unit.first()? >> 1) & 0x3F {
        16..=21 | 32 | 33 => Some(true), // BLA/IDR/CRA, VPS, SPS
        0..=9 => Some(false),            // other slices
        _ => None,
    }
}

fn mpeg2(unit: &[u8]) -> Option<bool> {
    match *unit.first()? {
        0xB3 | 0xB8 => Some(true), // sequence header, GOP header
        // Picture header: picture_coding_type 1 is an I-picture.
        0x00 => Some(unit.get(2)? >> 3 & 0x07 == 1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pes_packet(es: &[u8]) -> Packet {
        let mut p = [0xFFu8; 188];
        p[..4].copy_from_slice(&[0x47, 0x41, 0x00, 0x10]);
        let header = [0, 0, 1, 0xE0, 0, 0, 0x80, 0x00, 0];
        p[4..13].copy_from_slice(&header);
        p[13..13 + es.len()].copy_from_slice(es);
        p
    }

    #[test]
    fn h264_idr_and_sps_are_keys_plain_slices_are_not() {
        let aud_sps = [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 0, 1, 0x67, 0x42];
        assert!(starts_keyframe(VideoCodec::H264, &pes_packet(&aud_sps)));
        let idr = [0, 0, 1, 0x65, 0x88];
        assert!(starts_keyframe(VideoCodec::H264, &pes_packet(&idr)));
        let aud_slice = [0, 0, 0, 1, 0x09, 0xF0, 0, 0, 1, 0x41, 0x9A];
        assert!(!starts_keyframe(VideoCodec::H264, &pes_packet(&aud_slice)));
    }

    #[test]
    fn hevc_and_mpeg2() {
        let hevc_idr = [0, 0, 1, 19 << 1, 1];
        assert!(starts_keyframe(VideoCodec::Hevc, &pes_packet(&hevc_idr)));
        let hevc_trail = [0, 0, 1, 1 << 1, 1];
        assert!(!starts_keyframe(VideoCodec::Hevc, &pes_packet(&hevc_trail)));
        let i_picture = [0, 0, 1, 0x00, 0x00, 0x08];
        assert!(starts_keyframe(VideoCodec::Mpeg2, &pes_packet(&i_picture)));
        let p_picture = [0, 0, 1, 0x00, 0x00, 0x10];
        assert!(!starts_keyframe(VideoCodec::Mpeg2, &pes_packet(&p_picture)));
    }

    #[test]
    fn random_access_indicator_wins() {
        let mut p = [0xFFu8; 188];
        p[..6].copy_from_slice(&[0x47, 0x41, 0x00, 0x30, 1, 0x40]);
        assert!(starts_keyframe(VideoCodec::H264, &p));
    }
}
