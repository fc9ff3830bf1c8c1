//! The `faults` scenario: what a misbehaving upstream costs everyone else, and whether
//! failing calls leave anything behind in the proxy. One proxy serves workspace `eng`
//! (the harness's [`FaultyUpstream`] and a healthy rmcp server, `notes`) and workspace
//! `ops` (a healthy `pager`).
//!
//! - Latency: the healthy servers' tools/call p50/p99 (one client per workspace,
//!   calls back to back), first with nothing else going on, then once per [`Fault`]
//!   while a few clients call the faulty server's tool for that fault in a loop
//!   (paced: `--fault-rate` calls a second each), each fault meeting a closed
//!   circuit breaker. The target: p99 during a fault within 2x of the
//!   baseline's.
//! - Leaks: N faulty calls that fail fast (mixed modes, with good calls between so the
//!   circuit breaker stays closed) after a warm-up; the proxy's VmRSS and open fds are
//!   sampled every tenth of the way. Targets: RSS at most 20 MiB above the warm-up's,
//!   fds at most 8 above.
//!
//! Everything but the proxy (upstreams, load and measuring clients) shares the
//! harness's one current-thread runtime, so the figures are what a client sees, the
//! harness's own scheduling included.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use gatehouse_proxy::upstream::breaker;
use gatehouse_tests::faulty::{mixed_call, OK_TOOL};
use gatehouse_tests::{
    ConfigBuilder, Fault, FaultyUpstream, ProcessUsage, Proxy, RawClient, ServerSpec, TokenSpec,
    Upstream, UpstreamTool,
};

use crate::report::{Measurement, Report, Target};

/// The faulty server's per-read timeout: stalls end after it.
const CALL_TIMEOUT_MS: u64 = 1_000;
/// How long a load client waits for one faulty call (an endless stream never ends).
const LOAD_CALL_LIMIT: Duration = Duration::from_secs(3);
/// Times above this are recorded as this.
const MAX_RECORDED_US: u64 = 60_000_000;

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Healthy calls per workspace in each latency measurement.
    #[arg(long, default_value_t = 1_000)]
    healthy_calls: usize,
    /// Clients calling the faulty server at once during a fault.
    #[arg(long, default_value_t = 4)]
    fault_clients: usize,
    /// Faulty calls each of those clients starts per second, at most (0: back to
    /// back, which on a small machine measures CPU contention more than isolation).
    #[arg(long, default_value_t = 50.0)]
    fault_rate: f64,
    /// Faulty calls of the leak measurement (after a tenth as many to warm up).
    #[arg(long, default_value_t = 10_000)]
    faulty_calls: usize,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
}

