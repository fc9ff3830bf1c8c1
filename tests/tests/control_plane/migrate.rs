//! `gatehouse migrate`: a store that grew up on SQLite moves to PostgreSQL, and a
//! control plane on the copy serves what the old one did — the same workspaces,
//! tokens, secrets and audit trail, the same config version — to a proxy and an MCP
//! client that never heard of the move.

use gatehouse_tests::control_plane::{Cli, ControlPlane, GatewayProxy, StoreBackend};
use gatehouse_tests::postgres;
use gatehouse_tests::{connect, TempDir, Upstream, UpstreamTool};
use serde_json::json;

use crate::fixture::{assert_fails, call_echo, token_in};

/// What users see of a store, read through the CLI.
async fn listings(cli: &Cli) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut seen = Vec::new();
    for args in [
        &["workspace", "list"][..],
        &["workspace", "token", "list", "engineering"],
        &["mcp", "list", "--workspace", "engineering"],
        &["secrets", "list", "--workspace", "engineering"],
        &["workspace", "audit", "engineering"],
        &["skill", "list"],
    ] {
        seen.push(cli.json(args).await?);
    }
    Ok(seen)
}

#[tokio::test]
async fn a_sqlite_store_moves_to_postgres_and_keeps_serving() -> anyhow::Result<()> {
    let github = Upstream::start("github", [UpstreamTool::new("create_issue")]).await?;
    let mut old = ControlPlane::start_on(StoreBackend::Sqlite).await?;
    let admin = Cli::admin_of(&old).await?;
    let token = token_in(&admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    admin
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
            "--call-timeout-ms",
            "60000",
        ])
        .await?;
    admin
        .ok(&[
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            "ghp_moved",
            "--workspace",
            "engineering",
        ])
        .await?;
    let before = listings(&admin).await?;
    assert_eq!(
        before[2]["servers"][0]["limits"],
        json!({"call_timeout_ms": 60000}),
        "{:?}",
        before[2]
    );
    let version = old.published_version().await?;
    assert!(
        version > 1,
        "the changes above bumped the version: {version}"
    );
    old.kill();

    let url = postgres::cluster()?.create_database()?;
    let data = old.data_dir().display().to_string();
    let moved = admin
        .ok(&["migrate", "--from", &data, "--to", &url])
        .await?;
    assert!(moved.starts_with("Copied "), "{moved}");
    assert!(moved.contains("workspaces 1"), "{moved}");
    assert!(moved.contains("secrets 1"), "{moved}");

    // A second copy into the same database is refused: it is not empty any more.
    let again = admin
        .run(&["migrate", "--from", &data, "--to", &url])
        .await?;
    assert_fails(&again, 1, "the target store is not empty");

    // A control plane on the copy, with the old master key, and a proxy on it.
    let key = std::fs::read_to_string(old.data_dir().join("master.key"))?;
    let new = ControlPlane::start_with(Some(url), Some(key.trim().to_owned())).await?;
    assert_eq!(new.admin_credential(), "", "the copy has its admin already");
    let cli = Cli::new("moved")?;
    cli.login(&new.api_url(), "admin", old.admin_credential())
        .await?;
    assert_eq!(listings(&cli).await?, before);
    assert_eq!(new.published_version().await?, version);

    let state = TempDir::new("moved-state")?;
    let proxy = GatewayProxy::start_named(
        &new.api_url(),
        new.proxy_token(),
        state.path(),
        new.gateway_ports(),
        "moved",
    )
    .await?;
    let client = connect(&proxy.ws_url("engineering"), &token).await?;
    call_echo(&client, "github__create_issue", json!({"title": "moved"})).await?;
    let last = github
        .requests()
        .pop()
        .expect("the call reached the upstream");
    assert_eq!(last.header("authorization"), Some("Bearer ghp_moved"));
    Ok(())
}

#[tokio::test]
async fn migrate_names_what_is_wrong_with_its_arguments() -> anyhow::Result<()> {
    let cli = Cli::new("migrate")?;
    let empty = TempDir::new("no-store")?;
    let dir = empty.path().display().to_string();
    let url = postgres::cluster()?.create_database()?;
    let run = cli.run(&["migrate", "--from", &dir, "--to", &url]).await?;
    assert_fails(&run, 1, &format!("no SQLite store at {dir}"));

    let old = ControlPlane::start_on(StoreBackend::Sqlite).await?;
    let data = old.data_dir().display().to_string();
    let run = cli
        .run(&["migrate", "--from", &data, "--to", "sqlite:///tmp/x.db"])
        .await?;
    assert_fails(&run, 1, "--to must be a PostgreSQL URL");

    // An unreachable server: named by host and port, its password never shown.
    let closed = gatehouse_tests::control_plane::free_addr()?;
    let to = format!("postgres://gatehouse:s3cret-pw@{closed}/gatehouse");
    let run = cli.run(&["migrate", "--from", &data, "--to", &to]).await?;
    assert_fails(
        &run,
        1,
        &format!("cannot connect to the PostgreSQL database at {closed}/gatehouse"),
    );
    assert!(!run.stderr.contains("s3cret-pw"), "{run}");
    Ok(())
}
