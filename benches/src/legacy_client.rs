//! A minimal legacy HTTP+SSE client (MCP 2024-11-05) for timing round trips: `GET
//! /ws/<slug>/sse`, read the `endpoint` event, POST messages there (each answers 202)
//! and read their responses off the stream. wrk cannot do this: the answer to a POST
//! arrives on another connection.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

/// The protocol version this client announces.
pub const LEGACY_PROTOCOL_VERSION: &str = "2024-11-05";
/// How long one step (opening the stream, one round trip) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// One open legacy session: its event stream and the URL its messages go to.
pub struct LegacySession {
    stream: reqwest::Response,
    /// Bytes read off the stream that do not yet make a whole event.
    buffered: Vec<u8>,
    /// The message URL, absolute.
    endpoint: String,
    bearer: String,
    next_id: u64,
}

impl LegacySession {
    /// Opens the stream at `sse_url`, then `initialize` + `notifications/initialized`.
    pub async fn open(
        http: &reqwest::Client,
        sse_url: &str,
        bearer: &str,
    ) -> anyhow::Result<LegacySession> {
        let stream = tokio::time::timeout(
            STEP_TIMEOUT,
            http.get(sse_url)
                .header("Accept", "text/event-stream")
                .bearer_auth(bearer)
                .send(),
        )
        .await
        .with_context(|| format!("GET {sse_url}: no answer in {STEP_TIMEOUT:?}"))?
        .with_context(|| format!("GET {sse_url}"))?;
        if stream.status() != 200 {
            bail!("GET {sse_url} answered {}", stream.status());
        }
        let mut session = LegacySession {
            stream,
            buffered: Vec::new(),
            endpoint: String::new(),
            bearer: bearer.to_string(),
            next_id: 0,
        };
        let (event, data) = session
            .next_event()
            .await?
            .context("the stream ended before its endpoint event")?;
        if event.as_deref() != Some("endpoint") {
            bail!("the first event of {sse_url} is {event:?}, not `endpoint`");
        }
        session.endpoint = reqwest::Url::parse(sse_url)?.join(&data)?.to_string();
        let params = json!({
            "protocolVersion": LEGACY_PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "1"}
        });
        session
            .request(http, "initialize", params)
            .await
            .context("legacy initialize")?;
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        session.post(http, &initialized).await?;
        Ok(session)
    }

    /// POSTs a request and reads the stream until its response; returns the response
    /// and the time from sending the POST to reading the response.
    pub async fn request(
        &mut self,
        http: &reqwest::Client,
        method: &str,
        params: Value,
    ) -> anyhow::Result<(Value, Duration)> {
        self.next_id += 1;
        let id = self.next_id;
        let started = Instant::now();
        self.post(
            http,
            &json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}),
        )
        .await?;
        let response = tokio::time::timeout(STEP_TIMEOUT, self.response_to(id))
            .await
            .with_context(|| format!("no response to {method} {id} in {STEP_TIMEOUT:?}"))??;
        let elapsed = started.elapsed();
        if let Some(err) = response.get("error") {
            bail!("{method}: JSON-RPC error: {err}");
        }
        Ok((response, elapsed))
    }

    /// POSTs one message to the endpoint; anything but 202 is an error.
    async fn post(&self, http: &reqwest::Client, message: &Value) -> anyhow::Result<()> {
        let resp = http
            .post(&self.endpoint)
            .header("Content-Type", "application/json")
            .bearer_auth(&self.bearer)
            .body(message.to_string())
            .send()
            .await
            .with_context(|| format!("POST {}", self.endpoint))?;
        let status = resp.status();
        // Read to the end so the connection goes back to the pool.
        let body = resp.text().await.unwrap_or_default();
        if status != 202 {
            bail!("POST {} answered {status}: {body}", self.endpoint);
        }
        Ok(())
    }

    /// Reads events until the response with `id`.
    async fn response_to(&mut self, id: u64) -> anyhow::Result<Value> {
        loop {
            let (_, data) = self
                .next_event()
                .await?
                .with_context(|| format!("the stream ended before the response to {id}"))?;
            let Ok(message) = serde_json::from_str::<Value>(&data) else {
                continue;
            };
            if message.get("id") == Some(&json!(id))
                && (message.get("result").is_some() || message.get("error").is_some())
            {
                return Ok(message);
            }
        }
    }

    /// The next event with data (`event` name, `data`); comments are skipped. `None`
    /// when the stream ends.
    async fn next_event(&mut self) -> anyhow::Result<Option<(Option<String>, String)>> {
        loop {
            if let Some(end) = find(&self.buffered, b"\n\n") {
                let raw: Vec<u8> = self.buffered.drain(..end + 2).collect();
                if let Some(event) = parse_event(&String::from_utf8_lossy(&raw)) {
                    return Ok(Some(event));
                }
                continue;
            }
            match self
                .stream
                .chunk()
                .await
                .context("reading the SSE stream")?
            {
                Some(chunk) => self.buffered.extend_from_slice(&chunk),
                None => return Ok(None),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One SSE event's name and data; `None` for an event without data (a comment).
fn parse_event(raw: &str) -> Option<(Option<String>, String)> {
    let mut event = None;
    let mut data: Option<String> = None;
    for line in raw.lines() {
        if let Some(name) = line.strip_prefix("event:") {
            event = Some(name.trim_start().to_string());
        } else if let Some(d) = line.strip_prefix("data:") {
            let d = d.strip_prefix(' ').unwrap_or(d);
            match &mut data {
                Some(existing) => {
                    existing.push('\n');
                    existing.push_str(d);
                }
                None => data = Some(d.to_string()),
            }
        }
    }
    data.map(|d| (event, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_skips_comments() {
        assert_eq!(
            parse_event("event: endpoint\ndata: /ws/b/messages?sessionId=1\n\n"),
            Some((
                Some("endpoint".to_string()),
                "/ws/b/messages?sessionId=1".to_string()
            ))
        );
        assert_eq!(parse_event(": keep-alive\n\n"), None);
        assert_eq!(
            parse_event("data: a\ndata: b\n\n"),
            Some((None, "a\nb".to_string()))
        );
    }
}
