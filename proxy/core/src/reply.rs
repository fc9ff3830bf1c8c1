//! How a routed call ended, read from the reply the client got: a streaming scan of a
//! JSON-RPC response that never builds a tree ([`ReplyScan`]), and the watch that
//! follows a relayed reply, JSON body or event stream ([`ReplyWatch`]).

use gatehouse_config::audit::CallOutcome;

use crate::outcome::Outcome;
use crate::relay::MessageKind;

/// Reads a JSON-RPC response as it streams past, chunk by chunk, and tells how the
/// call ended — without buffering or parsing it into a tree: it tracks nesting and
/// strings, notes the top-level `result`/`error` key and `result.isError: true`.
#[derive(Debug, Default)]
pub struct ReplyScan {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// Whether each open container (up to depth 2) is an object.
    objects: [bool; 3],
    /// A string at this position is a key.
    expect_key: bool,
    /// Bytes of the key being read (only short keys matter).
    key: [u8; 8],
    key_len: usize,
    key_overflow: bool,
    /// The last key completed at depth 1 and at depth 2.
    top_key: TopKey,
    /// After `"isError":`, waiting for the value's first byte.
    await_is_error_value: bool,
    is_error: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum TopKey {
    #[default]
    None,
    Result,
    Error,
    Other,
}

impl ReplyScan {
    pub fn push(&mut self, chunk: &[u8]) {
        let mut at = 0;
        while at < chunk.len() {
            if self.in_string && !self.escaped && !self.expect_key {
                // Most of a reply is string content (tool text), where only a quote
                // or a backslash changes anything: jump to the next one.
                match memchr::memchr2(b'"', b'\\', &chunk[at..]) {
                    Some(n) => at += n,
                    None => return,
                }
            }
            let b = chunk[at];
            at += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                    if self.expect_key {
                        self.end_key();
                    }
                    continue;
                }
                if self.expect_key {
                    if self.key_len < self.key.len() {
                        self.key[self.key_len] = b;
                        self.key_len += 1;
                    } else {
                        self.key_overflow = true;
                    }
                }
                continue;
            }
            if self.await_is_error_value && !b.is_ascii_whitespace() && b != b':' {
                self.await_is_error_value = false;
                if b == b't' && self.top_key == TopKey::Result {
                    self.is_error = true;
                }
            }
            match b {
                b'"' => {
                    self.in_string = true;
                    self.key_len = 0;
                    self.key_overflow = false;
                }
                b'{' | b'[' => {
                    self.depth += 1;
                    if let Some(slot) = self.objects.get_mut(self.depth as usize) {
                        *slot = b == b'{';
                    }
                    self.expect_key = b == b'{' && self.depth <= 2;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.expect_key = false;
                }
                b',' => {
                    self.expect_key = self.depth <= 2
                        && self
                            .objects
                            .get(self.depth as usize)
                            .copied()
                            .unwrap_or(false);
                }
                b':' => self.expect_key = false,
                _ => {}
            }
        }
    }

    fn end_key(&mut self) {
        let key = &self.key[..self.key_len];
        let exact = |k: &[u8]| !self.key_overflow && key == k;
        match self.depth {
            1 => {
                self.top_key = if exact(b"result") {
                    TopKey::Result
                } else if exact(b"error") {
                    TopKey::Error
                } else if self.top_key == TopKey::None {
                    TopKey::Other
                } else {
                    // Keys after `result`/`error` (e.g. a trailing `id`) do not undo it.
                    self.top_key
                };
            }
            2 => {
                self.await_is_error_value = self.top_key == TopKey::Result && exact(b"isError");
            }
            _ => {}
        }
    }

    /// How the call ended; `None` when no `result` or `error` was seen.
    pub fn outcome(&self) -> Option<CallOutcome> {
        match self.top_key {
            TopKey::Error => Some(CallOutcome::ProtocolError),
            TopKey::Result if self.is_error => Some(CallOutcome::ToolError),
            TopKey::Result => Some(CallOutcome::Ok),
            _ => None,
        }
    }
}

