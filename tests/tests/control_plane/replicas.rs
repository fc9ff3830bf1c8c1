//! Two control planes (`gatehouse serve`, two processes) on one PostgreSQL database:
//! they start together and bootstrap the store once; of two requests racing for one
//! thing (a slug, a package version, an invitation, a revocation) exactly one wins and
//! the other gets the precise error; the config version they publish never repeats
//! or goes backwards across them; and a change made on one reaches the proxies of the
//! other (LISTEN/NOTIFY).

use std::time::{Duration, Instant};

use base64::Engine as _;
use gatehouse_tests::control_plane::{Cli, ControlPlane, GatewayProxy, HttpAnswer};
use gatehouse_tests::postgres::{self, Cluster};
use gatehouse_tests::{RawClient, TempDir, STEP_TIMEOUT};
use rand::RngCore;
use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{until_initialize_answers, until_refused};

/// Generous, as in `lifecycle`: the 100 ms target is measured, not asserted here.
const ENFORCEMENT_LIMIT: Duration = Duration::from_secs(5);

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

/// Sends the same request to both replicas at once; returns both answers' statuses
/// sorted, and the answers.
async fn race(
    a: &ControlPlane,
    b: &ControlPlane,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(Vec<u16>, [HttpAnswer; 2])> {
    let (on_a, on_b) = tokio::join!(
        a.request(method.clone(), path, Some(token), body.as_ref()),
        b.request(method.clone(), path, Some(token), body.as_ref()),
    );
    let answers = [on_a?, on_b?];
    let mut statuses: Vec<u16> = answers.iter().map(|x| x.status).collect();
    statuses.sort();
    Ok((statuses, answers))
}

/// The message of the one answer with `status`.
fn message_of(answers: &[HttpAnswer; 2], status: u16) -> anyhow::Result<String> {
    let answer = answers
        .iter()
        .find(|x| x.status == status)
        .ok_or_else(|| anyhow::anyhow!("no {status} among {answers:?}"))?;
    Ok(answer.json()?["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn manifest(version: &str) -> Value {
    json!({
        "name": "crm",
        "type": "mcp-server",
        "version": version,
        "description": "The CRM as MCP tools",
        "category": "productivity",
        "tags": ["crm"],
        "server": {"url": "https://crm.example.com/mcp", "transport": "streamable_http"}
    })
}

#[tokio::test]
async fn the_same_package_version_published_on_two_replicas_is_stored_once() -> anyhow::Result<()> {
    let (a, b, url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    for version in ["1.0.0", "1.1.0", "2.0.0"] {
        let body = json!({"manifest": manifest(version)});
        let (statuses, answers) =
            race(&a, &b, &token, Method::POST, "/v1/packages", Some(body)).await?;
        assert_eq!(statuses, [201, 409], "{version}: {answers:?}");
        let message = message_of(&answers, 409)?;
        assert_eq!(
            message,
            format!(
                "@admin/crm {version} is not newer than {version}, the highest version ever \
                 published: versions must increase"
            ),
        );
    }
    let cluster = postgres::cluster()?;
    assert_eq!(
        cluster.psql(
            Cluster::database_of(&url),
            "SELECT string_agg(v.version, ',' ORDER BY v.version) FROM package_versions v \
             JOIN packages p ON p.id = v.package_id WHERE p.name = 'crm'"
        )?,
        "1.0.0,1.1.0,2.0.0"
    );
    Ok(())
}

#[tokio::test]
async fn an_invitation_accepted_on_two_replicas_at_once_is_used_once() -> anyhow::Result<()> {
    let (a, b, url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    let bob = post(
        &a,
        &token,
        "/v1/users",
        json!({"username": "bob", "email": "bob@example.com"}),
    )
    .await?;
    assert_eq!(bob.status, 201, "{}", bob.body);
    let credential = bob.json()?["credential"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let bob_cli = Cli::new("bob")?;
    bob_cli.login(&b.api_url(), "bob", &credential).await?;
    let bob_token = bob_cli.session_token()?;

    let invited = post(
        &b,
        &token,
        "/v1/team/invitations",
        json!({"email": "bob@example.com"}),
    )
    .await?;
    assert_eq!(invited.status, 201, "{}", invited.body);
    let code = invited.json()?["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (statuses, answers) = race(
        &a,
        &b,
        &bob_token,
        Method::POST,
        "/v1/team/accept",
        Some(json!({"code": code})),
    )
    .await?;
    assert_eq!(statuses, [200, 409], "{answers:?}");
    assert_eq!(
        message_of(&answers, 409)?,
        "this invitation was already used"
    );
    let cluster = postgres::cluster()?;
    assert_eq!(
        cluster.psql(
            Cluster::database_of(&url),
            "SELECT COUNT(*) FROM audit_events WHERE action = 'team_join'"
        )?,
        "1"
    );
    Ok(())
}

#[tokio::test]
async fn a_token_revoked_on_two_replicas_at_once_is_revoked_once() -> anyhow::Result<()> {
    let (a, b, url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    let created = post(&a, &token, "/v1/workspaces", json!({"name": "eng"})).await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let before = stored_version(&url)?;
    let rounds = 5;
    for i in 0..rounds {
        let name = format!("laptop-{i}");
        let made = post(
            &b,
            &token,
            "/v1/workspaces/eng/tokens",
            json!({"name": name}),
        )
        .await?;
        assert_eq!(made.status, 201, "{}", made.body);
        let (statuses, answers) = race(
            &a,
            &b,
            &token,
            Method::POST,
            "/v1/workspaces/eng/tokens/revoke",
            Some(json!({"name": name})),
        )
        .await?;
        assert_eq!(statuses, [200, 404], "{name}: {answers:?}");
        assert_eq!(
            message_of(&answers, 404)?,
            format!("no active token {name:?} in \"eng\"")
        );
    }
    // One version per create and one per revocation: the loser changed nothing.
    assert_eq!(stored_version(&url)?, before + 2 * rounds);
    Ok(())
}

#[tokio::test]
async fn a_workspace_deleted_on_one_replica_while_a_token_is_created_on_the_other(
) -> anyhow::Result<()> {
    let (a, b, url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    for round in 0..5 {
        let slug = format!("doomed-{round}");
        let created = post(&a, &token, "/v1/workspaces", json!({"name": slug})).await?;
        assert_eq!(created.status, 201, "{}", created.body);
        let path = format!("/v1/workspaces/{slug}");
        let tokens = format!("{path}/tokens");
        let (deleted, made) = tokio::join!(
            a.request(Method::DELETE, &path, Some(&token), None),
            post(&b, &token, &tokens, json!({"name": "late"})),
        );
        let (deleted, made) = (deleted?, made?);
        assert_eq!(deleted.status, 200, "{}", deleted.body);
        // Either the token came first (and went with the workspace) or the
        // workspace was gone: never a server error, never a token left behind.
        match made.status {
            201 => {}
            404 => assert_eq!(
                made.json()?["error"]["message"],
                format!("workspace {slug:?} not found")
            ),
            other => panic!("token create answered {other}: {}", made.body),
        }
    }
    let cluster = postgres::cluster()?;
    assert_eq!(
        cluster.psql(
            Cluster::database_of(&url),
            "SELECT COUNT(*) FROM workspace_tokens"
        )?,
        "0"
    );
    Ok(())
}

#[tokio::test]
async fn a_change_on_one_replica_reaches_the_proxies_of_the_other() -> anyhow::Result<()> {
    let (a, b, _url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    let state = TempDir::new("edge-b")?;
    let proxy = GatewayProxy::start_named(
        &b.api_url(),
        b.proxy_token(),
        state.path(),
        b.gateway_ports(),
        "edge-b",
    )
    .await?;
    let ws_url = proxy.ws_url("eng");
    let secret_of = |answer: &HttpAnswer| -> anyhow::Result<String> {
        anyhow::ensure!(answer.status == 201, "{}", answer.body);
        Ok(answer.json()?["secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned())
    };

    // Made on A, served at once by the proxy of B, which heard of it from the
    // database (B itself was never asked anything).
    let first = secret_of(&post(&a, &token, "/v1/workspaces", json!({"name": "eng"})).await?)?;
    until_initialize_answers(&ws_url, &first, 200, STEP_TIMEOUT).await?;

    // Revoked on A: refused by B's proxy, even in an open session.
    let mut took = Vec::new();
    for i in 0..10 {
        let name = format!("laptop-{i}");
        let body = json!({"name": name});
        let secret =
            secret_of(&post(&a, &token, "/v1/workspaces/eng/tokens", body.clone()).await?)?;
        until_initialize_answers(&ws_url, &secret, 200, STEP_TIMEOUT).await?;
        let mut session = RawClient::new(&ws_url, Some(&secret));
        session.initialize().await?;
        let started = Instant::now();
        let revoked = post(&a, &token, "/v1/workspaces/eng/tokens/revoke", body).await?;
        assert_eq!(revoked.status, 200, "{}", revoked.body);
        took.push(until_refused(&session, started, ENFORCEMENT_LIMIT).await?);
    }
    took.sort();
    println!(
        "revoke on replica A -> 401 at a proxy of replica B: min {:?}, median {:?}, max {:?}",
        took[0],
        took[took.len() / 2],
        took[took.len() - 1]
    );
    Ok(())
}

#[tokio::test]
async fn an_audit_batch_sent_to_both_replicas_is_stored_once() -> anyhow::Result<()> {
    use gatehouse_config::audit::{AuditBatch, CallAction, CallEvent, CallOutcome};
    let (a, b, url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    let created = post(&a, &token, "/v1/workspaces", json!({"name": "eng"})).await?;
    assert_eq!(created.status, 201, "{}", created.body);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let events: Vec<CallEvent> = (0..300)
        .map(|i| CallEvent {
            id: format!("ce_{:032x}", rand::random::<u128>()),
            time_ms: now_ms + i,
            workspace: "eng".into(),
            token_id: "tok_x".into(),
            token_name: "laptop".into(),
            action: CallAction::ToolCall,
            server: "github".into(),
            target: "github__create_issue".into(),
            outcome: CallOutcome::Ok,
            latency_us: 1_000,
            request_id: i.to_string(),
            transport: "streamable_http".into(),
        })
        .collect();
    let batch = serde_json::to_value(AuditBatch {
        proxy_id: "px_retry".into(),
        events,
    })?;
    // A proxy that timed out on one replica resends to the other while the first
    // is still storing it.
    let (on_a, on_b) = tokio::join!(
        a.request(
            Method::POST,
            "/v1/proxy/audit",
            Some(a.proxy_token()),
            Some(&batch)
        ),
        b.request(
            Method::POST,
            "/v1/proxy/audit",
            Some(b.proxy_token()),
            Some(&batch)
        ),
    );
    let mut stored = 0;
    let mut duplicates = 0;
    for answer in [on_a?, on_b?] {
        assert_eq!(answer.status, 200, "{}", answer.body);
        let body = answer.json()?;
        stored += body["stored"].as_u64().unwrap_or(u64::MAX);
        duplicates += body["duplicates"].as_u64().unwrap_or(u64::MAX);
    }
    assert_eq!((stored, duplicates), (300, 300));
    let cluster = postgres::cluster()?;
    assert_eq!(
        cluster.psql(
            Cluster::database_of(&url),
            "SELECT COUNT(*) FROM call_events"
        )?,
        "300"
    );
    Ok(())
}

/// Signs `username` in on `cp`'s dashboard as a browser would (the sign-in form's
/// token and its pairing cookie); returns the session cookie's value.
async fn dashboard_sign_in(
    http: &reqwest::Client,
    cp: &ControlPlane,
    credential: &str,
) -> anyhow::Result<String> {
    let form = http.get(cp.url("/dashboard/login")).send().await?;
    let pairing = form.headers()["set-cookie"].to_str()?;
    let pairing = pairing.split(';').next().unwrap_or_default().to_owned();
    let csrf = csrf_in(&form.text().await?)?;
    let answer = http
        .post(cp.url("/dashboard/login"))
        .header("cookie", pairing)
        .form(&[
            ("username", "admin"),
            ("credential", credential),
            ("csrf", &csrf),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        answer.status() == 303,
        "sign-in answered {}",
        answer.status()
    );
    let set = answer.headers()["set-cookie"].to_str()?;
    Ok(set
        .strip_prefix("gatehouse_session=")
        .and_then(|rest| rest.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("no session cookie: {set}"))?
        .to_owned())
}

fn csrf_in(html: &str) -> anyhow::Result<String> {
    html.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no csrf field in:\n{html}"))
}

/// The dashboard's workspace list on `cp` for session `cookie`: its status and body.
async fn workspaces_page(
    http: &reqwest::Client,
    cp: &ControlPlane,
    cookie: &str,
) -> anyhow::Result<(u16, String)> {
    let answer = http
        .get(cp.url("/dashboard/workspaces"))
        .header("cookie", format!("gatehouse_session={cookie}"))
        .send()
        .await?;
    Ok((answer.status().as_u16(), answer.text().await?))
}

#[tokio::test]
async fn a_dashboard_session_signed_out_on_one_replica_is_refused_by_the_other(
) -> anyhow::Result<()> {
    let (a, b, _url) = two_replicas().await?;
    let credential = [a.admin_credential(), b.admin_credential()]
        .into_iter()
        .find(|c| !c.is_empty())
        .ok_or_else(|| anyhow::anyhow!("neither replica wrote admin.credential"))?
        .to_owned();
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let session = dashboard_sign_in(&http, &a, &credential).await?;
    let other = dashboard_sign_in(&http, &a, &credential).await?;
    // One session, valid on both replicas (the signing key is in the shared store).
    let (status, page) = workspaces_page(&http, &b, &session).await?;
    assert_eq!(status, 200);
    let signed_out = http
        .post(a.url("/dashboard/logout"))
        .header("cookie", format!("gatehouse_session={session}"))
        .form(&[("csrf", csrf_in(&page)?)])
        .send()
        .await?;
    assert_eq!(signed_out.status(), 303);
    for cp in [&a, &b] {
        let (status, _) = workspaces_page(&http, cp, &session).await?;
        assert_eq!(
            status,
            303,
            "{} still serves the signed-out session",
            cp.api_url()
        );
        let whoami = cp
            .request(Method::GET, "/v1/whoami", Some(&session), None)
            .await?;
        assert_eq!(whoami.status, 401, "{}", whoami.body);
        // The admin's other session is not touched.
        assert_eq!(workspaces_page(&http, cp, &other).await?.0, 200);
    }
    Ok(())
}

#[tokio::test]
async fn two_servers_made_bare_on_two_replicas_at_once_leave_one_bare() -> anyhow::Result<()> {
    let (a, b, _url) = two_replicas().await?;
    let token = admin_session(&a, &b).await?;
    let created = post(&a, &token, "/v1/workspaces", json!({"name": "eng"})).await?;
    assert_eq!(created.status, 201, "{}", created.body);
    for slug in ["one", "two"] {
        let body = json!({"url": format!("https://{slug}.example.com/mcp"), "slug": slug,
            "transport": "streamable_http"});
        let made = post(&a, &token, "/v1/workspaces/eng/servers", body).await?;
        assert_eq!(made.status, 201, "{}", made.body);
    }
    let bare = json!({"naming": "bare"});
    for round in 0..5 {
        let (on_a, on_b) = tokio::join!(
            a.request(
                Method::PATCH,
                "/v1/workspaces/eng/servers/one",
                Some(&token),
                Some(&bare)
            ),
            b.request(
                Method::PATCH,
                "/v1/workspaces/eng/servers/two",
                Some(&token),
                Some(&bare)
            ),
        );
        let answers = [on_a?, on_b?];
        let mut statuses: Vec<u16> = answers.iter().map(|x| x.status).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 409], "round {round}: {answers:?}");
        let message = message_of(&answers, 409)?;
        assert!(message.contains("at most one bare server"), "{message}");
        let listed = a
            .request(
                Method::GET,
                "/v1/workspaces/eng/servers",
                Some(&token),
                None,
            )
            .await?
            .json()?;
        let bare_now: Vec<&str> = listed["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["naming"] == "bare")
            .filter_map(|s| s["slug"].as_str())
            .collect();
        assert_eq!(bare_now.len(), 1, "round {round}: {listed}");
        let back = a
            .request(
                Method::PATCH,
                &format!("/v1/workspaces/eng/servers/{}", bare_now[0]),
                Some(&token),
                Some(&json!({"naming": "prefixed"})),
            )
            .await?;
        assert_eq!(back.status, 200, "{}", back.body);
    }
    Ok(())
}
