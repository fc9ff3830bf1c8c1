//! The `target` scenario: any MCP gateway (or server) that speaks Streamable HTTP,
//! loaded the way `data-plane` loads Gatehouse, so a user can put the gateway they run
//! today next to Gatehouse in the same table.
//!
//! The harness opens one session with the given bearer token, picks the tool to call
//! (the one asked for, or the first whose input schema requires no arguments), checks
//! that one call answers, then has wrk send that same `tools/call` on the session: a
//! warm-up, a run at 1 connection (rps, p50, p99) and one at N (rps).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::client::{self, McpSession};
use crate::harness::{Harness, RunCpu};
use crate::procstat::CpuClock;
use crate::report::Measurement;
use crate::wrk::{self, WrkRequest};

/// `tools/list` pages read while looking for a tool before giving up.
const MAX_LIST_PAGES: usize = 20;

/// The scenario's command-line flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The gateway's Streamable HTTP endpoint, e.g. http://127.0.0.1:8080/ws/bench.
    #[arg(long)]
    target_url: String,
    /// Bearer token for the gateway (also read from GATEHOUSE_BENCH_TOKEN, which keeps
    /// it out of the process list).
    #[arg(long, env = "GATEHOUSE_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The tool to call (default: the first listed tool with no required arguments).
    #[arg(long)]
    tool: Option<String>,
    /// The call's arguments, a JSON object (default: {}).
    #[arg(long)]
    arguments: Option<String>,
    /// Names the rows of the report.
    #[arg(long, default_value = "target")]
    label: String,
    /// Pids of the gateway's processes, to report its CPU time per call (local only).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Pids of local processes behind the gateway (its upstream servers): their CPU
    /// time per call gets its own row instead of counting as machine noise.
    #[arg(long, value_delimiter = ',')]
    backend_pid: Vec<u32>,
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of the warm-up run before the measured runs (0 = none).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Connections of the throughput run (the latency run uses 1).
    #[arg(long, default_value_t = 32)]
    connections: u32,
    #[arg(long, default_value_t = 1)]
    wrk_threads: u32,
    /// Seconds to wait for other processes to leave the CPU before starting (0: don't).
    #[arg(long, default_value_t = 0.0)]
    wait_quiet: f64,
    /// Times a run is done again when other processes took CPU during it.
    #[arg(long, default_value_t = 0)]
    noise_retries: u32,
}

