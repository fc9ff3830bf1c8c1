//! The seeds' story through the CLI: a workspace, its tokens, an MCP server and its
//! secret, used by an MCP client through the proxy; a secret rotated, a token
//! revoked, the audit log read, the workspace deleted.

use std::time::{Duration, Instant};

use gatehouse_tests::{connect, RawClient, RecordedRequest, Upstream, UpstreamTool};
use serde_json::json;

use crate::fixture::{
    assert_fails, call_echo, token_in, tool_names, until_initialize_answers, until_refused,
};

/// Generous: the 100 ms target is measured by the benchmark, not asserted here.
const ENFORCEMENT_LIMIT: Duration = Duration::from_secs(5);

fn authorization(request: &RecordedRequest) -> &str {
    request.header("authorization").unwrap_or("<none>")
}

/// No header of any request the upstream received carries a workspace token.
fn assert_no_workspace_token_upstream(upstream: &Upstream, tokens: &[&str]) {
    for request in upstream.requests() {
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains("mwt_") && !tokens.iter().any(|t| value.contains(t)),
                "the upstream received a workspace token in {name}: {request:?}"
            );
        }
    }
}

#[tokio::test]
async fn workspace_lifecycle_through_the_cli() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let gateway = d.cp.gateway_ports().gateway_url();
    let ws_url = d.proxy.ws_url("engineering");

    // workspace create prints both gateway URLs and the first token, once.
    let created = d.admin.ok(&["workspace", "create", "Engineering"]).await?;
    assert!(
        created.starts_with(&format!(
            "Workspace created.\nGateway URL: {gateway}/ws/engineering\nSSE URL: {gateway}/ws/engineering/sse\n"
        )),
        "{created}"
    );
    let first = token_in(&created)?;
    assert!(
        created.contains(&format!("\"Authorization\": \"Bearer {first}\"")),
        "no ready-to-paste mcp_json block: {created}"
    );

    let alice_out = d
        .admin
        .ok(&[
            "workspace",
            "token",
            "create",
            "engineering",
            "--name",
            "Alice",
        ])
        .await?;
    let alice = token_in(&alice_out)?;
    assert_ne!(alice, first);

    // mcp install of a real upstream whose header needs a secret not set yet.
    let github = Upstream::start(
        "github",
        [
            UpstreamTool::new("create_issue").description("Open an issue"),
            UpstreamTool::new("list_issues").read_only(true),
        ],
    )
    .await?;
    let installed = d
        .admin
        .ok(&[
            "mcp",
            "install",
            &github.url(),
            "--name",
            "github",
            "--workspace",
            "engineering",
            "--header",
            "Authorization: Bearer {{secrets.GITHUB_TOKEN}}",
        ])
        .await?;
    assert_eq!(
        installed,
        "Installed github in engineering.\n\
         Found Streamable HTTP, protocol 2026-07-28 (stateless): 2 tools.\n\
         Set its secrets: gatehouse secrets set github GITHUB_TOKEN VALUE --workspace engineering\n"
    );
    // The install's probe asked the server before its secret existed; every request
    // after it comes from the gateway.
    let probed = github.requests().len();
    assert!(probed > 0, "the install did not probe the server");

    let set = d
        .admin
        .ok(&[
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            "ghp_one",
            "--workspace",
            "engineering",
        ])
        .await?;
    assert_eq!(set, "Secret GITHUB_TOKEN set for github in engineering.\n");
    d.synced().await?;

    // Alice's editor lists and calls the server's tools through the gateway.
    let client = connect(&ws_url, &alice).await?;
    assert_eq!(
        tool_names(&client).await?,
        ["github__create_issue", "github__list_issues"]
    );
    assert_eq!(
        call_echo(&client, "github__create_issue", json!({"title": "Bug"})).await?,
        json!({"server": "github", "tool": "create_issue", "arguments": {"title": "Bug"}})
    );
    client.cancel().await?;
    let seen = github.requests();
    assert!(seen.len() > probed);
    for request in &seen[probed..] {
        assert_eq!(authorization(request), "Bearer ghp_one", "{request:?}");
    }

    // secrets set rotates the header the upstream sees, for new sessions.
    d.admin
        .ok(&[
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            "ghp_two",
            "--workspace",
            "engineering",
        ])
        .await?;
    d.synced().await?;
    let mark = github.requests().len();
    let client = connect(&ws_url, &alice).await?;
    call_echo(&client, "github__list_issues", json!({})).await?;
    client.cancel().await?;
    let rotated: Vec<RecordedRequest> = github.requests()[mark..]
        .iter()
        .filter(|r| matches!(r.rpc_method.as_deref(), Some("initialize" | "tools/call")))
        .cloned()
        .collect();
    assert_eq!(rotated.len(), 2, "{rotated:?}");
    for request in &rotated {
        assert_eq!(authorization(request), "Bearer ghp_two", "{request:?}");
    }
    assert_no_workspace_token_upstream(&github, &[&alice, &first]);

    // Revoking Alice's token refuses her next request, even in an open session.
    let mut session = RawClient::new(&ws_url, Some(&alice));
    session.initialize().await?;
    let started = Instant::now();
    let revoked = d
        .admin
        .run(&[
            "workspace",
            "token",
            "revoke",
            "engineering",
            "--name",
            "Alice",
        ])
        .await?;
    let answered = Instant::now();
    assert_eq!(
        revoked.success()?,
        "✓ Token revoked. Alice's gateway access is immediately disabled.\n"
    );
    let after_command = until_refused(&session, started, ENFORCEMENT_LIMIT).await?;
    println!(
        "revoke -> 401: {:?} after `gatehouse workspace token revoke` started, {:?} after it exited",
        after_command,
        after_command.saturating_sub(answered - started)
    );
    assert_eq!(session.send_initialize().await?.status, 401);
    let client = connect(&ws_url, &first).await?;
    assert_eq!(
        tool_names(&client).await?.len(),
        2,
        "the other token still works"
    );
    client.cancel().await?;

    let tokens = d
        .admin
        .ok(&["workspace", "token", "list", "engineering"])
        .await?;
    let rows: Vec<Vec<&str>> = tokens
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["TOKEN", "NAME", "CREATED", "LAST", "USED", "STATUS"]
    );
    // Rows are by creation time, and by name within the same second.
    let mut statuses: Vec<(&str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[0], *r.last().unwrap_or(&"")))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [("Alice", "revoked"), ("default", "active")],
        "{tokens}"
    );

    // The audit log lists every change, in order, with who made it. The calls above
    // are listed too once the proxy has reported them, which it does on its own
    // schedule: they are left out here (audit_ingest covers how calls are listed).
    let audit = d.admin.ok(&["workspace", "audit", "engineering"]).await?;
    let rows: Vec<Vec<&str>> = audit
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["DATE", "USER", "SKILL", "ACTION"], "{audit}");
    let events: Vec<(&str, &str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[3], r[4], r[5]))
        .filter(|(_, _, action)| !["tool_call", "prompt_get", "resource_read"].contains(action))
        .collect();
    assert_eq!(
        events,
        [
            ("admin", "engineering", "workspace_create"),
            ("admin", "default", "token_create"),
            ("admin", "Alice", "token_create"),
            ("admin", "github", "install"),
            ("admin", "github/GITHUB_TOKEN", "secret_set"),
            ("admin", "github/GITHUB_TOKEN", "secret_set"),
            ("admin", "Alice", "token_revoke"),
        ],
        "{audit}"
    );

    let list = d.admin.ok(&["workspace", "list"]).await?;
    assert_eq!(
        list.lines()
            .nth(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>()),
        Some(vec!["*", "engineering", "Engineering", "1", "1"]),
        "{list}"
    );

    // Deleting the workspace refuses its remaining token and forgets it everywhere.
    let deleted = d
        .admin
        .ok(&["workspace", "delete", "engineering", "--yes"])
        .await?;
    assert_eq!(deleted, "Workspace deleted.\n");
    let took = until_initialize_answers(&ws_url, &first, 401, ENFORCEMENT_LIMIT).await?;
    println!("workspace delete -> 401 for its other token: {took:?}");
    let list = d.admin.ok(&["workspace", "list"]).await?;
    assert!(!list.contains("engineering"), "{list}");
    let secrets = d
        .admin
        .run(&["secrets", "list", "--workspace", "engineering"])
        .await?;
    assert_fails(&secrets, 2, "workspace \"engineering\" not found");
    Ok(())
}

