//! The audit trail of tool calls as an operator relies on it: every call through any
//! proxy reaches the control plane exactly once — across two proxies, a control plane
//! that is down while calls are made, and a proxy killed with events still spooled —
//! and `workspace analytics` reports the latencies a slow upstream really had.

use std::collections::HashSet;
use std::time::Duration;

use gatehouse_tests::control_plane::{Cli, ControlPlane, GatewayPorts, GatewayProxy};
use gatehouse_tests::deployment::token_in;
use gatehouse_tests::{
    connect, metrics, wait_until, within, LegacySession, McpClient, TempDir, Upstream,
    UpstreamTool, STEP_TIMEOUT,
};
use reqwest::Method;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{json, Value};

const WS: &str = "engineering";
/// Delivery after a control plane comes back includes the shipper's back-off.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// A control plane, `n` proxies fed by it, and a workspace with one real upstream.
struct Fleet {
    cp: ControlPlane,
    admin: Cli,
    proxies: Vec<GatewayProxy>,
    /// The proxies' `--state-dir`s, kept while they run.
    states: Vec<TempDir>,
    /// The workspace's first token (created by the admin).
    token: String,
    _upstream: Upstream,
}

impl Fleet {
    async fn start(proxies: usize) -> anyhow::Result<Fleet> {
        let cp = ControlPlane::start().await?;
        let admin = Cli::admin_of(&cp).await?;
        let token = token_in(&admin.ok(&["workspace", "create", "Engineering"]).await?)?;
        let upstream = Upstream::builder("github")
            .tools([
                UpstreamTool::new("create_issue"),
                UpstreamTool::new("slow"),
                UpstreamTool::new("fail"),
            ])
            .prompts(["brief"])
            .resources(["file:///notes/a.md"])
            .start()
            .await?;
        admin
            .ok(&[
                "mcp",
                "install",
                &upstream.url(),
                "--name",
                "github",
                "--workspace",
                WS,
            ])
            .await?;
        let mut fleet = Fleet {
            cp,
            admin,
            proxies: Vec::new(),
            states: Vec::new(),
            token,
            _upstream: upstream,
        };
        for n in 0..proxies {
            let state = TempDir::new("gw-state")?;
            let ports = if n == 0 {
                fleet.cp.gateway_ports()
            } else {
                GatewayPorts::pick()?
            };
            let proxy = GatewayProxy::start_named(
                &fleet.cp.api_url(),
                fleet.cp.proxy_token(),
                state.path(),
                ports,
                &format!("edge-{n}"),
            )
            .await?;
            fleet.proxies.push(proxy);
            fleet.states.push(state);
        }
        for proxy in &fleet.proxies {
            fleet.until_serving(proxy).await?;
        }
        Ok(fleet)
    }

    /// Waits until `proxy` lists the upstream's tools to the workspace token.
    async fn until_serving(&self, proxy: &GatewayProxy) -> anyhow::Result<()> {
        wait_until(
            &format!("proxy {} serves the workspace", proxy.name()),
            STEP_TIMEOUT,
            || async {
                let Ok(client) = connect(&proxy.ws_url(WS), &self.token).await else {
                    return false;
                };
                let listed = client.peer().list_all_tools().await;
                let _ = client.cancel().await;
                listed.is_ok_and(|tools| tools.iter().any(|t| t.name == "github__create_issue"))
            },
        )
        .await
    }

    async fn client(&self, proxy: usize) -> anyhow::Result<McpClient> {
        connect(&self.proxies[proxy].ws_url(WS), &self.token).await
    }

    /// The workspace's audit events of action `tool_call`, as the API lists them.
    async fn tool_calls(&self) -> anyhow::Result<Vec<Value>> {
        self.audit("action=tool_call&").await
    }

