//! The libp2p swarm a node runs on: its behaviours, its transports (plain
//! or shaped) and its listeners.

use std::time::Duration;

use futures::StreamExt;
use libp2p::{
    connection_limits::{self, ConnectionLimits},
    identify,
    identity::Keypair,
    noise,
    swarm::{NetworkBehaviour, SwarmEvent},
    tcp, yamux, Multiaddr, Swarm,
};

use super::{shaped_tcp_transport, HostConfig, NetError};

#[derive(NetworkBehaviour)]
pub(super) struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    pub(super) stream: libp2p_stream::Behaviour,
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
                    return Err((listen[addrs.len()].clone(), error.to_string()));
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

pub(super) fn build_swarm(cfg: &HostConfig) -> Result<Swarm<Behaviour>, NetError> {
    let err = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let limits = ConnectionLimits::default()
        .with_max_established(Some(cfg.max_connections))
        .with_max_established_per_peer(Some(2))
        .with_max_pending_incoming(Some(64))
        .with_max_pending_outgoing(Some(64));
    let behaviour = |key: &Keypair| Behaviour {
        limits: connection_limits::Behaviour::new(limits),
        identify: identify::Behaviour::new(identify::Config::new(
            "/shoal/id/1".into(),
            key.public(),
        )),
        stream: libp2p_stream::Behaviour::new(),
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
