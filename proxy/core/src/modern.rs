//! MCP 2026-07-28, the stateless era, as far as a gateway must read and write it: which
//! era a request belongs to, the per-request `_meta` (protocol version, client
//! capabilities and identity), the request headers that mirror the body (`Mcp-Method`,
//! `Mcp-Name`, with their base64 form) and how they are checked, the era's own errors
//! (-32020 header mismatch, -32021 missing client capability, -32022 unsupported
//! version), and what every result of the era carries (`resultType`, and on cacheable
//! results `ttlMs` and `cacheScope`).
//!
//! Reading borrows from the body; nothing here builds a tree of a `tools/call`'s
//! arguments.

use std::borrow::Cow;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::versions;

/// `_meta` keys of the era.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

/// The era's error codes.
pub const HEADER_MISMATCH: i64 = -32020;
pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
pub const UNSUPPORTED_VERSION: i64 = -32022;

/// The sentinel around a base64 header value.
const B64_PREFIX: &str = "=?base64?";
const B64_SUFFIX: &str = "?=";

/// Which generation of the protocol a request speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Era {
    /// `initialize` and sessions (2024-11-05 .. 2025-11-25).
    Legacy,
    /// Per-request `_meta`, no session (2026-07-28 and later).
    Modern,
}

/// The era of a POSTed request. A session id, or an `initialize` that does not carry a
/// modern version, is the legacy era; a modern `_meta` version, or a version header
/// that no legacy revision has, is the modern era (where an unknown version is then
/// refused with -32022, not taken for a legacy client).
pub fn era_of(
    method: &str,
    meta_version: Option<&str>,
    header_version: Option<&str>,
    has_session: bool,
) -> Era {
    if has_session {
        return Era::Legacy;
    }
    let modern_header = header_version.is_some_and(|v| !versions::is_supported(v));
    match (method, meta_version) {
        (_, Some(v)) if !versions::is_supported(v) => Era::Modern,
        ("initialize", _) => Era::Legacy,
        (_, Some(_)) => Era::Modern,
        _ if modern_header => Era::Modern,
        _ => Era::Legacy,
    }
}

/// The `_meta` of a modern request, borrowed.
#[derive(Debug, Default, Deserialize)]
pub struct RequestMeta<'a> {
    #[serde(borrow, rename = "io.modelcontextprotocol/protocolVersion", default)]
    pub protocol_version: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "io.modelcontextprotocol/clientCapabilities", default)]
    pub client_capabilities: Option<&'a RawValue>,
    #[serde(borrow, rename = "io.modelcontextprotocol/clientInfo", default)]
    pub client_info: Option<&'a RawValue>,
}

/// What a request's params say about its `_meta`.
#[derive(Debug)]
pub enum MetaRead<'a> {
    /// No `_meta` object at all.
    Missing,
    Found(RequestMeta<'a>),
}

/// What one pass over a request's params finds: its `_meta`, and the raw `name` and
/// `uri` fields (the values `Mcp-Name` may mirror). Everything else is skipped, not
/// built.
#[derive(Debug)]
pub struct RequestParams<'a> {
    pub meta: MetaRead<'a>,
    pub name: Option<&'a RawValue>,
    pub uri: Option<&'a RawValue>,
}

impl<'a> RequestParams<'a> {
    /// Reads `params` once.
    pub fn read(params: Option<&'a RawValue>) -> RequestParams<'a> {
        #[derive(Deserialize)]
        struct Params<'a> {
            #[serde(borrow, rename = "_meta", default)]
            meta: Option<RequestMeta<'a>>,
            #[serde(borrow, default)]
            name: Option<&'a RawValue>,
            #[serde(borrow, default)]
            uri: Option<&'a RawValue>,
        }
        match params.and_then(|p| serde_json::from_str::<Params>(p.get()).ok()) {
            Some(p) => RequestParams {
                meta: p.meta.map_or(MetaRead::Missing, MetaRead::Found),
                name: p.name,
                uri: p.uri,
            },
            None => RequestParams {
                meta: MetaRead::Missing,
                name: None,
                uri: None,
            },
        }
    }

