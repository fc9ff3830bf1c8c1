//! The client-facing event streams: the Streamable HTTP GET stream and the legacy
//! HTTP+SSE stream. Both are served by writing events in a loop while the gateway
//! answers the request that opened them, and both carry the same thing — one stream
//! merged from every upstream's own server-to-client stream, rewritten by [`Relay`] —
//! plus what the gateway itself has to say:
//!
//! - `notifications/{tools,prompts,resources}/list_changed` when a config change
//!   touched the workspace's servers or policies (the loop watches the runtime's
//!   generation, so the config push needs no hook into open streams);
//! - `: keep-alive` comments, so idle streams survive proxies and load balancers;
//! - on the legacy stream, the responses to the client's POSTs.
//!
//! Streamable events carry ids `<nonce>-<n>` (a random nonce per stream, a counter)
//! and the last [`REPLAY_EVENTS`](crate::live::REPLAY_EVENTS) are kept on this
//! replica, so a client that reconnects with `Last-Event-ID` here gets what it missed.
//! The stream ends when the client goes away, the session is deleted, or its token
//! stops being valid. It is chunked, so an end the gateway decides is a last chunk
//! and the client's connection stays open for its next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gatehouse_mcp::outcome::Transport;
use http::header;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use rand::RngCore;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::client::request::Caller;
use crate::config::current::unix_now;
use crate::config::runtime::{Runtime, ServerRt};
use crate::limits::{self, Refusal, StreamSlot};
use crate::live::{live, ReplayBuffer};
use crate::session::dispatch::route_uri;
use crate::shared::Shared;
use crate::upstream::error::UpstreamError;
use crate::upstream::upstreams::is_stateless;
use crate::upstream::upstreams::ServerStream;
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::modern::ListenFilter;
use gatehouse_mcp::relay::{MessageKind, Relay};
use gatehouse_mcp::sse::SseSplitter;

/// How often the loop checks the config generation, the token and the session.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// Largest event accepted from an upstream stream; a bigger one is garbage.
const MAX_UPSTREAM_EVENT: usize = 8 * 1024 * 1024;
/// Longest pause between attempts to reopen an upstream stream that broke.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Longest wait for upstreams to open their streams before a listen stream is
/// acknowledged.
const LISTEN_READY: Duration = Duration::from_secs(5);
/// Messages buffered between the upstream readers and the client.
const MERGE_BUFFER: usize = 256;

