//! `shoal-lab run --processes K`: viewer slots in K − 1 worker processes.
//!
//! The run's main process ([`super::run`]) keeps the tracker, the seeder,
//! the restarts and the slots `slot % K == 0`; worker `i` (1..K) runs the
//! slots `slot % K == i` (`shoal-lab worker`, hidden). Both sides of the
//! conversation are here:
//!
//! - **stdin, main → worker**: one line of [`WorkerSpec`] JSON, then `go`
//!   (start the clock: joins and churn are timed from it), then `stop`.
//!   Everything else a worker needs is derived from the scenario: the
//!   topology, upload caps, keys ([`slot_key`](super::population::slot_key))
//!   and a [`full_book`] of every process's peer ids. End of input before `stop`
//!   means the main process went away: the worker exits at once.
//! - **stdout, worker → main**: one JSON line per message, at most
//!   [`MAX_LINE`] bytes: `{"type": "ready"}` once set up, then a
//!   [`Report`] per second (a moment before the main process samples, with
//!   the churn step) and a last one (`"done": true`) after `stop`.
//!   Logs go to stderr, which workers share with the main process.
//!
//! The main process reads each worker's lines as they come and keeps its
//! latest report; a worker that exits, closes its output or sends a bad line
//! before its last report fails the run, and so does one that does not end
//! within [`STOP_TIMEOUT`] of `stop` (it is killed). Workers are killed if
//! the run fails or is dropped.

use std::{
    process::Stdio,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use shoal_mesh::proto::{Stats, StreamId};
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin, Command},
    task::JoinHandle,
};

use super::{
    population::{full_book, known_gens, Book, NodeSnap, Population},
    scenario::Scenario,
    system::System,
    topology::Topology,
    usage,
};

/// Longest line either side accepts, newline included.
pub const MAX_LINE: usize = 4 << 20;

/// How long workers get to set up (derive the book, start their runtime).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long workers get to send their last report and exit after `stop`.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A worker's churn steps and reports come this long before the main
/// process's samples (at whole seconds), so that each sample sees the
/// workers as of a moment ago rather than of a second ago.
const REPORT_LEAD_S: f64 = 0.25;

/// What a worker is told: the first line of its stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WorkerSpec {
    pub(crate) scenario: Scenario,
    /// A system that runs Shoal's engine: the others' viewers share state
    /// with the infra side, in the main process.
    pub(crate) system: System,
    /// This worker's index, 1..processes (0 is the main process).
    pub(crate) index: usize,
    pub(crate) processes: usize,
    pub(crate) tracker_url: String,
    pub(crate) stream: String,
}

/// A line of a worker's stdout.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
enum Line {
    Ready,
    Report(Report),
}

/// A worker's state once a second, and at the end.
#[derive(Debug, Serialize, Deserialize)]
struct Report {
    /// Seconds since `go`.
    t: f64,
    /// Its viewers present now, by slot.
    nodes: Vec<NodeSnap>,
    /// Its viewers that left since the previous report, with their final
    /// figures (each is reported once).
    departed: Vec<NodeSnap>,
    /// The worker process's CPU seconds and peak resident memory so far.
    cpu_s: f64,
    peak_rss_bytes: u64,
    /// The last report, sent after `stop`.
    done: bool,
}

// ---------------------------------------------------------------------------
// The worker's side.

