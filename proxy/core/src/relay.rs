//! Messages on their way from an upstream to the client, rewritten so they make sense
//! in the workspace:
//!
//! - server-to-client requests (`sampling/createMessage`, `elicitation/create`,
//!   `roots/list`) get a gateway id that *encodes* where they came from — the client
//!   session, the server and the original id, sealed with the session key — so the
//!   client's answer can be routed back by any replica without a table, and ids of two
//!   upstreams can never collide;
//! - `notifications/message` is tagged with the server (its `logger`);
//! - `notifications/resources/updated` gets the exposed resource URI;
//! - list-change notifications are reported to the caller so it can drop caches.
//!
//! Responses and other notifications (progress, cancellation) pass unchanged.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::envelope::SessionKeys;
use crate::jsonrpc::Message;
use crate::sse::SseSplitter;
use crate::uris;

/// Prefix of every id the gateway gives a server-to-client request.
pub const RELAY_ID_PREFIX: &str = "gh.";
/// First byte of a sealed relay id, so a sealed envelope can never pass for one.
const RELAY_TAG: u8 = b'R';

/// Which server a message comes from, in which client session.
#[derive(Clone, Copy)]
pub struct Relay<'a> {
    pub keys: &'a SessionKeys,
    pub sid: [u8; 16],
    pub server: &'a str,
    /// The server's names reach clients bare: its resource URIs pass unchanged.
    pub bare: bool,
    /// The client speaks the stateless era and the server an older one: a result
    /// without `resultType` gets `"complete"`.
    pub complete_results: bool,
}

/// What a relayed message was, for the caller's side effects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Request,
    Response,
    Notification,
    ToolsChanged,
    PromptsChanged,
    ResourcesChanged,
}

/// A message ready for the client.
#[derive(Debug)]
pub struct Outbound<'a> {
    pub json: Cow<'a, str>,
    pub kind: MessageKind,
    /// The message's id as the upstream wrote it (a response's is the request's).
    pub id: Option<&'a RawValue>,
}

/// The upstream sent something that is not a JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a JSON-RPC message: {0}")]
pub struct Garbage(pub String);

impl<'a> Relay<'a> {
    /// Rewrites one message (the `data` of one event) for the client.
    pub fn outbound<'d>(&self, data: &'d str) -> Result<Outbound<'d>, Garbage> {
        let msg: Message = serde_json::from_str(data).map_err(|e| Garbage(e.to_string()))?;
        if msg.jsonrpc.as_deref() != Some("2.0") {
            return Err(Garbage("\"jsonrpc\" is not \"2.0\"".into()));
        }
        let kind = match (msg.method.as_deref(), msg.id) {
            (Some(_), Some(_)) => MessageKind::Request,
            (None, Some(_)) => MessageKind::Response,
            (Some("notifications/tools/list_changed"), None) => MessageKind::ToolsChanged,
            (Some("notifications/prompts/list_changed"), None) => MessageKind::PromptsChanged,
            (Some("notifications/resources/list_changed"), None) => MessageKind::ResourcesChanged,
            (Some(_), None) => MessageKind::Notification,
            (None, None) => return Err(Garbage("neither method nor id".into())),
        };
        let complete = self.complete_results
            && kind == MessageKind::Response
            && msg
                .result
                .is_some_and(|r| r.get().starts_with('{') && !r.get().contains("\"resultType\""));
        let rewrite = kind == MessageKind::Request
            || complete
            || match msg.method.as_deref() {
                Some("notifications/message") => true,
                Some("notifications/resources/updated") => !self.bare,
                _ => false,
            };
        if !rewrite {
            return Ok(Outbound {
                json: Cow::Borrowed(data),
                kind,
                id: msg.id,
            });
        }
        let mut value: Value = serde_json::from_str(data).map_err(|e| Garbage(e.to_string()))?;
        match msg.method.as_deref() {
            _ if complete => {
                if let Some(result) = value.get_mut("result").and_then(Value::as_object_mut) {
                    result.insert("resultType".into(), Value::String("complete".into()));
                }
            }
            _ if kind == MessageKind::Request => {
                let original = msg.id.map(|id| id.get()).unwrap_or("null");
                value["id"] = Value::String(self.seal_id(original));
            }
            Some("notifications/message") => {
                if let Some(params) = value.get_mut("params").and_then(Value::as_object_mut) {
                    let logger = match params.get("logger").and_then(Value::as_str) {
                        Some(l) => format!("{}/{l}", self.server),
                        None => self.server.to_string(),
                    };
                    params.insert("logger".into(), Value::String(logger));
                }
            }
            Some("notifications/resources/updated") => {
                if let Some(uri) = value.pointer_mut("/params/uri") {
                    if let Some(text) = uri.as_str() {
                        *uri = Value::String(uris::expose(self.server, text));
                    }
                }
            }
            _ => {}
        }
        Ok(Outbound {
            json: Cow::Owned(value.to_string()),
            kind,
            id: msg.id,
        })
    }

    /// The gateway id of this server's request `original_id` (raw JSON).
    pub fn seal_id(&self, original_id: &str) -> String {
        let mut plain = Vec::with_capacity(18 + self.server.len() + original_id.len());
        plain.push(RELAY_TAG);
        plain.extend_from_slice(&self.sid);
        plain.push(u8::try_from(self.server.len()).expect("server slugs are short"));
        plain.extend_from_slice(self.server.as_bytes());
        plain.extend_from_slice(original_id.as_bytes());
        format!("{RELAY_ID_PREFIX}{}", self.keys.seal_bytes(&plain))
    }
}

