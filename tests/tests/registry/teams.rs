//! Invitations and membership: a join code works once, only for the address it was
//! sent to, and not after it expires; removing a member refuses their next install
//! and takes acme's team packages out of the workspaces they own.

use gatehouse_tests::http_target::HttpTarget;
use gatehouse_tests::RawClient;
use serde_json::json;

use crate::fixture::{
    assert_fails, assert_refused, crm_manifest, first_column, join_code, row, skill_manifest,
    tool_names, Registry, ALICE_EMAIL, MALLORY_EMAIL,
};

#[tokio::test]
async fn invitation_codes_are_single_use_personal_and_expire() -> anyhow::Result<()> {
    let reg = Registry::start().await?;
    let code = join_code(&reg.acme.ok(&["team", "invite", ALICE_EMAIL]).await?)?;

    // Someone else signed in with alice's code: refused, and it stays alice's.
    let stolen = reg.mallory.run(&["team", "accept", &code]).await?;
    assert_fails(
        &stolen,
        2,
        "this invitation is for alice@acme.com, and you are signed in as mallory <mallory@evil.example>",
    );
    let team = reg.acme.ok(&["team", "list"]).await?;
    assert_eq!(first_column(&team), [ALICE_EMAIL], "{team}");
    assert_eq!(row(&team, ALICE_EMAIL).unwrap_or_default()[1], "pending");

    assert_eq!(
        reg.alice.ok(&["team", "accept", &code]).await?,
        "✓ Joined @acme\n"
    );
    // Used once: a second accept (by anyone) is refused, clearly.
    for who in [&reg.alice, &reg.mallory] {
        let reused = who.run(&["team", "accept", &code]).await?;
        assert_refused(&reused, 2, "error: this invitation was already used\n");
    }
    let unknown = reg
        .alice
        .run(&["team", "accept", "inv_doesnotexist"])
        .await?;
    assert_refused(&unknown, 2, "error: no such invitation: check the code\n");

    // An expired invitation (its deadline moved into the past in the store).
    let expiring = join_code(&reg.acme.ok(&["team", "invite", MALLORY_EMAIL]).await?)?;
    let db = reg.cp.data_dir().join("gatehouse.db");
    let sql = format!(
        "UPDATE team_members SET expires_at = CAST(strftime('%s','now') AS INTEGER) - 60 \
         WHERE email = '{MALLORY_EMAIL}' AND status = 'pending'; SELECT changes();"
    );
    let expired_in_store = tokio::process::Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000"])
        .arg(&db)
        .arg(&sql)
        .output()
        .await;
    match expired_in_store {
        Err(e) => {
            eprintln!("NOTE: skipping the expired-invitation case: sqlite3 not runnable: {e}")
        }
        Ok(out) => {
            anyhow::ensure!(
                out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "1",
                "sqlite3 did not expire the invitation: {out:?}"
            );
            let expired = reg.mallory.run(&["team", "accept", &expiring]).await?;
            assert_refused(
                &expired,
                2,
                "error: this invitation expired: ask @acme for a new one\n",
            );
            // Still not a member: acme's team list does not call mallory active.
            let team = reg.acme.ok(&["team", "list"]).await?;
            let mallory = row(&team, MALLORY_EMAIL).unwrap_or_default();
            assert_ne!(mallory.get(1).map(String::as_str), Some("active"), "{team}");
            // A fresh invitation replaces it; the old code is gone.
            let fresh = join_code(&reg.acme.ok(&["team", "invite", MALLORY_EMAIL]).await?)?;
            let old = reg.mallory.run(&["team", "accept", &expiring]).await?;
            assert_refused(&old, 2, "error: no such invitation: check the code\n");
            assert_eq!(
                reg.mallory.ok(&["team", "accept", &fresh]).await?,
                "✓ Joined @acme\n"
            );
        }
    }

    // Inviting someone already in the team is refused.
    let twice = reg.acme.run(&["team", "invite", ALICE_EMAIL]).await?;
    assert_fails(&twice, 2, "alice@acme.com is already a member of @acme");
    Ok(())
}

