//! `/metrics` of both processes as an operator's Prometheus reads them: every name
//! of the metric contract (deploy/metrics.txt) is there, documented, in the process
//! it belongs to, and the exposition passes `promtool check metrics`.
//!
//! promtool's lint findings fail the test as parse errors do: its lints are the
//! Prometheus naming conventions the contract follows (counters end in `_total`,
//! base units, a HELP text for every metric), and a finding is a misnamed or
//! undocumented metric every operator would see.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gatehouse_tests::{connect, CallOutcome, RawClient, Upstream, UpstreamTool, STEP_TIMEOUT};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use crate::fixture::{call, token_in, Deployment};

/// The process that serves a metric of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Process {
    /// `gatehouse-proxy`, on its admin listener.
    Proxy,
    /// `gatehouse serve` / `gatehouse up`, on its API listener.
    ControlPlane,
}

impl Process {
    /// deploy/metrics.txt: names starting `gatehouse_control_plane_` are the control
    /// plane's, all others the proxy's.
    fn of(metric: &str) -> Process {
        if metric.starts_with("gatehouse_control_plane_") {
            Process::ControlPlane
        } else {
            Process::Proxy
        }
    }

    fn name(self) -> &'static str {
        match self {
            Process::Proxy => "gatehouse-proxy",
            Process::ControlPlane => "the control plane",
        }
    }
}

/// The metric names of deploy/metrics.txt, in file order.
fn contract() -> anyhow::Result<Vec<String>> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/metrics.txt");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let names: Vec<String> = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default().trim())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!names.is_empty(), "{} lists no metric", path.display());
    Ok(names)
}

/// One answer of a `/metrics` endpoint.
struct Scrape {
    process: Process,
    url: String,
    status: u16,
    content_type: String,
    body: String,
}

impl Scrape {
    async fn of(process: Process, url: &str) -> anyhow::Result<Scrape> {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()?
            .get(url)
            .timeout(STEP_TIMEOUT)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
            .to_owned();
        Ok(Scrape {
            process,
            url: url.to_owned(),
            status,
            content_type,
            body: response.text().await?,
        })
    }

    /// Metric names with a `# HELP` line.
    fn documented(&self) -> BTreeSet<&str> {
        self.body
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|rest| rest.split(' ').next())
            .collect()
    }

    /// The names of `contract` this process should serve and does not document.
    fn missing<'c>(&self, contract: &'c [String]) -> Vec<&'c str> {
        let documented = self.documented();
        contract
            .iter()
            .filter(|name| Process::of(name) == self.process)
            .map(String::as_str)
            .filter(|name| self.status != 200 || !documented.contains(name))
            .collect()
    }
}

/// What `promtool check metrics` made of an exposition.
#[derive(Debug)]
enum PromtoolVerdict {
    Clean,
    /// It parsed, with these lint findings (exit code 3).
    Lint(Vec<String>),
    /// It did not parse (exit code 1), or promtool failed otherwise.
    Invalid(String),
}

/// Fails, saying how to install it, when `promtool` is not on `PATH`.
fn require_promtool() -> anyhow::Result<()> {
    match std::process::Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => anyhow::bail!("`promtool --version` exited {status}: run scripts/prereqs.sh --tests"),
        Err(e) => anyhow::bail!(
            "promtool is needed to check /metrics and cannot be run ({e}): run scripts/prereqs.sh --tests"
        ),
    }
}

/// Pipes `exposition` into `promtool check metrics`.
async fn promtool_check(exposition: &str) -> anyhow::Result<PromtoolVerdict> {
    let mut child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            anyhow::anyhow!("cannot run promtool ({e}): run scripts/prereqs.sh --tests")
        })?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(exposition.as_bytes()).await?;
    stdin.shutdown().await?;
    drop(stdin);
    let output = tokio::time::timeout(STEP_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| {
            anyhow::anyhow!("promtool check metrics did not exit within {STEP_TIMEOUT:?}")
        })??;
    // promtool writes both its findings and its errors to stderr.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(match output.status.code() {
        Some(0) => PromtoolVerdict::Clean,
        Some(3) => PromtoolVerdict::Lint(
            said.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        ),
        _ => PromtoolVerdict::Invalid(format!("{}: {}", output.status, said.trim())),
    })
}

