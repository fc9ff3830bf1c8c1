//! One hosted process: spawned with a minimal environment, initialized once, then
//! shared by every HTTP caller through its [`Exchange`]. JSON-RPC goes over its
//! stdin and stdout, one message per line (MCP's stdio transport); its stderr goes
//! to the log. Stopping it follows MCP's stdio shutdown: stdin closed, then SIGTERM,
//! then SIGKILL, to its whole process group.

use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::{mpsc, oneshot, watch};

use super::calls::{Call, Exchange, Notices};
use super::metrics::HostedMetrics;
use super::spec::{redact, Hosted};

/// The protocol version the runner asks hosted servers for.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// Lines of stderr logged per second per process; the rest are counted.
const STDERR_LINES_PER_SECOND: u32 = 20;
/// Lines of stderr kept to explain an exit.
const STDERR_KEPT: usize = 3;
/// How long a process may take to exit once its stdin is closed, and again once
/// sent SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// The shell line every process starts through: it sets the resource limits, then
/// replaces itself with the server (`$0` is the command), so the process's own
/// command line is exactly the command and its arguments.
const LIMITS: &str = r#"ulimit -c 0; ulimit -n 4096 2>/dev/null; exec "$0" "$@""#;

/// Why a hosted server cannot be used now; the HTTP side answers with its text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostedError {
    #[error("hosted server {server} could not be started: {why}")]
    Spawn { server: String, why: String },
    #[error("hosted server {server} exited ({status}) before answering initialize{said}")]
    ExitedEarly {
        server: String,
        status: String,
        said: String,
    },
    #[error("hosted server {server} wrote something that is not JSON-RPC on stdout before answering initialize: {line:?}")]
    NotJson { server: String, line: String },
    #[error("hosted server {server} did not answer initialize within {secs} s")]
    InitializeTimeout { server: String, secs: u64 },
    #[error("hosted server {server} refused initialize: {message}")]
    InitializeRefused { server: String, message: String },
}

/// Why a process ended, once it has.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The exit status (or the signal) in words.
    pub status: String,
    /// Stopped by the runner (removed, changed, idle) rather than of its own accord.
    pub stopped: bool,
    pub at: Instant,
    /// Its last lines on stderr, redacted.
    pub said: Vec<String>,
}

/// The last lines of its stderr, redacted.
type Said = Arc<Mutex<Vec<String>>>;

pub struct HostedProcess {
    exchange: Arc<Exchange>,
    pid: u32,
    started: Instant,
    /// The InitializeResult, answered to every caller's `initialize`.
    initialize_result: Value,
    ended: watch::Receiver<Option<Ended>>,
    stop: Mutex<Option<oneshot::Sender<()>>>,
    last_used: Mutex<Instant>,
}

impl HostedProcess {
    /// Spawns the process in `dir` (its working directory and `HOME`) and
    /// initializes it, waiting at most `timeout` for its answer.
    pub async fn start(
        hosted: &Hosted,
        notices: Notices,
        dir: &Path,
        timeout: Duration,
        metrics: &HostedMetrics,
    ) -> Result<Arc<HostedProcess>, HostedError> {
        let spec = &hosted.spec;
        let server = spec.key.server.clone();
        std::fs::create_dir_all(dir).map_err(|e| HostedError::Spawn {
            server: server.clone(),
            why: format!("cannot create its directory {}: {e}", dir.display()),
        })?;
        restrict(dir);
        let path = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let mut command = tokio::process::Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(LIMITS)
            .arg(&spec.command)
            .args(&spec.args)
            .env_clear()
            .env("PATH", path)
            .env("HOME", dir)
            .envs(spec.env.iter().map(|(k, v)| (k, v.expose())))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so stopping it stops what it started (npx
            // starts node; uvx starts python).
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|e| HostedError::Spawn {
            server: server.clone(),
            why: e.to_string(),
        })?;
        let pid = child.id().unwrap_or_default();
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let (to_stdin, stdin_lines) = mpsc::unbounded_channel::<String>();
        let exchange = Exchange::new(
            spec.key.clone(),
            spec.secret_values(&hosted.secret_names),
            to_stdin,
            notices,
        );
        let said = Said::default();
        tokio::spawn(write_stdin(stdin, stdin_lines));
        tokio::spawn(read_stdout(exchange.clone(), stdout));
        let stderr_done = tokio::spawn(read_stderr(exchange.clone(), said.clone(), stderr));
        let (stop, stop_rx) = oneshot::channel();
        let (ended_tx, ended) = watch::channel(None);
        metrics.started();
        tokio::spawn(watch_exit(
            exchange.clone(),
            said,
            child,
            stop_rx,
            ended_tx,
            stderr_done,
            metrics.clone(),
        ));
        tracing::info!(server = %spec.key, pid, command = %spec.command, "hosted server started");

        let process = HostedProcess {
            exchange,
            pid,
            started: Instant::now(),
            initialize_result: Value::Null,
            ended,
            stop: Mutex::new(Some(stop)),
            last_used: Mutex::new(Instant::now()),
        };
        match process.initialize(timeout).await {
            Ok(result) => Ok(Arc::new(HostedProcess {
                initialize_result: result,
                ..process
            })),
            Err(e) => {
                process.stop().await;
                Err(e)
            }
        }
    }

