//! Reading a long-lived event stream as it arrives: the Streamable HTTP GET stream,
//! a legacy `/sse` stream, or a `tools/call` reply a test wants to watch event by
//! event. Every block is kept, comments included, so keep-alives are observable.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;

use crate::STEP_TIMEOUT;

/// One block of an event stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: Option<String>,
    /// `data` lines joined by `\n`; `None` when the block had none.
    pub data: Option<String>,
    /// Comment lines (`: text`), without the colon.
    pub comments: Vec<String>,
}

impl Event {
    /// The data as JSON, when it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.data.as_deref()?).ok()
    }

    /// `method` of the JSON-RPC message in the data.
    pub fn method(&self) -> Option<String> {
        self.json()?.get("method")?.as_str().map(str::to_owned)
    }
}

/// An open event stream.
pub struct EventStream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    body: futures::stream::BoxStream<'static, reqwest::Result<axum::body::Bytes>>,
    buf: Vec<u8>,
    ended: bool,
    /// Why the body ended in an error (e.g. a chunked body cut off), if it did.
    broken: Option<String>,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> EventStream {
        EventStream {
            status: response.status(),
            headers: response.headers().clone(),
            body: response.bytes_stream().boxed(),
            buf: Vec::new(),
            ended: false,
            broken: None,
        }
    }

    /// The next block, waiting at most `limit`; `Ok(None)` when the stream ended.
    pub async fn next_within(&mut self, limit: Duration) -> anyhow::Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(event) = self.take_block() {
                return Ok(Some(event));
            }
            if self.ended {
                return Ok(None);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => anyhow::bail!("no event within {limit:?}"),
                Ok(None) => self.ended = true,
                Ok(Some(Err(e))) => {
                    self.ended = true;
                    self.broken = Some(format!("{e:?}"));
                }
                // JSON never holds a raw CR, so dropping them turns CRLF line ends into LF.
                Ok(Some(Ok(chunk))) => self
                    .buf
                    .extend(chunk.iter().copied().filter(|b| *b != b'\r')),
            }
        }
    }

    /// The next block (within [`STEP_TIMEOUT`]).
    pub async fn next(&mut self) -> anyhow::Result<Option<Event>> {
        self.next_within(STEP_TIMEOUT).await
    }

    /// Reads until a block satisfies `want`, returning it and everything before it.
    pub async fn until(
        &mut self,
        what: &str,
        want: impl Fn(&Event) -> bool,
    ) -> anyhow::Result<(Event, Vec<Event>)> {
        let mut before = Vec::new();
        loop {
            match self.next().await {
                Ok(Some(event)) if want(&event) => return Ok((event, before)),
                Ok(Some(event)) => before.push(event),
                Ok(None) => anyhow::bail!("the stream ended before {what}; got {before:#?}"),
                Err(e) => anyhow::bail!("{e} while waiting for {what}; got {before:#?}"),
            }
        }
    }

    /// Reads until the JSON-RPC message with `method` arrives.
    pub async fn until_method(&mut self, method: &str) -> anyhow::Result<Event> {
        Ok(self
            .until(method, |e| e.method().as_deref() == Some(method))
            .await?
            .0)
    }

    /// Waits for the server to end the stream, skipping whatever comes first.
    pub async fn until_end(&mut self) -> anyhow::Result<Vec<Event>> {
        let mut seen = Vec::new();
        while let Some(event) = self.next().await? {
            seen.push(event);
        }
        Ok(seen)
    }

    /// Whether the body was framed (chunked or with a length) and ended as framed, so
    /// the connection could carry another request: not cut off, not ended by a close.
    pub fn ended_framed(&self) -> Result<(), String> {
        if let Some(e) = &self.broken {
            return Err(format!("the body ended in an error: {e}"));
        }
        let chunked = self
            .headers
            .get(reqwest::header::TRANSFER_ENCODING)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"chunked"));
        if chunked || self.headers.contains_key(reqwest::header::CONTENT_LENGTH) {
            Ok(())
        } else {
            Err(format!(
                "neither chunked nor a length: ended by closing the connection ({:?})",
                self.headers
            ))
        }
    }

    fn take_block(&mut self) -> Option<Event> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let block = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 2);
        let mut event = Event::default();
        let mut data: Vec<String> = Vec::new();
        for line in block.lines() {
            if let Some(comment) = line.strip_prefix(':') {
                event.comments.push(comment.trim().to_owned());
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => data.push(value.to_owned()),
                "id" => event.id = Some(value.to_owned()),
                "event" => event.event = Some(value.to_owned()),
                _ => {}
            }
        }
        if !data.is_empty() {
            event.data = Some(data.join("\n"));
        }
        Some(event)
    }
}
