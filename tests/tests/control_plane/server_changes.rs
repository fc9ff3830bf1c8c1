//! A server changed in place from the CLI (`mcp disable`, `mcp enable`, `mcp policy`,
//! `mcp naming`, `mcp limits`, `mcp tool set`, and `mcp install --naming` /
//! `--first-byte-timeout-ms`):
//! each verb's answer, what a real MCP client then sees through the proxy, its audit
//! event, and the mistakes it refuses.

use std::time::{Duration, Instant};

use gatehouse_tests::{connect, CallOutcome, Fault, FaultyUpstream, Upstream, UpstreamTool};
use rmcp::model::CallToolRequestParams;

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
         Tool policy: open (every tool).\n\
         Naming: prefixed (github__<tool>).\n\
         Limits: connect 5000 ms, first byte the call timeout, silent mid-call 300000 ms, whole call 3600000 ms; \
         256 calls in flight per proxy, 1024 more waiting.\n"
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
        read_only.contains("\nTool policy: allow -; deny -; read-only yes.\n"),
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

#[tokio::test]
async fn one_server_of_a_workspace_can_expose_its_own_names() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let ws_url = d.proxy.ws_url("naming");
    let token = token_in(&d.admin.ok(&["workspace", "create", "Naming"]).await?)?;
    let github = Upstream::start("github", [UpstreamTool::new("create_issue")]).await?;
    let linear = Upstream::start("linear", [UpstreamTool::new("create_ticket")]).await?;
    let installed = d
        .admin
        .json(&[
            "mcp",
            "install",
            &github.url(),
            "--name",
            "github",
            "--naming",
            "bare",
            "-w",
            "naming",
        ])
        .await?;
    assert_eq!(installed["server"]["naming"], "bare");
    d.admin
        .ok(&[
            "mcp",
            "install",
            &linear.url(),
            "--name",
            "linear",
            "-w",
            "naming",
        ])
        .await?;
    let listed = || async {
        d.synced().await?;
        let client = connect(&ws_url, &token).await?;
        let names = tool_names(&client).await?;
        client.cancel().await?;
        anyhow::Ok(names)
    };
    // The bare server's tool under its own name, beside a prefixed server's.
    assert_eq!(listed().await?, ["create_issue", "linear__create_ticket"]);

    // A second bare server is refused, by install and by change, with the reason.
    assert_fails(
        &d.admin
            .run(&["mcp", "naming", "linear", "bare", "-w", "naming"])
            .await?,
        2,
        "\"github\" already exposes its names bare",
    );
    let other = Upstream::start("jira", [UpstreamTool::new("create_issue")]).await?;
    assert_fails(
        &d.admin
            .run(&[
                "mcp",
                "install",
                &other.url(),
                "--name",
                "jira",
                "--naming",
                "bare",
                "-w",
                "naming",
            ])
            .await?,
        2,
        "at most one bare server",
    );
    assert_fails(
        &d.admin
            .run(&["mcp", "naming", "linear", "plain", "-w", "naming"])
            .await?,
        1,
        "invalid value 'plain'",
    );

    // Back to prefixed; then the other server may be bare.
    let changed = d
        .admin
        .ok(&["mcp", "naming", "github", "prefixed", "-w", "naming"])
        .await?;
    assert!(
        changed.contains("\nNaming: prefixed (github__<tool>).\n"),
        "{changed}"
    );
    let changed = d
        .admin
        .ok(&["mcp", "naming", "linear", "bare", "-w", "naming"])
        .await?;
    assert!(
        changed.contains("\nNaming: bare (the server's own names).\n"),
        "{changed}"
    );
    assert_eq!(listed().await?, ["github__create_issue", "create_ticket"]);
    let json = d.admin.json(&["mcp", "list", "-w", "naming"]).await?;
    let namings: Vec<(&str, &str)> = json["servers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["slug"].as_str().unwrap_or(""),
                s["naming"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(namings, [("github", "prefixed"), ("linear", "bare")]);

    let audit = d.admin.ok(&["workspace", "audit", "naming"]).await?;
    for change in ["github prefixed", "linear bare"] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains("naming_set") && l.contains(change)),
            "no naming_set {change} in the audit log:\n{audit}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_servers_timeouts_and_cap_are_set_from_the_cli() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let ws_url = d.proxy.ws_url("slow");
    let token = token_in(&d.admin.ok(&["workspace", "create", "Slow"]).await?)?;
    let faulty = FaultyUpstream::start().await?;
    let installed = d
        .admin
        .json(&[
            "mcp",
            "install",
            &faulty.url(),
            "--name",
            "faulty",
            "--first-byte-timeout-ms",
            "400",
            "--max-in-flight",
            "4",
            "-w",
            "slow",
        ])
        .await?;
    assert_eq!(
        installed["server"]["limits"],
        serde_json::json!({"first_byte_timeout_ms": 400, "max_in_flight": 4})
    );
    d.synced().await?;

    // A server that never starts its reply: the call ends after the first-byte
    // timeout, not the default call timeout of five minutes.
    let client = connect(&ws_url, &token).await?;
    let started = Instant::now();
    let params =
        CallToolRequestParams::new(format!("faulty__{}", Fault::StallBeforeHeaders.tool()));
    match CallOutcome::from(client.peer().call_tool(params).await) {
        CallOutcome::JsonRpcError(e) => assert!(
            e.message
                .contains("MCP server \"faulty\" did not answer in time"),
            "{e:?}"
        ),
        other => panic!("expected a timeout, got {other:?}"),
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    client.cancel().await?;

    // Refused before anything changes: no limit given, a timeout of 0.
    assert_fails(
        &d.admin
            .run(&["mcp", "limits", "faulty", "-w", "slow"])
            .await?,
        1,
        "--defaults",
    );
    assert_fails(
        &d.admin
            .run(&[
                "mcp",
                "limits",
                "faulty",
                "--call-timeout-ms",
                "0",
                "-w",
                "slow",
            ])
            .await?,
        2,
        "limits.call_timeout_ms: 0 must be between 1 and 86400000 ms",
    );
    let changed = d
        .admin
        .ok(&[
            "mcp",
            "limits",
            "faulty",
            "--connect-timeout-ms",
            "800",
            "-w",
            "slow",
        ])
        .await?;
    assert!(
        changed.ends_with(
            "Limits: connect 800 ms, first byte the call timeout, silent mid-call 300000 ms, whole call 3600000 ms; \
             256 calls in flight per proxy, 1024 more waiting.\n"
        ),
        "{changed}"
    );
    let reset = d
        .admin
        .json(&["mcp", "limits", "faulty", "--defaults", "-w", "slow"])
        .await?;
    assert_eq!(reset["server"].get("limits"), None, "{reset}");

    let audit = d.admin.ok(&["workspace", "audit", "slow"]).await?;
    let set: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("server_limits_set"))
        .collect();
    assert_eq!(set.len(), 2, "{audit}");
    Ok(())
}

