//! The words the data plane counts requests by: how a request ended ([`Outcome`]),
//! which MCP method it was ([`Method`]) and which client transport carried it
//! ([`Transport`]). Each is a closed enum with one `as_label()`, so a metric label can
//! only be one of the words listed here — a client cannot mint labels.

/// How a client request ended, as `gatehouse_requests_total{outcome}` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// A legacy `/messages` POST taken for its stream.
    Accepted,
    /// A path that names no workspace endpoint.
    NotFound,
    ForbiddenOrigin,
    Unauthorized,
    MethodNotAllowed,
    NotAcceptable,
    BadRequest,
    TooLarge,
    /// Over a rate budget or stream cap (429).
    Limited,
    SessionNotFound,
    InvalidParams,
    UnknownTool,
    UnknownPrompt,
    UnknownResource,
    MethodNotFound,
    UpstreamUnavailable,
    UpstreamError,
    /// A client response to an id the gateway never issued (or whose server is gone).
    UnknownResponse,
    /// A GET stream resumed with `Last-Event-ID`, with events to replay or none.
    Resumed,
    ResumedEmpty,
    /// Anything else that failed (a broken client connection, an internal error).
    Error,
}

impl Outcome {
    pub fn as_label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Accepted => "accepted",
            Outcome::NotFound => "not_found",
            Outcome::ForbiddenOrigin => "forbidden_origin",
            Outcome::Unauthorized => "unauthorized",
            Outcome::MethodNotAllowed => "method_not_allowed",
            Outcome::NotAcceptable => "not_acceptable",
            Outcome::BadRequest => "bad_request",
            Outcome::TooLarge => "too_large",
            Outcome::Limited => "limited",
            Outcome::SessionNotFound => "session_not_found",
            Outcome::InvalidParams => "invalid_params",
            Outcome::UnknownTool => "unknown_tool",
            Outcome::UnknownPrompt => "unknown_prompt",
            Outcome::UnknownResource => "unknown_resource",
            Outcome::MethodNotFound => "method_not_found",
            Outcome::UpstreamUnavailable => "upstream_unavailable",
            Outcome::UpstreamError => "upstream_error",
            Outcome::UnknownResponse => "unknown_response",
            Outcome::Resumed => "resumed",
            Outcome::ResumedEmpty => "resumed_empty",
            Outcome::Error => "error",
        }
    }

    /// Whether the gateway refused the request before it reached any server (an
    /// unknown name, bad params): such a call must not mint a tool label.
    pub fn refused_by_gateway(self) -> bool {
        matches!(
            self,
            Outcome::UnknownTool
                | Outcome::UnknownPrompt
                | Outcome::UnknownResource
                | Outcome::InvalidParams
        )
    }
}

/// What a client request was, as `gatehouse_requests_total{method}` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Not known yet (refused before the body was read).
    Unknown,
    Initialize,
    Ping,
    ToolsList,
    ToolsCall,
    PromptsList,
    PromptsGet,
    ResourcesList,
    ResourceTemplatesList,
    ResourcesRead,
    ResourcesSubscribe,
    ResourcesUnsubscribe,
    CompletionComplete,
    LoggingSetLevel,
    /// Any other JSON-RPC method.
    Other,
    /// A client notification.
    Notification,
    /// A client's answer to a server-to-client request.
    Response,
    /// A Streamable HTTP GET stream.
    Stream,
    /// A 2026-07-28 `subscriptions/listen` stream.
    Listen,
    /// A Streamable HTTP DELETE.
    Delete,
    /// A legacy `GET /sse` stream.
    LegacyStream,
    /// A legacy `/messages` POST whose message is not a request.
    LegacyMessage,
}

impl Method {
    /// The method a JSON-RPC request names.
    pub fn of_request(method: &str) -> Method {
        match method {
            "initialize" => Method::Initialize,
            "ping" => Method::Ping,
            "tools/list" => Method::ToolsList,
            "tools/call" => Method::ToolsCall,
            "prompts/list" => Method::PromptsList,
            "prompts/get" => Method::PromptsGet,
            "resources/list" => Method::ResourcesList,
            "resources/templates/list" => Method::ResourceTemplatesList,
            "resources/read" => Method::ResourcesRead,
            "resources/subscribe" => Method::ResourcesSubscribe,
            "resources/unsubscribe" => Method::ResourcesUnsubscribe,
            "completion/complete" => Method::CompletionComplete,
            "logging/setLevel" => Method::LoggingSetLevel,
            _ => Method::Other,
        }
    }

    pub fn as_label(self) -> &'static str {
        match self {
            Method::Unknown => "-",
            Method::Initialize => "initialize",
            Method::Ping => "ping",
            Method::ToolsList => "tools/list",
            Method::ToolsCall => "tools/call",
            Method::PromptsList => "prompts/list",
            Method::PromptsGet => "prompts/get",
            Method::ResourcesList => "resources/list",
            Method::ResourceTemplatesList => "resources/templates/list",
            Method::ResourcesRead => "resources/read",
            Method::ResourcesSubscribe => "resources/subscribe",
            Method::ResourcesUnsubscribe => "resources/unsubscribe",
            Method::CompletionComplete => "completion/complete",
            Method::LoggingSetLevel => "logging/setLevel",
            Method::Other => "other",
            Method::Notification => "notification",
            Method::Response => "response",
            Method::Stream => "stream",
            Method::Listen => "subscriptions/listen",
            Method::Delete => "delete",
            Method::LegacyStream => "legacy_stream",
            Method::LegacyMessage => "legacy_message",
        }
    }
}

/// The client transports, as metric label and audit event field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    StreamableHttp,
    /// The legacy HTTP+SSE transport (MCP 2024-11-05).
    LegacySse,
    /// Streamable HTTP of the stateless era (MCP 2026-07-28).
    Stateless,
}

impl Transport {
    pub fn as_label(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "streamable_http",
            Transport::LegacySse => "sse",
            Transport::Stateless => "streamable_http_stateless",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_method_label_round_trips() {
        for name in [
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "prompts/list",
            "prompts/get",
            "resources/list",
            "resources/templates/list",
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
            "completion/complete",
            "logging/setLevel",
        ] {
            assert_eq!(Method::of_request(name).as_label(), name);
        }
        assert_eq!(Method::of_request("x/made_up").as_label(), "other");
    }
}