    /// The workspace's audit events (`filter`: query parameters ending in `&`).
    async fn audit(&self, filter: &str) -> anyhow::Result<Vec<Value>> {
        let session = self.admin.session_token()?;
        let answer = self
            .cp
            .request(
                Method::GET,
                &format!("/v1/workspaces/{WS}/audit?{filter}limit=10000"),
                Some(&session),
                None,
            )
            .await?;
        anyhow::ensure!(answer.status == 200, "audit answered {}", answer.status);
        let listed = answer.json()?;
        Ok(listed["events"].as_array().cloned().unwrap_or_default())
    }

    /// Waits until the control plane lists at least `n` tool calls; returns them all.
    async fn until_listed(&self, n: usize) -> anyhow::Result<Vec<Value>> {
        wait_until(
            &format!("the control plane lists {n} tool calls"),
            DELIVERY_TIMEOUT,
            || async { self.tool_calls().await.is_ok_and(|e| e.len() >= n) },
        )
        .await?;
        self.tool_calls().await
    }

    /// Waits until the proxies' `gatehouse_audit_events_shipped_total` add up to `n`:
    /// nothing is left to arrive.
    async fn until_shipped(&self, n: f64) -> anyhow::Result<()> {
        wait_until(
            &format!("the proxies report {n} audit events shipped"),
            DELIVERY_TIMEOUT,
            || async {
                let mut total = 0.0;
                for p in &self.proxies {
                    let Ok(text) = p.metrics().await else {
                        return false;
                    };
                    total += metrics::sum(&text, "gatehouse_audit_events_shipped_total", &[]);
                }
                total >= n
            },
        )
        .await
    }
}

async fn call(client: &McpClient, tool: &str, arguments: Value) -> anyhow::Result<CallToolResult> {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    Ok(within(
        "tools/call",
        STEP_TIMEOUT,
        client
            .peer()
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)),
    )
    .await??)
}

/// `calls` calls of `github__create_issue` over `clients` sessions on `proxy`, at once.
async fn call_many(
    fleet: &Fleet,
    proxy: usize,
    clients: usize,
    calls: usize,
) -> anyhow::Result<()> {
    let mut sessions = Vec::new();
    for _ in 0..clients {
        sessions.push(fleet.client(proxy).await?);
    }
    let per = calls / clients;
    let work = sessions.iter().enumerate().map(|(c, client)| async move {
        for i in 0..per {
            call(client, "github__create_issue", json!({"client": c, "i": i})).await?;
        }
        anyhow::Ok(())
    });
    for done in futures::future::join_all(work).await {
        done?;
    }
    for s in sessions {
        let _ = s.cancel().await;
    }
    Ok(())
}

fn ids(events: &[Value]) -> HashSet<String> {
    events
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect()
}

async fn proxy_metric(proxy: &GatewayProxy, name: &str) -> anyhow::Result<f64> {
    Ok(metrics::sum(&proxy.metrics().await?, name, &[]))
}

/// Waits until `proxy` reports `n` audit events written to its spool.
async fn until_spooled(proxy: &GatewayProxy, n: f64) -> anyhow::Result<()> {
    wait_until(
        &format!("the proxy spools {n} events"),
        STEP_TIMEOUT,
        || async {
            proxy_metric(proxy, "gatehouse_audit_events_spooled_total")
                .await
                .is_ok_and(|spooled| spooled >= n)
        },
    )
    .await
}

