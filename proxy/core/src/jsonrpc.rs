//! Just enough JSON-RPC for the request path: borrow `method`, `id` and `params` out of
//! a body without building a tree, splice a new tool name into a body without
//! re-serialising it, and render responses around pre-rendered results.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// The gateway's own: a request over a rate budget or stream cap (with HTTP 429). In
/// the implementation-defined range, clear of the codes MCP defines.
pub const LIMITED: i64 = -32029;

/// A JSON-RPC message, fields borrowed from the body.
#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    #[serde(borrow, default)]
    pub jsonrpc: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub method: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub params: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub error: Option<&'a RawValue>,
}

/// What a body turned out to be.
#[derive(Debug)]
pub enum Parsed<'a> {
    Request(Message<'a>),
    Notification(Message<'a>),
    Response(Message<'a>),
}

/// Why a body is not a message the gateway accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("Parse error: {0}")]
    Parse(String),
    #[error("Invalid Request: JSON-RPC batches are not supported (removed in MCP 2025-06-18); send one message per request")]
    Batch,
    #[error("Invalid Request: {0}")]
    Invalid(&'static str),
}

impl Rejection {
    pub fn code(&self) -> i64 {
        match self {
            Rejection::Parse(_) => PARSE_ERROR,
            _ => INVALID_REQUEST,
        }
    }
}

pub fn parse(body: &[u8]) -> Result<Parsed<'_>, Rejection> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => return Err(Rejection::Batch),
        Some(b'{') => {}
        Some(_) => {
            // Valid JSON but not an object is an invalid request; garbage is a parse error.
            return match serde_json::from_slice::<&RawValue>(body) {
                Ok(_) => Err(Rejection::Invalid("a message must be a JSON object")),
                Err(e) => Err(Rejection::Parse(e.to_string())),
            };
        }
        None => return Err(Rejection::Parse("empty body".into())),
    }
    let msg: Message = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            Rejection::Parse(e.to_string())
        } else {
            Rejection::Invalid("a field has the wrong type")
        }
    })?;
    if msg.jsonrpc.as_deref() != Some("2.0") {
        return Err(Rejection::Invalid("\"jsonrpc\" must be \"2.0\""));
    }
    match (&msg.method, &msg.id) {
        (Some(_), Some(id)) if is_valid_id(id) => Ok(Parsed::Request(msg)),
        (Some(_), Some(_)) => Err(Rejection::Invalid("\"id\" must be a string or an integer")),
        (Some(_), None) => Ok(Parsed::Notification(msg)),
        (None, Some(_)) if msg.result.is_some() || msg.error.is_some() => Ok(Parsed::Response(msg)),
        _ => Err(Rejection::Invalid("no \"method\"")),
    }
}

fn is_valid_id(id: &RawValue) -> bool {
    let text = id.get();
    text.starts_with('"') || (!text.contains(['.', 'e', 'E']) && text.parse::<i64>().is_ok())
}

/// Where the tool name sits in a `tools/call` body, and what it says.
#[derive(Debug)]
pub struct ToolName<'a> {
    pub name: Cow<'a, str>,
    /// Byte range of the JSON string literal (quotes included) in the body.
    pub span: Range<usize>,
}

/// Finds `params.name` of a `tools/call`. `params` must be a slice of `body`.
pub fn tool_name<'a>(body: &'a [u8], params: &'a RawValue) -> Option<ToolName<'a>> {
    #[derive(Deserialize)]
    struct CallParams<'a> {
        #[serde(borrow)]
        name: &'a RawValue,
    }
    let parsed: CallParams = serde_json::from_str(params.get()).ok()?;
    tool_name_at(body, parsed.name)
}

/// [`tool_name`] from the `params.name` value already found (a slice of `body`).
pub fn tool_name_at<'a>(body: &'a [u8], name: &'a RawValue) -> Option<ToolName<'a>> {
    let raw = name.get();
    let name: Cow<str> = serde_json::from_str(raw).ok()?;
    let start = offset_in(body, raw.as_bytes())?;
    Some(ToolName {
        name,
        span: start..start + raw.len(),
    })
}

/// Offset of `part` inside `whole`, when `part` is a sub-slice of it.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<usize> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    (start + part.len() <= whole.len()).then_some(start)
}

/// `body` with the bytes in `span` replaced by `name` as a JSON string: one copy, no
/// re-serialisation of the rest.
pub fn splice_name(body: &[u8], span: Range<usize>, name: &str) -> Bytes {
    let literal = serde_json::to_string(name).expect("strings serialise");
    let mut out = Vec::with_capacity(body.len() - span.len() + literal.len());
    out.extend_from_slice(&body[..span.start]);
    out.extend_from_slice(literal.as_bytes());
    out.extend_from_slice(&body[span.end..]);
    Bytes::from(out)
}

