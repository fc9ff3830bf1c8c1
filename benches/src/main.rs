//! `gatehouse-bench`: the load harness of Gatehouse.
//!
//! It owns the end-to-end measurements of the data plane: an in-process rmcp upstream
//! ([`upstream`]), the processes under load ([`targets`]: gatehouse-proxy and nginx;
//! [`control_plane`]: `gatehouse serve` feeding proxies), wrk as the load generator
//! ([`wrk`]), measured runs with CPU accounting from `/proc` ([`harness`],
//! [`procstat`]), the scenarios ([`data_plane`], [`audit`], [`revocation`]: config
//! propagation, [`overload`]: the rate limiter's cost and isolation, [`faults`]:
//! misbehaving upstreams, [`scale_out`]: two control planes on PostgreSQL and three
//! proxies, against SQLite, [`hot_paths`], [`gateway`]: any other gateway,
//! [`instructions`]: callgrind counts, [`all`]: every load scenario
//! in one report) and the report they print ([`report`]).
//! Micro-benchmarks of the hot paths live in `benches/hot_paths.rs` (criterion).

mod all;
mod audit;
mod client;
mod control_plane;
mod data_plane;
mod eras;
mod fast_upstream;
mod faults;
mod gateway;
mod harness;
mod hosted;
mod hot_paths;
mod instructions;
mod legacy_client;
mod overload;
mod procstat;
mod prometheus;
mod report;
mod revocation;
mod scale_out;
mod sessions;
mod sse_vs_streamable;
mod targets;
mod upstream;
mod wrk;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};

use crate::upstream::{UpstreamFleet, UpstreamKind, UpstreamMode};

#[derive(Parser, Debug)]
#[command(name = "gatehouse-bench", about = "Gatehouse load harness")]
struct Cli {
    /// Where scripts, configs, logs and reports go (default: <target dir>/bench).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// tools/call echo direct, through nginx and through gatehouse-proxy; warm and cold
    /// merged tools/list; CPU per call. Prints a table, writes report.json.
    DataPlane(DataPlaneArgs),
    /// What auditing costs: tools/call throughput and CPU of a control-plane-fed proxy
    /// with audit on vs `--no-audit`, alternating in one run, and the audit events
    /// shipped, dropped and stored. Prints a table, writes audit/report.json.
    Audit(AuditArgs),
    /// Config propagation: N tokens created and revoked through the control plane's
    /// API, each timed from the start of the revoke call to the first 401 from a proxy
    /// it feeds (p50/p99/max). Writes revocation/report.json.
    Revocation(revocation::Args),
    /// Two control planes on one PostgreSQL database and three proxies fed by both:
    /// revoke on one replica -> 401 on every proxy (p50/p99); audit events stored per
    /// second and admin API reads per second, PostgreSQL vs SQLite. Needs Debian's
    /// postgresql. Writes scale-out/report.json.
    ScaleOut(scale_out::Args),
    /// tools/call round trips over legacy HTTP+SSE vs Streamable HTTP, one session
    /// (latency) and many (throughput). Writes sse-vs-streamable/report.json.
    SseVsStreamable(sse_vs_streamable::Args),
    /// N sessions each holding a GET stream open: proxy RSS per session, keep-alives
    /// delivered, streams broken. Writes sessions/report.json.
    Sessions(sessions::Args),
    /// tools/call throughput (1 and N connections) and p50/p99 of any MCP gateway URL
    /// (Streamable HTTP, bearer token). Writes target/report.json.
    Target(gateway::Args),
    /// Instructions gatehouse-proxy executes per tools/call and per warm tools/list,
    /// counted by callgrind. Writes instructions/report.json.
    Instructions(instructions::Args),
    /// tools/call of MCP 2026-07-28 (stateless) vs the session era through the same
    /// proxy, both direct, and a stateless call bridged to a session-era upstream.
    /// Writes eras/report.json.
    Eras(eras::Args),
    /// The rate limiter: proxy CPU per call with budgets checked vs none (same run),
    /// and quiet tokens' p99 beside one token sending 10x its budget vs without.
    /// Writes overload/report.json.
    Overload(overload::Args),
    /// Misbehaving upstreams: healthy servers' tools/call p99 in the same and another
    /// workspace without and during each fault (target: within 2x), and the proxy's
    /// RSS and open fds over N faulty calls. Writes faults/report.json.
    Faults(faults::Args),
    /// A hosted stdio server through the gateway vs the same server over its stdio,
    /// both with rmcp's client: p50 of one call at a time, calls/s with 32 in flight;
    /// the runner's memory per hosted process. Writes hosted/report.json.
    Hosted(hosted::Args),
    /// Every load scenario in turn with its defaults; one combined report.json.
    All,
    /// Summarises the last `cargo bench --bench hot_paths` run against its budgets.
    HotPaths,
    /// Serves the bench upstream until interrupted (for poking at it by hand).
    Upstream {
        #[arg(long, default_value_t = 1)]
        servers: usize,
        #[arg(long, default_value_t = 1)]
        tools: usize,
        /// Which server: rmcp's, or the minimal hyper one `data-plane` uses by default.
        #[arg(long, value_enum, default_value_t = UpstreamKind::Rmcp)]
        kind: UpstreamKind,
        /// How the rmcp server answers (the fast one answers one way).
        #[arg(long, value_enum, default_value_t = UpstreamMode::StatelessJson)]
        mode: UpstreamMode,
    },
}

