//! Which topology slot holds what in a run of S streams and R reflectors:
//! slots 0..S-1 are the streams' seeders (stream `s`'s in slot `s`), then
//! the R reflectors in S..S+R-1, then the N viewers, each of one stream.
//! Infrastructure first, so that the viewers' slots follow all of it. With
//! one stream and no reflector this is the lab's original layout, the
//! seeder in slot 0 and viewers in 1..=N, so single-stream runs and their
//! `--rtt-matrix` files are unchanged.
//!
//! Viewers are shared out among the streams by [`StreamMix::stream_of_viewers`]
//! (interleaved in proportion), and join in slot order.

use std::ops::Range;

use super::{mix::StreamMix, scenario::Scenario};

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Viewers per stream.
    viewers: Vec<usize>,
    reflectors: usize,
    /// The stream of each viewer, by viewer ordinal (slot − S).
    stream_of_viewer: Vec<usize>,
}

impl Layout {
    pub(crate) fn of(sc: &Scenario) -> Layout {
        Layout::of_mix(&sc.mix(), sc.reflectors)
    }

    pub(crate) fn of_mix(mix: &StreamMix, reflectors: usize) -> Layout {
        Layout {
            viewers: mix.viewers().to_vec(),
            reflectors,
            stream_of_viewer: mix.stream_of_viewers(),
        }
    }

    pub(crate) fn streams(&self) -> usize {
        self.viewers.len()
    }

    /// Viewers of `stream`.
    pub(crate) fn viewers_of(&self, stream: usize) -> usize {
        self.viewers[stream]
    }

    /// Seeders, reflectors and viewers.
    pub(crate) fn slots(&self) -> usize {
        self.infra() + self.stream_of_viewer.len()
    }

    /// Seeders and reflectors: the slots before the viewers'.
    pub(crate) fn infra(&self) -> usize {
        self.streams() + self.reflectors
    }

    pub(crate) fn seeder_slot(&self, stream: usize) -> usize {
        stream
    }

    pub(crate) fn reflector_slots(&self) -> Range<usize> {
        self.streams()..self.infra()
    }

    pub(crate) fn viewer_slots(&self) -> Range<usize> {
        self.infra()..self.slots()
    }

    /// A viewer slot's place in the join order, from 0.
    pub(crate) fn viewer_ordinal(&self, slot: usize) -> usize {
        slot - self.infra()
    }

    /// The stream a seeder's or a viewer's slot carries (a reflector's
    /// streams are the coordinator's to say).
    pub(crate) fn stream_of(&self, slot: usize) -> usize {
        debug_assert!(!self.reflector_slots().contains(&slot), "slot {slot}");
        match slot.checked_sub(self.infra()) {
            None => slot,
            Some(v) => self.stream_of_viewer[v],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stream_keeps_the_seeder_in_slot_0() {
        let l = Layout::of_mix(&StreamMix::single(5), 0);
        assert_eq!(
            (l.slots(), l.seeder_slot(0), l.viewer_slots()),
            (6, 0, 1..6)
        );
        assert!((0..6).all(|slot| l.stream_of(slot) == 0));
        assert_eq!(l.viewer_ordinal(1), 0);
    }

    #[test]
    fn seeders_come_first_then_each_streams_viewers() {
        let l = Layout::of_mix(&"4,2,1".parse().unwrap(), 0);
        assert_eq!((l.slots(), l.viewer_slots()), (10, 3..10));
        assert_eq!(
            (0..3).map(|s| l.stream_of(s)).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        for stream in 0..3 {
            let n = l
                .viewer_slots()
                .filter(|&s| l.stream_of(s) == stream)
                .count();
            assert_eq!(n, l.viewers_of(stream));
        }
    }

    #[test]
    fn reflectors_sit_between_the_seeders_and_the_viewers() {
        let mix: StreamMix = "4,2,1".parse().unwrap();
        let l = Layout::of_mix(&mix, 2);
        assert_eq!(
            (l.slots(), l.infra(), l.reflector_slots(), l.viewer_slots()),
            (12, 5, 3..5, 5..12)
        );
        assert_eq!(l.viewer_ordinal(5), 0);
        // The viewers watch what they watch without reflectors, in order.
        let plain = Layout::of_mix(&mix, 0);
        for (a, b) in l.viewer_slots().zip(plain.viewer_slots()) {
            assert_eq!(l.stream_of(a), plain.stream_of(b));
        }
    }
}