/// Where a client's response to a relayed request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayTarget {
    pub server: String,
    /// The id the upstream used, raw JSON.
    pub original_id: String,
}

/// Opens a gateway id issued to client session `sid`; `None` for any id the gateway
/// did not issue to this session.
pub fn open_id(keys: &SessionKeys, sid: [u8; 16], id: &str) -> Option<RelayTarget> {
    let sealed = id.strip_prefix(RELAY_ID_PREFIX)?;
    let plain = keys.open_bytes(sealed).ok()?;
    let (&tag, rest) = plain.split_first()?;
    if tag != RELAY_TAG || rest.len() < 17 || rest[..16] != sid {
        return None;
    }
    let (&len, rest) = rest[16..].split_first()?;
    let len = len as usize;
    if rest.len() <= len {
        return None;
    }
    let server = std::str::from_utf8(&rest[..len]).ok()?.to_string();
    let original_id = std::str::from_utf8(&rest[len..]).ok()?.to_string();
    Some(RelayTarget {
        server,
        original_id,
    })
}

/// Largest event the rewriter holds while waiting for its end: what the reference
/// SDK's clients accept (rmcp refuses a bigger event and drops its whole transport).
/// A bigger one ends the stream; relayed, it would reach no client, and held, it
/// would cost as much memory as the upstream cares to send.
pub const MAX_HELD_EVENT: usize = 16 * 1024 * 1024;

/// Rewrites an upstream's event stream relayed chunk by chunk (the reply to a routed
/// `tools/call`): whole events are rewritten, the unfinished tail is held back.
#[derive(Debug, Default)]
pub struct SseRewriter {
    splitter: SseSplitter,
    /// Set once an event outgrew [`MAX_HELD_EVENT`]: nothing more is relayed.
    oversized: bool,
}

impl SseRewriter {
    /// Feeds one chunk; returns what can be sent now. `keep` is told the kind, the id
    /// and the text of every message, and drops it by answering false.
    pub fn push(
        &mut self,
        chunk: &[u8],
        relay: &Relay<'_>,
        keep: &mut impl FnMut(MessageKind, Option<&RawValue>, &str) -> bool,
    ) -> Bytes {
        if self.oversized {
            return Bytes::new();
        }
        self.splitter.push(chunk);
        let mut out = BytesMut::new();
        while let Some((raw, event)) = self.splitter.next_block() {
            let raw = expose_event_id(raw, relay.server);
            let Some(event) = event else {
                out.extend_from_slice(&raw);
                continue;
            };
            match relay.outbound(&event.data) {
                Ok(message) => {
                    if keep(message.kind, message.id, &event.data) {
                        match message.json {
                            Cow::Borrowed(_) => out.extend_from_slice(&raw),
                            Cow::Owned(json) => write_event(&mut out, &raw, &json),
                        }
                    }
                }
                // Not ours to judge on the client's reply stream: pass it on.
                Err(_) => out.extend_from_slice(&raw),
            }
        }
        if self.splitter.buffered() > MAX_HELD_EVENT {
            self.oversized = true;
            drop(self.splitter.take_rest());
        }
        out.freeze()
    }