/// `shoal-lab worker`: runs a share of a run's viewers, as told on stdin,
/// until `stop` or the end of stdin. The caller should exit the process
/// straight after (tokio's stdin reader would hold up a runtime shutdown).
pub async fn main() -> anyhow::Result<()> {
    let mut input = BufReader::new(tokio::io::stdin());
    let spec = read_line(&mut input)
        .await?
        .context("no spec on stdin (this is run by `shoal-lab run --processes`)")?;
    let spec: WorkerSpec = serde_json::from_slice(&spec).context("bad worker spec")?;
    let system = spec.system;
    if !system.runs_shoal_engine() {
        bail!("{system} viewers cannot run in a worker");
    }
    let sc = spec.scenario;
    sc.validate_lab()?;
    let stream: StreamId = spec
        .stream
        .parse()
        .map_err(|_| anyhow!("bad stream id '{}'", spec.stream))?;
    let topo = Arc::new(Topology::new(&sc.topology, sc.nodes + 1, sc.seed)?);
    let mut pop = Population::new(
        system,
        &sc,
        topo,
        full_book(&sc),
        &spec.tracker_url,
        vec![stream],
        spec.index,
        spec.processes,
    );
    let mut out = tokio::io::stdout();
    write_line(&mut out, &Line::Ready).await?;
    match read_line(&mut input).await? {
        Some(l) if l == b"go" => {}
        Some(l) => bail!("expected 'go', got '{}'", String::from_utf8_lossy(&l)),
        None => bail!("the main process went away"),
    }
    let start = Instant::now();
    // Resolves on `stop`; fails when stdin ends first (the main process is
    // gone, whatever the reason).
    let (stop_tx, mut stop) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        while let Ok(Some(l)) = read_line(&mut input).await {
            if l == b"stop" {
                let _ = stop_tx.send(());
                return;
            }
        }
    });

    let mut reported = 0; // departures already reported
    let mut next_report = 1.0 - REPORT_LEAD_S;
    loop {
        let t = start.elapsed().as_secs_f64();
        pop.join_due(t, &[]).await?;
        if t >= next_report {
            next_report += 1.0;
            pop.churn(t, &[]).await?;
            write_line(
                &mut out,
                &Line::Report(report(&pop, &mut reported, t, false)),
            )
            .await?;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            r = &mut stop => match r {
                Ok(()) => break,
                Err(_) => bail!("the main process went away"),
            },
        }
    }
    let t = start.elapsed().as_secs_f64();
    write_line(
        &mut out,
        &Line::Report(report(&pop, &mut reported, t, true)),
    )
    .await
}

fn report(pop: &Population, reported: &mut usize, t: f64, done: bool) -> Report {
    let departed = pop.departed[*reported..].to_vec();
    *reported = pop.departed.len();
    Report {
        t,
        nodes: pop.snapshots(),
        departed,
        cpu_s: usage::cpu_seconds(),
        peak_rss_bytes: usage::peak_rss_bytes(),
        done,
    }
}

// ---------------------------------------------------------------------------
// The main process's side.

/// What the workers measured, once they have ended.
#[derive(Debug, Default)]
pub(crate) struct Finished {
    /// Viewers present at the end.
    pub(crate) present: Vec<NodeSnap>,
    /// Viewers that left during the run.
    pub(crate) departed: Vec<NodeSnap>,
    /// Sums over the workers.
    pub(crate) cpu_s: f64,
    pub(crate) peak_rss_bytes: u64,
}

/// The main process's view of its workers (none when K = 1).
#[derive(Debug)]
pub(crate) struct Workers {
    list: Vec<Remote>,
}

#[derive(Debug)]
struct Remote {
    index: usize,
    child: Child,
    /// Closed after `stop` (or when dropped: the worker then exits).
    stdin: Option<ChildStdin>,
    latest: Arc<Mutex<Latest>>,
    /// Reads the worker's stdout into `latest`; ends at its end.
    reader: Option<JoinHandle<anyhow::Result<()>>>,
}

/// What a worker has reported so far.
#[derive(Debug, Default)]
struct Latest {
    ready: bool,
    /// Its latest report, `departed` moved out into the fields below.
    report: Option<Report>,
    departed: Vec<NodeSnap>,
    /// `departed`'s stats merged, for sampling.
    departed_stats: Stats,
}