/// Time between keep-alive comments: 15 s, or `GATEHOUSE_SSE_KEEPALIVE_MS`.
fn keep_alive_every() -> Duration {
    std::env::var("GATEHOUSE_SSE_KEEPALIVE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(15))
}

/// What is fed into a legacy stream from the POSTs of its session.
#[derive(Debug)]
pub enum StreamInput {
    /// A JSON-RPC message for the client.
    Message(Bytes),
    /// The session was initialized: start merging its upstreams.
    Attach(Box<SessionEnvelope>),
}

/// How events are framed.
pub enum Framing {
    /// A 2026-07-28 `subscriptions/listen` stream opened by request `id` (raw JSON):
    /// only the change notifications of `filter`, tagged with the id; no event ids.
    Listen {
        id: String,
        filter: Arc<ListenFilter>,
    },
    /// Streamable HTTP GET: ids for resumption, events kept for replay.
    Streamable {
        nonce: String,
        counter: u64,
        buffer: Arc<Mutex<ReplayBuffer>>,
    },
    /// Legacy HTTP+SSE: plain `event: message`.
    Legacy,
}

impl Framing {
    /// One message as an event of a stream so framed (kept for replay when it has an
    /// id); nothing when a listen stream does not carry it.
    pub fn event(&mut self, json: &[u8]) -> Bytes {
        match self {
            Framing::Legacy => plain_event(json),
            Framing::Listen { id, filter } => {
                let Some(tagged) = std::str::from_utf8(json)
                    .ok()
                    .and_then(|json| filter.admit(json, id))
                else {
                    return Bytes::new();
                };
                plain_event(tagged.as_bytes())
            }
            Framing::Streamable {
                nonce,
                counter,
                buffer,
            } => {
                *counter += 1;
                let mut out = BytesMut::with_capacity(json.len() + nonce.len() + 48);
                out.extend_from_slice(
                    format!("id: {nonce}-{counter}\nevent: message\ndata: ").as_bytes(),
                );
                out.extend_from_slice(json);
                out.extend_from_slice(b"\n\n");
                let event = out.freeze();
                buffer
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(*counter, event.clone());
                event
            }
        }
    }
}

/// One message as an event without an id.
pub fn plain_event(json: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(json.len() + 24);
    out.extend_from_slice(b"event: message\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    out.freeze()
}

/// What a client's listen `filter` asks of one upstream: the same change types, and
/// the subscribed resources that are this server's, under the URIs it knows them by.
fn upstream_filter(
    ws: &crate::config::runtime::WorkspaceRt,
    server: &ServerRt,
    filter: &ListenFilter,
) -> serde_json::Value {
    let mut ours = filter.clone();
    ours.resource_uris = filter
        .resource_uris
        .iter()
        .filter_map(|uri| route_uri(ws, uri))
        .filter(|(owner, _)| owner.slug == server.slug)
        .map(|(_, original)| original)
        .collect();
    ours.to_value()
}

/// Everything a client stream needs, fixed when it opens.
pub struct ClientStream {
    state: Arc<Shared>,
    workspace: String,
    /// The `Authorization` header the stream was opened with: re-checked on every
    /// config change and while idle, so revocation and expiry end it.
    authorization: Option<Vec<u8>>,
    env: Option<Arc<SessionEnvelope>>,
    framing: Framing,
    /// The legacy stream's feed from its POSTs.
    inbox: Option<mpsc::Receiver<StreamInput>>,
    /// The token's stream slot this stream holds while open.
    _slot: StreamSlot,
}

impl ClientStream {
    /// The stream `caller` opens on `session`, which is answered with it: no response
    /// may be reused on that connection after it. Refused when the token holds as
    /// many streams as its cap allows.
    pub fn new(
        state: &Arc<Shared>,
        caller: &Caller<'_>,
        session: &mut ServerSession,
        env: Option<Arc<SessionEnvelope>>,
        framing: Framing,
        inbox: Option<mpsc::Receiver<StreamInput>>,
    ) -> std::result::Result<ClientStream, Refusal> {
        let slot = limits::open_stream(caller.token.budget.as_ref())?;
        let authorization = session
            .req_header()
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes().to_vec());
        session.set_keepalive(None);
        Ok(ClientStream {
            state: state.clone(),
            workspace: caller.ws.slug.clone(),
            authorization,
            env,
            framing,
            inbox,
            _slot: slot,
        })
    }
}

/// A new Streamable framing for session `sid`, resuming after `last_event_id` when
/// this replica still has the events after it. Returns the framing and the events to
/// replay.
pub fn streamable_framing(sid: [u8; 16], last_event_id: Option<&str>) -> (Framing, Vec<Bytes>) {
    if let Some((nonce, counter)) = last_event_id
        .and_then(|id| id.rsplit_once('-'))
        .and_then(|(n, c)| Some((n, c.parse::<u64>().ok()?)))
    {
        if let Some(missed) = live().replay_after(sid, nonce, counter) {
            let buffer = live().replay_buffer(sid, nonce);
            let last = buffer
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .last_counter();
            return (
                Framing::Streamable {
                    nonce: nonce.to_string(),
                    counter: last,
                    buffer,
                },
                missed,
            );
        }
    }
    let mut raw = [0u8; 6];
    rand::thread_rng().fill_bytes(&mut raw);
    let nonce = hex::encode(raw);
    let buffer = live().replay_buffer(sid, &nonce);
    (
        Framing::Streamable {
            nonce,
            counter: 0,
            buffer,
        },
        Vec::new(),
    )
}

/// An upstream reader task, aborted when dropped; no task for a server known to have
/// no GET stream (kept in the map all the same, so a config change does not ask it
/// again for every open client stream at once).
struct Reader {
    fingerprint: [u8; 16],
    task: Option<JoinHandle<()>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Ends a client stream the gateway closes: the last chunk. A client that has gone
/// already is not an error.
async fn end(session: &mut ServerSession) -> Result<bool> {
    if let Err(e) = session.finish_body().await {
        tracing::debug!(error = %e, "could not end a client stream");
    }
    Ok(true)
}

/// Counts a client stream in `gatehouse_open_streams` while it lives.
struct OpenStream(prometheus::IntGauge);

impl OpenStream {
    fn new(gauge: &prometheus::IntGaugeVec, transport: &str) -> OpenStream {
        let g = gauge.with_label_values(&[transport]);
        g.inc();
        OpenStream(g)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ClientStream {
    /// Writes the response header, `first` (replayed events, or the legacy `endpoint`
    /// event) and then events until the stream ends. Returns `Ok(true)`: answered.
    pub async fn serve(mut self, session: &mut ServerSession, first: Vec<Bytes>) -> Result<bool> {
        let mut head = ResponseHeader::build_no_case(200, Some(5))?;
        head.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
        head.insert_header(header::CACHE_CONTROL, "no-cache")?;
        head.insert_header("x-accel-buffering", "no")?;
        // Chunked, so a stream the gateway ends (DELETE, revocation, expiry) closes with a
        // last chunk and leaves the client's connection open for its next request.
        head.insert_header(header::TRANSFER_ENCODING, "chunked")?;
        session.write_response_header(Box::new(head)).await?;
        let transport = match self.framing {
            Framing::Legacy => Transport::LegacySse,
            Framing::Streamable { .. } => Transport::StreamableHttp,
            Framing::Listen { .. } => Transport::Stateless,
        };
        let _open = OpenStream::new(&self.state.metrics.open_streams, transport.as_label());
        let (merged_tx, mut merged_rx) = mpsc::channel::<String>(MERGE_BUFFER);
        let mut readers: HashMap<String, Reader> = HashMap::new();
        let mut rt = self.state.config.load();
        let mut signature = workspace_signature(&rt, &self.workspace);
        let Some(mut expires_at) = self.token_check(&rt) else {
            return end(session).await;
        };
        let ready = match self.env.clone() {
            Some(env) => self.reconcile(&rt, &env, &merged_tx, &mut readers),
            None => Vec::new(),
        };
        // A listen stream is acknowledged once its upstreams listen too, so a change
        // made right after the acknowledgement reaches it.
        if matches!(self.framing, Framing::Listen { .. }) {
            let _ = tokio::time::timeout(LISTEN_READY, futures::future::join_all(ready)).await;
        }
        for event in first.into_iter().filter(|e| !e.is_empty()) {
            session.write_response_body(event, false).await?;
        }
        let priming = match (&self.framing, &self.env) {
            (Framing::Streamable { counter: 0, .. }, Some(env))
                if env.client_version.as_str() >= "2025-11-25" =>
            {
                Some(self.frame_priming())
            }
            _ => None,
        };
        if let Some(event) = priming {
            session.write_response_body(event, false).await?;
        }
        let mut keep_alive = tokio::time::interval(keep_alive_every());
        keep_alive.tick().await;
        let mut watch = tokio::time::interval(WATCH_EVERY);
        let client_gone = loop {
            let inbox = self.inbox.as_mut();
            let write: Option<Bytes> = tokio::select! {
                closed = session.read_body_or_idle(true) => {
                    tracing::debug!(workspace = %self.workspace, closed = ?closed.err(), "client stream closed by the client");
                    break true;
                }
                Some(json) = merged_rx.recv() => Some(self.frame(json.as_bytes())),
                input = async { match inbox { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                    match input {
                        Some(StreamInput::Message(json)) => Some(self.frame(&json)),
                        Some(StreamInput::Attach(env)) => {
                            let env = Arc::new(*env);
                            self.env = Some(env.clone());
                            rt = self.state.config.load();
                            signature = workspace_signature(&rt, &self.workspace);
                            self.reconcile(&rt, &env, &merged_tx, &mut readers);
                            None
                        }
                        // The legacy session was dropped from the registry.
                        None => break false,
                    }
                }
                _ = keep_alive.tick() => Some(Bytes::from_static(b": keep-alive\n\n")),
                _ = watch.tick() => {
                    let ended = self.env.as_ref().is_some_and(|e| live().is_ended(e.sid));
                    let expired = expires_at.is_some_and(|at| unix_now() >= at);
                    if ended || expired {
                        break false;
                    }
                    let now = self.state.config.load();
                    if now.generation == rt.generation {
                        None
                    } else {
                        rt = now;
                        match self.token_check(&rt) {
                            Some(at) => expires_at = at,
                            None => break false,
                        }
                        let changed = workspace_signature(&rt, &self.workspace);
                        let announce = changed != signature;
                        signature = changed;
                        if let Some(env) = self.env.clone() {
                            self.reconcile(&rt, &env, &merged_tx, &mut readers);
                        }
                        announce.then(|| self.list_changed())
                    }
                }
            };
            // An event the stream does not carry frames to nothing, and an empty chunk
            // would end a chunked body.
            if let Some(bytes) = write.filter(|b| !b.is_empty()) {
                if let Err(e) = session.write_response_body(bytes, false).await {
                    tracing::debug!(workspace = %self.workspace, error = %e, "client stream write failed");
                    break true;
                }
            }
        };
        drop(readers);
        if client_gone {
            return Ok(true);
        }
        end(session).await
    }

    /// Checks the token the stream was opened with against `rt`: still there, not
    /// revoked, for this workspace and session. Returns its expiry; `None` if the
    /// stream must end. (Run when the config changes; expiry is checked each tick.)
    fn token_check(&self, rt: &Runtime) -> Option<Option<u64>> {
        if !rt.workspaces.contains_key(&self.workspace) {
            return None;
        }
        let token = rt
            .tokens
            .authenticate(self.authorization.as_deref(), &self.workspace, unix_now())
            .ok()?;
        let same_session = self.env.as_ref().is_none_or(|e| *token.id == *e.token_id);
        same_session.then_some(token.expires_at)
    }

    /// Starts readers for servers that have none, stops those of servers that are
    /// gone or changed. Returns, for each reader started, when its upstream stream is
    /// open (or known not to be).
    fn reconcile(
        &self,
        rt: &Arc<Runtime>,
        env: &Arc<SessionEnvelope>,
        merged: &mpsc::Sender<String>,
        readers: &mut HashMap<String, Reader>,
    ) -> Vec<oneshot::Receiver<()>> {
        let mut ready = Vec::new();
        let Some(ws) = rt.workspaces.get(&self.workspace) else {
            readers.clear();
            return ready;
        };
        readers.retain(|slug, r| {
            ws.server(slug)
                .is_some_and(|s| s.enabled && s.usable() && s.fingerprint == r.fingerprint)
        });
        for server in ws.servers.iter().filter(|s| s.enabled && s.usable()) {
            if readers.contains_key(&server.slug) {
                continue;
            }
            let filter = match &self.framing {
                Framing::Listen { filter, .. } => Some(upstream_filter(ws, server, filter)),
                _ => None,
            };
            let task = (server.may_offer_get_stream() || filter.is_some()).then(|| {
                let (opened, opened_rx) = oneshot::channel();
                ready.push(opened_rx);
                tokio::spawn(read_upstream(
                    self.state.clone(),
                    rt.clone(),
                    env.clone(),
                    server.clone(),
                    merged.clone(),
                    filter,
                    opened,
                ))
            });
            readers.insert(
                server.slug.clone(),
                Reader {
                    fingerprint: server.fingerprint,
                    task,
                },
            );
        }
        ready
    }

    fn list_changed(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        for what in ["tools", "prompts", "resources"] {
            let json =
                format!(r#"{{"jsonrpc":"2.0","method":"notifications/{what}/list_changed"}}"#);
            out.extend_from_slice(&self.frame(json.as_bytes()));
        }
        out.freeze()
    }

    /// One message as an event of this stream.
    fn frame(&mut self, json: &[u8]) -> Bytes {
        self.framing.event(json)
    }

    /// The 2025-11-25 priming event: an id and empty data, so a client that loses
    /// the stream before any message can still resume it.
    fn frame_priming(&mut self) -> Bytes {
        match &self.framing {
            Framing::Streamable { nonce, counter, .. } => {
                Bytes::from(format!("id: {nonce}-{counter}\ndata:\n\n"))
            }
            Framing::Legacy | Framing::Listen { .. } => Bytes::new(),
        }
    }
}

/// What, in a workspace, decides which tools, prompts and resources a client sees:
/// its enabled servers and everything that shapes their lists (URL, credentials,
/// policy — the fingerprint).
fn workspace_signature(rt: &Runtime, workspace: &str) -> Vec<(String, [u8; 16])> {
    rt.workspaces
        .get(workspace)
        .map(|ws| {
            ws.servers
                .iter()
                .filter(|s| s.enabled)
                .map(|s| (s.slug.clone(), s.fingerprint))
                .collect()
        })
        .unwrap_or_default()
}

/// Relays one upstream's server-to-client stream into `merged` for as long as the
/// client stream lives (the task is aborted with it), whatever the upstream speaks. A
/// stream that breaks is reopened (with `Last-Event-ID` where there is one); an
/// upstream without one (405) contributes nothing; one that sends garbage is dropped —
/// only it.
async fn read_upstream(
    state: Arc<Shared>,
    rt: Arc<Runtime>,
    env: Arc<SessionEnvelope>,
    server: Arc<ServerRt>,
    merged: mpsc::Sender<String>,
    filter: Option<serde_json::Value>,
    opened: oneshot::Sender<()>,
) {
    let mut opened = Some(opened);
    let mut last_event_id: Option<String> = None;
    let mut failures: u32 = 0;
    loop {
        let stream = state
            .upstreams
            .server_stream(
                &rt,
                &env,
                &server,
                last_event_id.as_deref(),
                filter.as_ref(),
            )
            .await;
        // Open, or known not to be: nobody waits for this reader any longer.
        if let Some(tx) = opened.take() {
            let _ = tx.send(());
        }
        match stream {
            Ok(None) => {
                // What a stateless client's listen found says nothing of the GET
                // streams of sessions.
                if !is_stateless(&env) {
                    server.mark_no_get_stream();
                }
                tracing::debug!(server = %server.slug, "upstream has no GET stream");
                return;
            }
            Ok(Some(stream)) => {
                failures = 0;
                let relay = Relay {
                    keys: &rt.keys,
                    sid: env.sid,
                    server: &server.slug,
                    bare: server.naming == gatehouse_config::Naming::Bare,
                    complete_results: false,
                };
                let pumped = pump(
                    &state,
                    &env.workspace,
                    &relay,
                    stream,
                    &merged,
                    &mut last_event_id,
                )
                .await;
                match pumped {
                    Pumped::Ended => {}
                    Pumped::ClientGone => return,
                    Pumped::Garbage(why) => {
                        tracing::warn!(workspace = %env.workspace, server = %server.slug, why, "upstream sent garbage on its event stream; disconnected it");
                        state.upstreams.count_error(
                            &env.workspace,
                            &server.slug,
                            &UpstreamError::Protocol(why),
                        );
                        return;
                    }
                }
            }
            Err(UpstreamError::SessionGone) => {
                tracing::info!(server = %server.slug, "upstream ended the session behind a client stream");
                return;
            }
            Err(e) => {
                tracing::debug!(server = %server.slug, error = %e, "upstream stream could not be opened");
                failures += 1;
            }
        }
        let backoff = Duration::from_millis(100u64 << failures.min(7)).min(MAX_BACKOFF);
        tokio::time::sleep(backoff).await;
    }
}

enum Pumped {
    Ended,
    ClientGone,
    Garbage(String),
}

/// Relays one opened stream until it ends.
async fn pump(
    state: &Shared,
    workspace: &str,
    relay: &Relay<'_>,
    stream: ServerStream,
    merged: &mpsc::Sender<String>,
    last_event_id: &mut Option<String>,
) -> Pumped {
    let forward = async |data: &str| -> Result<(), Pumped> {
        let out = match relay.outbound(data) {
            Ok(out) => out,
            Err(garbage) => return Err(Pumped::Garbage(garbage.to_string())),
        };
        match out.kind {
            MessageKind::ToolsChanged => state.catalogs.invalidate(workspace, relay.server),
            // Never sent on a server stream except when resuming; not ours to pass on.
            MessageKind::Response => return Ok(()),
            _ => {}
        }
        match merged.send(out.json.into_owned()).await {
            Ok(()) => Ok(()),
            Err(_) => Err(Pumped::ClientGone),
        }
    };
    match stream {
        ServerStream::Http(resp) => {
            let mut splitter = SseSplitter::default();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else {
                    return Pumped::Ended;
                };
                splitter.push(&chunk);
                while let Some(event) = splitter.next_event() {
                    if let Some(id) = event.id {
                        *last_event_id = Some(id);
                    }
                    // A priming event carries no message.
                    if event.data.is_empty() {
                        continue;
                    }
                    if let Err(end) = forward(&event.data).await {
                        return end;
                    }
                }
                if splitter.buffered() > MAX_UPSTREAM_EVENT {
                    return Pumped::Garbage(format!(
                        "an event larger than {MAX_UPSTREAM_EVENT} bytes"
                    ));
                }
            }
            Pumped::Ended
        }
        ServerStream::Lines(resp) => {
            let mut pending = BytesMut::new();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else {
                    return Pumped::Ended;
                };
                pending.extend_from_slice(&chunk);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line = pending.split_to(end + 1);
                    let Ok(text) = std::str::from_utf8(&line) else {
                        return Pumped::Garbage("a line that is not UTF-8".into());
                    };
                    let text = text.trim();
                    if text.is_empty() {
                        continue;
                    }
                    if let Err(end) = forward(text).await {
                        return end;
                    }
                }
                if pending.len() > MAX_UPSTREAM_EVENT {
                    return Pumped::Garbage(format!(
                        "a line longer than {MAX_UPSTREAM_EVENT} bytes"
                    ));
                }
            }
            Pumped::Ended
        }
        ServerStream::Legacy(backlog, mut rx) => {
            let mut backlog = backlog.into_iter();
            loop {
                let next = match backlog.next() {
                    Some(data) => Ok(data),
                    None => rx.recv().await,
                };
                match next {
                    // What a legacy server says is not judged here: its session
                    // reader already dropped what is not JSON-RPC.
                    Ok(data) => {
                        if let Err(Pumped::ClientGone) = forward(&data).await {
                            return Pumped::ClientGone;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(server = %relay.server, missed = n, "a client stream fell behind a legacy upstream");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Pumped::Ended,
                }
            }
        }
    }
}
