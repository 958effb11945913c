//! `shoal-lab nat`: a small internet of network namespaces (public hosts,
//! home routers doing cone or symmetric NAT, every home on 192.168.1.0/24)
//! with the real `shoal-tracker`, `shoal-seeder` and `shoal-node` inside,
//! started as a user would start them. It reads each viewer's `/stats`
//! from inside its namespace and reports the DESIGN measures per viewer
//! and per class. Needs root, iproute2 and iptables; see docs/lab.md.

pub mod figures;
pub mod floors;
pub mod links;
pub mod netns;
pub mod plan;
pub mod reading;
pub mod roles;
pub mod summary;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use serde::Serialize;
use shoal_mesh::rate::rate_arg;

use self::{
    figures::{by_class, ClassFigures, Connections, ViewerFigures, ViewerId},
    netns::Namespaces,
    plan::{Host, Plan, Shape},
    reading::Reading,
    roles::{Binaries, Role},
};
pub use self::{floors::NatFloors, roles::nat_get};

const TRACKER_PORT: u16 = 7070;
const SEEDER_HTTP_PORT: u16 = 8080;
const MESH_PORT: u16 = 4001;
/// The player's default address in `shoal-node --help`; each namespace
/// has its own loopback, so every node keeps it.
const PLAYER: &str = "127.0.0.1:7090";

/// Which `--listen` the seeder and the nodes are started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenMode {
    /// The host's own address (`/ip4/<ip>/tcp/4001` and QUIC).
    Own,
    /// `/ip4/0.0.0.0/tcp/4001` and QUIC, as a user told "listen on all
    /// interfaces" would write it.
    Any,
    /// No `--listen`: the binaries' own default (every interface).
    Default,
}

#[derive(Args, Clone, Debug, Serialize)]
pub struct NatArgs {
    /// Viewers with a public address.
    #[arg(long, default_value_t = 2)]
    pub public: usize,
    /// Homes, one viewer behind each home's NAT router.
    #[arg(long, default_value_t = 12)]
    pub homes: usize,
    /// Of the homes, how many have a symmetric NAT (the rest are cone).
    #[arg(long, default_value_t = 4)]
    pub symmetric: usize,
    /// How long the viewers watch, e.g. 60s.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,
    /// Each viewer's upload (tc tbf on its egress), or `unlimited`. The
    /// default is about two copies of the bundled clip (~740 kbit/s).
    #[arg(long, default_value = "1.5mbps", value_parser = upload)]
    pub upload: Upload,
    /// Also tell each node its upload (`shoal-node --upload-limit`), as a
    /// user who knows their line would: the node then paces what it
    /// serves. `false` leaves the router's token bucket alone to push back
    /// (homes then take far less from peers; docs/lab.md §3c).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tell_upload: bool,
    /// Neighbours per viewer, at most (`shoal-node --max-degree`).
    #[arg(long, default_value_t = 8)]
    pub max_degree: usize,
    /// How the seeder's and nodes' mesh `--listen` is given.
    #[arg(long, value_enum, default_value_t = ListenMode::Default)]
    pub listen: ListenMode,
    /// How often to read every viewer's /stats.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub poll: Duration,
    /// Write viewers, classes, samples and the topology as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Directory for every role's log (default: /tmp/shoal-nat-<PID>).
    #[arg(long)]
    pub logs: Option<PathBuf>,
    #[command(flatten)]
    pub floors: NatFloors,
}

/// A viewer's upload cap in bit/s; `None` is unlimited.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Upload(pub Option<u64>);

fn upload(s: &str) -> Result<Upload, String> {
    if s == "unlimited" {
        return Ok(Upload(None));
    }
    rate_arg(s).map(|r| Upload(Some(r)))
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Each class's figures at one moment of the run.
#[derive(Debug, Serialize)]
struct Sample {
    t_s: u64,
    classes: BTreeMap<&'static str, ClassFigures>,
}

/// What `--json` holds.
#[derive(Debug, Serialize)]
struct NatReport<'a> {
    config: &'a NatArgs,
    stream: String,
    topology: &'a Plan,
    viewers: Vec<ViewerFigures>,
    classes: BTreeMap<&'static str, ClassFigures>,
    /// Neighbour links per class pair; `None` while nodes do not list
    /// their peers.
    links: Option<BTreeMap<String, Connections>>,
    /// Hole punches tried and made per class pair; `None` while nodes do
    /// not report them.
    punches: Option<BTreeMap<String, links::Punches>>,
    samples: Vec<Sample>,
    floor_misses: Vec<String>,
}

