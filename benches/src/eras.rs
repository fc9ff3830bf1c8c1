//! The `eras` scenario: a `tools/call` of MCP 2026-07-28 (stateless: every request
//! carries its version in `_meta` and the mirror headers, no session) through the
//! gateway, against the same call of the session era (2025-11-25, `Mcp-Session-Id`)
//! through the same proxy, and both straight to the upstream — one run, one proxy,
//! wrk for every lane. The issue's requirement: the stateless path is not slower than
//! the session path (it has no envelope to open). A last lane is a stateless client's
//! call to an upstream of the session era, which the gateway reaches through a pooled
//! session (the bridge).
//!
//! The upstream is the `fast` bench server (`crate::fast_upstream`), which speaks
//! both eras; the bridged lane's is the same server limited to the session era.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::client::{checked_session, echo_request, McpSession};
use crate::harness::{Harness, RunCpu};
use crate::instructions::Counted;
use crate::procstat::CpuClock;
use crate::report::{Measurement, Target};
use crate::targets::GatehouseProxy;
use crate::upstream::tool_set;
use crate::wrk::{self, WrkRequest, WrkResult};

const MODERN: &str = "2026-07-28";

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds of each measured run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of each lane's warm-up run.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Connections of the throughput runs (latency runs use 1).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    #[arg(long, default_value_t = 1)]
    wrk_threads: u32,
    /// Worker threads of the gatehouse-proxy.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// Rounds of the two compared lanes (session, stateless), alternated; each is
    /// reported by its round of median CPU/call, so one noisy run decides nothing.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Calls of each era counted under callgrind by a second proxy (0 skips it): the
    /// instruction count, unlike CPU time, does not move with the machine's noise.
    #[arg(long, default_value_t = 1000)]
    counted_calls: u64,
    /// The valgrind binary; callgrind_control is expected next to it.
    #[arg(long, default_value = "/usr/bin/valgrind")]
    valgrind: PathBuf,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
}

impl Args {
    pub fn options(self, build: &Path, out: &Path) -> Options {
        Options {
            duration: Duration::from_secs_f64(self.duration.max(1.0)),
            warmup: Duration::from_secs_f64(self.warmup.max(0.0)),
            connections: self.connections.max(1),
            wrk_threads: self.wrk_threads.max(1),
            proxy_threads: self.proxy_threads.max(1),
            rounds: self.rounds.max(1),
            counted_calls: self.counted_calls,
            valgrind: self.valgrind,
            out: out.join("eras"),
            proxy_bin: self
                .proxy_bin
                .unwrap_or_else(|| build.join("gatehouse-proxy")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: u32,
    pub wrk_threads: u32,
    pub proxy_threads: usize,
    pub rounds: usize,
    pub counted_calls: u64,
    pub valgrind: PathBuf,
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
}

#[derive(Serialize)]
struct Environment {
    cpus: usize,
    wrk: Option<String>,
    proxy_binary: String,
    duration_s: f64,
    warmup_s: f64,
    connections: u32,
    proxy_threads: usize,
    rounds: usize,
}

/// One lane's runs: at one connection and at N.
struct Lane {
    one: WrkResult,
    many: WrkResult,
    cpu_many: Option<RunCpu>,
    noisy: bool,
}

/// A stateless `tools/call` of `tool` on `url`, as wrk sends it.
fn stateless_call(url: &str, tool: &str, bearer: Option<&str>) -> WrkRequest {
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {
            "name": tool,
            "arguments": {"text": "hello from the gatehouse bench"},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": MODERN,
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "gatehouse-bench", "version": "1"},
            },
        },
    });
    let mut headers = vec![
        (
            "Accept".to_string(),
            "application/json, text/event-stream".to_string(),
        ),
        ("Content-Type".to_string(), "application/json".to_string()),
        ("MCP-Protocol-Version".to_string(), MODERN.to_string()),
        ("Mcp-Method".to_string(), "tools/call".to_string()),
        ("Mcp-Name".to_string(), tool.to_string()),
    ];
    if let Some(token) = bearer {
        headers.push(("Authorization".to_string(), format!("Bearer {token}")));
    }
    WrkRequest {
        url: url.to_string(),
        body: body.to_string(),
        headers,
        expect: r#""result":"#.into(),
    }
}

