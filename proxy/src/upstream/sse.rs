//! Upstreams that speak the legacy HTTP+SSE transport (MCP 2024-11-05): the gateway
//! GETs the server's SSE URL, waits for the `endpoint` event, POSTs every message to
//! that URL, and reads every answer back from the stream.
//!
//! Such a session *is* the open GET connection, so it cannot live in the sealed
//! envelope: each replica opens its own, per client session, when it first needs one
//! (replaying the client's `initialize` parameters from the envelope), and keeps it
//! while it is used. On the stream, answers to the gateway's requests are matched by
//! id; what the server says on its own goes to the `tools/call` it belongs to —
//! progress by its token, requests and log messages to the oldest call in flight — or
//! else to the client's event stream.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use futures::StreamExt;
use http::{HeaderName, HeaderValue};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::sse::SseSplitter;

use crate::config::runtime::ServerRt;
use crate::upstream::error::{take_result, Initialized, UpstreamError};

/// Largest event accepted on an upstream's stream.
const MAX_EVENT: usize = 8 * 1024 * 1024;
/// How long an upstream session may sit unused before it is closed.
const IDLE: Duration = Duration::from_secs(600);
/// Bound on legacy upstream sessions held by one replica.
const MAX_SESSIONS: usize = 10_000;
/// Messages buffered for client streams between reads.
const UNSOLICITED_BUFFER: usize = 256;
/// Messages kept while no client stream listens, for the first one that does.
const BACKLOG: usize = 64;

/// A `tools/call` in flight, receiving what the server says while it runs.
struct CallSink {
    key: u64,
    progress_token: Option<Value>,
    tx: mpsc::UnboundedSender<String>,
}

/// One open legacy SSE session with an upstream.
pub struct LegacyUpstream {
    server: String,
    fingerprint: [u8; 16],
    post_url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    http: reqwest::Client,
    /// The version the server agreed to, set once `initialize` is answered.
    pub protocol_version: std::sync::OnceLock<String>,
    /// Normalized request id -> who waits for its response.
    pending: DashMap<String, oneshot::Sender<String>>,
    calls: Mutex<Vec<CallSink>>,
    /// Taken when the session ends, so client streams listening see it close.
    unsolicited: Mutex<Option<broadcast::Sender<String>>>,
    /// What the server said while no client stream was listening.
    backlog: Mutex<std::collections::VecDeque<String>>,
    alive: AtomicBool,
    next_id: AtomicU64,
    last_used: Mutex<Instant>,
    reader: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for LegacyUpstream {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.reader).take() {
            task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A request id as canonical JSON text.
fn normalized(id: &Value) -> String {
    id.to_string()
}

impl LegacyUpstream {
    /// Opens the stream and waits for the `endpoint` event.
    async fn connect(
        http: reqwest::Client,
        server: &ServerRt,
        timeout: Duration,
    ) -> Result<Arc<LegacyUpstream>, UpstreamError> {
        if let Some(why) = &server.unavailable {
            return Err(UpstreamError::Unusable(why.clone()));
        }
        let base = url::Url::parse(&server.url)
            .map_err(|e| UpstreamError::Unusable(format!("bad SSE URL: {e}")))?;
        let mut req = http
            .get(base.clone())
            .header(http::header::ACCEPT, "text/event-stream");
        for (name, value) in &server.headers {
            req = req.header(name, value);
        }
        let resp = tokio::time::timeout(timeout, req.send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| {
                if e.is_connect() {
                    UpstreamError::Connect
                } else {
                    UpstreamError::Protocol(e.without_url().to_string())
                }
            })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(UpstreamError::Status(status));
        }
        let mut body = Box::pin(resp.bytes_stream());
        let mut splitter = SseSplitter::default();
        let endpoint = tokio::time::timeout(timeout, async {
            while let Some(chunk) = body.next().await {
                splitter.push(&chunk.map_err(|e| UpstreamError::Protocol(e.to_string()))?);
                while let Some(event) = splitter.next_event() {
                    if event.event.as_deref() == Some("endpoint") {
                        return Ok(event.data);
                    }
                }
                if splitter.buffered() > MAX_EVENT {
                    break;
                }
            }
            Err(UpstreamError::Protocol(
                "SSE stream ended without an endpoint event".into(),
            ))
        })
        .await
        .map_err(|_| UpstreamError::Timeout)??;
        let post_url = base
            .join(endpoint.trim())
            .map_err(|e| UpstreamError::Protocol(format!("bad endpoint {endpoint:?}: {e}")))?;
        let (unsolicited, _) = broadcast::channel(UNSOLICITED_BUFFER);
        let conn = Arc::new(LegacyUpstream {
            server: server.slug.clone(),
            fingerprint: server.fingerprint,
            post_url: post_url.to_string(),
            headers: server.headers.clone(),
            http,
            protocol_version: std::sync::OnceLock::new(),
            pending: DashMap::new(),
            calls: Mutex::new(Vec::new()),
            unsolicited: Mutex::new(Some(unsolicited)),
            backlog: Mutex::new(std::collections::VecDeque::new()),
            alive: AtomicBool::new(true),
            next_id: AtomicU64::new(1),
            last_used: Mutex::new(Instant::now()),
            reader: Mutex::new(None),
        });
        let weak = Arc::downgrade(&conn);
        let task = tokio::spawn(async move {
            let why = read_stream(&weak, splitter, body).await;
            if let Some(conn) = weak.upgrade() {
                tracing::info!(server = %conn.server, why, "legacy SSE upstream stream ended");
                conn.close();
            }
        });
        *lock(&conn.reader) = Some(task);
        Ok(conn)
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.alive.store(false, Ordering::Release);
        self.pending.clear();
        lock(&self.calls).clear();
        lock(&self.unsolicited).take();
    }

    fn touch(&self) {
        *lock(&self.last_used) = Instant::now();
    }

    fn idle_for(&self) -> Duration {
        lock(&self.last_used).elapsed()
    }

    /// POSTs one message to the endpoint; the server answers 202 (or 200).
    async fn post(&self, body: Bytes, timeout: Duration) -> Result<(), UpstreamError> {
        if !self.is_alive() {
            return Err(UpstreamError::SessionGone);
        }
        self.touch();
        let mut req = self
            .http
            .post(&self.post_url)
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        let resp = tokio::time::timeout(timeout, req.body(body).send())
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| UpstreamError::Protocol(e.without_url().to_string()))?;
        match resp.status().as_u16() {
            200..=299 => Ok(()),
            // The server no longer knows this session.
            404 | 410 => {
                self.close();
                Err(UpstreamError::SessionGone)
            }
            s => Err(UpstreamError::Status(s)),
        }
    }

