//! The seeds' story: acme publishes a public, a team and a private skill; search shows
//! only the public one; alice joins acme's team, installs the team skill into the
//! shared workspace and calls it through the gateway, which makes exactly the HTTP
//! request the manifest describes; mallory, an outsider, is refused, and private
//! packages look like missing ones to everyone but acme. Installs and publishes show
//! up in the workspace's audit log.

use gatehouse_tests::http_target::{HttpTarget, TargetAnswer};
use serde_json::{json, Value};

use crate::fixture::{
    assert_refused, call, first_column, join_code, row, rows, skill_manifest, tool_names,
    tool_ok_text, Registry, ALICE_EMAIL,
};

/// What the CRM answers; the tool's response pointer selects `/data`.
fn crm_answer() -> Value {
    json!({"data": {"id": "ACME 42/x?y", "name": "Ada Lovelace", "tier": "gold"},
           "meta": {"request_id": "r-1"}})
}

/// acme publishes `public-tool` (public), `crm` (`--private team`, under a name given
/// with `--name`) and `secret-tool` (`--private`), all calling `target`.
async fn publish_three(reg: &Registry, target: &HttpTarget) -> anyhow::Result<()> {
    let public = skill_manifest(
        "public-tool",
        "1.0.0",
        vec![
            json!({"name": "ping", "input_schema": {"type": "object", "properties": {}},
                    "request": {"url": target.url("/public/ping")}}),
        ],
    );
    let out = reg
        .publish(&reg.acme, "public-tool", &public, &[])
        .await?
        .success()?;
    assert_eq!(out, "✓ Published @acme/public-tool@1.0.0 (public)\n");

    // The manifest says another name; `--name` decides, as in the seed.
    let crm = crate::fixture::crm_manifest("internal-crm-draft", "1.0.0", &target.url(""));
    let out = reg
        .publish(
            &reg.acme,
            "crm",
            &crm,
            &["--name", "crm", "--private", "team"],
        )
        .await?
        .success()?;
    assert_eq!(out, "✓ Published @acme/crm@1.0.0 (team)\n");

    let secret = skill_manifest(
        "secret-tool",
        "1.0.0",
        vec![
            json!({"name": "dig", "input_schema": {"type": "object", "properties": {}},
                    "request": {"url": target.url("/secret/dig")}}),
        ],
    );
    let out = reg
        .publish(&reg.acme, "secret-tool", &secret, &["--private"])
        .await?
        .success()?;
    assert_eq!(out, "✓ Published @acme/secret-tool@1.0.0 (private)\n");
    Ok(())
}

