//! Upstreams that are down or have forgotten their sessions.

use std::time::{Duration, Instant};

use gatehouse_tests::{
    connect, echo_of, wait_until, CallOutcome, ConfigBuilder, Proxy, RawClient, ServerSpec,
    TokenSpec, Upstream, UpstreamTool, STEP_TIMEOUT,
};
use serde_json::json;

use crate::fixture::{call, tool_names, try_call, Gateway};

#[tokio::test]
async fn a_dead_upstream_does_not_break_the_workspace() -> anyhow::Result<()> {
    let mut gw = Gateway::start().await?;
    gw.notes.stop().await;

    let started = Instant::now();
    let client = connect(&gw.eng_url(), &gw.alice).await?;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "initialize waited {elapsed:?} on a refused connection"
    );
    assert_eq!(
        tool_names(&client).await?,
        [
            "github__create_issue",
            "github__list_issues",
            "github__slow"
        ]
    );
    match try_call(&client, "notes__search", json!({"q": "x"})).await? {
        CallOutcome::JsonRpcError(_) => {}
        other => panic!("a dead server's tool must give a JSON-RPC error, got {other:?}"),
    }
    // The session is still good for the live server.
    let result = call(&client, "github__list_issues", json!({})).await?;
    assert_eq!(echo_of(&result)?["tool"], json!("list_issues"));

    let mut raw = RawClient::new(gw.eng_url(), Some(&gw.alice));
    raw.initialize().await?;
    let response = raw.call_tool(7, "notes__search", json!({"q": "x"})).await?;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(response.error().is_ok(), "{}", response.text());
    assert_eq!(response.message()?["id"], json!(7));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_upstream_dying_mid_session_gives_json_rpc_errors() -> anyhow::Result<()> {
    let mut gw = Gateway::start().await?;
    let client = connect(&gw.eng_url(), &gw.alice).await?;
    call(&client, "notes__search", json!({"q": "before"})).await?;

    gw.notes.stop().await;
    match try_call(&client, "notes__search", json!({"q": "after"})).await? {
        CallOutcome::JsonRpcError(_) => {}
        other => panic!("a server that went away must give a JSON-RPC error, got {other:?}"),
    }
    let result = call(&client, "github__create_issue", json!({})).await?;
    assert_eq!(echo_of(&result)?["server"], json!("github"));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn upstream_session_expiry_makes_the_client_reinitialize() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut raw = RawClient::new(gw.eng_url(), Some(&gw.alice));
    raw.initialize().await?;
    let first = raw
        .call_tool(1, "github__create_issue", json!({"n": 1}))
        .await?;
    assert_eq!(first.tool_echo()?["arguments"], json!({"n": 1}));

    gw.github.forget_sessions().await;
    let expired = raw
        .call_tool(2, "github__create_issue", json!({"n": 2}))
        .await?;
    assert_eq!(
        expired.status,
        404,
        "the upstream session is gone, so the client must re-initialize: {}",
        expired.text()
    );

    raw.initialize().await?;
    let again = raw
        .call_tool(3, "github__create_issue", json!({"n": 3}))
        .await?;
    assert_eq!(again.tool_echo()?["arguments"], json!({"n": 3}));

    // The rmcp client does that re-initialization by itself.
    let client = connect(&gw.eng_url(), &gw.alice).await?;
    call(&client, "github__create_issue", json!({"n": 4})).await?;
    gw.github.forget_sessions().await;
    let result = call(&client, "github__create_issue", json!({"n": 5})).await?;
    assert_eq!(echo_of(&result)?["arguments"], json!({"n": 5}));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_client_that_hangs_up_ends_its_call_at_once() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut raw = RawClient::new(gw.eng_url(), Some(&gw.alice));
    raw.initialize().await?;
    let calling = tokio::spawn({
        let raw = raw.clone();
        async move {
            raw.call_tool(1, "github__slow", json!({"ms": 60_000}))
                .await
        }
    });
    wait_until(
        "the slow call reaches the upstream",
        STEP_TIMEOUT,
        || async { gw.github.calls().iter().any(|c| c.tool == "slow") },
    )
    .await?;
    // Dropping the request closes the client's connection.
    calling.abort();
    // The gateway notices and ends the request (counted when it ends) long before
    // the tool would have answered.
    let ended = || async {
        let Ok((_, text)) = gw.proxy.metrics().await else {
            return false;
        };
        gatehouse_tests::metrics::sample(
            &text,
            "gatehouse_requests_total",
            &[
                ("workspace", "eng"),
                ("transport", "streamable_http"),
                ("method", "tools/call"),
                ("outcome", "error"),
            ],
        ) == Some(1.0)
    };
    wait_until("the hung-up call is ended", Duration::from_secs(10), ended).await?;
    // The connection still serves others.
    let again = raw.call_tool(2, "github__create_issue", json!({})).await?;
    assert_eq!(again.tool_echo()?["tool"], json!("create_issue"));
    Ok(())
}

