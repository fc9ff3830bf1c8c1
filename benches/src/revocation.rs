//! The `revocation` scenario (config propagation): how long a token revoked through
//! the control plane's API stays usable at a proxy the control plane feeds. N times, a
//! fresh workspace token is created and probed until the proxy accepts it; then it is
//! revoked through the API while the proxy is probed with it, back to back, until it
//! answers 401. The time from the start of the revoke call to that 401 is what a
//! revoked client sees: API, store, publish, push and install, end to end. The API
//! call's own round trip is recorded beside it, so the push can be told apart from
//! the API. Target: p99 <= 100 ms.
//!
//! A probe is a sessionless `ping` POST: the proxy authenticates before anything else,
//! so it answers 401 to a token it does not accept and 400 (no `Mcp-Session-Id`) to
//! one it does. A probe never reaches the upstream and costs the proxy little more
//! than the token lookup, so probing back to back does not slow the proxy's install.
//!
//! Revocation must not be undone or spill over: a token once refused must stay
//! refused, and a control token created before the first revocation must still be
//! accepted after the last; either failing fails the scenario.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use serde::Serialize;

use crate::control_plane::{Admin, ControlPlane};
use crate::harness::NOISE_CORES;
use crate::procstat::CpuClock;
use crate::report::{Measurement, Report, Target};
use crate::targets::{
    require_proxy_and_control_plane, ControlPlaneFeed, GatehouseProxy, WORKSPACE,
};
use crate::upstream::{UpstreamFleet, UpstreamMode};

/// The issue's target for the revoke -> 401 p99.
const P99_TARGET_MS: f64 = 100.0;
/// How long the fed proxy may take to serve the control plane's first config.
const CONFIG_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a new token may take to be accepted by the proxy.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a revoked token may stay accepted: 100x the target. Past it the
/// revocation did not arrive at all, and the run stops rather than measuring on.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one probe may take (the proxy answers one in well under a millisecond).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Times above this are recorded as this (a minute: something is broken).
const MAX_RECORDED_US: u64 = 60_000_000;
/// The bench upstream's slug in the workspace.
const SERVER: &str = "s0";
/// The token that stays active through every revocation.
const CONTROL_TOKEN: &str = "control";
/// The probe: a request any authenticated caller gets a 400 for without a session.
const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Tokens created and revoked, one at a time; each revocation is one sample.
    #[arg(long, default_value_t = 100)]
    revocations: usize,
    /// Worker threads of the gatehouse-proxy.
    #[arg(long, default_value_t = 1)]
    proxy_threads: usize,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// The `gatehouse` binary that runs the control plane (default: next to this one).
    #[arg(long)]
    control_plane_bin: Option<PathBuf>,
}

impl Args {
    /// The options of a run whose binaries are in `build` and files go under `out`.
    pub fn options(self, build: &Path, out: &Path) -> Options {
        Options {
            revocations: self.revocations.max(1),
            proxy_threads: self.proxy_threads.max(1),
            out: out.join("revocation"),
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
    pub proxy_threads: usize,
    /// Where this scenario's files go (`<out>/revocation`).
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
    pub control_plane_bin: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    proxy_binary: String,
    control_plane_binary: String,
    revocations: usize,
    proxy_threads: usize,
    /// Average cores used by processes other than the proxy, the control plane and
    /// this one (which hosts the upstream), and stolen by the hypervisor, over the
    /// revocations.
    other_cores_busy: f64,
    steal_cores: f64,
    /// Every revocation, in order.
    samples: Vec<Sample>,
}

/// One token's creation and revocation.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    /// Start of the create call -> first probe the proxy accepted.
    accepted_ms: f64,
    /// The revoke call's round trip.
    revoke_api_ms: f64,
    /// Start of the revoke call -> first 401.
    refused_ms: f64,
    /// Probes sent from the start of the revoke call to the first 401.
    probes: u32,
}

/// How the proxy answered a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Accepted,
    Refused,
}

/// Sends probes to the proxy's workspace URL over one keep-alive client.
pub(crate) struct Prober {
    http: reqwest::Client,
    url: String,
}