/// Watches the reply to a routed call as it is relayed: a JSON body chunk by chunk,
/// or the response message of an event stream.
#[derive(Debug, Default)]
pub struct ReplyWatch {
    scan: ReplyScan,
    from_stream: Option<CallOutcome>,
}

impl ReplyWatch {
    /// A chunk of an `application/json` reply.
    pub fn body(&mut self, chunk: &[u8]) {
        self.scan.push(chunk);
    }

    /// A message of a `text/event-stream` reply.
    pub fn message(&mut self, kind: MessageKind, json: &str) {
        if kind == MessageKind::Response {
            self.from_stream = outcome_of(json.as_bytes());
        }
    }

    pub fn outcome(&self) -> Option<CallOutcome> {
        self.from_stream.or_else(|| self.scan.outcome())
    }
}

/// How a call the gateway answered itself (with `body`, under the request outcome
/// `outcome`) ended, and whether it reached a server at all — unknown names and bad
/// params did not, and must not mint tool labels.
pub fn answered(outcome: Outcome, body: &[u8]) -> (CallOutcome, bool) {
    let ended = match outcome {
        Outcome::UpstreamUnavailable | Outcome::SessionNotFound => CallOutcome::UpstreamUnavailable,
        _ => response_outcome(body),
    };
    (ended, !outcome.refused_by_gateway())
}

/// How a call ended that got `answer`: a complete JSON-RPC response (one that says
/// neither `result` nor `error` is a protocol error), or no answer at all.
pub fn answer_outcome<E>(answer: &Result<String, E>) -> CallOutcome {
    match answer {
        Ok(response) => response_outcome(response.as_bytes()),
        Err(_) => CallOutcome::UpstreamUnavailable,
    }
}

fn response_outcome(response: &[u8]) -> CallOutcome {
    outcome_of(response).unwrap_or(CallOutcome::ProtocolError)
}

/// How a call ended whose upstream answered with the HTTP error `status`: a server
/// failing is unavailable, a request it refused is a protocol error.
pub fn status_outcome(status: u16) -> CallOutcome {
    if status >= 500 {
        CallOutcome::UpstreamUnavailable
    } else {
        CallOutcome::ProtocolError
    }
}

/// The outcome of one complete JSON-RPC response.
pub fn outcome_of(response: &[u8]) -> Option<CallOutcome> {
    let mut scan = ReplyScan::default();
    scan.push(response);
    scan.outcome()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &str, piece: usize) -> Option<CallOutcome> {
        let mut scan = ReplyScan::default();
        for chunk in body.as_bytes().chunks(piece) {
            scan.push(chunk);
        }
        scan.outcome()
    }

    #[test]
    fn results_errors_and_tool_errors_are_told_apart_in_any_chunking() {
        let cases = [
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"hi"}]}}"#,
                Some(CallOutcome::Ok),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[],"isError":true}}"#,
                Some(CallOutcome::ToolError),
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"isError" : false,"content":[]}}"#,
                Some(CallOutcome::Ok),
            ),
            (
                r#"{"jsonrpc":"2.0","id":"a","error":{"code":-32602,"message":"Unknown tool: x"}}"#,
                Some(CallOutcome::ProtocolError),
            ),
            // `isError` and `error` deeper down, or inside strings, do not count.
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"structuredContent":{"isError":true,"error":1},"content":[{"type":"text","text":"\"isError\":true"}]}}"#,
                Some(CallOutcome::Ok),
            ),
            (
                r#"{"result":{"content":[{"isError":true}]},"id":1,"jsonrpc":"2.0"}"#,
                Some(CallOutcome::Ok),
            ),
            // Escaped backslashes and quotes inside text, where the scan skips ahead.
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"a \\ b \" c \\\" d \\"}],"isError":true}}"#,
                Some(CallOutcome::ToolError),
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, None),
            ("not json", None),
        ];
        for (body, want) in cases {
            for piece in [1, 2, 3, 7, body.len()] {
                assert_eq!(
                    scan_in_pieces(body, piece),
                    want,
                    "{body} in pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn long_keys_do_not_match_their_prefix() {
        assert_eq!(
            outcome_of(br#"{"resultant":1,"errors":2,"result":{"isErrorous":true}}"#),
            Some(CallOutcome::Ok)
        );
    }
}
