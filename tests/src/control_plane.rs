//! The control plane as real processes: `gatehouse serve` ([`ControlPlane`]), a
//! `gatehouse-proxy` that takes its config from it ([`GatewayProxy`]), and the
//! `gatehouse` CLI as a user runs it ([`Cli`]).
//!
//! Binaries are found next to the test executable (`<target>/<profile>/gatehouse`,
//! `<target>/<profile>/gatehouse-proxy`), or `$GATEHOUSE_BIN` / `$GATEHOUSE_PROXY_BIN`;
//! a missing one is built once with `$CARGO build`. An existing binary is used as it
//! is: build both first (`cargo build -p gatehouse-proxy -p gatehouse-control-plane
//! --bins`) so the tests do not run stale ones.
//!
//! Every child is killed on drop, and its log tail printed (libtest shows it only
//! when the test fails). Readiness is polled with deadlines, never slept for.

use std::fs::{File, OpenOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::config::random_base62;
use crate::proxy::{find_or_build, proxy_binary, Health};
use crate::{wait_until, TempDir, STEP_TIMEOUT};

/// How long a freshly spawned process may take to answer `/healthz`.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A loopback address nobody listens on right now (bound, then released).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// Where a gateway proxy listens: MCP clients on `listen`, `/healthz` and
/// `/metrics` on `admin`. Picked before the control plane starts, because the
/// control plane prints the gateway URL in every workspace it creates.
#[derive(Debug, Clone, Copy)]
pub struct GatewayPorts {
    pub listen: SocketAddr,
    pub admin: SocketAddr,
}

impl GatewayPorts {
    pub fn pick() -> anyhow::Result<Self> {
        // Both held while picking: released one by one, the kernel may hand the same
        // port out twice, and Pingora's listeners (SO_REUSEPORT) would then share it.
        let listen = TcpListener::bind("127.0.0.1:0")?;
        let admin = TcpListener::bind("127.0.0.1:0")?;
        Ok(GatewayPorts {
            listen: listen.local_addr()?,
            admin: admin.local_addr()?,
        })
    }

    /// `http://127.0.0.1:PORT`, what clients (and printed URLs) use.
    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.listen)
    }
}

/// A status and a body, as an HTTP client sees them.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_str(&self.body).map_err(|e| {
            anyhow::anyhow!("HTTP {} body is not JSON ({e}): {}", self.status, self.body)
        })
    }
}

/// The engine a control plane's store runs on in a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// The default: `gatehouse.db` in the data dir.
    Sqlite,
    /// A new database in this process's throwaway PostgreSQL cluster
    /// ([`crate::postgres`]).
    Postgres,
}

impl StoreBackend {
    /// A store for one control plane: `None` for the embedded default, else the URL
    /// of a new PostgreSQL database.
    pub fn new_database(self) -> anyhow::Result<Option<String>> {
        match self {
            StoreBackend::Sqlite => Ok(None),
            StoreBackend::Postgres => Ok(Some(crate::postgres::cluster()?.create_database()?)),
        }
    }
}

/// `gatehouse serve` as a child process, with its own data dir and store (which
/// outlive [`restart`](Self::restart)) and a proxy token the test knows.
pub struct ControlPlane {
    child: Option<Child>,
    /// `--database`, when not the embedded default.
    database: Option<String>,
    /// More flags for `gatehouse serve`.
    extra_args: Vec<String>,
    addr: SocketAddr,
    gateway: GatewayPorts,
    proxy_token: String,
    admin_credential: String,
    data: TempDir,
    logs: TempDir,
    http: reqwest::Client,
    master_key: Option<String>,
}

impl ControlPlane {
    /// Starts a control plane on a free port whose printed gateway URL is a
    /// [`GatewayPorts`] picked for the proxy, and waits until `/healthz` answers.
    pub async fn start() -> anyhow::Result<ControlPlane> {
        Self::start_on(StoreBackend::Sqlite).await
    }

    /// [`start`](Self::start) with its store on `backend`.
    pub async fn start_on(backend: StoreBackend) -> anyhow::Result<ControlPlane> {
        Self::start_with(backend.new_database()?, None).await
    }