#[tokio::test]
async fn calls_through_two_proxies_are_each_recorded_once() -> anyhow::Result<()> {
    let fleet = Fleet::start(2).await?;
    call_many(&fleet, 0, 2, 20).await?;
    call_many(&fleet, 1, 3, 30).await?;

    fleet.until_shipped(50.0).await?;
    let events = fleet.until_listed(50).await?;
    assert_eq!(events.len(), 50, "{events:#?}");
    assert_eq!(ids(&events).len(), 50, "event ids repeat");
    for e in &events {
        assert_eq!(e["action"], "tool_call", "{e}");
        assert_eq!(e["target"], "github__create_issue", "{e}");
        assert_eq!(e["server"], "github", "{e}");
        assert_eq!(e["outcome"], "ok", "{e}");
        // The seeds' USER column: who the token belongs to.
        assert_eq!(e["actor"], "admin", "{e}");
        assert!(e["latency_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{e}");
        let text = e.to_string();
        assert!(
            !text.contains(&fleet.token),
            "an event holds the token: {text}"
        );
        assert!(
            !text.contains("\"client\""),
            "an event holds arguments: {text}"
        );
    }
    for p in &fleet.proxies {
        assert_eq!(
            proxy_metric(p, "gatehouse_audit_events_dropped_total").await?,
            0.0
        );
    }
    Ok(())
}

#[tokio::test]
async fn calls_made_while_the_control_plane_is_down_all_arrive_once() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(1).await?;
    let client = fleet.client(0).await?;
    call(&client, "github__create_issue", json!({"before": true})).await?;
    fleet.until_shipped(1.0).await?;

    fleet.cp.kill();
    call_many(&fleet, 0, 4, 1000).await?;
    let proxy = &fleet.proxies[0];
    until_spooled(proxy, 1000.0).await?;
    let text = proxy.metrics().await?;
    assert!(
        metrics::sum(&text, "gatehouse_audit_spool_bytes", &[]) > 0.0,
        "the spool is not reported:\n{text}"
    );

    fleet.cp.restart().await?;
    fleet.until_shipped(1001.0).await?;
    let events = fleet.until_listed(1001).await?;
    assert_eq!(events.len(), 1001, "events lost or repeated");
    assert_eq!(ids(&events).len(), 1001);
    let text = fleet.proxies[0].metrics().await?;
    assert_eq!(
        metrics::sum(&text, "gatehouse_audit_events_dropped_total", &[]),
        0.0
    );
    assert_eq!(
        metrics::sum(&text, "gatehouse_audit_spool_bytes", &[]),
        0.0,
        "{text}"
    );
    let _ = client.cancel().await;
    Ok(())
}

#[tokio::test]
async fn events_spooled_by_a_killed_proxy_are_delivered_after_its_restart() -> anyhow::Result<()> {
    let mut fleet = Fleet::start(1).await?;
    fleet.cp.kill();
    call_many(&fleet, 0, 1, 40).await?;
    let proxy = &fleet.proxies[0];
    until_spooled(proxy, 40.0).await?;

    // SIGKILL: nothing gets flushed on the way out.
    fleet.proxies[0].kill();
    fleet.cp.restart().await?;
    fleet.proxies[0].restart().await?;

    let events = fleet.until_listed(40).await?;
    fleet.until_shipped(40.0).await?;
    assert_eq!(fleet.tool_calls().await?.len(), 40, "{events:#?}");
    let spool = fleet.proxies[0].state_dir().join("audit-spool");
    let left: Vec<_> = std::fs::read_dir(&spool)?.collect();
    assert!(left.is_empty(), "the spool still holds {left:?}");
    Ok(())
}