/// Runs the lab; cleans up every namespace and process it made on
/// return, error, panic, Ctrl-C or SIGTERM.
pub async fn run_nat(args: &NatArgs) -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = lab(args) => r,
        _ = tokio::signal::ctrl_c() => bail!("interrupted; the lab's namespaces are removed"),
        _ = term.recv() => bail!("terminated; the lab's namespaces are removed"),
    }
}

async fn lab(args: &NatArgs) -> anyhow::Result<()> {
    netns::check_prerequisites().await?;
    let bins = Binaries::beside_this_exe()?;
    let shape = Shape {
        public_viewers: args.public,
        homes: args.homes,
        symmetric: args.symmetric,
    };
    let plan = Plan::new(&netns::own_prefix(), shape)?;
    let stale = netns::remove_stale();
    if stale > 0 {
        println!("removed {stale} namespaces left by an earlier NAT lab run");
    }
    let logs = args
        .logs
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("shoal-nat-{}", std::process::id())));
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;

    // Declared before the roles so it drops after them: processes first,
    // then their namespaces.
    let mut namespaces = Namespaces::default();
    for ns in plan.namespaces() {
        namespaces.add(&ns).await?;
    }
    for cmd in plan.wiring(args.upload.0) {
        netns::run(&cmd).await?;
    }
    println!(
        "internet up: {} public viewers, {} homes ({} symmetric NAT), upload {}, logs in {}",
        args.public,
        args.homes,
        args.symmetric,
        args.upload
            .0
            .map_or("unlimited".into(), |b| format!("{} kbit/s", b / 1000)),
        logs.display()
    );

    let tracker_url = format!("http://{}:{TRACKER_PORT}", plan.tracker().ip);
    let mut infra = vec![start_tracker(&plan, &bins, &logs, &tracker_url).await?];
    let mut seeder = start_seeder(&plan, &bins, &logs, &tracker_url, args.listen)?;
    let stream = roles::stream_id(&mut seeder, Duration::from_secs(30)).await?;
    infra.push(seeder);
    println!("stream: {stream}");

    let mut viewers: Vec<Role> = Vec::new();
    for host in plan.viewers() {
        let node_args = node_args(host, &tracker_url, &stream, args);
        let role = roles::start(&host.name, &host.ns, &bins.node, &node_args, &logs, false)?;
        viewers.push(role);
        // A crowd arriving within a second or two, not one instant.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ids: Vec<ViewerId> = plan.viewers().iter().map(viewer_id).collect();

    let started = Instant::now();
    let mut latest: Vec<Option<Reading>> = vec![None; ids.len()];
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(args.poll);
    tick.tick().await;
    while started.elapsed() < args.duration {
        let left = args.duration.saturating_sub(started.elapsed());
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::time::sleep(left) => break,
        }
        for role in &mut infra {
            roles::check_alive(role)?;
        }
        read_all(&bins, &plan, &mut latest).await;
        let figures = figures_of(&ids, &latest);
        let classes = by_class(&figures);
        let t_s = started.elapsed().as_secs();
        println!("{}", summary::progress(t_s, &classes));
        samples.push(Sample { t_s, classes });
    }
    read_all(&bins, &plan, &mut latest).await;
    let figures = figures_of(&ids, &latest);
    let classes = by_class(&figures);
    let (links, punches) = links_of(&plan, &logs, &latest);
    println!("\n{}", summary::text(&figures, &classes));
    println!("{}", summary::links(links.as_ref()));
    println!("{}", summary::punches(punches.as_ref()));
    let misses = args.floors.misses(&figures, &classes);
    if let Some(path) = &args.json {
        let report = NatReport {
            config: args,
            stream,
            topology: &plan,
            viewers: figures,
            classes,
            links,
            punches,
            samples,
            floor_misses: misses.clone(),
        };
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("written to {}", path.display());
    }
    drop(viewers);
    drop(infra);
    drop(namespaces);
    if !misses.is_empty() {
        bail!("below the floors:\n  {}", misses.join("\n  "));
    }
    Ok(())
}