impl Workers {
    /// Starts workers 1..processes of `spec` (its `index` is set for each)
    /// and waits until each has set up.
    pub(crate) async fn spawn(spec: &WorkerSpec, book: &Book) -> anyhow::Result<Workers> {
        let mut workers = Workers { list: Vec::new() };
        if spec.processes <= 1 {
            return Ok(workers);
        }
        let exe = std::env::current_exe().context("cannot find the shoal-lab executable")?;
        for index in 1..spec.processes {
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("cannot start worker {index}"))?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let spec = WorkerSpec {
                index,
                ..spec.clone()
            };
            let mut line = serde_json::to_vec(&spec)?;
            line.push(b'\n');
            stdin
                .write_all(&line)
                .await
                .with_context(|| format!("cannot talk to worker {index}"))?;
            let latest = Arc::new(Mutex::new(Latest::default()));
            let reader = tokio::spawn(read_reports(
                BufReader::new(stdout),
                latest.clone(),
                book.clone(),
                known_gens(&spec.scenario),
            ));
            workers.list.push(Remote {
                index,
                child,
                stdin: Some(stdin),
                latest,
                reader: Some(reader),
            });
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !workers.list.iter().all(|r| r.lock().ready) {
            workers.check().await?;
            if Instant::now() > deadline {
                bail!("workers not ready within {} s", READY_TIMEOUT.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(workers)
    }

    /// Starts the workers' clocks.
    pub(crate) async fn go(&mut self) -> anyhow::Result<()> {
        for r in &mut self.list {
            let stdin = r.stdin.as_mut().context("worker stdin closed")?;
            stdin
                .write_all(b"go\n")
                .await
                .with_context(|| format!("cannot talk to worker {}", r.index))?;
        }
        Ok(())
    }

    /// Fails if a worker has exited, closed its output or sent a bad line.
    pub(crate) async fn check(&mut self) -> anyhow::Result<()> {
        for r in &mut self.list {
            let exited = r.child.try_wait()?.is_some();
            if exited || r.reader.as_ref().is_some_and(JoinHandle::is_finished) {
                return Err(r.failure().await);
            }
        }
        Ok(())
    }

    /// Adds the workers' viewers as of their latest reports: the stats of
    /// those present to `live`, those of every departed one to `departed`.
    pub(crate) fn add_to_sample(&self, live: &mut Vec<Stats>, departed: &mut Stats) {
        for r in &self.list {
            let latest = r.lock();
            if let Some(report) = &latest.report {
                live.extend(report.nodes.iter().map(|n| n.stats.clone()));
            }
            departed.merge(&latest.departed_stats);
        }
    }

    /// Asks every worker for its last report: `stop`, then end of input.
    pub(crate) async fn stop(&mut self) {
        for r in &mut self.list {
            if let Some(mut stdin) = r.stdin.take() {
                // A worker that is gone shows in `finish`.
                let _ = stdin.write_all(b"stop\n").await;
            }
        }
    }

    /// Waits for every worker to end (after [`Workers::stop`]) and returns
    /// what they measured. A worker that does not end in time is killed;
    /// any that has not ended when this returns is killed as it is dropped.
    pub(crate) async fn finish(mut self) -> anyhow::Result<Finished> {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
        let mut fin = Finished::default();
        for r in &mut self.list {
            let status = match tokio::time::timeout_at(deadline, r.child.wait()).await {
                Ok(status) => status?,
                Err(_) => {
                    let _ = r.child.kill().await;
                    bail!(
                        "worker {} did not end within {} s of 'stop'; killed it",
                        r.index,
                        STOP_TIMEOUT.as_secs()
                    );
                }
            };
            // Its output ends with it.
            let reader = r.reader.take().expect("read until now");
            match tokio::time::timeout_at(deadline, reader).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e.context(format!("worker {}", r.index))),
                Ok(Err(e)) => bail!("worker {}: reader: {e}", r.index),
                Err(_) => bail!("worker {}: its output did not end", r.index),
            }
            if !status.success() {
                bail!(
                    "worker {} failed ({status}); see its messages above",
                    r.index
                );
            }
            let mut latest = r.lock();
            let Some(report) = latest.report.take().filter(|r| r.done) else {
                bail!("worker {} ended without its last report", r.index);
            };
            fin.present.extend(report.nodes);
            fin.departed.append(&mut latest.departed);
            fin.cpu_s += report.cpu_s;
            fin.peak_rss_bytes += report.peak_rss_bytes;
        }
        Ok(fin)
    }
}

impl Remote {
    fn lock(&self) -> std::sync::MutexGuard<'_, Latest> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Why a worker stopped early: its reader's error, else its exit.
    async fn failure(&mut self) -> anyhow::Error {
        if let Some(reader) = self.reader.take() {
            match tokio::time::timeout(Duration::from_secs(2), reader).await {
                Ok(Ok(Err(e))) => return e.context(format!("worker {}", self.index)),
                Ok(Err(e)) => return anyhow!("worker {}: reader: {e}", self.index),
                Ok(Ok(Ok(()))) | Err(_) => {}
            }
        }
        match tokio::time::timeout(Duration::from_secs(2), self.child.wait()).await {
            Ok(Ok(status)) => anyhow!(
                "worker {} exited early ({status}); see its messages above",
                self.index
            ),
            _ => anyhow!("worker {} closed its output early", self.index),
        }
    }
}

/// Reads a worker's lines into `latest` until its output ends; adds the
/// peer ids of occupants beyond `known_gens` to this process's book.
async fn read_reports(
    mut input: impl AsyncBufRead + Unpin,
    latest: Arc<Mutex<Latest>>,
    book: Book,
    known_gens: u32,
) -> anyhow::Result<()> {
    while let Some(line) = read_line(&mut input).await? {
        let line: Line = serde_json::from_slice(&line).context("unreadable report")?;
        let mut report = match line {
            Line::Ready => {
                latest.lock().unwrap_or_else(PoisonError::into_inner).ready = true;
                continue;
            }
            Line::Report(r) => r,
        };
        let unknown: Vec<_> = report
            .nodes
            .iter()
            .chain(&report.departed)
            .filter(|n| n.gen > known_gens)
            .filter_map(|n| Some((n.peer_id.parse().ok()?, n.slot)))
            .collect();
        if !unknown.is_empty() {
            book.write()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(unknown);
        }
        let mut latest = latest.lock().unwrap_or_else(PoisonError::into_inner);
        for n in &report.departed {
            latest.departed_stats.merge(&n.stats);
        }
        latest.departed.append(&mut report.departed);
        latest.report = Some(report);
    }
    Ok(())
}

/// The next line without its newline, `None` at the end of input. Fails
/// on a line longer than [`MAX_LINE`] or cut short by the end of input.
async fn read_line(input: &mut (impl AsyncBufRead + Unpin)) -> anyhow::Result<Option<Vec<u8>>> {
    let mut buf = Vec::new();
    let n = input
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE {
        bail!("a line longer than {} MiB", MAX_LINE >> 20);
    }
    if buf.pop() != Some(b'\n') {
        bail!("a line cut short by the end of input");
    }
    Ok(Some(buf))
}

async fn write_line(out: &mut (impl AsyncWrite + Unpin), line: &Line) -> anyhow::Result<()> {
    let mut bytes = serde_json::to_vec(line)?;
    bytes.push(b'\n');
    if bytes.len() > MAX_LINE {
        bail!(
            "a report of {} bytes is over the {} MiB line limit: use more processes",
            bytes.len(),
            MAX_LINE >> 20
        );
    }
    out.write_all(&bytes).await?;
    out.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut input: &[u8] = b"go\nstop\n";
        assert_eq!(read_line(&mut input).await.unwrap().unwrap(), b"go");
        assert_eq!(read_line(&mut input).await.unwrap().unwrap(), b"stop");
        assert!(read_line(&mut input).await.unwrap().is_none());

        let mut cut: &[u8] = b"{\"type\":";
        assert!(read_line(&mut cut).await.is_err());

        let mut long = vec![b'x'; MAX_LINE];
        long.push(b'\n');
        assert!(read_line(&mut &long[..]).await.is_err());
        long.truncate(MAX_LINE - 1);
        long.push(b'\n');
        assert_eq!(
            read_line(&mut &long[..]).await.unwrap().unwrap().len(),
            MAX_LINE - 1
        );
    }

