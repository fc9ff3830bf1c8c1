//! The `audit` scenario: what recording and shipping one audit event per `tools/call`
//! costs the request path. One control plane feeds two proxies the same workspace and
//! upstream; one audits (the default), the other runs with `--no-audit`. wrk loads
//! them in turn, off, on, off, on, ..., so both see the same machine, and the median
//! throughputs are compared. Then the event counts are held to what delivery
//! promises: every call recorded, shipped, stored, and none dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::{checked_session, echo_request};
use crate::control_plane::ControlPlane;
use crate::harness::{Harness, RunCpu};
use crate::procstat::CpuClock;
use crate::prometheus;
use crate::report::{Measurement, Target};
use crate::targets::{
    require_proxy_and_control_plane, ControlPlaneFeed, GatehouseProxy, WORKSPACE,
};
use crate::upstream::{UpstreamFleet, UpstreamMode};
use crate::wrk::{self, WrkLoad, WrkRequest, WrkResult};

/// Audit on may cost at most 5% of the throughput of audit off.
const THROUGHPUT_RATIO_TARGET: f64 = 0.95;
/// How long a fed proxy may take to serve the control plane's config.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the audit-on proxy may take to ship the events of a run.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The bench upstream's slug in the workspace, and the tool clients call.
const SERVER: &str = "s0";
const TOOL: &str = "s0__echo";

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    /// Measured runs of each proxy, alternating.
    pub rounds: usize,
    pub connections: u32,
    pub wrk_threads: u32,
    pub proxy_threads: usize,
    pub upstream_mode: UpstreamMode,
    /// Where this scenario's files go (`<out>/audit`).
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
    pub control_plane_bin: PathBuf,
    pub wait_quiet: Duration,
    pub noise_retries: u32,
}

/// What the harness knows about the machine and the tools, for the report.
#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    wrk: Option<String>,
    proxy_binary: String,
    control_plane_binary: String,
    upstream_mode: UpstreamMode,
    duration_s: f64,
    warmup_s: f64,
    rounds: usize,
    connections: u32,
    wrk_threads: u32,
    proxy_threads: usize,
    clock_tick_ms: f64,
}

/// One of the two proxies compared, and what its measured runs gave.
struct Side {
    label: &'static str,
    proxy: GatehouseProxy,
    request: WrkRequest,
    script: PathBuf,
    runs: Vec<(WrkResult, RunCpu)>,
    /// `tools/call`s answered to clients: the set-up check, warm-up and measured runs.
    answered: u64,
}

impl Side {
    /// Starts a proxy fed by `cp` and returns once it serves config `version` and an
    /// echo call through it answers correctly.
    async fn start(
        opts: &Options,
        http: &reqwest::Client,
        label: &'static str,
        feed: &ControlPlaneFeed<'_>,
        token: &str,
        version: u64,
    ) -> anyhow::Result<Side> {
        let proxy = GatehouseProxy::start_fed(
            &opts.proxy_bin,
            &opts.out,
            label,
            feed,
            token.to_string(),
            opts.proxy_threads,
        )
        .await?;
        proxy
            .wait_for_config(http, version, CONFIG_TIMEOUT)
            .await
            .context(label)?;
        let session = checked_session(http, &proxy.url(), Some(&proxy.token), TOOL).await?;
        let request = echo_request(&session, TOOL);
        let script = request.write_script(&opts.out.join(format!("{label}.lua")))?;
        eprintln!(
            "{label} -> {} (config version {version}, pid {})",
            proxy.url(),
            proxy.pid
        );
        Ok(Side {
            label,
            proxy,
            request,
            script,
            runs: Vec::new(),
            answered: 1,
        })
    }

    /// One wrk run of this side (with its CPU time sampled if `measured`); every
    /// call it answered is counted, those of runs redone for noise included.
    async fn wrk(
        &mut self,
        h: &mut Harness,
        label: &str,
        load: WrkLoad,
        measured: bool,
    ) -> anyhow::Result<(WrkResult, Option<RunCpu>)> {
        let first = h.runs.len();
        let pids = [self.proxy.pid];
        let outcome = h
            .wrk(
                label,
                &self.script,
                &self.request.url,
                load,
                measured.then_some(&pids[..]),
            )
            .await;
        self.answered += h.runs[first..]
            .iter()
            .map(|r| r.result.requests)
            .sum::<u64>();
        outcome
    }

