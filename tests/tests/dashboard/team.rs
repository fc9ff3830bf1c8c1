//! The Team tab and the Proxies page: the owner invites by email and reads the join
//! code off the page; the invitee, in a browser of their own, accepts it and finds the
//! owner's workspaces in their list. The Proxies page shows the real proxy caught up.

use gatehouse_tests::deployment::{Deployment, PROXY_NAME};

use crate::browser::{sign_in, Browser};

/// A team skill's manifest, as a person would paste it.
const SKILL: &str = r#"{
  "name": "crm",
  "type": "skill",
  "version": "1.0.0",
  "description": "Look up customers in the CRM",
  "category": "productivity",
  "tags": ["crm"],
  "secrets": [{"name": "CRM_TOKEN", "description": "API token for the CRM"}],
  "tools": [{
    "name": "lookup_customer",
    "description": "Fetch a customer record by id",
    "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
    "read_only": true,
    "request": {"method": "GET", "url": "https://crm.example.com/api/customers/{{args.id}}",
                "headers": {"Authorization": "Bearer {{secrets.CRM_TOKEN}}"}},
    "response": {"pointer": "/data"}
  }]
}"#;

#[tokio::test]
async fn an_invited_user_joins_the_team_from_the_browser() -> anyhow::Result<()> {
    let d = Deployment::start().await?;
    let api = d.cp.api_url();
    let dash = format!("{api}/dashboard");
    d.admin.ok(&["workspace", "create", "Engineering"]).await?;
    let created = d
        .admin
        .ok(&["user", "create", "carol", "--email", "carol@example.com"])
        .await?;
    let credential = created
        .lines()
        .find_map(|l| l.strip_prefix("Credential: "))
        .and_then(|rest| rest.split(' ').next())
        .ok_or_else(|| anyhow::anyhow!("no credential in:\n{created}"))?
        .to_owned();

    let owner = Browser::start("team-owner").await?;
    sign_in(&owner, &api, "admin", d.cp.admin_credential()).await?;
    owner.click("header nav a[href$='/team']").await?;
    owner.find_text("main h1", "Team").await?;
    owner.fill("#inv-email", "carol@example.com").await?;
    owner.click("form[action$='/team/invite'] button").await?;
    owner.find_text("main h1", "Invitation created.").await?;
    let code = owner.value("#invite-code").await?;
    assert!(code.starts_with("inv_"), "{code}");
    assert_eq!(
        owner.value("#join-command").await?,
        format!("gatehouse team accept {code}")
    );
    owner.click("main a.button").await?;
    let row = owner
        .find_text("table.team tr", "carol@example.com")
        .await?;
    assert!(row.text().await?.contains("pending"));
    // The code is shown once: the team page does not carry it.
    assert!(!owner.source().await?.contains(&code));

    // Carol does not see Engineering until she accepts.
    let carol = Browser::start("team-carol").await?;
    sign_in(&carol, &api, "carol", &credential).await?;
    assert!(!carol.text("main").await?.contains("engineering"));
    carol
        .goto(&format!("{dash}/workspaces/engineering"))
        .await?;
    carol.find_text("main h1", "Not found").await?;
    carol.goto(&format!("{dash}/team")).await?;
    carol.fill("#acc-code", &code).await?;
    carol.click("form[action$='/team/accept'] button").await?;
    carol.find_text("main h1", "Welcome to @admin.").await?;
    carol.click("main a.button").await?;
    carol.find_text("main td a", "engineering").await?;
    carol
        .goto(&format!("{dash}/workspaces/engineering"))
        .await?;
    carol.find_text("main h1", "Engineering").await?;
    carol.screenshot("joined").await?;

    // The owner's Team tab says she is active.
    owner.goto(&format!("{dash}/team")).await?;
    let row = owner
        .find_text("table.team tr", "carol@example.com")
        .await?;
    let text = row.text().await?;
    assert!(text.contains("active") && text.contains("carol"), "{text}");
    owner.screenshot("team").await?;

    // The owner publishes a team skill from the Hub, pasting its manifest.
    owner.click("header nav a[href$='/hub']").await?;
    owner.find_text("main h1", "Hub").await?;
    owner.fill("#pub-manifest", SKILL).await?;
    owner
        .find("#pub-visibility")
        .await?
        .select_by_value("team")
        .await?;
    owner.click("form[action$='/hub/publish'] button").await?;
    owner.find_text("main h1", "Published.").await?;
    owner.click("main a.button").await?;
    owner.find_text("table.versions td", "1.0.0").await?;
    // Team packages never appear in public search.
    owner.goto(&format!("{dash}/hub?q=crm")).await?;
    let public = owner.text("section[aria-labelledby=public]").await?;
    assert!(!public.contains("@admin/crm"), "{public}");

    // Carol, a member, installs it into a workspace of her own.
    carol.goto(&format!("{dash}/workspaces")).await?;
    carol.fill("#ws-name", "Carol Space").await?;
    carol.click("form[action$='/workspaces'] button").await?;
    carol.find_text("main h1", "Workspace created.").await?;
    carol.click("header nav a[href$='/hub']").await?;
    carol
        .find_text("section[aria-labelledby=mine] td", "@admin/crm")
        .await?;
    carol
        .find("form.install select")
        .await?
        .select_by_value("carol-space")
        .await?;
    carol
        .click("button[aria-label='Install @admin/crm']")
        .await?;
    carol.find_text("main h1", "Installed.").await?;
    carol.find_text("main li", "CRM_TOKEN").await?;
    carol.screenshot("installed").await?;
    carol
        .goto(&format!("{dash}/workspaces/carol-space/tools"))
        .await?;
    carol
        .find_texts(
            "table.tools tr",
            &[
                "crm__lookup_customer",
                "read-only",
                "Fetch a customer record by id",
            ],
        )
        .await?;
    carol.goto(&format!("{dash}/hub")).await?;
    carol
        .find("button[aria-label='Install @admin/crm']")
        .await?;

    // Removed, she loses the workspace again, and the team skill: installing it
    // from the page she still has open is refused.
    owner.goto(&format!("{dash}/team")).await?;
    owner
        .click("button[aria-label='Remove carol@example.com']")
        .await?;
    owner.find_text("main h1", "Team").await?;
    carol
        .click("button[aria-label='Install @admin/crm']")
        .await?;
    carol.find_text("main h1", "Not allowed").await?;
    carol
        .find_text("main p.error", "You are not a member of @admin")
        .await?;
    carol.screenshot("not-a-member").await?;
    carol
        .goto(&format!("{dash}/workspaces/engineering"))
        .await?;
    carol.find_text("main h1", "Not found").await?;

    // Proxies: the real one, connected and caught up.
    let version = d.synced().await?;
    owner.click("header nav a[href$='/proxies']").await?;
    let row = owner.find_text("table.proxies tr", PROXY_NAME).await?;
    let cells = row.text().await?;
    assert!(
        cells.contains("connected") && !cells.contains("disconnected"),
        "{cells}"
    );
    assert!(
        cells.contains(&format!("{version} {version} 0")),
        "applied {version}, current {version}, lag 0: {cells}"
    );
    owner.screenshot("proxies").await?;
    carol.close().await?;
    owner.close().await
}
