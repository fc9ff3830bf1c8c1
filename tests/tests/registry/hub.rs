//! The Hub: the starter catalog is there on first start as public `@gatehouse/*`
//! packages; `skill search` finds them, and `mcp install @gatehouse/github` adds the
//! server to a workspace and says which secret to set. The real server is never
//! called (there is no internet here, and no secret is set).

use gatehouse_tests::RawClient;

use crate::fixture::{first_column, row, rows, Registry};

#[tokio::test]
async fn hub_packages_are_found_and_installed_with_their_secret_names() -> anyhow::Result<()> {
    let reg = Registry::start().await?;

    for who in [&reg.acme, &reg.mallory] {
        let found = who.ok(&["skill", "search", "github"]).await?;
        let line = row(&found, "@gatehouse/github").unwrap_or_default();
        assert_eq!(
            line.get(2).map(String::as_str),
            Some("mcp-server"),
            "{found}"
        );
    }
    // Search covers tags too: "billing" is only a tag of the Stripe entry.
    let billing = reg.acme.ok(&["skill", "search", "billing"]).await?;
    assert!(
        first_column(&billing).contains(&"@gatehouse/stripe".to_owned()),
        "{billing}"
    );
    let versions = reg
        .mallory
        .ok(&["skill", "versions", "@gatehouse/github"])
        .await?;
    assert_eq!(rows(&versions).len(), 1, "{versions}");

    let token = reg.workspace(&reg.acme, "acme-team").await?;
    let installed = reg
        .acme
        .ok(&[
            "mcp",
            "install",
            "@gatehouse/github",
            "--workspace",
            "acme-team",
        ])
        .await?;
    let lines: Vec<&str> = installed.lines().collect();
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("✓ Installed @gatehouse/github@")
                && l.ends_with(" as github in acme-team")),
        "{installed}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "Set its secrets: gatehouse secrets set github GITHUB_PERSONAL_ACCESS_TOKEN VALUE --workspace acme-team"
        )),
        "{installed}"
    );
    let servers = reg
        .acme
        .ok(&["mcp", "list", "--workspace", "acme-team"])
        .await?;
    let github = row(&servers, "github").unwrap_or_default();
    assert_eq!(
        github.get(1..3),
        Some(
            &[
                "https://api.githubcopilot.com/mcp/".into(),
                "streamable-http".into()
            ][..]
        ),
        "{servers}"
    );
    // Installing a second time under the same slug is a collision.
    let again = reg
        .acme
        .run(&[
            "mcp",
            "install",
            "@gatehouse/github",
            "--workspace",
            "acme-team",
        ])
        .await?;
    assert_eq!(again.code, 2, "{again}");
    assert!(again.stderr.contains("already installed"), "{again}");

    // The gateway still answers for the workspace (the server without its secret
    // is reported unavailable, not called).
    reg.synced().await?;
    let answer = RawClient::new(reg.proxy.ws_url("acme-team"), Some(&token))
        .send_initialize()
        .await?;
    assert_eq!(answer.status, 200, "{}", answer.text());

    let audit = reg
        .acme
        .ok(&["workspace", "audit", "acme-team", "--action", "install"])
        .await?;
    let events = rows(&audit);
    assert_eq!(events.len(), 1, "{audit}");
    assert_eq!(events[0][3], "acme");
    assert!(events[0][4].starts_with("@gatehouse/github@"), "{audit}");
    Ok(())
}
