//! Routes, authentication, `Origin` and `Accept`: what is refused before any
//! upstream is contacted, and how.

use gatehouse_tests::config::random_base62;
use gatehouse_tests::RawClient;

use crate::fixture::{Gateway, ALLOWED_ORIGIN, ENG_TOOLS, INITIALIZE};

#[tokio::test]
async fn workspace_routes_serve_mcp_and_other_paths_are_404() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    for path in ["/ws/eng", "/ws/eng/mcp"] {
        let mut client = RawClient::new(gw.proxy.url(path), Some(&gw.alice));
        let init = client.initialize().await?;
        assert_eq!(init.status, 200, "POST {path}");
        assert_eq!(
            client.list_tools(1).await?.tool_names()?,
            ENG_TOOLS,
            "tools/list on {path}"
        );
    }
    for path in [
        "/",
        "/mcp",
        "/ws",
        "/wsx/eng",
        "/ws/eng/other",
        "/ws/eng/mcp/extra",
    ] {
        let response = RawClient::new(gw.proxy.url(path), Some(&gw.alice))
            .send(INITIALIZE)
            .await?;
        assert_eq!(response.status, 404, "POST {path}: {}", response.text());
    }
    Ok(())
}

#[tokio::test]
async fn every_authentication_failure_is_the_same_401() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let unknown = format!("mwt_{}", random_base62(43));
    let bearer = |t: &str| Some(format!("Bearer {t}"));
    let cases: Vec<(&str, String, Option<String>)> = vec![
        ("no Authorization", "/ws/eng".into(), None),
        (
            "Basic scheme",
            "/ws/eng".into(),
            Some("Basic YWxpY2U6cHc=".into()),
        ),
        ("empty bearer", "/ws/eng".into(), Some("Bearer".into())),
        (
            "not a workspace token",
            "/ws/eng".into(),
            bearer("ghp_secret"),
        ),
        ("unknown token", "/ws/eng/mcp".into(), bearer(&unknown)),
        ("expired token", "/ws/eng".into(), bearer(&gw.expired)),
        ("revoked token", "/ws/eng/mcp".into(), bearer(&gw.revoked)),
        (
            "another workspace's token",
            "/ws/eng".into(),
            bearer(&gw.carol),
        ),
        ("unknown workspace", "/ws/nope".into(), bearer(&gw.alice)),
        (
            "unknown workspace, unknown token",
            "/ws/nope".into(),
            bearer(&unknown),
        ),
    ];
    let mut bodies = Vec::new();
    for (case, path, authorization) in &cases {
        let mut post = RawClient::new(gw.proxy.url(path), None).post(INITIALIZE);
        if let Some(value) = authorization {
            post = post.header("authorization", value);
        }
        let response = post.send().await?;
        assert_eq!(response.status, 401, "{case}: {}", response.text());
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.to_ascii_lowercase().starts_with("bearer"),
            "{case}: WWW-Authenticate {challenge:?}"
        );
        response
            .json()
            .map_err(|e| anyhow::anyhow!("{case}: 401 body must be JSON: {e}"))?;
        bodies.push((case, response));
    }
    // Whether the workspace exists must not show: same status, challenge and body.
    let other_ws = &bodies[7].1;
    let unknown_ws = &bodies[8].1;
    assert_eq!(other_ws.body, unknown_ws.body);
    assert_eq!(
        other_ws.header("www-authenticate"),
        unknown_ws.header("www-authenticate")
    );
    for (case, response) in &bodies {
        assert_eq!(
            response.body, bodies[0].1.body,
            "{case}: body differs from the missing-token body"
        );
    }
    for upstream in gw.upstreams() {
        assert!(
            upstream.requests().is_empty(),
            "refused requests must not reach upstream {}",
            upstream.label()
        );
    }
    Ok(())
}

#[tokio::test]
async fn foreign_origins_are_forbidden() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    for origin in [
        "https://evil.example",
        "http://localhost.evil.example",
        "https://app.example.com.evil.example",
        "http://app.example.com",
    ] {
        let response = client
            .post(INITIALIZE)
            .header("origin", origin)
            .send()
            .await?;
        assert_eq!(response.status, 403, "Origin {origin}: {}", response.text());
    }
    for origin in [
        "http://localhost:5173",
        "http://127.0.0.1:8080",
        "http://[::1]:3000",
        ALLOWED_ORIGIN,
    ] {
        let response = client
            .post(INITIALIZE)
            .header("origin", origin)
            .send()
            .await?;
        assert_eq!(response.status, 200, "Origin {origin}: {}", response.text());
        assert!(response.session_id().is_some(), "Origin {origin}");
    }
    Ok(())
}

#[tokio::test]
async fn posts_must_accept_json_and_event_streams() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    for accept in ["application/json", "text/event-stream", "text/html"] {
        let response = client
            .post(INITIALIZE)
            .header("accept", accept)
            .send()
            .await?;
        assert_eq!(
            response.status,
            406,
            "Accept: {accept}: {}",
            response.text()
        );
    }
    let both = client
        .post(INITIALIZE)
        .header("accept", "text/event-stream, application/json")
        .send()
        .await?;
    assert_eq!(both.status, 200, "{}", both.text());
    Ok(())
}