    /// Whether an event outgrew [`MAX_HELD_EVENT`]: the stream cannot go on.
    pub fn oversized(&self) -> bool {
        self.oversized
    }

    /// What is still held when the stream ends (an event without its blank line).
    pub fn finish(&mut self) -> Bytes {
        self.splitter.take_rest().freeze()
    }
}

/// The id a client sees for event `id` of `server`'s stream: `<server>:<id>`. Slugs
/// never contain `:`, so [`event_id_route`] finds the server again when the client
/// resumes with `Last-Event-ID`, and ids of different servers never clash.
pub fn expose_event_id(raw: BytesMut, server: &str) -> BytesMut {
    if !raw.starts_with(b"id:") && memchr::memmem::find(&raw, b"\nid:").is_none() {
        return raw;
    }
    let mut out = BytesMut::with_capacity(raw.len() + server.len() + 1);
    for line in raw.split_inclusive(|b| *b == b'\n') {
        match line.strip_prefix(b"id:") {
            Some(rest) => {
                let rest = rest.strip_prefix(b" ").unwrap_or(rest);
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(server.as_bytes());
                out.extend_from_slice(b":");
                out.extend_from_slice(rest);
            }
            None => out.extend_from_slice(line),
        }
    }
    out
}

/// `(server, the server's own event id)` of an id [`expose_event_id`] made.
pub fn event_id_route(exposed: &str) -> Option<(&str, &str)> {
    exposed
        .split_once(':')
        .filter(|(server, id)| !server.is_empty() && !id.is_empty())
}

