//! The `data-plane` scenario: the same echo `tools/call` straight to the upstream,
//! through nginx, and through gatehouse-proxy, then a warm merged `tools/list` over many
//! upstreams; every figure measured in this run, compared, and held to its target.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::Value;

use crate::client::{self, McpSession};
use crate::procstat::CpuClock;
use crate::report::{self, Measurement, Target};
use crate::targets::{GatehouseProxy, Nginx};
use crate::upstream::{UpstreamFleet, UpstreamMode};
use crate::wrk::{self, WrkLoad, WrkRequest, WrkResult};

/// Limits the report's targets are held to.
const CPU_PER_CALL_TARGET_US: f64 = 30.0;
const TOOLS_LIST_P99_TARGET_MS: f64 = 1.0;

#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub warmup: Duration,
    pub proxy_threads: Vec<usize>,
    pub wrk_threads: u32,
    pub connections: u32,
    pub upstream_mode: UpstreamMode,
    pub list_upstreams: usize,
    pub tools_per_upstream: usize,
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
    pub nginx: Option<PathBuf>,
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
    upstream_mode: UpstreamMode,
    duration_s: f64,
    warmup_s: f64,
    connections: u32,
    wrk_threads: u32,
    proxy_threads: Vec<usize>,
    clock_tick_ms: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    scenario: &'static str,
    unix_time: u64,
    environment: Environment,
    measurements: Vec<Measurement>,
    /// Every wrk run, warm-ups included.
    runs: Vec<RunRecord>,
    /// Errors seen under load and proxy log warnings; each is a bug to look at.
    problems: Vec<String>,
    notes: Vec<String>,
}

/// Where the CPU time of one measured run went.
#[derive(Debug, Clone, Serialize)]
struct RunCpu {
    /// The proxy's processes (none for direct), microseconds per request.
    target_us_per_call: Option<f64>,
    /// This harness process, which hosts the upstream, microseconds per request.
    upstream_us_per_call: f64,
    /// wrk, microseconds per request.
    wrk_us_per_call: f64,
    /// Average cores busy machine-wide during the run.
    machine_cores_busy: f64,
    /// Average cores busy with anything else (another build, ...): should be ~0.
    other_cores_busy: f64,
    /// Average cores taken by the hypervisor.
    steal_cores: f64,
}

impl RunCpu {
    /// Whether other processes or the hypervisor took enough CPU to skew the run.
    fn noisy(&self) -> bool {
        self.other_cores_busy > NOISE_CORES || self.steal_cores > NOISE_CORES
    }
}

#[derive(Debug, Clone, Serialize)]
struct RunRecord {
    #[serde(flatten)]
    result: WrkResult,
    cpu: Option<RunCpu>,
    /// Disturbed by other processes and done again; not used in the measurements.
    superseded: bool,
}

/// Above this many cores of CPU used by other processes, a run's figures are suspect.
const NOISE_CORES: f64 = 0.15;

/// A target measured at 1 and at N connections.
struct Lane {
    one: WrkResult,
    many: WrkResult,
    noisy_one: bool,
    noisy_many: bool,
    cpu_one: RunCpu,
    cpu_many: RunCpu,
}

struct Harness {
    opts: Options,
    clock: CpuClock,
    log: PathBuf,
    runs: Vec<RunRecord>,
    problems: Vec<String>,
    notes: Vec<String>,
}

impl Harness {
    fn load(&self, connections: u32, duration: Duration) -> WrkLoad {
        WrkLoad {
            connections,
            threads: self.opts.wrk_threads,
            duration,
        }
    }

