//! A proxy given every replica's URL (`gatehouse-proxy --control-plane A,B`) when
//! the replica it follows is killed mid-stream: clients never notice, the proxy's
//! config watch, audit shipping and token-use report move to the other replica, a
//! token revoked there is refused shortly after, every call made across the failover
//! is in the audit log exactly once, and a proxy starting while the first replica is
//! down takes its config from the second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse_tests::control_plane::{GatewayPorts, GatewayProxy};
use gatehouse_tests::deployment::token_in;
use gatehouse_tests::replica_set::ReplicaSet;
use gatehouse_tests::{
    connect, metrics, wait_until, McpClient, RawClient, TempDir, Upstream, UpstreamTool,
    STEP_TIMEOUT,
};
use reqwest::Method;
use serde_json::json;

use crate::fixture::{call_echo, until_initialize_answers, until_refused};

const WS: &str = "eng";
/// Generous for a loaded debug build; what it really took is printed.
const ENFORCEMENT_LIMIT: Duration = Duration::from_secs(5);
/// Pacing of the background caller: steady traffic, not a load test.
const CALL_EVERY: Duration = Duration::from_millis(10);

/// Calls `github__create_issue` on `client` until `stop`, failing on the first call
/// that does not come back with its echo; returns how many succeeded.
fn keep_calling(
    client: McpClient,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<anyhow::Result<u64>> {
    tokio::spawn(async move {
        let mut done = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let echo = call_echo(&client, "github__create_issue", json!({"n": done}))
                .await
                .map_err(|e| anyhow::anyhow!("call {done} failed: {e:#}"))?;
            anyhow::ensure!(echo["arguments"]["n"] == done, "call {done} echoed {echo}");
            done += 1;
            tokio::time::sleep(CALL_EVERY).await;
        }
        let _ = client.cancel().await;
        Ok(done)
    })
}

async fn shipped(proxy: &GatewayProxy) -> f64 {
    proxy.metrics().await.map_or(0.0, |text| {
        metrics::sum(&text, "gatehouse_audit_events_shipped_total", &[])
    })
}

#[tokio::test]
async fn a_proxy_moves_to_the_next_replica_when_its_own_is_killed() -> anyhow::Result<()> {
    let mut set = ReplicaSet::start(2).await?;
    let admin_a = set.admin_at(0).await?;
    let admin_b = set.admin_at(1).await?;
    let session_b = admin_b.session_token()?;
    let token = token_in(&admin_a.ok(&["workspace", "create", "Eng"]).await?)?;
    let laptop = token_in(
        &admin_a
            .ok(&["workspace", "token", "create", WS, "--name", "laptop"])
            .await?,
    )?;
    let upstream = Upstream::builder("github")
        .tools([UpstreamTool::new("create_issue")])
        .start()
        .await?;
    admin_a
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

    let state = TempDir::new("edge-1")?;
    let proxy = GatewayProxy::start_named(
        &set.urls(),
        set.proxy_token(),
        state.path(),
        GatewayPorts::pick()?,
        "edge-1",
    )
    .await?;
    let ws_url = proxy.ws_url(WS);
    until_initialize_answers(&ws_url, &token, 200, STEP_TIMEOUT).await?;
    // The first URL is the one followed; the other replica has not seen the proxy.
    let session_a = admin_a.session_token()?;
    wait_until("replica A lists edge-1 connected", STEP_TIMEOUT, || async {
        set.connected_at(0, &session_a)
            .await
            .is_ok_and(|names| names == ["edge-1"])
    })
    .await?;
    assert_eq!(set.connected_at(1, &session_b).await?, Vec::<String>::new());

    let mut laptop_session = RawClient::new(&ws_url, Some(&laptop));
    laptop_session.initialize().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let caller = keep_calling(connect(&ws_url, &token).await?, stop.clone());
    wait_until("calls are shipped to replica A", STEP_TIMEOUT, || async {
        shipped(&proxy).await >= 20.0
    })
    .await?;

    // SIGKILL, with the watch stream open and calls flowing.
    set.planes[0].kill();
    let killed = Instant::now();
    wait_until("replica B lists edge-1 connected", STEP_TIMEOUT, || async {
        set.connected_at(1, &session_b)
            .await
            .is_ok_and(|names| names == ["edge-1"])
    })
    .await?;
    let watch_moved = killed.elapsed();
    let shipped_at_kill = shipped(&proxy).await;
    wait_until(
        "calls made after the kill are shipped to B",
        STEP_TIMEOUT,
        || async { shipped(&proxy).await >= shipped_at_kill + 20.0 },
    )
    .await?;

    // Revoked through B, with an open session on the proxy.
    let revoked_at = Instant::now();
    admin_b
        .ok(&["workspace", "token", "revoke", WS, "--name", "laptop"])
        .await?;
    let took = until_refused(&laptop_session, revoked_at, ENFORCEMENT_LIMIT).await?;
    println!(
        "watch on replica B {watch_moved:?} after A was killed; revocation on B refused in {took:?}"
    );

    stop.store(true, Ordering::Relaxed);
    let calls = caller.await??;
    wait_until("every call is shipped", STEP_TIMEOUT, || async {
        shipped(&proxy).await >= calls as f64
    })
    .await?;
    let text = proxy.metrics().await?;
    assert_eq!(
        metrics::sum(&text, "gatehouse_audit_events_dropped_total", &[]),
        0.0,
        "{text}"
    );
    // Exactly once: as many events as calls, one per JSON-RPC id of the session.
    let stored = set.psql(
        "SELECT COUNT(*) || ' ' || COUNT(DISTINCT request_id) FROM call_events \
         WHERE action = 'tool_call'",
    )?;
    assert_eq!(stored, format!("{calls} {calls}"), "calls made: {calls}");
    let listed = set.planes[1]
        .request(
            Method::GET,
            &format!("/v1/workspaces/{WS}/audit?action=tool_call&limit=10000"),
            Some(&session_b),
            None,
        )
        .await?
        .json()?;
    let events = listed["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len() as u64, calls);
    assert!(
        proxy.log().contains("moving to the next one"),
        "the proxy log does not say it moved:\n{}",
        proxy.log()
    );

    // A proxy started now, with A still down and no snapshot on disk, takes its
    // config from B: the workspace, and the revocation.
    let fresh_state = TempDir::new("edge-2")?;
    let fresh = GatewayProxy::start_named(
        &set.urls(),
        set.proxy_token(),
        fresh_state.path(),
        GatewayPorts::pick()?,
        "edge-2",
    )
    .await?;
    let fresh_url = fresh.ws_url(WS);
    until_initialize_answers(&fresh_url, &token, 200, STEP_TIMEOUT).await?;
    until_initialize_answers(&fresh_url, &laptop, 401, STEP_TIMEOUT).await?;
    assert!(
        !fresh.log().contains("saved on disk"),
        "the new proxy did not reach B:\n{}",
        fresh.log()
    );
    Ok(())
}