async fn start_tracker(
    plan: &Plan,
    bins: &Binaries,
    logs: &std::path::Path,
    url: &str,
) -> anyhow::Result<Role> {
    let host = plan.tracker();
    let listen = format!("{}:{TRACKER_PORT}", host.ip);
    let mut role = roles::start(
        &host.name,
        &host.ns,
        &bins.tracker,
        &["--listen".into(), listen],
        logs,
        false,
    )?;
    // The seeder announces at once; make sure someone is listening.
    let probe = format!("{url}/v1/streams");
    for _ in 0..50 {
        if roles::get_in(bins, &host.ns, &probe, Duration::from_secs(3))
            .await
            .is_some()
        {
            return Ok(role);
        }
        roles::check_alive(&mut role)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bail!("the tracker did not answer at {probe} (see its log)")
}

fn start_seeder(
    plan: &Plan,
    bins: &Binaries,
    logs: &std::path::Path,
    tracker_url: &str,
    mode: ListenMode,
) -> anyhow::Result<Role> {
    let host = plan.seeder();
    let mut args = vec![
        "--tracker".into(),
        tracker_url.into(),
        "--name".into(),
        "nat-lab".into(),
        "--input".into(),
        "clip".into(),
        "--http".into(),
        format!("{}:{SEEDER_HTTP_PORT}", host.ip),
    ];
    args.extend(listen_args(host, mode));
    roles::start(&host.name, &host.ns, &bins.seeder, &args, logs, true)
}

fn node_args(host: &Host, tracker_url: &str, stream: &str, args: &NatArgs) -> Vec<String> {
    let mut out = vec![
        "--tracker".into(),
        tracker_url.into(),
        "--stream".into(),
        stream.into(),
        "--player".into(),
        PLAYER.into(),
        "--max-degree".into(),
        args.max_degree.to_string(),
    ];
    if let (true, Some(bps)) = (args.tell_upload, args.upload.0) {
        out.push("--upload-limit".into());
        out.push(format!("{}kbps", bps / 1000));
    }
    out.extend(listen_args(host, args.listen));
    out
}

fn listen_args(host: &Host, mode: ListenMode) -> Vec<String> {
    let ip = match mode {
        ListenMode::Own => host.ip.to_string(),
        ListenMode::Any => "0.0.0.0".into(),
        ListenMode::Default => return Vec::new(),
    };
    vec![
        "--listen".into(),
        format!("/ip4/{ip}/tcp/{MESH_PORT}"),
        "--listen".into(),
        format!("/ip4/{ip}/udp/{MESH_PORT}/quic-v1"),
    ]
}

fn viewer_id(h: &Host) -> ViewerId {
    ViewerId {
        name: h.name.clone(),
        class: h.class.unwrap_or(plan::Class::Public),
        ip: h.ip.to_string(),
        public_ip: h.public_ip.to_string(),
    }
}

/// Reads every viewer's /stats at once; a viewer that does not answer
/// keeps its previous reading.
async fn read_all(bins: &Binaries, plan: &Plan, latest: &mut [Option<Reading>]) {
    let url = format!("http://{PLAYER}/stats");
    let reads = plan
        .viewers()
        .iter()
        .map(|h| roles::get_in(bins, &h.ns, &url, Duration::from_secs(4)));
    let bodies = futures::future::join_all(reads).await;
    for (slot, body) in latest.iter_mut().zip(bodies) {
        if let Some(r) = body.and_then(|b| Reading::parse(&b).ok()) {
            *slot = Some(r);
        }
    }
}

/// Per class pair, absent while the nodes do not report it.
type ByClassPair<T> = Option<BTreeMap<String, T>>;

/// Links and hole punches between viewers by class pair, with each
/// viewer's peer id read from its log.
fn links_of(
    plan: &Plan,
    logs: &std::path::Path,
    latest: &[Option<Reading>],
) -> (ByClassPair<Connections>, ByClassPair<links::Punches>) {
    let viewers: Vec<_> = plan
        .viewers()
        .iter()
        .zip(latest)
        .map(|(h, r)| {
            let log = std::fs::read_to_string(logs.join(format!("{}.log", h.name)));
            let id = log.ok().and_then(|l| links::peer_id_in_log(&l));
            (viewer_id(h).class, id, r.as_ref())
        })
        .collect();
    (
        links::by_class_pair(&viewers),
        links::punches_by_class_pair(&viewers),
    )
}

fn figures_of(ids: &[ViewerId], latest: &[Option<Reading>]) -> Vec<ViewerFigures> {
    ids.iter()
        .zip(latest)
        .map(|(id, r)| ViewerFigures::new(id, r.as_ref()))
        .collect()
}