    /// One wrk run, kept for the report; its errors become problems. With `pids`, the
    /// CPU time of those processes, of this one, of wrk and of the machine is sampled
    /// around it, and a run disturbed by other processes is done again once the
    /// machine is quiet (up to `noise_retries` times).
    async fn wrk(
        &mut self,
        label: &str,
        script: &Path,
        url: &str,
        load: WrkLoad,
        pids: Option<&[u32]>,
    ) -> anyhow::Result<(WrkResult, Option<RunCpu>)> {
        let mut attempt = 0;
        loop {
            let (result, cpu) = self.wrk_once(label, script, url, load, pids).await?;
            let noisy = cpu.as_ref().is_some_and(RunCpu::noisy);
            let retry = noisy && attempt < self.opts.noise_retries;
            self.runs.push(RunRecord {
                result: result.clone(),
                cpu: cpu.clone(),
                superseded: retry,
            });
            if retry {
                attempt += 1;
                eprintln!(
                    "  .. other processes were busy during that run: again once quiet ({attempt}/{})",
                    self.opts.noise_retries
                );
                wait_for_quiet(
                    &self.clock,
                    self.opts.wait_quiet.max(Duration::from_secs(60)),
                )
                .await?;
                continue;
            }
            if let (true, Some(c)) = (noisy, &cpu) {
                let problem = format!(
                    "{label} (c={}): machine not quiet: other processes used {:.2} cores and the hypervisor stole {:.2} cores on average; this run's figures are suspect",
                    load.connections, c.other_cores_busy, c.steal_cores
                );
                eprintln!("  !! {problem}");
                self.problems.push(problem);
            }
            return Ok((result, cpu));
        }
    }

    async fn wrk_once(
        &mut self,
        label: &str,
        script: &Path,
        url: &str,
        load: WrkLoad,
        pids: Option<&[u32]>,
    ) -> anyhow::Result<(WrkResult, Option<RunCpu>)> {
        let me = [std::process::id()];
        let sample = |pids: &[u32]| -> anyhow::Result<_> {
            Ok((
                self.clock.used(pids)?,
                self.clock.used(&me)?,
                self.clock.reaped_children()?,
                self.clock.machine()?,
                Instant::now(),
            ))
        };
        let before = pids.map(sample).transpose()?;
        let result = wrk::run(label, script, url, load, &self.log).await?;
        let cpu = match (pids, before) {
            (Some(pids), Some(before)) => {
                let after = sample(pids)?;
                let wall = (after.4 - before.4).as_secs_f64();
                let target = after.0 - before.0;
                let upstream = after.1 - before.1;
                let wrk = after.2 - before.2;
                let busy = after.3.busy.saturating_sub(before.3.busy);
                let steal = after.3.steal.saturating_sub(before.3.steal);
                let per_call = |d: Duration| d.as_secs_f64() * 1e6 / result.requests.max(1) as f64;
                let ours = target + upstream + wrk;
                Some(RunCpu {
                    target_us_per_call: (!pids.is_empty()).then(|| per_call(target)),
                    upstream_us_per_call: per_call(upstream),
                    wrk_us_per_call: per_call(wrk),
                    machine_cores_busy: busy.as_secs_f64() / wall,
                    other_cores_busy: (busy.as_secs_f64() - ours.as_secs_f64()).max(0.0) / wall,
                    steal_cores: steal.as_secs_f64() / wall,
                })
            }
            _ => None,
        };
        if let Some(problem) = result.problems() {
            eprintln!("  !! {problem}");
            self.problems.push(problem);
        }
        eprintln!(
            "  {label:<28} c={:<3} {:>9.0} req/s  p50 {:>8.1} us  p99 {:>8.1} us{}",
            load.connections,
            result.rps,
            result.p50_us,
            result.p99_us,
            cpu.as_ref()
                .and_then(|c| c.target_us_per_call)
                .map(|us| format!("  cpu {us:.1} us/call"))
                .unwrap_or_default()
        );
        Ok((result, cpu))
    }

