//! What can go wrong with an upstream, whatever its transport, and what a successful
//! `initialize` told the gateway.

use serde_json::{json, Value};

/// Why an upstream could not serve a request. Messages never include secrets.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connection failed")]
    Connect,
    #[error("timed out")]
    Timeout,
    #[error("its session ended")]
    SessionGone,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("sent an invalid reply: {0}")]
    Protocol(String),
    /// The upstream's own JSON-RPC error, `data` included, for the client as it was.
    #[error("returned error {code}: {message}")]
    Rpc {
        code: i64,
        message: String,
        data: Option<Box<Value>>,
    },
    #[error("is not usable: {0}")]
    Unusable(String),
    /// Its circuit breaker is open: it failed repeatedly, and is not asked again
    /// for a while.
    #[error("is failing (circuit breaker open after repeated failures); retry in {} s", retry_in.as_secs().max(1))]
    CircuitOpen { retry_in: std::time::Duration },
    /// Its cap on calls in flight is reached and as many calls already wait.
    #[error("is busy: {in_flight} calls in flight and {queued} waiting, the most it is sent; try again shortly")]
    Busy { in_flight: u32, queued: u32 },
}

impl UpstreamError {
    /// Label for `gatehouse_upstream_errors_total`.
    pub fn as_label(&self) -> &'static str {
        match self {
            UpstreamError::Connect => "connect",
            UpstreamError::Timeout => "timeout",
            UpstreamError::SessionGone => "session_gone",
            UpstreamError::Status(_) => "http_status",
            UpstreamError::Protocol(_) => "protocol",
            UpstreamError::Rpc { .. } => "rpc_error",
            UpstreamError::Unusable(_) => "unusable",
            UpstreamError::CircuitOpen { .. } => "circuit_open",
            UpstreamError::Busy { .. } => "busy",
        }
    }

    pub(crate) fn from_reqwest(e: reqwest::Error) -> UpstreamError {
        if e.is_timeout() {
            UpstreamError::Timeout
        } else if e.is_connect() {
            UpstreamError::Connect
        } else {
            UpstreamError::Protocol(e.without_url().to_string())
        }
    }
}

/// The result of a successful upstream `initialize`.
#[derive(Debug)]
pub struct Initialized {
    pub session_id: Option<String>,
    pub protocol_version: String,
    pub instructions: Option<String>,
    /// The server's `capabilities` object (`{}` when it sent none).
    pub capabilities: Value,
}

impl Initialized {
    /// Reads an `initialize` result, refusing a protocol version the gateway does not
    /// speak.
    pub fn from_result(result: &Value, session_id: Option<String>) -> Result<Self, UpstreamError> {
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| UpstreamError::Protocol("no protocolVersion".into()))?;
        if !gatehouse_mcp::versions::is_supported(version) {
            return Err(UpstreamError::Protocol(format!(
                "unsupported protocol version {version:?}"
            )));
        }
        Ok(Initialized {
            session_id,
            protocol_version: version.to_string(),
            instructions: result
                .get("instructions")
                .and_then(Value::as_str)
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string),
            capabilities: result
                .get("capabilities")
                .filter(|c| c.is_object())
                .cloned()
                .unwrap_or_else(|| json!({})),
        })
    }
}

/// The `result` of a JSON-RPC response, or its error (message cut to 200 chars).
pub fn take_result(message: &mut Value) -> Result<Value, UpstreamError> {
    if let Some(err) = message.get("error") {
        return Err(UpstreamError::Rpc {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .chars()
                .take(200)
                .collect(),
            data: err.get("data").cloned().map(Box::new),
        });
    }
    match message.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(UpstreamError::Protocol(
            "response has neither result nor error".into(),
        )),
    }
}
