//! The `hosted` scenario: a stdio MCP server Gatehouse hosts (the harness's
//! `gatehouse-stdio-fixture`, built on rmcp's stdio transport, installed with
//! `command`) called through the gateway, against the same server called directly
//! over its stdin and stdout by the same SDK (rmcp's client): the p50 of one call at
//! a time and the calls per second with `--connections` calls in flight (one rmcp
//! client each through the gateway; one client with that many requests in flight on
//! the one pipe directly). Then the runner's own memory per hosted process: the
//! control plane's RSS before and after `--processes` more are started (one per
//! workspace), the processes' own memory not counted.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{Peer, RoleClient};
use rmcp::ServiceExt;
use serde::Serialize;
use serde_json::json;

use crate::control_plane::ControlPlane;
use crate::report::{Measurement, Report};
use crate::targets::{require_built, ControlPlaneFeed, GatehouseProxy};

/// How long the first call may take to start the hosted process.
const FIRST_CALL: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Calls one at a time for the p50, each way.
    #[arg(long, default_value_t = 2_000)]
    calls: usize,
    /// Calls in flight for the throughput, each way.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of load for the throughput, each way.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Hosted processes started for the runner's memory per process.
    #[arg(long, default_value_t = 10)]
    processes: usize,
}

impl Args {
    pub fn options(self, build: &Path, out: &Path) -> Options {
        Options {
            calls: self.calls.max(10),
            connections: self.connections.max(1),
            duration: Duration::from_secs(self.seconds.max(1)),
            processes: self.processes.max(1),
            out: out.join("hosted"),
            proxy_bin: build.join("gatehouse-proxy"),
            control_plane_bin: build.join("gatehouse"),
            fixture_bin: build.join("gatehouse-stdio-fixture"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub calls: usize,
    pub connections: usize,
    pub duration: Duration,
    pub processes: usize,
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
    pub control_plane_bin: PathBuf,
    pub fixture_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    calls: usize,
    connections: usize,
    seconds: u64,
    processes: usize,
    /// The control plane's VmRSS (KiB) before and after the extra processes started.
    control_plane_rss_kib: (u64, u64),
}

/// What one way of calling measured.
struct Figures {
    p50_us: f64,
    rps: f64,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    require_built(
        &opts.fixture_bin,
        "gatehouse-tests",
        "--bin gatehouse-stdio-fixture",
    )?;
    require_built(&opts.proxy_bin, "gatehouse-proxy", "--bins")?;
    require_built(&opts.control_plane_bin, "gatehouse-control-plane", "--bins")?;
    std::fs::create_dir_all(&opts.out)?;

    // Directly: the fixture as a child, rmcp's client on its stdio.
    let mut child = tokio::process::Command::new(&opts.fixture_bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting the stdio fixture")?;
    let stdout = child.stdout.take().context("its stdout")?;
    let stdin = child.stdin.take().context("its stdin")?;
    let direct = ().serve((stdout, stdin)).await.context("initialize over stdio")?;
    let peers = vec![direct.peer().clone(); opts.connections];
    let direct_figures = measure(&opts, direct.peer(), &peers, "echo").await?;
    eprintln!(
        "  directly: p50 {:.0} us, {:.0} calls/s",
        direct_figures.p50_us, direct_figures.rps
    );
    drop(direct);
    drop(child);

    // Through the gateway: the control plane hosts it, a proxy fed by it routes.
    let cp = ControlPlane::start(&opts.control_plane_bin, &opts.out).await?;
    let admin = cp.login_admin().await?;
    let fixture = opts.fixture_bin.display().to_string();
    let workspaces: Vec<String> = (0..=opts.processes).map(|i| format!("ws{i}")).collect();
    let mut tokens = Vec::new();
    for ws in &workspaces {
        admin.create_workspace(ws, ws).await?;
        admin.install_stdio(ws, "fx", &fixture).await?;
        tokens.push(admin.create_token(ws, "bench").await?);
    }
    let url = cp.url();
    let feed = ControlPlaneFeed {
        url: &url,
        proxy_token: &cp.proxy_token,
        audit: true,
    };
    let proxy = GatehouseProxy::start_fed(
        &opts.proxy_bin,
        &opts.out,
        "gatehouse",
        &feed,
        tokens[0].clone(),
        1,
    )
    .await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    proxy
        .wait_for_config(&http, cp.config_version().await?, Duration::from_secs(30))
        .await?;
    let ws_url = |ws: &str| format!("http://{}/ws/{ws}", proxy.listen);
    let mut clients = Vec::new();
    for _ in 0..opts.connections {
        clients.push(gatehouse_tests::connect(&ws_url(&workspaces[0]), &tokens[0]).await?);
    }
    // The first call starts the process.
    tokio::time::timeout(FIRST_CALL, call(clients[0].peer(), "fx__echo", 0))
        .await
        .context("the first call through the gateway")??;
    let peers: Vec<Peer<RoleClient>> = clients.iter().map(|c| c.peer().clone()).collect();
    let gateway_figures = measure(&opts, clients[0].peer(), &peers, "fx__echo").await?;
    eprintln!(
        "  through the gateway: p50 {:.0} us, {:.0} calls/s",
        gateway_figures.p50_us, gateway_figures.rps
    );

    // The runner's memory per process: one more process per workspace.
    let before = gatehouse_tests::ProcessUsage::of(cp.pid)?.rss_kib;
    for (ws, token) in workspaces.iter().zip(&tokens).skip(1) {
        let client = gatehouse_tests::connect(&ws_url(ws), token).await?;
        tokio::time::timeout(FIRST_CALL, call(client.peer(), "fx__echo", 0))
            .await
            .with_context(|| format!("starting {ws}'s process"))??;
        drop(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = gatehouse_tests::ProcessUsage::of(cp.pid)?.rss_kib;
    let per_process_kib = after.saturating_sub(before) as f64 / opts.processes as f64;
    let warnings: Vec<String> = proxy.warnings().into_iter().chain(cp.warnings()).collect();
    drop(clients);
    proxy.stop().await;
    cp.stop().await;

    let p50_direct = Measurement::new(
        "tools/call p50, 1 at a time, directly over stdio",
        direct_figures.p50_us,
        "us",
    );
    let rps_direct = Measurement::new(
        format!(
            "tools/call/s, {} in flight, directly over stdio",
            opts.connections
        ),
        direct_figures.rps,
        "rps",
    );
    let measurements = vec![
        p50_direct.clone(),
        Measurement::new(
            "tools/call p50, 1 at a time, through the gateway",
            gateway_figures.p50_us,
            "us",
        )
        .vs(&p50_direct)
        .note(format!(
            "added {:.0} us",
            gateway_figures.p50_us - direct_figures.p50_us
        )),
        rps_direct.clone(),
        Measurement::new(
            format!(
                "tools/call/s, {} in flight, through the gateway",
                opts.connections
            ),
            gateway_figures.rps,
            "rps",
        )
        .vs(&rps_direct),
        Measurement::new(
            "runner memory per hosted process (control plane RSS)",
            per_process_kib / 1024.0,
            "MiB",
        )
        .note(format!(
            "{} processes: {:.1} -> {:.1} MiB",
            opts.processes,
            before as f64 / 1024.0,
            after as f64 / 1024.0
        )),
    ];
    let report = Report {
        scenario: "hosted",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment: Environment {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            calls: opts.calls,
            connections: opts.connections,
            seconds: opts.duration.as_secs(),
            processes: opts.processes,
            control_plane_rss_kib: (before, after),
        },
        measurements,
        runs: Vec::new(),
        problems: warnings,
        notes: vec![format!(
            "the same rmcp client both ways; the fixture's echo tool; proxy with 1 worker thread; the runner is in the control plane's process"
        )],
    };
    report.publish_saying(&opts.out, "no wrk in this scenario")
}

async fn call(peer: &Peer<RoleClient>, tool: &str, i: u64) -> anyhow::Result<()> {
    let params = CallToolRequestParams::new(tool.to_owned())
        .with_arguments(json!({"i": i}).as_object().cloned().unwrap_or_default());
    let result = peer.call_tool(params).await?;
    anyhow::ensure!(result.is_error != Some(true), "{tool} failed: {result:?}");
    Ok(())
}

/// p50 of `opts.calls` calls one after another on `one`, then calls per second with
/// one call at a time on each of `peers` for `opts.duration`.
async fn measure(
    opts: &Options,
    one: &Peer<RoleClient>,
    peers: &[Peer<RoleClient>],
    tool: &str,
) -> anyhow::Result<Figures> {
    for i in 0..(opts.calls / 10) as u64 {
        call(one, tool, i).await?;
    }
    let mut took = Vec::with_capacity(opts.calls);
    for i in 0..opts.calls as u64 {
        let started = Instant::now();
        call(one, tool, i).await?;
        took.push(started.elapsed());
    }
    took.sort();
    let p50_us = took[took.len() / 2].as_secs_f64() * 1e6;
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + opts.duration;
    let started = Instant::now();
    let loads = peers.iter().cloned().map(|peer| {
        let done = done.clone();
        let tool = tool.to_owned();
        tokio::spawn(async move {
            let mut i = 0;
            while Instant::now() < until {
                call(&peer, &tool, i).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            anyhow::Ok(())
        })
    });
    for load in futures::future::join_all(loads).await {
        load??;
    }
    let rps = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok(Figures { p50_us, rps })
}
