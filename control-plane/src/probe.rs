//! What an MCP server at a URL speaks, found the way the specification tells a
//! client of unknown era to find out: POST `server/discover` as a 2026-07-28 client
//! (a stateless server lists its versions); failing that, POST `initialize`
//! (Streamable HTTP of the session era); on a 4xx, GET the URL expecting an event
//! stream whose first event is `endpoint` (legacy HTTP+SSE). Run once when a server is
//! installed without a transport, so that a legacy server installed by its `/sse` URL
//! is not saved as Streamable HTTP and then silently serve nothing.
//!
//! The probe is a client of the server like any other: it sends the literal headers
//! of the install (those that name no secret: secrets are set after the install), opens
//! one session, lists the tools and ends the session. It owns no state.
//!
//! It is also the control plane's one MCP client for reading a server's tools: the
//! dashboard's Tools page lists them with [`server_tools`], the same session over the
//! server's own transport, with its rendered headers. Which addresses it may reach
//! is the caller's `reqwest::Client` (see `outbound`).

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{json, Value};

/// How long the whole probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an event stream read while waiting for one event.
const MAX_STREAM_BYTES: usize = 4 << 20;
/// Pages of `tools/list` followed before the count is given up as unbounded.
const MAX_PAGES: usize = 50;
const PROTOCOL_VERSION: &str = "2025-11-25";
/// The stateless revision, asked first.
const MODERN_VERSION: &str = "2026-07-28";
const SESSION_HEADER: &str = "mcp-session-id";

/// What the server turned out to speak.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// `streamable_http` or `sse`, as the install stores it.
    pub transport: &'static str,
    /// The protocol version the server chose in its `initialize` answer, or
    /// 2026-07-28 for a server that listed it in `server/discover`.
    pub protocol_version: Option<String>,
    /// `serverInfo.name`.
    pub server: Option<String>,
    /// How many tools it lists to a client with no capabilities; `None` when listing
    /// failed.
    pub tools: Option<usize>,
    /// Those tools, when `tools` is `Some`.
    #[serde(skip)]
    pub listed: Vec<ListedTool>,
}

/// A tool as the server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTool {
    pub name: String,
    pub description: String,
    /// Annotated `readOnlyHint: true`.
    pub read_only: bool,
}

impl ListedTool {
    fn of(tool: &Value) -> Option<ListedTool> {
        Some(ListedTool {
            name: str_at(tool, "name")?,
            description: str_at(tool, "description").unwrap_or_default(),
            read_only: tool
                .pointer("/annotations/readOnlyHint")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// The tools of the server at `url` (its SSE endpoint when `legacy_sse`), asked over
/// one session sending `headers` (already rendered: secrets included).
pub async fn server_tools(
    client: &reqwest::Client,
    url: &str,
    legacy_sse: bool,
    headers: HeaderMap,
) -> Result<Vec<ListedTool>, ProbeError> {
    let asked = async {
        if legacy_sse {
            legacy(client, url, headers, None).await
        } else {
            run(client, url, headers).await
        }
    };
    let found = tokio::time::timeout(PROBE_TIMEOUT, asked)
        .await
        .map_err(|_| ProbeError::TimedOut { url: url.into() })??;
    match found.tools {
        Some(_) => Ok(found.listed),
        None => Err(ProbeError::NotMcp {
            url: url.into(),
            reason: "it did not answer tools/list".into(),
        }),
    }
}

/// Why the probe could not tell.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} did not answer within {}s", PROBE_TIMEOUT.as_secs())]
    TimedOut { url: String },
    #[error(
        "{url} asks for credentials (HTTP {status}); set the server's secrets, or pass --transport"
    )]
    NeedsCredentials { url: String, status: u16 },
    #[error("{url} is not an MCP server: {reason}")]
    NotMcp { url: String, reason: String },
}

/// Finds what the server at `url` speaks, sending `headers` (literal ones only).
pub async fn probe(
    client: &reqwest::Client,
    url: &str,
    headers: &[(String, String)],
) -> Result<Found, ProbeError> {
    let extra = literal_headers(headers);
    match tokio::time::timeout(PROBE_TIMEOUT, run(client, url, extra)).await {
        Ok(found) => found,
        Err(_) => Err(ProbeError::TimedOut { url: url.into() }),
    }
}

/// The install's headers that reference no secret, as a header map.
fn literal_headers(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if value.contains("{{") {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            map.insert(name, value);
        }
    }
    map
}

