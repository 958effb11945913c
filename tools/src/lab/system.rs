//! The systems a lab run can drive, behind one interface: Shoal as it ships,
//! Shoal with random neighbours, libp2p-gossipsub, and client-server HTTP.

use std::{fmt, str::FromStr, sync::Arc};

use anyhow::Context;
use libp2p::{identity::Keypair, Multiaddr, PeerId};
use shoal_mesh::{
    net::Shaping,
    proto::{Stats, StreamId},
};
use shoal_node::Node;
use shoal_seeder::{Input, Seeder, SeederConfig};

use super::{scenario::Scenario, topology::Topology};

/// A system under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    Shoal,
    /// Shoal with neighbours chosen at random (RTT ignored).
    Random,
    Gossipsub,
    ClientServer,
}

impl System {
    pub const ALL: [System; 4] = [
        System::ClientServer,
        System::Gossipsub,
        System::Random,
        System::Shoal,
    ];
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Shoal => "shoal",
            System::Random => "random",
            System::Gossipsub => "gossipsub",
            System::ClientServer => "client-server",
        })
    }
}

impl FromStr for System {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        System::ALL
            .into_iter()
            .find(|sys| sys.to_string() == s)
            .ok_or_else(|| {
                format!("unknown system '{s}': shoal, random, gossipsub or client-server")
            })
    }
}

/// A running viewer of any system.
#[derive(Debug)]
pub enum Viewer {
    Shoal(Node),
}

impl Viewer {
    pub fn stats(&self) -> Stats {
        match self {
            Viewer::Shoal(n) => n.stats(),
        }
    }

    pub fn peer_id(&self) -> Option<PeerId> {
        match self {
            Viewer::Shoal(n) => Some(n.net.peer_id),
        }
    }

    /// Current neighbours (mesh systems).
    pub fn neighbors(&self) -> Vec<PeerId> {
        match self {
            Viewer::Shoal(n) => n.net.neighbors(),
        }
    }
}

/// The infrastructure side of a run: the seeder (and its origin).
#[derive(Debug)]
pub struct Infra {
    system: System,
    key: Keypair,
    shaping: Shaping,
    tracker_url: String,
    scenario: Scenario,
    stream: StreamId,
    seeder: Option<Seeder>,
    /// Where the seeder listened, so a restart comes back at the same place.
    http: Option<std::net::SocketAddr>,
    listen: Vec<Multiaddr>,
    /// Egress of seeders that were stopped.
    past: Vec<Stats>,
    past_http: u64,
    next_numbers: Option<(u64, u64)>,
}

impl Infra {
    pub async fn start(
        system: System,
        sc: &Scenario,
        tracker_url: &str,
        key: Keypair,
        shaping: Shaping,
        _topo: Arc<Topology>,
    ) -> anyhow::Result<Infra> {
        let stream = shoal_mesh::proto::Signer::new(&key)
            .context("seeder key")?
            .stream();
        let mut infra = Infra {
            system,
            key,
            shaping,
            tracker_url: tracker_url.to_string(),
            scenario: sc.clone(),
            stream,
            seeder: None,
            http: None,
            listen: Vec::new(),
            past: Vec::new(),
            past_http: 0,
            next_numbers: None,
        };
        infra.restart().await?;
        Ok(infra)
    }

    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Starts (again) the seeder, carrying on the stream's numbering.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let input = Input::Synthetic {
            bits_per_sec: self.scenario.bitrate_bps,
        };
        let mut cfg = SeederConfig::new(&self.scenario.name, input, self.key.clone());
        cfg.tracker = Some(self.tracker_url.clone());
        cfg.shaping = Some(self.shaping.clone());
        if let Some(http) = self.http {
            cfg.http = http;
        }
        cfg.listen = self.listen.clone();
        if let Some((seq, segment)) = self.next_numbers {
            cfg.first_seq = seq;
            cfg.first_segment = segment;
        }
        let mut last_err = None;
        // The old sockets may take a moment to be released.
        for _ in 0..50 {
            match Seeder::start(cfg.clone()).await {
                Ok(s) => {
                    if !s.ready(std::time::Duration::from_secs(20)).await {
                        anyhow::bail!("the seeder published nothing within 20 s");
                    }
                    self.http = Some(s.http_addr);
                    self.listen = s.net.addrs.clone();
                    self.seeder = Some(s);
                    return Ok(());
                }
                Err(e) => last_err = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(last_err.expect("tried").into())
    }

    /// Stops the seeder (a restart brings it back).
    pub fn stop(&mut self) {
        if let Some(s) = self.seeder.take() {
            self.past.push(s.stats());
            self.past_http += s.origin.payload_served();
            self.next_numbers = Some(s.next_numbers());
        }
    }

    /// Infrastructure mesh stats and HTTP payload served, over every seeder
    /// this run started.
    pub fn egress(&self) -> (Vec<Stats>, u64) {
        let mut stats = self.past.clone();
        let mut http = self.past_http;
        if let Some(s) = &self.seeder {
            stats.push(s.stats());
            http += s.origin.payload_served();
        }
        (stats, http)
    }

    pub async fn start_baseline_viewer(
        &self,
        _slot: usize,
        _key: Keypair,
        _shaping: Shaping,
        _topo: &Arc<Topology>,
    ) -> anyhow::Result<Viewer> {
        anyhow::bail!("{} is not available yet", self.system)
    }
}