    /// The protocol version `_meta` names, if any.
    pub fn version(&self) -> Option<&str> {
        match &self.meta {
            MetaRead::Found(m) => m.protocol_version.as_deref(),
            MetaRead::Missing => None,
        }
    }

    /// The value `Mcp-Name` must mirror for `method` (`params.name` or `params.uri`),
    /// when the method has one and the body carries it as a string.
    pub fn mirrored(&self, method: &str) -> Option<Cow<'a, str>> {
        let raw = match name_field(method)? {
            "name" => self.name?,
            _ => self.uri?,
        };
        serde_json::from_str(raw.get()).ok()
    }
}

/// Reads `params._meta` (only that: other fields are skipped, not built).
pub fn request_meta(params: Option<&RawValue>) -> MetaRead<'_> {
    RequestParams::read(params).meta
}

/// Why a modern request's metadata is refused, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaRefusal {
    /// -32602, HTTP 400.
    Invalid(&'static str),
    /// -32020, HTTP 400.
    HeaderMismatch(String),
    /// -32022, HTTP 400, with the versions the gateway speaks.
    Unsupported(String),
}

impl MetaRefusal {
    /// The JSON-RPC error answering request `id` (raw JSON).
    pub fn error(&self, id: &str) -> Bytes {
        match self {
            MetaRefusal::Invalid(why) => {
                crate::jsonrpc::error(id, crate::jsonrpc::INVALID_PARAMS, why)
            }
            MetaRefusal::HeaderMismatch(why) => crate::jsonrpc::error(id, HEADER_MISMATCH, why),
            MetaRefusal::Unsupported(requested) => error_with_data(
                id,
                UNSUPPORTED_VERSION,
                "Unsupported protocol version",
                &json!({"supported": versions::ALL_VERSIONS, "requested": requested}),
            ),
        }
    }
}

/// Checks a modern request's `_meta` and its mirror headers, in the order the spec's
/// errors need: the metadata must be there, the version header must match it, and
/// only then is the version itself judged.
pub fn check_request(
    meta: &MetaRead<'_>,
    method: &str,
    body_name: Option<&str>,
    headers: &MirrorHeaders<'_>,
) -> Result<(), MetaRefusal> {
    let MetaRead::Found(meta) = meta else {
        return Err(MetaRefusal::Invalid(
            "Invalid params: a request of protocol version 2026-07-28 carries params._meta",
        ));
    };
    let Some(version) = meta.protocol_version.as_deref() else {
        return Err(MetaRefusal::Invalid(
            "Invalid params: _meta lacks io.modelcontextprotocol/protocolVersion",
        ));
    };
    if meta.client_capabilities.is_none() {
        return Err(MetaRefusal::Invalid(
            "Invalid params: _meta lacks io.modelcontextprotocol/clientCapabilities",
        ));
    }
    match headers.protocol_version.map(header_text) {
        None => {
            return Err(MetaRefusal::HeaderMismatch(
                "Header mismatch: MCP-Protocol-Version header is required".into(),
            ))
        }
        Some(Some(h)) if h == version => {}
        Some(h) => {
            return Err(MetaRefusal::HeaderMismatch(format!(
                "Header mismatch: MCP-Protocol-Version header value {:?} does not match body value {version:?}",
                h.unwrap_or_default()
            )))
        }
    }
    if !versions::is_modern(version) {
        return Err(MetaRefusal::Unsupported(version.to_string()));
    }
    check_mirrors(method, body_name, headers).map_err(MetaRefusal::HeaderMismatch)
}