async fn run(client: &reqwest::Client, url: &str, extra: HeaderMap) -> Result<Found, ProbeError> {
    if let Some(found) = modern(client, url, &extra).await? {
        return Ok(found);
    }
    let unreachable = |e: reqwest::Error| ProbeError::Unreachable {
        url: url.into(),
        reason: reason(&e),
    };
    let reply = client
        .post(url)
        .headers(extra.clone())
        .header(ACCEPT, "application/json, text/event-stream")
        .header(CONTENT_TYPE, "application/json")
        .body(initialize(1).to_string())
        .send()
        .await
        .map_err(unreachable)?;
    let status = reply.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(ProbeError::NeedsCredentials {
            url: url.into(),
            status: status.as_u16(),
        });
    }
    if status.is_client_error() {
        return legacy(client, url, extra, Some(status)).await;
    }
    if !status.is_success() {
        return Err(ProbeError::NotMcp {
            url: url.into(),
            reason: format!("initialize answered HTTP {status}"),
        });
    }
    let session = reply
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let init = answer_of(reply, 1)
        .await
        .map_err(|reason| ProbeError::NotMcp {
            url: url.into(),
            reason: format!("its initialize answer is {reason}"),
        })?;
    let result = init.get("result").ok_or_else(|| ProbeError::NotMcp {
        url: url.into(),
        reason: format!("initialize failed: {}", init.get("error").unwrap_or(&init)),
    })?;
    let mut found = Found {
        transport: "streamable_http",
        protocol_version: str_at(result, "protocolVersion"),
        server: result.get("serverInfo").and_then(|s| str_at(s, "name")),
        tools: None,
        listed: Vec::new(),
    };
    let mut headers = extra;
    if let Some(id) = session
        .as_deref()
        .and_then(|s| HeaderValue::from_str(s).ok())
    {
        headers.insert(SESSION_HEADER, id);
    }
    if let Some(version) = found
        .protocol_version
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        headers.insert("mcp-protocol-version", version);
    }
    let post = |body: Value| {
        client
            .post(url)
            .headers(headers.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
    };
    if post(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await
        .is_ok()
    {
        let mut listed = Vec::new();
        let mut cursor: Option<String> = None;
        for page in 0..MAX_PAGES {
            let id = 2 + page as u64;
            let Ok(reply) = post(list_tools(id, cursor.as_deref())).await else {
                break;
            };
            let Ok(answer) = answer_of(reply, id).await else {
                break;
            };
            let Some(result) = answer.get("result") else {
                break;
            };
            listed.extend(tools_in(result));
            cursor = str_at(result, "nextCursor");
            if cursor.is_none() {
                found.tools = Some(listed.len());
                found.listed = listed;
                break;
            }
        }
    }
    if session.is_some() {
        // Ending the probe's session is a courtesy: a server that refuses it (405)
        // lets the session expire on its own.
        let _ = client.delete(url).headers(headers.clone()).send().await;
    }
    Ok(found)
}

/// The legacy HTTP+SSE transport: GET the URL; its first event names the URL to POST
/// messages to, and answers arrive on the stream. `post_status` is what a Streamable
/// HTTP `initialize` got, when the probe tried that first.
async fn legacy(
    client: &reqwest::Client,
    url: &str,
    extra: HeaderMap,
    post_status: Option<StatusCode>,
) -> Result<Found, ProbeError> {
    let not_mcp = |reason: String| ProbeError::NotMcp {
        url: url.into(),
        reason,
    };
    let stream = client
        .get(url)
        .headers(extra.clone())
        .header(ACCEPT, "text/event-stream")
        .send()
        .await
        .map_err(|e| ProbeError::Unreachable {
            url: url.into(),
            reason: reason(&e),
        })?;
    let is_stream = stream
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    let status = stream.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) && post_status.is_none() {
        return Err(ProbeError::NeedsCredentials {
            url: url.into(),
            status: status.as_u16(),
        });
    }
    if !status.is_success() || !is_stream {
        return Err(not_mcp(match post_status {
            Some(post) => format!(
                "initialize answered HTTP {post}, and a GET for an event stream HTTP {status}"
            ),
            None => format!("a GET for its event stream answered HTTP {status}"),
        }));
    }
    let mut events = Events::new(stream);
    let endpoint = match events.next().await {
        Some((kind, data)) if kind == "endpoint" => data,
        Some((kind, _)) => {
            return Err(not_mcp(format!(
                "its event stream began with {kind:?}, not an endpoint event"
            )))
        }
        None => {
            return Err(not_mcp(
                "its event stream ended without an endpoint event".into(),
            ))
        }
    };
    let messages = reqwest::Url::parse(url)
        .and_then(|base| base.join(endpoint.trim()))
        .map_err(|e| not_mcp(format!("its endpoint {endpoint:?} is not a URL: {e}")))?;
    let send = |body: Value| {
        client
            .post(messages.clone())
            .headers(extra.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
    };
    let mut found = Found {
        transport: "sse",
        protocol_version: None,
        server: None,
        tools: None,
        listed: Vec::new(),
    };
    if send(initialize(1)).await.is_err() {
        return Ok(found);
    }
    let Some(init) = events.answer(1).await else {
        return Ok(found);
    };
    if let Some(result) = init.get("result") {
        found.protocol_version = str_at(result, "protocolVersion");
        found.server = result.get("serverInfo").and_then(|s| str_at(s, "name"));
    }
    let _ = send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"})).await;
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = 2 + page as u64;
        if send(list_tools(id, cursor.as_deref())).await.is_err() {
            break;
        }
        let Some(result) = events
            .answer(id)
            .await
            .and_then(|a| a.get("result").cloned())
        else {
            break;
        };
        listed.extend(tools_in(&result));
        cursor = str_at(&result, "nextCursor");
        if cursor.is_none() {
            found.tools = Some(listed.len());
            found.listed = listed;
            break;
        }
    }
    Ok(found)
}

