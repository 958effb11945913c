//! Live pacing of a recorded TS stream: a packet may leave once the stream's
//! own clock says it is due, as it would leave a live encoder's muxer.

use std::time::Duration;

use super::ts::{self, Packet, PCR_WRAP};

/// A step of the stream clock larger than this is a discontinuity (a splice,
/// a wrapped or reset clock); it counts as no time at all.
const MAX_STEP: u64 = 27_000_000 * 5;
/// Packets held waiting for a clock value, at most (a stream without clocks
/// is then passed on unpaced rather than buffered without end).
const MAX_HELD: usize = 4096;

/// Holds packets back until the stream's clock says they are due, as they
/// would leave a live encoder's muxer. The clock is the PCR (the clock the
/// muxer sent the stream by), or DTS/PTS for streams without PCR, counted
/// from its first value. Packets between two clock values are released with
/// the later one, so media is never early. Monotonic: discontinuities and
/// backward steps never move it back.
#[derive(Debug, Default)]
pub(crate) struct Pacer {
    /// PID and kind of the clock we follow.
    source: Option<(u16, ClockKind)>,
    /// Last clock value, 27 MHz.
    last: Option<u64>,
    elapsed: u64,
    held: Vec<Packet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClockKind {
    Pcr,
    Pes,
}

impl Pacer {
    /// Takes a packet; when it carries the clock, returns it with the
    /// packets held before it, and when they are due.
    pub(crate) fn push(&mut self, p: Packet) -> Option<(Duration, Vec<Packet>)> {
        let value = self.clock(&p);
        self.held.push(p);
        if let Some(value) = value {
            if let Some(last) = self.last {
                let step = value.wrapping_sub(last) % PCR_WRAP;
                if step <= MAX_STEP {
                    self.elapsed += step;
                }
            }
            self.last = Some(value);
        } else if self.held.len() < MAX_HELD {
            return None;
        }
        Some(self.flush())
    }

    /// Releases the held packets (at the end of the input), due now.
    pub(crate) fn flush(&mut self) -> (Duration, Vec<Packet>) {
        let due = Duration::from_nanos(self.elapsed.saturating_mul(1000) / 27);
        (due, std::mem::take(&mut self.held))
    }

    /// The packet's value of the clock we follow, in 27 MHz ticks. A PCR
    /// wins over PES timestamps as soon as one appears.
    fn clock(&mut self, p: &Packet) -> Option<u64> {
        let pid = ts::pid(p);
        if let Some(pcr) = ts::pcr(p) {
            match self.source {
                Some((source, ClockKind::Pcr)) if source != pid => return None,
                Some((_, ClockKind::Pcr)) => {}
                _ => {
                    // Switching clocks: restart the step from here.
                    self.source = Some((pid, ClockKind::Pcr));
                    self.last = None;
                }
            }
            return Some(pcr);
        }
        let times = ts::pes_times(p);
        // DTS rises in stream order even with B-frames; PTS may not.
        let ts = times.dts.or(times.pts)?;
        match self.source {
            None => self.source = Some((pid, ClockKind::Pes)),
            Some((source, ClockKind::Pes)) if source == pid => {}
            _ => return None,
        }
        Some(ts * 300)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::clip::{ClipLoop, CLIP};

    #[test]
    fn looped_clip_is_due_at_its_pcr_time() {
        let mut clip = ClipLoop::new(CLIP).expect("bundled clip parses");
        let mut pacer = Pacer::default();
        let mut first_pcr = None;
        let mut last_due = Duration::ZERO;
        let mut released = 0;
        // Three passes: the seams must not make the clock jump.
        let total = 3 * CLIP.len() / 188;
        for _ in 0..total {
            let Some((due, packets)) = pacer.push(clip.next_packet()) else {
                continue;
            };
            assert!(due >= last_due);
            last_due = due;
            released += packets.len();
            // The batch ends with the packet that carries the clock.
            let pcr = ts::pcr(packets.last().expect("a batch")).expect("PCR");
            let first = *first_pcr.get_or_insert(pcr);
            assert_eq!(due.as_nanos(), u128::from(pcr - first) * 1000 / 27);
        }
        let secs = last_due.as_secs_f64();
        assert!((23.5..24.0).contains(&secs), "{secs}");
        assert_eq!(released + pacer.flush().1.len(), total);
    }

    #[test]
    fn discontinuity_does_not_jump() {
        let mut pacer = Pacer::default();
        let mut p = [0xFFu8; 188];
        p[..6].copy_from_slice(&[0x47, 0x01, 0x00, 0x20, 183, 0x10]);
        let mut at = |base: u64| {
            p[6..10].copy_from_slice(&((base >> 1) as u32).to_be_bytes());
            p[10] = ((base & 1) as u8) << 7 | 0x7E;
            p[11] = 0;
            pacer.push(p).map(|(due, _)| due)
        };
        assert_eq!(at(90_000), Some(Duration::ZERO));
        assert_eq!(at(180_000), Some(Duration::from_secs(1)));
        assert_eq!(at(90_000_000), Some(Duration::from_secs(1))); // jump: ignored
        assert_eq!(at(90_090_000), Some(Duration::from_secs(2)));
        assert_eq!(at(45_000), Some(Duration::from_secs(2))); // back: ignored
    }
}