/// How a scenario loads its targets: the flags every wrk scenario shares.
#[derive(clap::Args, Debug)]
struct LoadArgs {
    /// Connections of the throughput runs (latency runs use 1).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// wrk threads for the throughput runs.
    #[arg(long, default_value_t = 1)]
    wrk_threads: u32,
    #[arg(long, value_enum, default_value_t = UpstreamMode::StatelessJson)]
    upstream_mode: UpstreamMode,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// Seconds to wait for other processes to leave the CPU before starting (0: don't).
    #[arg(long, default_value_t = 0.0)]
    wait_quiet: f64,
    /// Times a run is done again when other processes took CPU during it.
    #[arg(long, default_value_t = 0)]
    noise_retries: u32,
}

#[derive(clap::Args, Debug)]
struct DataPlaneArgs {
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of the warm-up run before each target's measured runs (0 = none).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// gatehouse-proxy worker thread counts to measure, each with its own proxy.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    proxy_threads: Vec<usize>,
    /// Upstreams behind the merged tools/list (0 skips it).
    #[arg(long, default_value_t = 10)]
    list_upstreams: usize,
    /// Tools each of those upstreams exposes (echo + fillers).
    #[arg(long, default_value_t = 50)]
    tools_per_upstream: usize,
    /// The nginx binary (default: found on PATH or in /usr/sbin).
    #[arg(long)]
    nginx: Option<PathBuf>,
    /// Leave nginx out even when it is installed.
    #[arg(long)]
    no_nginx: bool,
    /// The upstream every path ends at: `fast`, a minimal hyper server answering the
    /// same bodies with far less CPU, so the proxies set the throughput; or `rmcp`,
    /// a real rmcp server (`--upstream-mode` says how it answers).
    #[arg(long, value_enum, default_value_t = UpstreamKind::Fast)]
    upstream: UpstreamKind,
    /// Worker threads of the upstream's runtime (default: a quarter of the CPUs, at
    /// least 1).
    #[arg(long)]
    upstream_threads: Option<usize>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(clap::Args, Debug)]
struct AuditArgs {
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds of the warm-up run of each proxy before the measured runs (0 = none).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Measured runs of each proxy (off, on, off, on, ...); at least 2.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of each gatehouse-proxy.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// The `gatehouse` binary that runs the control plane (default: next to this one).
    #[arg(long)]
    control_plane_bin: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
}

