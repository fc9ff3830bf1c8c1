//! The `data-plane` scenario: the same echo `tools/call` straight to the upstream,
//! through nginx, and through gatehouse-proxy, then a warm merged `tools/list` over many
//! upstreams; every figure measured in this run, compared, and held to its target.
//!
//! The upstream is the `fast` one ([`crate::fast_upstream`]) unless `--upstream rmcp`
//! is asked for: rmcp's server costs as much CPU per call as the proxy, so on a large
//! machine it, not the proxy, would set the throughput.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::client::{self, checked_session, echo_request, McpSession};
use crate::harness::{Harness, RunCpu};
use crate::procstat::CpuClock;
use crate::report::{Measurement, Target};
use crate::targets::{GatehouseProxy, Nginx, PingoraBare};
use crate::upstream::{UpstreamFleet, UpstreamKind, UpstreamMode};
use crate::wrk::{self, WrkRequest, WrkResult};

/// Limits the report's targets are held to.
const CPU_PER_CALL_TARGET_US: f64 = 30.0;
const TOOLS_LIST_P99_TARGET_MS: f64 = 1.0;
/// What the gateway may add to a cold initialize + tools/list over the slowest upstream.
const COLD_LIST_MARGIN_MS: f64 = 5.0;

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub proxy_threads: Vec<usize>,
    pub wrk_threads: u32,
    pub connections: u32,
    pub upstream: UpstreamKind,
    /// rmcp's way of answering; the fast upstream has only one.
    pub upstream_mode: UpstreamMode,
    /// Worker threads of the upstreams' runtime.
    pub upstream_threads: usize,
    pub list_upstreams: usize,
    pub tools_per_upstream: usize,
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
    /// The `pingora-bare` binary (built with this package); the row is left out, with a
    /// note, when it is not there.
    pub pingora_bare: PathBuf,
    /// The nginx binary; `None` leaves the nginx rows out (see `no_nginx` for why).
    pub nginx: Option<PathBuf>,
    /// nginx was left out on request (`--no-nginx`), not because it was not found.
    pub no_nginx: bool,
    /// How long to wait for the machine to be quiet before starting (zero: don't).
    pub wait_quiet: Duration,
    /// How many times a run disturbed by other processes is done again.
    pub noise_retries: u32,
}

/// What the harness knows about the machine and the tools, for the report.
#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    wrk: Option<String>,
    nginx: Option<String>,
    proxy_binary: String,
    upstream: UpstreamKind,
    /// `None` for the fast upstream, which answers one way.
    upstream_mode: Option<UpstreamMode>,
    upstream_threads: usize,
    duration_s: f64,
    warmup_s: f64,
    connections: u32,
    wrk_threads: u32,
    proxy_threads: Vec<usize>,
    clock_tick_ms: f64,
}

/// A target measured at 1 and at N connections.
struct Lane {
    one: WrkResult,
    many: WrkResult,
    noisy_one: bool,
    noisy_many: bool,
    cpu_one: RunCpu,
    cpu_many: RunCpu,
}

/// What the proxy `name` adds to a call: its p50 at one connection minus direct's.
fn added_p50(name: &str, lane: &Lane, direct: &Lane) -> Measurement {
    Measurement::new(
        format!("{name} added p50@1"),
        lane.one.p50_us - direct.one.p50_us,
        "us",
    )
    .note(format!("{name} p50@1 - direct p50@1"))
    .noisy(lane.noisy_one || direct.noisy_one)
}

