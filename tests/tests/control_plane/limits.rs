//! Rate limits set from the CLI (`workspace limits`, `workspace token limits`) as a
//! client meets them through the proxy: what is refused (429, `Retry-After`, a
//! JSON-RPC error naming the budget), what is still served (other tokens, other
//! methods), the metric and the audit record of a refused call, and limits cleared.

use std::time::Duration;

use gatehouse_tests::{wait_until, RawClient, RawResponse, Upstream, UpstreamTool, STEP_TIMEOUT};
use serde_json::{json, Value};

use crate::fixture::{assert_fails, token_in};

const WS: &str = "engineering";

fn error_of(response: &RawResponse) -> anyhow::Result<Value> {
    let body: Value = serde_json::from_slice(&response.body)?;
    Ok(body)
}

/// A refusal as the proxy writes it: 429, the JSON-RPC error answering `id`, the
/// budget it exceeded; returns `Retry-After` in seconds.
fn assert_limited(response: &RawResponse, id: Value, limit: &str) -> anyhow::Result<u64> {
    assert_eq!(response.status, 429, "{response:?}");
    let body = error_of(response)?;
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["error"]["code"], -32029, "{body}");
    assert_eq!(body["error"]["data"]["limit"], limit, "{body}");
    let retry_after: u64 = response
        .header("retry-after")
        .ok_or_else(|| anyhow::anyhow!("no Retry-After: {response:?}"))?
        .parse()?;
    assert_eq!(body["error"]["data"]["retryAfter"], retry_after, "{body}");
    Ok(retry_after)
}

