//! The harness checked on its own, without a proxy: the upstream speaks MCP to a real
//! rmcp client and to the raw client, records what it receives, and can forget its
//! sessions or stop. If these fail, the data-plane tests mean nothing.

use std::time::Duration;

use gatehouse_tests::{
    config, connect_upstream, echo_of, within, ConfigBuilder, RawClient, ServerSpec, TokenSpec,
    Upstream, UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn args(value: Value) -> rmcp::model::JsonObject {
    value.as_object().cloned().expect("arguments are an object")
}

#[tokio::test]
async fn upstream_serves_tools_to_an_rmcp_client() -> anyhow::Result<()> {
    let upstream = Upstream::start(
        "github",
        [
            UpstreamTool::new("create_issue").description("Open an issue"),
            UpstreamTool::new("list_issues").read_only(true),
            UpstreamTool::new("echo_size").read_only(true),
        ],
    )
    .await?;
    let client = connect_upstream(&upstream.url()).await?;

    let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["create_issue", "list_issues", "echo_size"]);
    assert_eq!(tools[0].description.as_deref(), Some("Open an issue"));
    assert_eq!(tools[0].annotations, None);
    assert_eq!(
        tools[1].annotations.as_ref().and_then(|a| a.read_only_hint),
        Some(true)
    );

    let arguments = json!({"title": "Bug", "labels": ["a", "b"], "n": 3, "nested": {"x": null}});
    let result = within(
        "tools/call",
        STEP_TIMEOUT,
        client.peer().call_tool(
            CallToolRequestParams::new("create_issue").with_arguments(args(arguments.clone())),
        ),
    )
    .await??;
    assert_eq!(
        echo_of(&result)?,
        json!({"server": "github", "tool": "create_issue", "arguments": arguments})
    );
    assert_eq!(upstream.calls().len(), 1);
    assert_eq!(upstream.calls()[0].tool, "create_issue");

    let text = "é".repeat(1000);
    let result = client
        .peer()
        .call_tool(
            CallToolRequestParams::new("echo_size").with_arguments(args(json!({"text": text}))),
        )
        .await?;
    assert_eq!(
        echo_of(&result)?,
        json!({"len": text.len(), "sha256": hex::encode(Sha256::digest(text.as_bytes()))})
    );

    let requests = upstream.requests();
    assert_eq!(requests[0].rpc_method.as_deref(), Some("initialize"));
    assert!(requests.iter().all(|r| r.path == "/mcp"), "{requests:?}");
    assert_eq!(upstream.requests_for("tools/call").len(), 2);
    assert_eq!(upstream.issued_sessions().len(), 1);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn upstream_records_headers_and_reads_with_the_raw_client() -> anyhow::Result<()> {
    let upstream = Upstream::start("notes", [UpstreamTool::new("search").read_only(true)]).await?;
    let mut raw = RawClient::new(upstream.url(), Some("ghp_secret"));
    let init = raw.initialize().await?;
    assert_eq!(
        init.result()?.pointer("/serverInfo/name"),
        Some(&json!("upstream-notes"))
    );
    let session = raw.session.clone().expect("session id");
    assert_eq!(upstream.issued_sessions(), [session]);

    // rmcp answers requests with an event stream; the raw client finds the response in it.
    let listed = raw.list_tools(2).await?;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.tool_names()?, ["search"]);
    let called = raw.call_tool(3, "search", json!({"q": "x"})).await?;
    assert_eq!(
        called.tool_echo()?,
        json!({"server": "notes", "tool": "search", "arguments": {"q": "x"}})
    );
    let unknown = raw.call_tool(4, "nope", json!({})).await?;
    assert_eq!(unknown.error_code()?, -32602);

    let requests = upstream.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer ghp_secret"),
            "{r:?}"
        );
    }

    // Missing session id -> 400; forgotten session -> 404, as real servers answer.
    let no_session = raw.without_session();
    assert_eq!(no_session.list_tools(5).await?.status, 400);
    upstream.forget_sessions().await;
    assert_eq!(raw.list_tools(6).await?.status, 404);
    raw.initialize().await?;
    assert_eq!(raw.list_tools(7).await?.tool_names()?, ["search"]);
    Ok(())
}

#[tokio::test]
async fn slow_tool_waits_and_stopped_upstream_refuses_connections() -> anyhow::Result<()> {
    let mut upstream = Upstream::start("slowpoke", [UpstreamTool::new("slow")]).await?;
    let mut raw = RawClient::new(upstream.url(), None);
    raw.initialize().await?;
    let started = std::time::Instant::now();
    let done = raw.call_tool(1, "slow", json!({"ms": 300})).await?;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(done.tool_echo()?["arguments"], json!({"ms": 300}));

    upstream.stop().await;
    let err = raw
        .list_tools(2)
        .await
        .expect_err("a stopped upstream must refuse");
    let message = format!("{err:#}");
    assert!(
        message.contains("error sending request") || message.contains("connect"),
        "{message}"
    );
    Ok(())
}

#[test]
fn config_builder_writes_a_snapshot_the_config_crate_accepts() -> anyhow::Result<()> {
    let mut cfg = ConfigBuilder::new()?;
    cfg.server(
        "eng",
        ServerSpec::new("github", "http://127.0.0.1:9/mcp")
            .header("Authorization", "Bearer {{secrets.GITHUB_TOKEN}}")
            .secret("GITHUB_TOKEN", "ghp_secret")
            .deny(&["delete_*"]),
    );
    let token = cfg.token("eng");
    let expired = cfg.token_with("eng", TokenSpec::expired("old"));
    cfg.token_with("ops", TokenSpec::revoked("gone"));
    cfg.allow_origin("https://app.example.com");
    cfg.write()?;

    assert!(
        token.starts_with("mwt_") && token.len() == 4 + 43,
        "{token}"
    );
    assert!(token[4..].chars().all(|c| c.is_ascii_alphanumeric()));
    let loaded = gatehouse_config::load_file(cfg.path())?;
    assert_eq!(loaded.version, 1);
    let eng = &loaded.workspaces[0];
    assert_eq!(
        eng.tokens[0].sha256,
        gatehouse_config::hash_token_hex(&token)
    );
    assert_eq!(eng.tokens[0].sha256, config::token_sha256(&token));
    assert_ne!(eng.tokens[1].sha256, config::token_sha256(&token));
    assert_eq!(eng.tokens[1].sha256, config::token_sha256(&expired));
    assert!(eng.tokens[1].expires_at.is_some());
    assert!(loaded.workspaces[1].tokens[0].revoked);
    assert_eq!(
        eng.servers[0].secrets["GITHUB_TOKEN"].expose(),
        "ghp_secret"
    );

    let version = cfg.rewrite()?;
    assert_eq!(version, 2);
    assert_eq!(gatehouse_config::load_file(cfg.path())?.version, 2);
    // Only the config file is left behind: the temp file was renamed over it.
    let names: Vec<_> = std::fs::read_dir(cfg.dir())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, ["gatehouse.json"]);
    Ok(())
}