    /// A control plane with the store `database` (`None`: the embedded default)
    /// and, when given, the master key (base64) every replica of one database shares.
    pub async fn start_with(
        database: Option<String>,
        master_key: Option<String>,
    ) -> anyhow::Result<ControlPlane> {
        let proxy_token = format!("gpx_test_{}", random_base62(32));
        Self::launch(database, master_key, proxy_token, Vec::new()).await
    }

    /// [`start_with`](Self::start_with) with the proxy token given: replicas that
    /// one proxy fails over between must all accept its token.
    pub async fn start_replica(
        database: Option<String>,
        master_key: Option<String>,
        proxy_token: String,
    ) -> anyhow::Result<ControlPlane> {
        Self::launch(database, master_key, proxy_token, Vec::new()).await
    }

    /// A control plane on the embedded store with more `gatehouse serve` flags.
    pub async fn start_with_args(args: &[&str]) -> anyhow::Result<ControlPlane> {
        let proxy_token = format!("gpx_test_{}", random_base62(32));
        Self::launch(
            None,
            None,
            proxy_token,
            args.iter().map(|a| a.to_string()).collect(),
        )
        .await
    }

    async fn launch(
        database: Option<String>,
        master_key: Option<String>,
        proxy_token: String,
        extra_args: Vec<String>,
    ) -> anyhow::Result<ControlPlane> {
        let mut cp = ControlPlane {
            child: None,
            database,
            master_key,
            extra_args,
            addr: free_addr()?,
            gateway: GatewayPorts::pick()?,
            proxy_token,
            admin_credential: String::new(),
            data: TempDir::new("cp-data")?,
            logs: TempDir::new("cp-logs")?,
            http: reqwest::Client::builder().no_proxy().build()?,
        };
        // A port found free can be taken before `serve` binds it: only that is retried.
        let mut attempts = 0;
        loop {
            match cp.spawn().await {
                Ok(()) => break,
                Err(_) if attempts < 2 && cp.log().contains("cannot listen on") => {
                    attempts += 1;
                    cp.kill();
                    cp.addr = free_addr()?;
                }
                Err(e) => return Err(e),
            }
        }
        // Only the control plane that created the store writes the credential: a
        // second one on the same PostgreSQL database has none.
        let path = cp.data_dir().join("admin.credential");
        match std::fs::read_to_string(&path) {
            Ok(text) => cp.admin_credential = text.trim().to_owned(),
            Err(_) if cp.database.is_some() => {}
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        }
        Ok(cp)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = gatehouse_binary()?;
        let log = self.open_log()?;
        let mut command = Command::new(&bin);
        command.arg("serve");
        if let Some(url) = &self.database {
            command.arg("--database").arg(url);
        }
        match &self.master_key {
            Some(key) => command.env("GATEHOUSE_MASTER_KEY", key),
            None => command.env_remove("GATEHOUSE_MASTER_KEY"),
        };
        let child = command
            .args(&self.extra_args)
            .arg("--data-dir")
            .arg(self.data.path())
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--gateway-url")
            .arg(self.gateway.gateway_url())
            .env("GATEHOUSE_PROXY_TOKEN", &self.proxy_token)
            .env("GATEHOUSE_CLI_CONFIG", self.logs.path().join("cli.json"))
            .env_remove("GATEHOUSE_DATA_DIR")
            .env_remove("GATEHOUSE_DATABASE_URL")
            .env_remove("GATEHOUSE_ASK_SERVERS")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
        self.child = Some(child);
        let url = self.url("/healthz");
        wait_ready("gatehouse serve", &mut self.child, &self.http, &url)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n--- control plane log:\n{}", self.log()))
    }