/// Warm-up at N connections, then measured runs at 1 and N, sampling the CPU time
/// of `pids` around each.
async fn lane(
    h: &mut Harness,
    opts: &Options,
    label: &str,
    request: &WrkRequest,
    pids: &[u32],
) -> anyhow::Result<Lane> {
    let script = request.write_script(&opts.out.join(format!("{label}.lua")))?;
    let n = opts.connections;
    h.warm_up(label, &script, &request.url, n, opts.warmup)
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
            h.load(n, opts.duration),
            Some(pids),
        )
        .await?;
    Ok(Lane {
        noisy_one: cpu_one.as_ref().is_some_and(RunCpu::noisy),
        noisy_many: cpu_many.as_ref().is_some_and(RunCpu::noisy),
        one,
        many,
        cpu_one: cpu_one.context("CPU sampled")?,
        cpu_many: cpu_many.context("CPU sampled")?,
    })
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    crate::targets::require_built(&opts.proxy_bin, "gatehouse-proxy", "--proxy-bin")?;
    let clock = CpuClock::detect();
    let env = Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        wrk: wrk::version().await,
        nginx: match &opts.nginx {
            Some(bin) => Nginx::version(bin).await,
            None => None,
        },
        proxy_binary: opts.proxy_bin.display().to_string(),
        upstream: opts.upstream,
        upstream_mode: (opts.upstream == UpstreamKind::Rmcp).then_some(opts.upstream_mode),
        upstream_threads: opts.upstream_threads,
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        connections: opts.connections,
        wrk_threads: opts.wrk_threads,
        proxy_threads: opts.proxy_threads.clone(),
        clock_tick_ms: clock.tick().as_secs_f64() * 1e3,
    };
    if env.wrk.is_none() {
        bail!("wrk is not installed: apt-get install -y wrk");
    }
    let upstream = upstream_description(&opts);
    let upstream_name = match opts.upstream {
        UpstreamKind::Fast => "fast upstream",
        UpstreamKind::Rmcp => "rmcp upstream",
    };
    eprintln!(
        "data-plane: {} s per run ({} s warm-up), {} connections, upstream {upstream}, output {}",
        env.duration_s,
        env.warmup_s,
        env.connections,
        out.display()
    );
    let opts = Options { out, ..opts };
    let mut h = Harness::new(
        &opts.out,
        clock,
        opts.wrk_threads,
        opts.noise_retries,
        opts.wait_quiet,
    );
    h.settle().await?;
    h.notes.push(format!("upstream: {upstream}"));
    let fleet = UpstreamFleet::start_kind(
        opts.upstream,
        opts.list_upstreams.max(1),
        opts.tools_per_upstream.max(1),
        opts.upstream_mode,
        opts.upstream_threads,
    )
    .await?;
    let http = reqwest::Client::new();
    let mut m: Vec<Measurement> = Vec::new();
    let n = opts.connections;

    // Direct: the upstream alone, the floor every proxy adds to.
    let direct_session = checked_session(&http, &fleet.url(0), None, "echo").await?;
    eprintln!(
        "direct -> {} (upstream session: {})",
        fleet.url(0),
        direct_session.session_id().unwrap_or("none, stateless")
    );
    let direct = lane(
        &mut h,
        &opts,
        "direct",
        &echo_request(&direct_session, "echo"),
        &[],
    )
    .await?;
    let direct_rps = Measurement::new(format!("direct rps@{n}"), direct.many.rps, "req/s")
        .note(format!("wrk straight to the {upstream_name}"))
        .noisy(direct.noisy_many);
    let direct_p50 =
        Measurement::new("direct p50@1", direct.one.p50_us, "us").noisy(direct.noisy_one);
    m.push(direct_rps.clone());
    m.push(direct_p50.clone());
    m.push(Measurement::new("direct p99@1", direct.one.p99_us, "us").noisy(direct.noisy_one));
    m.push(
        Measurement::new(
            format!("upstream CPU/call direct @{n}"),
            direct.cpu_many.upstream_us_per_call,
            "us",
        )
        .note(format!(
            "CPU of the harness process (hosts the {upstream_name}) / requests"
        ))
        .noisy(direct.noisy_many),
    );

    // nginx: the reference reverse proxy, one worker.
    let mut nginx_rps = None;
    let mut nginx_added = None;
    let mut nginx_cpu = None;
    match opts.nginx.clone() {
        None => {
            let note = if opts.no_nginx {
                "nginx skipped by --no-nginx: nginx rows left out"
            } else {
                "nginx not found: nginx rows skipped (apt-get install -y nginx)"
            };
            eprintln!("{note}");
            h.notes.push(note.into());
        }
        Some(bin) => {
            let nginx = Nginx::start(&bin, &opts.out, fleet.addr(0)).await?;
            eprintln!("nginx -> {}", nginx.url());
            let result = async {
                let session = checked_session(&http, &nginx.url(), None, "echo").await?;
                lane(
                    &mut h,
                    &opts,
                    "nginx",
                    &echo_request(&session, "echo"),
                    &nginx.pids(),
                )
                .await
            }
            .await;
            let errors = crate::targets::tail(&nginx.log, 5);
            nginx.stop().await;
            let lane = result?;
            if !errors.trim().is_empty() {
                h.problems.push(format!("nginx stderr: {errors}"));
            }
            let rps = Measurement::new(format!("nginx rps@{n}"), lane.many.rps, "req/s")
                .noisy(lane.noisy_many)
                .vs(&direct_rps);
            let p50 = Measurement::new("nginx p50@1", lane.one.p50_us, "us").noisy(lane.noisy_one);
            let added = added_p50("nginx", &lane, &direct);
            let cpu = lane.cpu_many.target_us_per_call.map(|v| {
                Measurement::new(format!("nginx CPU/call @{n}"), v, "us")
                    .note("utime+stime of master+worker / requests")
                    .noisy(lane.noisy_many)
            });
            m.push(rps.clone());
            m.push(p50.vs(&direct_p50));
            m.push(Measurement::new("nginx p99@1", lane.one.p99_us, "us").noisy(lane.noisy_one));
            m.push(added.clone());
            if let Some(cpu) = &cpu {
                m.push(cpu.clone());
            }
            nginx_rps = Some(rps);
            nginx_added = Some(added);
            nginx_cpu = cpu;
        }
    }

    // Pingora alone, with no MCP work, at the first thread count: through its proxy
    // path (the floor of Gatehouse's design), then answering from request_filter over
    // a client of its own (what leaving Pingora's upstream half would save).
    let mut bare_rps = None;
    let mut bare_cpu = None;
    if opts.pingora_bare.is_file() {
        let threads = opts.proxy_threads.first().copied().unwrap_or(1);
        for (label, own_client) in [("pingora-bare", false), ("pingora-own-client", true)] {
            let bare = PingoraBare::start(
                &opts.pingora_bare,
                &opts.out,
                label,
                fleet.addr(0),
                threads,
                own_client,
            )
            .await?;
            eprintln!("{label} -> {}", bare.url());
            let result = async {
                let session = checked_session(&http, &bare.url(), None, "echo").await?;
                lane(
                    &mut h,
                    &opts,
                    label,
                    &echo_request(&session, "echo"),
                    &[bare.pid],
                )
                .await
            }
            .await;
            for w in bare.warnings() {
                h.problems.push(format!("{label} log: {w}"));
            }
            bare.stop().await;
            let lane = result?;
            let name = format!("{label} t{threads}");
            let rps = Measurement::new(format!("{name} rps@{n}"), lane.many.rps, "req/s")
                .noisy(lane.noisy_many);
            m.push(rps.clone().vs_if(nginx_rps.as_ref()));
            let added = added_p50(&name, &lane, &direct);
            m.push(added.vs_if(nginx_added.as_ref()));
            let cpu = lane.cpu_many.target_us_per_call.map(|cpu| {
                Measurement::new(format!("{name} CPU/call @{n}"), cpu, "us")
                    .note(format!("utime+stime of {label} / requests"))
                    .noisy(lane.noisy_many)
            });
            if let Some(cpu) = &cpu {
                m.push(cpu.clone().vs_if(nginx_cpu.as_ref()));
            }
            if !own_client {
                bare_rps = Some(rps);
                bare_cpu = cpu;
            }
        }
    } else {
        let note = format!(
            "{} not found: pingora-bare rows left out (cargo build --release -p gatehouse-bench)",
            opts.pingora_bare.display()
        );
        eprintln!("{note}");
        h.notes.push(note);
    }

    // Gatehouse, at each thread count.
    for &threads in &opts.proxy_threads.clone() {
        let label = format!("gatehouse-t{threads}");
        let proxy =
            GatehouseProxy::start(&opts.proxy_bin, &opts.out, &label, &[fleet.url(0)], threads)
                .await?;
        eprintln!("{label} -> {}", proxy.url());
        let result = async {
            let session =
                checked_session(&http, &proxy.url(), Some(&proxy.token), "s0__echo").await?;
            let lane = lane(
                &mut h,
                &opts,
                &label,
                &echo_request(&session, "s0__echo"),
                &[proxy.pid],
            )
            .await?;
            let errors = UpstreamErrors::read(&http, &proxy).await?;
            anyhow::Ok((lane, errors))
        }
        .await;
        for w in proxy.warnings() {
            h.problems.push(format!("{label} log: {w}"));
        }
        proxy.stop().await;
        let (lane, errors) = result?;
        let name = format!("gatehouse t{threads}");
        let rps = Measurement::new(format!("{name} rps@{n}"), lane.many.rps, "req/s")
            .noisy(lane.noisy_many);
        m.push(match &nginx_rps {
            Some(base) => rps.clone().vs(base).target(Target::NotBelowBaseline),
            None => rps.clone(),
        });
        m.push(
            Measurement::new(format!("{name} rps@{n} vs direct"), lane.many.rps, "req/s")
                .noisy(lane.noisy_many)
                .vs(&direct_rps),
        );
        if let Some(base) = &bare_rps {
            m.push(
                Measurement::new(
                    format!("{name} rps@{n} vs pingora-bare"),
                    lane.many.rps,
                    "req/s",
                )
                .noisy(lane.noisy_many)
                .vs(base),
            );
        }
        m.push(
            Measurement::new(format!("{name} p50@1"), lane.one.p50_us, "us")
                .noisy(lane.noisy_one)
                .vs(&direct_p50),
        );
        m.push(
            Measurement::new(format!("{name} p99@1"), lane.one.p99_us, "us").noisy(lane.noisy_one),
        );
        let added = added_p50(&name, &lane, &direct);
        m.push(match &nginx_added {
            Some(base) => added.vs(base).target(Target::NotAboveBaseline),
            None => added,
        });
        if let Some(cpu_us) = lane.cpu_many.target_us_per_call {
            let cpu = Measurement::new(format!("{name} CPU/call @{n}"), cpu_us, "us")
                .note("utime+stime of gatehouse-proxy / requests")
                .noisy(lane.noisy_many);
            m.push(
                cpu.vs_if(nginx_cpu.as_ref())
                    .target(Target::Ceiling(CPU_PER_CALL_TARGET_US)),
            );
            if let Some(base) = &bare_cpu {
                m.push(
                    Measurement::new(
                        format!("{name} CPU/call @{n} over pingora-bare"),
                        cpu_us - base.value,
                        "us",
                    )
                    .note("what the MCP work costs: routing, auth, session, rewrite, audit")
                    .noisy(lane.noisy_many || base.noisy),
                );
            }
        }
        if let Some(cpu) = lane.cpu_one.target_us_per_call {
            m.push(
                Measurement::new(format!("{name} CPU/call @1"), cpu, "us").noisy(lane.noisy_one),
            );
        }
        m.push(
            Measurement::new(format!("{name} upstream errors"), errors.metric, "errors")
                .note(errors.metric_note())
                .target(Target::Ceiling(0.0)),
        );
        m.push(
            Measurement::new(
                format!("{name} log: {REUSE_FAILED}"),
                errors.reuse_failed as f64,
                "lines",
            )
            .note("lines of the proxy's log: a pooled upstream connection Pingora could not take")
            .target(Target::Ceiling(0.0)),
        );
    }

    // Merged tools/list over many upstreams.
    if opts.list_upstreams > 0 {
        let upstreams = fleet.len();
        let each = opts.tools_per_upstream;
        let threads = opts.proxy_threads.first().copied().unwrap_or(1);
        let label = format!("tools-list-t{threads}");
        let urls: Vec<String> = (0..upstreams).map(|i| fleet.url(i)).collect();
        let proxy =
            GatehouseProxy::start(&opts.proxy_bin, &opts.out, &label, &urls, threads).await?;
        eprintln!(
            "{label} -> {} ({upstreams} upstreams x {each} tools)",
            proxy.url()
        );
        let result = async {
            // Each upstream on its own first (a fresh session on each; their lists are
            // never cached), then the fresh proxy, whose first session must open one
            // with every upstream and fetch every list.
            let mut slowest = Duration::ZERO;
            for url in &urls {
                let (list, took) = cold_list(&http, url, None).await?;
                check_tool_count(&list, each).with_context(|| format!("tools/list at {url}"))?;
                slowest = slowest.max(took);
            }
            // All at once, as the gateway asks them: on this machine the upstreams
            // share its two cores, so this is the slowest upstream under the
            // gateway's own fan-out.
            let started = Instant::now();
            let all = urls.iter().map(|url| cold_list(&http, url, None));
            for (list, _) in futures::future::try_join_all(all).await? {
                check_tool_count(&list, each).context("tools/list, all upstreams at once")?;
            }
            let slowest_together = started.elapsed();
            let (cold, cold_time) = cold_list(&http, &proxy.url(), Some(&proxy.token)).await?;
            let session = McpSession::open(&http, &proxy.url(), Some(&proxy.token)).await?;
            let expected = upstreams * each;
            check_tool_count(&cold, expected).context("cold tools/list")?;
            let request = WrkRequest {
                url: session.url.clone(),
                body: client::tools_list_body(),
                headers: session.headers.clone(),
                expect: r#""tools":["#.into(),
            };
            let script = request.write_script(&opts.out.join(format!("{label}.lua")))?;
            h.warm_up(&label, &script, &request.url, 1, opts.warmup)
                .await?;
            let load = h.load(1, opts.duration);
            let (warm, cpu) = h
                .wrk(&label, &script, &request.url, load, Some(&[proxy.pid]))
                .await?;
            let noisy = cpu.as_ref().is_some_and(RunCpu::noisy);
            let (after, _) = session.request(&http, &client::tools_list_body()).await?;
            check_tool_count(&after, expected).context("tools/list after the load run")?;
            // Cold again on a warm process: a config change that touches every server
            // drops every cached list, as it does in production.
            touch_every_server(&opts.out.join(format!("{label}.json")))?;
            proxy
                .wait_for_config(&http, 2, Duration::from_secs(10))
                .await
                .context("the tools/list proxy reloading its config")?;
            let (relisted, reload_time) =
                cold_list(&http, &proxy.url(), Some(&proxy.token)).await?;
            check_tool_count(&relisted, expected).context("tools/list after the config change")?;
            anyhow::Ok((
                slowest,
                slowest_together,
                cold_time,
                reload_time,
                warm,
                noisy,
                after.to_string().len(),
            ))
        }
        .await;
        for w in proxy.warnings() {
            h.problems.push(format!("{label} log: {w}"));
        }
        proxy.stop().await;
        let (slowest, slowest_together, cold_time, reload_time, warm, noisy, bytes) = result?;
        let what = format!("{upstreams}x{each}");
        let slowest = Measurement::new(
            "slowest upstream initialize + tools/list (direct)",
            slowest.as_secs_f64() * 1e3,
            "ms",
        )
        .note("one sample per upstream, each on a fresh session, one at a time; the largest");
        let together = Measurement::new(
            "slowest upstream initialize + tools/list, all at once (direct)",
            slowest_together.as_secs_f64() * 1e3,
            "ms",
        )
        .note("a fresh session on every upstream at once, as the gateway opens them: the time until the last list arrived");
        let reload = Measurement::new(
            format!("initialize + tools/list {what} cold after a config change"),
            reload_time.as_secs_f64() * 1e3,
            "ms",
        )
        .vs(&together)
        .target(Target::AtMostAboveBaseline(COLD_LIST_MARGIN_MS))
        .note("one sample: a new session on a proxy that has served load, after a config change that touched every server (every cached list dropped)");
        let cold = Measurement::new(
                format!("initialize + tools/list {what} cold, fresh proxy"),
                cold_time.as_secs_f64() * 1e3,
                "ms",
            )
            .vs(&slowest)
            .target(Target::AtMostAboveBaseline(COLD_LIST_MARGIN_MS))
            .note("one sample: the first session of a fresh proxy, initialize (every upstream) + notifications/initialized + tools/list (every upstream)");
        m.push(slowest);
        m.push(together);
        m.push(cold);
        m.push(reload);
        m.push(
            Measurement::new(
                format!("tools/list {what} warm p50@1"),
                warm.p50_us / 1e3,
                "ms",
            )
            .noisy(noisy),
        );
        m.push(
            Measurement::new(
                format!("tools/list {what} warm p99@1"),
                warm.p99_us / 1e3,
                "ms",
            )
            .target(Target::Ceiling(TOOLS_LIST_P99_TARGET_MS))
            .noisy(noisy),
        );
        m.push(
            Measurement::new(format!("tools/list {what} warm rps@1"), warm.rps, "req/s")
                .noisy(noisy),
        );
        h.notes
            .push(format!("tools/list response body: {bytes} bytes"));
    }
    drop(fleet);
    let log = h.log.clone();
    h.report("data-plane", env, m).publish(&opts.out, &log)
}

