//! Naming modes: a server exposed `bare` reaches clients exactly as it names its tools,
//! prompts and resources, beside prefixed servers in the same workspace; a bare tool
//! named like a prefixed one is left out (logged and counted), never shadows it.

use gatehouse_tests::{ConfigBuilder, Proxy, RawClient, ServerSpec, Upstream, UpstreamTool};
use serde_json::json;

use crate::fixture::names;

#[tokio::test]
async fn a_bare_server_is_fronted_transparently_beside_prefixed_ones() -> anyhow::Result<()> {
    let fronted = Upstream::builder("fronted")
        .tools([
            UpstreamTool::new("search"),
            // Named as the gateway would expose github's tool: left out.
            UpstreamTool::new("github__create_issue"),
        ])
        .prompts(["summarize"])
        .resources(["file:///notes/a.md"])
        .start()
        .await?;
    let github = Upstream::start("github", [UpstreamTool::new("create_issue")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("front", ServerSpec::new("fronted", &fronted.url()).bare())
        .server("front", ServerSpec::new("github", &github.url()));
    let token = cfg.token("front");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let mut client = RawClient::new(proxy.ws_url("front"), Some(&token));
    client.initialize().await?;

    let tools = client.list_tools(1).await?;
    assert_eq!(tools.tool_names()?, ["search", "github__create_issue"]);
    let called = client.call_tool(2, "search", json!({"q": "x"})).await?;
    assert_eq!(
        called.tool_echo()?,
        json!({"server": "fronted", "tool": "search", "arguments": {"q": "x"}})
    );
    let called = client
        .call_tool(3, "github__create_issue", json!({}))
        .await?;
    assert_eq!(
        called.tool_echo()?["server"],
        json!("github"),
        "the prefixed tool keeps its name"
    );
    assert_eq!(
        fronted.calls().len(),
        1,
        "the bare server's colliding tool is never called"
    );

    let prompts = client.request(4, "prompts/list", json!({})).await?;
    assert_eq!(names(prompts.result()?, "prompts", "name"), ["summarize"]);
    let got = client
        .request(5, "prompts/get", json!({"name": "summarize"}))
        .await?;
    assert!(got.result().is_ok(), "{}", got.text());
    assert_eq!(
        fronted.received("prompts/get")[0]["name"],
        json!("summarize")
    );

    let resources = client.request(6, "resources/list", json!({})).await?;
    assert_eq!(
        names(resources.result()?, "resources", "uri"),
        ["file:///notes/a.md"]
    );
    let read = client
        .request(7, "resources/read", json!({"uri": "file:///notes/a.md"}))
        .await?;
    assert_eq!(
        read.result()?["contents"][0]["uri"],
        json!("file:///notes/a.md"),
        "{}",
        read.text()
    );

    let (_, metrics) = proxy.metrics().await?;
    assert!(
        metrics.contains("gatehouse_tool_name_collisions{workspace=\"front\"} 1"),
        "{metrics}"
    );
    Ok(())
}
