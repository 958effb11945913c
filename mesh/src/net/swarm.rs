//! The libp2p swarm a node runs on: its behaviours, its transports (plain
//! or shaped) and its listeners.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    autonat,
    connection_limits::{self, ConnectionLimits},
    dcutr, identify,
    identity::Keypair,
    kad, noise, relay,
    swarm::{behaviour::toggle::Toggle, NetworkBehaviour, SwarmEvent},
    tcp, upnp, yamux, Multiaddr, Swarm,
};

use super::{dht, shaped_tcp_transport, HostConfig, NetError, Traversal};

/// Everything a host runs on its connections. NAT traversal (AutoNAT,
/// relays, DCUtR, UPnP) is off on loopback meshes, where it has nothing to
/// find and would only add traffic to the lab's figures.
#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    pub(super) autonat: Toggle<autonat::Behaviour>,
    relay: Toggle<relay::Behaviour>,
    relay_client: Toggle<relay::client::Behaviour>,
    dcutr: Toggle<dcutr::Behaviour>,
    upnp: Toggle<upnp::tokio::Behaviour>,
    /// The DHT (docs/discovery.md): off on lab meshes, where the tracker
    /// is all there is.
    pub(super) kad: Toggle<kad::Behaviour<kad::store::MemoryStore>>,
    pub(super) stream: libp2p_stream::Behaviour,
}

/// AutoNAT tuned for a live stream: a viewer needs to know within seconds
/// whether to take a relay reservation, not the default quarter minute.
fn autonat_config() -> autonat::Config {
    autonat::Config {
        boot_delay: Duration::from_secs(2),
        retry_interval: Duration::from_secs(10),
        refresh_interval: Duration::from_secs(5 * 60),
        throttle_server_period: Duration::from_secs(15),
        ..autonat::Config::default()
    }
}

/// A relay's limits. Infrastructure holds many reservations; a viewer a
/// few. Circuits stay small either way: they carry the DCUtR handshake and,
/// only where no hole can be punched, the last resort of piece traffic.
fn relay_config(traversal: Traversal) -> relay::Config {
    let (reservations, circuits) = match traversal {
        Traversal::Infra => (1024, 256),
        _ => (16, 8),
    };
    relay::Config {
        max_reservations: reservations,
        max_reservations_per_peer: 2,
        max_circuits: circuits,
        max_circuits_per_peer: 4,
        max_circuit_duration: Duration::from_secs(10 * 60),
        max_circuit_bytes: 16 << 20,
        ..relay::Config::default()
    }
}

/// Listens on every address and waits (up to 5 s) until each is bound;
/// returns the bound addresses, or the address that failed and why.
/// Shared by the Shoal driver and the lab's gossipsub baseline.
pub async fn listen_all<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    listen: &[Multiaddr],
) -> Result<Vec<Multiaddr>, (Multiaddr, String)> {
    for addr in listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| (addr.clone(), e.to_string()))?;
    }
    let mut addrs = Vec::new();
    let wait = tokio::time::sleep(Duration::from_secs(5));
    tokio::pin!(wait);
    while addrs.len() < listen.len() {
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::NewListenAddr { address, .. } => addrs.push(address),
                SwarmEvent::ListenerError { error, .. }
                | SwarmEvent::ListenerClosed { reason: Err(error), .. } => {
                    return Err((listen[addrs.len()].clone(), listen_failure(&error)));
                }
                _ => {}
            },
            _ = &mut wait => break,
        }
    }
    if addrs.is_empty() && !listen.is_empty() {
        let why = "no listener came up within 5 s".to_string();
        return Err((listen[0].clone(), why));
    }
    Ok(addrs)
}

/// Why a listener failed, in words: some transports' errors print
/// nothing, and a port in use is the usual cause.
fn listen_failure(error: &std::io::Error) -> String {
    if error.kind() == std::io::ErrorKind::AddrInUse {
        return "the port is in use (another instance? pick another --port)".into();
    }
    match error.to_string() {
        shown if shown.is_empty() => format!("{error:?}"),
        shown => shown,
    }
}

