//! A throwaway PostgreSQL server for the tests that run the store on PostgreSQL: one
//! cluster per test process, one database per control plane.
//!
//! The cluster is Debian's `postgresql` package (`/usr/lib/postgresql/*/bin`, else
//! `initdb` on `PATH`), created with `initdb` in a temporary directory and run as
//! `postgres` on 127.0.0.1 and a free port, its unix socket in that directory too,
//! so no system service is involved. PostgreSQL refuses to run as root: as root
//! (CI), both run as `nobody` through `setpriv`. The server gets the parent-death
//! signal, so it ends with the test process; the directories of ended test
//! processes are removed when the next cluster starts.
//!
//! PostgreSQL is a hard prerequisite of these tests (`scripts/prereqs.sh --tests`
//! installs it): when it is missing, [`cluster`] fails, and so does the test.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::config::random_base62;

/// How long `initdb` plus the server's start may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The user every database belongs to (trust authentication on loopback).
pub const USER: &str = "gatehouse";

/// The running throwaway cluster.
pub struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    durable: bool,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DURABLE: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster of this test process, started on first use.
pub fn cluster() -> anyhow::Result<&'static Cluster> {
    CLUSTER
        .get_or_init(|| Cluster::start(false).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("no PostgreSQL for the tests: {e}"))
}

/// A second cluster with PostgreSQL's default durability (every commit flushed, as
/// a deployment runs it), for measurements; [`cluster`] trades that for speed.
pub fn durable_cluster() -> anyhow::Result<&'static Cluster> {
    DURABLE
        .get_or_init(|| Cluster::start(true).map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("no durable PostgreSQL: {e}"))
}

/// A cluster of its own, not shared with the process's other tests, for a test that
/// restarts it ([`Cluster::restart`]). It lives until the process ends.
pub fn own_cluster() -> anyhow::Result<&'static Cluster> {
    Ok(Box::leak(Box::new(Cluster::start(false)?)))
}

impl Cluster {
    fn start(durable: bool) -> anyhow::Result<Cluster> {
        let bin = bin_dir()?;
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-pg-{}-{}",
            std::process::id(),
            random_base62(8)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        let user = RunAs::for_this_process(&dir)?;
        let data = dir.join("data");
        let mut initdb = user.command(&bin.join("initdb"));
        // `setpriv` when run as root: a missing one is named, not initdb.
        let program = initdb.get_program().to_string_lossy().into_owned();
        let initdb = initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", USER, "--auth=trust", "-E", "UTF8", "--no-locale"])
            .arg("--no-sync")
            .current_dir(&dir)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run {program} for initdb: {e}"))?;
        anyhow::ensure!(
            initdb.status.success(),
            "initdb failed ({}): {}{}",
            initdb.status,
            String::from_utf8_lossy(&initdb.stdout),
            String::from_utf8_lossy(&initdb.stderr)
        );
        // A port found free may be taken before the server binds it: retry that.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = crate::control_plane::free_addr()?.port();
            let cluster = Cluster {
                bin: bin.clone(),
                dir: dir.clone(),
                port,
                durable,
            };
            match cluster.run_server(&user) {
                Ok(()) => return Ok(cluster),
                Err(e) if attempt < 3 && cluster.log().contains("could not bind") => {
                    tracing::warn!(port, "PostgreSQL could not bind, retrying: {e:#}");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Starts `postgres` from a thread that lives as long as the process and waits
    /// for it: the parent-death signal is sent when the spawning thread ends.
    fn run_server(&self, user: &RunAs) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("postgres.log"))?;
        let mut command = user.command_dying_with_parent(&self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            // Room for many control planes.
            .args(["-c", "max_connections=400"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        if !self.durable {
            // Throwaway data: no durability.
            command
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"]);
        }
        let program = command.get_program().to_string_lossy().into_owned();
        let exited = Arc::new(AtomicBool::new(false));
        let (started, spawned) = std::sync::mpsc::channel();
        let flag = exited.clone();
        std::thread::Builder::new()
            .name("postgres".into())
            .spawn(move || match command.spawn() {
                Ok(mut child) => {
                    let _ = started.send(Ok(()));
                    let _ = child.wait();
                    flag.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    let _ = started.send(Err(e));
                }
            })?;
        spawned
            .recv()?
            .map_err(|e| anyhow::anyhow!("cannot run {program} for postgres: {e}"))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.psql("postgres", "SELECT 1").is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                !exited.load(Ordering::SeqCst),
                "postgres exited at start:\n{}",
                self.log()
            );
            anyhow::ensure!(
                Instant::now() < deadline,
                "postgres did not accept connections within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server (fast shutdown: every session is cut) and starts it again on
    /// the same port and data, as a database restart looks to its clients.
    pub fn restart(&self) -> anyhow::Result<()> {
        let user = RunAs::for_this_process(&self.dir)?;
        let stopped = user
            .command(&self.bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w"])
            .current_dir(&self.dir)
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run pg_ctl stop: {e}"))?;
        anyhow::ensure!(
            stopped.status.success(),
            "pg_ctl stop failed ({}): {}",
            stopped.status,
            String::from_utf8_lossy(&stopped.stderr)
        );
        self.run_server(&user)
    }

    /// A new, empty database; returns its URL.
    pub fn create_database(&self) -> anyhow::Result<String> {
        let name = format!("gh_{}", random_base62(12).to_lowercase());
        self.psql("postgres", &format!("CREATE DATABASE {name}"))?;
        Ok(self.url(&name))
    }

    /// `postgres://gatehouse@127.0.0.1:PORT/name`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    /// The database name of one of [`url`](Self::url)'s URLs.
    pub fn database_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or_default()
    }

    /// Runs `sql` in `database` with `psql`; returns its unaligned output.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args([
                "-d",
                database,
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow::anyhow!("cannot run psql: {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "psql {sql:?} in {database} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The directories that hold `database`'s rows on disk: its own directory and the
    /// write-ahead log (where a committed row is before any checkpoint).
    pub fn files_of(&self, database: &str) -> anyhow::Result<Vec<PathBuf>> {
        let oid = self.psql(
            "postgres",
            &format!("SELECT oid FROM pg_database WHERE datname = '{database}'"),
        )?;
        anyhow::ensure!(!oid.is_empty(), "no database {database}");
        let data = self.dir.join("data");
        Ok(vec![data.join("base").join(oid), data.join("pg_wal")])
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.dir.join("postgres.log")) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }
}

/// Where the PostgreSQL binaries are: Debian's newest `/usr/lib/postgresql/N/bin`,
/// else the directory of `initdb` on `PATH`.
fn bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on PATH): \
                 run scripts/prereqs.sh --tests, which installs Debian's postgresql package"
            )
        })
}

