//! A stream's swarm as the tracker keeps it: infrastructure and viewers in
//! two tables, each a `Vec` (for sampling windows) indexed by peer id, and
//! one entry per peer as it last announced, with its expiry.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rand::{rngs::StdRng, Rng};
use shoal_mesh::hints::{Announce, Role, StreamInfo};
use shoal_mesh::{
    allocation::ViewerReport,
    proto::{Coord, Locality},
    reach::Scope,
};

use super::{ranking::usable_coord, registry::PeerRecord};

#[derive(Debug, Default)]
pub(super) struct Swarm {
    /// Infrastructure is kept apart so it is always found, however large the swarm.
    pub(super) infra: Table,
    pub(super) viewers: Table,
}

impl Swarm {
    pub(super) fn len(&self) -> usize {
        self.infra.entries.len() + self.viewers.entries.len()
    }

    pub(super) fn table_mut(&mut self, role: Role) -> (&mut Table, &mut Table) {
        if role.is_infra() {
            (&mut self.infra, &mut self.viewers)
        } else {
            (&mut self.viewers, &mut self.infra)
        }
    }

    pub(super) fn info(&self, stream: &str, now: Instant) -> StreamInfo {
        let live = |t: &Table| t.entries.iter().filter(|p| p.is_live(now)).count();
        let name = self
            .infra
            .entries
            .iter()
            .filter(|p| p.is_live(now) && p.name.is_some())
            .min_by_key(|p| p.role != Role::Seeder)
            .and_then(|p| p.name.clone());
        StreamInfo {
            stream: stream.to_owned(),
            name,
            viewers: live(&self.viewers).try_into().unwrap_or(u32::MAX),
            seeders: live(&self.infra).try_into().unwrap_or(u32::MAX),
        }
    }
}

/// Peers in a `Vec` (for sampling windows) with an index by peer id.
#[derive(Debug, Default)]
pub(super) struct Table {
    pub(super) entries: Vec<PeerEntry>,
    /// Shares each entry's id rather than holding a second copy.
    index: HashMap<Arc<str>, usize>,
}

impl Table {
    pub(super) fn get(&self, peer_id: &str) -> Option<&PeerEntry> {
        Some(&self.entries[*self.index.get(peer_id)?])
    }

    pub(super) fn get_mut(&mut self, peer_id: &str) -> Option<&mut PeerEntry> {
        let i = *self.index.get(peer_id)?;
        Some(&mut self.entries[i])
    }

    pub(super) fn insert(&mut self, entry: PeerEntry) {
        self.index
            .insert(Arc::clone(&entry.peer_id), self.entries.len());
        self.entries.push(entry);
    }

    pub(super) fn remove(&mut self, peer_id: &str) -> bool {
        let Some(&i) = self.index.get(peer_id) else {
            return false;
        };
        self.remove_at(i);
        true
    }

    /// Swaps entry `i` out with the last, mending the index.
    fn remove_at(&mut self, i: usize) {
        let gone = self.entries.swap_remove(i);
        self.index.remove(&gone.peer_id);
        if let Some(moved) = self.entries.get(i) {
            self.index.insert(Arc::clone(&moved.peer_id), i);
        }
    }

    /// Drops expired peers; returns how many. The index is mended for each
    /// entry moved, never rebuilt: a purge of a few peers in a swarm of a
    /// million costs a pass over it, not a million inserts.
    pub(super) fn retain_live(&mut self, now: Instant) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.entries.len() {
            if self.entries[i].is_live(now) {
                i += 1;
                continue;
            }
            self.remove_at(i);
            removed += 1;
        }
        removed
    }

    /// The entries announced within `ttl` of `now`.
    pub(super) fn live(&self, now: Instant) -> impl Iterator<Item = &PeerEntry> {
        self.entries.iter().filter(move |p| p.is_live(now))
    }

    /// All entries, or a window of `limit` from a random start, wrapping
    /// around: an announce costs the window, whatever the swarm.
    pub(super) fn window<'a>(
        &'a self,
        limit: usize,
        rng: &mut StdRng,
    ) -> impl Iterator<Item = &'a PeerEntry> {
        let len = self.entries.len();
        let (start, n) = if len <= limit {
            (0, len)
        } else {
            (rng.gen_range(0..len), limit)
        };
        let tail = &self.entries[start..(start + n).min(len)];
        let head = &self.entries[..(start + n).saturating_sub(len)];
        tail.iter().chain(head)
    }
}