    /// Warm-up at N connections, then measured runs at 1 and N, sampling the CPU time
    /// of `pids` around each.
    async fn lane(
        &mut self,
        label: &str,
        request: &WrkRequest,
        pids: &[u32],
    ) -> anyhow::Result<Lane> {
        let script = request.write_script(&self.opts.out.join(format!("{label}.lua")))?;
        let n = self.opts.connections;
        if !self.opts.warmup.is_zero() {
            let warm = self.load(n, self.opts.warmup);
            self.wrk(
                &format!("{label} warm-up"),
                &script,
                &request.url,
                warm,
                None,
            )
            .await?;
        }
        let (one, cpu_one) = self
            .wrk(
                label,
                &script,
                &request.url,
                self.load(1, self.opts.duration),
                Some(pids),
            )
            .await?;
        let (many, cpu_many) = self
            .wrk(
                label,
                &script,
                &request.url,
                self.load(n, self.opts.duration),
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
}

fn echo_request(session: &McpSession, tool: &str) -> WrkRequest {
    WrkRequest {
        url: session.url.clone(),
        body: client::tools_call_body(tool),
        headers: session.headers.clone(),
        expect: r#""result":"#.into(),
    }
}

/// Opens a session at `url` and checks one echo call answers correctly.
async fn checked_session(
    http: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
    tool: &str,
) -> anyhow::Result<McpSession> {
    let session = McpSession::open(http, url, bearer).await?;
    let (response, _) = session
        .request(http, &client::tools_call_body(tool))
        .await
        .with_context(|| format!("echo call through {url}"))?;
    client::check_echo(&response).with_context(|| format!("echo call through {url}"))?;
    Ok(session)
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    let log = out.join("wrk.log");
    let _ = std::fs::remove_file(&log);
    if !opts.proxy_bin.is_file() {
        bail!(
            "{} not found: build it first with cargo build --release -p gatehouse-proxy (or pass --proxy-bin)",
            opts.proxy_bin.display()
        );
    }
    let clock = CpuClock::detect();
    let env = Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        wrk: wrk::version().await,
        nginx: match &opts.nginx {
            Some(bin) => Nginx::version(bin).await,
            None => None,
        },
        proxy_binary: opts.proxy_bin.display().to_string(),
        upstream_mode: opts.upstream_mode,
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
    eprintln!(
        "data-plane: {} s per run ({} s warm-up), {} connections, upstream {:?}, output {}",
        env.duration_s,
        env.warmup_s,
        env.connections,
        opts.upstream_mode,
        out.display()
    );
    let mut h = Harness {
        opts: Options { out, ..opts },
        clock,
        log,
        runs: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    if !h.opts.wait_quiet.is_zero() {
        let note = wait_for_quiet(&h.clock, h.opts.wait_quiet).await?;
        eprintln!("{note}");
        h.notes.push(note);
    }
    let fleet = UpstreamFleet::start(
        h.opts.list_upstreams.max(1),
        h.opts.tools_per_upstream.max(1),
        h.opts.upstream_mode,
    )
    .await?;
    let http = reqwest::Client::new();
    let mut m: Vec<Measurement> = Vec::new();
    let n = h.opts.connections;

    // Direct: the upstream alone, the floor every proxy adds to.
    let direct_session = checked_session(&http, &fleet.url(0), None, "echo").await?;
    eprintln!(
        "direct -> {} (upstream session: {})",
        fleet.url(0),
        direct_session.session_id().unwrap_or("none, stateless")
    );
    let direct = h
        .lane("direct", &echo_request(&direct_session, "echo"), &[])
        .await?;
    let direct_rps = Measurement::new(format!("direct rps@{n}"), direct.many.rps, "req/s")
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
        .note("CPU of the harness process (hosts the rmcp upstream) / requests")
        .noisy(direct.noisy_many),
    );

    // nginx: the reference reverse proxy, one worker.
    let mut nginx_rps = None;
    let mut nginx_added = None;
    let mut nginx_cpu = None;
    match h.opts.nginx.clone() {
        None => {
            let note = "nginx not found: nginx rows skipped (apt-get install -y nginx)";
            eprintln!("{note}");
            h.notes.push(note.into());
        }
        Some(bin) => {
            let nginx = Nginx::start(&bin, &h.opts.out, fleet.addr(0)).await?;
            eprintln!("nginx -> {}", nginx.url());
            let result = async {
                let session = checked_session(&http, &nginx.url(), None, "echo").await?;
                h.lane("nginx", &echo_request(&session, "echo"), &nginx.pids())
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
            let added = Measurement::new(
                "nginx added p50@1",
                lane.one.p50_us - direct.one.p50_us,
                "us",
            )
            .note("nginx p50@1 - direct p50@1")
            .noisy(lane.noisy_one || direct.noisy_one);
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

    // Gatehouse, at each thread count.
    for &threads in &h.opts.proxy_threads.clone() {
        let label = format!("gatehouse-t{threads}");
        let proxy = GatehouseProxy::start(
            &h.opts.proxy_bin,
            &h.opts.out,
            &label,
            &[fleet.url(0)],
            threads,
        )
        .await?;
        eprintln!("{label} -> {}", proxy.url());
        let result = async {
            let session =
                checked_session(&http, &proxy.url(), Some(&proxy.token), "s0__echo").await?;
            h.lane(&label, &echo_request(&session, "s0__echo"), &[proxy.pid])
                .await
        }
        .await;
        for w in proxy.warnings() {
            h.problems.push(format!("{label} log: {w}"));
        }
        proxy.stop().await;
        let lane = result?;
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
        m.push(
            Measurement::new(format!("{name} p50@1"), lane.one.p50_us, "us")
                .noisy(lane.noisy_one)
                .vs(&direct_p50),
        );
        m.push(
            Measurement::new(format!("{name} p99@1"), lane.one.p99_us, "us").noisy(lane.noisy_one),
        );
        let added = Measurement::new(
            format!("{name} added p50@1"),
            lane.one.p50_us - direct.one.p50_us,
            "us",
        )
        .note(format!("{name} p50@1 - direct p50@1"))
        .noisy(lane.noisy_one || direct.noisy_one);
        m.push(match &nginx_added {
            Some(base) => added.vs(base).target(Target::NotAboveBaseline),
            None => added,
        });
        if let Some(cpu) = lane.cpu_many.target_us_per_call {
            let cpu = Measurement::new(format!("{name} CPU/call @{n}"), cpu, "us")
                .note("utime+stime of gatehouse-proxy / requests")
                .noisy(lane.noisy_many);
            let cpu = match &nginx_cpu {
                Some(base) => cpu.vs(base),
                None => cpu,
            };
            m.push(cpu.target(Target::Ceiling(CPU_PER_CALL_TARGET_US)));
        }
        if let Some(cpu) = lane.cpu_one.target_us_per_call {
            m.push(
                Measurement::new(format!("{name} CPU/call @1"), cpu, "us").noisy(lane.noisy_one),
            );
        }
    }

    // Merged tools/list over many upstreams.
    if h.opts.list_upstreams > 0 {
        let upstreams = fleet.len();
        let each = h.opts.tools_per_upstream;
        let threads = h.opts.proxy_threads.first().copied().unwrap_or(1);
        let label = format!("tools-list-t{threads}");
        let urls: Vec<String> = (0..upstreams).map(|i| fleet.url(i)).collect();
        let proxy =
            GatehouseProxy::start(&h.opts.proxy_bin, &h.opts.out, &label, &urls, threads).await?;
        eprintln!(
            "{label} -> {} ({upstreams} upstreams x {each} tools)",
            proxy.url()
        );
        let result = async {
            let session = McpSession::open(&http, &proxy.url(), Some(&proxy.token)).await?;
            let (cold, cold_time) = session.request(&http, &client::tools_list_body()).await?;
            let expected = upstreams * each;
            check_tool_count(&cold, expected).context("cold tools/list")?;
            let request = WrkRequest {
                url: session.url.clone(),
                body: client::tools_list_body(),
                headers: session.headers.clone(),
                expect: r#""tools":["#.into(),
            };
            let script = request.write_script(&h.opts.out.join(format!("{label}.lua")))?;
            if !h.opts.warmup.is_zero() {
                let warm = h.load(1, h.opts.warmup);
                h.wrk(
                    &format!("{label} warm-up"),
                    &script,
                    &request.url,
                    warm,
                    None,
                )
                .await?;
            }
            let load = h.load(1, h.opts.duration);
            let (warm, cpu) = h
                .wrk(&label, &script, &request.url, load, Some(&[proxy.pid]))
                .await?;
            let noisy = cpu.as_ref().is_some_and(RunCpu::noisy);
            let (after, _) = session.request(&http, &client::tools_list_body()).await?;
            check_tool_count(&after, expected).context("tools/list after the load run")?;
            anyhow::Ok((cold_time, warm, noisy, after.to_string().len()))
        }
        .await;
        for w in proxy.warnings() {
            h.problems.push(format!("{label} log: {w}"));
        }
        proxy.stop().await;
        let (cold_time, warm, noisy, bytes) = result?;
        let what = format!("{upstreams}x{each}");
        m.push(
            Measurement::new(
                format!("tools/list {what} cold (first call)"),
                cold_time.as_secs_f64() * 1e3,
                "ms",
            )
            .note("one sample: first tools/list after initialize on a fresh proxy"),
        );
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
    let (other, steal) = h
        .runs
        .iter()
        .filter_map(|r| r.cpu.as_ref())
        .fold((0.0f64, 0.0f64), |(o, s), c| {
            (o.max(c.other_cores_busy), s.max(c.steal_cores))
        });
    h.notes.push(format!(
        "machine noise: at most {other:.2} cores used by other processes and {steal:.2} cores stolen during any measured run"
    ));

    let table = report::table(&m);
    println!();
    println!("{table}");
    if h.problems.is_empty() {
        println!("No errors under load: every response was 200 with the expected result.");
    } else {
        println!("PROBLEMS ({}):", h.problems.len());
        for p in &h.problems {
            println!("- {p}");
        }
    }
    for n in &h.notes {
        println!("note: {n}");
    }
    let failed = m.iter().filter(|x| x.pass == Some(false)).count();
    let checked = m.iter().filter(|x| x.pass.is_some()).count();
    let noisy = m.iter().filter(|x| x.noisy).count();
    println!(
        "targets: {} of {checked} met; {noisy} measurement(s) taken while other processes were busy",
        checked - failed
    );

    let report = Report {
        scenario: "data-plane",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment: env,
        measurements: m,
        runs: std::mem::take(&mut h.runs),
        problems: std::mem::take(&mut h.problems),
        notes: std::mem::take(&mut h.notes),
    };
    let path = h.opts.out.join("report.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(h.opts.out.join("report.md"), &table)?;
    println!("wrote {} (wrk output: {})", path.display(), h.log.display());
    Ok(())
}

/// Waits until the machine has been nearly idle for three seconds in a row, or `limit`
/// passed; says which.
async fn wait_for_quiet(clock: &CpuClock, limit: Duration) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut quiet_for = 0;
    let mut last = clock.machine()?.busy;
    eprintln!("waiting up to {limit:?} for a quiet machine");
    while started.elapsed() < limit {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = clock.machine()?.busy;
        let cores = now.saturating_sub(last).as_secs_f64();
        last = now;
        quiet_for = if cores < NOISE_CORES {
            quiet_for + 1
        } else {
            0
        };
        if quiet_for >= 3 {
            return Ok(format!(
                "machine was quiet after {:.0} s of waiting",
                started.elapsed().as_secs_f64()
            ));
        }
    }
    Ok(format!(
        "machine still busy after waiting {limit:?}; started anyway"
    ))
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