/// A token used through the gateway shows when it was last used.
#[tokio::test]
async fn token_list_shows_when_a_token_was_last_used() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let created = d.admin.ok(&["workspace", "create", "Personal"]).await?;
    let token = token_in(&created)?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("personal"), &token).await?;
    client.cancel().await?;
    // The proxy may report use in batches: give it a while.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = d
            .admin
            .json(&["workspace", "token", "list", "personal"])
            .await?;
        let last_used = &answer["tokens"][0]["last_used_at"];
        if !last_used.is_null() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "`workspace token list` still says LAST USED never after the token was used: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// A token given a lifetime is refused once it is over, and listed as expired.
#[tokio::test]
async fn an_expired_token_is_refused_and_listed_as_expired() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    d.admin.ok(&["workspace", "create", "Ops"]).await?;
    let out = d
        .admin
        .ok(&[
            "workspace",
            "token",
            "create",
            "ops",
            "--name",
            "Short",
            "--expires-in",
            "4s",
        ])
        .await?;
    let short = token_in(&out)?;
    assert!(out.contains("\nExpires: "), "{out}");
    d.synced().await?;
    let url = d.proxy.ws_url("ops");
    let took = until_initialize_answers(&url, &short, 401, Duration::from_secs(20)).await?;
    println!("a token with a 4 s lifetime was refused {took:?} after the proxy had it");
    let list = d.admin.json(&["workspace", "token", "list", "ops"]).await?;
    let statuses: Vec<(&str, &str)> = list["tokens"]
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    (
                        t["name"].as_str().unwrap_or(""),
                        t["status"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(statuses.contains(&("Short", "expired")), "{list}");
    Ok(())
}
