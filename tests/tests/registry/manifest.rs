//! A malformed `gatehouse.json` is refused with every problem named by its field, so
//! the author fixes them in one pass; nothing is published.

use serde_json::{json, Value};

use crate::fixture::{crm_manifest, run_in, Registry};

/// The problem lines (`  - PATH: message`) of a refused publish, as (path, message).
fn problems(stderr: &str) -> Vec<(String, String)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("  - "))
        .filter_map(|l| l.split_once(": "))
        .map(|(p, m)| (p.to_owned(), m.to_owned()))
        .collect()
}

fn paths(stderr: &str) -> Vec<String> {
    problems(stderr).into_iter().map(|(p, _)| p).collect()
}

fn valid() -> Value {
    crm_manifest("crm", "1.0.0", "http://127.0.0.1:9")
}

#[tokio::test]
async fn every_bad_field_of_a_manifest_is_named() -> anyhow::Result<()> {
    let reg = Registry::start().await?;

    // Bad name, bad version, unknown category: all three, in one answer.
    let mut bad = valid();
    bad["name"] = json!("CRM Tool");
    bad["version"] = json!("one");
    bad["category"] = json!("misc");
    let run = reg.publish(&reg.acme, "bad", &bad, &[]).await?;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stdout.is_empty(), "{run}");
    assert!(
        run.stderr
            .starts_with("error: invalid manifest (gatehouse.json):\n"),
        "{run}"
    );
    assert_eq!(paths(&run.stderr), ["name", "version", "category"], "{run}");
    let said = problems(&run.stderr);
    assert!(said[0].1.contains("\"CRM Tool\""), "{run}");
    assert!(
        said[1].1.contains("\"one\"") && said[1].1.contains("semantic version"),
        "{run}"
    );
    assert!(
        said[2].1.contains("\"misc\"") && said[2].1.contains("productivity"),
        "the allowed categories are listed: {run}"
    );

    // An unknown field, at the top and inside a tool.
    let mut unknown = valid();
    unknown["colour"] = json!("red");
    let run = reg.publish(&reg.acme, "unknown", &unknown, &[]).await?;
    assert_eq!(run.code, 2, "{run}");
    assert_eq!(paths(&run.stderr), ["colour"], "{run}");
    assert!(run.stderr.contains("unknown field `colour`"), "{run}");
    let mut nested = valid();
    nested["tools"][0]["request"]["retries"] = json!(3);
    let run = reg.publish(&reg.acme, "nested", &nested, &[]).await?;
    assert_eq!(paths(&run.stderr), ["tools[0].request.retries"], "{run}");

    // A field of the wrong type is named too.
    let mut typed = valid();
    typed["version"] = json!(1);
    let run = reg.publish(&reg.acme, "typed", &typed, &[]).await?;
    assert_eq!(paths(&run.stderr), ["version"], "{run}");

    // Skill-specific mistakes, each at its path.
    let mut skill = valid();
    skill["type"] = json!("skill");
    skill["tools"][0]["request"]["url"] = json!("http://{{args.id}}.example.com/x");
    skill["tools"][1]["request"]["headers"] =
        json!({"Authorization": "Bearer {{secrets.UNDECLARED}}"});
    skill["tools"][1]["request"]["body"] = json!({"q": "{{args.nope}}"});
    let run = reg.publish(&reg.acme, "skill", &skill, &[]).await?;
    assert_eq!(run.code, 2, "{run}");
    let paths = paths(&run.stderr);
    for expected in [
        "tools[0].request.url",
        "tools[1].request.body",
        "tools[1].request",
    ] {
        assert!(
            paths.iter().any(|p| p == expected),
            "{expected} not named: {run}"
        );
    }
    assert!(run.stderr.contains("UNDECLARED"), "{run}");

    // Not JSON at all: a local error naming the file, exit 1.
    let dir = reg.write_manifest_text("broken", "{\"name\": \"crm\",")?;
    let run = run_in(&reg.acme, &dir, &["skill", "publish"]).await?;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .starts_with("error: gatehouse.json is not valid JSON"),
        "{run}"
    );

    // None of it was published.
    assert!(
        reg.acme
            .ok(&["skill", "list"])
            .await?
            .starts_with("No packages."),
        "a refused manifest was published"
    );
    Ok(())
}

/// A manifest with a field error and an unknown field must name both: the author
/// should not have to publish once per mistake to discover the next one.
#[tokio::test]
async fn an_unknown_field_does_not_hide_the_other_errors() -> anyhow::Result<()> {
    let reg = Registry::start().await?;
    let mut bad = valid();
    bad["name"] = json!("CRM Tool");
    bad["version"] = json!("one");
    bad["category"] = json!("misc");
    bad["colour"] = json!("red");
    let run = reg.publish(&reg.acme, "bad", &bad, &[]).await?;
    assert_eq!(run.code, 2, "{run}");
    let mut named = paths(&run.stderr);
    named.sort();
    assert_eq!(named, ["category", "colour", "name", "version"], "{run}");
    Ok(())
}

/// Two owners may each have a package called `notes`: names are per namespace.
#[tokio::test]
async fn the_same_name_under_two_owners_is_two_packages() -> anyhow::Result<()> {
    let reg = Registry::start().await?;
    let manifest = crm_manifest("notes", "1.0.0", "http://127.0.0.1:9");
    let acme = reg.publish(&reg.acme, "acme-notes", &manifest, &[]).await?;
    assert_eq!(acme.success()?, "✓ Published @acme/notes@1.0.0 (public)\n");
    let mallory = reg
        .publish(&reg.mallory, "mallory-notes", &manifest, &[])
        .await?;
    assert_eq!(
        mallory.success()?,
        "✓ Published @mallory/notes@1.0.0 (public)\n"
    );
    let found = reg.alice.ok(&["skill", "search", "notes"]).await?;
    let packages: Vec<&str> = found
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(packages, ["@acme/notes", "@mallory/notes"], "{found}");
    // mallory cannot publish into acme's namespace by naming it.
    let mut spoof = manifest.clone();
    spoof["name"] = json!("@acme/notes");
    let run = reg.publish(&reg.mallory, "spoof", &spoof, &[]).await?;
    assert_eq!(run.code, 2, "{run}");
    assert!(run.stderr.contains("name"), "{run}");
    Ok(())
}
