//! The `instructions` scenario: CPU instructions gatehouse-proxy executes per proxied
//! `tools/call` and per warm `tools/list`, counted by callgrind. Unlike requests/s or
//! CPU time, the count does not depend on the machine's other load or on its clock, so
//! it is the figure to track from commit to commit.
//!
//! The proxy runs under `valgrind --tool=callgrind` (through a wrapper script that
//! `exec`s valgrind, so the pid the harness starts is the one callgrind_control talks
//! to). The counters are zeroed once the proxy is warm, exactly N requests are sent by
//! the harness's own client (not wrk, whose request count is whatever fits in its
//! duration), and the total `Ir` of the dump callgrind writes is divided by N.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::client::{self, checked_session, McpSession};
use crate::report::{Measurement, Report};
use crate::targets::GatehouseProxy;
use crate::upstream::{UpstreamFleet, UpstreamMode};

/// How long one callgrind_control command may take: it is answered by the proxy's next
/// scheduling point under valgrind, normally well under a second.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(120);

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// tools/call requests counted (after the warm-up).
    #[arg(long, default_value_t = 2000)]
    calls: u64,
    /// Warm tools/list requests counted (0 skips them).
    #[arg(long, default_value_t = 200)]
    lists: u64,
    /// Requests of each kind sent before the counters are zeroed.
    #[arg(long, default_value_t = 200)]
    warmup: u64,
    /// Tools the upstream exposes (the size of the tools/list answer).
    #[arg(long, default_value_t = 50)]
    tools: usize,
    #[arg(long, value_enum, default_value_t = UpstreamMode::StatelessJson)]
    upstream_mode: UpstreamMode,
    /// The gatehouse-proxy binary (default: next to this one).
    #[arg(long)]
    proxy_bin: Option<PathBuf>,
    /// The valgrind binary; callgrind_control is expected next to it.
    #[arg(long, default_value = "/usr/bin/valgrind")]
    valgrind: PathBuf,
}

