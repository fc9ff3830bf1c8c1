//! Answers the gateway writes itself, and the request checks that precede them.

use bytes::Bytes;
use gatehouse_mcp::{jsonrpc, modern};
use http::header::{self, HeaderName};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;

use crate::limits::Refusal;

/// The one answer every authentication failure gets, whatever the reason and whether
/// or not the workspace exists.
pub const UNAUTHORIZED_BODY: &[u8] =
    br#"{"error":"unauthorized","error_description":"a valid workspace bearer token is required"}"#;
pub const WWW_AUTHENTICATE: &str = r#"Bearer realm="gatehouse", error="invalid_token", error_description="a valid workspace bearer token is required""#;

/// Writes a complete JSON answer. Returns `Ok(true)`: "response already sent".
/// (Every head the gateway writes is built without Pingora's header-case map: the
/// names are `http`'s lowercase constants either way, and the map costs per header.)
pub async fn json(
    session: &mut ServerSession,
    status: u16,
    extra: &[(HeaderName, &str)],
    body: Bytes,
) -> Result<bool> {
    let mut resp = ResponseHeader::build_no_case(status, Some(3 + extra.len()))?;
    resp.insert_header(header::CONTENT_TYPE, "application/json")?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    for (name, value) in extra {
        resp.insert_header(name, *value)?;
    }
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(body, true).await?;
    Ok(true)
}

/// A complete JSON-RPC message as a one-event stream (`text/event-stream`), for a
/// client that prefers streams; the same message `json` would write otherwise.
pub async fn event(session: &mut ServerSession, body: Bytes) -> Result<bool> {
    let mut framed = Vec::with_capacity(body.len() + 24);
    framed.extend_from_slice(b"event: message\ndata: ");
    framed.extend_from_slice(&body);
    framed.extend_from_slice(b"\n\n");
    let mut resp = ResponseHeader::build_no_case(200, Some(2))?;
    resp.insert_header(header::CONTENT_TYPE, "text/event-stream")?;
    resp.insert_header(header::CONTENT_LENGTH, framed.len())?;
    session.write_response_header(Box::new(resp)).await?;
    session
        .write_response_body(Bytes::from(framed), true)
        .await?;
    Ok(true)
}

/// `202 Accepted` with no body: what notifications and responses get.
pub async fn accepted(session: &mut ServerSession) -> Result<bool> {
    let mut resp = ResponseHeader::build_no_case(202, Some(1))?;
    resp.insert_header(header::CONTENT_LENGTH, 0)?;
    session.write_response_header(Box::new(resp)).await?;
    Ok(true)
}

/// An error answered before the request body was read: the connection cannot be
/// reused, since unread body bytes would be taken for the next request.
pub async fn refuse(session: &mut ServerSession, status: u16, message: &str) -> Result<bool> {
    session.set_keepalive(None);
    let body = serde_json::json!({ "error": message }).to_string();
    json(session, status, &[], Bytes::from(body)).await
}

/// A request over a rate budget or stream cap: 429, `Retry-After` when a wait is
/// known, and a JSON-RPC error answering `id` (raw JSON; `null` before the body was
/// read) with code [`jsonrpc::LIMITED`] and the budget in `data`.
pub async fn limited(session: &mut ServerSession, id: &str, refusal: &Refusal) -> Result<bool> {
    let mut data = serde_json::json!({ "limit": refusal.exceeded.as_label() });
    if let Some(s) = refusal.retry_after() {
        data["retryAfter"] = s.into();
    }
    // The connection stays open (Pingora drains an unread body before reuse): a
    // client told to slow down should not pay for a new connection too.
    let body = modern::error_with_data(id, jsonrpc::LIMITED, &refusal.message(), &data);
    match refusal.retry_after() {
        Some(s) => json(session, 429, &[(header::RETRY_AFTER, &s.to_string())], body).await,
        None => json(session, 429, &[], body).await,
    }
}

pub async fn unauthorized(session: &mut ServerSession) -> Result<bool> {
    session.set_keepalive(None);
    json(
        session,
        401,
        &[(header::WWW_AUTHENTICATE, WWW_AUTHENTICATE)],
        Bytes::from_static(UNAUTHORIZED_BODY),
    )
    .await
}

/// Which endpoint of a workspace a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/ws/{slug}` and `/ws/{slug}/mcp`: Streamable HTTP.
    Mcp,
    /// `/ws/{slug}/sse`: the legacy stream (GET without a session), and Streamable
    /// HTTP for clients that try it first on the URL they were given.
    Sse,
    /// `/ws/{slug}/messages`: where legacy clients POST.
    Messages,
}

