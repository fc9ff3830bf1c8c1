//! The `sse-vs-streamable` scenario: a `tools/call` round trip through the legacy
//! HTTP+SSE transport (`/ws/<slug>/sse`, answer on the stream) against the same call
//! over Streamable HTTP (answer in the POST's response), same proxy, same upstream.
//! A small in-process client drives each session in a loop for a fixed time and
//! records every round trip in an HDR histogram: one session for latency, many for
//! throughput. The issue sets no target: the figures are the ratio legacy/streamable.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;

use crate::client::{check_echo, tools_call_body, McpSession};
use crate::legacy_client::LegacySession;
use crate::procstat::CpuClock;
use crate::report::{Measurement, Report};
use crate::targets::GatehouseProxy;
use crate::upstream::{UpstreamFleet, UpstreamMode};

/// The tool every call goes to: `echo` of the workspace's only server.
const TOOL: &str = "s0__echo";
/// Round trips above this are recorded as this (a minute: something is broken).
const MAX_RECORDED_US: u64 = 60_000_000;
/// Above this many cores of CPU used by other processes, a run's figures are suspect.
const NOISE_CORES: f64 = 0.15;

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of the warm-up run of each transport (0 = none).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Sessions of the throughput runs (latency runs use 1).
    #[arg(long, default_value_t = 32)]
    sessions: usize,
    /// Worker threads of the gatehouse-proxy.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    #[arg(long, value_enum, default_value_t = UpstreamMode::StatelessJson)]
    upstream_mode: UpstreamMode,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
}

impl Args {
    /// The options of a run whose binaries are in `build` and files go under `out`.
    pub fn options(self, build: &std::path::Path, out: &std::path::Path) -> Options {
        Options {
            duration: Duration::from_secs_f64(self.duration.max(1.0)),
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            sessions: self.sessions.max(1),
            proxy_threads: self.proxy_threads.max(1),
            upstream_mode: self.upstream_mode,
            out: out.join("sse-vs-streamable"),
            proxy_bin: self
                .proxy_bin
                .unwrap_or_else(|| build.join("gatehouse-proxy")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// Length of each measured run.
    pub duration: Duration,
    /// Length of the warm-up run of each transport (zero: none).
    pub warmup: Duration,
    /// Sessions of the throughput runs (the latency runs use one).
    pub sessions: usize,
    pub proxy_threads: usize,
    pub upstream_mode: UpstreamMode,
    /// Where this scenario's files go (`<out>/sse-vs-streamable`).
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    proxy_binary: String,
    upstream_mode: UpstreamMode,
    duration_s: f64,
    warmup_s: f64,
    throughput_sessions: usize,
    proxy_threads: usize,
    /// Every client run, warm-ups included (the report's `runs` are wrk's alone).
    client_runs: Vec<RunResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Streamable,
    LegacySse,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Transport::Streamable => "Streamable HTTP",
            Transport::LegacySse => "legacy SSE",
        }
    }
}

/// One client session over either transport.
enum ClientSession {
    Streamable(McpSession),
    Legacy(Box<LegacySession>),
}

impl ClientSession {
    async fn open(
        transport: Transport,
        http: &reqwest::Client,
        proxy: &GatehouseProxy,
    ) -> anyhow::Result<ClientSession> {
        Ok(match transport {
            Transport::Streamable => ClientSession::Streamable(
                McpSession::open(http, &proxy.url(), Some(&proxy.token)).await?,
            ),
            Transport::LegacySse => ClientSession::Legacy(Box::new(
                LegacySession::open(http, &format!("{}/sse", proxy.url()), &proxy.token).await?,
            )),
        })
    }