    fn noisy(&self) -> bool {
        self.runs.iter().any(|(_, cpu)| cpu.noisy())
    }

    /// The median of `f` over the measured runs.
    fn median(&self, f: Figure) -> Option<f64> {
        median(self.runs.iter().filter_map(|(r, c)| f(r, c)).collect())
    }

    /// "median of N runs: a, b, c <unit>".
    fn describe(&self, f: Figure, unit: &str) -> String {
        let each: Vec<String> = self
            .runs
            .iter()
            .filter_map(|(r, c)| f(r, c))
            .map(crate::report::fmt_num)
            .collect();
        format!("median of {} runs: {} {unit}", each.len(), each.join(", "))
    }
}

/// The median of `values`; `None` when there are none.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The audit figures of a proxy's `/metrics`; `None` where the metric does not exist.
#[derive(Debug, Clone, Copy, Default)]
struct AuditCounts {
    /// `gatehouse_tool_calls_total`, all series: every `tools/call` the proxy saw end.
    calls: Option<f64>,
    shipped: Option<f64>,
    spooled: Option<f64>,
    dropped: Option<f64>,
    queued: Option<f64>,
    spool_bytes: Option<f64>,
}

impl AuditCounts {
    async fn read(proxy: &GatehouseProxy, http: &reqwest::Client) -> anyhow::Result<AuditCounts> {
        let text = proxy.metrics(http).await?;
        let get = |name: &str| prometheus::sum(&text, name, &[]);
        Ok(AuditCounts {
            calls: get("gatehouse_tool_calls_total"),
            shipped: get("gatehouse_audit_events_shipped_total"),
            spooled: get("gatehouse_audit_events_spooled_total"),
            dropped: get("gatehouse_audit_events_dropped_total"),
            queued: get("gatehouse_audit_queue_events"),
            spool_bytes: get("gatehouse_audit_spool_bytes"),
        })
    }

    /// Every call's event has left the proxy: shipped or dropped, none queued or
    /// spooled. Unknowable (`None`) without the shipping metrics.
    fn drained(&self) -> Option<bool> {
        let (calls, shipped) = (self.calls?, self.shipped?);
        let dropped = self.dropped.unwrap_or(0.0);
        Some(
            shipped + dropped >= calls
                && self.queued.unwrap_or(0.0) == 0.0
                && self.spool_bytes.unwrap_or(0.0) == 0.0,
        )
    }
}

