//! Every upstream MCP server, whatever it speaks, behind one set of operations the
//! gateway needs — open a session, ask, tell, route a call, open the server's stream,
//! close — and one layer around them: this is the one place that finds (or lazily
//! opens) the upstream session of a client session, reopens one an upstream forgot
//! when that is safe, measures upstream latency and counts upstream errors.
//!
//! A [`Connector`] says how one server is reached: Streamable HTTP ([`http`]), the
//! legacy HTTP+SSE transport ([`sse`]) or a skill the gateway runs itself ([`skill`]).
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
use http::HeaderMap;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::config::runtime::{Runtime, ServerRt, WorkspaceRt};
use crate::metrics::Metrics;
use crate::skill::SkillRt;
use crate::upstream::error::{Initialized, UpstreamError};
use crate::upstream::http::{HttpUpstreams, SessionRef};
use crate::upstream::pool;
use crate::upstream::sse::LegacySessions;

/// Upper bound on upstream sessions opened lazily (for servers added after a client
/// initialized); beyond it the cache is emptied and sessions are reopened on demand.
const MAX_LAZY_SESSIONS: usize = 100_000;
/// A bound on pages protects against an upstream that never stops paging.
const MAX_PAGES: usize = 1000;

/// How one upstream server is reached.
pub enum Connector<'a> {
    Http,
    Legacy,
    Skill(&'a SkillRt),
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
    /// A Streamable HTTP GET stream.
    Http(reqwest::Response),
    /// A legacy SSE session's unsolicited messages: what was said while nobody
    /// listened, then the rest.
    Legacy(Vec<String>, broadcast::Receiver<String>),
}

pub struct Upstreams {
    http: HttpUpstreams,
    legacy: LegacySessions,
    /// (client session, server) -> an upstream session the envelope does not hold.
    lazy: DashMap<([u8; 16], String), UpstreamSession>,
    metrics: Arc<Metrics>,
}

impl Upstreams {
    pub fn new(metrics: Arc<Metrics>) -> Upstreams {
        Upstreams {
            http: HttpUpstreams::new(),
            legacy: LegacySessions::default(),
            lazy: DashMap::new(),
            metrics,
        }
    }

    /// Opens a session with `server` for the client session `env` (at `initialize`).
    pub async fn open(
        &self,
        env: &SessionEnvelope,
        server: &ServerRt,
        timeout: Duration,
    ) -> Result<Opened, UpstreamError> {
        let opened = match Connector::of(server) {
            Connector::Skill(_) => Err(UpstreamError::Unusable(
                "a skill has no session to open".into(),
            )),
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
        let opened = self
            .http
            .initialize(
                server,
                &env.client_version,
                &client_init,
                Duration::from_millis(rt.limits.initialize_timeout_ms),
            )
            .await?;
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
        for _attempt in 0..2 {
            let started = Instant::now();
            let result = match Connector::of(server) {
                Connector::Skill(_) => {
                    Err(UpstreamError::Unusable("a skill answers tools only".into()))
                }
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
        let sent = match Connector::of(server) {
            Connector::Skill(_) => Ok(()),
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
    /// upstream) and hands back the reply to relay. Never repeated once the server may
    /// have seen it: the tool may have run. Latency is measured from the send to the
    /// reply's head.
    pub async fn call(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        call: &ToolCall,
        forwarded: &HeaderMap,
    ) -> Result<CallReply, UpstreamError> {
        let server = &call.server;
        let mut started = Instant::now();
        let reply = match Connector::of(server) {
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
            Connector::Http => match self.session_for(rt, env, server).await {
                Ok(session) => {
                    started = Instant::now();
                    self.http
                        .routed(server, session_ref(&session), call.body.clone(), forwarded)
                        .await
                        .map(CallReply::Http)
                }
                Err(e) => Err(e),
            },
        };
        if !matches!(reply, Ok(CallReply::Legacy(_))) {
            self.observe(env, server, started, &reply);
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
            outcome = conn
                .call_streaming(
                    call.body.clone(),
                    &call.request_id,
                    progress_token.clone(),
                    server.call_timeout,
                    on_message,
                )
                .await;
            if !matches!(outcome, Err(UpstreamError::SessionGone)) {
                break;
            }
        }
        self.observe(env, server, started, &outcome);
        outcome
    }

    /// Opens what the server says on its own for a client stream (`Last-Event-ID` to
    /// resume a Streamable HTTP one); `Ok(None)` when it offers nothing (405).
    pub async fn server_stream(
        &self,
        rt: &Runtime,
        env: &SessionEnvelope,
        server: &ServerRt,
        last_event_id: Option<&str>,
    ) -> Result<Option<ServerStream>, UpstreamError> {
        let opened = match Connector::of(server) {
            Connector::Skill(_) => Ok(None),
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
        self.metrics
            .upstream_seconds
            .with_label_values(&[&env.workspace, &server.slug])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            self.count_error(&env.workspace, &server.slug, e);
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

fn session_ref(session: &UpstreamSession) -> SessionRef<'_> {
    SessionRef {
        session_id: session.session_id.as_deref(),
        protocol_version: &session.protocol_version,
    }
}