/// Removes the cluster directories of test processes that have ended.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("gatehouse-pg-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next() else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Who runs `initdb` and `postgres`: this process's user, or `nobody` when that is
/// root (which PostgreSQL refuses).
enum RunAs {
    Me,
    Nobody { uid: u32, gid: u32 },
}

impl RunAs {
    /// As root, hands `dir` to `nobody`, who then runs everything in it.
    fn for_this_process(dir: &Path) -> anyhow::Result<RunAs> {
        let me = std::fs::metadata("/proc/self")?.uid();
        if me != 0 {
            return Ok(RunAs::Me);
        }
        let id = |flag: &str| -> anyhow::Result<u32> {
            let out = Command::new("id").args([flag, "nobody"]).output()?;
            anyhow::ensure!(out.status.success(), "no user nobody to run PostgreSQL as");
            Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
        };
        let (uid, gid) = (id("-u")?, id("-g")?);
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| anyhow::anyhow!("cannot give {} to nobody: {e}", dir.display()))?;
        Ok(RunAs::Nobody { uid, gid })
    }

    fn command(&self, program: &Path) -> Command {
        self.wrapped(program, &[])
    }

    /// A command that is sent SIGQUIT (PostgreSQL's immediate shutdown) when the
    /// thread that spawned it ends.
    fn command_dying_with_parent(&self, program: &Path) -> Command {
        self.wrapped(program, &["--pdeathsig", "QUIT"])
    }

    fn wrapped(&self, program: &Path, setpriv_args: &[&str]) -> Command {
        let (uid, gid) = match self {
            RunAs::Me if setpriv_args.is_empty() => return Command::new(program),
            RunAs::Me => (None, None),
            RunAs::Nobody { uid, gid } => (Some(*uid), Some(*gid)),
        };
        let mut command = Command::new("setpriv");
        if let (Some(uid), Some(gid)) = (uid, gid) {
            command
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups");
        }
        command.args(setpriv_args).arg(program);
        command
    }
}
