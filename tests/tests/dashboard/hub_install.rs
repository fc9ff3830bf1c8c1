//! The workspace page's shortcut to the Hub: a skill of the user's own and a public
//! Hub package are installed by name from the workspace itself (the same install as
//! `gatehouse mcp install @owner/name`), a real client sees the skill's tools through
//! the proxy, and an unknown package is refused with the API's words.

use gatehouse_tests::connect;
use gatehouse_tests::deployment::{token_in, Deployment};
use reqwest::Method;
use serde_json::json;

use crate::browser::{sign_in, Browser};

#[tokio::test]
async fn a_package_or_skill_is_installed_from_the_workspace_page() -> anyhow::Result<()> {
    let d = Deployment::start().await?;
    let api = d.cp.api_url();
    let token = token_in(&d.admin.ok(&["workspace", "create", "Support"]).await?)?;
    let manifest = json!({
        "name": "crm",
        "type": "skill",
        "version": "1.2.0",
        "description": "Look up customers in the CRM",
        "category": "productivity",
        "secrets": [{"name": "CRM_TOKEN", "description": "API token for the CRM"}],
        "tools": [{
            "name": "lookup_customer",
            "description": "Fetch a customer record by id",
            "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
            "read_only": true,
            "request": {"method": "GET", "url": "https://crm.example.com/api/customers/{{args.id}}",
                        "headers": {"Authorization": "Bearer {{secrets.CRM_TOKEN}}"}},
            "response": {"pointer": "/data"}
        }]
    });
    let jwt = d.admin.session_token()?;
    let published =
        d.cp.request(
            Method::POST,
            "/v1/packages",
            Some(&jwt),
            Some(&json!({"manifest": manifest, "visibility": "private"})),
        )
        .await?;
    assert!(published.status < 300, "{}", published.body);

    let browser = Browser::start("hub-install").await?;
    sign_in(&browser, &api, "admin", d.cp.admin_credential()).await?;
    let page = format!("{api}/dashboard/workspaces/support");
    browser.goto(&page).await?;
    // The form suggests what the user may install: their private skill, the Hub's.
    let known = browser.source().await?;
    for package in ["@admin/crm", "@gatehouse/github"] {
        assert!(
            known.contains(&format!("<option value=\"{package}\"")),
            "{package} is not suggested"
        );
    }
    browser.fill("#pkg-ref", "@admin/crm").await?;
    browser.fill("#pkg-version", "1.2.0").await?;
    browser
        .click("form[action$='/support/packages'] button")
        .await?;
    browser.find_text("main h1", "Installed.").await?;
    browser.find_text("main li", "CRM_TOKEN").await?;
    browser.screenshot("workspace-install-skill").await?;
    browser.click("main a.button").await?;
    browser
        .find_texts("section[aria-labelledby=servers] tr", &["crm", "skill"])
        .await?;

    // A Hub package under a name of the user's choosing.
    browser.fill("#pkg-ref", "@gatehouse/github").await?;
    browser.fill("#pkg-slug", "gh").await?;
    browser
        .click("form[action$='/support/packages'] button")
        .await?;
    browser.find_text("main h1", "Installed.").await?;
    browser.find_text("main p", "gh__<tool>").await?;
    let servers = d.admin.ok(&["mcp", "list", "-w", "support"]).await?;
    assert!(
        servers.lines().any(|l| l.starts_with("gh ")),
        "gh is not installed:\n{servers}"
    );

    // Something that does not exist is refused with the API's own words.
    browser.goto(&page).await?;
    browser.fill("#pkg-ref", "@nobody/nothing").await?;
    browser
        .click("form[action$='/support/packages'] button")
        .await?;
    browser.find_text("main h1", "Not found").await?;
    browser.find_text("main p.error", "@nobody/nothing").await?;

    // The skill's tool reaches a real client through the proxy once its secret is
    // set. `gh` goes first: with no token it cannot be initialized, and a workspace
    // whose every upstream fails refuses `initialize` even with a skill beside them
    // (the proxy's initialize does not count skills as reachable).
    d.admin
        .ok(&["secrets", "set", "crm", "CRM_TOKEN", "t0k", "-w", "support"])
        .await?;
    d.admin
        .ok(&["mcp", "remove", "gh", "-w", "support"])
        .await?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("support"), &token).await?;
    let names: Vec<String> = client
        .peer()
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    client.cancel().await?;
    assert!(
        names.contains(&"crm__lookup_customer".to_owned()),
        "{names:?}"
    );
    browser.close().await
}
