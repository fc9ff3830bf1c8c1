//! Interop with another implementation: the Python MCP SDK (PyPI `mcp`, pinned in
//! `tests/interop/run.sh`, installed into a venv the script creates). Its
//! Streamable HTTP client and its legacy `sse_client` drive a real proxy — list
//! tools, call one (answering a sampling request mid-call), read a resource, get a
//! prompt — in a workspace with an rmcp server and a legacy SSE server written with
//! the same Python SDK. Skipped, with a message, only when `python3` is missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use gatehouse_tests::{wait_until, ConfigBuilder, Proxy, ServerSpec, Upstream, UpstreamTool};
use tokio::process::{Child, Command};

/// Creating the venv downloads the SDK the first time.
const SETUP_TIMEOUT: Duration = Duration::from_secs(600);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("interop/run.sh")
}

fn python3_available() -> bool {
    std::process::Command::new("python3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `run.sh args...` to the end; fails with its output unless it succeeds.
async fn run(args: &[&str], limit: Duration) -> anyhow::Result<String> {
    let mut command = Command::new(script());
    command.args(args).kill_on_drop(true);
    if args.first() == Some(&"client") {
        command.env("GATEHOUSE_INTEROP_PY_UPSTREAM", "1");
    }
    let output = tokio::time::timeout(limit, command.output())
        .await
        .map_err(|_| anyhow::anyhow!("run.sh {args:?} did not finish within {limit:?}"))??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "run.sh {args:?} failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
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
    async fn start() -> anyhow::Result<PythonUpstream> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(script())
            .args(["upstream", &port.to_string()])
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
    if !python3_available() {
        eprintln!("SKIPPED: python3 is not installed, so the Python SDK interop test cannot run");
        return Ok(());
    }
    run(&["setup"], SETUP_TIMEOUT).await?;

    let notes = Upstream::builder("notes")
        .tools([UpstreamTool::new("search"), UpstreamTool::new("sample")])
        .prompts(["summarize"])
        .resources(["memo://insights"])
        .start()
        .await?;
    let python = PythonUpstream::start().await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("docs", ServerSpec::new("notes", &notes.url()))
        .server(
            "docs",
            ServerSpec::new("pyold", &python.sse_url()).legacy_sse(),
        );
    let token = cfg.token("docs");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;

    for (transport, url) in [
        ("streamable", proxy.ws_url("docs")),
        ("sse", proxy.url("/ws/docs/sse")),
    ] {
        let out = run(&["client", transport, &url, &token], CLIENT_TIMEOUT).await?;
        eprintln!("--- Python SDK client over {transport}:\n{out}");
        assert!(
            out.contains(&format!("interop {transport}: all checks passed")),
            "{out}"
        );
    }
    Ok(())
}