    fn open_log(&self) -> anyhow::Result<File> {
        let path = self.logs.path().join("control-plane.log");
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))
    }

    /// Kills the process and starts it again on the same port with the same data dir.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// Kills the process (SIGKILL): what a crash looks like to proxies and the CLI.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process as `docker stop` and Kubernetes do (SIGTERM) and returns
    /// how it exited.
    pub async fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        match self.child.take() {
            Some(child) => terminate(child, "gatehouse serve").await,
            None => anyhow::bail!("gatehouse serve is not running"),
        }
    }

    /// `http://127.0.0.1:PORT`, the API URL users log in to.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API URL + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn gateway_ports(&self) -> GatewayPorts {
        self.gateway
    }

    pub fn proxy_token(&self) -> &str {
        &self.proxy_token
    }

    /// The bootstrap admin's credential, from `<data-dir>/admin.credential`.
    pub fn admin_credential(&self) -> &str {
        &self.admin_credential
    }

    /// Where the master key and admin credential live, and the SQLite file
    /// (`gatehouse.db`) when the store is not in PostgreSQL.
    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    /// The store's PostgreSQL URL, if it is there.
    pub fn database(&self) -> Option<&str> {
        self.database.as_deref()
    }

    /// The directories holding the store's bytes on disk: the data dir for SQLite;
    /// the database's directory and the write-ahead log of the cluster for
    /// PostgreSQL.
    pub fn store_dirs(&self) -> anyhow::Result<Vec<PathBuf>> {
        match &self.database {
            None => Ok(vec![self.data.path().to_owned()]),
            Some(url) => {
                let cluster = crate::postgres::cluster()?;
                cluster.files_of(crate::postgres::Cluster::database_of(url))
            }
        }
    }

    /// What the control plane wrote to stdout and stderr so far, across restarts.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("control-plane.log")).unwrap_or_default()
    }

    /// One API request with an optional bearer and JSON body, answered or not.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<HttpAnswer> {
        let mut request = self
            .http
            .request(method.clone(), self.url(path))
            .timeout(STEP_TIMEOUT);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{method} {path}: {e}"))?;
        let status = response.status().as_u16();
        let body = response.text().await?;
        Ok(HttpAnswer { status, body })
    }

    /// The config version this control plane publishes now, as a proxy reporting
    /// its status (`POST /v1/proxy/status`, as proxy `probe`) is told it.
    pub async fn published_version(&self) -> anyhow::Result<i64> {
        let body = serde_json::json!({"id": "probe", "name": "probe", "version": 0});
        let answer = self
            .request(
                Method::POST,
                "/v1/proxy/status",
                Some(&self.proxy_token),
                Some(&body),
            )
            .await?;
        anyhow::ensure!(
            answer.status == 200,
            "POST /v1/proxy/status answered {}: {}",
            answer.status,
            answer.body
        );
        answer.json()?["config_version"]
            .as_i64()
            .ok_or_else(|| anyhow::anyhow!("no config_version in {}", answer.body))
    }

    /// The status of `GET path` only, without reading a (possibly endless) body.
    pub async fn status_of(&self, path: &str, bearer: Option<&str>) -> anyhow::Result<u16> {
        let mut request = self.http.get(self.url(path)).timeout(STEP_TIMEOUT);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        Ok(request.send().await?.status().as_u16())
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
        print_tail(&format!("gatehouse serve on {}", self.addr), &self.log());
    }
}

/// `gatehouse-proxy --control-plane URL --proxy-token T --state-dir D --proxy-name N`.
pub struct GatewayProxy {
    child: Option<Child>,
    control_plane: String,
    proxy_token: String,
    state_dir: PathBuf,
    name: String,
    ports: GatewayPorts,
    logs: TempDir,
    http: reqwest::Client,
}

impl GatewayProxy {
    /// Starts a proxy fed by the control plane at `cp_url` and waits until its admin
    /// `/healthz` answers (which it does with or without a config).
    pub async fn start(
        cp_url: &str,
        proxy_token: &str,
        state_dir: &Path,
        ports: GatewayPorts,
    ) -> anyhow::Result<GatewayProxy> {
        Self::start_named(cp_url, proxy_token, state_dir, ports, "test-proxy").await
    }

    /// [`start`](Self::start) with the name `gatehouse proxies` shows.
    pub async fn start_named(
        cp_url: &str,
        proxy_token: &str,
        state_dir: &Path,
        ports: GatewayPorts,
        name: &str,
    ) -> anyhow::Result<GatewayProxy> {
        let mut proxy = GatewayProxy {
            child: None,
            control_plane: cp_url.to_owned(),
            proxy_token: proxy_token.to_owned(),
            state_dir: state_dir.to_owned(),
            name: name.to_owned(),
            ports,
            logs: TempDir::new("gw-proxy-logs")?,
            http: reqwest::Client::builder().no_proxy().build()?,
        };
        proxy.spawn().await?;
        Ok(proxy)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let bin = proxy_binary()?;
        let path = self.logs.path().join("proxy.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        let child = Command::new(&bin)
            .arg("--control-plane")
            .arg(&self.control_plane)
            .arg("--proxy-token")
            .arg(&self.proxy_token)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--proxy-name")
            .arg(&self.name)
            .arg("--listen")
            .arg(self.ports.listen.to_string())
            .arg("--admin-listen")
            .arg(self.ports.admin.to_string())
            .env_remove("GATEHOUSE_CONFIG")
            .env_remove("GATEHOUSE_PROXY_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", bin.display()))?;
        self.child = Some(child);
        let url = self.admin_url("/healthz");
        wait_ready("gatehouse-proxy", &mut self.child, &self.http, &url)
            .await
            .map_err(|e| anyhow::anyhow!("{e}\n--- proxy log:\n{}", self.log()))
    }