impl Args {
    /// The options of a run whose binaries are in `build` and files go under `out`.
    pub fn options(self, build: &Path, out: &Path) -> Options {
        Options {
            healthy_calls: self.healthy_calls.max(10),
            fault_clients: self.fault_clients.max(1),
            fault_rate: self.fault_rate.max(0.0),
            faulty_calls: self.faulty_calls.max(10),
            out: out.join("faults"),
            proxy_bin: self
                .proxy_bin
                .unwrap_or_else(|| build.join("gatehouse-proxy")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub healthy_calls: usize,
    pub fault_clients: usize,
    pub fault_rate: f64,
    pub faulty_calls: usize,
    /// Where this scenario's files go (`<out>/faults`).
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    proxy_binary: String,
    healthy_calls: usize,
    fault_clients: usize,
    fault_rate: f64,
    faulty_calls: usize,
    /// Faulty calls that reached the faulty server during each fault's measurement
    /// (fewer than were made once its circuit breaker opened).
    reached_upstream: Vec<(String, usize)>,
    /// (calls made so far, VmRSS KiB, open fds) over the leak measurement.
    usage_samples: Vec<(usize, u64, usize)>,
}

/// p50 and p99 of one workspace's healthy calls, µs.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50_us: u64,
    p99_us: u64,
}

impl Latency {
    fn p50_note(&self) -> String {
        format!("p50 {:.2} ms", self.p50_us as f64 / 1e3)
    }
}

struct Bench {
    proxy: Proxy,
    faulty: FaultyUpstream,
    _cfg: ConfigBuilder,
    _healthy: [Upstream; 2],
    eng: RawClient,
    ops: RawClient,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let bench = start(&opts.proxy_bin).await?;
    eprintln!(
        "gatehouse-proxy {} (faulty server {})",
        bench.proxy.url(""),
        bench.faulty.url()
    );
    let mut measurements = Vec::new();
    let mut problems = Vec::new();
    let mut reached = Vec::new();

    // Warm both paths, then the baseline.
    healthy(&bench, opts.healthy_calls / 10).await?;
    let (base_eng, base_ops) = healthy(&bench, opts.healthy_calls).await?;
    let base = [
        Measurement::new(
            "eng notes p99, no fault",
            base_eng.p99_us as f64 / 1e3,
            "ms",
        )
        .note(base_eng.p50_note()),
        Measurement::new(
            "ops pager p99, no fault",
            base_ops.p99_us as f64 / 1e3,
            "ms",
        )
        .note(base_ops.p50_note()),
    ];
    eprintln!("  baseline: eng {base_eng:?}, ops {base_ops:?}");
    measurements.extend(base.iter().cloned());

    for fault in Fault::ALL {
        // Each fault meets a closed breaker: the previous one's may still be open.
        breaker_closed(&bench).await?;
        let before = bench.faulty.calls(fault.tool());
        let stop = CancellationToken::new();
        let load = start_load(&bench, fault, opts.fault_clients, opts.fault_rate, &stop).await?;
        let measured = healthy(&bench, opts.healthy_calls).await;
        stop.cancel();
        for task in load {
            let _ = task.await;
        }
        let (eng, ops) = measured?;
        let n = bench.faulty.calls(fault.tool()) - before;
        eprintln!(
            "  {}: eng {eng:?}, ops {ops:?}; {n} calls reached the server",
            fault.tool()
        );
        reached.push((fault.tool().to_owned(), n));
        for (latency, baseline, who) in [(eng, &base[0], "eng notes"), (ops, &base[1], "ops pager")]
        {
            measurements.push(
                Measurement::new(
                    format!("{who} p99 during {}", fault.tool()),
                    latency.p99_us as f64 / 1e3,
                    "ms",
                )
                .vs(baseline)
                .target(Target::AtMostAboveBaseline(baseline.value))
                .note(latency.p50_note()),
            );
        }
    }

    let usage = leaks(&bench, opts.faulty_calls).await?;
    let warm = usage[0];
    let last = *usage.last().expect("samples");
    let peak_rss = usage.iter().map(|u| u.1).max().unwrap_or(warm.1);
    let rss = |kib: u64| kib as f64 / 1024.0;
    measurements.push(Measurement::new(
        "proxy RSS after warm-up",
        rss(warm.1),
        "MiB",
    ));
    let warm_rss = measurements.last().cloned().expect("pushed");
    measurements.push(
        Measurement::new(
            format!("proxy RSS after {} faulty calls", opts.faulty_calls),
            rss(last.1),
            "MiB",
        )
        .vs(&warm_rss)
        .target(Target::AtMostAboveBaseline(20.0))
        .note(format!("peak {:.1} MiB", rss(peak_rss))),
    );
    measurements.push(Measurement::new(
        "proxy open fds after warm-up",
        warm.2 as f64,
        "fds",
    ));
    let warm_fds = measurements.last().cloned().expect("pushed");
    measurements.push(
        Measurement::new(
            format!("proxy open fds after {} faulty calls", opts.faulty_calls),
            last.2 as f64,
            "fds",
        )
        .vs(&warm_fds)
        .target(Target::AtMostAboveBaseline(8.0)),
    );
    if let Err(e) = bench.proxy.health().await {
        problems.push(format!("the proxy's /healthz after the faults: {e}"));
    }

    let report = Report {
        scenario: "faults",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment: Environment {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            proxy_binary: opts.proxy_bin.display().to_string(),
            healthy_calls: opts.healthy_calls,
            fault_clients: opts.fault_clients,
            fault_rate: opts.fault_rate,
            faulty_calls: opts.faulty_calls,
            reached_upstream: reached,
            usage_samples: usage,
        },
        measurements,
        runs: Vec::new(),
        problems,
        notes: vec![format!(
            "each fault's tool called by {} clients in a loop, each starting at most {} calls/s, while the healthy servers were measured; the faulty server's call_timeout_ms is {CALL_TIMEOUT_MS}; each fault starts with its circuit breaker closed, which may open during the fault (then fewer calls reach it)",
            opts.fault_clients, opts.fault_rate
        )],
    };
    report.publish_saying(&opts.out, "no wrk in this scenario")
}

/// Waits until the faulty server's good tool answers through the proxy: its
/// circuit breaker is closed (a probe after the cool-down closes it).
async fn breaker_closed(bench: &Bench) -> anyhow::Result<()> {
    let give_up = Instant::now() + 3 * breaker::COOL_DOWN;
    loop {
        let answer = bench
            .eng
            .call_tool(0, &format!("faulty__{OK_TOOL}"), json!({}))
            .await?;
        if answer.result().is_ok_and(|r| r["isError"] != json!(true)) {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < give_up,
            "the faulty server's breaker stayed open: {:?}",
            answer.message()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn start(proxy_bin: &Path) -> anyhow::Result<Bench> {
    let faulty = FaultyUpstream::start().await?;
    let notes = Upstream::start("notes", [UpstreamTool::new("search").read_only(true)]).await?;
    let pager = Upstream::start("pager", [UpstreamTool::new("page")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server(
        "eng",
        ServerSpec::new("faulty", &faulty.url()).call_timeout_ms(CALL_TIMEOUT_MS),
    )
    .server("eng", ServerSpec::new("notes", &notes.url()))
    .server("ops", ServerSpec::new("pager", &pager.url()));
    let eng_token = cfg.token_with("eng", TokenSpec::named("alice"));
    let ops_token = cfg.token_with("ops", TokenSpec::named("carol"));
    cfg.write()?;
    let proxy = Proxy::start_binary(proxy_bin, cfg.path(), &[]).await?;
    let mut eng = RawClient::new(proxy.ws_url("eng"), Some(&eng_token));
    eng.initialize().await?;
    let mut ops = RawClient::new(proxy.ws_url("ops"), Some(&ops_token));
    ops.initialize().await?;
    Ok(Bench {
        proxy,
        faulty,
        _cfg: cfg,
        _healthy: [notes, pager],
        eng,
        ops,
    })
}

/// `n` healthy calls in each workspace, alternating, back to back; each must succeed.
async fn healthy(bench: &Bench, n: usize) -> anyhow::Result<(Latency, Latency)> {
    let mut hists = [
        Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?,
        Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?,
    ];
    for i in 0..n {
        for (h, (client, tool)) in hists
            .iter_mut()
            .zip([(&bench.eng, "notes__search"), (&bench.ops, "pager__page")])
        {
            let started = Instant::now();
            let reply = client.call_tool(i as u64, tool, json!({"q": "x"})).await?;
            let took = started.elapsed().as_micros() as u64;
            reply
                .result()
                .map_err(|e| anyhow::anyhow!("{tool} failed during the measurement: {e}"))?;
            h.saturating_record(took.clamp(1, MAX_RECORDED_US));
        }
    }
    let latency = |h: &Histogram<u64>| Latency {
        p50_us: h.value_at_quantile(0.5),
        p99_us: h.value_at_quantile(0.99),
    };
    Ok((latency(&hists[0]), latency(&hists[1])))
}

/// `clients` loops calling `fault`'s tool (each starting at most `rate` calls a
/// second) until `stop`; returns once the first call
/// reached the faulty server.
async fn start_load(
    bench: &Bench,
    fault: Fault,
    clients: usize,
    rate: f64,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let before = bench.faulty.calls(fault.tool());
    let tool: Arc<str> = format!("faulty__{}", fault.tool()).into();
    let tasks = (0..clients)
        .map(|_| {
            let (client, tool, stop) = (bench.eng.clone(), tool.clone(), stop.clone());
            tokio::spawn(async move {
                let mut id = 0u64;
                let mut pace = (rate > 0.0)
                    .then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / rate)));
                while !stop.is_cancelled() {
                    if let Some(pace) = pace.as_mut() {
                        pace.tick().await;
                    }
                    id += 1;
                    let call = client.call_tool(id, &tool, json!({}));
                    tokio::select! {
                        _ = tokio::time::timeout(LOAD_CALL_LIMIT, call) => {}
                        _ = stop.cancelled() => {}
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bench.faulty.calls(fault.tool()) == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(tasks)
}

/// A tenth of `n` faulty calls to warm up, then `n`, 8 at a time; the proxy's usage
/// after the warm-up and after each tenth: (calls so far, VmRSS KiB, fds).
async fn leaks(bench: &Bench, n: usize) -> anyhow::Result<Vec<(usize, u64, usize)>> {
    use futures::StreamExt;
    let batch = (n / 10).max(1);
    let calls = |count: usize, from: usize| {
        let client = bench.eng.clone();
        async move {
            let each = (from..from + count).map(|i| {
                let client = client.clone();
                let tool = mixed_call(i);
                async move {
                    let name = format!("faulty__{tool}");
                    let call = client.call_tool(i as u64, &name, json!({}));
                    let _ = tokio::time::timeout(LOAD_CALL_LIMIT, call).await;
                }
            });
            futures::stream::iter(each)
                .buffer_unordered(8)
                .collect::<Vec<_>>()
                .await;
        }
    };
    calls(batch, 0).await;
    let sample = |done: usize| -> anyhow::Result<(usize, u64, usize)> {
        let ProcessUsage { rss_kib, open_fds } = bench.proxy.usage()?;
        Ok((done, rss_kib, open_fds))
    };
    let mut samples = vec![sample(0)?];
    let mut done = 0;
    while done < n {
        let count = batch.min(n - done);
        calls(count, batch + done).await;
        done += count;
        samples.push(sample(done)?);
        eprintln!("  {done} faulty calls: {:?}", samples.last());
    }
    Ok(samples)
}