/// What is wrong with one scrape: its answer, its promtool verdict, missing names.
async fn problems_of(scrape: &Scrape, contract: &[String]) -> anyhow::Result<Vec<String>> {
    let who = format!("{} at {}", scrape.process.name(), scrape.url);
    let mut problems = Vec::new();
    if scrape.status != 200 {
        let start: String = scrape.body.chars().take(300).collect();
        problems.push(format!("{who} answered HTTP {}: {start}", scrape.status));
    } else {
        // Prometheus 3 refuses a scrape without a text-format content type.
        if !scrape.content_type.starts_with("text/plain")
            && !scrape
                .content_type
                .starts_with("application/openmetrics-text")
        {
            problems.push(format!(
                "{who} answered content type {:?}, not the Prometheus text format",
                scrape.content_type
            ));
        }
        match promtool_check(&scrape.body).await? {
            PromtoolVerdict::Clean => {}
            PromtoolVerdict::Lint(findings) => problems.push(format!(
                "promtool check metrics finds lint problems in {who}:\n  {}",
                findings.join("\n  ")
            )),
            PromtoolVerdict::Invalid(said) => {
                problems.push(format!("promtool check metrics cannot parse {who}: {said}"))
            }
        }
    }
    let missing = scrape.missing(contract);
    if !missing.is_empty() {
        problems.push(format!(
            "{who} has no `# HELP` line for {} name(s) of deploy/metrics.txt:\n  {}",
            missing.len(),
            missing.join("\n  ")
        ));
    }
    Ok(problems)
}

#[tokio::test]
async fn both_processes_expose_the_metric_contract() -> anyhow::Result<()> {
    require_promtool()?;
    let contract = contract()?;
    let d = Deployment::start().await?;

    // A workspace with two servers, used as a client would: calls that succeed, one to
    // a server that went away, and a request with a token nobody issued. Label sets of
    // counters only appear once something was counted under them.
    let created = d
        .admin
        .ok(&["workspace", "create", "Observability"])
        .await?;
    let token = token_in(&created)?;
    let notes = Upstream::start(
        "notes",
        [UpstreamTool::new("search"), UpstreamTool::new("write_note")],
    )
    .await?;
    let mut wiki = Upstream::start("wiki", [UpstreamTool::new("lookup")]).await?;
    for upstream in [&notes, &wiki] {
        d.admin
            .ok(&[
                "mcp",
                "install",
                &upstream.url(),
                "--name",
                upstream.label(),
                "--workspace",
                "observability",
            ])
            .await?;
    }
    d.synced().await?;
    let ws_url = d.proxy.ws_url("observability");
    let client = connect(&ws_url, &token).await?;
    for tool in [
        "notes__search",
        "notes__write_note",
        "notes__search",
        "wiki__lookup",
    ] {
        match call(&client, tool).await? {
            CallOutcome::Result(_) => {}
            other => anyhow::bail!("{tool} did not answer: {other:?}"),
        }
    }
    wiki.stop().await;
    // Five failures in a row open its circuit breaker (the circuit metrics).
    for _ in 0..5 {
        match call(&client, "wiki__lookup").await? {
            CallOutcome::JsonRpcError(_) => {}
            other => {
                anyhow::bail!("a server that went away must give a JSON-RPC error, got {other:?}")
            }
        }
    }
    let refused = RawClient::new(&ws_url, Some("mwt_not_issued_by_this_gateway"))
        .send_initialize()
        .await?;
    assert_eq!(refused.status, 401, "{}", refused.text());

    // Audit events reach the control plane in the background: poll both endpoints
    // until every contract name is there, or the deadline passes.
    let proxy_url = d.proxy.admin_url("/metrics");
    let cp_url = d.cp.url("/metrics");
    let deadline = Instant::now() + STEP_TIMEOUT;
    let scrapes = loop {
        let scrapes = [
            Scrape::of(Process::Proxy, &proxy_url).await?,
            Scrape::of(Process::ControlPlane, &cp_url).await?,
        ];
        let complete = scrapes.iter().all(|s| s.missing(&contract).is_empty());
        if complete || Instant::now() >= deadline {
            break scrapes;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    client.cancel().await?;

    let mut problems = Vec::new();
    for scrape in &scrapes {
        let found = problems_of(scrape, &contract).await?;
        println!(
            "{}: HTTP {}, {} metric(s) documented, {} problem(s)",
            scrape.process.name(),
            scrape.status,
            scrape.documented().len(),
            found.len()
        );
        problems.extend(found);
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) with /metrics:\n\n{}",
        problems.len(),
        problems.join("\n\n")
    );
    Ok(())
}
