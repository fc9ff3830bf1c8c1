//! The legacy HTTP+SSE transport, both directions: clients on `/ws/<slug>/sse`, and
//! upstreams that speak only legacy SSE.

use gatehouse_tests::{
    connect_as, echo_of, wait_until, within, ConfigBuilder, LegacySession, Proxy, RawClient,
    ServerSpec, Upstream, UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};

use crate::fixture::{Gateway, ENG_TOOLS};

fn talking_tools() -> Vec<UpstreamTool> {
    ["sample", "progress", "echo"]
        .into_iter()
        .map(UpstreamTool::new)
        .collect()
}

fn tool_text(response: &Value) -> anyhow::Result<Value> {
    let text = response["result"]["content"][0]["text"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no text content in {response}"))?;
    Ok(serde_json::from_str(text)?)
}

#[tokio::test]
async fn legacy_sse_clients_use_the_whole_workspace() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let sse_url = gw.proxy.url("/ws/eng/sse");
    let mut client = LegacySession::open(&sse_url, Some(&gw.alice)).await?;
    assert!(
        client
            .endpoint_path
            .starts_with("/ws/eng/messages?sessionId="),
        "{}",
        client.endpoint_path
    );

    let init = client.initialize(json!({})).await?;
    assert_eq!(init["result"]["serverInfo"]["name"], json!("gatehouse"));
    assert_eq!(init["result"]["protocolVersion"], json!("2024-11-05"));

    let listed = client.request(1, "tools/list", json!({})).await?;
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ENG_TOOLS);
    let called = client
        .request(
            2,
            "tools/call",
            json!({"name": "github__create_issue", "arguments": {"via": "sse"}}),
        )
        .await?;
    assert_eq!(
        tool_text(&called)?,
        json!({"server": "github", "tool": "create_issue", "arguments": {"via": "sse"}})
    );
    let ping = client.request(3, "ping", json!({})).await?;
    assert_eq!(ping["result"], json!({}));
    let unknown = client
        .request(4, "tools/call", json!({"name": "nope__x"}))
        .await?;
    assert_eq!(unknown["error"]["code"], json!(-32602));
    Ok(())
}

#[tokio::test]
async fn legacy_sse_auth_and_bad_message_urls() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let sse_url = gw.proxy.url("/ws/eng/sse");
    assert_eq!(LegacySession::get(&sse_url, None).await?.status(), 401);
    assert_eq!(
        LegacySession::get(&sse_url, Some(&gw.carol))
            .await?
            .status(),
        401,
        "another workspace's token"
    );

    let client = LegacySession::open(&sse_url, Some(&gw.alice)).await?;
    let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string();
    let (status, _) = client.post_to(&client.endpoint, None, ping.clone()).await?;
    assert_eq!(status, 401, "every POST needs the token");
    let (status, body) = client
        .post_to(&client.endpoint, Some(&gw.bob), ping.clone())
        .await?;
    assert_eq!(status, 404, "the session is bound to alice's token: {body}");
    let unknown = gw.proxy.url("/ws/eng/messages?sessionId=0123456789abcdef");
    let (status, body) = client
        .post_to(&unknown, Some(&gw.alice), ping.clone())
        .await?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no live SSE stream"), "a clear error: {body}");
    let (status, body) = client
        .post_to(
            &gw.proxy.url("/ws/eng/messages"),
            Some(&gw.alice),
            ping.clone(),
        )
        .await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("sessionId"), "{body}");
    let (status, _) = client
        .post_to(&client.endpoint, Some(&gw.alice), "{not json")
        .await?;
    assert_eq!(status, 400);

    // Streamable HTTP clients that try it first on the SSE URL they were given get it.
    let mut streamable = RawClient::new(sse_url.clone(), Some(&gw.alice));
    streamable.initialize().await?;
    assert_eq!(streamable.list_tools(1).await?.tool_names()?, ENG_TOOLS);
    let wrong_method = reqwest::Client::new()
        .get(&client.endpoint)
        .bearer_auth(&gw.alice)
        .send()
        .await?;
    assert_eq!(wrong_method.status(), 405, "messages take POST only");

    // When the stream goes away, so does the session.
    let endpoint = client.endpoint.clone();
    let probe = LegacySession::open(&sse_url, Some(&gw.alice)).await?;
    drop(client);
    wait_until(
        "the closed stream's session is gone",
        STEP_TIMEOUT,
        || async {
            probe
                .post_to(&endpoint, Some(&gw.alice), ping.clone())
                .await
                .is_ok_and(|(status, _)| status == 404)
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn requests_progress_and_list_changed_reach_a_legacy_stream() -> anyhow::Result<()> {
    let github = Upstream::start("github", talking_tools()).await?;
    let notes = Upstream::start("notes", talking_tools()).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("github", &github.url()))
        .server("eng", ServerSpec::new("notes", &notes.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let mut client = LegacySession::open(&proxy.url("/ws/eng/sse"), Some(&token)).await?;
    client.initialize(json!({"sampling": {}})).await?;

    // Sampling during a call: the request arrives on the stream with a gateway id.
    let (status, _) = client
        .post(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "github__sample", "arguments": {"prompt": "legacy?"}}}))
        .await?;
    assert_eq!(status, 202);
    let asked = client
        .stream
        .until_method("sampling/createMessage")
        .await?
        .json()
        .expect("json");
    let id = asked["id"].clone();
    assert!(id.as_str().is_some_and(|i| i.starts_with("gh.")), "{asked}");
    let (status, _) = client
        .post(&json!({"jsonrpc": "2.0", "id": id, "result": {
            "model": "m", "role": "assistant", "content": {"type": "text", "text": "from the stream"}}}))
        .await?;
    assert_eq!(status, 202);
    let (done, _) = client.response_to(5).await?;
    assert_eq!(
        tool_text(&done)?["sampled"]["content"]["text"],
        json!("from the stream")
    );

    // Progress comes before the result.
    let (status, _) = client
        .post(&json!({"jsonrpc": "2.0", "id": 6, "method": "tools/call",
            "params": {"name": "notes__progress", "arguments": {"steps": 2}, "_meta": {"progressToken": 99}}}))
        .await?;
    assert_eq!(status, 202);
    let (done, before) = client.response_to(6).await?;
    let progress: Vec<&Value> = before
        .iter()
        .filter(|m| m["method"] == json!("notifications/progress"))
        .collect();
    assert_eq!(progress.len(), 2, "{before:?}");
    assert!(progress
        .iter()
        .all(|m| m["params"]["progressToken"] == json!(99)));
    assert_eq!(tool_text(&done)?["tool"], json!("progress"));

    // A reload that changes the workspace is announced on the stream.
    cfg.workspace("eng").servers.retain(|s| s.slug != "notes");
    proxy.wait_for_config_version(cfg.rewrite()?).await?;
    client
        .stream
        .until_method("notifications/tools/list_changed")
        .await?;
    Ok(())
}

