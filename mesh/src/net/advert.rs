//! What a host says of itself in libp2p identify's agent version, so that
//! a node that found it in the DHT, with no tracker to say so, knows it is
//! infrastructure and where its HTTP origin is (docs/protocol.md §13.3).
//!
//! The agent version is `shoal/<version> role=<role>[ origin=<url>]`.
//! Identify runs on every connection, so what it says comes from the peer
//! whose id the noise handshake proved (not from a third party, as a DHT
//! record could) — but it is only that peer's claim. Hence a seeder claim
//! holds only from the stream's broadcaster key ([`Advert::is_infra_for`]),
//! and an origin only at the IP the peer was reached at
//! ([`Advert::stream_origin`]); a reflector claim cannot be checked
//! (docs/discovery.md).

use std::net::IpAddr;

use libp2p::{
    identity::{ed25519, PublicKey},
    PeerId,
};

use crate::{
    hints::MAX_TEXT_LEN,
    proto::{Role, StreamId},
};

/// The agent version's first word starts with this; anything else is not a
/// Shoal host (and says nothing we use).
const PRODUCT: &str = "shoal/";

/// A host's role and, for infrastructure, the base URL of its HTTP origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advert {
    pub role: Role,
    /// Base URL of its HTTP origin, as bound (`http://0.0.0.0:7080` is
    /// read as the address the host was reached at: [`origin_seen_at`]).
    pub origin: Option<String>,
}

impl Default for Advert {
    fn default() -> Self {
        Advert {
            role: Role::Viewer,
            origin: None,
        }
    }
}

impl Advert {
    /// The agent version that carries it.
    pub fn agent_version(&self) -> String {
        let role = match self.role {
            Role::Viewer => "viewer",
            Role::Seeder => "seeder",
            Role::Reflector => "reflector",
        };
        let mut agent = format!("{PRODUCT}{} role={role}", env!("CARGO_PKG_VERSION"));
        if let Some(origin) = self.origin.as_ref().filter(|o| valid_origin(o)) {
            agent.push_str(" origin=");
            agent.push_str(origin);
        }
        agent
    }

    /// What a peer's agent version says; `None` when it is not a Shoal
    /// host's or names no role. Unknown words are skipped (later versions
    /// may add some), a bad origin is dropped.
    pub fn parse(agent: &str) -> Option<Advert> {
        let mut words = agent.split_ascii_whitespace();
        if !words.next()?.starts_with(PRODUCT) {
            return None;
        }
        let (mut role, mut origin) = (None, None);
        for word in words {
            match word.split_once('=') {
                Some(("role", "viewer")) => role = Some(Role::Viewer),
                Some(("role", "seeder")) => role = Some(Role::Seeder),
                Some(("role", "reflector")) => role = Some(Role::Reflector),
                Some(("origin", url)) if valid_origin(url) => origin = Some(url.to_string()),
                _ => {}
            }
        }
        Some(Advert {
            role: role?,
            origin: origin.filter(|_| role.is_some_and(Role::is_infra)),
        })
    }

    /// The base URL a node fetches `stream`'s pieces at (it appends
    /// `/v1/pieces/{seq}`): a seeder's origin serves its one stream at its
    /// root, a reflector's each stream under `/s/<stream id>`.
    ///
    /// Only an origin at `seen_at`, the IP the host was reached at, or on
    /// every interface (then read at `seen_at`) is taken: any other host,
    /// a name included, is a claim that could point the node at a third
    /// party. `None` as well when `seen_at` is not known.
    pub fn stream_origin(&self, stream: &StreamId, seen_at: Option<IpAddr>) -> Option<String> {
        let seen_at = seen_at?.to_canonical();
        let url = self.origin.clone()?;
        let host = origin_ip(&url)?.to_canonical();
        if !host.is_unspecified() && host != seen_at {
            return None;
        }
        let base = origin_seen_at(url, Some(seen_at));
        match self.role {
            Role::Viewer => None,
            Role::Seeder => Some(base),
            Role::Reflector => Some(format!("{}/s/{stream}", base.trim_end_matches('/'))),
        }
    }
}

impl Advert {
    /// Whether the host is to be taken as `stream`'s infrastructure (a
    /// fallback origin and relay). A seeder's libp2p identity is its
    /// broadcaster key, which is the stream id: a seeder claim holds only
    /// from that peer. A reflector claim cannot be checked here (its
    /// assignment is the tracker's); a false one costs failed fetches
    /// (pieces are signed) and a relay that does not relay.
    pub fn is_infra_for(&self, stream: &StreamId, peer: &PeerId) -> bool {
        match self.role {
            Role::Viewer => false,
            Role::Seeder => broadcaster(stream).as_ref() == Some(peer),
            Role::Reflector => true,
        }
    }
}

/// The peer id of `stream`'s broadcaster (its seeder).
fn broadcaster(stream: &StreamId) -> Option<PeerId> {
    let key = ed25519::PublicKey::try_from_bytes(&stream.0).ok()?;
    Some(PublicKey::from(key).to_peer_id())
}