    async fn initialize(&self, timeout: Duration) -> Result<Value, HostedError> {
        let server = self.exchange.key.server.clone();
        let request = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "gatehouse-runner", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let mut call = self.exchange.send(request);
        let answer = tokio::time::timeout(timeout, call.response()).await;
        let response = match answer {
            Err(_) => {
                return Err(HostedError::InitializeTimeout {
                    server,
                    secs: timeout.as_secs(),
                })
            }
            Ok(response) => response,
        };
        if let Some(error) = self.early_end().await {
            return Err(error);
        }
        if let Some(result) = response.get("result").filter(|r| r.is_object()) {
            self.exchange.initialized.store(true, Ordering::Release);
            let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            self.exchange.write(note.to_string());
            return Ok(result.clone());
        }
        let message = response
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no result")
            .to_owned();
        Err(HostedError::InitializeRefused { server, message })
    }

    /// Why the process failed during initialize, if it did: its exit, or a line
    /// that was not JSON-RPC.
    async fn early_end(&self) -> Option<HostedError> {
        let (closed, not_json) = self.exchange.closed();
        let why = closed?;
        if let Some(line) = not_json {
            return Some(HostedError::NotJson {
                server: self.exchange.key.server.clone(),
                line,
            });
        }
        let mut ended = self.ended.clone();
        let _ = tokio::time::timeout(Duration::from_secs(1), ended.wait_for(|e| e.is_some())).await;
        let end = ended.borrow().clone();
        let (status, said) = match end {
            Some(end) => (end.status, end.said),
            None => (why, Vec::new()),
        };
        Some(HostedError::ExitedEarly {
            server: self.exchange.key.server.clone(),
            status,
            said: said_text(&said),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn initialize_result(&self) -> &Value {
        &self.initialize_result
    }

    /// How it ended, once it has.
    pub fn ended(&self) -> Option<Ended> {
        self.ended.borrow().clone()
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.exchange.in_flight()
    }

    pub fn idle_for(&self) -> Duration {
        self.last_used.lock().expect("last used").elapsed()
    }

    pub(super) fn touch(&self) {
        *self.last_used.lock().expect("last used") = Instant::now();
    }

    /// Sends a request of a caller: its id and progress token are replaced on the
    /// way in and restored on the way out.
    pub fn call(&self, request: Value) -> Call {
        self.touch();
        self.exchange.send(request)
    }

    /// A notification from a caller (see [`Exchange::notify`]).
    pub fn notify(&self, notification: Value) {
        self.touch();
        self.exchange.notify(notification);
    }

    /// A caller's answer to a request the process sent (see [`Exchange::answer`]).
    pub fn answer(&self, response: Value) {
        self.exchange.answer(response);
    }

    /// Stops the process: closes its stdin, then SIGTERM to its process group, then
    /// SIGKILL. Calls in flight are answered with an error. Returns once it is gone.
    pub async fn stop(&self) {
        let stop = self.stop.lock().expect("stop").take();
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| e.is_some()).await;
    }
}

fn said_text(said: &[String]) -> String {
    match said.last() {
        Some(line) => format!("; it said on stderr: {line:?}"),
        None => String::new(),
    }
}

/// Owner-only: the directory is the server's HOME and may hold its caches.
fn restrict(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
}

async fn write_stdin(
    mut stdin: tokio::process::ChildStdin,
    mut lines: mpsc::UnboundedReceiver<String>,
) {
    while let Some(mut line) = lines.recv().await {
        if line.is_empty() {
            // Asked to stop: closing stdin is how MCP's stdio transport says so.
            return;
        }
        line.push('\n');
        if stdin.write_all(line.as_bytes()).await.is_err() || stdin.flush().await.is_err() {
            return;
        }
    }
}

async fn read_stdout(exchange: Arc<Exchange>, stdout: ChildStdout) {
    let mut lines = BufReader::new(stdout).lines();
    let mut complained = Instant::now() - Duration::from_secs(60);
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(message) if message.is_object() => exchange.route(message),
            _ => {
                let shown: String = redact(&line, &exchange.secrets).chars().take(120).collect();
                if !exchange.initialized.load(Ordering::Acquire) {
                    // MCP's stdio transport: nothing but MCP messages on stdout. Before
                    // initialize is answered that is a server that cannot work here.
                    exchange.refuse_not_json(shown);
                    return;
                }
                if complained.elapsed() > Duration::from_secs(10) {
                    complained = Instant::now();
                    tracing::warn!(server = %exchange.key, line = %shown, "hosted server wrote a line that is not JSON-RPC on stdout; ignored");
                }
            }
        }
    }
}