#[tokio::test]
async fn team_skills_reach_members_and_nobody_else() -> anyhow::Result<()> {
    let target = HttpTarget::answering(TargetAnswer {
        body: crm_answer(),
        ..TargetAnswer::default()
    })
    .await?;
    let reg = Registry::start().await?;
    publish_three(&reg, &target).await?;

    // Search shows the public package to anyone, never the team or private one.
    for who in [&reg.acme, &reg.alice, &reg.mallory] {
        let found = who.ok(&["skill", "search", "tool"]).await?;
        assert_eq!(first_column(&found), ["@acme/public-tool"], "{found}");
        let by_owner = who.json(&["skill", "search", "acme"]).await?;
        let listed: Vec<&str> = by_owner["packages"]
            .as_array()
            .map(|p| p.iter().filter_map(|p| p["package"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(listed, ["@acme/public-tool"], "{by_owner}");
        for text in ["crm", "secret", "internal"] {
            assert_eq!(
                who.ok(&["skill", "search", text]).await?,
                format!("No public packages match {text:?}.\n")
            );
        }
    }
    // acme's own list has all three, with their visibility.
    let mine = reg.acme.ok(&["skill", "list"]).await?;
    assert_eq!(
        first_column(&mine),
        ["@acme/crm", "@acme/public-tool", "@acme/secret-tool"],
        "{mine}"
    );
    for (package, visibility) in [
        ("@acme/crm", "team"),
        ("@acme/public-tool", "public"),
        ("@acme/secret-tool", "private"),
    ] {
        let line = row(&mine, package).unwrap_or_default();
        assert_eq!(
            line.get(1..4).map(<[String]>::to_vec),
            Some(vec!["1.0.0".into(), "skill".into(), visibility.into()]),
            "{mine}"
        );
    }
    // Outsiders' lists show none of acme's non-public packages.
    for who in [&reg.alice, &reg.mallory] {
        let list = who.ok(&["skill", "list"]).await?;
        assert!(!list.contains("@acme/crm"), "{list}");
        assert!(!list.contains("@acme/secret-tool"), "{list}");
    }

    // acme's shared workspace; alice is invited and joins.
    let team_token = reg.workspace(&reg.acme, "acme-team").await?;
    let invited = reg.acme.ok(&["team", "invite", ALICE_EMAIL]).await?;
    assert!(
        invited.starts_with("→ Invitation created for alice@acme.com.\n"),
        "{invited}"
    );
    let code = join_code(&invited)?;
    assert!(
        invited.contains(&format!("gatehouse team accept {code}")),
        "{invited}"
    );
    let pending = reg.acme.ok(&["team", "list"]).await?;
    assert!(pending.starts_with("Members of @acme:\n"), "{pending}");
    let alice_row = row(&pending, ALICE_EMAIL).unwrap_or_default();
    assert_eq!(
        alice_row.get(1..3),
        Some(&["pending".into(), "invited".into()][..]),
        "{pending}"
    );

    assert_eq!(
        reg.alice.ok(&["team", "accept", &code]).await?,
        "✓ Joined @acme\n"
    );
    let team = reg.acme.ok(&["team", "list"]).await?;
    let alice_row = row(&team, ALICE_EMAIL).unwrap_or_default();
    assert_eq!(
        alice_row.get(1..3),
        Some(&["active".into(), "joined".into()][..]),
        "{team}"
    );

    // alice now sees the team package, still not the private one.
    let list = reg.alice.ok(&["skill", "list"]).await?;
    assert_eq!(
        first_column(&list),
        ["@acme/crm", "@acme/public-tool"],
        "{list}"
    );
    assert_eq!(
        row(&list, "@acme/crm")
            .unwrap_or_default()
            .get(3)
            .map(String::as_str),
        Some("team")
    );

    let installed = reg
        .alice
        .ok(&["skill", "install", "@acme/crm", "--workspace", "acme-team"])
        .await?;
    assert_eq!(
        installed,
        "✓ Installed (team membership verified)\n\
         Set its secrets: gatehouse secrets set crm CRM_TOKEN VALUE --workspace acme-team  # CRM API token\n"
    );
    reg.acme
        .ok(&[
            "secrets",
            "set",
            "crm",
            "CRM_TOKEN",
            "crm-s3cret-42",
            "--workspace",
            "acme-team",
        ])
        .await?;

    // A client with acme-team's token sees the skill's tools and calls them.
    let client = reg.client("acme-team", &team_token).await?;
    let mut names = tool_names(&client).await?;
    names.sort();
    assert_eq!(names, ["crm__add_note", "crm__lookup_customer"]);

    let result = call(
        &client,
        "crm__lookup_customer",
        json!({"id": "ACME 42/x?y"}),
    )
    .await?;
    let text = tool_ok_text("crm__lookup_customer", &result);
    assert_eq!(
        serde_json::from_str::<Value>(&text)?,
        crm_answer()["data"],
        "the result is the answer's /data"
    );
    let seen = target.requests();
    assert_eq!(seen.len(), 1, "one call, one request: {seen:?}");
    let request = &seen[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, "/api/customers/ACME%2042%2Fx%3Fy");
    assert_eq!(request.query.as_deref(), Some("expand=orders"));
    let authorizations: Vec<_> = request.headers.get_all("authorization").iter().collect();
    assert_eq!(authorizations, ["Bearer crm-s3cret-42"], "{request:?}");
    assert_eq!(
        request.header("x-crm-client"),
        Some("gatehouse ACME 42/x?y")
    );
    let all_headers = format!("{:?}", request.headers);
    assert!(
        !all_headers.contains(&team_token),
        "the client's workspace token reached the skill's target: {all_headers}"
    );
    assert!(request.body.is_empty(), "a GET with a body: {request:?}");

    target.clear();
    target.set_answer(TargetAnswer {
        status: 201,
        body: json!({"note": "n-9", "saved": true}),
        ..TargetAnswer::default()
    });
    let result = call(
        &client,
        "crm__add_note",
        json!({"id": "c-7", "text": "called \"back\"", "priority": 2}),
    )
    .await?;
    let text = tool_ok_text("crm__add_note", &result);
    assert_eq!(
        serde_json::from_str::<Value>(&text)?,
        json!({"note": "n-9", "saved": true})
    );
    let seen = target.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/api/customers/c-7/notes");
    assert_eq!(
        seen[0].header("authorization"),
        Some("Bearer crm-s3cret-42")
    );
    assert!(
        seen[0]
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json")),
        "{:?}",
        seen[0]
    );
    assert_eq!(
        seen[0].json(),
        Some(json!({"text": "called \"back\"", "priority": 2, "source": "gatehouse for c-7"}))
    );
    client.cancel().await?;

    // mallory, no member of @acme, installs into her own (active) workspace.
    reg.workspace(&reg.mallory, "mallory-ws").await?;
    let refused = reg.mallory.run(&["skill", "install", "@acme/crm"]).await?;
    assert_refused(&refused, 2, "✗ 403: You are not a member of @acme\n");
    // A private package answers exactly like one that does not exist.
    let secret = reg
        .mallory
        .run(&["skill", "install", "@acme/secret-tool"])
        .await?;
    let missing = reg.mallory.run(&["skill", "install", "@acme/nope"]).await?;
    assert_refused(&missing, 2, "✗ 404: package @acme/nope not found\n");
    assert_same_answer(&secret, "secret-tool", &missing, "nope");
    for package in ["@acme/secret-tool", "@acme/crm"] {
        let versions = reg.mallory.run(&["skill", "versions", package]).await?;
        let missing = reg
            .mallory
            .run(&["skill", "versions", "@acme/nope"])
            .await?;
        assert_eq!(missing.code, 2, "{missing}");
        assert!(missing.stderr.contains("@acme/nope"), "{missing}");
        let name = package.trim_start_matches("@acme/");
        assert_same_answer(&versions, name, &missing, "nope");
    }
    let servers = reg
        .mallory
        .ok(&["mcp", "list", "--workspace", "mallory-ws"])
        .await?;
    assert!(
        servers.starts_with("No MCP servers in mallory-ws."),
        "{servers}"
    );

    // alice is in the team, but a private package is acme's alone.
    let secret = reg
        .alice
        .run(&[
            "skill",
            "install",
            "@acme/secret-tool",
            "--workspace",
            "acme-team",
        ])
        .await?;
    let missing = reg
        .alice
        .run(&["skill", "install", "@acme/nope", "--workspace", "acme-team"])
        .await?;
    assert_refused(&missing, 2, "✗ 404: package @acme/nope not found\n");
    assert_same_answer(&secret, "secret-tool", &missing, "nope");
    let versions = reg
        .alice
        .run(&["skill", "versions", "@acme/secret-tool"])
        .await?;
    let missing = reg.alice.run(&["skill", "versions", "@acme/nope"]).await?;
    assert_same_answer(&versions, "secret-tool", &missing, "nope");

    // The shared workspace's audit log: who installed what, and acme's publishes.
    let audit = reg.acme.ok(&["workspace", "audit", "acme-team"]).await?;
    let header: Vec<&str> = audit
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["DATE", "USER", "SKILL", "ACTION"], "{audit}");
    // DATE is "YYYY-MM-DD HH:MM UTC": three words before USER.
    let events: Vec<(String, String, String)> = rows(&audit)
        .into_iter()
        .filter(|r| r.len() == 6)
        .map(|r| (r[3].clone(), r[4].clone(), r[5].clone()))
        .collect();
    let has = |user: &str, skill: &str, action: &str| {
        events
            .iter()
            .any(|e| e.0 == user && e.1 == skill && e.2 == action)
    };
    assert!(has("alice", "@acme/crm@1.0.0", "install"), "{audit}");
    for package in ["@acme/public-tool@1.0.0", "@acme/crm@1.0.0"] {
        assert!(has("acme", package, "publish"), "{audit}");
    }
    let installs = reg
        .acme
        .ok(&["workspace", "audit", "acme-team", "--action", "install"])
        .await?;
    let installs: Vec<Vec<String>> = rows(&installs);
    assert_eq!(installs.len(), 1, "{installs:?}");
    assert_eq!(installs[0][3..], ["alice", "@acme/crm@1.0.0", "install"]);
    Ok(())
}

/// Two refusals that must be indistinguishable once the package name is masked.
fn assert_same_answer(
    hidden: &gatehouse_tests::control_plane::CliRun,
    hidden_name: &str,
    missing: &gatehouse_tests::control_plane::CliRun,
    missing_name: &str,
) {
    assert_eq!(hidden.code, missing.code, "{hidden}\n{missing}");
    assert_eq!(
        hidden.stderr.replace(hidden_name, "NAME"),
        missing.stderr.replace(missing_name, "NAME"),
        "a hidden package answers differently from a missing one:\n{hidden}\n{missing}"
    );
    assert_eq!(hidden.stdout, missing.stdout);
}

/// A private package is acme's alone: a team member reading the shared workspace's
/// audit log must not learn its name, any more than `skill install` tells them.
#[tokio::test]
async fn a_private_package_leaves_no_trace_for_team_members() -> anyhow::Result<()> {
    let target = HttpTarget::start().await?;
    let reg = Registry::start().await?;
    publish_three(&reg, &target).await?;
    reg.workspace(&reg.acme, "acme-team").await?;
    reg.alice_joins_acme().await?;

    // acme sees their own publishes, the private one included.
    let owner_view = reg.acme.ok(&["workspace", "audit", "acme-team"]).await?;
    assert!(
        owner_view.contains("@acme/secret-tool@1.0.0"),
        "{owner_view}"
    );

    // alice can read the shared workspace's log (she is in the team)…
    let member_view = reg.alice.ok(&["workspace", "audit", "acme-team"]).await?;
    assert!(member_view.contains("@acme/crm@1.0.0"), "{member_view}");
    // …but the private package is invisible to her everywhere else, so here too.
    let hidden = reg
        .alice
        .run(&["skill", "versions", "@acme/secret-tool"])
        .await?;
    assert_eq!(hidden.code, 2, "{hidden}");
    assert!(
        !member_view.contains("secret-tool"),
        "a team member learns of acme's private package from the audit log:\n{member_view}"
    );
    let as_json = reg.alice.json(&["workspace", "audit", "acme-team"]).await?;
    assert!(!as_json.to_string().contains("secret-tool"), "{as_json}");
    Ok(())
}
