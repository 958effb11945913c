//! How much of an infrastructure node's mesh upload went to viewers rather
//! than to other infrastructure: a seeder feeds its stream's reflectors,
//! a reflector its siblings and tier-2 reflectors, and only what reaches
//! viewers answers the question "who served the viewers".
//!
//! The engine counts payload sent, not to whom. The node's shaper counts
//! the substream bytes it writes, and with [`UploadSplit::attach`] also
//! those written to viewers' slots; a node's mesh payload is then split in
//! the proportion of those bytes. Frames to viewers and to infrastructure
//! carry about the same overhead per payload byte (piece headers,
//! signatures, haves), so the split is close; where a node sends viewers
//! little payload, its haves and buffer maps still count towards them, so
//! it leans towards crediting the viewers with more than they got.

use std::{
    ops::Range,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use libp2p::PeerId;
use shoal_mesh::net::{Shaping, ShapingCounters};

use super::population::Book;

/// An infrastructure node's upload, with what went to viewers apart.
#[derive(Clone, Debug, Default)]
pub(crate) struct UploadSplit {
    to_viewers: Arc<AtomicU64>,
    counters: Arc<ShapingCounters>,
}

impl UploadSplit {
    /// Makes `shaping` count apart the bytes it writes to a peer whose
    /// slot (in `book`) is in `viewers`.
    pub(crate) fn attach(shaping: &mut Shaping, book: &Book, viewers: Range<usize>) -> UploadSplit {
        let to_viewers = Arc::new(AtomicU64::new(0));
        let (counter, book) = (to_viewers.clone(), book.clone());
        shaping.sent_to = Some(Arc::new(move |peer: &PeerId| {
            let slot = *book.read().ok()?.get(peer)?;
            viewers.contains(&slot).then(|| counter.clone())
        }));
        UploadSplit {
            to_viewers,
            counters: shaping.counters.clone(),
        }
    }

    /// The share of `mesh_payload` (payload the node sent over the mesh)
    /// that went to viewers.
    pub(crate) fn to_viewers(&self, mesh_payload: u64) -> u64 {
        split(
            mesh_payload,
            self.to_viewers.load(Ordering::Relaxed),
            self.counters.sent(),
        )
    }
}

/// `payload` × `to_viewers` / `written`, in whole bytes (0 when nothing
/// was written).
fn split(payload: u64, to_viewers: u64, written: u64) -> u64 {
    if written == 0 {
        return 0;
    }
    let share = to_viewers.min(written) as f64 / written as f64;
    (payload as f64 * share).round() as u64
}

/// Share of the infrastructure payload viewers received (mesh and HTTP)
/// that came from reflectors rather than seeders; `None` when they
/// received none.
pub(crate) fn from_reflectors(seeders_to_viewers: u64, reflectors_to_viewers: u64) -> Option<f64> {
    let all = seeders_to_viewers + reflectors_to_viewers;
    (all > 0).then(|| reflectors_to_viewers as f64 / all as f64)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::RwLock};

    use super::*;

    #[test]
    fn payload_is_split_as_the_bytes_written_were() {
        assert_eq!(split(1_000, 250, 1_000), 250);
        assert_eq!(split(1_000, 0, 1_000), 0);
        assert_eq!(split(1_000, 10, 0), 0);
        // Never more than all of it.
        assert_eq!(split(1_000, 2_000, 1_000), 1_000);
    }

    #[test]
    fn only_bytes_to_viewer_slots_count_as_to_viewers() {
        let (viewer, reflector, stranger) = (PeerId::random(), PeerId::random(), PeerId::random());
        let book: Book = Arc::new(RwLock::new(HashMap::from([(viewer, 7), (reflector, 3)])));
        let mut shaping = Shaping::default();
        let split = UploadSplit::attach(&mut shaping, &book, 5..10);
        let sent_to = shaping.sent_to.as_ref().unwrap();
        assert!(sent_to(&viewer).is_some());
        assert!(sent_to(&reflector).is_none());
        assert!(sent_to(&stranger).is_none());
        sent_to(&viewer).unwrap().fetch_add(300, Ordering::Relaxed);
        shaping.counters.sent.fetch_add(1_200, Ordering::Relaxed);
        assert_eq!(split.to_viewers(800), 200);
    }

    #[test]
    fn the_share_from_reflectors_is_of_what_viewers_got_from_infrastructure() {
        assert_eq!(from_reflectors(50, 950), Some(0.95));
        assert_eq!(from_reflectors(10, 0), Some(0.0));
        assert_eq!(from_reflectors(0, 0), None);
    }
}