impl Prober {
    pub(crate) fn new(proxy: &GatehouseProxy) -> anyhow::Result<Prober> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .tcp_nodelay(true)
            .timeout(PROBE_TIMEOUT)
            .build()?;
        Ok(Prober {
            http,
            url: proxy.url(),
        })
    }

    /// One sessionless `ping` with `token`: 400 is accepted, 401 refused, anything
    /// else an error.
    pub(crate) async fn probe(&self, token: &str) -> anyhow::Result<Answer> {
        let response = self
            .http
            .post(&self.url)
            .bearer_auth(token)
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(PING)
            .send()
            .await
            .with_context(|| format!("ping POST {}", self.url))?;
        let status = response.status();
        // Read to the end, so the connection goes back to the pool for the next probe.
        let body = response
            .bytes()
            .await
            .with_context(|| format!("ping POST {}: reading the answer", self.url))?;
        match status.as_u16() {
            400 => Ok(Answer::Accepted),
            401 => Ok(Answer::Refused),
            _ => bail!(
                "ping POST {} without a session: HTTP {status} (expected 400 for a token the proxy accepts, 401 for one it refuses): {}",
                self.url,
                String::from_utf8_lossy(&body)
            ),
        }
    }

    /// Probes back to back until the proxy answers `want`, `timeout` after `since` at
    /// most; returns the time from `since` to that answer and the probes sent.
    pub(crate) async fn until(
        &self,
        token: &str,
        want: Answer,
        since: Instant,
        timeout: Duration,
    ) -> anyhow::Result<(Duration, u32)> {
        let deadline = since + timeout;
        let mut probes = 0;
        loop {
            let answer = self.probe(token).await?;
            probes += 1;
            if answer == want {
                return Ok((since.elapsed(), probes));
            }
            if Instant::now() > deadline {
                bail!("the proxy still answered {answer:?} after {timeout:?} ({probes} probes)");
            }
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
    eprintln!(
        "revocation: {} tokens created and revoked one at a time, proxy threads {}, output {}",
        opts.revocations,
        opts.proxy_threads,
        opts.out.display()
    );
    let fleet = UpstreamFleet::start(1, 1, UpstreamMode::StatelessJson).await?;
    let cp = ControlPlane::start(&opts.control_plane_bin, &opts.out).await?;
    eprintln!("control plane -> {} (pid {})", cp.url(), cp.pid);
    let mut problems = Vec::new();
    let outcome = with_proxy(&opts, &fleet, &cp, &mut problems).await;
    problems.extend(
        cp.warnings()
            .into_iter()
            .map(|w| format!("control plane log: {w}")),
    );
    let log = cp.log.clone();
    cp.stop().await;
    drop(fleet);
    let run = outcome?;
    let measurements = figures(&run.samples, run.noisy())?;
    let notes = vec![
        format!(
            "revoke -> 401: from the start of POST /v1/workspaces/{WORKSPACE}/tokens/revoke to the first 401 the proxy answered with the revoked token; probes are sessionless pings sent back to back on one keep-alive connection from the start of the call, so a 401 is seen at most one probe round trip (mean {:.0} us) after it is in force",
            run.probe_round_trip_us()
        ),
        "every revoked token was refused again by the probe after its first 401, and the control token, active throughout, was still accepted after the last revocation".into(),
        "each revocation's figures are in report.json (environment.samples)".into(),
    ];
    if run.noisy() {
        problems.push(format!(
            "machine not quiet: other processes used {:.2} cores and the hypervisor stole {:.2} cores on average during the revocations; the figures are suspect",
            run.other_cores_busy, run.steal_cores
        ));
    }
    let report = Report {
        scenario: "revocation",
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        environment: Environment {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            proxy_binary: opts.proxy_bin.display().to_string(),
            control_plane_binary: opts.control_plane_bin.display().to_string(),
            revocations: opts.revocations,
            proxy_threads: opts.proxy_threads,
            other_cores_busy: run.other_cores_busy,
            steal_cores: run.steal_cores,
            samples: run.samples,
        },
        measurements,
        runs: Vec::new(),
        problems,
        notes,
    };
    report.publish_saying(
        &opts.out,
        &format!(
            "control plane log: {}; proxy log: {}",
            log.display(),
            run.proxy_log.display()
        ),
    )
}

/// What the revocations gave, and how quiet the machine was meanwhile.
struct Run {
    samples: Vec<Sample>,
    other_cores_busy: f64,
    steal_cores: f64,
    proxy_log: PathBuf,
}

impl Run {
    fn noisy(&self) -> bool {
        self.other_cores_busy > NOISE_CORES || self.steal_cores > NOISE_CORES
    }

    /// The mean probe round trip while waiting for the 401s, microseconds.
    fn probe_round_trip_us(&self) -> f64 {
        let ms: f64 = self.samples.iter().map(|s| s.refused_ms).sum();
        let probes: u32 = self.samples.iter().map(|s| s.probes).sum();
        ms * 1e3 / f64::from(probes.max(1))
    }
}

/// Sets up the workspace, starts the fed proxy, revokes and stops it; its log
/// warnings become problems.
async fn with_proxy(
    opts: &Options,
    fleet: &UpstreamFleet,
    cp: &ControlPlane,
    problems: &mut Vec<String>,
) -> anyhow::Result<Run> {
    let admin = cp.login_admin().await?;
    admin.create_workspace(WORKSPACE, "Bench").await?;
    admin
        .install_server(WORKSPACE, SERVER, &fleet.url(0))
        .await?;
    let control = admin.create_token(WORKSPACE, CONTROL_TOKEN).await?;
    let version = cp.config_version().await?;
    let url = cp.url();
    // As deployed: the proxy audits (probes are not tool calls: nothing is shipped).
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
        control.clone(),
        opts.proxy_threads,
    )
    .await?;
    eprintln!(
        "gatehouse-proxy -> {} (pid {}), fed by the control plane",
        proxy.url(),
        proxy.pid
    );
    let outcome = async {
        let http = reqwest::Client::builder().no_proxy().build()?;
        proxy
            .wait_for_config(&http, version, CONFIG_TIMEOUT)
            .await
            .context("gatehouse-proxy")?;
        let prober = Prober::new(&proxy)?;
        if prober.probe(&control).await? != Answer::Accepted {
            bail!("the proxy refuses the control token although it serves config version {version}, which has it");
        }
        revoke_all(opts, &admin, &prober, &control, &[proxy.pid, cp.pid]).await
    }
    .await;
    problems.extend(
        proxy
            .warnings()
            .into_iter()
            .map(|w| format!("gatehouse-proxy log: {w}")),
    );
    let proxy_log = proxy.log.clone();
    proxy.stop().await;
    outcome.map(|(samples, other_cores_busy, steal_cores)| Run {
        samples,
        other_cores_busy,
        steal_cores,
        proxy_log,
    })
}

