//! The scaled-out deployment under failures, as its users see it: PostgreSQL, two
//! control planes, three proxies (each given both control planes, in different
//! orders) and nginx balancing real MCP clients (rmcp) over the proxies. While
//! clients call tools without pause, one control plane is killed (SIGKILL) and later
//! restarted, one proxy is killed (SIGKILL) with calls in flight and later restarted
//! on its state dir, and PostgreSQL is restarted (a cluster of the test's own).
//!
//! - Every call succeeds, at worst after one reconnect through the balancer.
//! - Every call the upstream executed is in the audit log exactly once, per client.
//! - A token revoked on the surviving control plane once the database is back is
//!   refused by every surviving proxy, and by the restarted one; one revoked on the
//!   restarted control plane is refused by every proxy, those that moved away too.
//!
//! The killed proxy's audit events that were not yet delivered are in its journal
//! (`audit-journal/` in its state dir); the restarted proxy moves them to its spool
//! and delivers them, and the control plane stores each once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use gatehouse_tests::balancer::Balancer;
use gatehouse_tests::control_plane::{GatewayPorts, GatewayProxy};
use gatehouse_tests::deployment::token_in;
use gatehouse_tests::postgres;
use gatehouse_tests::replica_set::ReplicaSet;
use gatehouse_tests::{
    connect, metrics, wait_until, within, RawClient, TempDir, Upstream, UpstreamTool, STEP_TIMEOUT,
};
use reqwest::Method;
use serde_json::json;

use crate::fixture::{call_echo, until_initialize_answers, until_refused};

const WS: &str = "eng";
const CLIENTS: usize = 4;
/// Pacing of each client: steady traffic on a small machine, not a load test.
const CALL_EVERY: Duration = Duration::from_millis(5);
/// Generous for a loaded debug build; what it really took is printed.
const ENFORCEMENT_LIMIT: Duration = Duration::from_secs(5);
/// Delivery of every audit event, including a restarted proxy's spool.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// What one client saw.
#[derive(Debug, Default)]
struct Tally {
    succeeded: u64,
    /// Calls that failed once, then succeeded after a reconnect.
    reconnects: u64,
    first_failures: Vec<String>,
}

/// Client `c` calls `github__create_issue` through `url` until `stop`. A call that
/// fails is retried once on a new session (a reconnect through the balancer); a
/// call that fails again fails the client.
async fn drive(
    url: String,
    token: String,
    c: usize,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::default();
    let mut client = connect(&url, &token).await?;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let arguments = json!({"client": c, "n": n});
        let echo = match call_echo(&client, "github__create_issue", arguments.clone()).await {
            Ok(echo) => echo,
            Err(first) => {
                tally.reconnects += 1;
                tally.first_failures.push(format!("{first:#}"));
                let _ = within("closing a broken session", STEP_TIMEOUT, client.cancel()).await;
                client = connect(&url, &token)
                    .await
                    .with_context(|| format!("client {c}: reconnect after {first:#}"))?;
                call_echo(&client, "github__create_issue", arguments.clone())
                    .await
                    .with_context(|| {
                        format!("client {c}, call {n}: failed again after a reconnect (first: {first:#})")
                    })?
            }
        };
        anyhow::ensure!(
            echo["arguments"] == arguments,
            "client {c}, call {n} echoed {echo}"
        );
        tally.succeeded += 1;
        n += 1;
        tokio::time::sleep(CALL_EVERY).await;
    }
    let _ = within("closing the session", STEP_TIMEOUT, client.cancel()).await;
    Ok(tally)
}

/// Tool calls the upstream executed: all, and per client.
fn executed(upstream: &Upstream) -> (u64, Vec<u64>) {
    let mut per_client = vec![0u64; CLIENTS];
    let mut all = 0;
    for call in upstream.calls().iter().filter(|c| c.tool == "create_issue") {
        if let Some(c) = call.arguments["client"].as_u64() {
            per_client[c as usize] += 1;
            all += 1;
        }
    }
    (all, per_client)
}

async fn until_executed(upstream: &Upstream, at_least: u64) -> anyhow::Result<()> {
    wait_until(
        &format!("the upstream executes {at_least} calls"),
        STEP_TIMEOUT,
        || async { executed(upstream).0 >= at_least },
    )
    .await
}

