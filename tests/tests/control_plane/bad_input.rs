//! Bad input: each refused with a message that says what to do, and an exit code a
//! script can branch on (1 usage or declined, 2 API error, 3 unreachable, 4 log in).

use gatehouse_tests::control_plane::{free_addr, Cli, ControlPlane, GatewayProxy};
use gatehouse_tests::{RawClient, TempDir};
use reqwest::Method;
use serde_json::json;

use crate::fixture::{assert_fails, token_in, until_initialize_answers};

/// The control plane and the admin's CLI, logged in, with workspace `engineering`
/// and its server `github` (whose header needs `GITHUB_TOKEN`).
async fn with_engineering() -> anyhow::Result<(ControlPlane, Cli, String)> {
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
    Ok((cp, admin, token))
}

#[tokio::test]
async fn duplicate_workspace_is_a_conflict_naming_the_slug() -> anyhow::Result<()> {
    let (cp, admin, _) = with_engineering().await?;
    let again = admin.run(&["workspace", "create", "Engineering"]).await?;
    assert_fails(&again, 2, "\"engineering\"");
    assert!(again.stderr.contains("already exists"), "{again}");
    // Another name, the same slug.
    let same_slug = admin
        .run(&["workspace", "create", "Eng Team", "--slug", "engineering"])
        .await?;
    assert_fails(&same_slug, 2, "workspace \"engineering\" already exists");

    let jwt = admin.session_token()?;
    let answer = cp
        .request(
            Method::POST,
            "/v1/workspaces",
            Some(&jwt),
            Some(&json!({"name": "ENGINEERING"})),
        )
        .await?;
    assert_eq!(answer.status, 409, "{}", answer.body);
    let body = answer.json()?;
    assert_eq!(body["error"]["code"], "conflict", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("\"engineering\"")),
        "{body}"
    );
    let list = admin.json(&["workspace", "list"]).await?;
    assert_eq!(
        list["workspaces"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_workspace_slugs_are_refused_with_the_rule() -> anyhow::Result<()> {
    let (cp, admin, _) = with_engineering().await?;
    // Refused by the CLI before anything is sent, with a suggestion.
    let bad = admin
        .run(&["workspace", "create", "Eng", "--slug", "Eng_Team"])
        .await?;
    assert_fails(&bad, 1, "invalid slug \"Eng_Team\"");
    assert!(bad.stderr.contains("did you mean \"eng-team\"?"), "{bad}");
    // A name no slug can be derived from: the control plane says to pass --slug.
    let nameless = admin.run(&["workspace", "create", "!!!"]).await?;
    assert_fails(&nameless, 2, "--slug");
    assert!(nameless.stderr.contains("must match"), "{nameless}");
    let empty = admin.run(&["workspace", "create", "  "]).await?;
    assert_fails(&empty, 1, "workspace name must not be empty");

    let jwt = admin.session_token()?;
    for slug in ["Bad_Slug", "-leading", "a/b", &"x".repeat(33)] {
        let answer = cp
            .request(
                Method::POST,
                "/v1/workspaces",
                Some(&jwt),
                Some(&json!({"name": "Bad", "slug": slug})),
            )
            .await?;
        assert_eq!(answer.status, 400, "slug {slug:?}: {}", answer.body);
        assert!(answer.body.contains("must match"), "{}", answer.body);
    }
    let list = admin.json(&["workspace", "list"]).await?;
    assert_eq!(
        list["workspaces"].as_array().map(Vec::len),
        Some(1),
        "{list}"
    );
    Ok(())
}

#[tokio::test]
async fn empty_secret_values_are_refused() -> anyhow::Result<()> {
    let (cp, admin, _) = with_engineering().await?;
    let set = |value: &'static str| {
        [
            "secrets",
            "set",
            "github",
            "GITHUB_TOKEN",
            value,
            "--workspace",
            "engineering",
        ]
    };
    let empty = admin.run(&set("")).await?;
    assert_fails(&empty, 1, "secret GITHUB_TOKEN must not be empty");
    // Piped in (no terminal): an empty first line is no value either.
    let piped = admin
        .run_with_stdin(
            &[
                "secrets",
                "set",
                "github",
                "GITHUB_TOKEN",
                "--workspace",
                "engineering",
            ],
            Some("\n"),
        )
        .await?;
    assert_fails(&piped, 1, "must not be empty");

    let jwt = admin.session_token()?;
    let answer = cp
        .request(
            Method::PUT,
            "/v1/workspaces/engineering/servers/github/secrets/GITHUB_TOKEN",
            Some(&jwt),
            Some(&json!({"value": ""})),
        )
        .await?;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert!(answer.body.contains("must not be empty"), "{}", answer.body);
    assert_eq!(
        admin
            .json(&["secrets", "list", "--workspace", "engineering"])
            .await?,
        json!({"secrets": []})
    );
    Ok(())
}

#[tokio::test]
async fn declined_workspace_delete_changes_nothing() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Client Acme"]).await?)?;
    d.synced().await?;
    let before = d.admin.json(&["workspace", "list"]).await?;
    let url = d.proxy.ws_url("client-acme");

    // Without a terminal and without --yes the CLI refuses to guess.
    let piped = d
        .admin
        .run_with_stdin(&["workspace", "delete", "client-acme"], Some("y\n"))
        .await?;
    assert_fails(
        &piped,
        1,
        "refusing to delete workspace client-acme without confirmation: stdin is not a terminal; pass --yes",
    );

    // At the prompt, anything but yes declines.
    for answer in ["n\n", "\n", "nope\n"] {
        let declined = d
            .admin
            .run_in_terminal(&["workspace", "delete", "client-acme"], answer)
            .await?;
        assert_eq!(declined.code, 1, "{declined}");
        assert!(
            declined
                .stdout
                .contains("This will revoke 1 token.\r\nConfirm? [y/N] "),
            "{declined}"
        );
        assert!(declined.stdout.contains("Aborted."), "{declined}");
    }
    assert_eq!(d.admin.json(&["workspace", "list"]).await?, before);
    d.synced().await?;
    let client = RawClient::new(&url, Some(&token));
    assert_eq!(client.send_initialize().await?.status, 200);

    // And yes at the prompt deletes it.
    let confirmed = d
        .admin
        .run_in_terminal(&["workspace", "delete", "client-acme"], "y\n")
        .await?;
    assert_eq!(confirmed.code, 0, "{confirmed}");
    assert!(
        confirmed.stdout.contains("Workspace deleted."),
        "{confirmed}"
    );
    until_initialize_answers(&url, &token, 401, std::time::Duration::from_secs(5)).await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_cli_credential_asks_to_log_in() -> anyhow::Result<()> {
    let (_cp, admin, _) = with_engineering().await?;
    let path = admin.config_path().to_owned();
    let original = std::fs::read_to_string(&path)?;
    let jwt = admin.session_token()?;

    // Garbage, and a real credential with a forged signature.
    let (head, _) = jwt
        .rsplit_once('.')
        .ok_or_else(|| anyhow::anyhow!("not a JWT: {jwt}"))?;
    let forged = format!("{head}.{}", "A".repeat(43));
    for bad in ["garbage", forged.as_str()] {
        std::fs::write(&path, original.replace(&jwt, bad))?;
        let run = admin.run(&["workspace", "list"]).await?;
        assert_fails(&run, 4, "gatehouse login");
    }

    // No credential at all.
    std::fs::write(&path, original.replace(&jwt, ""))?;
    let run = admin.run(&["workspace", "list"]).await?;
    assert_fails(&run, 4, "not logged in: run `gatehouse login`");

    // Logging in again repairs it.
    std::fs::write(&path, &original)?;
    admin.ok(&["workspace", "list"]).await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_control_plane_is_named() -> anyhow::Result<()> {
    let closed = format!("http://{}", free_addr()?);
    let cli = Cli::new("nowhere")?;
    let run = cli
        .run(&[
            "login",
            "--api",
            &closed,
            "--username",
            "admin",
            "--credential",
            "x",
        ])
        .await?;
    assert_fails(
        &run,
        3,
        &format!("cannot reach the control plane at {closed}"),
    );

    // Logged in elsewhere, `--api` at a closed port: the stored credential is not
    // sent there, and the message names that URL.
    let (cp, admin, _) = with_engineering().await?;
    let run = admin.run(&["--api", &closed, "workspace", "list"]).await?;
    assert_fails(
        &run,
        4,
        &format!("not logged in to {closed} (the stored login is for {}): run `gatehouse login --api {closed}`", cp.api_url()),
    );
    Ok(())
}

#[tokio::test]
async fn a_wrong_proxy_token_gets_no_config() -> anyhow::Result<()> {
    let (cp, admin, token) = with_engineering().await?;
    for bearer in [
        None,
        Some("wrong"),
        Some(&format!("{}x", cp.proxy_token())[..]),
    ] {
        let status = cp
            .status_of("/v1/proxy/watch?id=px_intruder", bearer)
            .await?;
        assert_eq!(status, 401, "watch with {bearer:?}");
        let status = cp
            .request(
                Method::POST,
                "/v1/proxy/status",
                bearer,
                Some(&json!({"id": "px_intruder", "version": 1})),
            )
            .await?
            .status;
        assert_eq!(status, 401, "status with {bearer:?}");
    }
    // The right token is let in (so the 401s above are about the token).
    assert_eq!(
        cp.status_of("/v1/proxy/watch?id=px_probe", Some(cp.proxy_token()))
            .await?,
        200
    );

    // A proxy started with a wrong token runs, but serves nothing.
    let state = TempDir::new("gw-state")?;
    let proxy = GatewayProxy::start_named(
        &cp.api_url(),
        "gpx_wrong",
        state.path(),
        cp.gateway_ports(),
        "intruder",
    )
    .await?;
    assert_eq!(proxy.config_version().await?, 0);
    let refused = RawClient::new(proxy.ws_url("engineering"), Some(&token))
        .send_initialize()
        .await?;
    assert_eq!(refused.status, 401, "{}", refused.text());
    let proxies = admin.json(&["proxies"]).await?;
    assert!(
        !proxies.to_string().contains("intruder"),
        "a proxy with a wrong token is listed: {proxies}"
    );
    Ok(())
}

#[tokio::test]
async fn a_server_is_changed_in_place_and_bad_changes_say_why() -> anyhow::Result<()> {
    let (cp, admin, _) = with_engineering().await?;
    let jwt = admin.session_token()?;
    let path = "/v1/workspaces/engineering/servers/github";
    let patch = |body: serde_json::Value| {
        let (cp, jwt) = (&cp, jwt.clone());
        async move {
            cp.request(Method::PATCH, path, Some(&jwt), Some(&body))
                .await
        }
    };

    let nothing = patch(json!({})).await?;
    assert_eq!(nothing.status, 400, "{}", nothing.body);
    assert!(
        nothing.body.contains("nothing to change"),
        "{}",
        nothing.body
    );
    let bad_glob = patch(json!({"policy": {"allow": ["[oops"]}})).await?;
    assert_eq!(bad_glob.status, 400, "{}", bad_glob.body);
    assert!(bad_glob.body.contains("policy"), "{}", bad_glob.body);
    let not_bool = patch(json!({"enabled": "no"})).await?;
    assert_eq!(not_bool.status, 400, "{}", not_bool.body);

    let disabled = patch(json!({"enabled": false})).await?;
    assert_eq!(disabled.status, 200, "{}", disabled.body);
    assert_eq!(disabled.json()?["server"]["enabled"], false);
    let policy = json!({"allow": ["search_*"], "deny": [], "read_only": true});
    let changed = patch(json!({"policy": policy})).await?;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let server = &changed.json()?["server"];
    assert_eq!(server["policy"], policy);
    assert_eq!(server["enabled"], false);
    assert_eq!(server["secrets"], json!([]));
    let audit = admin
        .ok(&["workspace", "audit", "engineering", "--action", "disable"])
        .await?;
    assert!(audit.contains("github"), "{audit}");

    // Not a server of the workspace: 404, as for every other server call.
    let missing = cp
        .request(
            Method::PATCH,
            "/v1/workspaces/engineering/servers/nope",
            Some(&jwt),
            Some(&json!({"enabled": true})),
        )
        .await?;
    assert_eq!(missing.status, 404, "{}", missing.body);
    Ok(())
}