    /// Kills the process and starts it again with the same ports and state dir.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process as an orchestrator does (SIGTERM: requests in flight
    /// finish, audit events are shipped or spooled) and waits until it exited.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(child) = self.child.take() {
            terminate(child, "gatehouse-proxy").await?;
        }
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// `http://127.0.0.1:PORT` + `path` on the MCP listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ports.listen)
    }

    /// `http://127.0.0.1:PORT/ws/<slug>`.
    pub fn ws_url(&self, slug: &str) -> String {
        self.url(&format!("/ws/{slug}"))
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ports.admin)
    }

    pub async fn health(&self) -> anyhow::Result<Health> {
        let response = self
            .http
            .get(self.admin_url("/healthz"))
            .timeout(STEP_TIMEOUT)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "/healthz answered {}",
            response.status()
        );
        Ok(response.json().await?)
    }

    /// The config version the proxy serves, from `/healthz`.
    pub async fn config_version(&self) -> anyhow::Result<u64> {
        Ok(self.health().await?.config_version)
    }

    /// Waits until the proxy serves config `version` or newer.
    pub async fn wait_for_config_version(&self, version: u64) -> anyhow::Result<()> {
        wait_until(
            &format!("proxy {:?} serves config version {version}", self.name),
            STEP_TIMEOUT,
            || async { self.config_version().await.is_ok_and(|v| v >= version) },
        )
        .await
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.logs.path().join("proxy.log")).unwrap_or_default()
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self
            .http
            .get(self.admin_url("/metrics"))
            .timeout(STEP_TIMEOUT)
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 200,
            "/metrics answered {}",
            response.status()
        );
        Ok(response.text().await?)
    }
}

impl Drop for GatewayProxy {
    fn drop(&mut self) {
        self.kill();
        print_tail(
            &format!("gatehouse-proxy {:?} on {}", self.name, self.ports.listen),
            &self.log(),
        );
    }
}