impl Args {
    /// The options these flags ask for, writing to `<out>/instructions`.
    pub fn options(self, build: &Path, out: &Path) -> Options {
        Options {
            calls: self.calls.max(1),
            lists: self.lists,
            warmup: self.warmup,
            tools: self.tools.max(1),
            upstream_mode: self.upstream_mode,
            out: out.join("instructions"),
            proxy_bin: self
                .proxy_bin
                .unwrap_or_else(|| build.join("gatehouse-proxy")),
            valgrind: self.valgrind,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// `tools/call` requests counted.
    pub calls: u64,
    /// Warm `tools/list` requests counted (0 skips them).
    pub lists: u64,
    /// Requests of each kind sent before the counters are zeroed.
    pub warmup: u64,
    /// Tools the upstream exposes (the size of the `tools/list` answer).
    pub tools: usize,
    pub upstream_mode: UpstreamMode,
    pub out: PathBuf,
    pub proxy_bin: PathBuf,
    pub valgrind: PathBuf,
}

#[derive(Debug, Serialize)]
struct Environment {
    valgrind: Option<String>,
    proxy_binary: String,
    proxy_threads: usize,
    upstream_mode: UpstreamMode,
    upstream_tools: usize,
    calls: u64,
    lists: u64,
    warmup: u64,
}

/// What one counted stretch of requests cost the proxy.
pub(crate) struct Counted {
    pub instructions: u64,
    pub requests: u64,
    pub wall: Duration,
    pub dump: PathBuf,
}

impl Counted {
    pub fn per_request(&self) -> f64 {
        self.instructions as f64 / self.requests.max(1) as f64
    }
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    let env = Environment {
        valgrind: valgrind_version(&opts.valgrind).await,
        proxy_binary: opts.proxy_bin.display().to_string(),
        proxy_threads: 1,
        upstream_mode: opts.upstream_mode,
        upstream_tools: opts.tools.max(1),
        calls: opts.calls.max(1),
        lists: opts.lists,
        warmup: opts.warmup,
    };
    let mut report = Report {
        scenario: "instructions",
        unix_time: unix_time(),
        environment: env,
        measurements: Vec::new(),
        runs: Vec::new(),
        problems: Vec::new(),
        notes: Vec::new(),
    };
    if report.environment.valgrind.is_none() {
        let note = format!(
            "valgrind not found at {}: instruction counts skipped (apt-get install -y valgrind, or pass --valgrind)",
            opts.valgrind.display()
        );
        eprintln!("{note}");
        report.notes.push(note);
        return report.publish_saying(&out, "no dump: valgrind missing");
    }
    crate::targets::require_built(&opts.proxy_bin, "gatehouse-proxy", "--proxy-bin")?;
    let control = opts.valgrind.with_file_name("callgrind_control");
    if !control.is_file() {
        bail!(
            "{} not found next to valgrind: it ships with valgrind",
            control.display()
        );
    }
    eprintln!(
        "instructions: {} tools/call + {} tools/list counted after {} warm-up requests each, proxy under callgrind, output {}",
        report.environment.calls,
        opts.lists,
        opts.warmup,
        out.display()
    );

    let fleet = UpstreamFleet::start(1, opts.tools.max(1), opts.upstream_mode).await?;
    let dumps = out.join("callgrind.out");
    for old in dump_files(&dumps)? {
        std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
    }
    let wrapper = write_wrapper(&out, &opts.valgrind, &opts.proxy_bin, &dumps)?;
    let proxy = GatehouseProxy::start(&wrapper, &out, "callgrind-proxy", &[fleet.url(0)], 1)
        .await
        .context("starting gatehouse-proxy under callgrind")?;
    eprintln!("callgrind-proxy -> {} (pid {})", proxy.url(), proxy.pid);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let result = async {
        let session = checked_session(&http, &proxy.url(), Some(&proxy.token), "s0__echo").await?;
        let call = client::tools_call_body("s0__echo");
        let list = client::tools_list_body();
        let calls = count(
            &http,
            &session,
            &control,
            proxy.pid,
            &dumps,
            &call,
            opts.warmup,
            report.environment.calls,
        )
        .await
        .context("counting tools/call")?;
        eprintln!(
            "  tools/call: {} instructions over {} calls in {:.1} s under valgrind: {:.0} per call",
            calls.instructions,
            calls.requests,
            calls.wall.as_secs_f64(),
            calls.per_request()
        );
        let lists = if opts.lists == 0 {
            None
        } else {
            let lists = count(
                &http, &session, &control, proxy.pid, &dumps, &list, opts.warmup, opts.lists,
            )
            .await
            .context("counting tools/list")?;
            eprintln!(
                "  tools/list: {} instructions over {} lists in {:.1} s under valgrind: {:.0} per list",
                lists.instructions,
                lists.requests,
                lists.wall.as_secs_f64(),
                lists.per_request()
            );
            Some(lists)
        };
        anyhow::Ok((calls, lists))
    }
    .await;
    for w in proxy.warnings() {
        report.problems.push(format!("callgrind-proxy log: {w}"));
    }
    proxy.stop().await;
    drop(fleet);
    let (calls, lists) = result?;
    report.measurements.push(
        Measurement::new(
            "gatehouse instructions/tools/call",
            calls.per_request(),
            "instructions",
        )
        .note(format!(
            "callgrind Ir of gatehouse-proxy (all threads, --threads 1) over {} sequential calls of s0__echo after zeroing, / calls",
            calls.requests
        )),
    );
    if let Some(lists) = &lists {
        report.measurements.push(
            Measurement::new(
                format!("gatehouse instructions/tools/list warm 1x{}", opts.tools.max(1)),
                lists.per_request(),
                "instructions",
            )
            .note(format!(
                "callgrind Ir over {} sequential tools/list answered from the catalog cache, / lists",
                lists.requests
            )),
        );
    }
    report.notes.push(format!(
        "counts include whatever the proxy did in the background meanwhile (timers, idle wake-ups); dumps: {}{}",
        calls.dump.display(),
        lists
            .as_ref()
            .map(|l| format!(", {}", l.dump.display()))
            .unwrap_or_default()
    ));
    report.notes.push(
        "instructions are not time: read them commit against commit, not against a CPU/call row"
            .into(),
    );
    report.publish_saying(&out, &format!("callgrind dumps: {}.*", dumps.display()))
}

/// Sends `warmup` requests, zeroes the counters, sends exactly `n` more, dumps and
/// reads the dump's total.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn count(
    http: &reqwest::Client,
    session: &McpSession,
    control: &Path,
    pid: u32,
    dumps: &Path,
    body: &str,
    warmup: u64,
    n: u64,
) -> anyhow::Result<Counted> {
    for _ in 0..warmup {
        session.request(http, body).await?;
    }
    callgrind_control(control, "--zero", pid).await?;
    let started = Instant::now();
    for i in 0..n {
        session
            .request(http, body)
            .await
            .with_context(|| format!("request {} of {n}", i + 1))?;
    }
    let wall = started.elapsed();
    let before = dump_files(dumps)?;
    callgrind_control(control, "--dump", pid).await?;
    let dump = dump_files(dumps)?
        .into_iter()
        .find(|f| !before.contains(f))
        .with_context(|| {
            format!(
                "callgrind_control --dump {pid} answered but no new {}.* file appeared",
                dumps.display()
            )
        })?;
    let text =
        std::fs::read_to_string(&dump).with_context(|| format!("reading {}", dump.display()))?;
    let instructions = total_ir(&text).with_context(|| format!("in {}", dump.display()))?;
    Ok(Counted {
        instructions,
        requests: n,
        wall,
        dump,
    })
}

/// The dump files callgrind has written so far: `<dumps>.1`, `<dumps>.2`, ...
pub(crate) fn dump_files(dumps: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let dir = dumps.parent().context("dump path has no directory")?;
    let prefix = format!(
        "{}.",
        dumps
            .file_name()
            .context("dump path has no file name")?
            .to_string_lossy()
    );
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name
            .strip_prefix(&prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The `Ir` total of a callgrind dump: its `totals:` line (or `summary:` in older
/// formats), in the column the `events:` line gives `Ir`.
fn total_ir(dump: &str) -> anyhow::Result<u64> {
    let events: Vec<&str> = dump
        .lines()
        .find_map(|l| l.strip_prefix("events:"))
        .context("no events: line")?
        .split_whitespace()
        .collect();
    let column = events
        .iter()
        .position(|e| *e == "Ir")
        .with_context(|| format!("no Ir among the events {events:?}"))?;
    let line = dump
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("totals:"))
        .or_else(|| dump.lines().find_map(|l| l.strip_prefix("summary:")))
        .context("no totals: or summary: line")?;
    let field = line
        .split_whitespace()
        .nth(column)
        .with_context(|| format!("totals line {line:?} has no column {column}"))?;
    field
        .parse()
        .with_context(|| format!("Ir total {field:?} is not a number"))
}

/// Runs `callgrind_control <command> <pid>`, failing on a non-zero exit or a hang.
async fn callgrind_control(control: &Path, command: &str, pid: u32) -> anyhow::Result<()> {
    let run = tokio::process::Command::new(control)
        .arg(command)
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CONTROL_TIMEOUT, run)
        .await
        .with_context(|| {
            format!("callgrind_control {command} {pid}: no answer after {CONTROL_TIMEOUT:?}")
        })?
        .with_context(|| format!("running {}", control.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() || !stdout.contains("OK") {
        bail!(
            "callgrind_control {command} {pid} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// A script that runs the proxy under callgrind with `exec`, so the proxy's pid is the
/// one the harness started and passes to callgrind_control.
pub(crate) fn write_wrapper(
    dir: &Path,
    valgrind: &Path,
    proxy: &Path,
    dumps: &Path,
) -> anyhow::Result<PathBuf> {
    let path = dir.join("proxy-under-callgrind.sh");
    let quote = |p: &Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let script = format!(
        "#!/bin/sh\n# generated by gatehouse-bench; do not edit\nexec {} --tool=callgrind --callgrind-out-file={} {} \"$@\"\n",
        quote(valgrind),
        quote(dumps),
        quote(proxy)
    );
    std::fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

/// `valgrind --version`, or `None` when it cannot be run.
pub(crate) async fn valgrind_version(valgrind: &Path) -> Option<String> {
    let out = tokio::process::Command::new(valgrind)
        .arg("--version")
        .output()
        .await
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn unix_time() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ir_total_of_a_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 32355\n\nfn=(1) main\n3 10\ntotals: 32355\n";
        assert_eq!(total_ir(dump).unwrap(), 32355);
        let cache = "events: Ir Dr Dw\nsummary: 9 8 7\ntotals: 90 80 70\n";
        assert_eq!(total_ir(cache).unwrap(), 90);
        let sims = "events: Dr Ir\nsummary: 5 6\n";
        assert_eq!(total_ir(sims).unwrap(), 6);
        assert!(total_ir("events: Dr\ntotals: 1\n").is_err());
    }
}
