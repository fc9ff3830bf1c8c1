//! The helpers control-plane tests read what users see with; the deployment they
//! start from is the harness's [`Deployment`], its store on the engine the test
//! binary names in `crate::STORE` (`control_plane` runs the tests on SQLite,
//! `control_plane_postgres` the same tests on PostgreSQL).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gatehouse_tests::control_plane::{CliRun, ControlPlane};
pub use gatehouse_tests::deployment::{proxy_entry, token_in, Deployment, PROXY_NAME};
use gatehouse_tests::{echo_of, within, McpClient, RawClient, STEP_TIMEOUT};
use rmcp::model::CallToolRequestParams;
use serde_json::Value;

/// A control plane with its store on this test binary's engine.
pub async fn control_plane() -> anyhow::Result<ControlPlane> {
    ControlPlane::start_on(crate::STORE).await
}

/// A [`Deployment`] with its store on this test binary's engine.
pub async fn deployment() -> anyhow::Result<Deployment> {
    Deployment::start_on(crate::STORE).await
}

/// The `--database URL` arguments of a new store on this test binary's engine (none
/// for the embedded default), for tests that start `gatehouse` themselves.
pub fn database_args() -> anyhow::Result<Vec<String>> {
    Ok(match crate::STORE.new_database()? {
        Some(url) => vec!["--database".to_owned(), url],
        None => vec![],
    })
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
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            // Removed since it was listed (see `bytes_of`).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
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
        let bytes = bytes_of(&path)?;
        if contains(&bytes, needle.as_bytes()) {
            found.push(path);
        }
    }
    Ok(found)
}

/// A file's bytes; empty when it is gone since it was listed (PostgreSQL recycles
/// its write-ahead log segments while other tests write): what is gone holds nothing.
pub fn bytes_of(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
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