/// The request headers that mirror the body, as they came.
#[derive(Debug, Default, Clone, Copy)]
pub struct MirrorHeaders<'a> {
    pub protocol_version: Option<&'a [u8]>,
    pub method: Option<&'a [u8]>,
    pub name: Option<&'a [u8]>,
}

/// Whether `method` must carry `Mcp-Name`, and the body field it mirrors.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// `Mcp-Method` and `Mcp-Name` against the body.
fn check_mirrors(
    method: &str,
    body_name: Option<&str>,
    headers: &MirrorHeaders<'_>,
) -> Result<(), String> {
    match headers.method.map(header_text) {
        None => return Err("Header mismatch: Mcp-Method header is required".into()),
        Some(Some(m)) if m == method => {}
        Some(m) => {
            return Err(format!(
            "Header mismatch: Mcp-Method header value {:?} does not match body value {method:?}",
            m.unwrap_or_default()
        ))
        }
    }
    let Some(field) = name_field(method) else {
        return Ok(());
    };
    let Some(body_name) = body_name else {
        // The body lacks the field: the method's own params check answers that.
        return Ok(());
    };
    match headers.name.map(decode_header_value) {
        None => Err(format!(
            "Header mismatch: Mcp-Name header is required for {method} (it mirrors params.{field})"
        )),
        Some(Ok(n)) if n == body_name => Ok(()),
        Some(Ok(n)) => Err(format!(
            "Header mismatch: Mcp-Name header value {n:?} does not match body value {body_name:?}"
        )),
        Some(Err(why)) => Err(format!("Header mismatch: Mcp-Name header {why}")),
    }
}

/// A plain header value with surrounding whitespace removed (RFC 9110 §5.5), `None`
/// when it is not visible ASCII.
fn header_text(raw: &[u8]) -> Option<&str> {
    std::str::from_utf8(trim_ows(raw))
        .ok()
        .filter(|s| s.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)))
}

fn trim_ows(raw: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = raw.iter().position(|b| !is_ows(b)).unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |e| e + 1);
    &raw[start..end]
}

/// A mirrored value (`Mcp-Name`, `Mcp-Param-*`) as the body would have it: plain
/// visible ASCII, or `=?base64?...?=` around the UTF-8 bytes.
pub fn decode_header_value(raw: &[u8]) -> Result<Cow<'_, str>, &'static str> {
    let text = header_text(raw).ok_or("contains characters a header value may not")?;
    match text
        .strip_prefix(B64_PREFIX)
        .and_then(|t| t.strip_suffix(B64_SUFFIX))
    {
        Some(encoded) => {
            let bytes = STANDARD
                .decode(encoded)
                .map_err(|_| "is not valid base64 inside =?base64?...?=")?;
            String::from_utf8(bytes)
                .map(Cow::Owned)
                .map_err(|_| "is not UTF-8 inside =?base64?...?=")
        }
        None => Ok(Cow::Borrowed(text)),
    }
}

/// A value as a mirror header carries it: plain when it is safe, else base64.
pub fn encode_header_value(value: &str) -> String {
    let visible = value
        .bytes()
        .all(|b| (0x21..0x7f).contains(&b) || b == b' ');
    let padded = value.starts_with(' ') || value.ends_with(' ');
    let sentinel = value.starts_with(B64_PREFIX) && value.ends_with(B64_SUFFIX);
    let plain_safe = !value.is_empty() && visible && !padded && !sentinel;
    if plain_safe {
        value.to_string()
    } else {
        format!("{B64_PREFIX}{}{B64_SUFFIX}", STANDARD.encode(value))
    }
}

/// A JSON-RPC error with `data`.
pub fn error_with_data(id: &str, code: i64, message: &str, data: &Value) -> Bytes {
    let message = serde_json::to_string(message).expect("strings serialise");
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message},"data":{data}}}}}"#
    ))
}

