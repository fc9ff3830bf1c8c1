//! The Tools page lists the tools of every kind of server a workspace can have: a
//! Streamable HTTP one and a legacy HTTP+SSE one, each asked with its own headers
//! and secrets and filtered by its policy, exactly as a real client sees them through
//! the proxy. A server it cannot ask is named with the reason, and which servers it
//! asks at all is the operator's choice (`--ask-servers`).

use gatehouse_tests::control_plane::{Cli, ControlPlane};
use gatehouse_tests::deployment::{token_in, Deployment};
use gatehouse_tests::{connect, Upstream, UpstreamTool};

use crate::browser::{sign_in, Browser};

#[tokio::test]
async fn the_tools_page_lists_legacy_sse_servers_too() -> anyhow::Result<()> {
    let d = Deployment::start().await?;
    let api = d.cp.api_url();
    let token = token_in(&d.admin.ok(&["workspace", "create", "Support"]).await?)?;
    let modern = Upstream::start("modern", [UpstreamTool::new("search").read_only(true)]).await?;
    let legacy = Upstream::builder("legacy")
        .tools([
            UpstreamTool::new("lookup")
                .read_only(true)
                .description("Look a customer up"),
            UpstreamTool::new("refund").description("Refund an order"),
            UpstreamTool::new("purge"),
        ])
        .legacy_sse()
        .start()
        .await?;
    let install = |url: String, name: &'static str, extra: Vec<&'static str>| {
        let admin = &d.admin;
        async move {
            let mut args = vec!["mcp", "install", &url, "--name", name, "-w", "support"];
            args.extend(extra);
            admin.ok(&args).await
        }
    };
    install(modern.url(), "modern", vec![]).await?;
    let installed = install(
        legacy.url(),
        "legacy",
        vec![
            "--header",
            "X-Api-Key: {{secrets.API_KEY}}",
            "--deny",
            "purge",
        ],
    )
    .await?;
    assert!(installed.contains("legacy HTTP+SSE"), "{installed}");
    // A second legacy server whose secret is never set cannot be asked.
    install(
        legacy.url(),
        "locked",
        vec!["--header", "X-Api-Key: {{secrets.API_KEY}}"],
    )
    .await?;
    d.admin
        .ok(&[
            "secrets", "set", "legacy", "API_KEY", "key-123", "-w", "support",
        ])
        .await?;

    // The installs' probes asked too, without the secret (not set yet).
    let probed = legacy.requests_for("tools/list").len();

    let browser = Browser::start("tools").await?;
    sign_in(&browser, &api, "admin", d.cp.admin_credential()).await?;
    browser
        .goto(&format!("{api}/dashboard/workspaces/support/tools"))
        .await?;
    let row = browser
        .find_texts("table.tools tr", &["legacy__lookup", "read-only", "legacy"])
        .await?;
    assert!(row.text().await?.contains("Look a customer up"));
    browser
        .find_texts("table.tools tr", &["legacy__refund", "Refund an order"])
        .await?;
    browser
        .find_texts("table.tools tr", &["modern__search", "read-only", "modern"])
        .await?;
    let main = browser.text("main").await?;
    // Denied by its policy, as for clients.
    assert!(!main.contains("legacy__purge"), "{main}");
    browser
        .find_texts("p.error", &["locked", "secret API_KEY is not set"])
        .await?;
    assert!(
        main.contains("3 tools as clients of support see them"),
        "{main}"
    );
    browser.screenshot("tools-legacy").await?;

    // The page asked the legacy server with its secret, over its own transport.
    let asked = legacy.requests_for("tools/list").split_off(probed);
    assert!(!asked.is_empty(), "the page never asked the legacy server");
    assert!(
        asked
            .iter()
            .all(|r| r.header("x-api-key") == Some("key-123")),
        "{asked:?}"
    );

    // What the page lists is what a real client sees through the proxy.
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("support"), &token).await?;
    let mut names: Vec<String> = client
        .peer()
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    client.cancel().await?;
    names.sort();
    assert_eq!(
        names,
        ["legacy__lookup", "legacy__refund", "modern__search"]
    );
    browser.close().await
}

/// `--ask-servers`: under `public` the control plane refuses to connect to a loopback
/// server, by address or by a name that resolves to one, for the install probe and
/// for the Tools page alike, and the server never sees a request from it; under
/// `never` it asks no server at all and says so.
#[tokio::test]
async fn which_servers_the_control_plane_asks_is_the_operators_choice() -> anyhow::Result<()> {
    let upstream = Upstream::start("inside", [UpstreamTool::new("secret_admin_thing")]).await?;
    let by_name = upstream.url().replace("127.0.0.1", "localhost");
    for (choice, says) in [
        ("public", "non-public address"),
        (
            "never",
            "does not connect to MCP servers itself (--ask-servers never)",
        ),
    ] {
        let cp = ControlPlane::start_with_args(&["--ask-servers", choice]).await?;
        let admin = Cli::admin_of(&cp).await?;
        admin.ok(&["workspace", "create", "Eng"]).await?;
        for (url, name) in [(upstream.url(), "literal"), (by_name.clone(), "named")] {
            let installed = admin
                .ok(&["mcp", "install", &url, "--name", name, "-w", "eng"])
                .await?;
            assert!(
                installed.contains("Could not probe it: ")
                    && installed.contains("Saved as Streamable HTTP"),
                "{choice}: {installed}"
            );
            if choice == "never" || name == "literal" {
                assert!(installed.contains(says), "{choice}: {installed}");
            } else {
                assert!(
                    installed.contains("resolves to non-public addresses only"),
                    "{choice}: {installed}"
                );
            }
        }
        let browser = Browser::start(&format!("ask-{choice}")).await?;
        sign_in(&browser, &cp.api_url(), "admin", cp.admin_credential()).await?;
        browser
            .goto(&format!("{}/dashboard/workspaces/eng/tools", cp.api_url()))
            .await?;
        browser.find_texts("p.error", &["literal", says]).await?;
        let named = if choice == "never" {
            says
        } else {
            "resolves to non-public addresses only"
        };
        browser.find_texts("p.error", &["named", named]).await?;
        browser.screenshot(&format!("tools-ask-{choice}")).await?;
        assert!(!browser.text("main").await?.contains("secret_admin_thing"));
        browser.close().await?;
        assert!(
            upstream.requests().is_empty(),
            "{choice}: the control plane reached the server: {:?}",
            upstream.requests()
        );
    }
    Ok(())
}