/// An origin URL fit to carry: http(s), short, without whitespace (the
/// agent version is split at whitespace).
fn valid_origin(url: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && url.len() <= MAX_TEXT_LEN
        && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// An HTTP origin's URL as others can use it: an origin bound to every
/// interface (`http://0.0.0.0:7080`) is at the address it was reached at
/// (the tracker: where its announce came from; a node: where it connected
/// to it). Anything else is kept as it is.
pub fn origin_seen_at(url: String, remote: Option<IpAddr>) -> String {
    let Some(remote) = remote.map(|ip| ip.to_canonical()) else {
        return url;
    };
    let Ok(mut parsed) = reqwest::Url::parse(&url) else {
        return url;
    };
    let unspecified = origin_ip(&url).is_some_and(|ip| ip.is_unspecified());
    if unspecified && parsed.set_ip_host(remote).is_ok() {
        return parsed.to_string().trim_end_matches('/').to_string();
    }
    url
}

/// The IP an origin URL names, when its host is one.
fn origin_ip(url: &str) -> Option<IpAddr> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?.trim_matches(['[', ']']);
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_ignores_what_it_does_not_know() {
        let seeder = Advert {
            role: Role::Seeder,
            origin: Some("http://0.0.0.0:7080".into()),
        };
        let agent = seeder.agent_version();
        assert!(agent.starts_with("shoal/"), "{agent}");
        assert_eq!(Advert::parse(&agent), Some(seeder));
        assert_eq!(
            Advert::parse(&Advert::default().agent_version()),
            Some(Advert::default())
        );
        let later = "shoal/9.0 colour=blue role=reflector origin=http://h:1 x";
        assert_eq!(Advert::parse(later).unwrap().role, Role::Reflector);
        assert_eq!(Advert::parse("rust-libp2p/0.1 role=seeder"), None);
        assert_eq!(Advert::parse("shoal/0.1"), None, "no role");
        assert_eq!(Advert::parse(""), None);
    }

    #[test]
    fn only_infrastructure_carries_a_well_formed_origin() {
        let viewer = Advert::parse("shoal/0.1 role=viewer origin=http://h:1").unwrap();
        assert_eq!(viewer.origin, None);
        let bad = Advert::parse("shoal/0.1 role=seeder origin=ftp://h:1").unwrap();
        assert_eq!(bad.origin, None);
        let long = format!("http://{}", "h".repeat(MAX_TEXT_LEN));
        let advert = Advert {
            role: Role::Seeder,
            origin: Some(long),
        };
        assert!(!advert.agent_version().contains("origin="));
    }

    #[test]
    fn a_stream_origin_follows_the_role_and_where_the_host_was_reached() {
        let stream = StreamId([7; 32]);
        let at = Some("192.0.2.5".parse().unwrap());
        let seeder = Advert {
            role: Role::Seeder,
            origin: Some("http://0.0.0.0:7080".into()),
        };
        assert_eq!(
            seeder.stream_origin(&stream, at).as_deref(),
            Some("http://192.0.2.5:7080")
        );
        let reflector = Advert {
            role: Role::Reflector,
            origin: Some("http://192.0.2.5:7081/".into()),
        };
        assert_eq!(
            reflector.stream_origin(&stream, at).unwrap(),
            format!("http://192.0.2.5:7081/s/{stream}")
        );
        let elsewhere = |origin: &str| Advert {
            role: Role::Reflector,
            origin: Some(origin.into()),
        };
        let third_party = elsewhere("http://10.0.0.1:7081");
        assert_eq!(
            third_party.stream_origin(&stream, at),
            None,
            "not where reached"
        );
        let named = elsewhere("http://origin.example");
        assert_eq!(named.stream_origin(&stream, at), None, "a name is a claim");
        assert_eq!(Advert::default().stream_origin(&stream, at), None);
        assert_eq!(seeder.stream_origin(&stream, None), None, "not known where");
    }

    #[test]
    fn a_seeder_claim_holds_only_from_the_broadcaster_key() {
        let key = libp2p::identity::Keypair::generate_ed25519();
        let public = key.public().try_into_ed25519().unwrap().to_bytes();
        let stream = StreamId(public);
        let seeder = Advert {
            role: Role::Seeder,
            origin: None,
        };
        assert!(seeder.is_infra_for(&stream, &key.public().to_peer_id()));
        assert!(!seeder.is_infra_for(&stream, &PeerId::random()));
        assert!(!Advert::default().is_infra_for(&stream, &key.public().to_peer_id()));
        let reflector = Advert {
            role: Role::Reflector,
            origin: None,
        };
        assert!(
            reflector.is_infra_for(&stream, &PeerId::random()),
            "unchecked"
        );
    }

    #[test]
    fn an_origin_on_every_interface_is_where_it_was_reached() {
        let seen: Option<IpAddr> = Some("198.51.100.7".parse().unwrap());
        let at = |url: &str, remote| origin_seen_at(url.to_string(), remote);
        assert_eq!(at("http://0.0.0.0:7080", seen), "http://198.51.100.7:7080");
        assert_eq!(at("http://[::]:7080", seen), "http://198.51.100.7:7080");
        assert_eq!(at("http://10.0.0.2:7080", seen), "http://10.0.0.2:7080");
        assert_eq!(at("http://origin.example", seen), "http://origin.example");
        assert_eq!(at("http://0.0.0.0:7080", None), "http://0.0.0.0:7080");
        assert_eq!(at("not a url", seen), "not a url");
    }
}
