//! Tokens limited to some tools, created from the CLI (`workspace token create
//! --tools GLOB --read-only`), as a client using one meets them through the proxy:
//! it lists and calls only its tools, the others are unknown to it; the limit shows
//! in `token list` and the audit log, and a glob that cannot compile is refused.

use gatehouse_tests::{RawClient, Upstream, UpstreamTool};
use serde_json::{json, Value};

use crate::fixture::{assert_fails, token_in};

const WS: &str = "engineering";

fn listed(body: &[u8]) -> anyhow::Result<Vec<String>> {
    let body: Value = serde_json::from_slice(body)?;
    Ok(body["result"]["tools"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no tools in {body}"))?
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect())
}

#[tokio::test]
async fn a_token_created_with_a_scope_sees_and_calls_only_its_tools() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let alice = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    let github = Upstream::start(
        "github",
        [
            UpstreamTool::new("list_issues").read_only(true),
            UpstreamTool::new("list_repos"),
            UpstreamTool::new("create_issue"),
        ],
    )
    .await?;
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
    let created = d
        .admin
        .ok(&[
            "workspace",
            "token",
            "create",
            WS,
            "--name",
            "CI bot",
            "--tools",
            "github__list_*",
            "--read-only",
        ])
        .await?;
    assert!(
        created.contains("\nTools: github__list_* (read-only)\n"),
        "{created}"
    );
    let bot = token_in(&created)?;

    let tokens = d.admin.ok(&["workspace", "token", "list", WS]).await?;
    let header = tokens.lines().next().unwrap_or_default();
    assert!(header.contains("TOOLS"), "{tokens}");
    let row = |name: &str| {
        tokens
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        row("CI bot").contains("github__list_* (read-only)"),
        "{tokens}"
    );
    assert!(row("default").contains(" all "), "{tokens}");
    let audit = d.admin.ok(&["workspace", "audit", WS, "--json"]).await?;
    assert!(
        audit.contains(r#"CI bot scope {\"tools\":[\"github__list_*\"],\"read_only\":true}"#),
        "{audit}"
    );

    d.synced().await?;
    let url = d.proxy.ws_url(WS);
    let mut as_bot = RawClient::new(&url, Some(&bot));
    as_bot.initialize().await?;
    let list = as_bot.list_tools(1).await?;
    assert_eq!(listed(&list.body)?, ["github__list_issues"]);
    for (id, name) in [(2, "github__list_repos"), (3, "github__create_issue")] {
        let refused = as_bot.call_tool(id, name, json!({})).await?;
        let error = refused.error()?;
        assert_eq!(error["message"], json!(format!("Unknown tool: {name}")));
    }
    let ok = as_bot
        .call_tool(4, "github__list_issues", json!({}))
        .await?;
    assert!(ok.message()?.get("result").is_some(), "{ok:?}");
    let executed: Vec<String> = github.calls().iter().map(|c| c.tool.clone()).collect();
    assert_eq!(executed, ["list_issues"]);

    // The workspace's first token has no scope: it sees every tool.
    let mut as_alice = RawClient::new(&url, Some(&alice));
    as_alice.initialize().await?;
    let all = as_alice.list_tools(1).await?;
    assert_eq!(
        listed(&all.body)?,
        [
            "github__list_issues",
            "github__list_repos",
            "github__create_issue"
        ]
    );

    let bad = d
        .admin
        .run(&[
            "workspace",
            "token",
            "create",
            WS,
            "--name",
            "Bad",
            "--tools",
            "github__[",
        ])
        .await?;
    assert_fails(&bad, 2, "scope.tools");
    Ok(())
}