/// A server of the stateless era: `server/discover` answered and lists 2026-07-28.
/// `Ok(None)` for any other answer (a server of the session era refuses a request
/// without a session, or does not know the method), so the session probe runs next;
/// unreachable and credential errors end the probe here.
async fn modern(
    client: &reqwest::Client,
    url: &str,
    extra: &HeaderMap,
) -> Result<Option<Found>, ProbeError> {
    let post = |id: u64, method: &'static str, params: Value| {
        let mut params = params;
        params["_meta"] = json!({
            "io.modelcontextprotocol/protocolVersion": MODERN_VERSION,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo":
                {"name": "gatehouse-install-probe", "version": env!("CARGO_PKG_VERSION")},
        });
        client
            .post(url)
            .headers(extra.clone())
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .header("mcp-protocol-version", MODERN_VERSION)
            .header("mcp-method", method)
            .body(
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string(),
            )
            .send()
    };
    let reply =
        post(1, "server/discover", json!({}))
            .await
            .map_err(|e| ProbeError::Unreachable {
                url: url.into(),
                reason: reason(&e),
            })?;
    let status = reply.status();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(ProbeError::NeedsCredentials {
            url: url.into(),
            status: status.as_u16(),
        });
    }
    if !status.is_success() {
        return Ok(None);
    }
    let Ok(answer) = answer_of(reply, 1).await else {
        return Ok(None);
    };
    let Some(result) = answer.get("result") else {
        return Ok(None);
    };
    let speaks_modern = result
        .get("supportedVersions")
        .and_then(Value::as_array)
        .is_some_and(|v| v.iter().any(|v| v.as_str() == Some(MODERN_VERSION)));
    if !speaks_modern {
        return Ok(None);
    }
    let mut found = Found {
        transport: "streamable_http",
        protocol_version: Some(MODERN_VERSION.into()),
        server: result.get("serverInfo").and_then(|s| str_at(s, "name")),
        tools: None,
        listed: Vec::new(),
    };
    let mut listed = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..MAX_PAGES {
        let id = 2 + page as u64;
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let Ok(reply) = post(id, "tools/list", params).await else {
            break;
        };
        let Ok(answer) = answer_of(reply, id).await else {
            break;
        };
        let Some(result) = answer.get("result") else {
            break;
        };
        listed.extend(tools_in(result));
        cursor = str_at(result, "nextCursor");
        if cursor.is_none() {
            found.tools = Some(listed.len());
            found.listed = listed;
            break;
        }
    }
    Ok(Some(found))
}

/// The tools of one `tools/list` result; entries without a name are skipped.
fn tools_in(result: &Value) -> impl Iterator<Item = ListedTool> + '_ {
    result
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(ListedTool::of)
}

