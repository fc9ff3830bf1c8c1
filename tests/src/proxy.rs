//! The real `gatehouse-proxy` binary as a child process.
//!
//! The binary is `$GATEHOUSE_PROXY_BIN` when set, else `<target>/<profile>/gatehouse-proxy`
//! next to this test executable (which lives in `<target>/<profile>/deps`). When it is
//! missing it is built once per test process with `$CARGO build`. Note that an existing
//! binary is used as it is: build it first (`cargo build -p gatehouse-proxy`) so the
//! tests do not run a stale one.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Deserialize;

use crate::{wait_until, TempDir, STEP_TIMEOUT};

/// How long the proxy may take to answer `/healthz` after it is spawned.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What Pingora logs when a listener's address is in use (it retries the bind).
const PORT_TAKEN: &str = " is in use, will try again";

/// The admin endpoint's `/healthz` body.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Health {
    pub status: String,
    pub config_version: u64,
}

/// A running proxy; killed on drop, its log printed (libtest shows it on failure).
pub struct Proxy {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
    log_path: PathBuf,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Proxy {
    /// Spawns the proxy on free loopback ports with `config` and waits until `/healthz`
    /// answers 200 and the client listener accepts connections.
    pub async fn start(config: &Path) -> anyhow::Result<Proxy> {
        Self::start_with_env(config, &[]).await
    }

    /// [`start`](Self::start) with extra environment variables for the proxy (e.g. a
    /// short `GATEHOUSE_SSE_KEEPALIVE_MS`).
    pub async fn start_with_env(config: &Path, env: &[(&str, &str)]) -> anyhow::Result<Proxy> {
        Self::start_binary(&proxy_binary()?, config, env).await
    }

    /// [`start_with_env`](Self::start_with_env) of the binary `bin` (a benchmark's
    /// release build).
    pub async fn start_binary(
        bin: &Path,
        config: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proxy> {
        let bin = bin.to_path_buf();
        let mut last_error = None;
        // A port picked by binding :0 can be taken by someone else before the proxy
        // binds it; that (and only that) is worth another try.
        for _ in 0..3 {
            match Self::spawn(&bin, config, env).await {
                Ok(proxy) => return Ok(proxy),
                Err(SpawnError::PortTaken(e)) => last_error = Some(e),
                Err(SpawnError::Other(e)) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("proxy did not start")))
    }

    /// Spawns the proxy with `config`, its clients' listener on `listen`, and returns
    /// at once: it may not answer yet. For tests of how it starts.
    pub fn launch_on(config: &Path, listen: SocketAddr) -> anyhow::Result<Proxy> {
        Self::launch(&proxy_binary()?, config, listen, &[])
    }

    fn launch(
        bin: &Path,
        config: &Path,
        listen: SocketAddr,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Proxy> {
        let dir = TempDir::new("proxy")?;
        let log_path = dir.path().join("proxy.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| anyhow::anyhow!("cannot create log: {e}"))?;
        let log_err = log.try_clone()?;
        let admin = free_port()?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--admin-listen")
            .arg(admin.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
        Ok(Proxy {
            child,
            addr: listen,
            admin,
            log_path,
            http: reqwest::Client::new(),
            _dir: dir,
        })
    }

    async fn spawn(bin: &Path, config: &Path, env: &[(&str, &str)]) -> Result<Proxy, SpawnError> {
        let listen = free_port().map_err(SpawnError::Other)?;
        let mut proxy = Self::launch(bin, config, listen, env).map_err(SpawnError::Other)?;
        match proxy.wait_ready().await {
            Ok(()) => Ok(proxy),
            Err(e) => {
                let log = proxy.log();
                let text = format!("{e}\n--- proxy log:\n{log}");
                if log.contains(PORT_TAKEN) || log.contains("Address already in use") {
                    Err(SpawnError::PortTaken(anyhow::anyhow!(text)))
                } else {
                    Err(SpawnError::Other(anyhow::anyhow!(text)))
                }
            }
        }
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("gatehouse-proxy exited before it was ready: {status}");
            }
            // Pingora would retry for 30 s; a port taken since we picked it is better
            // given up at once for another.
            if self.log().contains(PORT_TAKEN) {
                anyhow::bail!("gatehouse-proxy found a port in use");
            }
            // 200 only once the client listener accepts too.
            if let Ok(response) = self.http.get(self.admin_url("/healthz")).send().await {
                if response.status() == 200 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!(
                    "gatehouse-proxy: /healthz did not answer 200 within {READY_TIMEOUT:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The workspace endpoint, `http://127.0.0.1:PORT/ws/<slug>`.
    pub fn ws_url(&self, slug: &str) -> String {
        self.url(&format!("/ws/{slug}"))
    }

    /// `http://127.0.0.1:ADMIN_PORT` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// `GET /healthz` on the admin port, which must answer 200.
    pub async fn health(&self) -> anyhow::Result<Health> {
        let (status, health) = self.health_status().await?;
        anyhow::ensure!(status == 200, "/healthz answered {status}: {health:?}");
        Ok(health)
    }

    /// `GET /healthz` on the admin port: status and body, whatever the status.
    pub async fn health_status(&self) -> anyhow::Result<(u16, Health)> {
        let response = self.http.get(self.admin_url("/healthz")).send().await?;
        Ok((response.status().as_u16(), response.json().await?))
    }

    /// Waits until `/healthz` reports `config_version >= version`.
    pub async fn wait_for_config_version(&self, version: u64) -> anyhow::Result<()> {
        wait_until(
            &format!("the proxy reports config_version {version}"),
            STEP_TIMEOUT,
            || async {
                self.health()
                    .await
                    .is_ok_and(|h| h.config_version >= version)
            },
        )
        .await
    }

    /// `GET /metrics` on the admin port: status and body.
    pub async fn metrics(&self) -> anyhow::Result<(u16, String)> {
        let response = self.http.get(self.admin_url("/metrics")).send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// Waits up to `limit` for the process to exit on its own; its exit status.
    pub async fn exit_within(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "gatehouse-proxy still runs after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the proxy process holds right now, read from `/proc` (Linux only).
    pub fn usage(&self) -> anyhow::Result<ProcessUsage> {
        ProcessUsage::of(self.child.id())
    }

    /// What the proxy wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Shown only when the test fails (libtest captures it otherwise).
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = &lines[lines.len().saturating_sub(200)..];
        eprintln!(
            "--- gatehouse-proxy on {} (admin {}) log, last {} line(s):\n{}",
            self.addr,
            self.admin,
            tail.len(),
            tail.join("\n")
        );
    }
}

/// A process's resident memory and open file descriptors at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessUsage {
    /// `VmRSS` of `/proc/<pid>/status`, in KiB.
    pub rss_kib: u64,
    /// Entries of `/proc/<pid>/fd`.
    pub open_fds: usize,
}

impl ProcessUsage {
    pub fn of(pid: u32) -> anyhow::Result<ProcessUsage> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| anyhow::anyhow!("cannot read /proc/{pid}/status: {e}"))?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
        let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map_err(|e| anyhow::anyhow!("cannot list /proc/{pid}/fd: {e}"))?
            .count();
        Ok(ProcessUsage { rss_kib, open_fds })
    }
}

enum SpawnError {
    PortTaken(anyhow::Error),
    Other(anyhow::Error),
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Where the proxy binary is, building it once if it is missing.
pub fn proxy_binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build("GATEHOUSE_PROXY_BIN", "gatehouse-proxy", "gatehouse-proxy"))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

/// A workspace binary: `$env` if set, else next to the test executable, built once
/// with cargo if it is missing.
pub(crate) fn find_or_build(env: &str, package: &str, name: &str) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os(env) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("{env}={} is not a file", path.display()))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // <target>/<profile>/deps/<test-exe>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let bin = profile_dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        return Ok(bin);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command.args(["build", "-p", package, "--bin", name]);
    if profile_dir.file_name().is_some_and(|p| p == "release") {
        command.arg("--release");
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run {cargo:?} build: {e}"))?;
    if !status.success() {
        return Err(format!("building {name} failed: {status}"));
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!("built {name} but {} does not exist", bin.display()))
    }
}
