//! Secret values and workspace tokens go in and never come back out: not from the
//! API, not in CLI output, not in the store's files, not in the log.

use gatehouse_tests::config::random_base62;
use gatehouse_tests::control_plane::Cli;
use reqwest::Method;

use crate::fixture::{bytes_of, contains, files_under, token_in};

#[tokio::test]
async fn secret_values_never_leave_the_control_plane() -> anyhow::Result<()> {
    let cp = crate::fixture::control_plane().await?;
    let admin = Cli::admin_of(&cp).await?;
    let token = token_in(&admin.ok(&["workspace", "create", "Engineering"]).await?)?;
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
    let value = format!("ghp_{}", random_base62(36));
    let set = admin
        .ok(&[
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            &value,
            "--workspace",
            "engineering",
        ])
        .await?;
    assert!(!set.contains(&value), "{set}");

    // The API shows the secret's name, never its value.
    let jwt = admin.session_token()?;
    let servers = cp
        .request(
            Method::GET,
            "/v1/workspaces/engineering/servers",
            Some(&jwt),
            None,
        )
        .await?;
    assert_eq!(servers.status, 200, "{}", servers.body);
    let listed = servers.json()?;
    assert_eq!(
        listed["servers"][0]["secrets"],
        serde_json::json!(["GITHUB_TOKEN"])
    );
    assert_eq!(
        listed["servers"][0]["headers"]["Authorization"],
        "Bearer {{secrets.GITHUB_TOKEN}}"
    );
    let secrets = cp
        .request(
            Method::GET,
            "/v1/workspaces/engineering/secrets",
            Some(&jwt),
            None,
        )
        .await?;
    assert_eq!(secrets.status, 200, "{}", secrets.body);
    assert_eq!(secrets.json()?["secrets"][0]["name"], "GITHUB_TOKEN");
    let mut seen = vec![servers.body, secrets.body];
    for path in [
        "/v1/workspaces",
        "/v1/workspaces/engineering",
        "/v1/workspaces/engineering/tokens",
        "/v1/workspaces/engineering/audit",
    ] {
        let answer = cp.request(Method::GET, path, Some(&jwt), None).await?;
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        seen.push(answer.body);
    }
    for args in [
        &["mcp", "list", "--workspace", "engineering"][..],
        &["secrets", "list", "--workspace", "engineering"],
        &["workspace", "audit", "engineering"],
        &["workspace", "token", "list", "engineering"],
    ] {
        seen.push(admin.ok(args).await?);
        seen.push(admin.json(args).await?.to_string());
    }
    for text in &seen {
        assert!(!text.contains(&value), "the secret value came back: {text}");
        assert!(
            !text.contains(&token),
            "the workspace token came back: {text}"
        );
    }

    // The store's files hold the secret sealed and the token as SHA-256 only.
    let mut files = Vec::new();
    for dir in cp.store_dirs()? {
        files.extend(files_under(&dir)?);
    }
    if cp.database().is_none() {
        assert!(
            files.iter().any(|f| f.ends_with("gatehouse.db")),
            "no gatehouse.db in {}: {files:?}",
            cp.data_dir().display()
        );
    }
    let holding = |needle: &str| -> anyhow::Result<Vec<std::path::PathBuf>> {
        let mut found = Vec::new();
        for file in &files {
            if contains(&bytes_of(file)?, needle.as_bytes()) {
                found.push(file.clone());
            }
        }
        Ok(found)
    };
    assert!(
        !holding("GITHUB_TOKEN")?.is_empty(),
        "the secret's name is in none of {files:?}: the scan reads the wrong files"
    );
    for needle in [
        value.as_str(),
        &value["ghp_".len()..],
        &token,
        &token["mwt_".len()..],
    ] {
        assert_eq!(
            holding(needle)?,
            Vec::<std::path::PathBuf>::new(),
            "files of the store holding {needle:?} in plaintext"
        );
    }
    let log = cp.log();
    assert!(!log.contains(&value), "the control plane logged the secret");
    assert!(!log.contains(&token), "the control plane logged a token");
    Ok(())
}