impl Args {
    /// The options these flags ask for, writing to `<out>/target`.
    pub fn options(self, out: &std::path::Path) -> anyhow::Result<Options> {
        let seconds = |s: f64| Duration::from_secs_f64(s.max(0.0));
        Ok(Options {
            url: self.target_url,
            token: self.token.filter(|t| !t.is_empty()),
            tool: self.tool,
            arguments: self.arguments.as_deref().map(parse_arguments).transpose()?,
            label: self.label,
            pids: self.pid,
            backend_pids: self.backend_pid,
            duration: seconds(self.duration.max(1.0)),
            warmup: seconds(self.warmup),
            connections: self.connections.max(1),
            wrk_threads: self.wrk_threads.max(1),
            out: out.join("target"),
            wait_quiet: seconds(self.wait_quiet),
            noise_retries: self.noise_retries,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    /// The gateway's Streamable HTTP endpoint.
    pub url: String,
    /// Sent as `Authorization: Bearer ...` when present.
    pub token: Option<String>,
    /// The tool to call; `None`: the first listed tool with no required arguments.
    pub tool: Option<String>,
    /// The call's `arguments` object; `None`: `{}`.
    pub arguments: Option<Map<String, Value>>,
    /// Names the rows (`<label> rps@32`, ...).
    pub label: String,
    /// Processes of the gateway whose CPU time is sampled per call (empty: none).
    pub pids: Vec<u32>,
    /// Local processes behind the gateway, sampled apart from it (empty: none).
    pub backend_pids: Vec<u32>,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: u32,
    pub wrk_threads: u32,
    pub out: PathBuf,
    pub wait_quiet: Duration,
    pub noise_retries: u32,
}

#[derive(Debug, Serialize)]
struct Environment {
    cpus: usize,
    wrk: Option<String>,
    /// The URL measured; the token is never written.
    url: String,
    bearer_token: bool,
    tool: String,
    arguments: Value,
    tool_chosen_by: &'static str,
    session: Option<String>,
    duration_s: f64,
    warmup_s: f64,
    connections: u32,
    wrk_threads: u32,
    gateway_pids: Vec<u32>,
    backend_pids: Vec<u32>,
}

pub async fn run(opts: Options) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out)?;
    let out = opts.out.canonicalize()?;
    let wrk_version = wrk::version().await;
    if wrk_version.is_none() {
        bail!("wrk is not installed: apt-get install -y wrk");
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let session = McpSession::open(&http, &opts.url, opts.token.as_deref())
        .await
        .with_context(|| format!("opening an MCP session at {}", opts.url))?;
    let (tool, chosen_by) = match &opts.tool {
        Some(name) => (name.clone(), "--tool"),
        None => (
            first_argument_free_tool(&http, &session).await?,
            "first tools/list entry with no required arguments",
        ),
    };
    let arguments = Value::Object(opts.arguments.clone().unwrap_or_default());
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": tool, "arguments": arguments}
    })
    .to_string();
    let (answer, took) = session
        .request(&http, &body)
        .await
        .with_context(|| format!("calling tool {tool:?} at {}", opts.url))?;
    if answer.pointer("/result/isError") == Some(&Value::Bool(true)) {
        bail!(
            "tool {tool:?} at {} answered with a tool error; pick another (--tool) or pass its --arguments: {}",
            opts.url,
            answer.pointer("/result/content").unwrap_or(&Value::Null)
        );
    }
    eprintln!(
        "target {} -> {} (session {}), tools/call of {tool:?} answered in {:.1} ms",
        opts.label,
        opts.url,
        session
            .session_id()
            .map_or("none, stateless".into(), |id| format!("{:.16}...", id)),
        took.as_secs_f64() * 1e3
    );

    let clock = CpuClock::detect();
    let env = Environment {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        wrk: wrk_version,
        url: opts.url.clone(),
        bearer_token: opts.token.is_some(),
        tool: tool.clone(),
        arguments,
        tool_chosen_by: chosen_by,
        session: session.session_id().map(str::to_owned),
        duration_s: opts.duration.as_secs_f64(),
        warmup_s: opts.warmup.as_secs_f64(),
        connections: opts.connections,
        wrk_threads: opts.wrk_threads,
        gateway_pids: opts.pids.clone(),
        backend_pids: opts.backend_pids.clone(),
    };
    let mut h = Harness::new(
        &out,
        clock,
        opts.wrk_threads,
        opts.noise_retries,
        opts.wait_quiet,
    );
    h.companions = opts.backend_pids.clone();
    h.settle().await?;
    let request = WrkRequest {
        url: session.url.clone(),
        body,
        headers: session.headers.clone(),
        expect: r#""result":"#.into(),
    };
    let script = request.write_script(&out.join(format!("{}.lua", file_safe(&opts.label))))?;
    let label = &opts.label;
    let n = opts.connections;
    h.warm_up(label, &script, &request.url, n, opts.warmup)
        .await?;
    // Sampled even without gateway pids: the machine-noise check needs the samples.
    let pids = Some(opts.pids.as_slice());
    let (one, cpu_one) = h
        .wrk(label, &script, &request.url, h.load(1, opts.duration), pids)
        .await?;
    let (many, cpu_many) = h
        .wrk(label, &script, &request.url, h.load(n, opts.duration), pids)
        .await?;
    let noisy_one = cpu_one.as_ref().is_some_and(RunCpu::noisy);
    let noisy_many = cpu_many.as_ref().is_some_and(RunCpu::noisy);
    let mut m = vec![
        Measurement::new(format!("{label} rps@{n}"), many.rps, "req/s").noisy(noisy_many),
        Measurement::new(format!("{label} rps@1"), one.rps, "req/s").noisy(noisy_one),
        Measurement::new(format!("{label} p50@1"), one.p50_us, "us").noisy(noisy_one),
        Measurement::new(format!("{label} p99@1"), one.p99_us, "us").noisy(noisy_one),
    ];
    if let Some(us) = cpu_many.as_ref().and_then(|c| c.target_us_per_call) {
        m.push(
            Measurement::new(format!("{label} CPU/call @{n}"), us, "us")
                .note("utime+stime of the --pid processes / requests")
                .noisy(noisy_many),
        );
    }
    if let Some(us) = cpu_many.as_ref().and_then(|c| c.companions_us_per_call) {
        m.push(
            Measurement::new(format!("{label} backend CPU/call @{n}"), us, "us")
                .note("utime+stime of the --backend-pid processes / requests")
                .noisy(noisy_many),
        );
    }
    h.notes.push(format!(
        "tools/call of {tool:?} ({chosen_by}); every response checked for \"result\":; a tool error (isError) still counts as an answer"
    ));
    if opts.pids.is_empty() {
        h.notes.push(
            "no --pid given: the gateway's CPU/call is not measured (only its latency and throughput)"
                .into(),
        );
    }
    let log = h.log.clone();
    h.report("target", env, m).publish(&out, &log)
}