/// Creates and revokes `opts.revocations` tokens one at a time, then checks the
/// control token is still accepted; returns the samples and the average cores other
/// processes and the hypervisor took meanwhile (`ours`: the proxy and control plane).
async fn revoke_all(
    opts: &Options,
    admin: &Admin<'_>,
    prober: &Prober,
    control: &str,
    ours: &[u32],
) -> anyhow::Result<(Vec<Sample>, f64, f64)> {
    let clock = CpuClock::detect();
    let me = [std::process::id()];
    let used = || -> anyhow::Result<Duration> { Ok(clock.used(ours)? + clock.used(&me)?) };
    let (used_before, machine_before, started) = (used()?, clock.machine()?, Instant::now());
    let mut samples = Vec::with_capacity(opts.revocations);
    for i in 0..opts.revocations {
        let sample = revoke_one(admin, prober, &format!("revoke-{i}")).await?;
        if (i + 1) % 25 == 0 || i + 1 == opts.revocations {
            eprintln!(
                "  {:>4} of {}: last revoke -> 401 {:.2} ms (API {:.2} ms, {} probes)",
                i + 1,
                opts.revocations,
                sample.refused_ms,
                sample.revoke_api_ms,
                sample.probes
            );
        }
        samples.push(sample);
    }
    let wall = started.elapsed().as_secs_f64();
    let machine = clock.machine()?;
    let busy = machine.busy.saturating_sub(machine_before.busy);
    let others = busy.saturating_sub(used()?.saturating_sub(used_before));
    let steal = machine.steal.saturating_sub(machine_before.steal);
    if prober.probe(control).await? != Answer::Accepted {
        bail!(
            "the proxy refuses the control token {CONTROL_TOKEN:?} after {} revocations of other tokens: revoking one token took others with it",
            samples.len()
        );
    }
    Ok((
        samples,
        others.as_secs_f64() / wall,
        steal.as_secs_f64() / wall,
    ))
}

