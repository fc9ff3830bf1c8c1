//! One hosted process: spawned with a minimal environment, initialized once, then
//! shared by every HTTP caller. JSON-RPC goes over its stdin and stdout, one message
//! per line (MCP's stdio transport).
//!
//! Ids are remapped: each request gets a runner id (a number) before it reaches the
//! process, and its response gets the caller's id back, so two callers using the
//! same id never collide. Progress tokens are remapped the same way. Requests the
//! process sends (sampling, elicitation, roots) get an id `gatehouse-runner-<n>`
//! and go to the oldest call in flight; the answer is routed back by that id. Other
//! notifications (logging) go to the oldest call in flight, or nowhere.
//!
//! When the process exits, every call in flight is answered with a JSON-RPC error
//! (-32603) that names the server.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};
use tokio::sync::{mpsc, oneshot, watch};

use super::metrics::HostedMetrics;
use super::spec::{redact, Hosted, HostedKey};

/// The protocol version the runner asks hosted servers for.
pub const PROTOCOL_VERSION: &str = "2025-06-18";
/// JSON-RPC "internal error": what callers get when the process is gone.
pub const INTERNAL_ERROR: i64 = -32603;
/// Ids the runner gives requests a process sends to its clients.
const ASKED_PREFIX: &str = "gatehouse-runner-";
/// Ids the runner gives progress tokens.
const PROGRESS_PREFIX: &str = "gatehouse-progress-";
/// Lines of stderr logged per second per process; the rest are counted.
const STDERR_LINES_PER_SECOND: u32 = 20;
/// Lines of stderr kept to explain an exit.
const STDERR_KEPT: usize = 3;
/// How long a process may take to exit once asked (stdin closed, then SIGTERM).
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
    #[error("hosted server {server} exited ({status}){said}")]
    Exited {
        server: String,
        status: String,
        said: String,
    },
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

/// What a caller receives for one request: messages the process sent meanwhile,
/// then the response.
#[derive(Debug)]
pub enum Relayed {
    Message(Value),
    Response(Value),
}

struct Pending {
    caller_id: Value,
    /// The caller's progress token, when it gave one.
    progress: Option<Value>,
    to_caller: mpsc::UnboundedSender<Relayed>,
}

#[derive(Default)]
struct Calls {
    pending: BTreeMap<u64, Pending>,
    /// Runner ids of requests the process sent → the process's own id.
    asked: HashMap<String, Value>,
    /// No more calls: the process has ended; what callers are told.
    closed: Option<String>,
    /// It wrote this (redacted, shortened) line that is not JSON-RPC before
    /// answering initialize.
    not_json: Option<String>,
}

/// Everything the reader, stderr and exit tasks share with callers.
struct Shared {
    key: HostedKey,
    secrets: Vec<String>,
    calls: Mutex<Calls>,
    to_stdin: mpsc::UnboundedSender<String>,
    next_id: AtomicU64,
    initialized: std::sync::atomic::AtomicBool,
    /// The last lines of stderr, redacted.
    said: Mutex<Vec<String>>,
}

pub struct HostedProcess {
    shared: Arc<Shared>,
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
        let shared = Arc::new(Shared {
            key: spec.key.clone(),
            secrets: spec.secret_values(&hosted.secret_names),
            calls: Mutex::new(Calls::default()),
            to_stdin,
            next_id: AtomicU64::new(1),
            initialized: Default::default(),
            said: Mutex::new(Vec::new()),
        });
        tokio::spawn(write_stdin(stdin, stdin_lines));
        tokio::spawn(read_stdout(shared.clone(), stdout));
        let stderr_done = tokio::spawn(read_stderr(shared.clone(), stderr));
        let (stop, stop_rx) = oneshot::channel();
        let (ended_tx, ended) = watch::channel(None);
        metrics.started();
        tokio::spawn(watch_exit(
            shared.clone(),
            child,
            stop_rx,
            ended_tx,
            stderr_done,
            metrics.clone(),
        ));
        tracing::info!(server = %spec.key, pid, command = %spec.command, "hosted server started");