#[tokio::test]
async fn prompts_resources_and_legacy_sse_calls_are_audited_too() -> anyhow::Result<()> {
    let fleet = Fleet::start(1).await?;
    let mut legacy = LegacySession::open(
        &fleet.proxies[0].url(&format!("/ws/{WS}/sse")),
        Some(&fleet.token),
    )
    .await?;
    legacy.initialize(json!({})).await?;
    let listed = legacy.request(1, "resources/list", json!({})).await?;
    let uri = listed["result"]["resources"][0]["uri"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no resource in {listed}"))?
        .to_owned();
    let read = legacy
        .request(2, "resources/read", json!({"uri": uri}))
        .await?;
    assert!(read.get("result").is_some(), "{read}");
    let prompt = legacy
        .request(3, "prompts/get", json!({"name": "github__brief"}))
        .await?;
    assert!(prompt.get("result").is_some(), "{prompt}");
    let called = legacy
        .request(
            4,
            "tools/call",
            json!({"name": "github__create_issue", "arguments": {}}),
        )
        .await?;
    assert!(called.get("result").is_some(), "{called}");
    let client = fleet.client(0).await?;
    call(&client, "github__create_issue", json!({})).await?;

    fleet.until_shipped(4.0).await?;
    let mut seen: Vec<(String, String, String, String)> = fleet
        .audit("")
        .await?
        .iter()
        .filter(|e| e.get("transport").is_some())
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
            (
                field("action"),
                field("target"),
                field("transport"),
                field("outcome"),
            )
        })
        .collect();
    seen.sort();
    let want = |action: &str, target: &str, transport: &str| {
        (
            action.to_owned(),
            target.to_owned(),
            transport.to_owned(),
            "ok".to_owned(),
        )
    };
    assert_eq!(
        seen,
        [
            want("prompt_get", "github__brief", "sse"),
            want("resource_read", &uri, "sse"),
            want("tool_call", "github__create_issue", "sse"),
            want("tool_call", "github__create_issue", "streamable_http"),
        ]
    );
    let _ = client.cancel().await;
    Ok(())
}

/// Nearest-rank percentile of a sorted list.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank - 1]
}

#[tokio::test]
async fn analytics_report_the_latencies_and_outcomes_of_a_slow_upstream() -> anyhow::Result<()> {
    let fleet = Fleet::start(1).await?;
    let client = fleet.client(0).await?;
    // 20 calls that take 10, 20, ... 200 ms at the upstream.
    let delays: Vec<u64> = (1..=20).map(|i| i * 10).collect();
    for ms in &delays {
        call(&client, "github__slow", json!({"ms": ms})).await?;
    }
    for _ in 0..2 {
        let failed = call(&client, "github__fail", json!({})).await?;
        assert_eq!(failed.is_error, Some(true));
    }
    let unknown = client
        .peer()
        .call_tool(CallToolRequestParams::new("github__nope"))
        .await;
    assert!(unknown.is_err());
    fleet.until_shipped(23.0).await?;
    let events = fleet.until_listed(23).await?;
    let outcomes: Vec<&str> = events
        .iter()
        .filter_map(|e| e["outcome"].as_str())
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| **o == "tool_error").count(),
        2,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == "protocol_error").count(),
        1,
        "{outcomes:?}"
    );

    let analytics = fleet
        .admin
        .json(&["workspace", "analytics", WS, "--since", "1h"])
        .await?;
    let tool = analytics["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tool"] == "github__slow"))
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no github__slow in {analytics:#}"))?;
    assert_eq!(tool["calls"], 20, "{tool}");
    assert_eq!(tool["errors"], 0, "{tool}");
    let sorted: Vec<f64> = delays.iter().map(|&ms| ms as f64).collect();
    let (p50, p95) = (nearest_rank(&sorted, 50.0), nearest_rank(&sorted, 95.0));
    // The gateway measures the upstream's delay plus its own and the loopback's
    // (milliseconds at most, unless the machine is very busy), never less.
    let reported_p50 = tool["p50_ms"].as_f64().unwrap_or(-1.0);
    let reported_p95 = tool["p95_ms"].as_f64().unwrap_or(-1.0);
    assert!(
        (p50..p50 + 25.0).contains(&reported_p50),
        "p50 {reported_p50} ms, expected {p50} ms plus a little: {tool}"
    );
    assert!(
        (p95..p95 + 25.0).contains(&reported_p95),
        "p95 {reported_p95} ms, expected {p95} ms plus a little: {tool}"
    );
    let failing = analytics["tools"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["tool"] == "github__fail"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (failing["calls"].clone(), failing["errors"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(analytics["totals"]["calls"], 23, "{analytics:#}");
    assert_eq!(analytics["totals"]["errors"], 3, "{analytics:#}");
    let _ = client.cancel().await;
    Ok(())
}
