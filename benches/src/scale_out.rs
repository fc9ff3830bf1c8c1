//! The `scale-out` scenario: Gatehouse as a team outgrowing one machine runs it — two
//! control planes on one PostgreSQL database and three proxies, each given both
//! control planes (two follow replica A first, one replica B) — against the embedded
//! SQLite store of one control plane, where a comparison means anything. Three
//! figures:
//!
//! - **revocation across replicas**: a fresh token is created on replica A and probed
//!   until every proxy accepts it, then revoked on A while every proxy is probed back
//!   to back (probes as in the `revocation` scenario); the sample is the time from
//!   the start of the revoke call until the *last* proxy refuses it. The proxy
//!   following B hears of it through PostgreSQL (`NOTIFY`). Target: p99 <= 100 ms.
//! - **audit ingest**: batches of call events posted as proxies post them
//!   (`POST /v1/proxy/audit`, the proxy token), from several senders at once; events
//!   stored per second, PostgreSQL (senders spread over both replicas) vs SQLite.
//!   Every event must be acknowledged as stored, none as a duplicate.
//! - **admin API reads**: `GET /v1/workspaces` and the audit page the dashboard shows
//!   (`GET /v1/workspaces/bench/audit?limit=50`, after the ingest), requests per
//!   second over N keep-alive connections to one control plane, each store.
//!
//! PostgreSQL is a throwaway cluster started by this process from Debian's
//! `postgresql` package (`gatehouse_tests::postgres::durable_cluster`: PostgreSQL's
//! default durability, every commit flushed), on this machine's disk; SQLite is the
//! default store (`gatehouse.db`, WAL). The control planes, proxies, PostgreSQL and
//! this process share the machine's cores: on a small machine the figures say what
//! the parts cost together, not what each could do alone.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use gatehouse_config::audit::{CallAction, CallEvent, CallOutcome};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::control_plane::{Admin, ControlPlane, Replica};
use crate::harness::NOISE_CORES;
use crate::procstat::CpuClock;
use crate::report::{fmt_num, Measurement, Report, Target};
use crate::revocation::{Answer, Prober};
use crate::targets::{
    new_token, require_proxy_and_control_plane, ControlPlaneFeed, GatehouseProxy, WORKSPACE,
};
use crate::upstream::{UpstreamFleet, UpstreamMode};

/// The target for the revoke -> 401 p99.
const P99_TARGET_MS: f64 = 100.0;
const CONFIG_TIMEOUT: Duration = Duration::from_secs(30);
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
const REVOKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Times above this are recorded as this.
const MAX_RECORDED_US: u64 = 60_000_000;
const PROXIES: usize = 3;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tokens created and revoked on replica A, one at a time.
    #[arg(long, default_value_t = 100)]
    revocations: usize,
    /// Audit events posted to each store.
    #[arg(long, default_value_t = 50_000)]
    audit_events: usize,
    /// Events per posted batch (proxies send up to 1,000).
    #[arg(long, default_value_t = 500)]
    audit_batch: usize,
    /// Batches in flight at once (as many proxies shipping).
    #[arg(long, default_value_t = 4)]
    audit_senders: usize,
    /// Keep-alive connections of the admin read load.
    #[arg(long, default_value_t = 8)]
    read_connections: usize,
    /// Seconds of each admin read load.
    #[arg(long, default_value_t = 10)]
    read_seconds: u64,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// The `gatehouse` binary (default: next to this one).
    #[arg(long)]
    control_plane_bin: Option<PathBuf>,
}

