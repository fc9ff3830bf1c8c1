//! Hot reload, several proxies sharing a key, and the admin endpoints.

use gatehouse_tests::{
    connect, echo_of, metrics, wait_until, within, ConfigBuilder, Proxy, RawClient, Upstream,
    UpstreamTool, STEP_TIMEOUT,
};
use std::time::Duration;

use rmcp::model::CallToolRequestParams;
use serde_json::json;

use crate::fixture::{
    args, call, github_spec, notes_spec, tool_names, Gateway, ENG_TOOLS, GITHUB_SECRET,
    NOTES_SECRET,
};

#[tokio::test]
async fn hot_reload_keeps_in_flight_calls_and_adds_servers() -> anyhow::Result<()> {
    let github = Upstream::start(
        "github",
        [UpstreamTool::new("create_issue"), UpstreamTool::new("slow")],
    )
    .await?;
    let notes = Upstream::start("notes", [UpstreamTool::new("search")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", github_spec(&github));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    assert_eq!(proxy.health().await?.config_version, 1);

    let client = connect(&proxy.ws_url("eng"), &token).await?;
    assert_eq!(
        tool_names(&client).await?,
        ["github__create_issue", "github__slow"]
    );
    let peer = client.peer().clone();
    let in_flight = tokio::spawn(async move {
        let params = rmcp::model::CallToolRequestParams::new("github__slow")
            .with_arguments(args(json!({"ms": 3000})));
        peer.call_tool(params).await
    });
    wait_until(
        "the slow call reaches the upstream",
        STEP_TIMEOUT,
        || async { github.calls().iter().any(|c| c.tool == "slow") },
    )
    .await?;

    cfg.server("eng", notes_spec(&notes));
    let version = cfg.rewrite()?;
    proxy.wait_for_config_version(version).await?;
    assert!(
        !in_flight.is_finished(),
        "the reload must land while the call is in flight for this test to mean anything"
    );
    let result = within("the in-flight call", STEP_TIMEOUT, in_flight).await???;
    assert_eq!(
        echo_of(&result)?,
        json!({"server": "github", "tool": "slow", "arguments": {"ms": 3000}})
    );

    let fresh = connect(&proxy.ws_url("eng"), &token).await?;
    assert_eq!(
        tool_names(&fresh).await?,
        ["github__create_issue", "github__slow", "notes__search"]
    );
    let result = call(&fresh, "notes__search", json!({"q": "new"})).await?;
    assert_eq!(echo_of(&result)?["server"], json!("notes"));
    // The session opened before the reload keeps working, and reaches the new server
    // too: the gateway opens an upstream session for it on demand.
    let result = call(&client, "github__create_issue", json!({})).await?;
    assert_eq!(echo_of(&result)?["tool"], json!("create_issue"));
    assert_eq!(
        tool_names(&client).await?,
        ["github__create_issue", "github__slow", "notes__search"]
    );
    let result = call(&client, "notes__search", json!({"q": "old session"})).await?;
    assert_eq!(
        echo_of(&result)?,
        json!({"server": "notes", "tool": "search", "arguments": {"q": "old session"}})
    );
    client.cancel().await?;
    fresh.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_session_moves_between_proxies_that_share_a_key() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let other = Proxy::start(gw.cfg.path()).await?;

    let mut on_a = RawClient::new(gw.eng_url(), Some(&gw.alice));
    on_a.initialize().await?;
    let on_b = on_a.with_url(other.ws_url("eng"));

    let listed = on_b.list_tools(1).await?;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.tool_names()?, ENG_TOOLS);
    let called = on_b
        .call_tool(2, "github__create_issue", json!({"via": "b"}))
        .await?;
    assert_eq!(
        called.tool_echo()?,
        json!({"server": "github", "tool": "create_issue", "arguments": {"via": "b"}})
    );
    // And back to A.
    let back = on_a
        .call_tool(3, "notes__search", json!({"q": "a"}))
        .await?;
    assert_eq!(back.tool_echo()?["server"], json!("notes"));
    Ok(())
}

#[tokio::test]
async fn healthz_reports_the_loaded_config_version() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let health = gw.proxy.health().await?;
    assert_eq!(health.status, "ok");
    assert_eq!(health.config_version, gw.cfg.version());
    Ok(())
}

/// A proxy launched while someone else holds its client port (bound, not listening,
/// so Pingora keeps retrying the bind), with a token of workspace `eng`.
struct PortHeld {
    holder: tokio::net::TcpSocket,
    cfg: ConfigBuilder,
    token: String,
    proxy: Proxy,
}