#[tokio::test]
async fn a_tool_shaped_from_the_cli_is_what_clients_see_and_call() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let ws_url = d.proxy.ws_url("engineering");
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    let github = Upstream::start(
        "github",
        [UpstreamTool::new("create_issue").schema(serde_json::json!({
            "type": "object",
            "properties": {"owner": {"type": "string"}, "title": {"type": "string"}},
            "required": ["owner", "title"]
        }))],
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
    let set = d
        .admin
        .ok(&[
            "mcp",
            "tool",
            "set",
            "engineering",
            "github",
            "create_issue",
            "--rename",
            "open_ticket",
            "--extend-description",
            "Goes to acme.",
            "--fix-arg",
            "owner=acme",
            "--destructive",
        ])
        .await?;
    assert_eq!(
        set,
        "✓ github's tool create_issue in engineering:\n  shown as:     open_ticket\n  + description: Goes to acme.\n  fixed:        owner = \"acme\"\n  annotated:    destructiveHint = true\n  annotated:    readOnlyHint = false\n"
    );
    d.synced().await?;
    let client = connect(&ws_url, &token).await?;
    let tools = client.peer().list_all_tools().await?;
    assert_eq!(tools.len(), 1, "{tools:?}");
    assert_eq!(tools[0].name, "github__open_ticket");
    assert_eq!(
        tools[0].description.as_deref(),
        Some("The create_issue tool\n\nGoes to acme.")
    );
    let schema = serde_json::to_value(&*tools[0].input_schema)?;
    assert_eq!(schema["required"], serde_json::json!(["title"]), "{schema}");
    let annotations = tools[0].annotations.clone().unwrap_or_default();
    assert_eq!(annotations.destructive_hint, Some(true));
    let params = CallToolRequestParams::new("github__open_ticket").with_arguments(
        serde_json::json!({"title": "t", "owner": "someone-else"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    client.peer().call_tool(params).await?;
    let calls = github.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].tool, "create_issue");
    assert_eq!(
        calls[0].arguments,
        serde_json::json!({"owner": "acme", "title": "t"})
    );
    client.cancel().await?;

    let audit = d.admin.ok(&["workspace", "audit", "engineering"]).await?;
    assert!(audit.contains("tool_override_set"), "{audit}");

    // Cleared, the tool is the server's own again.
    let cleared = d
        .admin
        .ok(&[
            "mcp",
            "tool",
            "set",
            "engineering",
            "github",
            "create_issue",
            "--clear",
        ])
        .await?;
    assert_eq!(
        cleared,
        "✓ github's tool create_issue is shown in engineering as the server has it.\n"
    );
    d.synced().await?;
    let client = connect(&ws_url, &token).await?;
    assert_eq!(tool_names(&client).await?, ["github__create_issue"]);
    client.cancel().await?;

    let nothing = d
        .admin
        .run(&[
            "mcp",
            "tool",
            "set",
            "engineering",
            "github",
            "create_issue",
        ])
        .await?;
    assert_fails(&nothing, 1, "--clear");
    let bad = d
        .admin
        .run(&[
            "mcp",
            "tool",
            "set",
            "engineering",
            "github",
            "create_issue",
            "--rename",
            "open ticket",
        ])
        .await?;
    assert_fails(&bad, 2, "a tool name");
    Ok(())
}
