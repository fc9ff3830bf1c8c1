//! A server changed in place from the CLI (`mcp disable`, `mcp enable`, `mcp policy`):
//! each verb's answer, what a real MCP client then sees through the proxy, its audit
//! event, and the mistakes it refuses.

use gatehouse_tests::{connect, Upstream, UpstreamTool};

use crate::fixture::{assert_fails, token_in, tool_names};

#[tokio::test]
async fn mcp_disable_enable_and_policy_change_what_clients_see() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let ws_url = d.proxy.ws_url("engineering");
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    let github = Upstream::start(
        "github",
        [
            UpstreamTool::new("create_issue"),
            UpstreamTool::new("list_issues").read_only(true),
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
            "engineering",
        ])
        .await?;
    let both = ["github__create_issue", "github__list_issues"];
    // A new client after every change: what a client connecting now is shown.
    let listed = || async {
        d.synced().await?;
        let client = connect(&ws_url, &token).await?;
        let names = tool_names(&client).await?;
        client.cancel().await?;
        anyhow::Ok(names)
    };
    assert_eq!(listed().await?, both);

    let disabled = d
        .admin
        .ok(&["mcp", "disable", "github", "-w", "engineering"])
        .await?;
    assert_eq!(
        disabled,
        "github in engineering is disabled: clients do not see its tools.\n\
         Tool policy: open (every tool).\n"
    );
    assert_eq!(listed().await?, Vec::<String>::new());
    let listing = d.admin.ok(&["mcp", "list", "-w", "engineering"]).await?;
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("github") && l.contains(" no ")),
        "mcp list does not show github disabled:\n{listing}"
    );

    let enabled = d
        .admin
        .ok(&["mcp", "enable", "github", "-w", "engineering"])
        .await?;
    assert!(
        enabled.starts_with("github in engineering is enabled: its tools reach clients.\n"),
        "{enabled}"
    );
    assert_eq!(listed().await?, both);

    let read_only = d
        .admin
        .ok(&[
            "mcp",
            "policy",
            "github",
            "--read-only",
            "-w",
            "engineering",
        ])
        .await?;
    assert!(
        read_only.ends_with("Tool policy: allow -; deny -; read-only yes.\n"),
        "{read_only}"
    );
    assert_eq!(listed().await?, ["github__list_issues"]);
    let json = d
        .admin
        .json(&[
            "mcp",
            "policy",
            "github",
            "--deny",
            "list_*",
            "-w",
            "engineering",
        ])
        .await?;
    assert_eq!(
        json["server"]["policy"],
        serde_json::json!({"allow": [], "deny": ["list_*"], "read_only": false})
    );
    assert_eq!(listed().await?, ["github__create_issue"]);
    d.admin
        .ok(&["mcp", "policy", "github", "--open", "-w", "engineering"])
        .await?;
    assert_eq!(listed().await?, both);

    // Each change is in the workspace's audit log under its own action.
    let audit = d.admin.ok(&["workspace", "audit", "engineering"]).await?;
    for action in ["disable", "enable", "policy_set"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("github") && l.contains(action)),
            "no {action} of github in the audit log:\n{audit}"
        );
    }

    // Mistakes are refused before anything changes.
    assert_fails(
        &d.admin
            .run(&["mcp", "policy", "github", "-w", "engineering"])
            .await?,
        1,
        "--open to expose every tool",
    );
    assert_fails(
        &d.admin
            .run(&[
                "mcp",
                "policy",
                "github",
                "--allow",
                "[",
                "-w",
                "engineering",
            ])
            .await?,
        2,
        "policy",
    );
    assert_fails(
        &d.admin
            .run(&["mcp", "disable", "gitlab", "-w", "engineering"])
            .await?,
        2,
        "no MCP server \"gitlab\"",
    );
    assert_eq!(listed().await?, both);
    Ok(())
}
