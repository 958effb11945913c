//! Shoal's Kademlia DHT: where a node without a tracker finds a stream's
//! infrastructure and viewers (docs/protocol.md §13, docs/discovery.md).
//!
//! Every host that carries a stream provides the stream's key; a node looks
//! the key up and takes the providers as neighbour candidates. The DHT is
//! Shoal's own (its protocol name is not the IPFS DHT's), so its routing
//! tables hold Shoal hosts only.

use std::{num::NonZeroUsize, time::Duration};

use libp2p::{
    kad::{self, store::MemoryStoreConfig, RecordKey, StoreInserts},
    multiaddr::Protocol,
    Multiaddr, PeerId, StreamProtocol,
};

use super::Traversal;
use crate::proto::StreamId;

/// The DHT's protocol name: not `/ipfs/kad/1.0.0`, so that Shoal hosts
/// never join (nor serve) the public IPFS DHT.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/kad/1.0.0");

/// Prefix of a stream's provider key, so that other kinds of keys can be
/// added later without colliding.
const KEY_PREFIX: &[u8] = b"/shoal/stream/";

/// One query, at most: a lookup that has not finished by then reports what
/// it found.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// A provider record lives this long on the nodes that store it...
pub const PROVIDER_TTL: Duration = Duration::from_secs(6 * 60);
/// ...and its provider publishes it again this often, so that records
/// of a host that left go within minutes.
pub const REPROVIDE: Duration = Duration::from_secs(2 * 60);
/// Providers taken from one lookup, at most: the engine needs candidates,
/// not the whole swarm.
pub const MAX_PROVIDERS: usize = 16;
/// Providers stored per key on a node (kad's replication factor, k).
const PROVIDERS_PER_KEY: usize = 20;
/// Keys a host provides, at most (streams it carries).
const PROVIDED_KEYS: usize = 1024;

/// A stream's key in the DHT: `/shoal/stream/` followed by the stream id's
/// 32 bytes.
pub fn stream_key(stream: &StreamId) -> RecordKey {
    let mut key = KEY_PREFIX.to_vec();
    key.extend_from_slice(&stream.0);
    RecordKey::new(&key)
}

/// The stream a key names, when it is one of ours.
pub fn key_stream(key: &RecordKey) -> Option<StreamId> {
    let id = key.as_ref().strip_prefix(KEY_PREFIX)?;
    Some(StreamId(id.try_into().ok()?))
}

/// The Kademlia behaviour of a host.
///
/// Kad starts in client mode and turns server on a confirmed external
/// address; infrastructure and loopback meshes (where no address is ever
/// confirmed) serve from the start, or nobody would answer their queries.
pub(super) fn behaviour(
    me: PeerId,
    traversal: Traversal,
) -> kad::Behaviour<kad::store::MemoryStore> {
    let mut cfg = kad::Config::new(PROTOCOL);
    cfg.set_query_timeout(QUERY_TIMEOUT)
        .set_provider_record_ttl(Some(PROVIDER_TTL))
        .set_provider_publication_interval(Some(REPROVIDE))
        // Shoal stores no values in the DHT: whatever a peer asks to put is
        // dropped (provider records are stored by the driver, after checks).
        .set_record_filtering(StoreInserts::FilterBoth)
        .set_record_ttl(Some(PROVIDER_TTL))
        .set_publication_interval(None)
        .set_replication_interval(None)
        .set_replication_factor(NonZeroUsize::new(PROVIDERS_PER_KEY).expect("not zero"));
    let store = kad::store::MemoryStore::with_config(
        me,
        MemoryStoreConfig {
            max_records: 0,
            max_value_bytes: 0,
            max_providers_per_key: PROVIDERS_PER_KEY,
            max_provided_keys: PROVIDED_KEYS,
        },
    );
    let mut kad = kad::Behaviour::with_config(me, store, cfg);
    if traversal != Traversal::Viewer {
        kad.set_mode(Some(kad::Mode::Server));
    }
    kad
}

/// A `--bootstrap` address: a multiaddr ending in `/p2p/<peer id>`, split
/// into the peer and where to dial it.
pub fn bootstrap_peer(addr: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut addr = addr.clone();
    match addr.pop()? {
        Protocol::P2p(peer) => Some((peer, addr)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_key_names_its_stream_and_nothing_else_does() {
        let stream = StreamId([9; 32]);
        let key = stream_key(&stream);
        assert!(key.as_ref().starts_with(b"/shoal/stream/"));
        assert_eq!(key.as_ref().len(), KEY_PREFIX.len() + 32);
        assert_eq!(key_stream(&key), Some(stream));
        assert_ne!(stream_key(&StreamId([8; 32])), key);
        assert_eq!(key_stream(&RecordKey::new(&[9u8; 32])), None);
        assert_eq!(key_stream(&RecordKey::new(&b"/shoal/stream/short")), None);
    }

    #[test]
    fn a_bootstrap_address_needs_its_peer_id() {
        let peer = PeerId::random();
        let with: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")
            .parse()
            .unwrap();
        let (p, at) = bootstrap_peer(&with).unwrap();
        assert_eq!(p, peer);
        assert_eq!(at.to_string(), "/ip4/127.0.0.1/tcp/4001");
        let without: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(bootstrap_peer(&without), None);
    }
}
