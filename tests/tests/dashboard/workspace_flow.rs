//! One person runs a workspace from the browser alone: signs in, creates it (token
//! shown once), installs a real MCP server with a secret header, creates and revokes
//! a token, and reads the audit; real MCP clients through the real proxy confirm
//! each step took effect.

use std::time::{Duration, Instant};

use gatehouse_tests::config::random_base62;
use gatehouse_tests::deployment::Deployment;
use gatehouse_tests::{connect, RawClient, Upstream, UpstreamTool, STEP_TIMEOUT};
use rmcp::model::CallToolRequestParams;
use serde_json::Value;

use crate::browser::{sign_in, Browser};

/// Revocation reaches the proxy within this (the product's target is 100 ms).
const REVOKE_LIMIT: Duration = Duration::from_secs(1);

/// Pings an initialised session until the gateway answers 401; how long from `since`.
async fn until_refused(session: &RawClient, since: Instant) -> anyhow::Result<Duration> {
    let mut id = 100;
    loop {
        id += 1;
        let answer = session.request(id, "ping", serde_json::json!({})).await?;
        if answer.status == 401 {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            answer.status == 200,
            "ping answered {}: {}",
            answer.status,
            answer.text()
        );
        anyhow::ensure!(
            since.elapsed() < REVOKE_LIMIT,
            "the gateway still accepted the revoked token {REVOKE_LIMIT:?} after the click"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The tool names a fresh MCP client of `gateway` sees, sorted.
async fn sorted_tools(gateway: &str, token: &str) -> anyhow::Result<Vec<String>> {
    let client = connect(gateway, token).await?;
    let mut names: Vec<String> = client
        .peer()
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    client.cancel().await?;
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn a_user_runs_a_workspace_from_the_browser() -> anyhow::Result<()> {
    let d = Deployment::start().await?;
    let api = d.cp.api_url();
    let upstream = Upstream::start(
        "tickets",
        [
            UpstreamTool::new("search")
                .read_only(true)
                .description("Search tickets <script>window.__injected=1</script>"),
            UpstreamTool::new("close"),
        ],
    )
    .await?;
    let browser = Browser::start("owner").await?;
    sign_in(&browser, &api, "admin", d.cp.admin_credential()).await?;
    browser.screenshot("workspaces-empty").await?;

    // New Workspace: the URLs and the first token, shown once.
    browser.fill("#ws-name", "Support").await?;
    browser.click("form[action$='/workspaces'] button").await?;
    browser.find_text("main h1", "Workspace created.").await?;
    let gateway = browser.value("#gateway-url").await?;
    assert_eq!(gateway, d.proxy.ws_url("support"));
    assert_eq!(browser.value("#sse-url").await?, format!("{gateway}/sse"));
    let first = browser.value("#token").await?;
    assert!(first.starts_with("mwt_"), "{first}");
    let config: Value = serde_json::from_str(&browser.text("#mcp-json").await?)?;
    assert_eq!(config["mcpServers"]["support"]["url"], gateway.as_str());
    assert_eq!(
        config["mcpServers"]["support"]["headers"]["Authorization"],
        format!("Bearer {first}")
    );
    assert!(browser
        .text(".once")
        .await?
        .contains("Token (shown once — save this)"));
    browser.screenshot("workspace-created").await?;

    // The workspace page never shows that token again.
    browser.click("main a.button").await?;
    browser.find_text("main h1", "Support").await?;
    assert!(!browser.source().await?.contains(&first));

    // Install a real MCP server whose header takes a secret.
    browser.fill("#srv-url", &upstream.url()).await?;
    browser.fill("#srv-slug", "tickets").await?;
    browser
        .fill("#srv-header", "X-Api-Key: {{secrets.API_KEY}}")
        .await?;
    browser.click("#srv-read-only").await?;
    browser.click("form[action$='/servers'] button").await?;
    let row = browser
        .find_text("section[aria-labelledby=servers] tr", "tickets")
        .await?;
    assert!(row.text().await?.contains("read-only"));

    // Set its secret: the page lists the name, never the value.
    let value = format!("key_{}", random_base62(24));
    browser.fill("#sec-name", "API_KEY").await?;
    browser.fill("#sec-value", &value).await?;
    browser.click("form[action$='/secrets'] button").await?;
    browser
        .find_text("section[aria-labelledby=secrets] td", "API_KEY")
        .await?;
    assert!(!browser.source().await?.contains(&value));
    browser.screenshot("workspace").await?;

    // A real client, with the token read off the page, sees the tools, and the
    // upstream receives the secret on the call.
    d.synced().await?;
    let names = sorted_tools(&gateway, &first).await?;
    // Read-only, as ticked: `close` carries no readOnlyHint, so clients never see it.
    assert_eq!(names, ["tickets__search"]);
    let client = connect(&gateway, &first).await?;
    client
        .peer()
        .call_tool(CallToolRequestParams::new("tickets__search"))
        .await?;
    let calls = upstream.requests_for("tools/call");
    let last = calls.last().expect("the upstream saw the call");
    assert_eq!(last.header("x-api-key"), Some(value.as_str()));
    client.cancel().await?;

    // The Tools page lists what the client saw, read-only badge, server and all; the
    // upstream's description is text, never markup.
    browser.click("nav.sub a[href$='/tools']").await?;
    let row = browser
        .find_texts(
            "table.tools tr",
            &["tickets__search", "read-only", "tickets"],
        )
        .await?;
    let text = row.text().await?;
    assert!(
        text.contains("Search tickets <script>window.__injected=1</script>"),
        "{text}"
    );
    assert!(!browser.text("main").await?.contains("tickets__close"));
    let ran = browser
        .client()
        .execute("return typeof window.__injected;", vec![])
        .await?;
    assert_eq!(ran, "undefined");
    browser.screenshot("tools").await?;
    browser.click("nav.sub a[href$='/support']").await?;
    browser.find_text("main h1", "Support").await?;

    // Disabled, the server's tools are gone for clients; enabled, they are back.
    browser
        .click("button[aria-label='Disable tickets']")
        .await?;
    browser
        .find_texts(
            "section[aria-labelledby=servers] tr",
            &["tickets", "disabled"],
        )
        .await?;
    d.synced().await?;
    assert_eq!(sorted_tools(&gateway, &first).await?, Vec::<String>::new());
    browser.click("button[aria-label='Enable tickets']").await?;
    browser
        .find_texts(
            "section[aria-labelledby=servers] tr",
            &["tickets", "enabled"],
        )
        .await?;
    d.synced().await?;
    assert_eq!(sorted_tools(&gateway, &first).await?, ["tickets__search"]);

    // The tool policy changed in place: no longer read-only, both tools are exposed.
    browser
        .click("summary[aria-label='Change the tool policy of tickets']")
        .await?;
    browser.click("#ro-tickets").await?;
    browser
        .click("form[action$='/servers/tickets/policy'] button")
        .await?;
    browser
        .find_texts(
            "section[aria-labelledby=servers] tr",
            &["tickets", "all tools"],
        )
        .await?;
    d.synced().await?;
    assert_eq!(
        sorted_tools(&gateway, &first).await?,
        ["tickets__close", "tickets__search"]
    );

    // Live: changes made through the CLI show up on the open page without a reload.
    browser.find("body[data-listening=yes]").await?;
    let same_page = "return window.__same_page === true;";
    browser
        .client()
        .execute("window.__same_page = true;", vec![])
        .await?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            &upstream.url(),
            "--name",
            "wiki",
            "--workspace",
            "support",
        ])
        .await?;
    browser
        .find_text("section[aria-labelledby=servers] td", "wiki")
        .await?;
    d.admin
        .ok(&[
            "workspace",
            "token",
            "revoke",
            "support",
            "--name",
            "default",
        ])
        .await?;
    browser
        .find_texts(
            "section[aria-labelledby=tokens] tr",
            &["default", "revoked"],
        )
        .await?;
    assert_eq!(browser.client().execute(same_page, vec![]).await?, true);

    // Create a token (shown once), then revoke it: a live session is refused at once.
    browser.fill("#tok-name", "Alice Cursor").await?;
    browser.click("form[action$='/tokens'] button").await?;
    browser.find_text("main h1", "Token created.").await?;
    let alice = browser.value("#token").await?;
    assert!(alice.starts_with("mwt_") && alice != first, "{alice}");
    browser.screenshot("token-created").await?;
    browser.click("main a.button").await?;
    let row = browser
        .find_text("section[aria-labelledby=tokens] tr", "Alice Cursor")
        .await?;
    assert!(row.text().await?.contains("active"));
    assert!(!browser.source().await?.contains(&alice));
    let mut session = RawClient::new(gateway.clone(), Some(&alice));
    let initialized = session.initialize().await?;
    assert_eq!(initialized.status, 200, "{}", initialized.text());
    let revoke = browser
        .find("button[aria-label='Revoke Alice Cursor']")
        .await?;
    let clicked = Instant::now();
    revoke.click().await?;
    let took = until_refused(&session, clicked).await?;
    eprintln!("revoked from the dashboard; refused after {took:?}");
    browser
        .find_texts(
            "section[aria-labelledby=tokens] tr",
            &["Alice Cursor", "revoked"],
        )
        .await?;

    // A token limited to the read-only tools of tickets sees only those.
    browser.fill("#tok-name", "Search bot").await?;
    browser.fill("#tok-tools", "tickets__*").await?;
    browser.click("#tok-read-only").await?;
    browser.click("form[action$='/tokens'] button").await?;
    browser.find_text("main h1", "Token created.").await?;
    let bot = browser.value("#token").await?;
    browser.click("main a.button").await?;
    browser
        .find_texts(
            "section[aria-labelledby=tokens] tr",
            &["Search bot", "tickets__*, read-only", "active"],
        )
        .await?;
    d.synced().await?;
    assert_eq!(sorted_tools(&gateway, &bot).await?, ["tickets__search"]);

    // Workspace Audit shows the tool call the real client made.
    let audit = format!("{api}/dashboard/workspaces/support/audit");
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        browser.goto(&audit).await?;
        let table = browser.find("main").await?.text().await?;
        if table.contains("tickets__search") && table.contains("tool_call") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the audit page never showed the tool call:\n{table}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.find_text("table.audit tr", "token_revoke").await?;
    browser.screenshot("audit").await?;

    // Filtered to tool calls, only they remain.
    browser.fill("#f-action", "tool_call").await?;
    browser.click("form.filters button").await?;
    browser.find_text("nav.pages", "· 1 event").await?;
    browser.find_text("table.audit td", "tool_call").await?;

    // Analytics draws the call as charts: one bar for the server, one for the tool.
    browser.click("nav.sub a[href$='/analytics']").await?;
    browser.find_text("main h1", "Analytics").await?;
    browser.find_text("p.totals", "1 call · 0 errors").await?;
    for chart in [
        "calls-per-server",
        "calls-per-tool",
        "latency-per-server",
        "calls-per-token",
    ] {
        browser.find(&format!("svg#{chart}")).await?;
    }
    let bar = browser.find("svg#calls-per-tool rect.ok").await?;
    let width: f64 = bar.attr("width").await?.unwrap_or_default().parse()?;
    assert!(width > 100.0, "the only tool's bar is {width} wide");
    let (_, _, drawn, _) = bar.rectangle().await?;
    assert!(drawn > 50.0, "the bar is drawn {drawn} px wide");
    browser
        .find_text("svg#calls-per-tool text", "tickets__search")
        .await?;
    browser
        .find_text("svg#calls-per-server text", "tickets")
        .await?;
    browser.screenshot("analytics").await?;

    // On a phone-sized screen the pages fit the width: wide tables scroll inside
    // their own box, the page itself does not.
    browser.client().set_window_size(390, 844).await?;
    for page in ["", "/tools", "/audit", "/analytics"] {
        browser
            .goto(&format!("{api}/dashboard/workspaces/support{page}"))
            .await?;
        browser.find("main h1").await?;
        browser
            .screenshot(&format!("phone{}", page.replace('/', "-")))
            .await?;
        let overflow = browser
            .client()
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await?;
        if overflow != 0 {
            // Name the widest culprits, outermost first, for whoever reads the failure.
            let wide = browser
                .client()
                .execute(
                    "const w = document.documentElement.clientWidth; return [...document.querySelectorAll('body *')]\
                     .filter(e => e.getBoundingClientRect().right > w + 1 && !e.closest('.scroll *'))\
                     .slice(0, 8).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right));",
                    vec![],
                )
                .await?;
            anyhow::bail!("{page:?} is {overflow} px wider than a phone screen: {wide}");
        }
    }
    browser.close().await
}
