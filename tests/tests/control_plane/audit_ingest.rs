//! Routed calls reported by proxies (`POST /v1/proxy/audit`), as the API, the CLI and
//! `/metrics` show them: each event stored once however often its batch is resent
//! (even across a control plane restart), a malformed batch refused whole, the audit
//! log listing calls among admin events, and analytics whose percentiles are exactly
//! the nearest-rank ones of the reported latencies. Batches are posted here as a
//! proxy would, with the proxy token, so exact latencies can be chosen.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse_config::audit::{AuditBatch, CallAction, CallEvent, CallOutcome};
use gatehouse_tests::control_plane::{Cli, ControlPlane, HttpAnswer};
use gatehouse_tests::STEP_TIMEOUT;
use reqwest::Method;
use serde_json::{json, Value};

use crate::fixture::{assert_fails, value_after};

const WS: &str = "engineering";

/// A control plane, the admin's CLI logged in, workspace `engineering` with its
/// `default` token and a second token `Alice Cursor` (both created by the admin).
struct Setup {
    cp: ControlPlane,
    admin: Cli,
    default_token: String,
    alice_token: String,
}

impl Setup {
    async fn start() -> anyhow::Result<Setup> {
        let cp = crate::fixture::control_plane().await?;
        let admin = Cli::admin_of(&cp).await?;
        admin.ok(&["workspace", "create", "Engineering"]).await?;
        admin
            .ok(&["workspace", "token", "create", WS, "--name", "Alice Cursor"])
            .await?;
        let default_token = token_id(&admin, WS, "default").await?;
        let alice_token = token_id(&admin, WS, "Alice Cursor").await?;
        Ok(Setup {
            cp,
            admin,
            default_token,
            alice_token,
        })
    }

    async fn post(&self, batch: &AuditBatch) -> anyhow::Result<HttpAnswer> {
        post(
            &self.cp,
            Some(self.cp.proxy_token()),
            &serde_json::to_value(batch)?,
        )
        .await
    }

    /// `gatehouse --json workspace audit engineering ARGS`'s events.
    async fn audit(&self, args: &[&str]) -> anyhow::Result<Vec<Value>> {
        let mut all = vec!["workspace", "audit", WS];
        all.extend_from_slice(args);
        let listed = self.admin.json(&all).await?;
        Ok(listed["events"].as_array().cloned().unwrap_or_default())
    }
}

async fn token_id(cli: &Cli, ws: &str, name: &str) -> anyhow::Result<String> {
    let list = cli.json(&["workspace", "token", "list", ws]).await?;
    list["tokens"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == name))
        .and_then(|t| t["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token {name:?} in {list}"))
}

async fn post(cp: &ControlPlane, bearer: Option<&str>, body: &Value) -> anyhow::Result<HttpAnswer> {
    cp.request(Method::POST, "/v1/proxy/audit", bearer, Some(body))
        .await
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A fresh event id, as proxies make them.
fn new_id() -> String {
    format!("ce_{:032x}", rand::random::<u128>())
}

/// A successful `tools/call` of `github__create_issue` by `token_id`, 1 ms long.
fn call(time_ms: i64, token_id: &str, token_name: &str) -> CallEvent {
    CallEvent {
        id: new_id(),
        time_ms,
        workspace: WS.into(),
        token_id: token_id.into(),
        token_name: token_name.into(),
        action: CallAction::ToolCall,
        server: "github".into(),
        target: "github__create_issue".into(),
        outcome: CallOutcome::Ok,
        latency_us: 1_000,
        request_id: "1".into(),
        transport: "streamable_http".into(),
    }
}

fn batch(events: Vec<CallEvent>) -> AuditBatch {
    AuditBatch {
        proxy_id: "px_test".into(),
        events,
    }
}

fn ack(answer: &HttpAnswer) -> anyhow::Result<(u64, u64)> {
    anyhow::ensure!(answer.status == 200, "audit post answered {answer:?}");
    let body = answer.json()?;
    Ok((
        body["stored"].as_u64().unwrap_or(u64::MAX),
        body["duplicates"].as_u64().unwrap_or(u64::MAX),
    ))
}

fn ids_of(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["id"].as_str()).collect()
}

/// Three calls: an ok one with the default token, a failed one with Alice's, and a
/// prompt by a token the control plane no longer knows.
fn three_calls(s: &Setup) -> Vec<CallEvent> {
    let t = now_ms();
    let first = CallEvent {
        latency_us: 12_345,
        request_id: "7".into(),
        ..call(t, &s.default_token, "default")
    };
    let failed = CallEvent {
        outcome: CallOutcome::ToolError,
        transport: "sse".into(),
        ..call(t + 1, &s.alice_token, "Alice Cursor")
    };
    let prompt = CallEvent {
        action: CallAction::PromptGet,
        target: "github__triage".into(),
        ..call(t + 2, "tok_gone", "Old Laptop")
    };
    vec![first, failed, prompt]
}