/// The HTTP status a modern error answer goes out with: the era's own errors and
/// invalid params are 400, an unknown method 404, anything else 200.
pub fn error_status(code: i64) -> u16 {
    match code {
        HEADER_MISMATCH | MISSING_CLIENT_CAPABILITY | UNSUPPORTED_VERSION => 400,
        crate::jsonrpc::METHOD_NOT_FOUND => 404,
        _ => 200,
    }
}

/// Caching hints of a cacheable result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHint {
    pub ttl_ms: u64,
    pub private: bool,
}

impl CacheHint {
    /// Cacheable by anyone for `ttl_ms`.
    pub const fn public(ttl_ms: u64) -> CacheHint {
        CacheHint {
            ttl_ms,
            private: false,
        }
    }

    /// Cacheable only for the same credentials.
    pub const fn private(ttl_ms: u64) -> CacheHint {
        CacheHint {
            ttl_ms,
            private: true,
        }
    }

    /// The hint of a result merged from parts: the shortest life, private if any part
    /// is. A part without hints (an older server) counts as immediately stale.
    pub fn merge(self, other: Option<CacheHint>) -> CacheHint {
        let other = other.unwrap_or(CacheHint::public(0));
        CacheHint {
            ttl_ms: self.ttl_ms.min(other.ttl_ms),
            private: self.private || other.private,
        }
    }

    /// The hints a result carries, if it carries both.
    pub fn of_result(result: &Value) -> Option<CacheHint> {
        let ttl_ms = result.get("ttlMs")?.as_i64()?.max(0) as u64;
        let private = match result.get("cacheScope")?.as_str()? {
            "private" => true,
            "public" => false,
            _ => return None,
        };
        Some(CacheHint { ttl_ms, private })
    }
}

/// Whether a method's complete results carry caching hints.
pub fn is_cacheable(method: &str) -> bool {
    matches!(
        method,
        "server/discover"
            | "tools/list"
            | "prompts/list"
            | "resources/list"
            | "resources/templates/list"
            | "resources/read"
    )
}

/// The gateway's identity, as results of the era carry it.
pub fn server_info() -> Value {
    json!({"name": "gatehouse", "title": "Gatehouse", "version": env!("CARGO_PKG_VERSION")})
}

/// Completes a result object for a modern client: `resultType` when it has none (an
/// older server's result is complete), caching hints on a complete result of a
/// cacheable method when it has none, and the gateway's `serverInfo` in `_meta` when
/// `identify`.
pub fn complete_result(result: &mut Map<String, Value>, hint: Option<CacheHint>, identify: bool) {
    let complete = match result.get("resultType").and_then(Value::as_str) {
        Some(kind) => kind == "complete",
        None => {
            result.insert("resultType".into(), Value::String("complete".into()));
            true
        }
    };
    if let (true, Some(hint)) = (complete, hint) {
        if !result.contains_key("ttlMs") || !result.contains_key("cacheScope") {
            result.insert("ttlMs".into(), Value::from(hint.ttl_ms));
            let scope = if hint.private { "private" } else { "public" };
            result.insert("cacheScope".into(), Value::String(scope.into()));
        }
    }
    if identify {
        let meta = result
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert(META_SERVER_INFO.into(), server_info());
        }
    }
}

/// A whole JSON-RPC response body with its result completed by [`complete_result`];
/// an error, or anything that is not a response with an object result, unchanged.
pub fn complete_response(body: Bytes, hint: Option<CacheHint>, identify: bool) -> Bytes {
    let Ok(mut message) = serde_json::from_slice::<Map<String, Value>>(&body) else {
        return body;
    };
    let Some(Value::Object(result)) = message.get_mut("result") else {
        return body;
    };
    complete_result(result, hint, identify);
    Bytes::from(serde_json::to_vec(&message).expect("json"))
}

