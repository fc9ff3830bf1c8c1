//! A deployment most control-plane tests start from — a control plane, one proxy
//! fed by it, the admin's CLI logged in — and the helpers that read what users see.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatehouse_tests::control_plane::{Cli, CliRun, ControlPlane, GatewayProxy};
use gatehouse_tests::{echo_of, within, McpClient, RawClient, TempDir, STEP_TIMEOUT};
use reqwest::Method;
use rmcp::model::CallToolRequestParams;
use serde_json::Value;

/// What `gatehouse proxies` calls the proxy of a [`Deployment`].
pub const PROXY_NAME: &str = "edge-1";

pub struct Deployment {
    pub cp: ControlPlane,
    pub proxy: GatewayProxy,
    /// The bootstrap admin's CLI, logged in.
    pub admin: Cli,
    /// The proxy's `--state-dir`.
    pub state: TempDir,
}

impl Deployment {
    pub async fn start() -> anyhow::Result<Deployment> {
        let cp = ControlPlane::start().await?;
        let state = TempDir::new("gw-state")?;
        let proxy = GatewayProxy::start_named(
            &cp.api_url(),
            cp.proxy_token(),
            state.path(),
            cp.gateway_ports(),
            PROXY_NAME,
        )
        .await?;
        let admin = Cli::new("admin")?;
        let out = admin
            .login(&cp.api_url(), "admin", cp.admin_credential())
            .await?;
        assert_eq!(out, format!("Logged in as admin at {}.\n", cp.api_url()));
        Ok(Deployment {
            cp,
            proxy,
            admin,
            state,
        })
    }

    /// Waits until the control plane lists the proxy as connected with lag 0 and the
    /// proxy's `/healthz` reports that version; returns it.
    pub async fn synced(&self) -> anyhow::Result<u64> {
        synced(&self.cp, &self.admin, &self.proxy).await
    }
}

/// See [`Deployment::synced`].
pub async fn synced(cp: &ControlPlane, admin: &Cli, proxy: &GatewayProxy) -> anyhow::Result<u64> {
    let token = admin.session_token()?;
    let version = Cell::new(0);
    gatehouse_tests::wait_until(
        &format!(
            "the control plane lists proxy {:?} connected with lag 0",
            proxy.name()
        ),
        STEP_TIMEOUT,
        || async {
            let Ok(answer) = cp
                .request(Method::GET, "/v1/proxies", Some(&token), None)
                .await
            else {
                return false;
            };
            let Some(entry) = proxy_entry(&answer.json().unwrap_or_default(), proxy.name()) else {
                return false;
            };
            let current = entry["config_version"].as_u64().unwrap_or(u64::MAX);
            let caught_up = entry["connected"] == true
                && entry["lag"] == 0
                && entry["version"].as_u64() == Some(current);
            version.set(current);
            caught_up
                && proxy
                    .config_version()
                    .await
                    .is_ok_and(|served| served == current)
        },
    )
    .await?;
    Ok(version.get())
}

/// The entry named `name` in a `/v1/proxies` (or `gatehouse --json proxies`) answer.
pub fn proxy_entry(answer: &Value, name: &str) -> Option<Value> {
    answer["proxies"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// The `mwt_...` token of a "Token: mwt_... (shown once — save this)" line.
pub fn token_in(stdout: &str) -> anyhow::Result<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Token: "))
        .ok_or_else(|| anyhow::anyhow!("no `Token:` line in:\n{stdout}"))?;
    anyhow::ensure!(
        line.ends_with(" (shown once — save this)"),
        "the token line does not say it is shown once: {line:?}"
    );
    let token = line
        .trim_start_matches("Token: ")
        .split(' ')
        .next()
        .unwrap_or_default();
    anyhow::ensure!(
        token.starts_with("mwt_") && token.len() >= 4 + 43,
        "not an mwt_ token of 32+ random bytes: {token:?}"
    );
    Ok(token.to_owned())
}

/// The value after `label` on the line that starts with it (e.g. "Credential: ").
pub fn value_after(stdout: &str, label: &str) -> anyhow::Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {label:?} line in:\n{stdout}"))
}

/// Tool names the gateway lists to `client`.
pub async fn tool_names(client: &McpClient) -> anyhow::Result<Vec<String>> {
    let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    Ok(tools.iter().map(|t| t.name.to_string()).collect())
}

/// Calls `tool` with `arguments` and returns the upstream's echo.
pub async fn call_echo(client: &McpClient, tool: &str, arguments: Value) -> anyhow::Result<Value> {
    let arguments = arguments
        .as_object()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("arguments must be an object"))?;
    let result = within(
        "tools/call",
        STEP_TIMEOUT,
        client
            .peer()
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)),
    )
    .await??;
    echo_of(&result)
}

/// Polls `ping` on an initialized session until the gateway answers 401; returns
/// how long that took from `since`. Fails after `limit`.
pub async fn until_refused(
    session: &RawClient,
    since: Instant,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let deadline = since + limit;
    let mut id = 1_000;
    loop {
        id += 1;
        let response = session.request(id, "ping", serde_json::json!({})).await?;
        if response.status == 401 {
            return Ok(since.elapsed());
        }
        anyhow::ensure!(
            response.status == 200,
            "ping answered {} (expected 200 until refused with 401): {}",
            response.status,
            response.text()
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "the gateway still accepted the token {limit:?} later"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Polls a fresh `initialize` with `token` until it answers `status`.
pub async fn until_initialize_answers(
    url: &str,
    token: &str,
    status: u16,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let client = RawClient::new(url, Some(token));
    loop {
        let response = client.send_initialize().await?;
        if response.status == status {
            return Ok(started.elapsed());
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "initialize still answered {} (not {status}) after {limit:?}: {}",
            response.status,
            response.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The files under `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &str) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for path in files_under(dir)? {
        let bytes = std::fs::read(&path)?;
        if contains(&bytes, needle.as_bytes()) {
            found.push(path);
        }
    }
    Ok(found)
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// Asserts a CLI run failed with `code` and its stderr says `needle`.
pub fn assert_fails(run: &CliRun, code: i32, needle: &str) {
    assert_eq!(run.code, code, "exit code of {run}");
    assert!(
        run.stderr.contains(needle),
        "stderr does not say {needle:?}: {run}"
    );
    assert!(
        run.stdout.is_empty(),
        "a failed run printed to stdout: {run}"
    );
}