fn initialize(id: u64) -> Value {
    json!({
        "jsonrpc": "2.0", "id": id, "method": "initialize",
        "params": {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "gatehouse-install-probe", "version": env!("CARGO_PKG_VERSION")},
        },
    })
}

fn list_tools(id: u64, cursor: Option<&str>) -> Value {
    let params = match cursor {
        Some(c) => json!({"cursor": c}),
        None => json!({}),
    };
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params})
}

fn str_at(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

/// The transport error in words, with its cause (reqwest's own display stops at
/// "error sending request").
fn reason(e: &reqwest::Error) -> String {
    let mut words = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        words = format!("{words}: {cause}");
        source = cause.source();
    }
    words
}

/// The JSON-RPC answer with `id` in a Streamable HTTP reply: a JSON body, or the
/// message with that id on an event stream.
async fn answer_of(reply: reqwest::Response, id: u64) -> Result<Value, String> {
    let is_stream = reply
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if is_stream {
        return Events::new(reply)
            .answer(id)
            .await
            .ok_or_else(|| "an event stream that ended without it".to_string());
    }
    let body = reply.bytes().await.map_err(|e| reason(&e))?;
    serde_json::from_slice(&body).map_err(|e| format!("not JSON ({e})"))
}

/// Events of a `text/event-stream` body: (event type, data).
struct Events {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    read: usize,
}

impl Events {
    fn new(reply: reqwest::Response) -> Events {
        Events {
            body: reply.bytes_stream().boxed(),
            buf: Vec::new(),
            read: 0,
        }
    }

    async fn next(&mut self) -> Option<(String, String)> {
        loop {
            if let Some(event) = self.take_event() {
                return Some(event);
            }
            if self.read > MAX_STREAM_BYTES {
                return None;
            }
            let chunk = self.body.next().await?.ok()?;
            self.read += chunk.len();
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// The message event answering `id`; other events are skipped.
    async fn answer(&mut self, id: u64) -> Option<Value> {
        while let Some((kind, data)) = self.next().await {
            if kind != "message" {
                continue;
            }
            let Ok(message) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if message.get("id").and_then(Value::as_u64) == Some(id)
                && (message.get("result").is_some() || message.get("error").is_some())
            {
                return Some(message);
            }
        }
        None
    }

    /// One whole event off the front of the buffer, if one has arrived.
    fn take_event(&mut self) -> Option<(String, String)> {
        loop {
            let (end, gap) = event_end(&self.buf)?;
            let block: Vec<u8> = self.buf.drain(..end + gap).take(end).collect();
            let block = String::from_utf8_lossy(&block);
            let mut kind = String::from("message");
            let mut data: Vec<&str> = Vec::new();
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    kind = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if data.is_empty() && kind == "message" {
                // A comment, a priming event or a keep-alive.
                continue;
            }
            return Some((kind, data.join("\n")));
        }
    }
}

/// Where the first event in `buf` ends, and the length of the blank line ending it.
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            Some((i, 4))
        } else if rest.starts_with(b"\n\n") {
            Some((i, 2))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_headers_leave_out_the_ones_that_name_secrets() {
        let map = literal_headers(&[
            ("Authorization".into(), "Bearer {{secrets.TOKEN}}".into()),
            ("X-Team".into(), "platform".into()),
        ]);
        assert_eq!(map.len(), 1);
        assert_eq!(map["x-team"], "platform");
    }

    #[test]
    fn listed_tools_keep_name_description_and_read_only_hint() {
        let result = json!({"tools": [
            {"name": "lookup", "description": "Find", "annotations": {"readOnlyHint": true}},
            {"name": "purge"},
            {"description": "no name"},
        ]});
        let listed: Vec<ListedTool> = tools_in(&result).collect();
        assert_eq!(
            listed,
            [
                ListedTool {
                    name: "lookup".into(),
                    description: "Find".into(),
                    read_only: true
                },
                ListedTool {
                    name: "purge".into(),
                    description: String::new(),
                    read_only: false
                },
            ]
        );
    }

    #[test]
    fn events_end_at_a_blank_line_of_either_kind() {
        assert_eq!(
            event_end(b"event: endpoint\ndata: /m\n\nrest"),
            Some((24, 2))
        );
        assert_eq!(event_end(b"data: x\r\n\r\n"), Some((7, 4)));
        assert_eq!(event_end(b"data: x\n"), None);
    }
}