    /// One echo call, checked; returns its round trip.
    async fn echo(&mut self, http: &reqwest::Client, body: &str) -> anyhow::Result<Duration> {
        let (response, took) = match self {
            ClientSession::Streamable(s) => s.request(http, body).await?,
            ClientSession::Legacy(s) => {
                let params = json!({
                    "name": TOOL,
                    "arguments": {"text": "hello from the gatehouse bench"}
                });
                s.request(http, "tools/call", params).await?
            }
        };
        check_echo(&response)?;
        Ok(took)
    }
}

/// What one run of one transport gave.
#[derive(Debug, Serialize)]
struct RunResult {
    transport: &'static str,
    sessions: usize,
    warmup: bool,
    calls: u64,
    errors: u64,
    seconds: f64,
    rps: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
    /// gatehouse-proxy CPU time per answered call.
    proxy_cpu_us_per_call: f64,
    /// Average cores busy with processes other than the proxy and this one.
    other_cores_busy: f64,
    first_error: Option<String>,
}

impl RunResult {
    fn noisy(&self) -> bool {
        self.other_cores_busy > NOISE_CORES
    }
}

/// Opens `sessions` sessions, then has each call echo in a loop for `duration`.
async fn measure(
    transport: Transport,
    sessions: usize,
    duration: Duration,
    warmup: bool,
    proxy: &GatehouseProxy,
    clock: &CpuClock,
) -> anyhow::Result<RunResult> {
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(sessions * 2)
        .build()?;
    let mut clients = Vec::with_capacity(sessions);
    for i in 0..sessions {
        let client = ClientSession::open(transport, &http, proxy)
            .await
            .with_context(|| format!("opening {} session {i}", transport.label()))?;
        clients.push(client);
    }
    let body = tools_call_body(TOOL);
    let me = [std::process::id()];
    let cpu_before = clock.used(&[proxy.pid])?;
    let me_before = clock.used(&me)?;
    let machine_before = clock.machine()?.busy;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for mut client in clients {
        let http = http.clone();
        let body = body.clone();
        tasks.spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)
                .expect("static histogram bounds");
            let mut error = None;
            while Instant::now() < deadline {
                match client.echo(&http, &body).await {
                    Ok(took) => hist.saturating_record(took.as_micros() as u64),
                    // A session that failed once (a broken stream) is not used again.
                    Err(e) => {
                        error = Some(format!("{e:#}"));
                        break;
                    }
                }
            }
            (hist, error)
        });
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?;
    let mut errors = 0;
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let (h, error) = done?;
        hist.add(&h)?;
        if let Some(e) = error {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu = clock.used(&[proxy.pid])? - cpu_before;
    let others = (clock.machine()?.busy.saturating_sub(machine_before))
        .saturating_sub(cpu)
        .saturating_sub(clock.used(&me)? - me_before);
    let calls = hist.len();
    let result = RunResult {
        transport: transport.label(),
        sessions,
        warmup,
        calls,
        errors,
        seconds,
        rps: calls as f64 / seconds,
        p50_us: hist.value_at_quantile(0.50) as f64,
        p90_us: hist.value_at_quantile(0.90) as f64,
        p99_us: hist.value_at_quantile(0.99) as f64,
        max_us: hist.max() as f64,
        proxy_cpu_us_per_call: cpu.as_secs_f64() * 1e6 / calls.max(1) as f64,
        other_cores_busy: others.as_secs_f64() / seconds,
        first_error,
    };
    eprintln!(
        "  {:<16} sessions={:<3} {:>8.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  proxy cpu {:>5.1} us/call  others {:.2} cores{}{}",
        result.transport,
        sessions,
        result.rps,
        result.p50_us,
        result.p99_us,
        result.proxy_cpu_us_per_call,
        result.other_cores_busy,
        if warmup { "  (warm-up)" } else { "" },
        if errors > 0 {
            format!("  {errors} session(s) failed")
        } else {
            String::new()
        }
    );
    Ok(result)
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let clock = CpuClock::detect();
    let fleet = UpstreamFleet::start(1, 1, opts.upstream_mode).await?;
    let proxy = GatehouseProxy::start(
        &opts.proxy_bin,
        &opts.out,
        "gatehouse",
        &[fleet.url(0)],
        opts.proxy_threads,
    )
    .await?;
    eprintln!("gatehouse-proxy {} (pid {})", proxy.url(), proxy.pid);
    let transports = [Transport::Streamable, Transport::LegacySse];
    let mut runs = Vec::new();
    if !opts.warmup.is_zero() {
        for t in transports {
            runs.push(measure(t, opts.sessions, opts.warmup, true, &proxy, &clock).await?);
        }
    }
    let mut measurements = Vec::new();
    for sessions in [1, opts.sessions] {
        let streamable = measure(
            Transport::Streamable,
            sessions,
            opts.duration,
            false,
            &proxy,
            &clock,
        )
        .await?;
        let legacy = measure(
            Transport::LegacySse,
            sessions,
            opts.duration,
            false,
            &proxy,
            &clock,
        )
        .await?;
        measurements.extend(compare(&streamable, &legacy, sessions == 1));
        runs.push(streamable);
        runs.push(legacy);
    }

    let mut problems: Vec<String> = runs
        .iter()
        .filter(|r| r.errors > 0)
        .map(|r| {
            format!(
                "{} with {} sessions: {} session(s) failed; first: {}",
                r.transport,
                r.sessions,
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            )
        })
        .collect();
    problems.extend(
        proxy
            .warnings()
            .into_iter()
            .map(|w| format!("gatehouse-proxy log: {w}")),
    );
    let notes = vec![
        "round trip = POST sent to JSON-RPC response read: for legacy SSE the POST answers 202 and the response is read off the session's event stream".to_string(),
        "one client task per session on one current-thread runtime; the upstream runs on its own thread; every run's figures are in report.json (environment.client_runs)"
            .to_string(),
    ];
    let environment = Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        proxy_binary: opts.proxy_bin.display().to_string(),
        upstream_mode: opts.upstream_mode,
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        throughput_sessions: opts.sessions,
        proxy_threads: opts.proxy_threads,
        client_runs: runs,
    };
    let report = Report {
        scenario: "sse-vs-streamable",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment,
        measurements,
        runs: Vec::new(),
        problems,
        notes,
    };
    let log = proxy.log.clone();
    proxy.stop().await;
    report.publish_saying(&opts.out, &format!("proxy log: {}", log.display()))
}