impl PortHeld {
    fn launch() -> anyhow::Result<PortHeld> {
        let holder = tokio::net::TcpSocket::new_v4()?;
        holder.bind("127.0.0.1:0".parse()?)?;
        let mut cfg = ConfigBuilder::new()?;
        let token = cfg.token("eng");
        cfg.write()?;
        let proxy = Proxy::launch_on(cfg.path(), holder.local_addr()?)?;
        Ok(PortHeld {
            holder,
            cfg,
            token,
            proxy,
        })
    }
}

#[tokio::test]
async fn healthz_is_not_ok_until_clients_can_connect() -> anyhow::Result<()> {
    let PortHeld {
        holder,
        cfg,
        token,
        proxy,
    } = PortHeld::launch()?;

    let starting = within("/healthz answers", STEP_TIMEOUT, async {
        loop {
            if let Ok(answer) = proxy.health_status().await {
                return answer;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    assert_eq!(starting.0, 503, "{:?}", starting.1);
    assert_eq!(starting.1.status, "starting");
    assert_eq!(starting.1.config_version, cfg.version());

    drop(holder);
    wait_until(
        "/healthz says ok once the port is free",
        STEP_TIMEOUT,
        || async { proxy.health().await.is_ok() },
    )
    .await?;
    // And "ok" means a client gets through at once.
    let answer = RawClient::new(proxy.ws_url("eng"), Some(&token))
        .send_initialize()
        .await?;
    assert_eq!(answer.status, 200, "{}", answer.text());
    Ok(())
}

#[tokio::test]
async fn a_proxy_whose_client_port_stays_taken_exits_with_an_error() -> anyhow::Result<()> {
    // `cfg` is kept: dropping it would delete the config file.
    let PortHeld {
        holder,
        mut proxy,
        cfg: _cfg,
        ..
    } = PortHeld::launch()?;
    let listen = holder.local_addr()?;
    // Pingora retries the bind for 30 s before it gives up.
    let status = proxy.exit_within(Duration::from_secs(60)).await?;
    assert_eq!(status.code(), Some(1), "{status}");
    let log = proxy.log();
    assert!(
        log.contains(&format!("{listen} still in use")),
        "the log does not say which address: {log}"
    );
    Ok(())
}

#[tokio::test]
async fn metrics_count_the_calls_made() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let client = connect(&gw.eng_url(), &gw.alice).await?;
    tool_names(&client).await?;
    for _ in 0..3 {
        call(&client, "github__create_issue", json!({})).await?;
    }
    let unknown = client
        .peer()
        .call_tool(CallToolRequestParams::new("github__no_such_tool"))
        .await;
    assert!(unknown.is_err(), "an unknown tool must fail: {unknown:?}");

    let (status, text) = gw.proxy.metrics().await?;
    assert_eq!(status, 200);
    let calls = |server, tool, outcome| {
        metrics::sample(
            &text,
            "gatehouse_tool_calls_total",
            &[
                ("workspace", "eng"),
                ("server", server),
                ("tool", tool),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(
        calls("github", "github__create_issue", "ok"),
        Some(3.0),
        "{text}"
    );
    // A name the client made up is refused without minting a label for it.
    assert_eq!(calls("-", "-", "protocol_error"), Some(1.0), "{text}");
    assert!(
        !text.contains("no_such_tool"),
        "a refused name became a label:\n{text}"
    );
    let requests = |method, outcome| {
        metrics::sample(
            &text,
            "gatehouse_requests_total",
            &[
                ("workspace", "eng"),
                ("transport", "streamable_http"),
                ("method", method),
                ("outcome", outcome),
            ],
        )
    };
    assert_eq!(requests("tools/call", "ok"), Some(3.0), "{text}");
    assert_eq!(requests("tools/call", "unknown_tool"), Some(1.0), "{text}");
    assert_eq!(requests("tools/list", "ok"), Some(1.0), "{text}");
    // The three calls and the tools/list that filled the catalog.
    let histogram_count = metrics::sample(
        &text,
        "gatehouse_upstream_request_duration_seconds_count",
        &[("workspace", "eng"), ("server", "github")],
    );
    assert_eq!(histogram_count, Some(4.0), "{text}");
    for secret in [gw.alice.as_str(), GITHUB_SECRET, NOTES_SECRET] {
        assert!(!text.contains(secret), "metrics expose a secret");
    }
    client.cancel().await?;
    Ok(())
}