/// Checks one stateless call answers before wrk repeats it.
async fn check_stateless(http: &reqwest::Client, request: &WrkRequest) -> anyhow::Result<()> {
    let mut req = http.post(&request.url).body(request.body.clone());
    for (k, v) in &request.headers {
        req = req.header(k, v);
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    anyhow::ensure!(
        status == 200 && text.contains("hello from the gatehouse bench"),
        "stateless call to {} answered {status}: {text}",
        request.url
    );
    Ok(())
}

async fn lane(
    h: &mut Harness,
    opts: &Options,
    label: &str,
    request: &WrkRequest,
    pids: &[u32],
) -> anyhow::Result<Lane> {
    let script = request.write_script(&opts.out.join(format!("{label}.lua")))?;
    h.warm_up(label, &script, &request.url, opts.connections, opts.warmup)
        .await?;
    let (one, cpu_one) = h
        .wrk(
            label,
            &script,
            &request.url,
            h.load(1, opts.duration),
            Some(pids),
        )
        .await?;
    let (many, cpu_many) = h
        .wrk(
            label,
            &script,
            &request.url,
            h.load(opts.connections, opts.duration),
            Some(pids),
        )
        .await?;
    let noisy =
        cpu_one.as_ref().is_some_and(RunCpu::noisy) || cpu_many.as_ref().is_some_and(RunCpu::noisy);
    Ok(Lane {
        one,
        many,
        cpu_many,
        noisy,
    })
}

/// The round whose CPU/call is the median of the rounds (rounds without a CPU
/// figure sort last).
fn median_round(mut lanes: Vec<Lane>) -> Lane {
    let cpu = |l: &Lane| {
        l.cpu_many
            .as_ref()
            .and_then(|c| c.target_us_per_call)
            .unwrap_or(f64::INFINITY)
    };
    lanes.sort_by(|a, b| cpu(a).total_cmp(&cpu(b)));
    let mid = (lanes.len() - 1) / 2;
    lanes.swap_remove(mid)
}

/// Instructions per call of each era, counted by a second proxy run under callgrind
/// over the same upstreams: (session, stateless).
async fn count_instructions(
    opts: &Options,
    http: &reqwest::Client,
    urls: &[String],
) -> anyhow::Result<(Counted, Counted)> {
    use crate::instructions::{count, dump_files, write_wrapper};
    let control = opts.valgrind.with_file_name("callgrind_control");
    anyhow::ensure!(
        control.is_file(),
        "{} not found next to valgrind",
        control.display()
    );
    let dumps = opts.out.join("callgrind.out");
    for old in dump_files(&dumps)? {
        std::fs::remove_file(&old)?;
    }
    let wrapper = write_wrapper(&opts.out, &opts.valgrind, &opts.proxy_bin, &dumps)?;
    let proxy = GatehouseProxy::start(&wrapper, &opts.out, "callgrind-proxy", urls, 1).await?;
    eprintln!("eras: callgrind-proxy {} (pid {})", proxy.url(), proxy.pid);
    let result = async {
        let session = checked_session(http, &proxy.url(), Some(&proxy.token), "s0__echo").await?;
        let call = echo_request(&session, "s0__echo");
        let modern = stateless_call(&proxy.url(), "s0__echo", Some(&proxy.token));
        // The stateless client is a "session" with no id: the same sender, its headers.
        let stateless = McpSession {
            url: modern.url.clone(),
            headers: modern.headers.clone(),
        };
        let n = opts.counted_calls;
        let session_count = count(
            http, &session, &control, proxy.pid, &dumps, &call.body, 200, n,
        )
        .await?;
        let stateless_count = count(
            http,
            &stateless,
            &control,
            proxy.pid,
            &dumps,
            &modern.body,
            200,
            n,
        )
        .await?;
        eprintln!(
            "  instructions/call: session {:.0}, stateless {:.0}",
            session_count.per_request(),
            stateless_count.per_request()
        );
        anyhow::Ok((session_count, stateless_count))
    }
    .await;
    proxy.stop().await;
    result
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    let opts = Options { out, ..opts };
    crate::targets::require_built(&opts.proxy_bin, "gatehouse-proxy", "--proxy-bin")?;
    let env = Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        wrk: wrk::version().await,
        proxy_binary: opts.proxy_bin.display().to_string(),
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        connections: opts.connections,
        proxy_threads: opts.proxy_threads,
        rounds: opts.rounds,
    };
    anyhow::ensure!(
        env.wrk.is_some(),
        "wrk is not installed: apt-get install -y wrk"
    );

    // The upstreams on a thread of their own: s0 speaks both eras, s1 the session era.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-upstream")
        .enable_all()
        .build()?;
    let shutdown = CancellationToken::new();
    let mut urls = Vec::new();
    for (label, modern) in [("s0", true), ("s1", false)] {
        let addr = runtime
            .spawn(crate::fast_upstream::serve_era(
                label.to_string(),
                tool_set(1),
                shutdown.child_token(),
                modern,
            ))
            .await??;
        urls.push(format!("http://{addr}/mcp"));
    }
    let proxy = GatehouseProxy::start(
        &opts.proxy_bin,
        &opts.out,
        "gatehouse",
        &urls,
        opts.proxy_threads,
    )
    .await?;
    eprintln!("eras: gatehouse-proxy {} (pid {})", proxy.url(), proxy.pid);
    let http = reqwest::Client::new();
    let mut h = Harness::new(
        &opts.out,
        CpuClock::detect(),
        opts.wrk_threads,
        2,
        Duration::ZERO,
    );

    let direct_session = McpSession::open(&http, &urls[0], None).await?;
    let direct_session_call = echo_request(&direct_session, "echo");
    let direct_stateless = stateless_call(&urls[0], "echo", None);
    check_stateless(&http, &direct_stateless).await?;
    let session = checked_session(&http, &proxy.url(), Some(&proxy.token), "s0__echo").await?;
    let stateless = stateless_call(&proxy.url(), "s0__echo", Some(&proxy.token));
    check_stateless(&http, &stateless).await?;
    let bridged = stateless_call(&proxy.url(), "s1__echo", Some(&proxy.token));
    check_stateless(&http, &bridged).await?;

    // The compared pair alternates round by round between the direct lanes and the
    // bridged one, so drift on a shared machine falls on both alike.
    let session_call = echo_request(&session, "s0__echo");
    let mut order: Vec<(&str, &WrkRequest, bool)> = vec![
        ("direct 2025", &direct_session_call, false),
        ("direct 2026", &direct_stateless, false),
    ];
    for _ in 0..opts.rounds {
        order.push(("gatehouse 2025 session", &session_call, true));
        order.push(("gatehouse 2026 stateless", &stateless, true));
    }
    order.push(("gatehouse 2026 to a 2025 upstream", &bridged, true));
    let mut runs: Vec<(&str, bool, Vec<Lane>)> = Vec::new();
    for (name, request, through) in order {
        let label = name.replace(' ', "-");
        let pids: &[u32] = if through { &[proxy.pid] } else { &[] };
        let result = lane(&mut h, &opts, &label, request, pids)
            .await
            .with_context(|| format!("lane {name}"))?;
        match runs.iter_mut().find(|(n, _, _)| *n == name) {
            Some((_, _, lanes)) => lanes.push(result),
            None => runs.push((name, through, vec![result])),
        }
    }
    let results: Vec<(&str, bool, Lane)> = runs
        .into_iter()
        .map(|(name, through, lanes)| (name, through, median_round(lanes)))
        .collect();
    let warnings = proxy.warnings();
    let log = proxy.log.clone();
    proxy.stop().await;
    let counted = if opts.counted_calls == 0 {
        None
    } else if crate::instructions::valgrind_version(&opts.valgrind)
        .await
        .is_none()
    {
        h.notes.push(format!(
            "valgrind not found at {}: instruction counts skipped",
            opts.valgrind.display()
        ));
        None
    } else {
        Some(
            count_instructions(&opts, &http, &urls)
                .await
                .context("counting instructions under callgrind")?,
        )
    };
    shutdown.cancel();
    runtime.shutdown_background();

    let n = opts.connections;
    let find = |name: &str| {
        results
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, l)| l)
            .expect("every lane ran")
    };
    let mut m = Vec::new();
    let session_p50 = Measurement::new(
        "gatehouse 2025 session p50@1",
        find("gatehouse 2025 session").one.p50_us,
        "us",
    )
    .noisy(find("gatehouse 2025 session").noisy);
    let session_cpu = find("gatehouse 2025 session")
        .cpu_many
        .as_ref()
        .and_then(|c| c.target_us_per_call)
        .map(|v| {
            Measurement::new(format!("gatehouse 2025 session CPU/call @{n}"), v, "us")
                .noisy(find("gatehouse 2025 session").noisy)
        });
    let session_rps = Measurement::new(
        format!("gatehouse 2025 session rps@{n}"),
        find("gatehouse 2025 session").many.rps,
        "req/s",
    )
    .noisy(find("gatehouse 2025 session").noisy);
    for (name, through, lane) in &results {
        let name = *name;
        let is_stateless = name.starts_with("gatehouse 2026");
        let p50 =
            Measurement::new(format!("{name} p50@1"), lane.one.p50_us, "us").noisy(lane.noisy);
        m.push(if is_stateless {
            p50.vs(&session_p50)
        } else {
            p50
        });
        m.push(Measurement::new(format!("{name} p99@1"), lane.one.p99_us, "us").noisy(lane.noisy));
        let rps =
            Measurement::new(format!("{name} rps@{n}"), lane.many.rps, "req/s").noisy(lane.noisy);
        m.push(if is_stateless {
            rps.vs(&session_rps)
        } else {
            rps
        });
        if *through {
            if let Some(cpu) = lane.cpu_many.as_ref().and_then(|c| c.target_us_per_call) {
                let cpu = Measurement::new(format!("{name} CPU/call @{n}"), cpu, "us")
                    .note("utime+stime of gatehouse-proxy / requests")
                    .noisy(lane.noisy);
                m.push(match (&session_cpu, name == "gatehouse 2026 stateless") {
                    // The requirement: no slower than the session path.
                    (Some(base), true) => cpu.vs(base).target(Target::NotAboveBaseline),
                    (Some(base), false) if is_stateless => cpu.vs(base),
                    _ => cpu,
                });
            }
        }
    }
    if let Some((session, stateless)) = &counted {
        let note = |n: u64| {
            format!("callgrind Ir of gatehouse-proxy (--threads 1) over {n} sequential calls after 200 warm-up calls, / calls")
        };
        let base = Measurement::new(
            "gatehouse 2025 session instructions/call",
            session.per_request(),
            "instructions",
        )
        .note(note(session.requests));
        m.push(
            Measurement::new(
                "gatehouse 2026 stateless instructions/call",
                stateless.per_request(),
                "instructions",
            )
            .note(note(stateless.requests))
            .vs(&base)
            .target(Target::NotAboveBaseline),
        );
        m.insert(m.len() - 1, base);
    }
    h.problems.extend(
        warnings
            .into_iter()
            .map(|w| format!("gatehouse-proxy log: {w}")),
    );
    h.notes.push(format!(
        "same proxy, same upstream process for every lane; lanes run one after another; the session and stateless lanes alternate over {} rounds and each is reported by its round of median CPU/call",
        opts.rounds
    ));
    let report = h.report("eras", env, m);
    report.publish_saying(&opts.out, &format!("proxy log: {}", log.display()))
}