/// The figures of one pair of runs: legacy against Streamable (ratio = legacy /
/// streamable). Latency runs report percentiles; throughput runs, calls per second.
fn compare(streamable: &RunResult, legacy: &RunResult, latency: bool) -> Vec<Measurement> {
    let n = streamable.sessions;
    let pair = |what: &str, unit: &str, s: f64, l: f64, note: &str| {
        let base = Measurement::new(format!("Streamable HTTP {what} ({n} sess.)"), s, unit)
            .note(note.to_string())
            .noisy(streamable.noisy());
        let sse = Measurement::new(format!("legacy SSE {what} ({n} sess.)"), l, unit)
            .vs(&base)
            .note(note.to_string())
            .noisy(legacy.noisy());
        [base, sse]
    };
    let mut out = Vec::new();
    if latency {
        out.extend(pair(
            "tools/call p50",
            "us",
            streamable.p50_us,
            legacy.p50_us,
            "one session, calls back to back",
        ));
        out.extend(pair(
            "tools/call p99",
            "us",
            streamable.p99_us,
            legacy.p99_us,
            "one session, calls back to back",
        ));
    } else {
        out.extend(pair(
            "tools/call throughput",
            "req/s",
            streamable.rps,
            legacy.rps,
            "every session calls back to back",
        ));
        out.extend(pair(
            "tools/call p99",
            "us",
            streamable.p99_us,
            legacy.p99_us,
            "every session calls back to back",
        ));
    }
    out.extend(pair(
        "proxy CPU per call",
        "us",
        streamable.proxy_cpu_us_per_call,
        legacy.proxy_cpu_us_per_call,
        "gatehouse-proxy utime+stime / calls",
    ));
    out
}