/// Sends `child` SIGTERM and waits (within [`STEP_TIMEOUT`]) until it exited.
async fn terminate(mut child: Child, what: &str) -> anyhow::Result<ExitStatus> {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()?;
    anyhow::ensure!(status.success(), "kill -TERM {} failed", child.id());
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill();
            anyhow::bail!("{what} did not exit within {STEP_TIMEOUT:?} of SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `url` until it answers 200, failing early if the process exits.
async fn wait_ready(
    what: &str,
    child: &mut Option<Child>,
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(child) = child.as_mut() {
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("{what} exited before it was ready: {status}");
            }
        }
        let answer = http.get(url).timeout(Duration::from_secs(2)).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{what}: {url} did not answer 200 within {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn print_tail(what: &str, log: &str) {
    let lines: Vec<&str> = log.lines().collect();
    let tail = &lines[lines.len().saturating_sub(150)..];
    eprintln!(
        "--- {what} log, last {} line(s):\n{}",
        tail.len(),
        tail.join("\n")
    );
}

/// How one `gatehouse` CLI run ended.
#[derive(Debug, Clone)]
pub struct CliRun {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Stdout of a run that exited 0; otherwise an error showing the whole run.
    pub fn success(self) -> anyhow::Result<String> {
        anyhow::ensure!(self.code == 0, "{self}");
        Ok(self.stdout)
    }
}

impl std::fmt::Display for CliRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`gatehouse {}` exited {}\n--- stdout:\n{}--- stderr:\n{}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }
}

/// The `gatehouse` CLI of one user: its own state file (`GATEHOUSE_CLI_CONFIG`), so
/// several users can be logged in side by side. Stdin is not a terminal unless a
/// run says so ([`run_in_terminal`](Self::run_in_terminal)).
pub struct Cli {
    config: PathBuf,
    _dir: TempDir,
}

impl Cli {
    /// A CLI logged in as `cp`'s bootstrap admin.
    pub async fn admin_of(cp: &ControlPlane) -> anyhow::Result<Cli> {
        let admin = Cli::new("admin")?;
        admin
            .login(&cp.api_url(), "admin", cp.admin_credential())
            .await?;
        Ok(admin)
    }

    pub fn new(label: &str) -> anyhow::Result<Cli> {
        let dir = TempDir::new(&format!("cli-{label}"))?;
        Ok(Cli {
            config: dir.path().join("cli.json"),
            _dir: dir,
        })
    }

    /// The state file holding the API URL, the login and the active workspace.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    fn command(&self, program: &Path) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .env("GATEHOUSE_CLI_CONFIG", &self.config)
            .env_remove("GATEHOUSE_API")
            .env_remove("GATEHOUSE_CREDENTIAL")
            .env_remove("GATEHOUSE_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs `gatehouse ARGS` with stdin closed (not a terminal).
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<CliRun> {
        self.run_with_stdin(args, None).await
    }

    /// Runs `gatehouse ARGS` with `stdin` piped in (not a terminal), or closed.
    pub async fn run_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<CliRun> {
        let bin = gatehouse_binary()?;
        let mut command = self.command(&bin);
        command.args(args).stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let outcome = finish(&mut command, stdin).await?;
        Ok(CliRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..outcome
        })
    }

    /// Runs `gatehouse ARGS` on a pseudo-terminal (through `script(1)`), typing
    /// `typed`; stdout and stderr arrive merged in `stdout`, with `\r\n` line ends.
    pub async fn run_in_terminal(&self, args: &[&str], typed: &str) -> anyhow::Result<CliRun> {
        let bin = gatehouse_binary()?;
        let line = std::iter::once(bin.to_string_lossy().into_owned())
            .chain(args.iter().map(|a| a.to_string()))
            .map(|word| shell_quote(&word))
            .collect::<Vec<_>>()
            .join(" ");
        let mut command = self.command(Path::new("script"));
        command
            .args(["--quiet", "--return", "--command", &line, "/dev/null"])
            .stdin(Stdio::piped());
        let outcome = finish(&mut command, Some(typed)).await?;
        Ok(CliRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..outcome
        })
    }

    /// Runs `gatehouse ARGS` and returns its stdout; any other exit than 0 is an error.
    pub async fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run(args).await?.success()
    }

    /// Runs `gatehouse --json ARGS` and parses its stdout; exit 0 required.
    pub async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all).await?;
        serde_json::from_str(&stdout).map_err(|e| {
            anyhow::anyhow!(
                "`gatehouse --json {}` printed non-JSON ({e}): {stdout}",
                args.join(" ")
            )
        })
    }

    /// `gatehouse login --api API --username USER --credential CRED`, which must succeed.
    pub async fn login(
        &self,
        api: &str,
        username: &str,
        credential: &str,
    ) -> anyhow::Result<String> {
        self.ok(&[
            "login",
            "--api",
            api,
            "--username",
            username,
            "--credential",
            credential,
        ])
        .await
    }

    /// The session credential (JWT) stored by `login`.
    pub fn session_token(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.config)?;
        let config: Value = serde_json::from_str(&text)?;
        config
            .get("token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("{} holds no token: {text}", self.config.display()))
    }
}

/// Spawns `command`, feeds `stdin` (then closes it), and collects the outcome.
async fn finish(
    command: &mut tokio::process::Command,
    stdin: Option<&str>,
) -> anyhow::Result<CliRun> {
    let mut child = command
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {command:?}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A process that exits without reading its stdin is not an error here.
        let _ = pipe.write_all(text.as_bytes()).await;
        let _ = pipe.shutdown().await;
    }
    let output = tokio::time::timeout(STEP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{command:?} did not exit within {STEP_TIMEOUT:?}"))??;
    Ok(CliRun {
        args: Vec::new(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

fn shell_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The `gatehouse` binary, building it once if it is missing.
pub fn gatehouse_binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_or_build("GATEHOUSE_BIN", "gatehouse-control-plane", "gatehouse"))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}
