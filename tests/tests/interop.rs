//! Interop with another implementation: the Python MCP SDK (PyPI `mcp`, pinned in
//! `tests/interop/requirements.txt`, installed into `tests/interop/.venv` by
//! `scripts/prereqs.sh --tests`, which `./test` runs). Its Streamable HTTP client and
//! its legacy `sse_client` drive a real proxy — list tools, call one (answering a
//! sampling request mid-call), read a resource, get a prompt — in a workspace with an
//! rmcp server and a legacy SSE server written with the same Python SDK.
//!
//! The SDK is a prerequisite, not an option: without it (or with another version
//! than the pinned one) the test fails and says how to install it.
//! `GATEHOUSE_INTEROP_PYTHON` names another interpreter to use instead of the venv's.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use gatehouse_tests::{wait_until, ConfigBuilder, Proxy, ServerSpec, Upstream, UpstreamTool};
use tokio::process::{Child, Command};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);
/// The pins `scripts/prereqs.sh --tests` installs.
const REQUIREMENTS: &str = include_str!("../interop/requirements.txt");
const INSTALL: &str = "run `scripts/prereqs.sh --tests` (./test runs it) to install it";

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop")
}

/// The interpreter that has the SDK: `$GATEHOUSE_INTEROP_PYTHON`, or the venv's.
fn python() -> PathBuf {
    std::env::var_os("GATEHOUSE_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| interop_dir().join(".venv/bin/python"))
}

/// What to do when `python` lacks the SDK.
fn fix_for(python: &Path) -> String {
    if std::env::var_os("GATEHOUSE_INTEROP_PYTHON").is_some() {
        format!(
            "install mcp=={} for {} or unset GATEHOUSE_INTEROP_PYTHON and {INSTALL}",
            pinned_sdk_version(),
            python.display()
        )
    } else {
        INSTALL.to_string()
    }
}

/// The `mcp` version pinned in `requirements.txt`.
fn pinned_sdk_version() -> &'static str {
    REQUIREMENTS
        .lines()
        .find_map(|line| line.trim().strip_prefix("mcp=="))
        .map(str::trim)
        .expect("tests/interop/requirements.txt pins mcp==VERSION")
}

/// Fails, naming the fix, unless `python` runs and has the pinned SDK.
async fn require_sdk(python: &Path) -> anyhow::Result<()> {
    let pinned = pinned_sdk_version();
    let output = Command::new(python)
        .args([
            "-c",
            "import importlib.metadata; print(importlib.metadata.version('mcp'))",
        ])
        .output()
        .await
        .with_context(|| {
            format!(
                "the interop test needs the Python MCP SDK (mcp=={pinned}), but its interpreter {} cannot be started: {}",
                python.display(),
                fix_for(python)
            )
        })?;
    let found = String::from_utf8_lossy(&output.stdout).trim().to_string();
    anyhow::ensure!(
        output.status.success(),
        "the interop test needs the Python MCP SDK (mcp=={pinned}), which {} does not have ({}): {}",
        python.display(),
        String::from_utf8_lossy(&output.stderr)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no error output")
            .trim(),
        fix_for(python)
    );
    anyhow::ensure!(
        found == pinned,
        "the interop test is written for the Python MCP SDK {pinned}, but {} has {found}: {}",
        python.display(),
        fix_for(python)
    );
    Ok(())
}

/// Runs `client.py args...` to the end; fails with its output unless it succeeds.
async fn run_client(python: &Path, args: &[&str]) -> anyhow::Result<String> {
    let mut command = Command::new(python);
    command
        .arg(interop_dir().join("client.py"))
        .args(args)
        .env("GATEHOUSE_INTEROP_PY_UPSTREAM", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(CLIENT_TIMEOUT, command.output())
        .await
        .map_err(|_| {
            anyhow::anyhow!("client.py {args:?} did not finish within {CLIENT_TIMEOUT:?}")
        })??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "client.py {args:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    Ok(stdout)
}

/// The Python legacy SSE server, killed on drop.
struct PythonUpstream {
    child: Child,
    port: u16,
}

impl PythonUpstream {
    async fn start(python: &Path) -> anyhow::Result<PythonUpstream> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(python)
            .arg(interop_dir().join("upstream.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let upstream = PythonUpstream { child, port };
        wait_until(
            "the Python SSE server listens",
            Duration::from_secs(60),
            || async {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await?;
        Ok(upstream)
    }

    fn sse_url(&self) -> String {
        format!("http://127.0.0.1:{}/sse", self.port)
    }
}

impl Drop for PythonUpstream {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test]
async fn the_python_sdk_uses_the_gateway_over_both_transports() -> anyhow::Result<()> {
    let python = python();
    require_sdk(&python).await?;

    let notes = Upstream::builder("notes")
        .tools([UpstreamTool::new("search"), UpstreamTool::new("sample")])
        .prompts(["summarize"])
        .resources(["memo://insights"])
        .start()
        .await?;
    let py_upstream = PythonUpstream::start(&python).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("docs", ServerSpec::new("notes", &notes.url()))
        .server(
            "docs",
            ServerSpec::new("pyold", &py_upstream.sse_url()).legacy_sse(),
        );
    let token = cfg.token("docs");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;

    for (transport, url) in [
        ("streamable", proxy.ws_url("docs")),
        ("sse", proxy.url("/ws/docs/sse")),
    ] {
        let out = run_client(&python, &[transport, &url, &token]).await?;
        eprintln!("--- Python SDK client over {transport}:\n{out}");
        assert!(
            out.contains(&format!("interop {transport}: all checks passed")),
            "{out}"
        );
    }
    Ok(())
}