/// Creates token `name`, waits until the proxy accepts it, then revokes it while
/// probing until the proxy refuses it, and checks the refusal holds.
async fn revoke_one(admin: &Admin<'_>, prober: &Prober, name: &str) -> anyhow::Result<Sample> {
    let created = Instant::now();
    let secret = admin.create_token(WORKSPACE, name).await?;
    let (accepted, _) = prober
        .until(&secret, Answer::Accepted, created, ACCEPT_TIMEOUT)
        .await
        .with_context(|| format!("waiting for the proxy to accept new token {name:?}"))?;
    let started = Instant::now();
    // Probing starts with the call, not after its answer: the push may reach the
    // proxy before the API has answered.
    let api = async {
        admin.revoke_token(WORKSPACE, name).await?;
        anyhow::Ok(started.elapsed())
    };
    let refused = async {
        prober
            .until(&secret, Answer::Refused, started, REVOKE_TIMEOUT)
            .await
            .with_context(|| format!("waiting for the proxy to refuse revoked token {name:?}"))
    };
    let (api, (refused, probes)) = tokio::try_join!(api, refused)?;
    if prober.probe(&secret).await? != Answer::Refused {
        bail!("the proxy refused revoked token {name:?} {refused:?} after the revoke call started, then accepted it again");
    }
    Ok(Sample {
        accepted_ms: ms(accepted),
        revoke_api_ms: ms(api),
        refused_ms: ms(refused),
        probes,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The report's rows: revoke -> 401 p50, p99 (held to the target) and max; the
/// revoke call's own p50; new token -> accepted p50.
fn figures(samples: &[Sample], noisy: bool) -> anyhow::Result<Vec<Measurement>> {
    let n = samples.len();
    let refused = histogram(samples.iter().map(|s| s.refused_ms))?;
    let api = histogram(samples.iter().map(|s| s.revoke_api_ms))?;
    let accepted = histogram(samples.iter().map(|s| s.accepted_ms))?;
    let at = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let before_answer = samples
        .iter()
        .filter(|s| s.refused_ms < s.revoke_api_ms)
        .count();
    // Negative when the 401 came first, so not for a histogram.
    let mut after_answer: Vec<f64> = samples
        .iter()
        .map(|s| s.refused_ms - s.revoke_api_ms)
        .collect();
    after_answer.sort_by(f64::total_cmp);
    let after_answer_p50 = after_answer
        .get(n.saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0.0);
    let row = |name: &str, value: f64| Measurement::new(name, value, "ms").noisy(noisy);
    Ok(vec![
        row("revoke -> 401 p50", at(&refused, 0.50)).note(format!(
            "{n} revocations; start of the revoke API call -> first 401 from the proxy"
        )),
        row("revoke -> 401 p99", at(&refused, 0.99))
            .note(format!("{n} revocations"))
            .target(Target::Ceiling(P99_TARGET_MS)),
        row("revoke -> 401 max", refused.max() as f64 / 1e3).note(format!("{n} revocations")),
        row("revoke API call p50", at(&api, 0.50)).note(format!(
            "the revoke POST's own round trip (store + publish); p99 {} ms; the first 401 came a median {} ms after the API answered; {before_answer} of {n} revocations were in force at the proxy before it answered",
            crate::report::fmt_num(at(&api, 0.99)),
            crate::report::fmt_num(after_answer_p50)
        )),
        row("new token -> accepted p50", at(&accepted, 0.50)).note(format!(
            "start of the create-token API call -> first probe the proxy accepted; p99 {} ms",
            crate::report::fmt_num(at(&accepted, 0.99))
        )),
    ])
}

/// An HDR histogram of `values_ms`, in microseconds.
fn histogram(values_ms: impl Iterator<Item = f64>) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::<u64>::new_with_bounds(1, MAX_RECORDED_US, 3)?;
    for v in values_ms {
        h.saturating_record((v * 1e3).round().max(1.0) as u64);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(refused_ms: f64, revoke_api_ms: f64) -> Sample {
        Sample {
            accepted_ms: 1.0,
            revoke_api_ms,
            refused_ms,
            probes: 10,
        }
    }

    #[test]
    fn p99_is_held_to_the_target() {
        let mut samples: Vec<Sample> = (1..=99).map(|i| sample(f64::from(i) * 0.5, 2.0)).collect();
        samples.push(sample(250.0, 2.0));
        let rows = figures(&samples, false).unwrap();
        let get = |name: &str| rows.iter().find(|m| m.name == name).unwrap();
        assert!((get("revoke -> 401 p50").value - 25.0).abs() < 0.1);
        let p99 = get("revoke -> 401 p99");
        assert!((p99.value - 49.5).abs() < 0.1, "{}", p99.value);
        assert_eq!(p99.pass, Some(true));
        assert!((get("revoke -> 401 max").value - 250.0).abs() < 0.5);
        assert!(get("revoke API call p50")
            .note
            .as_deref()
            .unwrap()
            .contains("3 of 100 revocations were in force"));
        assert!(get("revoke API call p50")
            .note
            .as_deref()
            .unwrap()
            .contains("a median 23.00 ms after the API answered"));
    }
}