        let process = HostedProcess {
            shared,
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
        let server = self.shared.key.server.clone();
        let request = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "gatehouse-runner", "version": env!("CARGO_PKG_VERSION")},
            },
        });
        let mut call = self.send(request);
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
            self.shared.initialized.store(true, Ordering::Release);
            let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
            let _ = self.shared.to_stdin.send(note.to_string());
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
        let (closed, not_json) = {
            let calls = self.shared.calls.lock().expect("calls");
            (calls.closed.clone(), calls.not_json.clone())
        };
        let why = closed?;
        if let Some(line) = not_json {
            return Some(HostedError::NotJson {
                server: self.shared.key.server.clone(),
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
            server: self.shared.key.server.clone(),
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
        self.shared.calls.lock().expect("calls").pending.len()
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
        self.send(request)
    }

    fn send(&self, mut request: Value) -> Call {
        let (to_caller, from_process) = mpsc::unbounded_channel();
        let caller_id = request.get("id").cloned().unwrap_or(Value::Null);
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let id = if request.get("method").and_then(Value::as_str) == Some("initialize") {
            0
        } else {
            id
        };
        request["id"] = json!(id);
        let progress = request
            .pointer_mut("/params/_meta/progressToken")
            .map(|token| std::mem::replace(token, json!(format!("{PROGRESS_PREFIX}{id}"))));
        {
            let mut calls = self.shared.calls.lock().expect("calls");
            if let Some(message) = &calls.closed {
                let error = error_response(&caller_id, message);
                let _ = to_caller.send(Relayed::Response(error));
            } else {
                calls.pending.insert(
                    id,
                    Pending {
                        caller_id,
                        progress,
                        to_caller,
                    },
                );
                let _ = self.shared.to_stdin.send(request.to_string());
            }
        }
        Call {
            shared: self.shared.clone(),
            id,
            from_process,
            answered: false,
        }
    }

    /// A notification from a caller. `notifications/cancelled` reaches the process
    /// only when exactly one call in flight has that id (with the runner's id).
    pub fn notify(&self, mut notification: Value) {
        self.touch();
        if notification.get("method").and_then(Value::as_str) == Some("notifications/cancelled") {
            let Some(caller_id) = notification.pointer("/params/requestId").cloned() else {
                return;
            };
            let calls = self.shared.calls.lock().expect("calls");
            let mut matching = calls
                .pending
                .iter()
                .filter(|(_, p)| p.caller_id == caller_id)
                .map(|(id, _)| *id);
            let (Some(id), None) = (matching.next(), matching.next()) else {
                return;
            };
            notification["params"]["requestId"] = json!(id);
        }
        let _ = self.shared.to_stdin.send(notification.to_string());
    }

    /// A caller's answer to a request the process sent: routed back by the runner
    /// id; an id the runner never issued is dropped.
    pub fn answer(&self, mut response: Value) {
        let Some(id) = response.get("id").and_then(Value::as_str) else {
            return;
        };
        let original = self.shared.calls.lock().expect("calls").asked.remove(id);
        match original {
            Some(original) => {
                response["id"] = original;
                let _ = self.shared.to_stdin.send(response.to_string());
            }
            None => {
                tracing::debug!(server = %self.shared.key, "an answer to a request the hosted server never sent was dropped")
            }
        }
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

/// One request in flight. Dropped before its response (the HTTP caller went
/// away), it tells the process the request is cancelled.
pub struct Call {
    shared: Arc<Shared>,
    id: u64,
    from_process: mpsc::UnboundedReceiver<Relayed>,
    answered: bool,
}

impl Call {
    /// The next message for this caller; the last one is the response. `None` only
    /// after the response.
    pub async fn next(&mut self) -> Option<Relayed> {
        if self.answered {
            return None;
        }
        let next = self.from_process.recv().await;
        match &next {
            Some(Relayed::Response(_)) => self.answered = true,
            Some(Relayed::Message(_)) => {}
            None => {
                self.answered = true;
                let error = error_response(
                    &Value::Null,
                    &format!("hosted server {} dropped the call", self.shared.key.server),
                );
                return Some(Relayed::Response(error));
            }
        }
        next
    }

    /// The response alone, skipping what came before it.
    pub async fn response(&mut self) -> Value {
        loop {
            if let Some(Relayed::Response(response)) = self.next().await {
                return response;
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let removed = self
            .shared
            .calls
            .lock()
            .expect("calls")
            .pending
            .remove(&self.id);
        if removed.is_some() {
            let cancel = json!({
                "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": self.id, "reason": "the client went away"},
            });
            let _ = self.shared.to_stdin.send(cancel.to_string());
        }
    }
}

fn error_response(id: &Value, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": INTERNAL_ERROR, "message": message}})
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

async fn read_stdout(shared: Arc<Shared>, stdout: ChildStdout) {
    let mut lines = BufReader::new(stdout).lines();
    let mut complained = Instant::now() - Duration::from_secs(60);
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(message) if message.is_object() => route(&shared, message),
            _ => {
                let shown: String = redact(&line, &shared.secrets).chars().take(120).collect();
                if !shared.initialized.load(Ordering::Acquire) {
                    // MCP's stdio transport: nothing but MCP messages on stdout. Before
                    // initialize is answered that is a server that cannot work here.
                    shared.calls.lock().expect("calls").not_json = Some(shown.clone());
                    let message = format!(
                        "hosted server {} wrote something that is not JSON-RPC on stdout",
                        shared.key.server
                    );
                    fail_all(&shared, &message);
                    return;
                }
                if complained.elapsed() > Duration::from_secs(10) {
                    complained = Instant::now();
                    tracing::warn!(server = %shared.key, line = %shown, "hosted server wrote a line that is not JSON-RPC on stdout; ignored");
                }
            }
        }
    }
}

/// One message the process sent: a response to a caller, a request or a
/// notification for one.
fn route(shared: &Shared, mut message: Value) {
    let method = message
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let id = message.get("id").cloned();
    let mut calls = shared.calls.lock().expect("calls");
    match (method, id) {
        (None, Some(id)) => {
            let Some(pending) = id.as_u64().and_then(|id| calls.pending.remove(&id)) else {
                tracing::debug!(server = %shared.key, "a response to no call in flight was dropped");
                return;
            };
            message["id"] = pending.caller_id;
            let _ = pending.to_caller.send(Relayed::Response(message));
        }
        (Some(method), Some(id)) => {
            if method == "ping" {
                let pong = json!({"jsonrpc": "2.0", "id": id, "result": {}});
                let _ = shared.to_stdin.send(pong.to_string());
                return;
            }
            let Some((_, oldest)) = calls.pending.iter().find(|(id, _)| **id != 0) else {
                let refusal = json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("no client is waiting for {method}")}});
                let _ = shared.to_stdin.send(refusal.to_string());
                return;
            };
            let runner_id = format!(
                "{ASKED_PREFIX}{}",
                shared.next_id.fetch_add(1, Ordering::Relaxed)
            );
            message["id"] = json!(runner_id);
            let _ = oldest.to_caller.send(Relayed::Message(message));
            calls.asked.insert(runner_id, id);
        }
        (Some(_), None) => {
            let token = message
                .pointer("/params/progressToken")
                .and_then(Value::as_str)
                .and_then(|t| t.strip_prefix(PROGRESS_PREFIX))
                .and_then(|n| n.parse::<u64>().ok());
            let target = match token {
                Some(id) => calls.pending.get(&id),
                None => calls
                    .pending
                    .iter()
                    .find(|(id, _)| **id != 0)
                    .map(|(_, p)| p),
            };
            let Some(pending) = target else {
                return;
            };
            if token.is_some() {
                if let Some(original) = &pending.progress {
                    message["params"]["progressToken"] = original.clone();
                }
            }
            let _ = pending.to_caller.send(Relayed::Message(message));
        }
        (None, None) => {
            tracing::debug!(server = %shared.key, "a message that is neither request, response nor notification was dropped");
        }
    }
}