impl Args {
    pub fn options(self, build: &Path, out: &Path) -> Options {
        Options {
            revocations: self.revocations.max(1),
            audit_events: self.audit_events.max(1),
            audit_batch: self.audit_batch.clamp(1, 5_000),
            audit_senders: self.audit_senders.max(1),
            read_connections: self.read_connections.max(1),
            read_duration: Duration::from_secs(self.read_seconds.max(1)),
            out: out.join("scale-out"),
            proxy_bin: self
                .proxy_bin
                .unwrap_or_else(|| build.join("gatehouse-proxy")),
            control_plane_bin: self
                .control_plane_bin
                .unwrap_or_else(|| build.join("gatehouse")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub revocations: usize,
    pub audit_events: usize,
    pub audit_batch: usize,
    pub audit_senders: usize,
    pub read_connections: usize,
    pub read_duration: Duration,
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
    pub control_plane_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    revocations: usize,
    audit_events: usize,
    audit_batch: usize,
    audit_senders: usize,
    read_connections: usize,
    read_seconds: f64,
    /// Average cores busy on the whole machine (PostgreSQL and every process of
    /// the scenario included), and stolen by the hypervisor, over the run.
    machine_busy_cores: f64,
    steal_cores: f64,
    /// Start of the revoke call -> the last of the proxies refused, per revocation.
    revocations_ms: Vec<f64>,
}

/// One revocation: the API call, and each proxy's refusal, from the call's start.
struct Revoked {
    api_ms: f64,
    proxies_ms: [f64; PROXIES],
}

impl Revoked {
    fn all_ms(&self) -> f64 {
        self.proxies_ms.iter().copied().fold(0.0, f64::max)
    }
}

/// What one store gave.
struct StoreFigures {
    ingest_events_per_s: f64,
    ingest_wall: Duration,
    reads: Vec<(&'static str, Load)>,
}

/// An HTTP read load's outcome.
struct Load {
    requests: u64,
    wall: Duration,
    latency: Histogram<u64>,
}

impl Load {
    fn per_s(&self) -> f64 {
        self.requests as f64 / self.wall.as_secs_f64()
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    require_proxy_and_control_plane(&opts.proxy_bin, &opts.control_plane_bin)?;
    std::fs::create_dir_all(&opts.out)?;
    let opts = Options {
        out: opts.out.canonicalize()?,
        ..opts
    };
    eprintln!(
        "scale-out: 2 control planes on PostgreSQL, {PROXIES} proxies; {} revocations, {} audit events a store, reads {}s x {} connections; output {}",
        opts.revocations,
        opts.audit_events,
        opts.read_duration.as_secs(),
        opts.read_connections,
        opts.out.display()
    );
    let clock = CpuClock::detect();
    let machine_before = clock.machine()?;
    let started = Instant::now();
    let mut problems = Vec::new();

    let cluster = gatehouse_tests::postgres::durable_cluster()?;
    let database = cluster.create_database()?;
    let mut key = [0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut key);
    let master_key = base64::engine::general_purpose::STANDARD.encode(key);
    let proxy_token = new_token();
    let replica = |label| Replica {
        label,
        database: &database,
        master_key: &master_key,
        proxy_token: &proxy_token,
    };
    // A first, alone: it creates the admin; B then opens the same store.
    let a =
        ControlPlane::start_replica(&opts.control_plane_bin, &opts.out, &replica("cp-a")).await?;
    let b =
        ControlPlane::start_replica(&opts.control_plane_bin, &opts.out, &replica("cp-b")).await?;
    eprintln!(
        "control planes -> {} and {} on {database}",
        a.url(),
        b.url()
    );
    let fleet = UpstreamFleet::start(1, 1, UpstreamMode::StatelessJson).await?;
    let outcome = postgres_part(&opts, &a, &b, &fleet, &mut problems).await;
    for (name, cp) in [("cp-a", &a), ("cp-b", &b)] {
        problems.extend(
            cp.warnings()
                .into_iter()
                .map(|w| format!("{name} log: {w}")),
        );
    }
    a.stop().await;
    b.stop().await;
    let (revoked, postgres) = outcome?;

    let sqlite_cp = ControlPlane::start(&opts.control_plane_bin, &opts.out).await?;
    let sqlite = async {
        let admin = sqlite_cp.login_admin().await?;
        admin.create_workspace(WORKSPACE, "Bench").await?;
        store_figures(&opts, &admin, &[&sqlite_cp]).await
    }
    .await;
    problems.extend(
        sqlite_cp
            .warnings()
            .into_iter()
            .map(|w| format!("SQLite control plane log: {w}")),
    );
    sqlite_cp.stop().await;
    let sqlite = sqlite?;
    drop(fleet);

    let wall = started.elapsed().as_secs_f64();
    let machine = clock.machine()?;
    let machine_busy_cores = machine
        .busy
        .saturating_sub(machine_before.busy)
        .as_secs_f64()
        / wall;
    let steal_cores = machine
        .steal
        .saturating_sub(machine_before.steal)
        .as_secs_f64()
        / wall;
    // Every process here is the scenario's (PostgreSQL too): only stolen time says
    // the machine was shared.
    let noisy = steal_cores > NOISE_CORES;
    if noisy {
        problems.push(format!(
            "machine not quiet: the hypervisor stole {steal_cores:.2} cores on average; the figures are suspect"
        ));
    }
    let measurements = figures(&revoked, &postgres, &sqlite, &opts, noisy)?;
    let report = Report {
        scenario: "scale-out",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment: Environment {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            revocations: opts.revocations,
            audit_events: opts.audit_events,
            audit_batch: opts.audit_batch,
            audit_senders: opts.audit_senders,
            read_connections: opts.read_connections,
            read_seconds: opts.read_duration.as_secs_f64(),
            machine_busy_cores,
            steal_cores,
            revocations_ms: revoked.iter().map(Revoked::all_ms).collect(),
        },
        measurements,
        runs: Vec::new(),
        problems,
        notes: vec![
            "PostgreSQL: a throwaway cluster on this machine with its default durability (fsync, synchronous_commit on); SQLite: the default gatehouse.db (WAL)".into(),
            "every part (control planes, proxies, PostgreSQL, the senders and probes) shares this machine's cores".into(),
        ],
    };
    report.publish_saying(&opts.out, &format!("logs in {}", opts.out.display()))
}

/// The PostgreSQL half: proxies fed by both replicas, the revocations, then the
/// store's ingest and reads.
async fn postgres_part(
    opts: &Options,
    a: &ControlPlane,
    b: &ControlPlane,
    fleet: &UpstreamFleet,
    problems: &mut Vec<String>,
) -> anyhow::Result<(Vec<Revoked>, StoreFigures)> {
    let admin = a.login_admin().await?;
    admin.create_workspace(WORKSPACE, "Bench").await?;
    admin.install_server(WORKSPACE, "s0", &fleet.url(0)).await?;
    let control = admin.create_token(WORKSPACE, "control").await?;
    let version = a.config_version().await?;
    let (ab, ba) = (
        format!("{},{}", a.url(), b.url()),
        format!("{},{}", b.url(), a.url()),
    );
    let mut proxies = Vec::new();
    for (i, urls) in [&ab, &ba, &ab].into_iter().enumerate() {
        let feed = ControlPlaneFeed {
            url: urls,
            proxy_token: &a.proxy_token,
            audit: true,
        };
        let label = format!("proxy-{i}");
        let proxy = GatehouseProxy::start_fed(
            &opts.proxy_bin,
            &opts.out,
            &label,
            &feed,
            control.clone(),
            1,
        )
        .await?;
        proxies.push(proxy);
    }
    let outcome = async {
        let http = reqwest::Client::builder().no_proxy().build()?;
        let mut probers = Vec::new();
        for proxy in &proxies {
            proxy
                .wait_for_config(&http, version, CONFIG_TIMEOUT)
                .await?;
            probers.push(Prober::new(proxy)?);
        }
        let mut revoked = Vec::with_capacity(opts.revocations);
        for i in 0..opts.revocations {
            let sample = revoke_one(&admin, &probers, &format!("revoke-{i}")).await?;
            if (i + 1) % 25 == 0 || i + 1 == opts.revocations {
                eprintln!(
                    "  {:>4} of {}: revoke on A -> 401 on every proxy {:.2} ms (API {:.2} ms)",
                    i + 1,
                    opts.revocations,
                    sample.all_ms(),
                    sample.api_ms
                );
            }
            revoked.push(sample);
        }
        for (i, prober) in probers.iter().enumerate() {
            if prober.probe(&control).await? != Answer::Accepted {
                bail!("proxy-{i} refuses the control token after the revocations of others");
            }
        }
        let store = store_figures(opts, &admin, &[a, b]).await?;
        anyhow::Ok((revoked, store))
    }
    .await;
    for (i, proxy) in proxies.into_iter().enumerate() {
        problems.extend(
            proxy
                .warnings()
                .into_iter()
                .map(|w| format!("proxy-{i} log: {w}")),
        );
        proxy.stop().await;
    }
    outcome
}

/// Creates `name` on A, waits until every proxy accepts it, revokes it on A and
/// times each proxy's first 401 from the start of the call.
async fn revoke_one(admin: &Admin<'_>, probers: &[Prober], name: &str) -> anyhow::Result<Revoked> {
    let created = Instant::now();
    let secret = admin.create_token(WORKSPACE, name).await?;
    for (i, prober) in probers.iter().enumerate() {
        prober
            .until(&secret, Answer::Accepted, created, ACCEPT_TIMEOUT)
            .await
            .with_context(|| format!("proxy-{i} accepting new token {name:?}"))?;
    }
    let started = Instant::now();
    let api = async {
        admin.revoke_token(WORKSPACE, name).await?;
        anyhow::Ok(started.elapsed())
    };
    let refusals = futures::future::try_join_all(probers.iter().enumerate().map(|(i, p)| {
        let secret = &secret;
        async move {
            p.until(secret, Answer::Refused, started, REVOKE_TIMEOUT)
                .await
                .map(|(took, _)| took)
                .with_context(|| format!("proxy-{i} refusing revoked token {name:?}"))
        }
    }));
    let (api, refused) = tokio::try_join!(api, refusals)?;
    let mut proxies_ms = [0.0; PROXIES];
    for (slot, took) in proxies_ms.iter_mut().zip(refused) {
        *slot = ms(took);
    }
    Ok(Revoked {
        api_ms: ms(api),
        proxies_ms,
    })
}

/// The audit ingest into the store behind `planes` (batches spread over them), then
/// the read loads on the first.
async fn store_figures(
    opts: &Options,
    admin: &Admin<'_>,
    planes: &[&ControlPlane],
) -> anyhow::Result<StoreFigures> {
    let (ingest_events_per_s, ingest_wall) = ingest(opts, planes).await?;
    let base = planes[0].url();
    let mut reads = Vec::new();
    for (name, path) in [
        ("GET /v1/workspaces", "/v1/workspaces".to_string()),
        (
            "GET the audit page",
            format!("/v1/workspaces/{WORKSPACE}/audit?limit=50"),
        ),
    ] {
        let load = read_load(opts, &format!("{base}{path}"), admin.jwt()).await?;
        eprintln!("  {name}: {:.0} requests/s", load.per_s());
        reads.push((name, load));
    }
    Ok(StoreFigures {
        ingest_events_per_s,
        ingest_wall,
        reads,
    })
}

/// Posts `opts.audit_events` fresh events in batches from `opts.audit_senders`
/// senders, batch `k` to plane `k % planes.len()`; returns events stored per second.
async fn ingest(opts: &Options, planes: &[&ControlPlane]) -> anyhow::Result<(f64, Duration)> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let batches = opts.audit_events.div_ceil(opts.audit_batch);
    let next = Arc::new(AtomicU64::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let started = Instant::now();
    let senders = (0..opts.audit_senders).map(|_| {
        let (http, next, stored) = (http.clone(), next.clone(), stored.clone());
        async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                if k >= batches {
                    return anyhow::Ok(());
                }
                let first = k * opts.audit_batch;
                let last = (first + opts.audit_batch).min(opts.audit_events);
                let events: Vec<CallEvent> = (first..last).map(|i| event(i, now_ms)).collect();
                let plane = planes[k % planes.len()];
                let body = serde_json::json!({"proxy_id": "px_bench", "events": events});
                let response = http
                    .post(format!("{}/v1/proxy/audit", plane.url()))
                    .bearer_auth(&plane.proxy_token)
                    .json(&body)
                    .timeout(Duration::from_secs(60))
                    .send()
                    .await
                    .context("POST /v1/proxy/audit")?;
                let status = response.status();
                let ack: serde_json::Value = response.json().await?;
                if !status.is_success() || ack["duplicates"] != 0 {
                    bail!("POST /v1/proxy/audit: HTTP {status}: {ack}");
                }
                stored.fetch_add(ack["stored"].as_u64().unwrap_or(0), Ordering::Relaxed);
            }
        }
    });
    futures::future::try_join_all(senders).await?;
    let wall = started.elapsed();
    let stored = stored.load(Ordering::Relaxed);
    if stored != opts.audit_events as u64 {
        bail!(
            "{stored} of {} audit events acknowledged as stored",
            opts.audit_events
        );
    }
    let rate = stored as f64 / wall.as_secs_f64();
    eprintln!("  audit ingest: {stored} events in {wall:.2?}: {rate:.0} events/s");
    Ok((rate, wall))
}

fn event(i: usize, now_ms: i64) -> CallEvent {
    CallEvent {
        id: format!("ce_{:032x}", rand::random::<u128>()),
        time_ms: now_ms - (i as i64 % 3_600_000),
        workspace: WORKSPACE.into(),
        token_id: format!("tok_{}", i % 8),
        token_name: format!("client {}", i % 8),
        action: CallAction::ToolCall,
        server: "s0".into(),
        target: "s0__echo".into(),
        outcome: CallOutcome::Ok,
        latency_us: 500 + (i as u64 % 5_000),
        request_id: i.to_string(),
        transport: "streamable_http".into(),
    }
}

/// GETs `url` with `jwt` over `opts.read_connections` clients back to back for
/// `opts.read_duration`; every answer must be 200.
async fn read_load(opts: &Options, url: &str, jwt: &str) -> anyhow::Result<Load> {
    let deadline = Instant::now() + opts.read_duration;
    let started = Instant::now();
    let workers = (0..opts.read_connections).map(|_| async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1)
            .build()?;
        let mut latency = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?;
        let mut requests = 0u64;
        while Instant::now() < deadline {
            let sent = Instant::now();
            let response = http.get(url).bearer_auth(jwt).send().await?;
            let status = response.status();
            let body = response.bytes().await?;
            if status != 200 {
                bail!(
                    "GET {url}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            latency.saturating_record(sent.elapsed().as_micros() as u64);
            requests += 1;
        }
        anyhow::Ok((requests, latency))
    });
    let mut total = Load {
        requests: 0,
        wall: Duration::ZERO,
        latency: Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?,
    };
    for (requests, latency) in futures::future::try_join_all(workers).await? {
        total.requests += requests;
        total.latency.add(&latency)?;
    }
    total.wall = started.elapsed();
    Ok(total)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn figures(
    revoked: &[Revoked],
    postgres: &StoreFigures,
    sqlite: &StoreFigures,
    opts: &Options,
    noisy: bool,
) -> anyhow::Result<Vec<Measurement>> {
    let n = revoked.len();
    let mut all = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?;
    let mut api = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?;
    let mut per_proxy: Vec<Histogram<u64>> = (0..PROXIES)
        .map(|_| Histogram::new_with_bounds(1, MAX_RECORDED_US, 3))
        .collect::<Result<_, _>>()?;
    for r in revoked {
        all.saturating_record((r.all_ms() * 1e3) as u64);
        api.saturating_record((r.api_ms * 1e3) as u64);
        for (h, v) in per_proxy.iter_mut().zip(r.proxies_ms) {
            h.saturating_record((v * 1e3) as u64);
        }
    }
    let at = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let row = |name: &str, value: f64, unit: &str| Measurement::new(name, value, unit).noisy(noisy);
    let mut rows = vec![
        row("revoke on A -> 401 on every proxy p50", at(&all, 0.5), "ms").note(format!(
            "{n} revocations; start of the revoke call on replica A -> the last of {PROXIES} proxies answers 401 (two follow A, one follows B)"
        )),
        row("revoke on A -> 401 on every proxy p99", at(&all, 0.99), "ms")
            .note(format!("{n} revocations"))
            .target(Target::Ceiling(P99_TARGET_MS)),
        row("revoke on A -> 401 on every proxy max", all.max() as f64 / 1e3, "ms"),
        row("revoke -> 401, the proxy following B, p50", at(&per_proxy[1], 0.5), "ms").note(format!(
            "heard through PostgreSQL NOTIFY; the proxies following A: p50 {} and {} ms; the revoke call itself p50 {} ms",
            fmt_num(at(&per_proxy[0], 0.5)),
            fmt_num(at(&per_proxy[2], 0.5)),
            fmt_num(at(&api, 0.5))
        )),
    ];
    for (store, figures, how) in [
        ("PostgreSQL", postgres, "over both replicas"),
        ("SQLite", sqlite, "one control plane"),
    ] {
        rows.push(
            row(
                &format!("audit ingest, {store}"),
                figures.ingest_events_per_s,
                "events/s",
            )
            .note(format!(
                "{} events in batches of {} from {} senders at once, {how}; {:.1} s",
                opts.audit_events,
                opts.audit_batch,
                opts.audit_senders,
                figures.ingest_wall.as_secs_f64()
            )),
        );
        for (name, load) in &figures.reads {
            rows.push(
                row(&format!("{name}, {store}"), load.per_s(), "req/s").note(format!(
                    "{} connections, {:.0} s, one control plane; p50 {} ms, p99 {} ms",
                    opts.read_connections,
                    load.wall.as_secs_f64(),
                    fmt_num(at(&load.latency, 0.5)),
                    fmt_num(at(&load.latency, 0.99))
                )),
            );
        }
    }
    Ok(rows)
}