/// `<target>/release`: where this binary and gatehouse-proxy are built.
fn build_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this binary")?;
    Ok(exe
        .parent()
        .context("binary has no directory")?
        .to_path_buf())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let build = build_dir()?;
    let target = build.parent().map_or_else(|| build.clone(), PathBuf::from);
    let out = cli.out.unwrap_or_else(|| target.join("bench"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let seconds = |s: f64| Duration::from_secs_f64(s.max(0.0));
    match cli.scenario {
        Scenario::DataPlane(a) => {
            let opts = data_plane::Options {
                duration: seconds(a.duration.max(1.0)),
                warmup: seconds(a.warmup),
                proxy_threads: a.proxy_threads,
                wrk_threads: a.load.wrk_threads.max(1),
                connections: a.load.connections.max(1),
                upstream: a.upstream,
                upstream_mode: a.load.upstream_mode,
                upstream_threads: a
                    .upstream_threads
                    .unwrap_or_else(|| {
                        std::thread::available_parallelism().map_or(1, |n| n.get() / 4)
                    })
                    .max(1),
                list_upstreams: a.list_upstreams,
                tools_per_upstream: a.tools_per_upstream,
                out,
                proxy_bin: a
                    .load
                    .proxy_bin
                    .unwrap_or_else(|| build.join("gatehouse-proxy")),
                pingora_bare: build.join("pingora-bare"),
                wait_quiet: seconds(a.load.wait_quiet),
                noise_retries: a.load.noise_retries,
                no_nginx: a.no_nginx,
                nginx: if a.no_nginx {
                    None
                } else {
                    a.nginx.or_else(targets::Nginx::find)
                },
            };
            runtime.block_on(data_plane::run(opts))
        }
        Scenario::Audit(a) => {
            let opts = audit::Options {
                duration: seconds(a.duration.max(1.0)),
                warmup: seconds(a.warmup),
                rounds: a.rounds.max(2),
                connections: a.load.connections.max(1),
                wrk_threads: a.load.wrk_threads.max(1),
                proxy_threads: a.proxy_threads.max(1),
                upstream_mode: a.load.upstream_mode,
                out: out.join("audit"),
                proxy_bin: a
                    .load
                    .proxy_bin
                    .unwrap_or_else(|| build.join("gatehouse-proxy")),
                control_plane_bin: a
                    .control_plane_bin
                    .unwrap_or_else(|| build.join("gatehouse")),
                wait_quiet: seconds(a.load.wait_quiet),
                noise_retries: a.load.noise_retries,
            };
            runtime.block_on(audit::run(opts))
        }
        Scenario::Revocation(a) => runtime.block_on(revocation::run(a.options(&build, &out))),
        Scenario::ScaleOut(a) => runtime.block_on(scale_out::run(a.options(&build, &out))),
        Scenario::SseVsStreamable(a) => {
            runtime.block_on(sse_vs_streamable::run(a.options(&build, &out)))
        }
        Scenario::Sessions(a) => runtime.block_on(sessions::run(a.options(&build, &out))),
        Scenario::Eras(a) => runtime.block_on(eras::run(a.options(&build, &out))),
        Scenario::Overload(a) => runtime.block_on(overload::run(a.options(&build, &out))),
        Scenario::Target(a) => runtime.block_on(gateway::run(a.options(&out)?)),
        Scenario::Instructions(a) => runtime.block_on(instructions::run(a.options(&build, &out))),
        Scenario::Faults(a) => runtime.block_on(faults::run(a.options(&build, &out))),
        Scenario::Hosted(a) => runtime.block_on(hosted::run(a.options(&build, &out))),
        Scenario::All => {
            let commands: Vec<String> = Cli::command()
                .get_subcommands()
                .map(|c| c.get_name().to_string())
                .collect();
            all::run(&std::env::current_exe()?, &out, &commands)
        }
        Scenario::HotPaths => hot_paths::run(&target.join("criterion"), &out),
        Scenario::Upstream {
            servers,
            tools,
            kind,
            mode,
        } => runtime.block_on(async {
            let fleet = UpstreamFleet::start_kind(kind, servers, tools, mode, 1).await?;
            for i in 0..fleet.len() {
                println!("{}", fleet.url(i));
            }
            tokio::signal::ctrl_c().await?;
            Ok(())
        }),
    }
}