/// The JSON-RPC error message a call to `tool` gets, which must be an error.
async fn error_message(client: &gatehouse_tests::McpClient, tool: &str) -> anyhow::Result<String> {
    match try_call(client, tool, json!({"q": "x"})).await? {
        CallOutcome::JsonRpcError(e) => Ok(e.message.to_string()),
        other => anyhow::bail!("{tool} must give a JSON-RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_failing_upstream_trips_its_circuit_breaker_and_closes_it_once_back() -> anyhow::Result<()>
{
    let mut gw = Gateway::start().await?;
    let addr = gw.notes.addr();
    let client = connect(&gw.eng_url(), &gw.alice).await?;
    call(&client, "notes__search", json!({"q": "before"})).await?;
    gw.notes.stop().await;

    // Five failures in a row open the breaker; the next call fails at once with a
    // message that says why, and never tries the server. `search` is read-only, so
    // each refused call is sent twice: three calls make the five failures (the
    // third is not sent again once the breaker opened).
    for _ in 0..3 {
        let message = error_message(&client, "notes__search").await?;
        assert!(!message.contains("circuit breaker"), "{message}");
    }
    let message = error_message(&client, "notes__search").await?;
    assert!(message.contains("circuit breaker open"), "{message}");
    let (_, metrics) = gw.proxy.metrics().await?;
    for line in [
        "gatehouse_upstream_circuit_open{server=\"notes\",workspace=\"eng\"} 1",
        "gatehouse_upstream_circuit_opened_total{server=\"notes\",workspace=\"eng\"} 1",
        "gatehouse_upstream_retries_total{server=\"notes\",workspace=\"eng\"} 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }
    // Another server of the workspace is not affected.
    let result = call(&client, "github__list_issues", json!({})).await?;
    assert_eq!(echo_of(&result)?["tool"], json!("list_issues"));

    // Back on its address, it is asked again after the cool-down (one probe), and
    // the breaker closes.
    let notes = gatehouse_tests::Upstream::builder("notes")
        .tools([gatehouse_tests::UpstreamTool::new("search").read_only(true)])
        .listen_on(addr)
        .start()
        .await?;
    wait_until(
        "a call through the closed breaker",
        Duration::from_secs(15),
        || async {
            matches!(
                try_call(&client, "notes__search", json!({"q": "after"})).await,
                Ok(CallOutcome::Result(_))
            )
        },
    )
    .await?;
    assert!(!notes.calls().is_empty());
    let (_, metrics) = gw.proxy.metrics().await?;
    let closed = "gatehouse_upstream_circuit_open{server=\"notes\",workspace=\"eng\"} 0";
    assert!(metrics.lines().any(|l| l == closed), "{metrics}");
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn calls_past_an_upstreams_cap_wait_and_past_its_queue_are_refused_at_once(
) -> anyhow::Result<()> {
    let github = Upstream::start("github", [UpstreamTool::new("slow")]).await?;
    let notes = Upstream::start("notes", [UpstreamTool::new("search")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server(
        "eng",
        ServerSpec::new("github", &github.url()).in_flight(1, 1),
    )
    .server("eng", ServerSpec::new("notes", &notes.url()));
    let alice = cfg.token_with("eng", TokenSpec::named("alice"));
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let client = connect(&proxy.ws_url("eng"), &alice).await?;

    // One call runs at the upstream...
    let running = tokio::spawn({
        let peer = client.peer().clone();
        async move { slow(&peer, 1_500).await }
    });
    wait_until("the first call runs", STEP_TIMEOUT, || async {
        github.calls().len() == 1
    })
    .await?;
    // ...one waits for it...
    let waiting = tokio::spawn({
        let peer = client.peer().clone();
        async move {
            let started = Instant::now();
            slow(&peer, 1).await.map(|r| (r, started.elapsed()))
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(github.calls().len(), 1, "the second call did not wait");
    // ...and the third is refused at once, saying why.
    let started = Instant::now();
    let message = error_message(&client, "github__slow").await?;
    assert!(
        started.elapsed() < Duration::from_millis(1_000),
        "the refusal took {:?}",
        started.elapsed()
    );
    assert!(
        message.contains("github") && message.contains("busy: 1 calls in flight and 1 waiting"),
        "{message}"
    );
    // Another server of the workspace is not held up.
    let result = call(&client, "notes__search", json!({"q": "x"})).await?;
    assert_eq!(echo_of(&result)?["tool"], json!("search"));

    assert!(matches!(running.await??, CallOutcome::Result(_)));
    let (second, waited) = waiting.await??;
    assert!(matches!(second, CallOutcome::Result(_)), "{second:?}");
    assert!(
        waited >= Duration::from_millis(1_000),
        "the waiting call ran after {waited:?}, before the first finished"
    );
    assert_eq!(
        github.calls().len(),
        2,
        "the refused call reached the upstream"
    );
    let (_, metrics) = proxy.metrics().await?;
    let busy =
        "gatehouse_upstream_errors_total{kind=\"busy\",server=\"github\",workspace=\"eng\"} 1";
    assert!(
        metrics.lines().any(|l| l == busy),
        "no {busy:?} in:\n{metrics}"
    );
    client.cancel().await?;
    Ok(())
}

/// A call of the fixture's `slow` tool (`ms` long) on `peer`.
async fn slow(peer: &rmcp::Peer<rmcp::RoleClient>, ms: u64) -> anyhow::Result<CallOutcome> {
    let params = rmcp::model::CallToolRequestParams::new("github__slow")
        .with_arguments(crate::fixture::args(json!({"ms": ms})));
    let outcome = gatehouse_tests::within(
        "tools/call github__slow",
        STEP_TIMEOUT,
        peer.call_tool(params),
    )
    .await?;
    Ok(CallOutcome::from(outcome))
}