pub(super) fn build_swarm(cfg: &HostConfig) -> Result<Swarm<Behaviour>, NetError> {
    let err = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let limits = ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        // Two each way: a pair that both dialled over a relay still has room
        // for the direct connections DCUtR punches.
        .with_max_established_per_peer(Some(4))
        .with_max_pending_incoming(Some(64))
        .with_max_pending_outgoing(Some(64));
    let traversal = cfg.traversal;
    let on = traversal != Traversal::Off;
    let dht_on = cfg.dht;
    let advert = cfg.advert.clone();
    let behaviour = |key: &Keypair, relay_client: relay::client::Behaviour| {
        let me = key.public().to_peer_id();
        Behaviour {
            limits: connection_limits::Behaviour::new(limits),
            identify: identify::Behaviour::new(
                identify::Config::new("/shoal/id/1".into(), key.public())
                    .with_agent_version(advert.agent_version()),
            ),
            autonat: on
                .then(|| autonat::Behaviour::new(me, autonat_config()))
                .into(),
            relay: on
                .then(|| relay::Behaviour::new(me, relay_config(traversal)))
                .into(),
            relay_client: on.then_some(relay_client).into(),
            dcutr: on.then(|| dcutr::Behaviour::new(me)).into(),
            upnp: on.then(upnp::tokio::Behaviour::default).into(),
            kad: dht_on.then(|| dht::behaviour(me, traversal)).into(),
            stream: libp2p_stream::Behaviour::new(),
        }
    };
    // Sessions ping every second; this only reaps connections that
    // never carried a shoal stream.
    let swarm_config =
        |c: libp2p::swarm::Config| c.with_idle_connection_timeout(Duration::from_secs(30));
    let builder = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone()).with_tokio();
    let swarm = match &cfg.shaping {
        // Shaped: TCP only, since QUIC would bypass the shaper.
        Some(shaping) => {
            let transport =
                shaped_tcp_transport(&cfg.keypair, shaping.clone()).map_err(|e| err(&e))?;
            builder
                .with_other_transport(|_| transport)
                .map_err(|e| err(&e))?
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(|e| err(&e))?
                .with_behaviour(behaviour)
                .map_err(|e| err(&e))?
                .with_swarm_config(swarm_config)
                .build()
        }
        None => builder
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| err(&e))?
            .with_quic()
            .with_dns()
            .map_err(|e| err(&e))?
            .with_relay_client(noise::Config::new, yamux::Config::default)
            .map_err(|e| err(&e))?
            .with_behaviour(behaviour)
            .map_err(|e| err(&e))?
            .with_swarm_config(swarm_config)
            .build(),
    };
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use libp2p::{identity::Keypair, swarm::SwarmEvent};

    use super::build_swarm;
    use crate::net::{
        shaper::tests::{node, LIMIT},
        HostConfig, Shaping,
    };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lab_config_builds_a_shaped_swarm() {
        let shaping = Shaping::default();
        let counters = shaping.counters.clone();
        let cfg = HostConfig::lab(Keypair::generate_ed25519(), 8, shaping);
        assert!(cfg.listen.iter().all(|a| a.to_string().contains("/tcp/")));
        let mut swarm = build_swarm(&cfg).unwrap();
        swarm.listen_on(cfg.listen[0].clone()).unwrap();
        let run = async {
            let addr = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break address;
                }
            };
            let other = node(Shaping::default()).await;
            other.dial.send(addr).await.unwrap();
            // Identify runs over substreams of the new connection: through
            // the lab node's shaper, both ways.
            while counters.sent() == 0 || counters.received() == 0 {
                swarm.select_next_some().await;
            }
        };
        tokio::time::timeout(LIMIT, run).await.expect("timed out");
        println!("{counters:?}");
    }
}
