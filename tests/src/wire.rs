//! Reading replies off the wire: SSE events and, for the rare request that must not
//! go through hyper, a minimal HTTP/1.1 response.

use serde_json::Value;

/// Whether `message` is a JSON-RPC response (an `id` and a `result` or an `error`).
pub fn is_response(message: &Value) -> bool {
    message.get("id").is_some()
        && (message.get("result").is_some() || message.get("error").is_some())
}

/// The JSON `data` of every complete event in an SSE body (events end with a blank
/// line; `data` spans its `data:` lines joined by `\n`). Events without JSON data,
/// such as priming events, are skipped.
pub fn sse_messages(body: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(body)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut out = Vec::new();
    let mut events: Vec<&str> = text.split("\n\n").collect();
    // The last piece is an unfinished event unless the body ended with a blank line.
    events.pop();
    for event in events {
        let data: Vec<&str> = event
            .lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|d| d.strip_prefix(' ').unwrap_or(d))
            .collect();
        if data.is_empty() {
            continue;
        }
        if let Ok(value) = serde_json::from_str::<Value>(&data.join("\n")) {
            out.push(value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_bodies_yield_their_json_messages() {
        let body = b"id: 0\nretry: 3000\ndata:\n\nevent: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\r\ndata: {\"jsonrpc\":\"2.0\",\ndata: \"id\":1,\"result\":{}}\n\ndata: {\"incomplete";
        let messages = sse_messages(body);
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(is_response(&messages[1]));
        assert!(!is_response(&messages[0]));
    }
}

/// Just enough HTTP/1.1 response parsing for [`crate::RawPost::send_reading_early`].
pub mod http1 {
    use axum::body::Bytes;
    use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
    use reqwest::StatusCode;

    fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
        let at = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        Some((&raw[..at], &raw[at + 4..]))
    }

    /// Whether `raw` holds a whole response (by `Content-Length` or final chunk).
    pub fn is_complete(raw: &[u8]) -> bool {
        let Some((head, rest)) = split_head(raw) else {
            return false;
        };
        let head = String::from_utf8_lossy(head).to_ascii_lowercase();
        if let Some(len) = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            return rest.len() >= len;
        }
        head.contains("transfer-encoding: chunked") && rest.ends_with(b"0\r\n\r\n")
    }

    pub fn parse(raw: &[u8]) -> anyhow::Result<(StatusCode, HeaderMap, Bytes)> {
        let (head, rest) = split_head(raw).ok_or_else(|| {
            anyhow::anyhow!(
                "incomplete HTTP response: {:?}",
                String::from_utf8_lossy(raw)
            )
        })?;
        let head = std::str::from_utf8(head)?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let code = status_line
            .split(' ')
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("bad status line {status_line:?}"))?;
        let status = StatusCode::from_bytes(code.as_bytes())?;
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.append(
                    HeaderName::from_bytes(name.trim().as_bytes())?,
                    HeaderValue::from_str(value.trim())?,
                );
            }
        }
        let chunked = headers
            .get("transfer-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
        let body = if chunked {
            dechunk(rest)?
        } else {
            let len = headers
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(rest.len());
            rest[..len.min(rest.len())].to_vec()
        };
        Ok((status, headers, Bytes::from(body)))
    }

    fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let at = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| anyhow::anyhow!("truncated chunk size"))?;
            let size_text = std::str::from_utf8(&rest[..at])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
            rest = &rest[at + 2..];
            if size == 0 {
                return Ok(out);
            }
            anyhow::ensure!(rest.len() >= size + 2, "truncated chunk");
            out.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    }
}
