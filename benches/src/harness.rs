//! What every load scenario shares: measured wrk runs with the CPU time of the
//! processes under load sampled around each, the machine-noise check that redoes a
//! disturbed run, and the record of runs, problems and notes the report is made of.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::procstat::CpuClock;
use crate::report::{Measurement, Report};
use crate::wrk::{self, WrkLoad, WrkResult};

/// Above this many cores of CPU used by other processes, a run's figures are suspect.
pub const NOISE_CORES: f64 = 0.15;

/// Where the CPU time of one measured run went.
#[derive(Debug, Clone, Serialize)]
pub struct RunCpu {
    /// The processes under load (none for direct), microseconds per request.
    pub target_us_per_call: Option<f64>,
    /// The scenario's other processes (e.g. the control plane proxies ship audit
    /// events to), microseconds per request; absent when the scenario has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub companions_us_per_call: Option<f64>,
    /// This harness process, which hosts the upstream, microseconds per request.
    pub upstream_us_per_call: f64,
    /// wrk, microseconds per request.
    pub wrk_us_per_call: f64,
    /// Average cores busy machine-wide during the run.
    pub machine_cores_busy: f64,
    /// Average cores busy with anything else (another build, ...): should be ~0.
    pub other_cores_busy: f64,
    /// Average cores taken by the hypervisor.
    pub steal_cores: f64,
}

impl RunCpu {
    /// Whether other processes or the hypervisor took enough CPU to skew the run.
    pub fn noisy(&self) -> bool {
        self.other_cores_busy > NOISE_CORES || self.steal_cores > NOISE_CORES
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub result: WrkResult,
    pub cpu: Option<RunCpu>,
    /// Disturbed by other processes and done again; not used in the measurements.
    pub superseded: bool,
}

/// How a scenario's wrk runs are done, and everything they left for the report.
pub struct Harness {
    clock: CpuClock,
    /// wrk's own reports, appended run after run.
    pub log: PathBuf,
    wrk_threads: u32,
    /// How many times a run disturbed by other processes is done again.
    noise_retries: u32,
    /// How long to wait for a quiet machine (at least a minute between retries).
    wait_quiet: Duration,
    /// Processes of the scenario besides the one under load (a control plane): their
    /// CPU time is part of the run, reported on its own, and not counted as noise.
    pub companions: Vec<u32>,
    /// Every wrk run, warm-ups included.
    pub runs: Vec<RunRecord>,
    /// Errors seen under load and log warnings; each is a bug to look at.
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

impl Harness {
    /// A harness whose wrk log is `<dir>/wrk.log` (emptied first).
    pub fn new(
        dir: &Path,
        clock: CpuClock,
        wrk_threads: u32,
        noise_retries: u32,
        wait_quiet: Duration,
    ) -> Harness {
        let log = dir.join("wrk.log");
        let _ = std::fs::remove_file(&log);
        Harness {
            clock,
            log,
            wrk_threads: wrk_threads.max(1),
            noise_retries,
            wait_quiet,
            companions: Vec::new(),
            runs: Vec::new(),
            problems: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn load(&self, connections: u32, duration: Duration) -> WrkLoad {
        WrkLoad {
            connections,
            threads: self.wrk_threads,
            duration,
        }
    }

    /// An unmeasured run of `connections` for `duration` (none when it is zero), so the
    /// measured runs that follow start warm.
    pub async fn warm_up(
        &mut self,
        label: &str,
        script: &Path,
        url: &str,
        connections: u32,
        duration: Duration,
    ) -> anyhow::Result<()> {
        if !duration.is_zero() {
            let load = self.load(connections, duration);
            self.wrk(&format!("{label} warm-up"), script, url, load, None)
                .await?;
        }
        Ok(())
    }

    /// Waits for a quiet machine if the scenario was asked to, noting how that went.
    pub async fn settle(&mut self) -> anyhow::Result<()> {
        if !self.wait_quiet.is_zero() {
            let note = wait_for_quiet(&self.clock, self.wait_quiet).await?;
            eprintln!("{note}");
            self.notes.push(note);
        }
        Ok(())
    }

    /// One wrk run, kept for the report; its errors become problems. With `pids`, the
    /// CPU time of those processes, of the companions, of this one, of wrk and of the
    /// machine is sampled around it, and a run disturbed by other processes is done
    /// again once the machine is quiet (up to `noise_retries` times).
    pub async fn wrk(
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
            let retry = noisy && attempt < self.noise_retries;
            self.runs.push(RunRecord {
                result: result.clone(),
                cpu: cpu.clone(),
                superseded: retry,
            });
            if retry {
                attempt += 1;
                eprintln!(
                    "  .. other processes were busy during that run: again once quiet ({attempt}/{})",
                    self.noise_retries
                );
                wait_for_quiet(&self.clock, self.wait_quiet.max(Duration::from_secs(60))).await?;
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
        let companions = self.companions.clone();
        let sample = |pids: &[u32]| -> anyhow::Result<_> {
            Ok((
                self.clock.used(pids)?,
                self.clock.used(&me)?,
                self.clock.reaped_children()?,
                self.clock.machine()?,
                Instant::now(),
                self.clock.used(&companions)?,
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
                let companion = after.5.saturating_sub(before.5);
                let per_call = |d: Duration| d.as_secs_f64() * 1e6 / result.requests.max(1) as f64;
                let ours = target + upstream + wrk + companion;
                Some(RunCpu {
                    target_us_per_call: (!pids.is_empty()).then(|| per_call(target)),
                    companions_us_per_call: (!companions.is_empty()).then(|| per_call(companion)),
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

    /// The scenario's report: `measurements`, every run, problem and note, and a note
    /// on how much other processes disturbed the measured runs.
    pub fn report<E: Serialize>(
        mut self,
        scenario: &'static str,
        environment: E,
        measurements: Vec<Measurement>,
    ) -> Report<E> {
        let (other, steal) = self
            .runs
            .iter()
            .filter_map(|r| r.cpu.as_ref())
            .fold((0.0f64, 0.0f64), |(o, s), c| {
                (o.max(c.other_cores_busy), s.max(c.steal_cores))
            });
        self.notes.push(format!(
            "machine noise: at most {other:.2} cores used by other processes and {steal:.2} cores stolen during any measured run"
        ));
        Report {
            scenario,
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            environment,
            measurements,
            runs: self.runs,
            problems: self.problems,
            notes: self.notes,
        }
    }
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