/// The line Pingora logs when a pooled upstream connection it picked is still held
/// elsewhere: the request then opens a new connection.
const REUSE_FAILED: &str = "failed to acquire reusable stream";

/// The line Pingora logs when the client of a proxied request went away before the
/// answer: wrk does at the end of each run, with calls in flight.
const DOWNSTREAM_CLOSED: &str = "Downstream ConnectionClosed";

/// How often a proxy failed to reach its upstream, read after its runs.
struct UpstreamErrors {
    /// `gatehouse_upstream_errors_total`, summed over its labels.
    metric: f64,
    /// The same per `kind`.
    by_kind: Vec<(String, f64)>,
    /// Lines of the proxy's log saying [`REUSE_FAILED`].
    reuse_failed: usize,
    /// Lines of the proxy's log saying [`DOWNSTREAM_CLOSED`]: the proxy counts these
    /// as upstream errors of kind `proxy` too.
    downstream_closed: usize,
}

impl UpstreamErrors {
    async fn read(http: &reqwest::Client, proxy: &GatehouseProxy) -> anyhow::Result<Self> {
        let page = proxy.metrics(http).await?;
        // A counter with no series yet is left off the page: that is 0, but only on a
        // page that is the proxy's (it counted the calls just made).
        if crate::prometheus::sum(&page, "gatehouse_tool_calls_total", &[]).is_none() {
            bail!(
                "the proxy's /metrics has no gatehouse_tool_calls_total: not the page this scenario reads"
            );
        }
        let metric =
            crate::prometheus::sum(&page, "gatehouse_upstream_errors_total", &[]).unwrap_or(0.0);
        let log = std::fs::read_to_string(&proxy.log)
            .with_context(|| format!("reading {}", proxy.log.display()))?;
        let lines_with = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        Ok(UpstreamErrors {
            metric,
            by_kind: crate::prometheus::sum_by(&page, "gatehouse_upstream_errors_total", "kind"),
            reuse_failed: lines_with(REUSE_FAILED),
            downstream_closed: lines_with(DOWNSTREAM_CLOSED),
        })
    }

