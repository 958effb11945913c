//! `shoal-tracker`: the HTTP/JSON hint service (wire types in [`shoal_mesh::hints`]).
//!
//! Peers announce every `interval_s`; the tracker keeps what they said as soft
//! state for `peer_ttl` and answers each announce with advice: candidate
//! neighbours ranked by what the tracker can see of proximity, and the stream's
//! seeders/reflectors to fall back to. Nothing here is needed for the mesh to
//! keep running, so the tracker favours staying small and bounded over being
//! exact: a peer that stops announcing simply ages out, and a very large swarm
//! is ranked from a random window of [`SCAN_LIMIT`] peers rather than in full.
//!
//! The parts, each with its own tests:
//!
//! - `registry`: [`Registry`], that soft state with the clock passed in
//!   (swarms, their tables of peers, announce bookkeeping, expiry, bounds);
//! - `ranking`: which peers an announcer is told about, in what order;
//! - `addresses`: the address a peer's locality is taken from;
//! - `asn`: the IP → AS table ([`AsnTable`], `--asn-table`);
//! - `coordinator`: once per interval, the infrastructure tier's upload
//!   split across streams from the viewers' reports; infrastructure is told
//!   its budget in its hints (docs/coordinator.md);
//! - `reflectors`: the reflectors as soft state, and the plan of which
//!   carries which stream, redone each interval and when one comes or goes;
//! - `assignment`: that plan's rule, a pure function (docs/coordinator.md,
//!   "Reflectors");
//! - `http`: the axum handlers around the registry, which only parse, lock,
//!   and answer.
//!
//! Each announcer's [`Locality`](shoal_mesh::proto::Locality) (AS and /24 or
//! /48) comes from the address the tracker attributes to it and the AS table;
//! the answer tells the announcer its own (`Hints::you`) and every
//! candidate's, and ranks candidates in its subnet and AS first.
//!
//! Endpoints: `POST /v1/announce` ([`Announce`] → [`Hints`]),
//! `POST /v1/reflectors` ([`ReflectorAnnounce`] → [`Assignments`]), `GET /v1/streams`
//! ([`StreamList`]), `GET /v1/streams/{stream}` (operators: the live peers and
//! their counters, [`StreamDetail`]), `GET /healthz`. Errors are JSON
//! [`ErrorBody`]s.
//!
//! [`Announce`]: shoal_mesh::hints::Announce
//! [`Hints`]: shoal_mesh::hints::Hints
//! [`ReflectorAnnounce`]: shoal_mesh::hints::ReflectorAnnounce
//! [`Assignments`]: shoal_mesh::hints::Assignments
//! [`StreamList`]: shoal_mesh::hints::StreamList
//! [`ErrorBody`]: shoal_mesh::hints::ErrorBody

mod addresses;
mod asn;
mod assignment;
mod cadence;
mod coordinator;
mod http;
mod ranking;
mod reflectors;
mod registry;
mod swarm;

#[cfg(test)]
mod fixtures;

pub use asn::{AsnTable, AsnTableError};
pub use coordinator::CoordinatorConfig;
pub use http::{router, router_over, serve, serve_with_shutdown, spawn, start, RunningTracker};
pub use reflectors::ReflectorRecord;
pub use registry::{
    AnnounceError, PeerRecord, Registry, StreamDetail, TrackerConfig, MAX_LISTED_PEERS,
    MAX_SEEDER_HINTS, MIN_SCAN, SCAN_LIMIT, SCAN_PER_WANTED, SETTLED_FACTOR, SETTLED_WANT,
};
