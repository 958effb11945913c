//! The run's shared state that partitions read: topology slots, delays,
//! upload caps and who is running.

use super::{NodeId, SimConfig};
use crate::proto::Locality;

/// What partitions read of the rest of the run; only the serial phase
/// changes it.
pub(super) struct World<'a> {
    pub(super) cfg: &'a SimConfig,
    /// The topology slot of each node id (a newcomer takes the leaver's).
    pub(super) slot: Vec<u32>,
    /// Whether each node id is in the run (joined and not left).
    pub(super) running: Vec<bool>,
}

impl World<'_> {
    /// Node ids handed out so far.
    pub(super) fn ids(&self) -> NodeId {
        self.slot.len() as NodeId
    }

    pub(super) fn is_running(&self, n: NodeId) -> bool {
        self.running.get(n as usize).copied().unwrap_or(false)
    }

    /// Upload cap of a node, bits/s.
    pub(super) fn upload_bps(&self, n: NodeId) -> Option<u64> {
        let slot = self.slot[n as usize];
        match &self.cfg.network {
            Some(net) => net.upload_bps.get(slot as usize).copied().flatten(),
            None if slot == 0 => None,
            None => self.cfg.viewer_upload_bps,
        }
    }

    pub(super) fn loc(&self, n: NodeId) -> Locality {
        let slot = self.slot[n as usize] as usize;
        self.cfg
            .network
            .as_ref()
            .and_then(|net| net.loc.get(slot).copied())
            .unwrap_or_default()
    }

    /// One-way delay of a pair, stable for the run; at least 1 ms, the
    /// lookahead that lets partitions run a ms side by side.
    pub(super) fn delay(&self, a: NodeId, b: NodeId) -> u64 {
        self.slot_delay(self.slot[a as usize], self.slot[b as usize])
            .max(1)
    }

    fn slot_delay(&self, a: u32, b: u32) -> u64 {
        if let Some(net) = &self.cfg.network {
            return (net.one_way_ms)(a, b);
        }
        let (lo, hi) = self.cfg.one_way_ms;
        let (x, y) = (a.min(b) as u64, a.max(b) as u64);
        let mut h = self.cfg.seed
            ^ x.wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ y.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h ^= h >> 29;
        h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        h ^= h >> 32;
        lo + h % (hi.saturating_sub(lo) + 1)
    }
}