    #[tokio::test]
    async fn reports_merge_into_latest() {
        let snap = |slot, gen, left_at_s| NodeSnap {
            slot,
            gen,
            peer_id: super::super::population::slot_key(1, slot, gen)
                .public()
                .to_peer_id()
                .to_string(),
            joined_at_s: 0.0,
            left_at_s,
            stats: Stats {
                payload_from_peers: 10,
                ..Stats::default()
            },
            neighbors: vec![],
        };
        let lines = [
            Line::Ready,
            Line::Report(Report {
                t: 1.0,
                nodes: vec![snap(1, 0, None)],
                departed: vec![],
                cpu_s: 0.5,
                peak_rss_bytes: 1,
                done: false,
            }),
            Line::Report(Report {
                t: 2.0,
                nodes: vec![snap(1, 20, None)],
                departed: vec![snap(1, 0, Some(1.5))],
                cpu_s: 1.0,
                peak_rss_bytes: 2,
                done: true,
            }),
        ];
        let mut text = Vec::new();
        for l in &lines {
            write_line(&mut text, l).await.unwrap();
        }
        let latest = Arc::new(Mutex::new(Latest::default()));
        let book: Book = Default::default();
        read_reports(&text[..], latest.clone(), book.clone(), 8)
            .await
            .unwrap();
        let latest = latest.lock().unwrap();
        assert!(latest.ready);
        let report = latest.report.as_ref().unwrap();
        assert!(report.done && report.departed.is_empty());
        assert_eq!(report.nodes[0].gen, 20);
        assert_eq!(latest.departed.len(), 1);
        assert_eq!(latest.departed_stats.payload_from_peers, 10);
        // Only the occupant beyond the known ones is added to the book.
        assert_eq!(book.read().unwrap().len(), 1);
    }
}