#[tokio::test]
async fn a_batch_sent_twice_is_listed_once_among_the_admin_events() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let events = three_calls(&s);
    let sent = batch(events.clone());
    assert_eq!(ack(&s.post(&sent).await?)?, (3, 0));
    assert_eq!(ack(&s.post(&sent).await?)?, (0, 3));

    let listed = s.audit(&[]).await?;
    let actions: Vec<&str> = listed.iter().filter_map(|e| e["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "workspace_create",
            "token_create",
            "token_create",
            "tool_call",
            "tool_call",
            "prompt_get"
        ],
        "{listed:#?}"
    );
    let call_ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids_of(&listed)[3..], call_ids[..]);
    assert_eq!(
        listed[3],
        json!({"id": events[0].id, "time": events[0].time_ms / 1000, "time_ms": events[0].time_ms,
               "workspace": WS, "actor": "admin", "action": "tool_call",
               "target": "github__create_issue", "outcome": "ok", "server": "github",
               "token": "default", "latency_ms": 12.345, "request_id": "7",
               "transport": "streamable_http"})
    );
    // The actor is who created the token, else (token gone) the token's name.
    assert_eq!(listed[4]["actor"], "admin");
    assert_eq!(listed[4]["token"], "Alice Cursor");
    assert_eq!(listed[5]["actor"], "Old Laptop");

    // The seeds' table: a failed call says how it ended.
    let table = s.admin.ok(&["workspace", "audit", WS]).await?;
    let failed_line = table
        .lines()
        .find(|l| l.contains("github__create_issue") && l.contains("tool_error"))
        .ok_or_else(|| anyhow::anyhow!("no failed call in:\n{table}"))?;
    assert!(failed_line.ends_with("tool_call (tool_error)"), "{table}");
    assert!(failed_line.contains("  admin  "), "{table}");
    assert!(table.starts_with("DATE "), "{table}");

    // Filters apply to calls as to admin events.
    let tool_calls = s.audit(&["--action", "tool_call"]).await?;
    assert_eq!(ids_of(&tool_calls), call_ids[..2]);
    let by_token_name = s.audit(&["--user", "Alice Cursor"]).await?;
    assert_eq!(ids_of(&by_token_name), [call_ids[1]]);
    let by_old_laptop = s.audit(&["--user", "Old Laptop"]).await?;
    assert_eq!(ids_of(&by_old_laptop), [call_ids[2]]);
    let by_admin = s.audit(&["--user", "admin"]).await?;
    assert_eq!(by_admin.len(), 5, "{by_admin:#?}");
    // `limit` keeps the oldest events of the merged list.
    let jwt = s.admin.session_token()?;
    let limited =
        s.cp.request(
            Method::GET,
            &format!("/v1/workspaces/{WS}/audit?limit=4"),
            Some(&jwt),
            None,
        )
        .await?
        .json()?;
    let limited = limited["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(ids_of(&limited)[..3], ids_of(&listed)[..3]);
    assert_eq!(ids_of(&limited)[3..], [call_ids[0]]);

    // Another user's token: its creator is the actor, in that user's workspace only.
    let created = s
        .admin
        .ok(&["user", "create", "bob", "--email", "bob@example.com"])
        .await?;
    let bob = Cli::new("bob")?;
    bob.login(
        &s.cp.api_url(),
        "bob",
        &value_after(&created, "Credential: ")?,
    )
    .await?;
    bob.ok(&["workspace", "create", "Bobs"]).await?;
    let bobs_token = token_id(&bob, "bobs", "default").await?;
    let bobs_call = CallEvent {
        workspace: "bobs".into(),
        ..call(now_ms(), &bobs_token, "default")
    };
    assert_eq!(
        ack(&s.post(&batch(vec![bobs_call.clone()])).await?)?,
        (1, 0)
    );
    let bobs = bob
        .json(&["workspace", "audit", "bobs", "--action", "tool_call"])
        .await?;
    assert_eq!(bobs["events"][0]["id"], bobs_call.id.as_str(), "{bobs}");
    assert_eq!(bobs["events"][0]["actor"], "bob", "{bobs}");
    assert_eq!(s.audit(&[]).await?.len(), 6, "bob's call leaked into {WS}");
    Ok(())
}