/// Waits until the audit-on proxy has shipped the events of every call so far, so
/// that its shipping does not spill into the next run; a backlog left after
/// [`DRAIN_TIMEOUT`] becomes a problem.
async fn drain(
    h: &mut Harness,
    proxy: &GatehouseProxy,
    http: &reqwest::Client,
) -> anyhow::Result<AuditCounts> {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let counts = AuditCounts::read(proxy, http).await?;
        match counts.drained() {
            Some(true) | None => return Ok(counts),
            Some(false) if Instant::now() > deadline => {
                let problem = format!(
                    "audit-on: events not shipped {DRAIN_TIMEOUT:?} after the run: {counts:?}"
                );
                eprintln!("  !! {problem}");
                h.problems.push(problem);
                return Ok(counts);
            }
            Some(false) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    require_proxy_and_control_plane(&opts.proxy_bin, &opts.control_plane_bin)?;
    std::fs::create_dir_all(&opts.out)?;
    let opts = Options {
        out: opts.out.canonicalize()?,
        ..opts
    };
    let clock = CpuClock::detect();
    let env = Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        wrk: wrk::version().await,
        proxy_binary: opts.proxy_bin.display().to_string(),
        control_plane_binary: opts.control_plane_bin.display().to_string(),
        upstream_mode: opts.upstream_mode,
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        rounds: opts.rounds,
        connections: opts.connections,
        wrk_threads: opts.wrk_threads,
        proxy_threads: opts.proxy_threads,
        clock_tick_ms: clock.tick().as_secs_f64() * 1e3,
    };
    if env.wrk.is_none() {
        bail!("wrk is not installed: apt-get install -y wrk");
    }
    eprintln!(
        "audit: {} rounds of off/on, {} s per run ({} s warm-up), {} connections, proxy threads {}, upstream {:?}, output {}",
        opts.rounds,
        env.duration_s,
        env.warmup_s,
        opts.connections,
        opts.proxy_threads,
        opts.upstream_mode,
        opts.out.display()
    );
    let mut h = Harness::new(
        &opts.out,
        clock,
        opts.wrk_threads,
        opts.noise_retries,
        opts.wait_quiet,
    );
    h.settle().await?;
    let fleet = UpstreamFleet::start(1, 1, opts.upstream_mode).await?;
    let cp = ControlPlane::start(&opts.control_plane_bin, &opts.out).await?;
    eprintln!("control plane -> {} (pid {})", cp.url(), cp.pid);
    // The control plane stores what audit-on ships: its CPU time is the scenario's.
    h.companions = vec![cp.pid];
    let outcome = measure(&mut h, &opts, &fleet, &cp).await;
    for w in cp.warnings() {
        h.problems.push(format!("control plane log: {w}"));
    }
    cp.stop().await;
    drop(fleet);
    let m = outcome?;
    let log = h.log.clone();
    h.report("audit", env, m).publish(&opts.out, &log)
}

/// Sets up the workspace, starts both proxies, loads them and reads the counts.
async fn measure(
    h: &mut Harness,
    opts: &Options,
    fleet: &UpstreamFleet,
    cp: &ControlPlane,
) -> anyhow::Result<Vec<Measurement>> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let admin = cp.login_admin().await?;
    admin.create_workspace(WORKSPACE, "Bench").await?;
    admin
        .install_server(WORKSPACE, SERVER, &fleet.url(0))
        .await?;
    let token = admin.create_token(WORKSPACE, "bench").await?;
    let version = cp.config_version().await?;
    let url = cp.url();
    let feed = |audit| ControlPlaneFeed {
        url: &url,
        proxy_token: &cp.proxy_token,
        audit,
    };
    let off = Side::start(opts, &http, "audit-off", &feed(false), &token, version).await?;
    let on = Side::start(opts, &http, "audit-on", &feed(true), &token, version).await?;
    let mut sides = [off, on];
    let outcome = async {
        load(h, opts, &http, &mut sides).await?;
        count(h, cp, &http, &sides).await
    }
    .await;
    let measurements = outcome.map(|counts| compare(opts, &sides, &counts, &mut h.problems));
    for side in sides {
        for w in side.proxy.warnings() {
            h.problems.push(format!("{} log: {w}", side.label));
        }
        side.proxy.stop().await;
    }
    measurements
}

/// A warm-up of each proxy, then `rounds` measured runs of each, alternating; the
/// audit-on proxy's backlog is shipped before every run.
async fn load(
    h: &mut Harness,
    opts: &Options,
    http: &reqwest::Client,
    sides: &mut [Side; 2],
) -> anyhow::Result<()> {
    let n = opts.connections;
    if !opts.warmup.is_zero() {
        for side in sides.iter_mut() {
            let warm = h.load(n, opts.warmup);
            side.wrk(h, &format!("{} warm-up", side.label), warm, false)
                .await?;
        }
    }
    for round in 1..=opts.rounds {
        eprintln!("round {round} of {}", opts.rounds);
        for i in 0..sides.len() {
            drain(h, &sides[ON].proxy, http).await?;
            let side = &mut sides[i];
            let load = h.load(n, opts.duration);
            let (result, cpu) = side.wrk(h, side.label, load, true).await?;
            side.runs.push((result, cpu.context("CPU sampled")?));
        }
    }
    Ok(())
}

/// Where the two sides are in `[Side; 2]`: off first, so every round starts with it.
const OFF: usize = 0;
const ON: usize = 1;