#[tokio::test]
async fn removing_a_member_refuses_installs_and_removes_theirs() -> anyhow::Result<()> {
    let target = HttpTarget::start().await?;
    let reg = Registry::start().await?;
    reg.publish(
        &reg.acme,
        "crm",
        &crm_manifest("crm", "1.0.0", &target.url("")),
        &["--private", "team"],
    )
    .await?
    .success()?;
    let public = skill_manifest(
        "public-tool",
        "1.0.0",
        vec![
            json!({"name": "ping", "input_schema": {"type": "object", "properties": {}},
                    "request": {"url": target.url("/ping")}}),
        ],
    );
    reg.publish(&reg.acme, "public-tool", &public, &[])
        .await?
        .success()?;
    reg.workspace(&reg.acme, "acme-team").await?;
    reg.alice_joins_acme().await?;

    // alice installs the team skill (and a public one) into a workspace of her own.
    let alice_token = reg.workspace(&reg.alice, "alice-ws").await?;
    let out = reg
        .alice
        .ok(&["skill", "install", "@acme/crm", "--workspace", "alice-ws"])
        .await?;
    assert!(
        out.starts_with("✓ Installed (team membership verified)\n"),
        "{out}"
    );
    reg.alice
        .ok(&[
            "skill",
            "install",
            "@acme/public-tool",
            "--workspace",
            "alice-ws",
        ])
        .await?;
    reg.alice
        .ok(&[
            "secrets",
            "set",
            "crm",
            "CRM_TOKEN",
            "alices-token",
            "--workspace",
            "alice-ws",
        ])
        .await?;
    let servers = reg
        .alice
        .ok(&["mcp", "list", "--workspace", "alice-ws"])
        .await?;
    assert_eq!(first_column(&servers), ["crm", "public-tool"], "{servers}");

    let removed = reg.acme.ok(&["team", "remove", ALICE_EMAIL]).await?;
    assert_eq!(
        removed,
        "✓ Removed alice@acme.com from @acme (1 team install removed from their workspaces)\n"
    );
    let team = reg.acme.ok(&["team", "list"]).await?;
    assert!(!team.contains(ALICE_EMAIL), "{team}");

    // Her next install is refused like an outsider's…
    let refused = reg
        .alice
        .run(&["skill", "install", "@acme/crm", "--workspace", "alice-ws"])
        .await?;
    assert_refused(&refused, 2, "✗ 403: You are not a member of @acme\n");
    let list = reg.alice.ok(&["skill", "list"]).await?;
    assert!(!list.contains("@acme/crm"), "{list}");
    // …and the copy she had installed is gone; the public one stays.
    let servers = reg
        .alice
        .ok(&["mcp", "list", "--workspace", "alice-ws"])
        .await?;
    assert_eq!(first_column(&servers), ["public-tool"], "{servers}");
    let secrets = reg
        .alice
        .ok(&["secrets", "list", "--workspace", "alice-ws"])
        .await?;
    assert!(
        !secrets.contains("CRM_TOKEN"),
        "the removed install's secret stayed: {secrets}"
    );
    // Her gateway no longer offers the team skill's tools.
    let client = reg.client("alice-ws", &alice_token).await?;
    let names = tool_names(&client).await?;
    assert_eq!(names, ["public-tool__ping"], "{names:?}");
    client.cancel().await?;
    // acme's shared workspace is out of her reach too.
    let shared = reg
        .alice
        .run(&["mcp", "list", "--workspace", "acme-team"])
        .await?;
    assert_fails(&shared, 2, "workspace \"acme-team\" not found");
    // The removal is in her workspace's audit log.
    let audit = reg.alice.ok(&["workspace", "audit", "alice-ws"]).await?;
    assert!(
        audit
            .lines()
            .any(|l| l.contains("@acme/crm@1.0.0") && l.trim_end().ends_with("remove")),
        "{audit}"
    );
    Ok(())
}

/// A token alice created for acme's shared workspace while she was a member stops
/// opening that workspace when acme removes her from the team: removal revokes the
/// tokens a member created in the owner's workspaces.
#[tokio::test]
async fn a_removed_members_tokens_for_the_shared_workspace_stop_working() -> anyhow::Result<()> {
    let reg = Registry::start().await?;
    reg.workspace(&reg.acme, "acme-team").await?;
    reg.alice_joins_acme().await?;
    let created = reg
        .alice
        .ok(&[
            "workspace",
            "token",
            "create",
            "acme-team",
            "--name",
            "Alice laptop",
        ])
        .await?;
    let token = crate::fixture::token_in(&created)?;
    reg.synced().await?;
    let url = reg.proxy.ws_url("acme-team");
    assert_eq!(
        RawClient::new(&url, Some(&token))
            .send_initialize()
            .await?
            .status,
        200
    );

    reg.acme.ok(&["team", "remove", ALICE_EMAIL]).await?;
    reg.synced().await?;
    let after = RawClient::new(&url, Some(&token)).send_initialize().await?;
    assert_eq!(
        after.status,
        401,
        "a removed member's token still opens acme-team: {}",
        after.text()
    );
    Ok(())
}