#[tokio::test]
async fn a_batch_resent_after_a_control_plane_restart_is_stored_once() -> anyhow::Result<()> {
    let mut s = Setup::start().await?;
    let sent = batch(three_calls(&s));
    assert_eq!(ack(&s.post(&sent).await?)?, (3, 0));

    s.cp.restart().await?;
    // Half of it again with one new event: only that one is stored.
    let mut again = batch(sent.events[..2].to_vec());
    let new = call(now_ms(), &s.default_token, "default");
    again.events.push(new.clone());
    assert_eq!(ack(&s.post(&again).await?)?, (1, 2));
    assert_eq!(ack(&s.post(&sent).await?)?, (0, 3));

    let listed = s.audit(&["--action", "tool_call"]).await?;
    let expected = [
        sent.events[0].id.as_str(),
        sent.events[1].id.as_str(),
        new.id.as_str(),
    ];
    assert_eq!(ids_of(&listed), expected, "{listed:#?}");
    Ok(())
}

#[tokio::test]
async fn calls_older_than_the_retention_are_deleted() -> anyhow::Result<()> {
    let mut s = Setup::start().await?;
    // The default retention is 90 days; one call 100 days old, one from now.
    let old = call(now_ms() - 100 * 86_400 * 1_000, &s.default_token, "default");
    let recent = call(now_ms(), &s.default_token, "default");
    let sent = batch(vec![old, recent.clone()]);
    assert_eq!(ack(&s.post(&sent).await?)?, (2, 0));

    // Pruning runs at start (and hourly). Once it has, the old call is no longer
    // stored: resending the batch stores it anew, while the recent one is a duplicate.
    s.cp.restart().await?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        match ack(&s.post(&sent).await?)? {
            (1, 1) => break,
            (0, 2) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => anyhow::bail!("resending after the pruning acknowledged {other:?}"),
        }
    }
    // The counter moves just after the delete commits, so a scrape can see the
    // deletion's effect a moment before the count.
    loop {
        let metrics = scrape(&s.cp).await?;
        if metrics.contains("gatehouse_control_plane_call_events_pruned_total 1\n") {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "no pruned count in {metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = s.audit(&["--action", "tool_call"]).await?;
    assert_eq!(ids_of(&listed), [recent.id.as_str()], "{listed:#?}");
    Ok(())
}

#[tokio::test]
async fn a_malformed_batch_is_refused_whole() -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let good = call(now_ms(), &s.default_token, "default");
    let bad = CallEvent {
        id: "x".repeat(65),
        ..call(now_ms(), &s.default_token, "default")
    };
    let answer = s.post(&batch(vec![good.clone(), bad])).await?;
    assert_eq!(answer.status, 400, "{}", answer.body);
    let body = answer.json()?;
    assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing was stored")),
        "{body}"
    );
    assert_eq!(
        body["error"]["problems"],
        json!([{"path": "events[1].id", "message": "is 65 bytes long, at most 64 are accepted"}])
    );
    // Not JSON of a batch at all.
    let event = serde_json::to_value(&good)?;
    for garbage in [
        json!({"events": [event]}),
        json!({"proxy_id": "px", "events": [{"id": "ce_1"}]}),
    ] {
        let answer = post(&s.cp, Some(s.cp.proxy_token()), &garbage).await?;
        assert_eq!(answer.status, 400, "{garbage}: {}", answer.body);
    }
    // Too many events.
    let flood = batch(vec![good.clone(); 5_001]);
    let answer = s.post(&flood).await?;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert_eq!(answer.json()?["error"]["code"], "too_large");
    assert!(
        answer.body.contains("at most 5000 events"),
        "{}",
        answer.body
    );
    // Only proxies may report.
    let jwt = s.admin.session_token()?;
    let sent = serde_json::to_value(batch(vec![good.clone()]))?;
    for bearer in [None, Some(jwt.as_str()), Some("gpx_wrong")] {
        assert_eq!(post(&s.cp, bearer, &sent).await?.status, 401, "{bearer:?}");
    }

    assert_eq!(
        s.audit(&["--action", "tool_call"]).await?,
        Vec::<Value>::new()
    );
    // The good event was not kept from the refused batch: it is new now.
    assert_eq!(ack(&s.post(&batch(vec![good])).await?)?, (1, 0));
    Ok(())
}