/// A `tools/call` body for the upstream when an override fixes some arguments: the
/// upstream's tool `name`, and `fixed` set in `params.arguments` over whatever the
/// client sent. Re-serialises the body (only such calls pay for it); `None` when it
/// is not a JSON object with object `params` (the caller already checked both).
pub fn with_fixed_arguments(
    body: &[u8],
    name: &str,
    fixed: &serde_json::Map<String, serde_json::Value>,
) -> Option<Bytes> {
    use serde_json::Value;
    let mut message: Value = serde_json::from_slice(body).ok()?;
    let params = message.get_mut("params")?.as_object_mut()?;
    params.insert("name".into(), Value::String(name.to_string()));
    let arguments = params
        .entry("arguments")
        .or_insert_with(|| Value::Object(Default::default()));
    if !arguments.is_object() {
        *arguments = Value::Object(Default::default());
    }
    let arguments = arguments.as_object_mut().expect("made an object above");
    for (key, value) in fixed {
        arguments.insert(key.clone(), value.clone());
    }
    serde_json::to_vec(&message).ok().map(Bytes::from)
}

/// `{"jsonrpc":"2.0","id":ID,"result":RESULT}` around an already-rendered result.
pub fn result(id: &RawValue, result: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(40 + id.get().len() + result.len());
    out.extend_from_slice(br#"{"jsonrpc":"2.0","id":"#);
    out.extend_from_slice(id.get().as_bytes());
    out.extend_from_slice(br#","result":"#);
    out.extend_from_slice(result);
    out.push(b'}');
    Bytes::from(out)
}

/// The raw JSON text of an id, `null` when there is none.
pub fn raw_id(id: Option<&RawValue>) -> &str {
    id.map_or("null", RawValue::get)
}

/// A JSON-RPC error response; `id` is the raw JSON text of the request's id.
pub fn error(id: &str, code: i64, message: &str) -> Bytes {
    let message = serde_json::to_string(message).expect("strings serialise");
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":{code},"message":{message}}}}}"#
    ))
}

/// A request id as a canonical JSON text, so the same id always gives the same key.
pub fn canonical_id(raw: &str) -> String {
    serde_json::from_str::<serde_json::Value>(raw)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| raw.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_messages() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Parsed::Request(_))
        ));
        assert!(matches!(
            parse(br#" {"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Parsed::Notification(_))
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Parsed::Response(_))
        ));
        assert_eq!(parse(b"[{}]").unwrap_err(), Rejection::Batch);
        assert_eq!(parse(b"{oops").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(parse(b"").unwrap_err().code(), PARSE_ERROR);
        assert_eq!(parse(b"42").unwrap_err().code(), INVALID_REQUEST);
        assert_eq!(
            parse(br#"{"jsonrpc":"1.0","id":1,"method":"x"}"#)
                .unwrap_err()
                .code(),
            INVALID_REQUEST
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1.5,"method":"x"}"#)
                .unwrap_err()
                .code(),
            INVALID_REQUEST
        );
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":3}"#)
                .unwrap_err()
                .code(),
            INVALID_REQUEST
        );
    }

    #[test]
    fn splices_the_tool_name_and_leaves_the_rest_byte_identical() {
        let body = br#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{"name":"keep"},"name":"git\u0068ub__create_issue","_meta":{"progressToken":1}}}"#;
        let Ok(Parsed::Request(msg)) = parse(body) else {
            panic!()
        };
        let found = tool_name(body, msg.params.unwrap()).unwrap();
        assert_eq!(found.name, "github__create_issue");
        let out = splice_name(body, found.span, "create_issue");
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"arguments":{"name":"keep"},"name":"create_issue","_meta":{"progressToken":1}}}"#
        );
    }

    #[test]
    fn renders_responses() {
        let id: &RawValue = serde_json::from_str(r#""x-1""#).unwrap();
        assert_eq!(
            &result(id, b"{}")[..],
            br#"{"jsonrpc":"2.0","id":"x-1","result":{}}"#
        );
        let e = error(raw_id(None), INVALID_PARAMS, "Unknown tool: \"a\"");
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert_eq!(v["error"]["message"], "Unknown tool: \"a\"");
        assert_eq!(v["id"], serde_json::Value::Null);
    }

    #[test]
    fn fixed_arguments_replace_the_clients_and_the_name_is_the_upstreams() {
        let fixed: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"owner":"acme"}"#).unwrap();
        let body = br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"gh__open","arguments":{"owner":"evil","title":"t"},"_meta":{"progressToken":1}}}"#;
        let out = with_fixed_arguments(body, "create_issue", &fixed).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["params"]["name"], "create_issue");
        assert_eq!(
            v["params"]["arguments"],
            serde_json::json!({"owner": "acme", "title": "t"})
        );
        assert_eq!(v["params"]["_meta"]["progressToken"], 1);
        assert_eq!(v["id"], 3);
        let bare =
            br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"gh__open"}}"#;
        let v: serde_json::Value =
            serde_json::from_slice(&with_fixed_arguments(bare, "create_issue", &fixed).unwrap())
                .unwrap();
        assert_eq!(
            v["params"]["arguments"],
            serde_json::json!({"owner": "acme"})
        );
    }
}
