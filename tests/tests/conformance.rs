//! The official MCP conformance suite (npm `@modelcontextprotocol/conformance`, pinned
//! in `tests/conformance/package-lock.json`) against its own reference server
//! (`../shared/fixtures/conformance-everything-server`), first directly, then alone in
//! a `bare` workspace through a running gateway. The suite sends no credentials: a
//! forwarder on loopback adds the workspace token. Every check that passes directly
//! must pass through the gateway.
//!
//! `scripts/prereqs.sh --tests` (which `./test` runs) installs the suite, Node 22 and
//! the server's packages into `$GATEHOUSE_CONFORMANCE_CACHE`
//! (default `~/.cache/gatehouse-conformance`); without them this test fails.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use gatehouse_tests::forwarder::Forwarder;
use gatehouse_tests::reference::{assets, Assets, ReferenceServer};
use gatehouse_tests::{ConfigBuilder, Proxy, ServerSpec};
use tokio::process::Command;

/// How long one run of the suite may take (it takes seconds).
const SUITE_LIMIT: Duration = Duration::from_secs(300);

/// One run's checks: for each scenario, the status of each check, in order.
#[derive(Debug)]
struct Report {
    checks: BTreeMap<String, Vec<(String, String)>>,
    text: String,
}

impl Report {
    fn count(&self, status: &str) -> usize {
        self.checks
            .values()
            .flatten()
            .filter(|(_, s)| s == status)
            .count()
    }

    /// Each scenario's passed and failed checks, as the suite's summary counts them.
    fn table(&self) -> String {
        self.checks
            .iter()
            .map(|(name, checks)| {
                let passed = checks.iter().filter(|(_, s)| s == "SUCCESS").count();
                let failed = checks.iter().filter(|(_, s)| s == "FAILURE").count();
                format!("  {name}: {passed} passed, {failed} failed\n")
            })
            .collect()
    }

    /// The checks that pass here and do not pass in `other`: (scenario, check id,
    /// its status there).
    fn lost_in(&self, other: &Report) -> Vec<String> {
        let mut lost = Vec::new();
        for (scenario, checks) in &self.checks {
            let theirs = other.checks.get(scenario).map(Vec::as_slice).unwrap_or(&[]);
            // A check id may appear more than once in a scenario: match them in order.
            let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
            for (id, status) in checks {
                let nth = seen.entry(id).or_default();
                let there = theirs.iter().filter(|(i, _)| i == id).nth(*nth);
                *nth += 1;
                if status == "SUCCESS" && there.is_none_or(|(_, s)| s != "SUCCESS") {
                    let got = there.map_or("missing", |(_, s)| s.as_str());
                    lost.push(format!("{scenario} / {id}: {got}"));
                }
            }
        }
        lost
    }
}

/// Runs the suite's server scenarios a spec revision requires against `url`.
async fn run_suite(assets: &Assets, url: &str, requirements: &str) -> anyhow::Result<Report> {
    // GATEHOUSE_CONFORMANCE_OUT keeps the suite's results (a directory per run).
    let keep = std::env::var_os("GATEHOUSE_CONFORMANCE_OUT").map(PathBuf::from);
    let out = match &keep {
        Some(dir) => {
            let dir = dir.join(format!("{requirements}-{}", rand_suffix()));
            std::fs::create_dir_all(&dir)?;
            dir
        }
        None => tempdir()?,
    };
    let run = Command::new(&assets.node)
        .arg(&assets.suite)
        .args(["server", "--url", url, "--requirements", requirements])
        .arg("-o")
        .arg(&out)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(SUITE_LIMIT, run)
        .await
        .context("the conformance suite did not finish in time")??;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let checks = read_checks(&out);
    if keep.is_none() {
        let _ = std::fs::remove_dir_all(&out);
    }
    let checks = checks?;
    anyhow::ensure!(
        !checks.is_empty(),
        "the conformance suite reported no scenario against {url}:\n{text}"
    );
    Ok(Report { checks, text })
}

/// The suite's results: a directory per scenario run (`server-<scenario>-<time>`)
/// holding `checks.json`.
fn read_checks(dir: &std::path::Path) -> anyhow::Result<BTreeMap<String, Vec<(String, String)>>> {
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // `server-<scenario>-<YYYY-MM-DDTHH-MM-SS-mmmZ>`.
        const STAMP: usize = "-2026-12-05T05-27-22-918Z".len();
        let Some(scenario) = name
            .strip_prefix("server-")
            .and_then(|rest| rest.get(..rest.len().checked_sub(STAMP)?))
        else {
            continue;
        };
        let text = std::fs::read_to_string(path.join("checks.json"))
            .with_context(|| format!("{}/checks.json", path.display()))?;
        let checks: Vec<serde_json::Value> = serde_json::from_str(&text)?;
        let checks = checks
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_string(),
                    c["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        all.insert(scenario.to_string(), checks);
    }
    Ok(all)
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "gatehouse-conformance-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The reference server alone in a `bare` workspace behind a gateway, and a forwarder
/// that adds the workspace token (the suite sends none).
struct ThroughGateway {
    _proxy: Proxy,
    forwarder: Forwarder,
}

impl ThroughGateway {
    async fn start(server: &ReferenceServer) -> anyhow::Result<ThroughGateway> {
        let mut cfg = ConfigBuilder::new()?;
        cfg.server(
            "conformance",
            ServerSpec::new("everything", &server.url()).bare(),
        );
        let token = cfg.token("conformance");
        cfg.write()?;
        let proxy = Proxy::start(cfg.path()).await?;
        let gateway = proxy.ws_url("conformance");
        let base = gateway
            .split("/ws/")
            .next()
            .context("a workspace URL has /ws/")?
            .to_string();
        let forwarder =
            Forwarder::start(&base, "Authorization", &format!("Bearer {token}")).await?;
        Ok(ThroughGateway {
            _proxy: proxy,
            forwarder,
        })
    }

    fn url(&self) -> String {
        self.forwarder.url("/ws/conformance/mcp")
    }
}

/// Runs `requirements` directly and through the gateway; every check that passes
/// directly must pass through it.
async fn compare(requirements: &str) -> anyhow::Result<()> {
    let assets = assets()?;
    let server = ReferenceServer::start(&assets).await?;
    let direct = run_suite(&assets, &server.url(), requirements).await?;
    let gateway = ThroughGateway::start(&server).await?;
    let through = run_suite(&assets, &gateway.url(), requirements).await?;
    println!(
        "{requirements} directly: {} passed, {} failed\n{}through the gateway: {} passed, {} failed\n{}",
        direct.count("SUCCESS"),
        direct.count("FAILURE"),
        direct.table(),
        through.count("SUCCESS"),
        through.count("FAILURE"),
        through.table()
    );
    let lost = direct.lost_in(&through);
    assert!(
        lost.is_empty(),
        "checks that pass directly do not pass through the gateway:\n  {}\n\nthe suite through the gateway said:\n{}",
        lost.join("\n  "),
        through.text
    );
    Ok(())
}

#[tokio::test]
async fn the_gateway_passes_every_check_its_reference_server_passes_2025_11_25(
) -> anyhow::Result<()> {
    compare("2025-11-25").await
}

#[tokio::test]
async fn the_gateway_passes_every_check_its_reference_server_passes_2026_07_28(
) -> anyhow::Result<()> {
    compare("2026-07-28").await
}