/// The workspace slug and endpoint of a path.
pub fn route(path: &str) -> Option<(&str, Endpoint)> {
    let rest = path.strip_prefix("/ws/")?;
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (slug, endpoint) = match rest.split_once('/') {
        None => (rest, Endpoint::Mcp),
        Some((slug, "mcp")) => (slug, Endpoint::Mcp),
        Some((slug, "sse")) => (slug, Endpoint::Sse),
        Some((slug, "messages")) => (slug, Endpoint::Messages),
        Some(_) => return None,
    };
    (!slug.is_empty()).then_some((slug, endpoint))
}

/// The workspace slug of any workspace endpoint.
pub fn workspace_slug(path: &str) -> Option<&str> {
    route(path).map(|(slug, _)| slug)
}

/// The value of `name` in a query string (`a=1&b=2`), percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// DNS-rebinding defence: a browser origin must be loopback or explicitly allowed.
/// The `Host` header proves nothing here — a rebound name sends a matching one.
pub fn origin_allowed(origin: &[u8], allowed: &[String]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.iter().any(|a| *a == origin || a == "*") {
        return true;
    }
    let Ok(url) = url::Url::parse(&origin) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Whether the client accepts both reply forms a Streamable HTTP server may choose.
pub fn accepts_mcp_replies(accept: Option<&[u8]>) -> bool {
    let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    accept.contains("*/*")
        || (accept.contains("application/json") && accept.contains("text/event-stream"))
}

/// Whether the client lists `text/event-stream` before `application/json`: the
/// gateway's own answers then come as a one-event stream (a routed call's reply keeps
/// the form its upstream chose). Either form is valid for a client that accepts both.
pub fn prefers_event_stream(accept: Option<&[u8]>) -> bool {
    let Some(accept) = accept.and_then(|a| std::str::from_utf8(a).ok()) else {
        return false;
    };
    let accept = accept.to_ascii_lowercase();
    match (
        accept.find("text/event-stream"),
        accept.find("application/json"),
    ) {
        (Some(stream), Some(json)) => stream < json,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_is_preferred_only_when_listed_first() {
        let prefers = |a: &str| prefers_event_stream(Some(a.as_bytes()));
        assert!(prefers("text/event-stream, application/json"));
        assert!(!prefers("application/json, text/event-stream"));
        assert!(!prefers("*/*"));
        assert!(!prefers_event_stream(None));
    }

    #[test]
    fn routes() {
        assert_eq!(workspace_slug("/ws/eng"), Some("eng"));
        assert_eq!(workspace_slug("/ws/eng/"), Some("eng"));
        assert_eq!(workspace_slug("/ws/eng/mcp"), Some("eng"));
        assert_eq!(workspace_slug("/ws/eng/other"), None);
        assert_eq!(route("/ws/eng/sse"), Some(("eng", Endpoint::Sse)));
        assert_eq!(
            route("/ws/eng/messages/"),
            Some(("eng", Endpoint::Messages))
        );
        assert_eq!(route("/ws/eng/mcp"), Some(("eng", Endpoint::Mcp)));
        assert_eq!(route("/ws/eng/sse/x"), None);
        assert_eq!(
            query_param(Some("a=1&sessionId=ab%2Fc"), "sessionId").as_deref(),
            Some("ab/c")
        );
        assert_eq!(workspace_slug("/ws/"), None);
        assert_eq!(workspace_slug("/metrics"), None);
    }

    #[test]
    fn origins() {
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(b"http://localhost:3000", &allowed));
        assert!(origin_allowed(b"http://127.0.0.1", &allowed));
        assert!(origin_allowed(b"http://[::1]:8080", &allowed));
        assert!(origin_allowed(b"https://app.example.com", &allowed));
        assert!(origin_allowed(b"https://APP.example.com/", &allowed));
        assert!(!origin_allowed(b"https://evil.example", &allowed));
        assert!(!origin_allowed(b"null", &allowed));
        assert!(!origin_allowed(b"http://localhost.evil.example", &allowed));
    }

    #[test]
    fn accept_header() {
        assert!(accepts_mcp_replies(Some(
            b"application/json, text/event-stream"
        )));
        assert!(accepts_mcp_replies(Some(
            b"text/event-stream;q=0.9, application/json"
        )));
        assert!(accepts_mcp_replies(Some(b"*/*")));
        assert!(!accepts_mcp_replies(Some(b"application/json")));
        assert!(!accepts_mcp_replies(None));
    }
}