/// What the registry works out about an announce, beside what it says.
#[derive(Clone, Copy, Debug)]
pub(super) struct Shape {
    pub(super) loc: Locality,
    /// Where the announce came from.
    pub(super) seen_at: Option<IpAddr>,
    /// The base time to live stretched as the peer's interval.
    pub(super) ttl: Duration,
    pub(super) interval_s: u32,
    pub(super) span_ms: u32,
}

#[derive(Debug)]
pub(super) struct PeerEntry {
    pub(super) peer_id: Arc<str>,
    pub(super) addrs: Vec<String>,
    pub(super) role: Role,
    pub(super) degree: u32,
    pub(super) max_degree: u32,
    pub(super) upload_kbps: u32,
    pub(super) http: Option<String>,
    name: Option<String>,
    /// Infrastructure's only: a viewer's would be most of the tracker's
    /// memory in a large swarm, for operators who read a few.
    counters: Option<Box<serde_json::Value>>,
    pub(super) loc: Locality,
    /// Where its announce came from: its LAN and loopback addresses are
    /// passed on only to peers seen at the same address (docs/nat.md).
    pub(super) seen_at: Option<IpAddr>,
    /// The widest scope of its addresses, worked out once per announce.
    pub(super) widest: Scope,
    /// Network coordinate, when usable.
    pub(super) coord: Option<Coord>,
    /// Viewers: their last interval, for the coordinator.
    pub(super) report: Option<ViewerReport>,
    /// The span `report` covers, ms: the time since the announce before.
    pub(super) report_span_ms: u32,
    /// When it is forgotten: its time to live, stretched as its interval
    /// was ([`cadence::stretch`]), after its last announce.
    expires: Instant,
    /// The interval it was last given.
    interval_s: u32,
    /// Infrastructure: the stream's bitrate, kbit/s.
    pub(super) bitrate_kbps: u32,
    pub(super) last_seen: Instant,
}

impl PeerEntry {
    pub(super) fn new(a: Announce, peer_id: Arc<str>, shape: Shape, now: Instant) -> Self {
        let mut addrs = a.addrs;
        addrs.shrink_to_fit();
        let widest = (addrs.iter())
            .map(|s| Scope::of_str(s))
            .max()
            .unwrap_or(Scope::Unroutable);
        let counters = (a.role.is_infra() && !a.counters.is_null()).then(|| Box::new(a.counters));
        Self {
            peer_id,
            addrs,
            role: a.role,
            degree: a.degree,
            max_degree: a.max_degree,
            upload_kbps: a.upload_kbps,
            http: a.http,
            name: a.name,
            counters,
            loc: shape.loc,
            seen_at: shape.seen_at,
            widest,
            coord: usable_coord(a.coord),
            report: a.report,
            report_span_ms: shape.span_ms,
            expires: now + shape.ttl,
            interval_s: shape.interval_s,
            bitrate_kbps: a.bitrate_kbps,
            last_seen: now,
        }
    }

    /// Whether it announced within its time to live.
    pub(super) fn is_live(&self, now: Instant) -> bool {
        now < self.expires
    }

    pub(super) fn has_free_degree(&self) -> bool {
        self.degree < self.max_degree
    }

    pub(super) fn record(&self, now: Instant) -> PeerRecord {
        PeerRecord {
            peer_id: self.peer_id.to_string(),
            addrs: self.addrs.clone(),
            role: self.role,
            degree: self.degree,
            max_degree: self.max_degree,
            upload_kbps: self.upload_kbps,
            http: self.http.clone(),
            name: self.name.clone(),
            counters: self.counters.as_deref().cloned().unwrap_or_default(),
            loc: self.loc,
            age_ms: now
                .saturating_duration_since(self.last_seen)
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            interval_s: self.interval_s,
        }
    }
}