/// Logs stderr, redacted of the server's secrets, at most
/// [`STDERR_LINES_PER_SECOND`] lines a second; keeps the last lines.
async fn read_stderr(exchange: Arc<Exchange>, said: Said, stderr: ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    let mut window = tokio::time::Instant::now();
    let mut logged = 0u32;
    let mut suppressed = 0u64;
    let report = |suppressed: u64| {
        if suppressed > 0 {
            tracing::info!(server = %exchange.key, suppressed, "hosted server: stderr lines not logged (over {STDERR_LINES_PER_SECOND}/s)");
        }
    };
    loop {
        // The count of lines left out is logged when their second is over, even if
        // nothing follows them.
        let next = tokio::select! {
            next = lines.next_line() => next,
            _ = tokio::time::sleep_until(window + Duration::from_secs(1)), if suppressed > 0 => {
                report(std::mem::take(&mut suppressed));
                continue;
            }
        };
        let Ok(Some(line)) = next else { break };
        let line: String = redact(&line, &exchange.secrets).chars().take(500).collect();
        {
            let mut said = said.lock().expect("said");
            if said.len() == STDERR_KEPT {
                said.remove(0);
            }
            said.push(line.clone());
        }
        if window.elapsed() >= Duration::from_secs(1) {
            report(std::mem::take(&mut suppressed));
            window = tokio::time::Instant::now();
            logged = 0;
        }
        if logged < STDERR_LINES_PER_SECOND {
            logged += 1;
            tracing::info!(server = %exchange.key, "{}: {line}", exchange.key.server);
        } else {
            suppressed += 1;
        }
    }
    report(suppressed);
}

/// Waits for the process to exit or to be stopped, then answers the calls in
/// flight and records how it ended.
async fn watch_exit(
    exchange: Arc<Exchange>,
    said: Said,
    mut child: Child,
    stop: oneshot::Receiver<()>,
    ended: watch::Sender<Option<Ended>>,
    stderr_done: tokio::task::JoinHandle<()>,
    metrics: HostedMetrics,
) {
    let pid = child.id();
    let (status, stopped) = tokio::select! {
        status = child.wait() => (status, false),
        _ = stop => {
            // MCP's stdio shutdown: close stdin, then SIGTERM, then SIGKILL.
            exchange.write(String::new());
            let status = match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    signal_group(pid, "TERM").await;
                    match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                        Ok(status) => status,
                        Err(_) => {
                            signal_group(pid, "KILL").await;
                            child.wait().await
                        }
                    }
                }
            };
            (status, true)
        }
    };
    // What it started in its group goes with it.
    signal_group(pid, "KILL").await;
    let status = match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown status: {e}"),
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
    let said = said.lock().expect("said").clone();
    // Callers are told how it ended; what it said on stderr is in the log only.
    let message = if stopped {
        format!("hosted server {} was stopped", exchange.key.server)
    } else {
        format!("hosted server {} exited ({status})", exchange.key.server)
    };
    exchange.fail_all(&message);
    metrics.ended(&exchange.key.server, stopped);
    if stopped {
        tracing::info!(server = %exchange.key, %status, "hosted server stopped");
    } else {
        tracing::warn!(server = %exchange.key, %status, "hosted server exited");
    }
    let _ = ended.send(Some(Ended {
        status,
        stopped,
        at: Instant::now(),
        said,
    }));
}

/// `kill -SIG -- -PGID`: the process and everything it started in its group.
async fn signal_group(pid: Option<u32>, signal: &str) {
    let Some(pid) = pid else { return };
    let _ = tokio::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}