    /// What the metric row's note says: where the figure comes from and what it is
    /// made of.
    fn metric_note(&self) -> String {
        let mut note =
            "gatehouse_upstream_errors_total, all labels, over the proxy's life".to_string();
        if !self.by_kind.is_empty() {
            let kinds: Vec<String> = self
                .by_kind
                .iter()
                .map(|(kind, n)| format!("{kind}={n}"))
                .collect();
            note.push_str(&format!("; by kind: {}", kinds.join(", ")));
        }
        if self.downstream_closed > 0 {
            note.push_str(&format!(
                "; {} log lines say {DOWNSTREAM_CLOSED:?} (wrk ending a run with calls in flight): the proxy counts those it had forwarded as kind proxy",
                self.downstream_closed
            ));
        }
        note
    }
}

/// The upstream in a few words, for the report: which server, how it answers, threads.
fn upstream_description(opts: &Options) -> String {
    let threads = match opts.upstream_threads {
        1 => "1 thread".to_string(),
        n => format!("{n} threads"),
    };
    match opts.upstream {
        UpstreamKind::Fast => {
            format!("fast upstream (hyper HTTP/1.1, sessions, JSON answers; {threads})")
        }
        UpstreamKind::Rmcp => {
            let mode = match opts.upstream_mode {
                UpstreamMode::StatelessJson => "stateless-json",
                UpstreamMode::SessionSse => "session-sse",
            };
            format!("rmcp upstream ({mode}; {threads})")
        }
    }
}

/// Rewrites a file-config proxy's config as version 2 with a header added to every
/// server: each server's fingerprint changes, so no cached tool list survives.
fn touch_every_server(path: &std::path::Path) -> anyhow::Result<()> {
    let mut config: Value = serde_json::from_slice(&std::fs::read(path)?)?;
    config["version"] = Value::from(2);
    for ws in config["workspaces"].as_array_mut().into_iter().flatten() {
        for server in ws["servers"].as_array_mut().into_iter().flatten() {
            server["headers"] = serde_json::json!({"x-bench-config": "2"});
        }
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&config)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Opens a session at `url` and lists its tools: the list and the time for both.
async fn cold_list(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
) -> anyhow::Result<(Value, Duration)> {
    let started = Instant::now();
    let session = McpSession::open(http, url, token).await?;
    let (list, _) = session.request(http, &client::tools_list_body()).await?;
    Ok((list, started.elapsed()))
}

fn check_tool_count(response: &Value, expected: usize) -> anyhow::Result<()> {
    let found = response
        .pointer("/result/tools")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if found != expected {
        bail!("expected {expected} tools, got {found}");
    }
    Ok(())
}
