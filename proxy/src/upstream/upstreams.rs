//! Every upstream MCP server, whatever it speaks, behind one set of operations the
//! gateway needs — open a session, ask, tell, route a call, open the server's stream,
//! close — and one layer around them: this is the one place that finds (or lazily
//! opens) the upstream session of a client session, reopens one an upstream forgot
//! when that is safe, measures upstream latency and counts upstream errors.
//!
//! A [`Connector`] says how one server is reached: Streamable HTTP ([`http`]) with a
//! session, or statelessly when both the client and the server speak the modern era
//! (2026-07-28: asked once per server config with `server/discover`), the legacy
//! HTTP+SSE transport ([`sse`]) or a skill the gateway runs itself ([`skill`]).
//!
//! A modern client has no session with the gateway: it is served under a stateless
//! envelope (one per workspace, token and client capabilities), so an upstream of the
//! older era gets a session the client never opened — opened lazily, kept in a
//! bounded pool, reopened when the upstream forgets it. Any replica rebuilds it.
//!
//! [`http`]: crate::upstream::http
//! [`sse`]: crate::upstream::sse
//! [`skill`]: crate::skill

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashmap::DashMap;
use gatehouse_mcp::envelope::{SessionEnvelope, UpstreamSession};
use gatehouse_mcp::jsonrpc;
use gatehouse_mcp::{modern, versions};
use http::HeaderMap;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::config::runtime::{Runtime, ServerRt, WorkspaceRt};
use crate::metrics::Metrics;
use crate::skill::SkillRt;
use crate::upstream::breaker::{self, Breakers, Change};
use crate::upstream::error::{Initialized, UpstreamError};
use crate::upstream::gate::{Gates, InFlight};
use crate::upstream::http::{Discovered, HttpUpstreams, ListenFraming, SessionRef};
use crate::upstream::pool;
use crate::upstream::sse::LegacySessions;

/// Upper bound on upstream sessions opened lazily (for servers added after a client
/// initialized); beyond it the cache is emptied and sessions are reopened on demand.
const MAX_LAZY_SESSIONS: usize = 100_000;
/// A bound on pages protects against an upstream that never stops paging.
const MAX_PAGES: usize = 1000;

/// How one upstream server is reached.
pub enum Connector<'a> {
    /// Streamable HTTP with a session (the legacy era).
    Http,
    /// Streamable HTTP without one: a modern client and a modern server.
    Modern,
    Legacy,
    Skill(&'a SkillRt),
}

/// Whether a client session is a modern client's stateless envelope.
pub fn is_stateless(env: &SessionEnvelope) -> bool {
    versions::is_modern(&env.client_version)
}

impl<'a> Connector<'a> {
    pub fn of(server: &'a ServerRt) -> Connector<'a> {
        match &server.skill {
            Some(skill) => Connector::Skill(skill),
            None if server.is_legacy_sse() => Connector::Legacy,
            None => Connector::Http,
        }
    }
}

/// A session opened with one upstream at `initialize`.
pub struct Opened {
    pub init: Initialized,
    /// The session to seal into the client's envelope; `None` for a legacy SSE
    /// session, which is a connection held by this replica.
    pub sealed: Option<UpstreamSession>,
}

/// A routed `tools/call`: the server, the body as the upstream must see it, and the
/// client's request id (raw JSON).
pub struct ToolCall {
    pub server: Arc<ServerRt>,
    /// The tool's name on the upstream.
    pub upstream_name: String,
    /// The request with the tool name the upstream knows.
    pub body: Bytes,
    pub request_id: String,
    /// The tool is annotated read-only or idempotent: refused, it is sent once more.
    pub retry_safe: bool,
}

/// How long a refused call of a retry-safe tool waits before it is sent again.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// Whether an upstream refused a call before running it, by all signs: no connection,
/// or a gateway's or overloaded server's 502/503/504 (not its own JSON-RPC error).
fn refused(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::Connect | UpstreamError::Status(502..=504))
}

/// What an upstream answers a routed call with.
pub enum CallReply {
    /// A Streamable HTTP reply, its body as it arrives.
    Http(pool::Reply),
    /// A legacy SSE upstream's session, to send the call over with
    /// [`Upstreams::call_legacy`]: its answer arrives on the session's stream.
    Legacy(Arc<crate::upstream::sse::LegacyUpstream>),
    /// A complete JSON-RPC response (a skill's result).
    Done(Bytes),
}