/// The name of the first tool (following `nextCursor`) whose input schema lists no
/// required properties.
async fn first_argument_free_tool(
    http: &reqwest::Client,
    session: &McpSession,
) -> anyhow::Result<String> {
    let mut cursor: Option<String> = None;
    let mut listed = 0;
    let mut examples = Vec::new();
    for _ in 0..MAX_LIST_PAGES {
        let body = match &cursor {
            None => client::tools_list_body(),
            Some(c) => json!({
                "jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": c}
            })
            .to_string(),
        };
        let (page, _) = session
            .request(http, &body)
            .await
            .with_context(|| format!("tools/list at {}", session.url))?;
        let tools = page
            .pointer("/result/tools")
            .and_then(Value::as_array)
            .with_context(|| {
                format!("tools/list at {} has no result.tools: {page}", session.url)
            })?;
        for tool in tools {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
            listed += 1;
            if requires_nothing(tool) && !name.is_empty() {
                return Ok(name.to_string());
            }
            if examples.len() < 3 {
                examples.push(name.to_string());
            }
        }
        cursor = page
            .pointer("/result/nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if cursor.is_none() {
            break;
        }
    }
    bail!(
        "{} lists {listed} tool(s) and each requires arguments (e.g. {}): pass --tool NAME --arguments JSON",
        session.url,
        if examples.is_empty() {
            "none listed".to_string()
        } else {
            examples.join(", ")
        }
    )
}

/// Whether a listed tool can be called with `{}`: its input schema has no (or an
/// empty) `required` list.
fn requires_nothing(tool: &Value) -> bool {
    tool.pointer("/inputSchema/required")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
}

/// `label` with everything but letters, digits, `-` and `_` replaced, for file names.
fn file_safe(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Parses `--arguments`: a JSON object.
pub fn parse_arguments(text: &str) -> anyhow::Result<Map<String, Value>> {
    match serde_json::from_str(text).context("--arguments is not JSON")? {
        Value::Object(map) => Ok(map),
        other => bail!("--arguments must be a JSON object, not {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_without_required_arguments_are_callable_with_nothing() {
        assert!(requires_nothing(&json!({"name": "a"})));
        assert!(requires_nothing(
            &json!({"name": "a", "inputSchema": {"type": "object"}})
        ));
        assert!(requires_nothing(
            &json!({"name": "a", "inputSchema": {"required": []}})
        ));
        assert!(!requires_nothing(
            &json!({"name": "a", "inputSchema": {"required": ["q"]}})
        ));
    }

    #[test]
    fn arguments_must_be_an_object() {
        assert_eq!(parse_arguments(r#"{"q": 1}"#).unwrap()["q"], json!(1));
        assert!(parse_arguments("[1]").is_err());
        assert!(parse_arguments("{").is_err());
    }
}