/// What to put where into a response being relayed, given its first bytes, so its
/// result says `"resultType":"complete"`: just inside the `{` that opens `result`
/// (`None`: not seen yet, or not a result). Used for results of older servers, which
/// never carry the field.
pub fn result_type_insertion(prefix: &[u8]) -> Option<(usize, &'static [u8])> {
    let at = memchr::memmem::find(prefix, b"\"result\"")?;
    let rest = &prefix[at + 8..];
    let colon = rest.iter().position(|b| !b.is_ascii_whitespace())?;
    if rest[colon] != b':' {
        return None;
    }
    let after = &rest[colon + 1..];
    let brace = after.iter().position(|b| !b.is_ascii_whitespace())?;
    if after[brace] != b'{' {
        return None;
    }
    let inside = &after[brace + 1..];
    let next = inside.iter().find(|b| !b.is_ascii_whitespace())?;
    let text: &'static [u8] = if *next == b'}' {
        b"\"resultType\":\"complete\""
    } else {
        b"\"resultType\":\"complete\","
    };
    Some((at + 8 + colon + 1 + brace + 1, text))
}

/// Removes the era's own keys (`io.modelcontextprotocol/protocolVersion`, client
/// capabilities and identity) from `params._meta`: an older server takes a request
/// that names a version it does not speak for a broken one. `_meta` goes when nothing
/// else is left in it (a progress token stays).
pub fn strip_request_meta(params: &mut Value) {
    let Some(object) = params.as_object_mut() else {
        return;
    };
    let Some(Value::Object(meta)) = object.get_mut("_meta") else {
        return;
    };
    for key in [
        META_PROTOCOL_VERSION,
        META_CLIENT_CAPABILITIES,
        META_CLIENT_INFO,
    ] {
        meta.remove(key);
    }
    if meta.is_empty() {
        object.remove("_meta");
    }
}

/// A request body with [`strip_request_meta`] applied to its params; `None` when it
/// has nothing to strip (left as it is, not re-serialised).
pub fn strip_body_meta(body: &[u8]) -> Option<Bytes> {
    memchr::memmem::find(body, b"io.modelcontextprotocol/")?;
    let mut message: Value = serde_json::from_slice(body).ok()?;
    strip_request_meta(message.get_mut("params")?);
    Some(Bytes::from(serde_json::to_vec(&message).ok()?))
}

/// The `_meta` a gateway puts on a request of its own to a modern upstream, from the
/// client's init parameters (`{"capabilities":..,"clientInfo":..}`).
pub fn upstream_meta(client_init: &Value) -> Value {
    json!({
        META_PROTOCOL_VERSION: versions::MODERN_VERSION,
        META_CLIENT_CAPABILITIES: client_init.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        META_CLIENT_INFO: client_init.get("clientInfo").cloned().unwrap_or_else(|| json!({"name": "gatehouse", "version": env!("CARGO_PKG_VERSION")})),
    })
}

/// What a `subscriptions/listen` stream carries: the notification types the client
/// opted in to, and the resources whose updates it wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenFilter {
    pub tools: bool,
    pub prompts: bool,
    pub resources: bool,
    pub resource_uris: Vec<String>,
}

