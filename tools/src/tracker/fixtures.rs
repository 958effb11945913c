//! What the tracker's tests announce, and how they read the answers.

use std::sync::Arc;

use shoal_mesh::hints::{Announce, Hints, Role};
use shoal_mesh::proto::{Coord, Locality};

use super::{AsnTable, Registry, TrackerConfig};

pub(super) fn stream(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

pub(super) fn peer(id: &str, ip: &str, role: Role, degree: u32, max_degree: u32) -> Announce {
    Announce {
        addrs: vec![format!("/ip4/{ip}/tcp/4001")],
        degree,
        max_degree,
        ..Announce::new(stream(1), id, role)
    }
}

pub(super) fn at(x: f32, y: f32) -> Option<Coord> {
    Some(Coord {
        x,
        y,
        height: 1.0,
        error: 0.2,
    })
}

pub(super) fn viewer(id: &str, ip: &str, degree: u32) -> Announce {
    peer(id, ip, Role::Viewer, degree, 8)
}

pub(super) fn ids(hints: &Hints) -> Vec<&str> {
    hints
        .candidates
        .iter()
        .map(|c| c.peer_id.as_str())
        .collect()
}

pub(super) fn registry() -> Registry {
    Registry::new(TrackerConfig::default(), 7)
}

pub(super) fn with_asn_table(text: &str) -> Registry {
    let config = TrackerConfig {
        asn_table: Arc::new(AsnTable::parse(text, "test").unwrap()),
        ..TrackerConfig::default()
    };
    Registry::new(config, 7)
}

pub(super) fn loc(ip: &str, asn: u32) -> Locality {
    Locality::of_ip(ip.parse().unwrap(), asn)
}

pub(super) fn reflector(id: &str, fan_out: u32) -> shoal_mesh::hints::ReflectorAnnounce {
    shoal_mesh::hints::ReflectorAnnounce {
        peer_id: id.into(),
        addrs: vec![format!("/dns4/{id}/tcp/4001")],
        http: None,
        fan_out,
        upload_kbps: 0,
        carrying: Vec::new(),
        failure_domain: None,
    }
}