/// Answers every call in flight with an error saying `message` and refuses new
/// ones.
fn fail_all(shared: &Shared, message: &str) {
    let mut calls = shared.calls.lock().expect("calls");
    if calls.closed.is_none() {
        calls.closed = Some(message.to_owned());
    }
    for (_, pending) in std::mem::take(&mut calls.pending) {
        let error = error_response(&pending.caller_id, message);
        let _ = pending.to_caller.send(Relayed::Response(error));
    }
    calls.asked.clear();
}

/// Logs stderr, redacted of the server's secrets, at most
/// [`STDERR_LINES_PER_SECOND`] lines a second; keeps the last lines.
async fn read_stderr(shared: Arc<Shared>, stderr: ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    let mut window = Instant::now();
    let mut logged = 0u32;
    let mut suppressed = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        let line: String = redact(&line, &shared.secrets).chars().take(500).collect();
        {
            let mut said = shared.said.lock().expect("said");
            if said.len() == STDERR_KEPT {
                said.remove(0);
            }
            said.push(line.clone());
        }
        if window.elapsed() >= Duration::from_secs(1) {
            if suppressed > 0 {
                tracing::info!(server = %shared.key, suppressed, "hosted server: stderr lines not logged (over {STDERR_LINES_PER_SECOND}/s)");
            }
            window = Instant::now();
            logged = 0;
            suppressed = 0;
        }
        if logged < STDERR_LINES_PER_SECOND {
            logged += 1;
            tracing::info!(server = %shared.key, "{}: {line}", shared.key.server);
        } else {
            suppressed += 1;
        }
    }
}

/// Waits for the process to exit or to be stopped, then answers the calls in
/// flight and records how it ended.
async fn watch_exit(
    shared: Arc<Shared>,
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
            let _ = shared.to_stdin.send(String::new());
            signal_group(pid, "TERM").await;
            match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                Ok(status) => (status, true),
                Err(_) => {
                    signal_group(pid, "KILL").await;
                    (child.wait().await, true)
                }
            }
        }
    };
    // What it started in its group goes with it.
    signal_group(pid, "KILL").await;
    let status = match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("unknown status: {e}"),
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), stderr_done).await;
    let said = shared.said.lock().expect("said").clone();
    // Callers are told how it ended; what it said on stderr is in the log only.
    let message = if stopped {
        format!("hosted server {} was stopped", shared.key.server)
    } else {
        format!("hosted server {} exited ({status})", shared.key.server)
    };
    fail_all(&shared, &message);
    metrics.ended(&shared.key.server, stopped);
    if stopped {
        tracing::info!(server = %shared.key, %status, "hosted server stopped");
    } else {
        tracing::warn!(server = %shared.key, %status, "hosted server exited");
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