/// What the server says on its own, for a client stream.
pub enum ServerStream {
    /// A Streamable HTTP GET stream, or a modern server's listen stream.
    Http(reqwest::Response),
    /// A listen stream of one JSON message per line.
    Lines(reqwest::Response),
    /// A legacy SSE session's unsolicited messages: what was said while nobody
    /// listened, then the rest.
    Legacy(Vec<String>, broadcast::Receiver<String>),
}

pub struct Upstreams {
    http: HttpUpstreams,
    legacy: LegacySessions,
    /// (client session, server) -> an upstream session the envelope does not hold.
    lazy: DashMap<([u8; 16], String), UpstreamSession>,
    /// (workspace, server) -> the capabilities it announced when a lazily opened
    /// session was initialized, for as long as its config is unchanged.
    lazy_capabilities: DashMap<(String, String), ([u8; 16], Value)>,
    /// (workspace, server) -> which era a Streamable HTTP server speaks.
    /// What `server/discover` found out, per server config (its fingerprint covers
    /// the URL, naming and rendered headers: one upstream, as this proxy reaches it);
    /// `None` for a server of the older era.
    eras: DashMap<[u8; 16], Option<Arc<Discovered>>>,
    /// Each upstream's circuit breaker, by fingerprint.
    breakers: Breakers,
    /// Each upstream's cap on calls in flight, by fingerprint.
    gates: Gates,
    metrics: Arc<Metrics>,
}

impl Upstreams {
    pub fn new(metrics: Arc<Metrics>) -> Upstreams {
        Upstreams {
            http: HttpUpstreams::new(),
            legacy: LegacySessions::default(),
            lazy: DashMap::new(),
            lazy_capabilities: DashMap::new(),
            eras: DashMap::new(),
            breakers: Breakers::default(),
            gates: Gates::default(),
            metrics,
        }
    }