impl ListenFilter {
    /// The filter in a request's `params.notifications`.
    pub fn from_params(params: &Value) -> ListenFilter {
        let n = params.get("notifications");
        let flag = |k: &str| {
            n.and_then(|n| n.get(k))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        ListenFilter {
            tools: flag("toolsListChanged"),
            prompts: flag("promptsListChanged"),
            resources: flag("resourcesListChanged"),
            resource_uris: n
                .and_then(|n| n.get("resourceSubscriptions"))
                .and_then(Value::as_array)
                .map(|uris| {
                    uris.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The filter as `notifications` in a request or an acknowledgement: only what is
    /// asked for.
    pub fn to_value(&self) -> Value {
        let mut out = Map::new();
        for (on, key) in [
            (self.tools, "toolsListChanged"),
            (self.prompts, "promptsListChanged"),
            (self.resources, "resourcesListChanged"),
        ] {
            if on {
                out.insert(key.into(), Value::Bool(true));
            }
        }
        if !self.resource_uris.is_empty() {
            out.insert("resourceSubscriptions".into(), json!(self.resource_uris));
        }
        Value::Object(out)
    }

    /// The first message of a listen stream opened by request `id` (raw JSON).
    pub fn acknowledgement(&self, id: &str) -> String {
        let id: Value = serde_json::from_str(id).unwrap_or(Value::Null);
        json!({
            "jsonrpc": "2.0",
            "method": "notifications/subscriptions/acknowledged",
            "params": {"_meta": {META_SUBSCRIPTION_ID: id}, "notifications": self.to_value()},
        })
        .to_string()
    }

    /// A message for the stream of subscription `id` (raw JSON), tagged with it; `None`
    /// when the client did not ask for it (or it is not a change notification — an
    /// upstream's own acknowledgement, a request, a response).
    pub fn admit(&self, json: &str, id: &str) -> Option<String> {
        let mut message: Value = serde_json::from_str(json).ok()?;
        let wanted = match message.get("method")?.as_str()? {
            "notifications/tools/list_changed" => self.tools,
            "notifications/prompts/list_changed" => self.prompts,
            "notifications/resources/list_changed" => self.resources,
            "notifications/resources/updated" => message
                .pointer("/params/uri")
                .and_then(Value::as_str)
                .is_some_and(|uri| self.resource_uris.iter().any(|u| u == uri)),
            _ => false,
        };
        if !wanted || message.get("id").is_some() {
            return None;
        }
        let params = message
            .as_object_mut()?
            .entry("params")
            .or_insert_with(|| json!({}));
        let meta = params
            .as_object_mut()?
            .entry("_meta")
            .or_insert_with(|| json!({}));
        meta.as_object_mut()?.insert(
            META_SUBSCRIPTION_ID.into(),
            serde_json::from_str(id).unwrap_or(Value::Null),
        );
        Some(message.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsonrpc::{parse, Parsed};

    fn headers<'a>(v: &'a str, m: &'a str, n: Option<&'a str>) -> MirrorHeaders<'a> {
        MirrorHeaders {
            protocol_version: Some(v.as_bytes()),
            method: Some(m.as_bytes()),
            name: n.map(str::as_bytes),
        }
    }

    #[test]
    fn the_era_follows_the_session_the_meta_and_the_header() {
        assert_eq!(era_of("tools/list", None, None, true), Era::Legacy);
        assert_eq!(
            era_of("initialize", None, Some("2025-11-25"), false),
            Era::Legacy
        );
        assert_eq!(
            era_of("initialize", Some("2026-07-28"), Some("2026-07-28"), false),
            Era::Modern
        );
        // An `initialize` whose params are not modern is answered as one.
        assert_eq!(
            era_of("initialize", None, Some("2026-07-28"), false),
            Era::Legacy
        );
        assert_eq!(
            era_of("tools/list", Some("2026-07-28"), None, false),
            Era::Modern
        );
        assert_eq!(
            era_of("tools/list", None, Some("2026-07-28"), false),
            Era::Modern
        );
        assert_eq!(
            era_of("tools/list", Some("v999"), Some("v999"), false),
            Era::Modern
        );
        assert_eq!(
            era_of("tools/list", None, Some("2025-06-18"), false),
            Era::Legacy
        );
        assert_eq!(era_of("tools/list", None, None, false), Era::Legacy);
    }

    #[test]
    fn meta_is_read_without_the_rest_of_the_params() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"big":[1,2,3]},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{"sampling":{}}}}}"#;
        let Ok(Parsed::Request(msg)) = parse(body) else {
            panic!()
        };
        let MetaRead::Found(meta) = request_meta(msg.params) else {
            panic!()
        };
        assert_eq!(meta.protocol_version.as_deref(), Some("2026-07-28"));
        assert_eq!(
            meta.client_capabilities.unwrap().get(),
            r#"{"sampling":{}}"#
        );
        assert!(meta.client_info.is_none());
        assert!(matches!(request_meta(None), MetaRead::Missing));
    }