/// Re-emits `raw` (one event block) with its data replaced by `json`; other fields
/// (`id`, `event`, `retry`) are kept as they were.
fn write_event(out: &mut BytesMut, raw: &[u8], json: &str) {
    let text = String::from_utf8_lossy(raw);
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line == "data" || line.starts_with("data:") {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(json.as_bytes());
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use gatehouse_config::{Secret, SessionKey};

    /// Server `github`'s relay for session `[1; 16]`.
    fn github(keys: &SessionKeys) -> Relay<'_> {
        Relay {
            keys,
            sid: [1; 16],
            server: "github",
            bare: false,
            complete_results: false,
        }
    }

    fn keys() -> SessionKeys {
        SessionKeys::from_config(&[SessionKey {
            id: "k".into(),
            key: Secret::new(base64::engine::general_purpose::STANDARD.encode([9u8; 32])),
        }])
        .unwrap()
    }

    #[test]
    fn request_ids_are_sealed_per_session_and_server() {
        let keys = keys();
        let github = Relay {
            keys: &keys,
            sid: [1; 16],
            server: "github",
            bare: false,
            complete_results: false,
        };
        let notes = Relay {
            server: "notes",
            ..github
        };
        let req = r#"{"jsonrpc":"2.0","id":0,"method":"sampling/createMessage","params":{}}"#;
        let a = github.outbound(req).unwrap();
        let b = notes.outbound(req).unwrap();
        assert_eq!(a.kind, MessageKind::Request);
        let id_a = serde_json::from_str::<Value>(&a.json).unwrap()["id"].clone();
        let id_b = serde_json::from_str::<Value>(&b.json).unwrap()["id"].clone();
        assert_ne!(
            id_a, id_b,
            "same upstream id from two servers must not collide"
        );
        let target = open_id(&keys, [1; 16], id_a.as_str().unwrap()).unwrap();
        assert_eq!(
            target,
            RelayTarget {
                server: "github".into(),
                original_id: "0".into()
            }
        );
        let s = github.seal_id(r#""req-\"7\"""#);
        assert_eq!(
            open_id(&keys, [1; 16], &s).unwrap().original_id,
            r#""req-\"7\"""#
        );
        // Another session, a forged or foreign id: not ours.
        assert_eq!(open_id(&keys, [2; 16], id_a.as_str().unwrap()), None);
        assert_eq!(open_id(&keys, [1; 16], "gh.AAAA"), None);
        assert_eq!(open_id(&keys, [1; 16], "7"), None);
    }

    #[test]
    fn notifications_are_tagged_and_uris_exposed() {
        let keys = keys();
        let r = Relay {
            keys: &keys,
            sid: [1; 16],
            server: "notes",
            bare: false,
            complete_results: false,
        };
        let log = r
            .outbound(r#"{"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"x"}}"#)
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&log.json).unwrap()["params"]["logger"],
            "notes"
        );
        let up = r
            .outbound(r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"file:///a"}}"#)
            .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&up.json).unwrap()["params"]["uri"],
            "gatehouse://notes/file:///a"
        );
        let progress = r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":1}}"#;
        assert!(matches!(
            r.outbound(progress).unwrap().json,
            Cow::Borrowed(_)
        ));
        let changed = r#"{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}"#;
        assert_eq!(r.outbound(changed).unwrap().kind, MessageKind::ToolsChanged);
        assert!(r.outbound("garbage").is_err());
        assert!(r.outbound(r#"{"jsonrpc":"2.0"}"#).is_err());
    }

    #[test]
    fn an_event_too_big_to_hold_ends_the_stream() {
        let keys = keys();
        let r = github(&keys);
        let mut w = SseRewriter::default();
        let first =
            b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: \"";
        let out = w.push(first, &r, &mut |_, _, _| true);
        assert!(out.starts_with(b"data: {"), "{out:?}");
        let filler = vec![b'x'; 1024 * 1024];
        // Up to just under the limit: held, nothing sent.
        for _ in 0..MAX_HELD_EVENT / filler.len() - 1 {
            assert!(w.push(&filler, &r, &mut |_, _, _| true).is_empty());
        }
        assert!(!w.oversized());
        assert!(w.push(&filler, &r, &mut |_, _, _| true).is_empty());
        assert!(w.oversized());
        // Nothing more passes, not even a whole event.
        let after = b"\"\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        assert!(w.push(after, &r, &mut |_, _, _| true).is_empty());
        assert!(w.finish().is_empty());
    }

    #[test]
    fn the_stream_rewriter_handles_any_chunking() {
        let keys = keys();
        let r = github(&keys);
        let stream = b"id: 0\nretry: 3000\ndata:\n\nevent: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"elicitation/create\",\"params\":{}}\r\n\r\n: ping\n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n";
        for cut in 1..stream.len() {
            let mut w = SseRewriter::default();
            let mut kinds = Vec::new();
            let mut out = Vec::new();
            for piece in stream.chunks(cut) {
                out.extend_from_slice(&w.push(piece, &r, &mut |k, _, _| {
                    kinds.push(k);
                    true
                }));
            }
            out.extend_from_slice(&w.finish());
            assert_eq!(
                kinds,
                [
                    MessageKind::Request,
                    MessageKind::ToolsChanged,
                    MessageKind::Response
                ],
                "cut {cut}"
            );
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.starts_with(
                    "id: github:0\nretry: 3000\ndata:\n\nevent: message\nid: github:1\ndata: {"
                ),
                "{text}"
            );
            assert!(text.contains("\"id\":\"gh."), "{text}");
            assert!(text.contains(": ping\n\n"), "{text}");
            assert!(
                text.ends_with("data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_message_the_caller_refuses_is_left_out() {
        let keys = keys();
        let r = github(&keys);
        let stream = b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":9,\"result\":{}}\n\n";
        let mut w = SseRewriter::default();
        let out = w.push(stream, &r, &mut |kind, _, _| kind != MessageKind::Response);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.contains("notifications/message"), "{text}");
        assert!(!text.contains("\"id\":9"), "{text}");
    }

    #[test]
    fn event_ids_name_their_server_and_route_back() {
        let raw = BytesMut::from(&b"id: abc_1\nretry: 500\ndata:\n\n"[..]);
        let out = expose_event_id(raw, "everything");
        assert_eq!(&out[..], b"id: everything:abc_1\nretry: 500\ndata:\n\n");
        assert_eq!(
            event_id_route("everything:abc_1"),
            Some(("everything", "abc_1"))
        );
        // The gateway's own stream ids carry no server.
        assert_eq!(event_id_route("0a1b2c-7"), None);
        let untouched = BytesMut::from(&b"data: {}\n\n"[..]);
        assert_eq!(&expose_event_id(untouched, "x")[..], b"data: {}\n\n");
    }
}
