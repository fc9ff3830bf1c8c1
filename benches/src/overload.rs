//! The `overload` scenario: what the rate limiter costs the request path, and whether
//! it keeps one token's flood from hurting everyone else.
//!
//! Cost: two proxies serve the same workspace, one with workspace and per-token
//! budgets far above the load (every request and `tools/call` goes through the
//! limiter and is admitted), one with none. wrk loads them in turn (off, on, off, ...)
//! and the proxy CPU per call of the two is compared.
//!
//! Isolation: one proxy whose workspace gives each token a budget of requests/s.
//! Quiet tokens send echo calls at a fixed rate well inside their budgets, each
//! latency taken from the moment the call was due (so a stalled proxy is not hidden
//! by a client that waits before sending the next). Rounds alternate between the
//! quiet tokens alone and the quiet tokens beside one token sending ten times its
//! budget; the quiet tokens' p99 under overload is held to at most twice their p99
//! alone, and the flooding token's admitted calls to its budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use serde_json::{json, Value};

use crate::audit::median;
use crate::client::{checked_session, echo_request, tools_call_body, McpSession};
use crate::harness::{Harness, RunCpu};
use crate::procstat::CpuClock;
use crate::report::{Measurement, Target};
use crate::targets::{new_token, GatehouseProxy, WORKSPACE};
use crate::upstream::{UpstreamFleet, UpstreamMode};
use crate::wrk::{WrkRequest, WrkResult};

const TOOL: &str = "s0__echo";
/// The quiet tokens' p99 under overload may be at most this many times their p99
/// without it.
const P99_RATIO_TARGET: f64 = 2.0;
/// A budget no load of this harness reaches: the limiter runs and always admits.
const UNREACHED_RPS: f64 = 10_000_000.0;
const UNREACHED_BURST: u32 = 10_000_000;
const UNREACHED_CALLS_PER_MINUTE: u32 = 1_000_000_000;
/// How many calls of a paced sender may be in flight before it skips one (and
/// counts it as failed): a bound on what a stalled proxy makes this process hold.
const MAX_IN_FLIGHT: usize = 512;

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of each measured run (wrk runs and paced rounds alike).
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Measured runs of each side: limiter off/on, and quiet alone/overloaded.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections of the limiter-cost runs.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Each token's budget in the isolation runs, requests per second.
    #[arg(long, default_value_t = 100.0)]
    token_rps: f64,
    /// Quiet tokens in the isolation runs.
    #[arg(long, default_value_t = 4)]
    quiet_tokens: usize,
    /// Each quiet token's rate, as a fraction of its budget.
    #[arg(long, default_value_t = 0.5)]
    quiet_share: f64,
    /// The flooding token's rate, as a multiple of its budget.
    #[arg(long, default_value_t = 10.0)]
    overload: f64,
    /// Worker threads of each gatehouse-proxy.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
}

