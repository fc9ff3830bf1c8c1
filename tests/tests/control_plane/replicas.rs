//! Two control planes (`gatehouse serve`, two processes) on one PostgreSQL database:
//! they start together and bootstrap the store once, a slug both create at the same
//! moment goes to exactly one of them, and the config version they publish never
//! repeats or goes backwards across them.

use base64::Engine as _;
use gatehouse_tests::control_plane::{Cli, ControlPlane, HttpAnswer};
use gatehouse_tests::postgres::{self, Cluster};
use rand::RngCore;
use reqwest::Method;
use serde_json::{json, Value};

/// Two control planes on one new database, sharing a master key, started together.
async fn two_replicas() -> anyhow::Result<(ControlPlane, ControlPlane, String)> {
    let url = postgres::cluster()?.create_database()?;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let (a, b) = tokio::join!(
        ControlPlane::start_with(Some(url.clone()), Some(key.clone())),
        ControlPlane::start_with(Some(url.clone()), Some(key)),
    );
    Ok((a?, b?, url))
}

/// The admin's session, valid on both (the signing key is in the shared store).
async fn admin_session(a: &ControlPlane, b: &ControlPlane) -> anyhow::Result<String> {
    let credential = [a.admin_credential(), b.admin_credential()]
        .into_iter()
        .find(|c| !c.is_empty())
        .ok_or_else(|| anyhow::anyhow!("neither replica wrote admin.credential"))?
        .to_owned();
    let cli = Cli::new("replicas")?;
    cli.login(&a.api_url(), "admin", &credential).await?;
    cli.session_token()
}

async fn post(
    cp: &ControlPlane,
    token: &str,
    path: &str,
    body: Value,
) -> anyhow::Result<HttpAnswer> {
    cp.request(Method::POST, path, Some(token), Some(&body))
        .await
}

/// `n` token creations in workspace `eng` on `cp` at once.
async fn burst(
    cp: &ControlPlane,
    token: &str,
    label: &str,
    n: i64,
) -> Vec<anyhow::Result<HttpAnswer>> {
    let requests = (0..n).map(|i| {
        let body = json!({"name": format!("{label}-{i}")});
        post(cp, token, "/v1/workspaces/eng/tokens", body)
    });
    futures::future::join_all(requests).await
}

fn stored_version(url: &str) -> anyhow::Result<i64> {
    let cluster = postgres::cluster()?;
    Ok(cluster
        .psql(
            Cluster::database_of(url),
            "SELECT version FROM config_version WHERE id = 1",
        )?
        .parse()?)
}

#[tokio::test]
async fn replicas_starting_together_bootstrap_the_store_once() -> anyhow::Result<()> {
    let (a, b, url) = two_replicas().await?;
    let written: Vec<bool> = [&a, &b]
        .iter()
        .map(|cp| !cp.admin_credential().is_empty())
        .collect();
    assert_eq!(
        written.iter().filter(|w| **w).count(),
        1,
        "exactly one replica creates the admin: {written:?}"
    );
    let cluster = postgres::cluster()?;
    let db = Cluster::database_of(&url);
    assert_eq!(
        cluster.psql(db, "SELECT COUNT(*) FROM users WHERE username = 'admin'")?,
        "1"
    );
    // The login works on the other replica too.
    let token = admin_session(&a, &b).await?;
    for cp in [&a, &b] {
        let me = cp
            .request(Method::GET, "/v1/whoami", Some(&token), None)
            .await?;
        assert_eq!(me.status, 200, "whoami on {}: {}", cp.api_url(), me.body);
    }
    Ok(())
}

#[tokio::test]
async fn the_same_slug_created_on_two_replicas_at_once_goes_to_exactly_one() -> anyhow::Result<()> {
    let (a, b, url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    let before = stored_version(&url)?;
    let rounds = 8;
    for round in 0..rounds {
        let slug = format!("team-{round}");
        let body = json!({"name": slug});
        let (on_a, on_b) = tokio::join!(
            post(&a, &token, "/v1/workspaces", body.clone()),
            post(&b, &token, "/v1/workspaces", body.clone()),
        );
        let answers = [on_a?, on_b?];
        let statuses: Vec<u16> = answers.iter().map(|x| x.status).collect();
        let mut sorted = statuses.clone();
        sorted.sort();
        assert_eq!(sorted, [201, 409], "{slug}: {answers:?}");
        let lost = answers.iter().find(|x| x.status == 409).expect("one lost");
        let error = lost.json()?;
        assert_eq!(error["error"]["code"], "conflict", "{}", lost.body);
        assert_eq!(
            error["error"]["message"],
            format!("workspace {slug:?} already exists"),
            "{}",
            lost.body
        );
    }
    // Each win bumped the version once, whichever replica it was on: none was lost.
    assert_eq!(stored_version(&url)?, before + rounds);
    let listed = a
        .request(Method::GET, "/v1/workspaces", Some(&token), None)
        .await?
        .json()?;
    let slugs: Vec<&str> = listed["workspaces"]
        .as_array()
        .map(|all| all.iter().filter_map(|w| w["slug"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(slugs.len() as i64, rounds, "{listed}");
    Ok(())
}

#[tokio::test]
async fn the_config_version_increases_strictly_across_replicas() -> anyhow::Result<()> {
    let (a, b, url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    let created = post(&a, &token, "/v1/workspaces", json!({"name": "eng"})).await?;
    assert_eq!(created.status, 201, "{}", created.body);

    // One change at a time, alternating: each replica publishes a version above
    // every version published before, on either.
    let mut last = a.published_version().await?;
    for i in 0..6 {
        let cp = if i % 2 == 0 { &b } else { &a };
        let made = post(
            cp,
            &token,
            "/v1/workspaces/eng/tokens",
            json!({"name": format!("t{i}")}),
        )
        .await?;
        assert_eq!(made.status, 201, "{}", made.body);
        let now = cp.published_version().await?;
        assert!(
            now > last,
            "change {i} on {}: version {now} after {last}",
            cp.api_url()
        );
        last = now;
    }

    // Many at once on both: every change gets its own version.
    let before = stored_version(&url)?;
    let per_replica = 10;
    let (on_a, on_b) = tokio::join!(
        burst(&a, &token, "a", per_replica),
        burst(&b, &token, "b", per_replica)
    );
    for answer in on_a.into_iter().chain(on_b) {
        let answer = answer?;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    assert_eq!(stored_version(&url)?, before + 2 * per_replica);
    Ok(())
}