    fn meta(json: &str) -> MetaRead<'_> {
        let raw: &RawValue = serde_json::from_str(json).unwrap();
        request_meta(Some(raw))
    }

    #[test]
    fn requests_are_checked_in_the_order_the_errors_need() {
        let ok = r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}"#;
        let h = headers("2026-07-28", "tools/list", None);
        assert_eq!(check_request(&meta(ok), "tools/list", None, &h), Ok(()));
        assert!(matches!(
            check_request(&meta("{}"), "tools/list", None, &h),
            Err(MetaRefusal::Invalid(_))
        ));
        let no_caps = r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}"#;
        assert!(matches!(
            check_request(&meta(no_caps), "tools/list", None, &h),
            Err(MetaRefusal::Invalid(_))
        ));
        // The header disagrees with the body: a mismatch, whatever the versions.
        let v999 = r#"{"_meta":{"io.modelcontextprotocol/protocolVersion":"v999","io.modelcontextprotocol/clientCapabilities":{}}}"#;
        assert!(matches!(
            check_request(&meta(v999), "tools/list", None, &h),
            Err(MetaRefusal::HeaderMismatch(_))
        ));
        // Both say an unknown version: -32022 with what the gateway speaks.
        let refusal = check_request(
            &meta(v999),
            "tools/list",
            None,
            &headers("v999", "tools/list", None),
        )
        .unwrap_err();
        assert_eq!(refusal, MetaRefusal::Unsupported("v999".into()));
        let e: Value = serde_json::from_slice(&refusal.error("7")).unwrap();
        assert_eq!(e["error"]["code"], UNSUPPORTED_VERSION);
        assert_eq!(e["error"]["data"]["requested"], "v999");
        assert_eq!(e["error"]["data"]["supported"][0], "2026-07-28");
        assert_eq!(e["id"], 7);
        // Method and name mirrors.
        for (h, ok_expected) in [
            (headers("2026-07-28", "tools/call", Some("echo")), true),
            (headers("2026-07-28", "tools/call", Some("  echo ")), true),
            (
                headers("2026-07-28", "tools/call", Some("=?base64?ZWNobw==?=")),
                true,
            ),
            (headers("2026-07-28", "tools/call", Some("other")), false),
            (headers("2026-07-28", "tools/call", None), false),
            (headers("2026-07-28", "TOOLS/CALL", Some("echo")), false),
            (headers("2026-07-28", "tools/list", Some("echo")), false),
        ] {
            let got = check_request(&meta(ok), "tools/call", Some("echo"), &h);
            assert_eq!(got.is_ok(), ok_expected, "{h:?}: {got:?}");
        }
        let no_method = MirrorHeaders {
            method: None,
            ..headers("2026-07-28", "", None)
        };
        assert!(check_request(&meta(ok), "tools/list", None, &no_method).is_err());
    }

    #[test]
    fn header_values_round_trip_through_their_encoding() {
        for value in [
            "us-west1",
            "Hello, 世界",
            " padded ",
            "line1\nline2",
            "=?base64?literal?=",
        ] {
            let encoded = encode_header_value(value);
            assert!(
                encoded.bytes().all(|b| (0x20..0x7f).contains(&b)),
                "{encoded}"
            );
            assert_eq!(decode_header_value(encoded.as_bytes()).unwrap(), value);
        }
        assert_eq!(encode_header_value("us-west1"), "us-west1");
        assert_eq!(
            encode_header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert!(decode_header_value(b"=?base64?!!!?=").is_err());
        assert!(decode_header_value(b"bad\x01value").is_err());
    }

    #[test]
    fn results_are_completed_without_overriding_what_they_say() {
        let body = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]}}"#);
        let out = complete_response(body, Some(CacheHint::private(0)), true);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["resultType"], "complete");
        assert_eq!(v["result"]["ttlMs"], 0);
        assert_eq!(v["result"]["cacheScope"], "private");
        assert_eq!(v["result"]["_meta"][META_SERVER_INFO]["name"], "gatehouse");

        let interim = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"resultType":"input_required","inputRequests":{}}}"#,
        );
        let v: Value = serde_json::from_slice(&complete_response(
            interim,
            Some(CacheHint::public(5)),
            false,
        ))
        .unwrap();
        assert_eq!(v["result"]["resultType"], "input_required");
        assert!(v["result"].get("ttlMs").is_none());

        let error =
            Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}}"#);
        assert_eq!(complete_response(error.clone(), None, true), error);
    }

    #[test]
    fn a_listen_stream_carries_what_was_asked_for_tagged() {
        let filter = ListenFilter::from_params(&json!({"notifications": {
            "toolsListChanged": true,
            "resourceSubscriptions": ["file:///a"],
        }}));
        let ack: Value = serde_json::from_str(&filter.acknowledgement("7")).unwrap();
        assert_eq!(ack["params"]["_meta"][META_SUBSCRIPTION_ID], 7);
        assert_eq!(
            ack["params"]["notifications"],
            json!({"toolsListChanged": true, "resourceSubscriptions": ["file:///a"]})
        );
        let tools = filter
            .admit(
                r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#,
                "7",
            )
            .unwrap();
        let tools: Value = serde_json::from_str(&tools).unwrap();
        assert_eq!(tools["params"]["_meta"][META_SUBSCRIPTION_ID], 7);
        assert!(filter
            .admit(
                r#"{"jsonrpc":"2.0","method":"notifications/prompts/list_changed"}"#,
                "7"
            )
            .is_none());
        assert!(filter
            .admit(r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}}"#, "7")
            .is_some());
        assert!(filter
            .admit(r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///b"}}"#, "7")
            .is_none());
        assert!(filter
            .admit(r#"{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{}}"#, "7")
            .is_none());
    }

    #[test]
    fn an_older_server_gets_no_modern_meta() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"progressToken":5}}}"#;
        let out: Value = serde_json::from_slice(&strip_body_meta(body).unwrap()).unwrap();
        assert_eq!(out["params"]["_meta"], json!({"progressToken": 5}));
        let bare = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#;
        let out: Value = serde_json::from_slice(&strip_body_meta(bare).unwrap()).unwrap();
        assert!(out["params"].get("_meta").is_none());
        assert!(strip_body_meta(br#"{"jsonrpc":"2.0","id":1,"method":"x"}"#).is_none());
    }

    #[test]
    fn merged_hints_take_the_shortest_life_and_any_privacy() {
        let merged = CacheHint::public(60_000)
            .merge(Some(CacheHint::public(1_000)))
            .merge(Some(CacheHint::private(5_000)));
        assert_eq!(merged, CacheHint::private(1_000));
        assert_eq!(CacheHint::public(60_000).merge(None), CacheHint::public(0));
    }

    #[test]
    fn the_result_type_goes_just_inside_the_result() {
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"result" : {"content":[]}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"result":{ }}"#,
        ] {
            let (at, text) = result_type_insertion(body).unwrap();
            let mut out = body[..at].to_vec();
            out.extend_from_slice(text);
            out.extend_from_slice(&body[at..]);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["result"]["resultType"], "complete");
        }
        assert_eq!(
            result_type_insertion(br#"{"jsonrpc":"2.0","id":1,"res"#),
            None
        );
        assert_eq!(
            result_type_insertion(br#"{"jsonrpc":"2.0","id":1,"result":{"#),
            None
        );
        assert_eq!(
            result_type_insertion(br#"{"jsonrpc":"2.0","id":1,"error":{}}"#),
            None
        );
    }
}
