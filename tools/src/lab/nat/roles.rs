//! Starting the real binaries inside the lab's namespaces, as a user
//! would start them on each machine, and asking a node for its `/stats`
//! from inside its namespace.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{bail, Context};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The role binaries, found beside `shoal-lab` (one `cargo build` makes
/// them all).
#[derive(Clone, Debug)]
pub struct Binaries {
    pub tracker: PathBuf,
    pub seeder: PathBuf,
    pub node: PathBuf,
    /// `shoal-lab` itself, for `nat-get` inside a namespace.
    pub lab: PathBuf,
}

impl Binaries {
    pub fn beside_this_exe() -> anyhow::Result<Binaries> {
        let lab = std::env::current_exe().context("cannot find the shoal-lab executable")?;
        let dir = lab.parent().context("shoal-lab has no directory")?;
        let find = |name: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            if !p.is_file() {
                bail!(
                    "{} not found beside shoal-lab: build every binary first \
                     (cargo build --release --bins)",
                    p.display()
                );
            }
            Ok(p)
        };
        Ok(Binaries {
            tracker: find("shoal-tracker")?,
            seeder: find("shoal-seeder")?,
            node: find("shoal-node")?,
            lab,
        })
    }
}

/// A role running in a namespace, its stderr going to a log file.
/// Dropping it kills the process; the namespace teardown kills it too.
#[derive(Debug)]
pub struct Role {
    pub name: String,
    pub child: Child,
}

/// Starts `bin args` inside `ns` (`ip netns exec` execs it, so the child
/// is the role itself). Stdout is piped when `read_stdout`.
pub fn start(
    name: &str,
    ns: &str,
    bin: &Path,
    args: &[String],
    logs: &Path,
    read_stdout: bool,
) -> anyhow::Result<Role> {
    let log = std::fs::File::create(logs.join(format!("{name}.log")))
        .with_context(|| format!("cannot create the log of {name} in {}", logs.display()))?;
    let stdout = if read_stdout {
        Stdio::piped()
    } else {
        Stdio::from(log.try_clone()?)
    };
    let child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name} in {ns}"))?;
    Ok(Role {
        name: name.to_string(),
        child,
    })
}

/// Waits (up to `within`) for the seeder's `stream: <ID>` line, then
/// keeps draining its stdout so it never blocks on a full pipe.
pub async fn stream_id(seeder: &mut Role, within: Duration) -> anyhow::Result<String> {
    let stdout = seeder
        .child
        .stdout
        .take()
        .context("the seeder's stdout is not piped")?;
    let mut lines = BufReader::new(stdout).lines();
    let found = tokio::time::timeout(within, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(id) = line.strip_prefix("stream: ") {
                return Ok::<_, std::io::Error>(Some(id.trim().to_string()));
            }
        }
        Ok(None)
    })
    .await;
    let id = match found {
        Ok(Ok(Some(id))) => id,
        Ok(Ok(None)) => bail!("the seeder exited before printing its stream (see its log)"),
        Ok(Err(e)) => bail!("reading the seeder's output: {e}"),
        Err(_) => bail!("the seeder printed no stream within {within:?} (see its log)"),
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(id)
}

/// Fails if a role has exited (a crashed tracker or seeder makes every
/// later figure meaningless).
pub fn check_alive(role: &mut Role) -> anyhow::Result<()> {
    if let Some(status) = role.child.try_wait()? {
        bail!("{} exited early ({status}); see its log", role.name);
    }
    Ok(())
}

/// GETs `url` from inside `ns` by running `shoal-lab nat-get` there;
/// `None` on any failure (the node may still be starting).
pub async fn get_in(bins: &Binaries, ns: &str, url: &str, within: Duration) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&bins.lab)
        .args(["nat-get", url])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(within, out).await.ok()?.ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `shoal-lab nat-get URL`: prints the body of a plain HTTP GET.
pub async fn nat_get(url: &str) -> anyhow::Result<()> {
    // No proxy: the URL is inside the lab's own namespaces, which a
    // proxy from the environment could never reach.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()?;
    let body = client
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    print!("{body}");
    Ok(())
}