/// Every audit count, once audit-on has shipped all its events.
struct Counts {
    off: AuditCounts,
    on: AuditCounts,
    /// `gatehouse_control_plane_audit_events_received_total{result="stored"}`.
    stored: Option<f64>,
    /// `..{result="duplicate"}`: events a resent batch carried again.
    duplicate: Option<f64>,
}

async fn count(
    h: &mut Harness,
    cp: &ControlPlane,
    http: &reqwest::Client,
    sides: &[Side; 2],
) -> anyhow::Result<Counts> {
    let on = drain(h, &sides[ON].proxy, http).await?;
    let off = AuditCounts::read(&sides[OFF].proxy, http).await?;
    let text = cp.metrics().await?;
    let received = |result: &str| {
        prometheus::sum(
            &text,
            "gatehouse_control_plane_audit_events_received_total",
            &[("result", result)],
        )
    };
    Ok(Counts {
        off,
        on,
        stored: received("stored"),
        duplicate: received("duplicate"),
    })
}

/// One figure of a measured run.
type Figure = fn(&WrkResult, &RunCpu) -> Option<f64>;

/// "audit off <what>" and "audit on <what>" against it: the medians of `f` over
/// each side's runs (`None` if a side has no value).
fn pair(
    off: &Side,
    on: &Side,
    what: &str,
    unit: &str,
    f: Figure,
) -> Option<(Measurement, Measurement)> {
    let row = |side: &Side, name: &str| -> Option<Measurement> {
        Some(
            Measurement::new(format!("{name} {what}"), side.median(f)?, unit)
                .note(side.describe(f, unit))
                .noisy(side.noisy()),
        )
    };
    let base = row(off, "audit off")?;
    let with = row(on, "audit on")?.vs(&base);
    Some((base, with))
}

/// The report's rows: throughput, latency and CPU of on against off, then the counts.
/// A metric that does not exist gives a problem instead of a row.
fn compare(
    opts: &Options,
    sides: &[Side; 2],
    counts: &Counts,
    problems: &mut Vec<String>,
) -> Vec<Measurement> {
    let (off, on) = (&sides[OFF], &sides[ON]);
    let n = opts.connections;
    let mut m = Vec::new();
    if let Some((base, with)) = pair(off, on, &format!("rps@{n}"), "req/s", |r, _| Some(r.rps)) {
        // Each round measured off then on back to back: their ratios show how
        // steady the comparison is on this machine.
        let rounds: Vec<String> = off
            .runs
            .iter()
            .zip(&on.runs)
            .map(|((a, _), (b, _))| format!("{:.2}", b.rps / a.rps.max(1.0)))
            .collect();
        let note = format!(
            "{}; on/off per round: {}",
            with.note.clone().unwrap_or_default(),
            rounds.join(", ")
        );
        m.push(base);
        m.push(
            with.note(note)
                .target(Target::RatioAtLeast(THROUGHPUT_RATIO_TARGET)),
        );
    }
    let latencies: [(&str, Figure); 2] = [
        ("p50", |r, _| Some(r.p50_us)),
        ("p99", |r, _| Some(r.p99_us)),
    ];
    for (what, f) in latencies {
        if let Some((base, with)) = pair(off, on, &format!("{what}@{n}"), "us", f) {
            m.push(base);
            m.push(with);
        }
    }
    let cpu: Figure = |_, c| c.target_us_per_call;
    if let Some((base, with)) = pair(off, on, &format!("CPU/call @{n}"), "us", cpu) {
        let added = with.value - base.value;
        m.push(base.note(format!(
            "utime+stime of gatehouse-proxy / requests, {}",
            off.describe(cpu, "us")
        )));
        m.push(with);
        m.push(
            Measurement::new(format!("audit added CPU/call @{n}"), added, "us")
                .note("audit on CPU/call - audit off CPU/call (medians): recording, batching and sending, in the proxy")
                .noisy(off.noisy() || on.noisy()),
        );
    }
    // Every core is busy (wrk, upstream, proxy, control plane share them), so
    // throughput follows what a call costs all processes together.
    let machine: Figure = |r, c| (r.rps > 0.0).then(|| c.machine_cores_busy * 1e6 / r.rps);
    if let Some((base, with)) = pair(off, on, &format!("machine CPU/call @{n}"), "us", machine) {
        m.push(base.note(format!(
            "all processes (wrk, upstream, proxy, control plane, anything else) / requests, {}",
            off.describe(machine, "us")
        )));
        m.push(with);
    }
    let cp_cpu: Figure = |_, c| c.companions_us_per_call;
    if let Some(v) = on.median(cp_cpu) {
        m.push(
            Measurement::new(format!("control plane CPU/call, audit on @{n}"), v, "us")
                .note(format!(
                    "utime+stime of gatehouse serve during the audit-on runs / requests (it shares the machine), {}",
                    on.describe(cp_cpu, "us")
                ))
                .noisy(on.noisy()),
        );
    }
    delivery(on, counts, &mut m, problems);
    m
}