#[tokio::test]
async fn limits_set_from_the_cli_are_enforced_on_the_proxy() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let alice = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    let bob = token_in(
        &d.admin
            .ok(&["workspace", "token", "create", WS, "--name", "Bob"])
            .await?,
    )?;
    let github = Upstream::start("github", [UpstreamTool::new("create_issue")]).await?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            &github.url(),
            "--name",
            "github",
            "-w",
            WS,
        ])
        .await?;

    // Nothing is limited until someone says so.
    let shown = d.admin.ok(&["workspace", "limits", WS]).await?;
    assert_eq!(
        shown,
        "Limits of engineering:\n  workspace:          no limit\n  each token:         no limit\n  streams per token:  no cap\nEach proxy enforces 1/1 of every budget (gatehouse serve --proxy-share).\n"
    );

    // One tool call per minute for each token.
    let set = d
        .admin
        .ok(&["workspace", "limits", WS, "--token-calls-per-minute", "1"])
        .await?;
    assert!(
        set.contains("  each token:         1 tool calls/min\n"),
        "{set}"
    );
    d.synced().await?;
    let url = d.proxy.ws_url(WS);
    let mut as_alice = RawClient::new(&url, Some(&alice));
    as_alice.initialize().await?;
    let first = as_alice
        .call_tool(7, "github__create_issue", json!({"title": "a"}))
        .await?;
    assert_eq!(first.status, 200, "{first:?}");
    let second = as_alice
        .call_tool(8, "github__create_issue", json!({"title": "b"}))
        .await?;
    let wait = assert_limited(&second, json!(8), "token_tool_calls")?;
    assert!((50..=60).contains(&wait), "Retry-After {wait}");
    // The refused call never reached the upstream.
    assert_eq!(github.calls().len(), 1);
    // Other methods are not tool calls; another token has its own budget.
    assert_eq!(as_alice.list_tools(9).await?.status, 200);
    let mut as_bob = RawClient::new(&url, Some(&bob));
    as_bob.initialize().await?;
    let bobs = as_bob
        .call_tool(1, "github__create_issue", json!({"title": "c"}))
        .await?;
    assert_eq!(bobs.status, 200, "{bobs:?}");

    // Bob's own limit: one request at a time, one per second.
    let own = d
        .admin
        .ok(&[
            "workspace",
            "token",
            "limits",
            WS,
            "--name",
            "Bob",
            "--rps",
            "1",
            "--burst",
            "1",
        ])
        .await?;
    assert_eq!(
        own,
        "Token \"Bob\": 1 req/s (burst 1) (the workspace's per-token limits fill in the rest).\n"
    );
    d.synced().await?;
    let mut refused = None;
    for id in 10..20 {
        let answer = as_bob.list_tools(id).await?;
        if answer.status == 429 {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.ok_or_else(|| anyhow::anyhow!("Bob was never refused at 1 req/s"))?;
    // Refused before the body was read: the id is not known.
    assert_eq!(assert_limited(&refused, Value::Null, "token_requests")?, 1);
    // Alice has no request rate.
    for id in 20..25 {
        assert_eq!(as_alice.list_tools(id).await?.status, 200);
    }

    // Counted by workspace and budget.
    let metrics = d.proxy.metrics().await?;
    for reason in ["token_tool_calls", "token_requests"] {
        let line =
            format!("gatehouse_limited_requests_total{{reason=\"{reason}\",workspace=\"{WS}\"}} 1");
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in:\n{metrics}"
        );
    }

    // The refused call is in the audit log, as refused.
    let admin = &d.admin;
    let tool_calls = || async move {
        admin
            .json(&["workspace", "audit", WS, "--action", "tool_call"])
            .await
            .ok()
            .and_then(|v| v["events"].as_array().cloned())
            .unwrap_or_default()
    };
    wait_until(
        "the refused call in the audit log",
        Duration::from_secs(15),
        || async { tool_calls().await.len() >= 3 },
    )
    .await?;
    let calls = tool_calls().await;
    let outcomes: Vec<&str> = calls.iter().filter_map(|e| e["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["ok", "rate_limited", "ok"], "{calls:#?}");
    assert_eq!(calls[1]["target"], "github__create_issue");
    assert_eq!(calls[1]["request_id"], "8");
    // And so are the changes of limits.
    let admin_events = d
        .admin
        .json(&["workspace", "audit", WS, "--action", "limits_set"])
        .await?;
    assert_eq!(admin_events["events"].as_array().map(Vec::len), Some(1));

    // Nonsense is refused with the field it is about, and changes nothing.
    let zero = d
        .admin
        .run(&["workspace", "limits", WS, "--rps", "0"])
        .await?;
    assert_fails(&zero, 2, "workspace.requests_per_second");
    let kept = d.admin.json(&["workspace", "limits", WS]).await?;
    assert_eq!(
        kept["limits"],
        json!({"per_token": {"tool_calls_per_minute": 1}})
    );

    // Cleared, Alice calls again at once.
    d.admin.ok(&["workspace", "limits", WS, "--clear"]).await?;
    d.admin
        .ok(&[
            "workspace",
            "token",
            "limits",
            WS,
            "--name",
            "Bob",
            "--clear",
        ])
        .await?;
    d.synced().await?;
    let again = as_alice
        .call_tool(30, "github__create_issue", json!({"title": "d"}))
        .await?;
    assert_eq!(again.status, 200, "{again:?}");
    for id in 31..35 {
        assert_eq!(as_bob.list_tools(id).await?.status, 200);
    }
    Ok(())
}

#[tokio::test]
async fn a_token_holds_no_more_streams_than_its_cap() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    d.admin
        .ok(&["workspace", "limits", WS, "--streams-per-token", "1"])
        .await?;
    d.synced().await?;
    let mut client = RawClient::new(d.proxy.ws_url(WS), Some(&token));
    client.initialize().await?;
    let open = client.open_stream(None).await?;
    let refused = client.get_stream(None).await?;
    assert_eq!(
        refused.status, 429,
        "a second stream was opened over the cap"
    );
    let metrics = d.proxy.metrics().await?;
    let line = format!(
        "gatehouse_limited_requests_total{{reason=\"token_streams\",workspace=\"{WS}\"}} 1"
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in:\n{metrics}"
    );
    drop(open);
    // The slot comes back when the stream closes.
    wait_until(
        "a stream once the first closed",
        Duration::from_secs(10),
        || async { client.open_stream(None).await.is_ok() },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_token_opens_no_more_sessions_per_minute_than_its_budget() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let alice = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    let bob = token_in(
        &d.admin
            .ok(&["workspace", "token", "create", WS, "--name", "Bob"])
            .await?,
    )?;
    let set = d
        .admin
        .ok(&[
            "workspace",
            "limits",
            WS,
            "--token-sessions-per-minute",
            "2",
        ])
        .await?;
    assert!(
        set.contains("  each token:         2 new sessions/min\n"),
        "{set}"
    );
    d.synced().await?;
    let url = d.proxy.ws_url(WS);
    // Two sessions at once (a minute's worth), the third is refused...
    let mut sessions = Vec::new();
    for _ in 0..2 {
        let mut client = RawClient::new(&url, Some(&alice));
        client.initialize().await?;
        sessions.push(client);
    }
    let third = RawClient::new(&url, Some(&alice)).send_initialize().await?;
    let wait = assert_limited(&third, json!(0), "token_sessions")?;
    assert!((1..=30).contains(&wait), "Retry-After {wait}");
    // ...while the sessions it has keep serving, and another token opens its own.
    for client in &sessions {
        assert_eq!(client.list_tools(2).await?.status, 200);
    }
    RawClient::new(&url, Some(&bob)).initialize().await?;
    let metrics = d.proxy.metrics().await?;
    let line = format!(
        "gatehouse_limited_requests_total{{reason=\"token_sessions\",workspace=\"{WS}\"}} 1"
    );
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in:\n{metrics}"
    );
    // A budget of nothing is refused, naming the field.
    assert_fails(
        &d.admin
            .run(&["workspace", "limits", WS, "--sessions-per-minute", "0"])
            .await?,
        2,
        "sessions_per_minute",
    );
    Ok(())
}

#[tokio::test]
async fn the_proxies_connection_cap_is_set_on_the_control_plane() -> anyhow::Result<()> {
    use gatehouse_tests::control_plane::{ControlPlane, GatewayProxy};
    use tokio::net::TcpStream;
    let cp = ControlPlane::start_with_args(&["--proxy-max-connections", "2"]).await?;
    let state = gatehouse_tests::TempDir::new("gw-state")?;
    let proxy = GatewayProxy::start(
        &cp.api_url(),
        cp.proxy_token(),
        state.path(),
        cp.gateway_ports(),
    )
    .await?;
    proxy
        .wait_for_config_version(u64::try_from(cp.published_version().await?)?)
        .await?;
    let addr = proxy
        .url("")
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()?;
    let _first = TcpStream::connect(addr).await?;
    let _second = TcpStream::connect(addr).await?;
    wait_until("the proxy holds both connections", STEP_TIMEOUT, || async {
        proxy.metrics().await.is_ok_and(|m| {
            gatehouse_tests::metrics::sample(&m, "gatehouse_open_connections", &[]) == Some(2.0)
        })
    })
    .await?;
    // The third is answered 503 at once, and closed.
    let mut third = TcpStream::connect(addr).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        STEP_TIMEOUT,
        tokio::io::AsyncReadExt::read_to_end(&mut third, &mut answer),
    )
    .await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    Ok(())
}