impl Args {
    /// The options of a run whose binaries are in `build` and files go under `out`.
    pub fn options(self, build: &Path, out: &Path) -> Options {
        Options {
            duration: Duration::from_secs_f64(self.duration.max(1.0)),
            rounds: self.rounds.max(1),
            connections: self.connections.max(1),
            token_rps: self.token_rps.max(1.0),
            quiet_tokens: self.quiet_tokens.max(1),
            quiet_share: self.quiet_share.clamp(0.01, 1.0),
            overload: self.overload.max(1.0),
            proxy_threads: self.proxy_threads.max(1),
            out: out.join("overload"),
            proxy_bin: self
                .proxy_bin
                .unwrap_or_else(|| build.join("gatehouse-proxy")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub rounds: usize,
    pub connections: u32,
    pub token_rps: f64,
    pub quiet_tokens: usize,
    pub quiet_share: f64,
    pub overload: f64,
    pub proxy_threads: usize,
    /// Where this scenario's files go (`<out>/overload`).
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    proxy_binary: String,
    duration_s: f64,
    rounds: usize,
    connections: u32,
    proxy_threads: usize,
    token_rps: f64,
    quiet_tokens: usize,
    quiet_rps_each: f64,
    flood_rps: f64,
    /// Every isolation round, in the order they ran.
    rounds_run: Vec<Round>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let fleet = UpstreamFleet::start(1, 1, UpstreamMode::StatelessJson).await?;
    let upstream = fleet.url(0);
    let http = reqwest::Client::new();
    let mut h = Harness::new(&opts.out, CpuClock::detect(), 1, 0, Duration::ZERO);

    // Cost: the same workspace with and without budgets.
    let token = new_token();
    let unreached = json!({
        "workspace": {
            "requests_per_second": UNREACHED_RPS,
            "burst": UNREACHED_BURST,
            "tool_calls_per_minute": UNREACHED_CALLS_PER_MINUTE
        },
        "per_token": {
            "requests_per_second": UNREACHED_RPS,
            "burst": UNREACHED_BURST,
            "tool_calls_per_minute": UNREACHED_CALLS_PER_MINUTE
        }
    });
    let mut off = Side::start(&opts, &http, "limiter-off", &upstream, &token, None).await?;
    let mut on = Side::start(
        &opts,
        &http,
        "limiter-on",
        &upstream,
        &token,
        Some(unreached),
    )
    .await?;
    let load = h.load(opts.connections, opts.duration);
    for side in [&mut off, &mut on] {
        let warm = h.load(opts.connections, Duration::from_secs(1));
        h.wrk(
            &format!("{} warm-up", side.label),
            &side.script,
            &side.request.url,
            warm,
            None,
        )
        .await?;
    }
    for round in 1..=opts.rounds {
        for side in [&mut off, &mut on] {
            let label = format!("{} round {round}", side.label);
            let pids = [side.proxy.pid];
            let (result, cpu) = h
                .wrk(&label, &side.script, &side.request.url, load, Some(&pids))
                .await?;
            if let Some(cpu) = cpu {
                side.runs.push((result, cpu));
            }
        }
    }
    for side in [&off, &on] {
        h.problems.extend(
            side.proxy
                .warnings()
                .into_iter()
                .map(|w| format!("{} log: {w}", side.label)),
        );
    }
    let mut measurements = cost(&opts, &off, &on, &mut h.problems);
    off.proxy.stop().await;
    on.proxy.stop().await;

    // Isolation: quiet tokens alone, then beside a flood, alternating.
    let iso = Isolation::start(&opts, &http, &upstream).await?;
    let mut rounds_run = Vec::new();
    // One unmeasured round so connections and the upstream are warm.
    iso.round(&opts, &http, false, Duration::from_secs(1))
        .await?;
    for _ in 0..opts.rounds {
        for flood in [false, true] {
            let r = iso.round(&opts, &http, flood, opts.duration).await?;
            eprintln!(
                "  {}: quiet p50 {:.0} us, p99 {:.0} us, {} failed of {}; flood {} sent, {} admitted, {} refused",
                if flood { "overload" } else { "quiet alone" },
                r.quiet_p50_us,
                r.quiet_p99_us,
                r.quiet_failed,
                r.quiet_sent,
                r.flood_sent,
                r.flood_admitted,
                r.flood_refused
            );
            rounds_run.push(r);
        }
    }
    h.problems.extend(
        iso.proxy
            .warnings()
            .into_iter()
            // Every refusal is expected here; only other trouble is a problem.
            .filter(|w| !w.contains("rate limit"))
            .map(|w| format!("isolation proxy log: {w}")),
    );
    iso.proxy.stop().await;

    measurements.extend(isolation(&opts, &rounds_run, &mut h.problems));
    let env = Environment {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        proxy_binary: opts.proxy_bin.display().to_string(),
        duration_s: opts.duration.as_secs_f64(),
        rounds: opts.rounds,
        connections: opts.connections,
        proxy_threads: opts.proxy_threads,
        token_rps: opts.token_rps,
        quiet_tokens: opts.quiet_tokens,
        quiet_rps_each: opts.token_rps * opts.quiet_share,
        flood_rps: opts.token_rps * opts.overload,
        rounds_run,
    };
    h.notes.push(
        "isolation latencies are taken from the moment each call was due, so a proxy that stalls shows in the p99 instead of slowing the sender".into(),
    );
    let log = h.log.clone();
    h.report("overload", env, measurements)
        .publish(&opts.out, &log)
}

/// The limiter's cost: CPU per call and throughput with budgets checked vs none.
fn cost(opts: &Options, off: &Side, on: &Side, problems: &mut Vec<String>) -> Vec<Measurement> {
    let mut out = Vec::new();
    let cpu = |s: &Side| {
        median(
            s.runs
                .iter()
                .filter_map(|(_, c)| c.target_us_per_call)
                .collect(),
        )
    };
    let rps = |s: &Side| median(s.runs.iter().map(|(r, _)| r.rps).collect());
    let noisy = off.runs.iter().chain(&on.runs).any(|(_, c)| c.noisy());
    for s in [off, on] {
        for (r, _) in &s.runs {
            if let Some(p) = r.problems() {
                problems.push(format!("{} {}: {p}", s.label, r.label));
            }
        }
    }
    if let (Some(off_cpu), Some(on_cpu)) = (cpu(off), cpu(on)) {
        let base = Measurement::new("proxy CPU per call, no budgets", off_cpu, "us")
            .noisy(noisy)
            .note(format!("median of {} wrk runs", off.runs.len()));
        out.push(
            Measurement::new("proxy CPU per call, budgets checked", on_cpu, "us")
                .vs(&base)
                .note(format!(
                    "workspace and per-token budgets never reached: {:+.2} us per call",
                    on_cpu - off_cpu
                )),
        );
        out.push(base);
    }
    if let (Some(off_rps), Some(on_rps)) = (rps(off), rps(on)) {
        let base = Measurement::new("throughput, no budgets", off_rps, "rps").noisy(noisy);
        out.push(
            Measurement::new("throughput, budgets checked", on_rps, "rps")
                .vs(&base)
                .note(format!("{} connections", opts.connections)),
        );
        out.push(base);
    }
    out
}

/// Isolation: the quiet tokens' latency with and without the flood, what the flood
/// got through, and every quiet call answered.
fn isolation(opts: &Options, rounds: &[Round], problems: &mut Vec<String>) -> Vec<Measurement> {
    let mut out = Vec::new();
    let alone: Vec<&Round> = rounds.iter().filter(|r| !r.flood).collect();
    let flooded: Vec<&Round> = rounds.iter().filter(|r| r.flood).collect();
    let med = |rs: &[&Round], f: fn(&Round) -> f64| median(rs.iter().map(|r| f(r)).collect());
    if let (Some(base_p99), Some(flood_p99)) = (
        med(&alone, |r| r.quiet_p99_us),
        med(&flooded, |r| r.quiet_p99_us),
    ) {
        let base = Measurement::new("quiet tokens' p99, no flood", base_p99, "us").note(format!(
            "{} tokens at {:.0} calls/s each; median of {} rounds",
            opts.quiet_tokens,
            opts.token_rps * opts.quiet_share,
            alone.len()
        ));
        out.push(
            Measurement::new("quiet tokens' p99 beside a 10x flood", flood_p99, "us")
                .vs(&base)
                .target(Target::RatioAtMost(P99_RATIO_TARGET))
                .note(format!(
                    "one token sending {:.0} calls/s against a budget of {:.0}/s",
                    opts.token_rps * opts.overload,
                    opts.token_rps
                )),
        );
        out.push(base);
    }
    if let (Some(p50_alone), Some(p50_flood)) = (
        med(&alone, |r| r.quiet_p50_us),
        med(&flooded, |r| r.quiet_p50_us),
    ) {
        let base = Measurement::new("quiet tokens' p50, no flood", p50_alone, "us");
        out.push(
            Measurement::new("quiet tokens' p50 beside a 10x flood", p50_flood, "us").vs(&base),
        );
        out.push(base);
    }
    let secs = opts.duration.as_secs_f64();
    if let Some(admitted) = med(&flooded, |r| r.flood_admitted as f64) {
        // The bucket starts full: one burst (a second's worth) goes through at once,
        // then the budget's rate. The rate past that burst is what the limiter holds.
        let burst = opts.token_rps.ceil();
        out.push(
            Measurement::new(
                "flooding token's admitted rate past its opening burst",
                (admitted - burst).max(0.0) / secs,
                "rps",
            )
            .target(Target::Ceiling(opts.token_rps * 1.1))
            .note(format!(
                "{admitted:.0} calls admitted in {secs:.0} s with a budget of {:.0}/s and a burst of {burst:.0}; the rest got 429",
                opts.token_rps
            )),
        );
    }
    let failed: u64 = rounds.iter().map(|r| r.quiet_failed).sum();
    out.push(
        Measurement::new("quiet tokens' calls failed", failed as f64, "calls")
            .target(Target::Ceiling(0.0))
            .note("every round: refused, errors, or skipped for too many in flight"),
    );
    for r in rounds {
        if let Some(e) = &r.first_error {
            problems.push(format!(
                "a quiet token's call failed ({}): {e}",
                if r.flood { "overload" } else { "alone" }
            ));
        }
    }
    out
}

/// One of the two proxies of the cost runs, and what its measured runs gave.
struct Side {
    label: &'static str,
    proxy: GatehouseProxy,
    request: WrkRequest,
    script: PathBuf,
    runs: Vec<(WrkResult, RunCpu)>,
}

impl Side {
    async fn start(
        opts: &Options,
        http: &reqwest::Client,
        label: &'static str,
        upstream: &str,
        token: &str,
        limits: Option<Value>,
    ) -> anyhow::Result<Side> {
        let config = config(upstream, &[("t1", token, None)], limits);
        let proxy = GatehouseProxy::start_configured(
            &opts.proxy_bin,
            &opts.out,
            label,
            config,
            token.to_string(),
            opts.proxy_threads,
        )
        .await?;
        let session = checked_session(http, &proxy.url(), Some(token), TOOL).await?;
        let request = echo_request(&session, TOOL);
        let script = request.write_script(&opts.out.join(format!("{label}.lua")))?;
        eprintln!("{label} -> {} (pid {})", proxy.url(), proxy.pid);
        Ok(Side {
            label,
            proxy,
            request,
            script,
            runs: Vec::new(),
        })
    }
}

/// A proxy config: one workspace with the bench upstream as `s0`, `tokens` as
/// (id, token, its own limits), and the workspace's `limits`.
fn config(upstream: &str, tokens: &[(&str, &str, Option<Value>)], limits: Option<Value>) -> Value {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let tokens: Vec<Value> = tokens
        .iter()
        .map(|(id, token, own)| {
            let mut t = json!({
                "id": id,
                "name": id,
                "sha256": gatehouse_config::hash_token_hex(token)
            });
            if let Some(own) = own {
                t["limits"] = own.clone();
            }
            t
        })
        .collect();
    let mut workspace = json!({
        "slug": WORKSPACE,
        "name": "Bench",
        "servers": [{"slug": "s0", "url": upstream}],
        "tokens": tokens
    });
    if let Some(limits) = limits {
        workspace["limits"] = limits;
    }
    json!({
        "version": 1,
        "session_keys": [{"id": "k1", "key": STANDARD.encode(key)}],
        "workspaces": [workspace]
    })
}

/// The isolation proxy and a session per token: the quiet ones and the flood.
struct Isolation {
    proxy: GatehouseProxy,
    quiet: Vec<Arc<McpSession>>,
    flood: Arc<McpSession>,
}

/// What one isolation round measured.
#[derive(Debug, Clone, Serialize)]
struct Round {
    flood: bool,
    quiet_sent: u64,
    quiet_failed: u64,
    quiet_p50_us: f64,
    quiet_p99_us: f64,
    quiet_max_us: f64,
    flood_sent: u64,
    flood_admitted: u64,
    flood_refused: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_error: Option<String>,
}

impl Isolation {
    async fn start(
        opts: &Options,
        http: &reqwest::Client,
        upstream: &str,
    ) -> anyhow::Result<Isolation> {
        let tokens: Vec<(String, String)> = (0..=opts.quiet_tokens)
            .map(|i| (format!("t{i}"), new_token()))
            .collect();
        let listed: Vec<(&str, &str, Option<Value>)> = tokens
            .iter()
            .map(|(id, t)| (id.as_str(), t.as_str(), None))
            .collect();
        let limits = json!({
            "per_token": {
                "requests_per_second": opts.token_rps,
                "burst": opts.token_rps.ceil() as u32
            }
        });
        let proxy = GatehouseProxy::start_configured(
            &opts.proxy_bin,
            &opts.out,
            "isolation",
            config(upstream, &listed, Some(limits)),
            tokens[0].1.clone(),
            opts.proxy_threads,
        )
        .await?;
        let mut sessions = Vec::new();
        for (_, token) in &tokens {
            let session = checked_session(http, &proxy.url(), Some(token), TOOL)
                .await
                .context("opening the isolation sessions")?;
            sessions.push(Arc::new(session));
        }
        let flood = sessions.remove(0);
        eprintln!(
            "isolation -> {} (pid {}), {} quiet tokens",
            proxy.url(),
            proxy.pid,
            sessions.len()
        );
        Ok(Isolation {
            proxy,
            quiet: sessions,
            flood,
        })
    }

    /// The quiet tokens, and the flood if `flood`, each sending at its pace for
    /// `duration`; then a pause so the budgets refill before the next round.
    async fn round(
        &self,
        opts: &Options,
        http: &reqwest::Client,
        flood: bool,
        duration: Duration,
    ) -> anyhow::Result<Round> {
        let quiet_rate = opts.token_rps * opts.quiet_share;
        let mut quiet = tokio::task::JoinSet::new();
        for session in &self.quiet {
            quiet.spawn(paced(http.clone(), session.clone(), quiet_rate, duration));
        }
        let flooding = flood.then(|| {
            tokio::spawn(paced(
                http.clone(),
                self.flood.clone(),
                opts.token_rps * opts.overload,
                duration,
            ))
        });
        let mut latencies = Vec::new();
        let (mut sent, mut failed, mut first_error) = (0u64, 0u64, None);
        while let Some(done) = quiet.join_next().await {
            let p = done?;
            sent += p.sent;
            failed += p.sent - p.ok;
            latencies.extend(p.latencies);
            first_error = first_error.or(p.first_error);
        }
        let (flood_sent, flood_admitted, flood_refused) = match flooding {
            Some(task) => {
                let p = task.await?;
                (p.sent, p.ok, p.refused)
            }
            None => (0, 0, 0),
        };
        latencies.sort_unstable();
        let at = |q: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i].as_secs_f64() * 1e6
        };
        // Budgets refill at their rate: a second's worth after a second.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Ok(Round {
            flood,
            quiet_sent: sent,
            quiet_failed: failed,
            quiet_p50_us: at(0.50),
            quiet_p99_us: at(0.99),
            quiet_max_us: at(1.0),
            flood_sent,
            flood_admitted,
            flood_refused,
            first_error,
        })
    }
}