#[tokio::test]
async fn analytics_give_the_nearest_rank_percentiles_per_server_tool_and_token(
) -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let t = now_ms();
    // Latencies 10, 20, ... 200 ms; odd ones to github, even ones to jira; every
    // fifth a tool error; the first 12 with the default token, the rest Alice's.
    let events: Vec<CallEvent> = (1..=20)
        .map(|i: i64| {
            let (server, tool) = if i % 2 == 1 {
                ("github", "github__create_issue")
            } else {
                ("jira", "jira__search")
            };
            let (token, name) = if i <= 12 {
                (s.default_token.as_str(), "default")
            } else {
                (s.alice_token.as_str(), "Alice Cursor")
            };
            CallEvent {
                server: server.into(),
                target: tool.into(),
                outcome: if i % 5 == 0 {
                    CallOutcome::ToolError
                } else {
                    CallOutcome::Ok
                },
                latency_us: (i * 10_000) as u64,
                ..call(t + i, token, name)
            }
        })
        .collect();
    assert_eq!(ack(&s.post(&batch(events)).await?)?, (20, 0));

    let a = s.admin.json(&["workspace", "analytics", WS]).await?;
    assert_eq!(
        a["totals"],
        json!({"calls": 20, "errors": 4, "error_rate": 0.2, "p50_ms": 100.0, "p95_ms": 190.0})
    );
    // github: 10, 30, ... 190 -> p50 rank 5 (90), p95 rank 10 (190).
    // jira: 20, 40, ... 200 -> p50 100, p95 200.
    assert_eq!(
        a["servers"],
        json!([
            {"server": "github", "calls": 10, "errors": 2, "error_rate": 0.2, "p50_ms": 90.0, "p95_ms": 190.0},
            {"server": "jira", "calls": 10, "errors": 2, "error_rate": 0.2, "p50_ms": 100.0, "p95_ms": 200.0},
        ])
    );
    assert_eq!(
        a["tools"],
        json!([
            {"tool": "github__create_issue", "action": "tool_call", "calls": 10, "errors": 2, "error_rate": 0.2, "p50_ms": 90.0, "p95_ms": 190.0},
            {"tool": "jira__search", "action": "tool_call", "calls": 10, "errors": 2, "error_rate": 0.2, "p50_ms": 100.0, "p95_ms": 200.0},
        ])
    );
    assert_eq!(
        a["tokens"],
        json!([
            {"token_id": s.default_token, "token": "default", "actor": "admin", "calls": 12, "errors": 2},
            {"token_id": s.alice_token, "token": "Alice Cursor", "actor": "admin", "calls": 8, "errors": 2},
        ])
    );

    let text = s.admin.ok(&["workspace", "analytics", WS]).await?;
    let first = text.lines().next().unwrap_or_default();
    assert!(first.starts_with("Calls in engineering since "), "{text}");
    assert!(
        first.ends_with(": 20 (4 errors, 20.0%), p50 100 ms, p95 190 ms"),
        "{text}"
    );
    for line in [
        "SERVER  CALLS  ERRORS  ERROR RATE  P50     P95",
        "github  10     2       20.0%       90 ms   190 ms",
        "jira    10     2       20.0%       100 ms  200 ms",
        "TOKEN         USER   CALLS  ERRORS",
        "default       admin  12     2",
        "Alice Cursor  admin  8      2",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }

    // A window that starts after these calls holds only what came later.
    let later = CallEvent {
        latency_us: 5_000,
        ..call(t + 7_200_000, &s.default_token, "default")
    };
    assert_eq!(ack(&s.post(&batch(vec![later])).await?)?, (1, 0));
    let jwt = s.admin.session_token()?;
    let since = t / 1000 + 3_600;
    let window =
        s.cp.request(
            Method::GET,
            &format!("/v1/workspaces/{WS}/analytics?since={since}"),
            Some(&jwt),
            None,
        )
        .await?
        .json()?;
    assert_eq!(window["since"], since);
    assert_eq!(
        window["totals"],
        json!({"calls": 1, "errors": 0, "error_rate": 0.0, "p50_ms": 5.0, "p95_ms": 5.0})
    );

    // Only those who may read the workspace see its analytics.
    let created = s
        .admin
        .ok(&["user", "create", "eve", "--email", "eve@example.com"])
        .await?;
    let eve = Cli::new("eve")?;
    eve.login(
        &s.cp.api_url(),
        "eve",
        &value_after(&created, "Credential: ")?,
    )
    .await?;
    let refused = eve.run(&["workspace", "analytics", WS]).await?;
    assert_fails(&refused, 2, "workspace \"engineering\" not found");
    Ok(())
}

/// The value of the sample written exactly as `series` (labels in the encoder's
/// order, which is by name).
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(cp: &ControlPlane) -> anyhow::Result<String> {
    let answer = cp.request(Method::GET, "/metrics", None, None).await?;
    anyhow::ensure!(answer.status == 200, "/metrics answered {answer:?}");
    Ok(answer.body)
}