#[tokio::test]
async fn clients_through_a_balancer_ride_out_a_dead_control_plane_and_proxy() -> anyhow::Result<()>
{
    let cluster = postgres::own_cluster()?;
    let mut set = ReplicaSet::start_on(cluster, 2).await?;
    let admin = set.admin_at(1).await?;
    admin.ok(&["workspace", "create", "Eng"]).await?;
    let upstream = Upstream::builder("github")
        .tools([UpstreamTool::new("create_issue")])
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
    let mut tokens = Vec::new();
    for c in 0..CLIENTS {
        let name = format!("client-{c}");
        tokens.push(token_in(
            &admin
                .ok(&["workspace", "token", "create", WS, "--name", &name])
                .await?,
        )?);
    }
    let doomed = token_in(
        &admin
            .ok(&["workspace", "token", "create", WS, "--name", "doomed"])
            .await?,
    )?;
    let doomed_late = token_in(
        &admin
            .ok(&["workspace", "token", "create", WS, "--name", "doomed-late"])
            .await?,
    )?;

    // Three proxies: 0 and 2 follow replica A first, 1 follows B first.
    let urls = set.urls();
    let reversed = urls.split(',').rev().collect::<Vec<_>>().join(",");
    let mut proxies = Vec::new();
    let mut states = Vec::new();
    let mut ports = Vec::new();
    for p in 0..3 {
        let state = TempDir::new(&format!("chaos-edge-{p}"))?;
        let pick = GatewayPorts::pick()?;
        let order = if p == 1 { &reversed } else { &urls };
        proxies.push(
            GatewayProxy::start_named(
                order,
                set.proxy_token(),
                state.path(),
                pick,
                &format!("edge-{p}"),
            )
            .await?,
        );
        states.push(state);
        ports.push(pick);
    }
    for proxy in &proxies {
        until_initialize_answers(&proxy.ws_url(WS), &doomed, 200, STEP_TIMEOUT).await?;
    }
    let balancer = Balancer::start(&ports.iter().map(|p| p.listen).collect::<Vec<_>>()).await?;

    // Sessions of the token to be revoked, open on each proxy directly.
    let mut doomed_sessions = Vec::new();
    for proxy in &proxies {
        let mut session = RawClient::new(proxy.ws_url(WS), Some(&doomed));
        session.initialize().await?;
        doomed_sessions.push(session);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(c, token)| {
            tokio::spawn(drive(
                balancer.url(&format!("/ws/{WS}")),
                token.clone(),
                c,
                stop.clone(),
            ))
        })
        .collect();
    until_executed(&upstream, 60).await?;

    // Control plane A dies mid-stream; proxies 0 and 2 move to B.
    set.planes[0].kill();
    let (before, _) = executed(&upstream);
    until_executed(&upstream, before + 60).await?;

    // Proxy 1 is killed with calls in flight through it.
    proxies[1].kill();
    let (before, _) = executed(&upstream);
    until_executed(&upstream, before + 60).await?;

    // PostgreSQL restarts under the survivor: audit batches meanwhile are refused
    // and spooled by the proxies; gateway calls do not need the database.
    tokio::task::spawn_blocking(move || cluster.restart()).await??;
    let (before, _) = executed(&upstream);
    until_executed(&upstream, before + 60).await?;

    // Revoked on B, the survivor, while calls go on: refused by every live proxy.
    let session = admin.session_token()?;
    let revoked_at = Instant::now();
    let answer = set.planes[1]
        .request(
            Method::POST,
            &format!("/v1/workspaces/{WS}/tokens/revoke"),
            Some(&session),
            Some(&json!({"name": "doomed"})),
        )
        .await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let (on_0, on_2) = tokio::join!(
        until_refused(&doomed_sessions[0], revoked_at, ENFORCEMENT_LIMIT),
        until_refused(&doomed_sessions[2], revoked_at, ENFORCEMENT_LIMIT),
    );
    let (on_0, on_2) = (on_0.context("proxy edge-0")?, on_2.context("proxy edge-2")?);

    // Proxy 1 comes back (same state dir): it refuses the token too.
    proxies[1].restart().await?;
    until_initialize_answers(&proxies[1].ws_url(WS), &doomed, 401, ENFORCEMENT_LIMIT).await?;
    let (before, _) = executed(&upstream);
    until_executed(&upstream, before + 60).await?;

    // Control plane A comes back (same port, same database). No proxy follows it now;
    // a token revoked there reaches them all through the database.
    set.planes[0].restart().await?;
    let mut late_sessions = Vec::new();
    for proxy in &proxies {
        let mut session = RawClient::new(proxy.ws_url(WS), Some(&doomed_late));
        session.initialize().await?;
        late_sessions.push(session);
    }
    let revoked_at = Instant::now();
    let answer = set.planes[0]
        .request(
            Method::POST,
            &format!("/v1/workspaces/{WS}/tokens/revoke"),
            Some(&session),
            Some(&json!({"name": "doomed-late"})),
        )
        .await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let mut late = Vec::new();
    for (p, s) in late_sessions.iter().enumerate() {
        late.push(
            until_refused(s, revoked_at, ENFORCEMENT_LIMIT)
                .await
                .with_context(|| format!("proxy edge-{p}, revoked on the restarted A"))?,
        );
    }
    let (before, _) = executed(&upstream);
    until_executed(&upstream, before + 60).await?;

    stop.store(true, Ordering::Relaxed);
    let mut tallies = Vec::new();
    for (c, client) in clients.into_iter().enumerate() {
        tallies.push(client.await?.with_context(|| format!("client {c}"))?);
    }
    let succeeded: u64 = tallies.iter().map(|t| t.succeeded).sum();
    let reconnects: u64 = tallies.iter().map(|t| t.reconnects).sum();
    let (all, per_client) = executed(&upstream);
    println!(
        "{succeeded} calls succeeded, {reconnects} after a reconnect, {all} executed upstream; \
         revocation refused on edge-0 in {on_0:?}, edge-2 in {on_2:?}; \
         revoked on the restarted replica, refused in {late:?}"
    );
    for t in &tallies {
        for f in &t.first_failures {
            println!("  first attempt failed: {f}");
        }
    }
    // A failed attempt may or may not have reached the upstream before it failed.
    assert!(
        succeeded <= all && all <= succeeded + reconnects,
        "{succeeded} succeeded, {reconnects} retried, {all} executed"
    );

    // Exactly once. Per client, the audit log holds each call the proxy answered
    // (`n`) once, and at most one `interrupted` event (`i`) per attempt a killed
    // proxy had in flight, whose outcome it cannot know: that attempt may or may
    // not have reached the upstream. So per client n <= executed <= n + i, and every
    // call the client saw succeed is among the n.
    let stored = || -> anyhow::Result<Vec<(u64, u64)>> {
        let text = set.psql(
            "SELECT string_agg(token_name || '=' || n || '/' || i, ',' ORDER BY token_name) \
             FROM (SELECT token_name, \
             COUNT(*) FILTER (WHERE outcome <> 'interrupted') AS n, \
             COUNT(*) FILTER (WHERE outcome = 'interrupted') AS i \
             FROM call_events WHERE action = 'tool_call' GROUP BY token_name) AS per_token",
        )?;
        let mut counts = vec![(0, 0); CLIENTS];
        for entry in text.trim().split(',').filter(|e| !e.is_empty()) {
            let (name, n_i) = entry.split_once('=').context("token=n/i")?;
            let (n, i) = n_i.split_once('/').context("n/i")?;
            let c: usize = name.trim_start_matches("client-").parse()?;
            counts[c] = (n.parse()?, i.parse()?);
        }
        Ok(counts)
    };
    let consistent = |counts: &[(u64, u64)]| {
        counts.iter().enumerate().all(|(c, &(n, i))| {
            n >= tallies[c].succeeded && n <= per_client[c] && per_client[c] <= n + i
        })
    };
    let delivered = wait_until(
        "every executed call is in the audit log",
        DELIVERY_TIMEOUT,
        || async { stored().is_ok_and(|counts| consistent(&counts)) },
    )
    .await;
    if delivered.is_err() {
        panic!(
            "audit log per client (answered, interrupted): {:?}\n\
             executed upstream: {per_client:?}\nsucceeded at the client: {:?}",
            stored()?,
            tallies.iter().map(|t| t.succeeded).collect::<Vec<_>>()
        );
    }
    // Interrupted events: one per attempt its client retried, or, per proxy killed,
    // at most one whose answer went out just before the kill, ahead of its final
    // journal line (the proxy cannot know the client got it).
    let interrupted: u64 = stored()?.iter().map(|&(_, i)| i).sum();
    println!("{interrupted} call(s) recorded as interrupted by the killed proxy");
    const PROXIES_KILLED: u64 = 1;
    assert!(
        interrupted <= reconnects + PROXIES_KILLED,
        "{interrupted} interrupted, {reconnects} retried"
    );
    for proxy in &proxies {
        let text = proxy.metrics().await?;
        assert_eq!(
            metrics::sum(&text, "gatehouse_audit_events_dropped_total", &[]),
            0.0,
            "{}: {text}",
            proxy.name()
        );
    }
    Ok(())
}
