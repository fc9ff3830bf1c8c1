//! Versions only go up: re-publishing a version, or publishing a lower one, is
//! refused with the version named; `skill versions` lists newest first in semver
//! order (1.10.0 above 1.9.x); an older version can still be installed on purpose,
//! and what the gateway runs is that version's definition. Installing twice under
//! one slug is a name collision the CLI explains.

use gatehouse_tests::http_target::{HttpTarget, TargetAnswer};
use serde_json::json;

use crate::fixture::{
    assert_fails, assert_refused, call, crm_manifest, rows, tool_names, tool_ok_text, Registry,
};

/// The CRM skill whose URLs carry the version, so the target tells which one ran.
fn crm_at(version: &str, target: &HttpTarget) -> serde_json::Value {
    crm_manifest("crm", version, &target.url(&format!("/v{version}")))
}

#[tokio::test]
async fn versions_must_increase_and_old_ones_stay_installable() -> anyhow::Result<()> {
    let target = HttpTarget::answering(TargetAnswer {
        body: json!({"data": {"id": "c1"}}),
        ..TargetAnswer::default()
    })
    .await?;
    let reg = Registry::start().await?;
    let publish = |version: &'static str| {
        let manifest = crm_at(version, &target);
        let reg = &reg;
        async move {
            reg.publish(&reg.acme, "crm", &manifest, &["--private", "team"])
                .await
        }
    };
    assert_eq!(
        publish("1.0.0").await?.success()?,
        "✓ Published @acme/crm@1.0.0 (team)\n"
    );

    // Re-publishing 1.0.0 is refused, with the version named.
    let again = publish("1.0.0").await?;
    assert_fails(&again, 2, "@acme/crm 1.0.0");
    assert!(again.stderr.starts_with("error: "), "{again}");
    assert!(again.stderr.contains("versions must increase"), "{again}");
    let lower = publish("0.9.0").await?;
    assert_fails(&lower, 2, "@acme/crm 0.9.0");
    assert!(
        lower.stderr.contains("1.0.0"),
        "says what it must beat: {lower}"
    );

    assert_eq!(
        publish("1.1.0").await?.success()?,
        "✓ Published @acme/crm@1.1.0 (team)\n"
    );
    let listed = reg.acme.ok(&["skill", "versions", "@acme/crm"]).await?;
    assert!(listed.starts_with("VERSION  PUBLISHED\n"), "{listed}");
    let order: Vec<String> = rows(&listed).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(order, ["1.1.0", "1.0.0"], "{listed}");

    // Semver, not text: 1.10.0 is above 1.9.0 and 1.1.0.
    publish("1.10.0").await?.success()?;
    let below = publish("1.9.0").await?;
    assert_fails(&below, 2, "@acme/crm 1.9.0");
    let listed = reg.acme.ok(&["skill", "versions", "@acme/crm"]).await?;
    let order: Vec<String> = rows(&listed).into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(order, ["1.10.0", "1.1.0", "1.0.0"], "{listed}");
    // The failed publishes are not versions.
    assert!(
        !listed.contains("0.9.0") && !listed.contains("1.9.0"),
        "{listed}"
    );

    // The old version on purpose, the latest by default, under another slug.
    let token = reg.workspace(&reg.acme, "acme-team").await?;
    let old = reg
        .acme
        .ok(&[
            "skill",
            "install",
            "@acme/crm",
            "--version",
            "1.0.0",
            "--workspace",
            "acme-team",
        ])
        .await?;
    assert!(
        old.starts_with("✓ Installed @acme/crm@1.0.0 as crm in acme-team\n"),
        "{old}"
    );
    // Same slug again: a collision, and the way out is named.
    let collision = reg
        .acme
        .run(&["skill", "install", "@acme/crm", "--workspace", "acme-team"])
        .await?;
    assert_fails(
        &collision,
        2,
        "\"crm\" is already installed in \"acme-team\"",
    );
    assert!(collision.stderr.contains("--name"), "{collision}");
    let latest = reg
        .acme
        .ok(&[
            "skill",
            "install",
            "@acme/crm",
            "--name",
            "crm-new",
            "--workspace",
            "acme-team",
        ])
        .await?;
    assert!(
        latest.starts_with("✓ Installed @acme/crm@1.10.0 as crm-new in acme-team\n"),
        "{latest}"
    );
    let nonexistent = reg
        .acme
        .run(&[
            "skill",
            "install",
            "@acme/crm",
            "--version",
            "2.0.0",
            "--name",
            "crm-two",
            "--workspace",
            "acme-team",
        ])
        .await?;
    assert_refused(&nonexistent, 2, "✗ 404: @acme/crm has no version 2.0.0\n");

    // Each install runs its own version's definition.
    for slug in ["crm", "crm-new"] {
        reg.acme
            .ok(&[
                "secrets",
                "set",
                slug,
                "CRM_TOKEN",
                "t",
                "--workspace",
                "acme-team",
            ])
            .await?;
    }
    let client = reg.client("acme-team", &token).await?;
    let names = tool_names(&client).await?;
    for tool in ["crm__lookup_customer", "crm-new__lookup_customer"] {
        assert!(
            names.iter().any(|n| n == tool),
            "{tool} missing from {names:?}"
        );
    }
    for tool in ["crm__lookup_customer", "crm-new__lookup_customer"] {
        let result = call(&client, tool, json!({"id": "c1"})).await?;
        tool_ok_text(tool, &result);
    }
    let paths: Vec<String> = target.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        ["/v1.0.0/api/customers/c1", "/v1.10.0/api/customers/c1"]
    );
    client.cancel().await?;
    Ok(())
}