#[tokio::test]
async fn metrics_count_audit_events_batches_and_requests_without_naming_tenants(
) -> anyhow::Result<()> {
    let s = Setup::start().await?;
    let first = batch(
        (0..4)
            .map(|i| call(now_ms() + i, &s.default_token, "default"))
            .collect(),
    );
    assert_eq!(ack(&s.post(&first).await?)?, (4, 0));
    assert_eq!(ack(&s.post(&first).await?)?, (0, 4));
    let mut mixed = batch(vec![first.events[0].clone()]);
    mixed
        .events
        .push(call(now_ms(), &s.alice_token, "Alice Cursor"));
    assert_eq!(ack(&s.post(&mixed).await?)?, (1, 1));
    let bad = batch(vec![CallEvent {
        id: String::new(),
        ..call(now_ms(), &s.default_token, "default")
    }]);
    assert_eq!(s.post(&bad).await?.status, 400);
    // A proxy reports the version it applied; it is one behind after this change.
    let status =
        s.cp.request(
            Method::POST,
            "/v1/proxy/status",
            Some(s.cp.proxy_token()),
            Some(&json!({"id": "px_edge9", "name": "edge-9", "version": 1})),
        )
        .await?
        .json()?;
    let version = status["config_version"].as_f64().unwrap_or(-1.0);
    let jwt = s.admin.session_token()?;
    s.cp.request(
        Method::GET,
        &format!("/v1/workspaces/{WS}/audit"),
        Some(&jwt),
        None,
    )
    .await?;
    assert_eq!(s.cp.status_of("/no/such/route", None).await?, 404);

    let text = scrape(&s.cp).await?;
    // Every line is a comment or `series value`, every family has HELP and the prefix.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("not a sample: {line:?}"))?;
        assert!(series.starts_with("gatehouse_control_plane_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for family in [
        "gatehouse_control_plane_config_version",
        "gatehouse_control_plane_proxies_connected",
        "gatehouse_control_plane_proxy_config_lag",
        "gatehouse_control_plane_proxy_last_seen_timestamp_seconds",
        "gatehouse_control_plane_audit_events_received_total",
        "gatehouse_control_plane_audit_batches_total",
        "gatehouse_control_plane_api_requests_total",
        "gatehouse_control_plane_api_request_duration_seconds",
    ] {
        assert!(families.contains(&family), "no {family} in:\n{text}");
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has no HELP"
        );
    }

    let value = |series: &str| sample(&text, series);
    let p = "gatehouse_control_plane_";
    let expected = [
        (format!("{p}audit_events_received_total{{result=\"stored\"}}"), 5.0),
        (format!("{p}audit_events_received_total{{result=\"duplicate\"}}"), 5.0),
        (format!("{p}audit_batches_total{{outcome=\"ok\"}}"), 3.0),
        (format!("{p}audit_batches_total{{outcome=\"rejected\"}}"), 1.0),
        (format!("{p}audit_batches_total{{outcome=\"error\"}}"), 0.0),
        (format!("{p}api_requests_total{{method=\"POST\",route=\"/v1/proxy/audit\",status=\"200\"}}"), 3.0),
        (format!("{p}api_requests_total{{method=\"POST\",route=\"/v1/proxy/audit\",status=\"400\"}}"), 1.0),
        (format!("{p}api_requests_total{{method=\"GET\",route=\"/v1/workspaces/{{ws}}/audit\",status=\"200\"}}"), 1.0),
        (format!("{p}api_requests_total{{method=\"GET\",route=\"unmatched\",status=\"404\"}}"), 1.0),
        (format!("{p}api_request_duration_seconds_count{{route=\"/v1/proxy/audit\"}}"), 4.0),
        (format!("{p}config_version"), version),
        (format!("{p}proxies_connected"), 0.0),
        (format!("{p}proxy_config_lag{{proxy=\"edge-9\"}}"), version - 1.0),
    ];
    for (series, want) in &expected {
        assert_eq!(value(series), Some(*want), "{series} in:\n{text}");
    }
    let seen = value("gatehouse_control_plane_proxy_last_seen_timestamp_seconds{proxy=\"edge-9\"}");
    assert!(
        seen.is_some_and(|t| t * 1000.0 >= (now_ms() - 600_000) as f64),
        "{text}"
    );

    // No workspace, token or user name reaches an unauthenticated caller.
    for secret in [
        WS,
        "Alice Cursor",
        "admin",
        s.default_token.as_str(),
        "px_edge9",
    ] {
        assert!(!text.contains(secret), "/metrics names {secret:?}:\n{text}");
    }
    Ok(())
}