    /// How `server` is reached in client session `env`: statelessly when the client
    /// is modern and the server is too; otherwise as its config says.
    async fn connector<'a>(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &'a ServerRt,
    ) -> Connector<'a> {
        match Connector::of(server) {
            Connector::Http if is_stateless(env) => {
                match self.discovered(rt, &env.workspace, server).await {
                    Some(_) => Connector::Modern,
                    None => Connector::Http,
                }
            }
            other => other,
        }
    }

    /// What a modern server said in `server/discover`; `None` for a server of the
    /// older era (or one that could not be asked now: asked again next time). Asked
    /// once per server config.
    pub async fn discovered(
        &self,
        rt: &Runtime,
        workspace: &str,
        server: &ServerRt,
    ) -> Option<Arc<Discovered>> {
        if !matches!(Connector::of(server), Connector::Http) {
            return None;
        }
        if let Some(known) = self.eras.get(&server.fingerprint) {
            return known.clone();
        }
        let timeout = Duration::from_millis(rt.limits.initialize_timeout_ms);
        let started = Instant::now();
        let found = self.http.discover(server, timeout).await;
        self.latency(workspace, server, started);
        match found {
            Ok(found) => {
                let modern = found.map(Arc::new);
                self.eras.insert(server.fingerprint, modern.clone());
                modern
            }
            Err(e) => {
                self.count_error(workspace, &server.slug, &e);
                None
            }
        }
    }

    /// The capabilities `server` announced to this proxy, as far as it knows them
    /// without asking: a modern server's discovery, or the `initialize` of a session
    /// it lazily opened for a stateless client.
    pub async fn known_capabilities(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
    ) -> Option<Value> {
        if let Some(d) = self.discovered(rt, &env.workspace, server).await {
            return Some(d.capabilities.clone());
        }
        self.lazy_capabilities
            .get(&(env.workspace.clone(), server.slug.clone()))
            .filter(|c| c.0 == server.fingerprint)
            .map(|c| c.1.clone())
    }

    /// Forgets what is known of servers a new config changed or removed.
    pub fn retain_for(&self, rt: &Runtime) {
        let current = |ws: &str, server: &str, fp: &[u8; 16]| {
            rt.workspaces
                .get(ws)
                .and_then(|w| w.server(server))
                .is_some_and(|s| s.fingerprint == *fp)
        };
        let configured: std::collections::HashSet<[u8; 16]> = rt
            .workspaces
            .values()
            .flat_map(|w| w.servers.iter().map(|s| s.fingerprint))
            .collect();
        self.eras.retain(|fp, _| configured.contains(fp));
        self.lazy_capabilities
            .retain(|(ws, server), (fp, _)| current(ws, server, fp));
    }

    /// Opens a session with `server` for the client session `env` (at `initialize`).
    pub async fn open(
        &self,
        env: &SessionEnvelope,
        server: &ServerRt,
        timeout: Duration,
    ) -> Result<Opened, UpstreamError> {
        // Only a client of the session era opens sessions.
        let opened = match Connector::of(server) {
            Connector::Skill(_) | Connector::Modern => {
                Err(UpstreamError::Unusable("it has no session to open".into()))
            }
            Connector::Legacy => self
                .legacy
                .open(self.http.http(), env, server, timeout)
                .await
                .map(|init| Opened { init, sealed: None }),
            Connector::Http => {
                let client_init = client_init(env)?;
                self.http
                    .initialize(server, &env.client_version, &client_init, timeout)
                    .await
                    .map(|init| Opened {
                        sealed: Some(UpstreamSession {
                            server: server.slug.clone(),
                            session_id: init.session_id.clone(),
                            protocol_version: init.protocol_version.clone(),
                        }),
                        init,
                    })
            }
        };
        if let Err(e) = &opened {
            self.count_error(&env.workspace, &server.slug, e);
        }
        opened
    }

    /// Takes over upstream sessions as lazily opened ones, so one an upstream forgets
    /// is reopened instead of ending the client session (legacy SSE clients, whose
    /// session lives as long as their stream on this replica).
    pub fn adopt(&self, sid: [u8; 16], sessions: Vec<UpstreamSession>) {
        if self.lazy.len() + sessions.len() >= MAX_LAZY_SESSIONS {
            self.lazy.clear();
        }
        for s in sessions {
            self.lazy.insert((sid, s.server.clone()), s);
        }
    }

    /// The upstream session to use for `server` in this client session: the one
    /// sealed in the envelope, or one opened (and kept) now.
    async fn session_for(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
    ) -> Result<UpstreamSession, UpstreamError> {
        if let Some(s) = env.upstream(&server.slug) {
            return Ok(s.clone());
        }
        let key = (env.sid, server.slug.clone());
        if let Some(s) = self.lazy.get(&key) {
            return Ok(s.clone());
        }
        let client_init = client_init(env)?;
        // A stateless client's pooled session speaks the newest version of its era.
        let version = match is_stateless(env) {
            true => versions::LATEST_VERSION,
            false => env.client_version.as_str(),
        };
        let opened = self
            .http
            .initialize(
                server,
                version,
                &client_init,
                Duration::from_millis(rt.limits.initialize_timeout_ms),
            )
            .await?;
        self.lazy_capabilities.insert(
            (env.workspace.clone(), server.slug.clone()),
            (server.fingerprint, opened.capabilities.clone()),
        );
        let session = UpstreamSession {
            server: server.slug.clone(),
            session_id: opened.session_id,
            protocol_version: opened.protocol_version,
        };
        if self.lazy.len() >= MAX_LAZY_SESSIONS {
            self.lazy.clear();
        }
        self.lazy.insert(key, session.clone());
        Ok(session)
    }

    /// Makes sure client session `env` has its session with `server` (a stateless
    /// client's pooled one, opened now if needed); nothing to do for a server without
    /// sessions.
    pub async fn open_pooled(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
    ) -> Result<(), UpstreamError> {
        match self.connector(rt, env, server).await {
            Connector::Http => self.session_for(rt, env, server).await.map(|_| ()),
            Connector::Legacy => self.legacy_session(rt, env, server).await.map(|_| ()),
            Connector::Modern | Connector::Skill(_) => Ok(()),
        }
    }

    /// The legacy SSE session of `server` in this client session on this replica.
    async fn legacy_session(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
    ) -> Result<Arc<crate::upstream::sse::LegacyUpstream>, UpstreamError> {
        let timeout = Duration::from_millis(rt.limits.initialize_timeout_ms);
        self.legacy
            .get_or_open(self.http.http(), env, server, timeout)
            .await
    }

    /// Whether an upstream session that is gone can be replaced without the client:
    /// a lazily opened one (forgotten here, so the next request opens another) or a
    /// legacy SSE one (this replica's own). One sealed in the envelope cannot: the
    /// client must re-initialize.
    fn forget(&self, env: &SessionEnvelope, server: &ServerRt) -> bool {
        let lazy = self.lazy.remove(&(env.sid, server.slug.clone())).is_some();
        lazy || server.is_legacy_sse()
    }

    /// Sends a request of the gateway's own and returns its `result`; a replaceable
    /// session the upstream forgot is reopened once.
    pub async fn ask(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        self.breakers.admit(&server.fingerprint)?;
        let connector = self.connector(rt, env, server).await;
        // A stateless client's request to an older server: without the era's `_meta`.
        let mut params = params;
        if is_stateless(env) && !matches!(connector, Connector::Modern) {
            modern::strip_request_meta(&mut params);
        }
        for _attempt in 0..2 {
            let started = Instant::now();
            let result = match &connector {
                Connector::Skill(_) => {
                    Err(UpstreamError::Unusable("a skill answers tools only".into()))
                }
                Connector::Modern => self
                    .http
                    .call(
                        server,
                        Some(SessionRef::MODERN),
                        method,
                        with_meta(params.clone(), env),
                        timeout,
                    )
                    .await
                    .map(|(result, _)| result),
                Connector::Legacy => match self.legacy_session(rt, env, server).await {
                    Ok(conn) => conn.call(method, params.clone(), timeout).await,
                    Err(e) => Err(e),
                },
                Connector::Http => match self.session_for(rt, env, server).await {
                    Ok(session) => self
                        .http
                        .call(
                            server,
                            Some(session_ref(&session)),
                            method,
                            params.clone(),
                            timeout,
                        )
                        .await
                        .map(|(result, _)| result),
                    Err(e) => Err(e),
                },
            };
            self.observe(env, server, started, &result);
            match result {
                Err(UpstreamError::SessionGone) if self.forget(env, server) => continue,
                other => return other,
            }
        }
        Err(UpstreamError::SessionGone)
    }

    /// Every item of one server's list (`method`, items in `field`), following
    /// `nextCursor` to the end. A skill's tools are in its config.
    pub async fn list_all(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
        method: &str,
        field: &str,
    ) -> Result<Vec<Value>, UpstreamError> {
        if let Connector::Skill(skill) = Connector::of(server) {
            return Ok(if method == "tools/list" {
                skill.tool_list()
            } else {
                Vec::new()
            });
        }
        let timeout = Duration::from_millis(rt.limits.initialize_timeout_ms);
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let mut result = self.ask(rt, env, server, method, params, timeout).await?;
            match result.get_mut(field).map(Value::take) {
                Some(Value::Array(page)) => all.extend(page),
                _ => return Err(UpstreamError::Protocol(format!("{method} without {field}"))),
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_string);
            if cursor.is_none() {
                return Ok(all);
            }
        }
        Err(UpstreamError::Protocol(format!(
            "{method} paged more than {MAX_PAGES} times"
        )))
    }

    /// Sends a notification or a response; the upstream accepts it without a reply.
    pub async fn tell(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
        body: Bytes,
    ) -> Result<(), UpstreamError> {
        let timeout = Duration::from_millis(rt.limits.initialize_timeout_ms);
        let sent = match self.connector(rt, env, server).await {
            // A modern server takes no notifications over HTTP (closing a reply
            // stream is how a call is cancelled).
            Connector::Skill(_) | Connector::Modern => Ok(()),
            Connector::Legacy => {
                self.legacy_session(rt, env, server)
                    .await?
                    .send(body, timeout)
                    .await
            }
            Connector::Http => {
                let session = self.session_for(rt, env, server).await?;
                self.http
                    .send(server, session_ref(&session), body, timeout)
                    .await
            }
        };
        if matches!(sent, Err(UpstreamError::SessionGone)) {
            self.forget(env, server);
        }
        sent
    }

    /// Sends a routed `tools/call` (with the client's `forwarded` headers, to an HTTP
    /// upstream) once the server's cap on calls in flight lets it, and hands back the
    /// reply to relay with the call's place among them: hold it until the reply has
    /// been relayed. Never repeated once the server may have seen it (the tool may
    /// have run), except a tool annotated read-only or idempotent whose server
    /// refused it (no connection, HTTP 502/503/504): once more, after
    /// [`RETRY_AFTER`]. Latency is measured from the send to the reply's head; an HTTP
    /// reply's relay must end in [`Upstreams::relayed`], for its circuit breaker.
    pub async fn call(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        call: &ToolCall,
        forwarded: &HeaderMap,
    ) -> Result<(CallReply, InFlight), UpstreamError> {
        let server = &call.server;
        self.breakers.admit(&server.fingerprint)?;
        let entered = self
            .gates
            .enter(
                &server.fingerprint,
                server.max_in_flight,
                server.max_queued,
                server.call_timeout,
            )
            .await;
        let in_flight = match entered {
            Ok(in_flight) => in_flight,
            Err(e) => {
                self.count_error(&env.workspace, &server.slug, &e);
                return Err(e);
            }
        };
        let mut reply = self.send_call(rt, env, call, forwarded).await;
        // Sent again once, for a tool that does no more the second time, unless its
        // failures just opened the breaker.
        if call.retry_safe
            && reply.as_ref().err().is_some_and(refused)
            && self.breakers.admit(&server.fingerprint).is_ok()
        {
            self.metrics
                .retries
                .with_label_values(&[&env.workspace, &server.slug])
                .inc();
            tokio::time::sleep(RETRY_AFTER).await;
            reply = self.send_call(rt, env, call, forwarded).await;
        }
        Ok((reply?, in_flight))
    }

    async fn send_call(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        call: &ToolCall,
        forwarded: &HeaderMap,
    ) -> Result<CallReply, UpstreamError> {
        let server = &call.server;
        let mut started = Instant::now();
        let reply = match self.connector(rt, env, server).await {
            Connector::Skill(skill) => {
                let arguments = serde_json::from_slice::<Value>(&call.body)
                    .ok()
                    .and_then(|mut v| v.pointer_mut("/params/arguments").map(Value::take));
                let result = skill
                    .call(&rt.skills, &call.upstream_name, arguments.as_ref())
                    .await;
                let id: &serde_json::value::RawValue = serde_json::from_str(&call.request_id)
                    .map_err(|_| UpstreamError::Protocol("request id is not JSON".into()))?;
                let result = serde_json::to_vec(&result).expect("json");
                return Ok(CallReply::Done(jsonrpc::result(id, &result)));
            }
            Connector::Legacy => self
                .legacy_session(rt, env, server)
                .await
                .map(CallReply::Legacy),
            Connector::Modern => {
                started = Instant::now();
                self.http
                    .routed(
                        server,
                        SessionRef::MODERN,
                        call.body.clone(),
                        &call.upstream_name,
                        forwarded,
                    )
                    .await
                    .map(CallReply::Http)
            }
            Connector::Http => {
                let mut sent = Err(UpstreamError::SessionGone);
                // A pooled session of a stateless client that the upstream forgot is
                // reopened once: a refused session means the call did not run.
                for _attempt in 0..2 {
                    sent = match self.session_for(rt, env, server).await {
                        Ok(session) => {
                            started = Instant::now();
                            self.http
                                .routed(
                                    server,
                                    session_ref(&session),
                                    call.body.clone(),
                                    &call.upstream_name,
                                    forwarded,
                                )
                                .await
                                .map(CallReply::Http)
                        }
                        Err(e) => Err(e),
                    };
                    let retry = is_stateless(env)
                        && matches!(sent, Err(UpstreamError::SessionGone))
                        && self.forget(env, server);
                    if !retry {
                        break;
                    }
                }
                sent
            }
        };
        match &reply {
            // Its answer arrives on the session's stream: [`Upstreams::call_legacy`].
            Ok(CallReply::Legacy(_)) => {}
            // Its head: the relay tells how it ends ([`Upstreams::relayed`]).
            Ok(CallReply::Http(_)) => self.latency(&env.workspace, server, started),
            _ => self.observe(env, server, started, &reply),
        }
        if matches!(reply, Err(UpstreamError::SessionGone)) {
            self.forget(env, server);
        }
        reply
    }

    /// Sends a call over a legacy SSE session (from [`Upstreams::call`]) and waits for
    /// its response; what the server says meanwhile goes to `on_message`. "Session
    /// gone" here means the server refused the POST (the call did not run): one retry
    /// on a fresh session is safe.
    pub async fn call_legacy(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        call: &ToolCall,
        mut conn: Arc<crate::upstream::sse::LegacyUpstream>,
        on_message: &mut (dyn FnMut(&str) + Send),
    ) -> Result<String, UpstreamError> {
        let server = &call.server;
        let started = Instant::now();
        let progress_token = serde_json::from_slice::<Value>(&call.body)
            .ok()
            .and_then(|m| m.pointer("/params/_meta/progressToken").cloned());
        let mut outcome = Err(UpstreamError::SessionGone);
        for attempt in 0..2 {
            if attempt > 0 {
                conn = match self.legacy_session(rt, env, server).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        outcome = Err(e);
                        break;
                    }
                };
            }
            let left = server.max_call.saturating_sub(started.elapsed());
            let calling = conn.call_streaming(
                call.body.clone(),
                &call.request_id,
                progress_token.clone(),
                server.call_timeout.min(left),
                on_message,
            );
            outcome = tokio::time::timeout(left, calling)
                .await
                .unwrap_or(Err(UpstreamError::Timeout));
            if !matches!(outcome, Err(UpstreamError::SessionGone)) {
                break;
            }
        }
        self.observe(env, server, started, &outcome);
        outcome
    }

    /// Opens what the server says on its own for a client stream (`Last-Event-ID` to
    /// resume a Streamable HTTP one); `Ok(None)` when it offers nothing (405). A
    /// modern server's is its `subscriptions/listen` stream, opened with `filter`.
    pub async fn server_stream(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
        last_event_id: Option<&str>,
        filter: Option<&Value>,
    ) -> Result<Option<ServerStream>, UpstreamError> {
        let opened = match self.connector(rt, env, server).await {
            Connector::Skill(_) => Ok(None),
            Connector::Modern => {
                let notifications = filter.cloned().unwrap_or_else(|| {
                    json!({"toolsListChanged": true, "promptsListChanged": true, "resourcesListChanged": true})
                });
                let params = json!({"_meta": modern::upstream_meta(&client_init(env)?), "notifications": notifications});
                self.http.open_listen(server, params).await.map(|s| {
                    s.map(|(resp, framing)| match framing {
                        ListenFraming::Events => ServerStream::Http(resp),
                        ListenFraming::Lines => ServerStream::Lines(resp),
                    })
                })
            }
            Connector::Legacy => {
                let conn = self.legacy_session(rt, env, server).await?;
                match conn.subscribe() {
                    Some((backlog, rx)) => Ok(Some(ServerStream::Legacy(backlog, rx))),
                    None => Err(UpstreamError::SessionGone),
                }
            }
            Connector::Http => {
                let session = self.session_for(rt, env, server).await?;
                self.http
                    .open_stream(server, session_ref(&session), last_event_id)
                    .await
                    .map(|s| s.map(ServerStream::Http))
            }
        };
        if matches!(opened, Err(UpstreamError::SessionGone)) && !self.forget(env, server) {
            return Err(UpstreamError::SessionGone);
        }
        // Replaceable: the caller's next attempt opens a new one.
        opened.map_err(|e| match e {
            UpstreamError::SessionGone => {
                UpstreamError::Unusable("its session was replaced".into())
            }
            e => e,
        })
    }

    /// Ends every upstream session of a client session (on DELETE, or when a legacy
    /// stream closes): the legacy ones and the lazily opened ones are forgotten at
    /// once; the returned sessions are for [`Upstreams::delete`].
    pub fn end(&self, env: &SessionEnvelope) -> Vec<UpstreamSession> {
        self.legacy.close_all(env.sid);
        let mut ended: Vec<UpstreamSession> = env.upstreams.clone();
        let lazy: Vec<String> = self
            .lazy
            .iter()
            .filter(|e| e.key().0 == env.sid)
            .map(|e| e.key().1.clone())
            .collect();
        for server in lazy {
            if let Some((_, s)) = self.lazy.remove(&(env.sid, server)) {
                ended.push(s);
            }
        }
        ended
    }

    /// Asks each upstream of `ws` to end its session (`DELETE`, best effort).
    pub async fn delete(&self, ws: &WorkspaceRt, ended: &[UpstreamSession]) {
        let deletes = ended.iter().filter_map(|u| {
            let server = ws.server(&u.server)?;
            let id = u.session_id.as_deref()?;
            Some(self.http.delete_session(server, id))
        });
        futures::future::join_all(deletes).await;
    }

    /// The one place upstream latency is measured and upstream errors counted (an
    /// upstream's own JSON-RPC error is an answer, not a failure).
    pub fn observe<T>(
        &self,
        env: &SessionEnvelope,
        server: &ServerRt,
        started: Instant,
        result: &Result<T, UpstreamError>,
    ) {
        self.latency(&env.workspace, server, started);
        if let Err(e) = result {
            self.count_error(&env.workspace, &server.slug, e);
        }
        let change = self.breakers.record(&server.fingerprint, result);
        self.breaker_moved(&env.workspace, server, change);
    }

    fn latency(&self, workspace: &str, server: &ServerRt, started: Instant) {
        self.metrics
            .upstream_seconds
            .with_label_values(&[workspace, &server.slug])
            .observe(started.elapsed().as_secs_f64());
    }

    /// How the relay of a call's reply, whose head came back (see
    /// [`Upstreams::call`]), ended: with `failure` when the upstream did not answer
    /// usably after all (counted: a broken, stalled or oversized reply, or one that is
    /// not the call's response), else answered.
    pub fn relayed(&self, workspace: &str, server: &ServerRt, failure: Option<&UpstreamError>) {
        if let Some(e) = failure {
            self.count_error(workspace, &server.slug, e);
        }
        // A 4xx, or the server's own JSON-RPC error, is an answer however it is read.
        let failed = match failure {
            None | Some(UpstreamError::Rpc { .. }) => false,
            Some(UpstreamError::Status(code)) => *code >= 500,
            Some(_) => true,
        };
        let change = self.breakers.settle(&server.fingerprint, failed);
        self.breaker_moved(workspace, server, change);
    }

    fn breaker_moved(&self, workspace: &str, server: &ServerRt, change: Change) {
        let labels = [workspace, server.slug.as_str()];
        match change {
            Change::None => {}
            Change::Opened => {
                tracing::warn!(
                    workspace,
                    server = %server.slug,
                    "upstream failing: circuit breaker open for {} s",
                    breaker::COOL_DOWN.as_secs()
                );
                self.metrics.circuit_opened.with_label_values(&labels).inc();
                self.metrics.circuit_open.with_label_values(&labels).set(1);
            }
            Change::Closed => {
                tracing::info!(
                    workspace,
                    server = %server.slug,
                    "upstream answers again: circuit breaker closed"
                );
                self.metrics.circuit_open.with_label_values(&labels).set(0);
            }
        }
    }

    /// Counts a failed request to an upstream.
    pub fn count_error(&self, workspace: &str, server: &str, e: &UpstreamError) {
        if !matches!(e, UpstreamError::Rpc { .. }) {
            self.metrics
                .upstream_errors
                .with_label_values(&[workspace, server, e.as_label()])
                .inc();
        }
    }
}

fn client_init(env: &SessionEnvelope) -> Result<Value, UpstreamError> {
    serde_json::from_str(&env.client_init)
        .map_err(|_| UpstreamError::Protocol("client init parameters are corrupt".into()))
}

/// A request's params for a modern server: the client's own `_meta` when it has the
/// era's fields (a modern client's request), else the gateway's, made from the
/// client's init parameters.
fn with_meta(mut params: Value, env: &SessionEnvelope) -> Value {
    let has_version = params
        .pointer("/_meta")
        .and_then(|m| m.get(modern::META_PROTOCOL_VERSION))
        .is_some();
    if has_version || !params.is_object() {
        return params;
    }
    let Ok(init) = client_init(env) else {
        return params;
    };
    let Value::Object(ours) = modern::upstream_meta(&init) else {
        return params;
    };
    let meta = params
        .as_object_mut()
        .expect("an object")
        .entry("_meta")
        .or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        for (k, v) in ours {
            meta.entry(k).or_insert(v);
        }
    }
    params
}

fn session_ref(session: &UpstreamSession) -> SessionRef<'_> {
    SessionRef {
        session_id: session.session_id.as_deref(),
        protocol_version: &session.protocol_version,
    }
}
