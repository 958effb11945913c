//! NAT traversal with libp2p's own parts, on loopback: a viewer that
//! cannot be dialled takes a relay reservation with infrastructure; a peer
//! that knows only its relayed address reaches it through the relay, and
//! DCUtR upgrades the connection to a direct one before the session opens.

use std::time::Duration;

use libp2p::{identity::Keypair, Multiaddr, PeerId};
use shoal_mesh::{
    net::{self, Command, HostConfig, LinkKind, NetConfig, NetHandle, Traversal},
    proto::{Config, PeerInfo, Signer, StreamId},
};
use shoal_tests::wait_for;

const LIMIT: Duration = Duration::from_secs(30);

fn loopback_tcp() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
}

fn host(traversal: Traversal) -> HostConfig {
    HostConfig {
        listen: loopback_tcp(),
        traversal,
        ..HostConfig::local(Keypair::generate_ed25519(), 8)
    }
}

async fn viewer(stream: StreamId) -> NetHandle {
    let cfg = NetConfig {
        host: host(Traversal::Viewer),
        engine: Config::viewer(stream),
    };
    net::start(cfg, None).await.unwrap()
}

fn link(of: &NetHandle, peer: PeerId) -> Option<LinkKind> {
    let peer = peer.to_string();
    let status = of.host().net_status();
    status
        .peers
        .iter()
        .find(|l| l.peer_id == peer)
        .map(|l| l.connection)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_known_only_through_a_relay_is_reached_and_hole_punched() {
    let stream = Signer::new(&Keypair::generate_ed25519()).unwrap().stream();
    let relay = net::start_host(host(Traversal::Infra)).await.unwrap();
    let relay_addrs = relay.addrs.iter().map(|a| a.to_string()).collect();

    // B listens on loopback only: nobody could dial it from outside, so it
    // reserves a slot with the relay it is told of.
    let b = viewer(stream).await;
    b.send(Command::Relays(vec![PeerInfo::new(
        relay.peer_id,
        relay_addrs,
    )]))
    .await
    .unwrap();
    let mut circuit = None;
    wait_for("a relay reservation", LIMIT, || {
        let status = b.host().net_status();
        circuit = status
            .addrs
            .iter()
            .find(|a| a.contains("/p2p-circuit"))
            .cloned();
        circuit.is_some() && !status.relays.is_empty()
    })
    .await;
    let circuit = circuit.unwrap();
    assert!(circuit.contains(&relay.peer_id.to_string()), "{circuit}");

    // A is told of B by its relayed address alone.
    let a = viewer(stream).await;
    let only_relayed = PeerInfo::new(b.peer_id, vec![circuit]);
    a.send(Command::Candidates(vec![only_relayed]))
        .await
        .unwrap();
    wait_for("a session between A and B", LIMIT, || {
        a.neighbors().contains(&b.peer_id) && b.neighbors().contains(&a.peer_id)
    })
    .await;

    // The session runs on the direct connection DCUtR made; the relayed
    // one was closed once it was up.
    wait_for("a direct link", LIMIT, || {
        let (ab, ba) = (link(&a, b.peer_id), link(&b, a.peer_id));
        ab.is_some_and(|k| k != LinkKind::Relayed) && ba.is_some_and(|k| k != LinkKind::Relayed)
    })
    .await;
    let kinds = [link(&a, b.peer_id), link(&b, a.peer_id)];
    assert!(
        kinds.contains(&Some(LinkKind::HolePunched)),
        "one side dialled the punched connection: {kinds:?}"
    );
    let relayed_payload = a.stats().relayed + b.stats().relayed;
    assert_eq!(relayed_payload, 0, "no payload crossed the relay");
}