/// The rows that hold delivery to its promise: one event per call the audit-on proxy
/// saw, all shipped, all stored, none dropped; and none from audit-off.
fn delivery(on: &Side, counts: &Counts, m: &mut Vec<Measurement>, problems: &mut Vec<String>) {
    let mut missing = |proxy: &str, metric: &str| {
        problems.push(format!(
            "{proxy} /metrics has no {metric}: that count is not in the table"
        ));
    };
    let answered = Measurement::new(
        "tools/call answered by audit-on",
        on.answered as f64,
        "calls",
    )
    .note("responses wrk and the harness got: set-up check, warm-up and measured runs");
    m.push(answered.clone());
    let calls = counts.on.calls.map(|calls| {
        Measurement::new("tools/call counted by audit-on", calls, "calls")
            .note("gatehouse_tool_calls_total, all series: also counts calls wrk abandoned in flight when a run ended")
            .vs(&answered)
            .target(Target::NotBelowBaseline)
    });
    match &calls {
        Some(c) => m.push(c.clone()),
        None => missing("audit-on", "gatehouse_tool_calls_total"),
    }
    let shipped = counts.on.shipped.map(|v| {
        let row = Measurement::new("audit events shipped by audit-on", v, "events")
            .note("gatehouse_audit_events_shipped_total (acknowledged by the control plane)");
        match &calls {
            Some(c) => row.vs(c).target(Target::EqualToBaseline),
            None => row,
        }
    });
    match &shipped {
        Some(s) => m.push(s.clone()),
        None => missing("audit-on", "gatehouse_audit_events_shipped_total"),
    }
    match counts.on.dropped {
        Some(v) => m.push(
            Measurement::new("audit events dropped by audit-on", v, "events")
                .note(format!(
                    "gatehouse_audit_events_dropped_total; spooled on the way: {}",
                    counts.on.spooled.map_or(
                        "(no gatehouse_audit_events_spooled_total)".into(),
                        |s| format!("{s:.0}")
                    )
                ))
                .target(Target::Ceiling(0.0)),
        ),
        None => missing("audit-on", "gatehouse_audit_events_dropped_total"),
    }
    match counts.stored {
        Some(v) => {
            let row = Measurement::new("audit events stored by the control plane", v, "events")
                .note(format!(
                    "gatehouse_control_plane_audit_events_received_total{{result=\"stored\"}}; duplicates: {}",
                    counts.duplicate.map_or("(no series)".into(), |d| format!("{d:.0}"))
                ));
            m.push(match &shipped {
                Some(s) => row.vs(s).target(Target::EqualToBaseline),
                None => row,
            });
        }
        None => missing(
            "control plane",
            "gatehouse_control_plane_audit_events_received_total{result=\"stored\"}",
        ),
    }
    match counts.off.shipped {
        Some(v) => m.push(
            Measurement::new("audit events shipped by audit-off", v, "events")
                .note("--no-audit: records nothing")
                .target(Target::Ceiling(0.0)),
        ),
        None => missing("audit-off", "gatehouse_audit_events_shipped_total"),
    }
}