    /// Sends a request of the gateway's own and returns its `result`.
    pub async fn call(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        let id = Value::String(format!(
            "gatehouse-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        ));
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (tx, rx) = oneshot::channel();
        let key = normalized(&id);
        self.pending.insert(key.clone(), tx);
        let answered = async {
            self.post(Bytes::from(body.to_string()), timeout).await?;
            rx.await.map_err(|_| ended_before_answer())
        };
        let reply = tokio::time::timeout(timeout, answered).await;
        self.pending.remove(&key);
        let reply = reply.map_err(|_| UpstreamError::Timeout)??;
        result_of(&reply)
    }

    /// Sends a notification or a response.
    pub async fn send(&self, body: Bytes, timeout: Duration) -> Result<(), UpstreamError> {
        self.post(body, timeout).await
    }

    /// Sends a client's `tools/call` (`body`, id `id` raw JSON) and waits for its
    /// response; what the server says meanwhile that belongs to the call goes to
    /// `on_message`. Returns the response as the server sent it.
    pub async fn call_streaming(
        &self,
        body: Bytes,
        id: &str,
        progress_token: Option<Value>,
        timeout: Duration,
        on_message: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, UpstreamError> {
        let id: Value = serde_json::from_str(id)
            .map_err(|_| UpstreamError::Protocol("request id is not JSON".into()))?;
        let key = normalized(&id);
        let (tx, mut rx) = oneshot::channel();
        self.pending.insert(key.clone(), tx);
        let (sink_tx, mut sink_rx) = mpsc::unbounded_channel();
        let sink_key = self.next_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.calls).push(CallSink {
            key: sink_key,
            progress_token,
            tx: sink_tx,
        });
        let outcome = async {
            self.post(body, timeout).await?;
            loop {
                tokio::select! {
                    reply = &mut rx => return reply.map_err(|_| ended_before_answer()),
                    Some(message) = sink_rx.recv() => on_message(&message),
                }
            }
        };
        let reply = tokio::time::timeout(timeout, outcome).await;
        self.pending.remove(&key);
        lock(&self.calls).retain(|c| c.key != sink_key);
        while let Ok(message) = sink_rx.try_recv() {
            on_message(&message);
        }
        reply.map_err(|_| UpstreamError::Timeout)?
    }

    /// What the server says on its own, for a client stream: what it said while
    /// nobody listened, then a receiver for the rest; `None` once the session ended.
    pub fn subscribe(&self) -> Option<(Vec<String>, broadcast::Receiver<String>)> {
        self.touch();
        let unsolicited = lock(&self.unsolicited);
        let rx = unsolicited.as_ref()?.subscribe();
        let backlog = lock(&self.backlog).drain(..).collect();
        Some((backlog, rx))
    }

    fn listeners(&self) -> usize {
        lock(&self.unsolicited)
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// Routes one message the server sent.
    fn deliver(&self, data: String) -> Result<(), String> {
        let message: Value = serde_json::from_str(&data).map_err(|e| format!("not JSON: {e}"))?;
        let method = message.get("method").and_then(Value::as_str);
        let id = message.get("id");
        if method.is_none() {
            let Some(id) = id else {
                return Err("neither method nor id".into());
            };
            if let Some((_, waiter)) = self.pending.remove(&normalized(id)) {
                let _ = waiter.send(data);
            }
            return Ok(());
        }
        let calls = lock(&self.calls);
        let target = match method {
            Some("notifications/progress") => {
                let token = message.pointer("/params/progressToken");
                calls
                    .iter()
                    .find(|c| token.is_some() && c.progress_token.as_ref() == token)
            }
            Some("notifications/message") => calls.first(),
            _ if id.is_some() => calls.first(),
            _ => None,
        };
        match target {
            Some(call) => {
                let _ = call.tx.send(data);
            }
            None => {
                let unsolicited = lock(&self.unsolicited);
                match unsolicited.as_ref() {
                    Some(tx) if tx.receiver_count() > 0 => {
                        let _ = tx.send(data);
                    }
                    Some(_) => {
                        let mut backlog = lock(&self.backlog);
                        if backlog.len() >= BACKLOG {
                            backlog.pop_front();
                        }
                        backlog.push_back(data);
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }
}

/// Reads the server's stream after the `endpoint` event until it ends; returns why.
async fn read_stream(
    conn: &std::sync::Weak<LegacyUpstream>,
    mut splitter: SseSplitter,
    mut body: impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin,
) -> String {
    loop {
        while let Some(event) = splitter.next_event() {
            if !matches!(event.event.as_deref(), None | Some("message")) {
                continue;
            }
            let Some(conn) = conn.upgrade() else {
                return "session closed".into();
            };
            if let Err(why) = conn.deliver(event.data) {
                return format!("garbage on the stream: {why}");
            }
        }
        if splitter.buffered() > MAX_EVENT {
            return "an oversized event".into();
        }
        match body.next().await {
            Some(Ok(chunk)) => splitter.push(&chunk),
            Some(Err(e)) => return format!("read failed: {}", e.without_url()),
            None => return "closed by the server".into(),
        }
    }
}

/// The stream ended after the server accepted a request: it may have acted on it, so
/// this is not "session gone" (which callers may retry).
fn ended_before_answer() -> UpstreamError {
    UpstreamError::Protocol("the server's SSE stream ended before it answered".into())
}

/// The `result` of a response, or its error.
fn result_of(reply: &str) -> Result<Value, UpstreamError> {
    let mut message: Value = serde_json::from_str(reply)
        .map_err(|e| UpstreamError::Protocol(format!("reply is not JSON: {e}")))?;
    take_result(&mut message)
}

/// The legacy upstream sessions of this replica, by (client session, server).
#[derive(Default)]
pub struct LegacySessions {
    sessions: DashMap<([u8; 16], String), Arc<LegacyUpstream>>,
}

impl LegacySessions {
    fn get(&self, sid: [u8; 16], server: &ServerRt) -> Option<Arc<LegacyUpstream>> {
        let key = (sid, server.slug.clone());
        let found = self.sessions.get(&key).map(|e| e.value().clone())?;
        if found.is_alive() && found.fingerprint == server.fingerprint {
            Some(found)
        } else {
            self.sessions.remove(&key);
            None
        }
    }

    fn insert(&self, sid: [u8; 16], conn: Arc<LegacyUpstream>) {
        if self.sessions.len() >= MAX_SESSIONS / 2 {
            // Unused sessions: idle, no call in flight, no client stream listening.
            self.sessions.retain(|_, c| {
                c.is_alive()
                    && (c.idle_for() < IDLE || !lock(&c.calls).is_empty() || c.listeners() > 0)
            });
        }
        if self.sessions.len() >= MAX_SESSIONS {
            tracing::warn!("too many legacy SSE upstream sessions; closing them all");
            self.sessions.clear();
        }
        self.sessions.insert((sid, conn.server.clone()), conn);
    }

    /// Closes every legacy upstream session of a client session.
    pub fn close_all(&self, sid: [u8; 16]) {
        self.sessions.retain(|(s, _), _| *s != sid);
    }
}

impl LegacySessions {
    /// Opens a legacy SSE session with `server` for client session `env` and
    /// initializes it (replaying the client's `initialize` parameters).
    pub async fn open(
        &self,
        http: &reqwest::Client,
        env: &SessionEnvelope,
        server: &ServerRt,
        timeout: Duration,
    ) -> Result<Initialized, UpstreamError> {
        let conn = LegacyUpstream::connect(http.clone(), server, timeout).await?;
        let mut params: Value = serde_json::from_str(&env.client_init)
            .map_err(|_| UpstreamError::Protocol("client init parameters are corrupt".into()))?;
        params["protocolVersion"] = Value::String(env.client_version.clone());
        let result = conn.call("initialize", params, timeout).await?;
        let init = Initialized::from_result(&result, None)?;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        conn.send(Bytes::from(initialized.to_string()), timeout)
            .await?;
        let _ = conn.protocol_version.set(init.protocol_version.clone());
        self.insert(env.sid, conn);
        Ok(init)
    }

    /// The legacy SSE session of `server` in this client session on this replica,
    /// opened now if there is none (or it ended).
    pub async fn get_or_open(
        &self,
        http: &reqwest::Client,
        env: &SessionEnvelope,
        server: &ServerRt,
        timeout: Duration,
    ) -> Result<Arc<LegacyUpstream>, UpstreamError> {
        if let Some(conn) = self.get(env.sid, server) {
            return Ok(conn);
        }
        self.open(http, env, server, timeout).await?;
        self.get(env.sid, server).ok_or(UpstreamError::SessionGone)
    }
}