/// What one paced sender saw.
struct Paced {
    sent: u64,
    /// Answered 200 with a JSON-RPC result.
    ok: u64,
    /// Answered 429.
    refused: u64,
    /// Of the calls answered with a result, from when each was due.
    latencies: Vec<Duration>,
    first_error: Option<String>,
}

/// Echo calls on `session` at `rate` per second for `duration`, open loop: each is
/// sent when it is due, whether or not the ones before it are answered.
async fn paced(
    http: reqwest::Client,
    session: Arc<McpSession>,
    rate: f64,
    duration: Duration,
) -> Paced {
    let body = tools_call_body(TOOL);
    let every = Duration::from_secs_f64(1.0 / rate);
    let started = tokio::time::Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut calls = tokio::task::JoinSet::new();
    let mut out = Paced {
        sent: 0,
        ok: 0,
        refused: 0,
        latencies: Vec::new(),
        first_error: None,
    };
    let mut skipped = 0u64;
    let mut due = started;
    while due < started + duration {
        tokio::time::sleep_until(due).await;
        out.sent += 1;
        let Ok(permit) = gate.clone().try_acquire_owned() else {
            skipped += 1;
            due += every;
            continue;
        };
        let (http, session, body) = (http.clone(), session.clone(), body.clone());
        let due_at: Instant = due.into_std();
        calls.spawn(async move {
            let outcome = call(&http, &session, body).await;
            drop(permit);
            (outcome, due_at.elapsed())
        });
        due += every;
    }
    while let Some(done) = calls.join_next().await {
        match done {
            Ok((Ok(200), latency)) => {
                out.ok += 1;
                out.latencies.push(latency);
            }
            Ok((Ok(429), _)) => out.refused += 1,
            Ok((Ok(status), _)) => {
                out.first_error.get_or_insert(format!("HTTP {status}"));
            }
            Ok((Err(e), _)) => {
                out.first_error.get_or_insert(format!("{e:#}"));
            }
            Err(e) => {
                out.first_error.get_or_insert(e.to_string());
            }
        }
    }
    if skipped > 0 {
        out.first_error.get_or_insert(format!(
            "{skipped} calls skipped: {MAX_IN_FLIGHT} in flight"
        ));
    }
    out
}

/// One call: its HTTP status, 200 only when the body is a JSON-RPC result.
async fn call(http: &reqwest::Client, session: &McpSession, body: String) -> anyhow::Result<u16> {
    let mut req = http.post(&session.url).body(body);
    for (k, v) in &session.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    if status == 200 && !text.contains(r#""result":"#) {
        anyhow::bail!(
            "HTTP 200 without a result: {}",
            &text[..text.len().min(200)]
        );
    }
    Ok(status)
}
