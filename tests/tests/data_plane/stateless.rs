//! MCP 2026-07-28 on the workspace URL: a stateless client beside a session client,
//! in front of upstreams of every era — the conformance suite's reference server
//! (both eras), an rmcp server of the session era, a legacy HTTP+SSE one — the headers
//! that mirror the body, pooled upstream sessions for stateless clients on any
//! replica, and `subscriptions/listen`.

use std::time::Duration;

use gatehouse_tests::client::{connect_stateless, echo_of};
use gatehouse_tests::forwarder::Forwarder;
use gatehouse_tests::modern::{ModernClient, VERSION};
use gatehouse_tests::reference::{assets, ReferenceServer};
use gatehouse_tests::{ConfigBuilder, Proxy, RawClient, ServerSpec, Upstream, UpstreamTool};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};

const SIMPLE_TEXT: &str = "This is a simple text response for testing.";
const SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";

fn tool_names(result: &Value) -> Vec<String> {
    result["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn text_of(result: &Value) -> &str {
    result["content"][0]["text"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn clients_of_both_eras_share_a_workspace_of_upstreams_of_every_era() -> anyhow::Result<()> {
    let reference = ReferenceServer::start(&assets()?).await?;
    let old = Upstream::builder("old")
        .tools([UpstreamTool::new("echo")])
        .up_to_2025()
        .start()
        .await?;
    let sse = Upstream::builder("sse")
        .tools([UpstreamTool::new("echo")])
        .legacy_sse()
        .start()
        .await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("mixed", ServerSpec::new("modern", &reference.url()))
        .server("mixed", ServerSpec::new("old", &old.url()))
        .server("mixed", ServerSpec::new("sse", &sse.url()).legacy_sse());
    let token = cfg.token("mixed");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let modern = ModernClient::new(&proxy.ws_url("mixed"), &token);

    let discovered = modern.request("server/discover", json!({})).await?;
    assert_eq!(discovered.status, 200, "{discovered:?}");
    let result = discovered.result()?;
    let versions = result["supportedVersions"].as_array().unwrap();
    assert!(versions.contains(&json!(VERSION)) && versions.contains(&json!("2025-11-25")));
    assert!(result["capabilities"]["tools"].is_object(), "{result}");
    assert!(
        result["capabilities"]["prompts"].is_object(),
        "the reference server's prompts: {result}"
    );
    assert_eq!(result["resultType"], "complete");
    assert_eq!(
        result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "gatehouse"
    );

    let listed = modern.request("tools/list", json!({})).await?;
    let result = listed.result()?;
    let names = tool_names(result);
    for name in ["modern__test_simple_text", "old__echo", "sse__echo"] {
        assert!(
            names.contains(&name.to_string()),
            "{name} missing from {names:?}"
        );
    }
    assert_eq!(result["resultType"], "complete");
    assert!(result["ttlMs"].as_u64().is_some(), "{result}");
    assert!(matches!(
        result["cacheScope"].as_str(),
        Some("private" | "public")
    ));

    // The modern server is called statelessly, the others through sessions the
    // stateless client never opened; every result says it is complete.
    let called = modern
        .request(
            "tools/call",
            json!({"name": "modern__test_simple_text", "arguments": {}}),
        )
        .await?;
    // (A modern server's result is relayed as it is: the reference server's has no
    // resultType of its own.)
    assert_eq!(text_of(called.result()?), SIMPLE_TEXT);
    for server in ["old", "sse"] {
        let called = modern
            .request(
                "tools/call",
                json!({"name": format!("{server}__echo"), "arguments": {"n": 1}}),
            )
            .await?;
        let result = called.result()?;
        assert_eq!(result["resultType"], "complete", "{server}: {result}");
        let echo: Value = serde_json::from_str(text_of(result))?;
        assert_eq!(
            echo,
            json!({"server": server, "tool": "echo", "arguments": {"n": 1}})
        );
    }

    // rmcp's own 2026-07-28 client (server/discover, no session) sees the same.
    let rmcp = connect_stateless(&proxy.ws_url("mixed"), &token).await?;
    let tools = rmcp.list_all_tools().await?;
    let rmcp_names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(rmcp_names, names);
    let called = rmcp
        .call_tool(CallToolRequestParams::new("old__echo"))
        .await?;
    assert_eq!(echo_of(&called)?["server"], "old");

    // A session client in the same workspace at the same time sees the same tools.
    let mut session = RawClient::new(proxy.ws_url("mixed"), Some(&token));
    session.initialize().await?;
    let tools = session.list_tools(2).await?;
    assert_eq!(tools.tool_names()?, names);
    let called = session
        .call_tool(3, "modern__test_simple_text", json!({}))
        .await?;
    assert_eq!(text_of(called.result()?), SIMPLE_TEXT);
    Ok(())
}

#[tokio::test]
async fn the_headers_must_mirror_the_body_and_the_era_is_checked() -> anyhow::Result<()> {
    let old = Upstream::builder("old")
        .tools([UpstreamTool::new("echo")])
        .up_to_2025()
        .start()
        .await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("ws", ServerSpec::new("old", &old.url()));
    let token = cfg.token("ws");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let client = ModernClient::new(&proxy.ws_url("ws"), &token);
    let call = |name: &str| {
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": name, "arguments": {}, "_meta": client.meta()}})
    };
    let v = ("MCP-Protocol-Version", VERSION);
    let m = ("Mcp-Method", "tools/call");

    let refused = [
        // Mcp-Name names another tool than the body.
        (
            call("old__echo"),
            vec![v, m, ("Mcp-Name", "old__other")],
            -32020,
        ),
        // No Mcp-Name on a tools/call.
        (call("old__echo"), vec![v, m], -32020),
        // No Mcp-Method.
        (
            call("old__echo"),
            vec![v, ("Mcp-Name", "old__echo")],
            -32020,
        ),
        // Values are case-sensitive.
        (
            call("old__echo"),
            vec![v, ("Mcp-Method", "TOOLS/CALL"), ("Mcp-Name", "old__echo")],
            -32020,
        ),
        // The version header disagrees with the body.
        (
            call("old__echo"),
            vec![
                ("MCP-Protocol-Version", "2026-01-01"),
                m,
                ("Mcp-Name", "old__echo"),
            ],
            -32020,
        ),
    ];
    for (body, headers, code) in refused {
        let got = client.post(&body, &headers).await?;
        assert_eq!(
            (got.status, got.error_code()),
            (400, Some(code)),
            "{headers:?}: {got:?}"
        );
        assert_eq!(got.messages[0]["id"], 7, "the error answers the request");
    }
    assert!(
        old.calls().is_empty(),
        "no refused call reached the upstream"
    );

    // Base64 form, and whitespace around the value, are the same name.
    let encoded = format!("=?base64?{}?=", "b2xkX19lY2hv"); // "old__echo"
    for name in [encoded.as_str(), "  old__echo "] {
        let got = client
            .post(&call("old__echo"), &[v, m, ("Mcp-Name", name)])
            .await?;
        assert!(got.result().is_ok(), "{name:?}: {got:?}");
    }

    // A version the gateway does not speak: -32022 with the ones it does.
    let mut body = json!({"jsonrpc": "2.0", "id": 8, "method": "tools/list", "params": {"_meta": client.meta()}});
    body["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = json!("2099-01-01");
    let got = client
        .post(
            &body,
            &[
                ("MCP-Protocol-Version", "2099-01-01"),
                ("Mcp-Method", "tools/list"),
            ],
        )
        .await?;
    assert_eq!(
        (got.status, got.error_code()),
        (400, Some(-32022)),
        "{got:?}"
    );
    assert_eq!(got.messages[0]["error"]["data"]["requested"], "2099-01-01");
    assert_eq!(got.messages[0]["error"]["data"]["supported"][0], VERSION);

    // Missing _meta fields: invalid params.
    let got = client
        .post(
            &json!({"jsonrpc": "2.0", "id": 9, "method": "tools/list", "params": {}}),
            &[v, ("Mcp-Method", "tools/list")],
        )
        .await?;
    assert_eq!(
        (got.status, got.error_code()),
        (400, Some(-32602)),
        "{got:?}"
    );

    // The session era's methods, and those this era removed, are unknown to it.
    for method in [
        "initialize",
        "ping",
        "logging/setLevel",
        "resources/subscribe",
        "no/such",
    ] {
        let got = client.request(method, json!({})).await?;
        assert_eq!(
            (got.status, got.error_code()),
            (404, Some(-32601)),
            "{method}: {got:?}"
        );
    }
    // ...while a session client still initializes on the same URL.
    let mut session = RawClient::new(proxy.ws_url("ws"), Some(&token));
    session.initialize().await?;
    Ok(())
}

#[tokio::test]
async fn a_modern_upstream_gets_the_name_it_knows_and_the_clients_param_headers(
) -> anyhow::Result<()> {
    let reference = ReferenceServer::start(&assets()?).await?;
    let base = reference.url().trim_end_matches("/mcp").to_string();
    let watch = Forwarder::start(&base, "x-via", "gatehouse-test").await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("ws", ServerSpec::new("ref", &watch.url("/mcp")));
    let token = cfg.token("ws");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let client = ModernClient::new(&proxy.ws_url("ws"), &token);
    let body = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
        "params": {"name": "ref__test_simple_text", "arguments": {}, "_meta": client.meta()}});
    let got = client
        .post(
            &body,
            &[
                ("MCP-Protocol-Version", VERSION),
                ("Mcp-Method", "tools/call"),
                ("Mcp-Name", "ref__test_simple_text"),
                ("Mcp-Param-Region", "eu-west-1"),
            ],
        )
        .await?;
    assert_eq!(text_of(got.result()?), SIMPLE_TEXT);
    let seen = watch.requests();
    let call = seen
        .iter()
        .find(|h| h.get("mcp-method").is_some_and(|v| v == "tools/call"))
        .expect("the call reached the upstream");
    assert_eq!(
        call["mcp-name"], "test_simple_text",
        "rewritten to the upstream's name"
    );
    assert_eq!(call["mcp-protocol-version"], VERSION);
    assert_eq!(call["mcp-param-region"], "eu-west-1");
    assert!(
        call.get("mcp-session-id").is_none(),
        "no session with a modern upstream"
    );
    assert!(
        call.get("authorization").is_none(),
        "the client's token never goes upstream"
    );
    assert!(
        seen.iter()
            .all(|h| h.get("mcp-method").is_none_or(|m| m != "initialize")),
        "a stateless client never makes the gateway initialize a modern upstream"
    );
    Ok(())
}

#[tokio::test]
async fn stateless_requests_share_pooled_sessions_and_any_replica_serves_them() -> anyhow::Result<()>
{
    let old = Upstream::builder("old")
        .tools([UpstreamTool::new("echo")])
        .up_to_2025()
        .start()
        .await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("ws", ServerSpec::new("old", &old.url()));
    let token = cfg.token("ws");
    cfg.write()?;
    let first = Proxy::start(cfg.path()).await?;
    let second = Proxy::start(cfg.path()).await?;
    let call = json!({"name": "old__echo", "arguments": {}});

    let on_first = ModernClient::new(&first.ws_url("ws"), &token);
    for _ in 0..3 {
        on_first
            .request("tools/call", call.clone())
            .await?
            .result()?;
    }
    assert_eq!(
        old.issued_sessions().len(),
        1,
        "one pooled session for one client"
    );

    // Another replica, no shared state: it opens its own and serves the same client.
    let on_second = ModernClient::new(&second.ws_url("ws"), &token);
    on_second
        .request("tools/call", call.clone())
        .await?
        .result()?;
    assert_eq!(old.issued_sessions().len(), 2);

    // Different capabilities, a different pooled session (servers may offer
    // different things to them).
    let sampling =
        ModernClient::new(&first.ws_url("ws"), &token).with_capabilities(json!({"sampling": {}}));
    sampling
        .request("tools/call", call.clone())
        .await?
        .result()?;
    assert_eq!(old.issued_sessions().len(), 3);

    // The upstream forgets its sessions: the next call reopens one transparently.
    old.forget_sessions().await;
    let again = on_first.request("tools/call", call).await?;
    assert!(again.result().is_ok(), "{again:?}");
    assert_eq!(old.issued_sessions().len(), 4);
    Ok(())
}

#[tokio::test]
async fn a_listen_stream_hears_config_changes_and_upstream_changes_it_asked_for(
) -> anyhow::Result<()> {
    let reference = ReferenceServer::start(&assets()?).await?;
    let old = Upstream::builder("old")
        .tools([UpstreamTool::new("echo")])
        .up_to_2025()
        .start()
        .await?;
    let mut cfg = ConfigBuilder::new()?;
    // Bare: its diagnostic tool that changes its list is not listed, and a bare
    // server answers for names it does not list.
    cfg.server("ws", ServerSpec::new("modern", &reference.url()).bare())
        .server("ws", ServerSpec::new("old", &old.url()));
    let token = cfg.token("ws");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let client = ModernClient::new(&proxy.ws_url("ws"), &token);
    let wait = Duration::from_secs(10);

    let mut tools = client.listen(json!({"toolsListChanged": true})).await?;
    assert_eq!(tools.headers["x-accel-buffering"], "no");
    let ack = tools.next(wait).await?.expect("an acknowledgement");
    assert_eq!(ack["method"], "notifications/subscriptions/acknowledged");
    assert_eq!(ack["params"]["_meta"][SUBSCRIPTION_ID], tools.id);
    assert_eq!(
        ack["params"]["notifications"],
        json!({"toolsListChanged": true})
    );
    let mut prompts = client.listen(json!({"promptsListChanged": true})).await?;
    prompts.next(wait).await?.expect("an acknowledgement");

    // A 2026 upstream's change, from its own listen stream.
    client
        .request(
            "tools/call",
            json!({"name": "test_trigger_tool_change", "arguments": {}}),
        )
        .await?
        .result()?;
    let (changed, _) = tools
        .until("notifications/tools/list_changed", wait)
        .await?;
    assert_eq!(changed["params"]["_meta"][SUBSCRIPTION_ID], tools.id);

    // A 2025 upstream's change, from the GET stream of the pooled session.
    old.notify_tools_changed().await;
    let (changed, _) = tools
        .until("notifications/tools/list_changed", wait)
        .await?;
    assert_eq!(changed["params"]["_meta"][SUBSCRIPTION_ID], tools.id);

    // A config change that alters the workspace's tools reaches every open stream,
    // each with what it asked for.
    let extra = Upstream::start("extra", [UpstreamTool::new("new_tool")]).await?;
    cfg.server("ws", ServerSpec::new("extra", &extra.url()));
    let version = cfg.rewrite()?;
    proxy.wait_for_config_version(version).await?;
    tools
        .until("notifications/tools/list_changed", wait)
        .await?;
    let (changed, before) = prompts
        .until("notifications/prompts/list_changed", wait)
        .await?;
    assert_eq!(changed["params"]["_meta"][SUBSCRIPTION_ID], prompts.id);
    assert!(
        before
            .iter()
            .chain(std::iter::once(&changed))
            .all(|m| m["method"] != "notifications/tools/list_changed"),
        "a stream that asked for prompts only never hears of tools: {before:?}"
    );
    let listed = client.request("tools/list", json!({})).await?;
    assert!(tool_names(listed.result()?).contains(&"extra__new_tool".to_string()));
    Ok(())
}

#[tokio::test]
async fn a_stateless_client_meets_its_tokens_budgets() -> anyhow::Result<()> {
    let up = Upstream::start("up", [UpstreamTool::new("echo")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("ws", ServerSpec::new("up", &up.url()));
    cfg.workspace("ws").limits.per_token.tool_calls_per_minute = Some(1);
    let token = cfg.token("ws");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let client = ModernClient::new(&proxy.ws_url("ws"), &token);
    let call = json!({"name": "up__echo", "arguments": {}});
    client.request("tools/call", call.clone()).await?.result()?;
    let refused = client.request("tools/call", call).await?;
    assert_eq!(refused.status, 429, "{refused:?}");
    let error = &refused.messages[0]["error"];
    assert_eq!(error["code"], json!(-32029), "{refused:?}");
    assert_eq!(
        error["data"]["limit"],
        json!("token_tool_calls"),
        "{refused:?}"
    );
    // Never sent upstream; other methods are not tool calls.
    assert_eq!(up.calls().len(), 1);
    client.request("tools/list", json!({})).await?.result()?;
    Ok(())
}
