//! Users: an admin creates one, who logs in with their own CLI and can neither see
//! nor change the admin's workspaces — not even learn that they exist.

use anyhow::Context;
use gatehouse_tests::control_plane::Cli;
use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{assert_fails, token_in, value_after};

/// A slug nobody created.
const NOWHERE: &str = "no-such-ws";

/// What the admin sees of `engineering`, to compare before and after.
async fn admin_view(admin: &Cli) -> anyhow::Result<Value> {
    Ok(json!({
        "workspace": admin.json(&["workspace", "list"]).await?,
        "tokens": admin.json(&["workspace", "token", "list", "engineering"]).await?,
        "servers": admin.json(&["mcp", "list", "--workspace", "engineering"]).await?,
        "secrets": admin.json(&["secrets", "list", "--workspace", "engineering"]).await?,
        "audit": admin.json(&["workspace", "audit", "engineering"]).await?,
    }))
}

#[tokio::test]
async fn users_cannot_see_or_change_each_others_workspaces() -> anyhow::Result<()> {
    let cp = crate::fixture::control_plane().await?;
    let admin = Cli::admin_of(&cp).await?;
    token_in(&admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    admin
        .ok(&[
            "mcp",
            "install",
            "http://127.0.0.1:9/mcp",
            "--name",
            "github",
            "--workspace",
            "engineering",
            "--header",
            "Authorization: Bearer {{secrets.GITHUB_TOKEN}}",
        ])
        .await?;
    admin
        .ok(&[
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            "ghp_admins",
            "--workspace",
            "engineering",
        ])
        .await?;

    // The admin creates bob, who logs in with the one-time credential.
    let created = admin
        .ok(&["user", "create", "bob", "--email", "bob@example.com"])
        .await?;
    assert!(created.starts_with("User bob created.\n"), "{created}");
    assert!(created.contains("(shown once — save this)"), "{created}");
    let credential = value_after(&created, "Credential: ")?;
    let bob = Cli::new("bob")?;
    bob.login(&cp.api_url(), "bob", &credential).await?;
    assert_eq!(
        bob.ok(&["whoami"]).await?,
        format!("bob <bob@example.com> at {}\n", cp.api_url())
    );
    let before = admin_view(&admin).await?;

    // Bob sees none of the admin's workspaces.
    let list = bob.ok(&["workspace", "list"]).await?;
    assert!(!list.contains("engineering"), "{list}");
    assert_eq!(
        bob.json(&["workspace", "list"]).await?,
        json!({"workspaces": []})
    );

    // Every command on the admin's workspace fails exactly as on one that does not exist.
    let attempts: Vec<Vec<&str>> = vec![
        vec!["workspace", "token", "list", "SLUG"],
        vec!["workspace", "token", "create", "SLUG", "--name", "Bob"],
        vec!["workspace", "token", "revoke", "SLUG", "--name", "default"],
        vec!["workspace", "audit", "SLUG"],
        vec!["workspace", "use", "SLUG"],
        vec!["mcp", "list", "--workspace", "SLUG"],
        vec![
            "mcp",
            "install",
            "http://127.0.0.1:9/x",
            "--name",
            "evil",
            "--workspace",
            "SLUG",
        ],
        vec!["mcp", "remove", "github", "--workspace", "SLUG"],
        vec!["secrets", "list", "--workspace", "SLUG"],
        vec![
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            "stolen",
            "--workspace",
            "SLUG",
        ],
        vec![
            "secrets",
            "delete",
            "github",
            "GITHUB_TOKEN",
            "--workspace",
            "SLUG",
        ],
        vec!["workspace", "delete", "SLUG", "--yes"],
    ];
    for attempt in &attempts {
        let on = |slug: &str| -> Vec<String> {
            attempt
                .iter()
                .map(|a| {
                    if *a == "SLUG" {
                        slug.to_owned()
                    } else {
                        a.to_string()
                    }
                })
                .collect()
        };
        let theirs = on("engineering");
        let nowhere = on(NOWHERE);
        let theirs = bob
            .run(&theirs.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
        let nowhere = bob
            .run(&nowhere.iter().map(String::as_str).collect::<Vec<_>>())
            .await?;
        assert_fails(&nowhere, 2, &format!("workspace \"{NOWHERE}\" not found"));
        assert_fails(&theirs, 2, "workspace \"engineering\" not found");
        assert_eq!(
            theirs.stderr,
            nowhere.stderr.replace(NOWHERE, "engineering"),
            "`{}` tells bob more about the admin's workspace than about a missing one",
            attempt.join(" ")
        );
    }

    // The API answers the same 404 for both, never 403.
    let jwt = bob.session_token()?;
    for (method, suffix) in [
        (Method::GET, ""),
        (Method::DELETE, ""),
        (Method::GET, "/tokens"),
        (Method::GET, "/servers"),
        (Method::GET, "/secrets"),
        (Method::GET, "/audit"),
    ] {
        let theirs = cp
            .request(
                method.clone(),
                &format!("/v1/workspaces/engineering{suffix}"),
                Some(&jwt),
                None,
            )
            .await?;
        let nowhere = cp
            .request(
                method.clone(),
                &format!("/v1/workspaces/{NOWHERE}{suffix}"),
                Some(&jwt),
                None,
            )
            .await?;
        assert_eq!(
            theirs.status, 404,
            "{method} engineering{suffix}: {}",
            theirs.body
        );
        assert_eq!(
            theirs.body,
            nowhere.body.replace(NOWHERE, "engineering"),
            "{method} {suffix}"
        );
    }

    // Bob cannot make users either.
    let refused = bob
        .run(&["user", "create", "eve", "--email", "eve@example.com"])
        .await?;
    assert_fails(&refused, 2, "only an admin can create users");

    // Nothing changed for the admin, and no event is bob's.
    assert_eq!(admin_view(&admin).await?, before);
    let audit = admin.ok(&["workspace", "audit", "engineering"]).await?;
    for action in ["workspace_create", "install", "secret_set"] {
        assert!(
            audit.contains(action),
            "the admin's {action} is listed: {audit}"
        );
    }
    assert!(!audit.contains("bob"), "{audit}");
    Ok(())
}

/// Audit history belongs to a workspace, not to its slug: whoever creates a slug
/// after it was deleted does not read the previous owner's history.
#[tokio::test]
async fn a_reused_slug_does_not_inherit_the_old_audit_log() -> anyhow::Result<()> {
    let cp = crate::fixture::control_plane().await?;
    let admin = Cli::admin_of(&cp).await?;
    admin.ok(&["workspace", "create", "Engineering"]).await?;
    admin
        .ok(&[
            "workspace",
            "token",
            "create",
            "engineering",
            "--name",
            "Alice Cursor",
        ])
        .await?;
    admin
        .ok(&["workspace", "delete", "engineering", "--yes"])
        .await?;

    let created = admin
        .ok(&["user", "create", "bob", "--email", "bob@example.com"])
        .await?;
    let bob = Cli::new("bob")?;
    bob.login(
        &cp.api_url(),
        "bob",
        &value_after(&created, "Credential: ")?,
    )
    .await?;
    bob.ok(&["workspace", "create", "Engineering"]).await?;
    let audit = bob.json(&["workspace", "audit", "engineering"]).await?;
    let events: Vec<(&str, &str, &str)> = audit["events"]
        .as_array()
        .context("the audit answer has an events list")?
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or("?"),
                e["action"].as_str().unwrap_or("?"),
                e["target"].as_str().unwrap_or("?"),
            )
        })
        .collect();
    // Bob's own creation is there (the new workspace and its first token), and
    // nothing else: none of the admin's events from before the delete.
    assert_eq!(
        events,
        [
            ("bob", "workspace_create", "engineering"),
            ("bob", "token_create", "default"),
        ],
        "bob's new workspace should list his own two events and none of the deleted workspace's history (its tokens' names, who did what): {audit}"
    );
    Ok(())
}