/// A call to a legacy upstream that reports progress is answered as an event stream;
/// it must be framed, or the client's connection ends with every such call.
#[tokio::test]
async fn a_streamed_reply_from_a_legacy_upstream_keeps_the_connection() -> anyhow::Result<()> {
    let old = Upstream::builder("old")
        .legacy_sse()
        .tools(talking_tools())
        .start()
        .await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("old", &old.url()).legacy_sse());
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let mut client = RawClient::new(proxy.ws_url("eng"), Some(&token));
    client.initialize().await?;
    let response = client
        .send_json(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "old__progress", "arguments": {"steps": 2}, "_meta": {"progressToken": 7}}}))
        .await?;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response
            .content_type()
            .is_some_and(|ct| ct.starts_with("text/event-stream")),
        "{:?}",
        response.headers
    );
    assert!(
        response.framed(),
        "reply delimited by closing the connection: {:?}",
        response.headers
    );
    let progress = response
        .messages
        .iter()
        .filter(|m| m["method"] == json!("notifications/progress"))
        .count();
    assert_eq!(progress, 2, "{:?}", response.messages);
    assert_eq!(tool_text(response.message()?)?["tool"], json!("progress"));
    Ok(())
}

#[tokio::test]
async fn legacy_sse_upstreams_serve_both_client_transports() -> anyhow::Result<()> {
    let old = Upstream::builder("old")
        .legacy_sse()
        .tools(talking_tools())
        .prompts(["brief"])
        .resources(["mem://old/1"])
        .start()
        .await?;
    let notes = Upstream::start("notes", [UpstreamTool::new("search")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("old", &old.url()).legacy_sse())
        .server("eng", ServerSpec::new("notes", &notes.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;

    // A Streamable HTTP client.
    let client = connect_as(&proxy.ws_url("eng"), &token).await?;
    let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        ["notes__search", "old__sample", "old__progress", "old__echo"]
    );
    let call = |name: &str, arguments: Value| {
        let params = CallToolRequestParams::new(name.to_owned())
            .with_arguments(arguments.as_object().cloned().unwrap_or_default());
        client.peer().call_tool(params)
    };
    let echoed = within(
        "old__echo",
        STEP_TIMEOUT,
        call("old__echo", json!({"n": 1})),
    )
    .await??;
    assert_eq!(
        echo_of(&echoed)?,
        json!({"server": "old", "tool": "echo", "arguments": {"n": 1}})
    );
    let sampled = within(
        "old__sample",
        STEP_TIMEOUT,
        call("old__sample", json!({"prompt": "old?"})),
    )
    .await??;
    assert_eq!(
        echo_of(&sampled)?["sampled"]["content"]["text"],
        json!("sampled: old?")
    );
    let prompt = within(
        "prompts/get",
        STEP_TIMEOUT,
        client
            .peer()
            .get_prompt(rmcp::model::GetPromptRequestParams::new("old__brief")),
    )
    .await??;
    let prompt = serde_json::to_value(&prompt)?;
    assert!(
        prompt["messages"][0]["content"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("\"prompt\":\"brief\"")),
        "{prompt}"
    );

    // What the legacy server says on its own reaches the client's GET stream.
    old.log("legacy hello").await;
    let inbox = client.service().clone();
    wait_until(
        "the legacy server's log message arrives",
        STEP_TIMEOUT,
        || async {
            inbox
                .notifications("notifications/message")
                .iter()
                .any(|m| m["logger"] == json!("old") && m["data"] == json!("legacy hello"))
        },
    )
    .await?;

    // The legacy server forgets its sessions: the gateway opens a new one by itself.
    old.forget_sessions().await;
    let again = within(
        "old__echo again",
        STEP_TIMEOUT,
        call("old__echo", json!({"n": 2})),
    )
    .await??;
    assert_eq!(echo_of(&again)?["arguments"], json!({"n": 2}));
    client.cancel().await?;

    // A legacy client, too; and a raw read of a resource.
    let mut legacy = LegacySession::open(&proxy.url("/ws/eng/sse"), Some(&token)).await?;
    legacy.initialize(json!({})).await?;
    let called = legacy
        .request(
            1,
            "tools/call",
            json!({"name": "old__echo", "arguments": {"via": "legacy"}}),
        )
        .await?;
    assert_eq!(tool_text(&called)?["arguments"], json!({"via": "legacy"}));
    let read = legacy
        .request(
            2,
            "resources/read",
            json!({"uri": "gatehouse://old/mem://old/1"}),
        )
        .await?;
    assert_eq!(
        read["result"]["contents"][0]["uri"],
        json!("gatehouse://old/mem://old/1")
    );

    let mut raw = RawClient::new(proxy.ws_url("eng"), Some(&token));
    raw.initialize().await?;
    let listed = raw.request(9, "prompts/list", json!({})).await?;
    assert_eq!(listed.result()?["prompts"][0]["name"], json!("old__brief"));
    Ok(())
}

#[tokio::test]
async fn a_legacy_stream_ends_with_its_token_and_ends_framed() -> anyhow::Result<()> {
    let mut gw = Gateway::start().await?;
    let mut client = LegacySession::open(&gw.proxy.url("/ws/eng/sse"), Some(&gw.bob)).await?;
    client.initialize(json!({})).await?;
    gw.cfg
        .workspace("eng")
        .tokens
        .iter_mut()
        .find(|t| t.name == "bob")
        .expect("bob's token")
        .revoked = true;
    let version = gw.cfg.rewrite()?;
    gw.proxy.wait_for_config_version(version).await?;
    within(
        "the legacy stream ends after revocation",
        STEP_TIMEOUT,
        client.stream.until_end(),
    )
    .await??;
    // With a last chunk, not by closing the client's connection.
    client.stream.ended_framed().map_err(anyhow::Error::msg)?;
    let (status, _) = client
        .post_to(&client.endpoint, Some(&gw.bob), json!({}).to_string())
        .await?;
    assert_eq!(status, 401, "a revoked token posts nothing more");
    Ok(())
}

/// A legacy `initialize` also starts fetching the tool lists before the client asks,
/// as a Streamable HTTP one does (`tools::the_tool_lists_are_fetched_once_right_after_initialize`).
#[tokio::test]
async fn a_legacy_initialize_fetches_the_tool_lists_too() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut legacy = LegacySession::open(&gw.proxy.url("/ws/eng/sse"), Some(&gw.alice)).await?;
    legacy.initialize(json!({})).await?;
    wait_until(
        "github is asked for its tools after a legacy initialize",
        STEP_TIMEOUT,
        || async { !gw.github.requests_for("tools/list").is_empty() },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_legacy_client_meets_its_tokens_budgets() -> anyhow::Result<()> {
    let gw = Gateway::start_with(|cfg| {
        cfg.workspace("eng").limits.per_token.tool_calls_per_minute = Some(1);
    })
    .await?;
    let mut client = LegacySession::open(&gw.proxy.url("/ws/eng/sse"), Some(&gw.alice)).await?;
    client.initialize(json!({})).await?;
    let call = json!({"name": "github__create_issue", "arguments": {}});
    let first = client.request(1, "tools/call", call.clone()).await?;
    assert!(first.get("result").is_some(), "{first}");
    // The second call is refused on its POST, never reaching the upstream.
    let (status, body) = client
        .post(&json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}))
        .await?;
    assert_eq!(status.as_u16(), 429, "{body}");
    let refused: Value = serde_json::from_str(&body)?;
    assert_eq!(refused["error"]["code"], json!(-32029), "{body}");
    assert_eq!(
        refused["error"]["data"]["limit"],
        json!("token_tool_calls"),
        "{body}"
    );
    assert_eq!(gw.github.calls().len(), 1);
    // The session serves on.
    let ping = client.request(3, "ping", json!({})).await?;
    assert_eq!(ping["result"], json!({}));
    Ok(())
}
