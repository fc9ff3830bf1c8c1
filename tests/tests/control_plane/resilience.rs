//! The proxy without its control plane: it keeps serving, restarts from its
//! encrypted disk copy, and catches up when the control plane comes back. And
//! `gatehouse serve` stopped the way containers are stopped.

use std::time::Duration;

use gatehouse_tests::config::random_base62;
use gatehouse_tests::control_plane::GatewayProxy;
use gatehouse_tests::{connect, Upstream, UpstreamTool};
use serde_json::json;

use crate::fixture::{
    assert_fails, call_echo, files_containing, files_under, proxy_entry, token_in, tool_names,
    until_initialize_answers, PROXY_NAME,
};

/// The proxy retries with a backoff of at most 5 s; this leaves room for a slow machine.
const RECONNECT_LIMIT: Duration = Duration::from_secs(30);

/// Lists and calls `search__query` with `token`; the upstream must see `key`.
async fn serves(
    proxy: &GatewayProxy,
    upstream: &Upstream,
    token: &str,
    key: &str,
) -> anyhow::Result<()> {
    let client = connect(&proxy.ws_url("research"), token).await?;
    assert_eq!(tool_names(&client).await?, ["search__query"]);
    let q = random_base62(8);
    assert_eq!(
        call_echo(&client, "search__query", json!({"q": q})).await?,
        json!({"server": "search", "tool": "query", "arguments": {"q": q}})
    );
    client.cancel().await?;
    let call = upstream
        .requests_for("tools/call")
        .into_iter()
        .last()
        .ok_or_else(|| anyhow::anyhow!("the upstream got no tools/call"))?;
    assert_eq!(call.header("x-api-key"), Some(key));
    Ok(())
}

#[tokio::test]
async fn proxy_serves_without_its_control_plane_and_catches_up() -> anyhow::Result<()> {
    let mut d = crate::fixture::deployment().await?;
    let created = d.admin.ok(&["workspace", "create", "Research"]).await?;
    let token = token_in(&created)?;
    let search = Upstream::start("search", [UpstreamTool::new("query")]).await?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            &search.url(),
            "--name",
            "search",
            "--workspace",
            "research",
            "--header",
            "X-Api-Key: {{secrets.API_KEY}}",
        ])
        .await?;
    let key = format!("sk-live-{}", random_base62(24));
    d.admin
        .ok(&[
            "secrets",
            "set",
            "search",
            "API_KEY",
            &key,
            "--workspace",
            "research",
        ])
        .await?;
    let version = d.synced().await?;
    serves(&d.proxy, &search, &token, &key).await?;

    // Control plane gone: the proxy keeps serving what it has.
    d.cp.kill();
    serves(&d.proxy, &search, &token, &key).await?;
    let unreachable = d.admin.run(&["workspace", "list"]).await?;
    assert_fails(
        &unreachable,
        3,
        &format!("cannot reach the control plane at {}", d.cp.api_url()),
    );

    // Proxy restarted while the control plane is down: it serves its disk copy.
    d.proxy.restart().await?;
    assert_eq!(d.proxy.config_version().await?, version);
    serves(&d.proxy, &search, &token, &key).await?;

    // That copy holds neither the secret nor a token in plaintext.
    let files = files_under(d.state.path())?;
    assert!(
        files.iter().any(|f| f.ends_with("snapshot.enc")),
        "no snapshot copy in the state dir: {files:?}"
    );
    for needle in [key.as_str(), token.as_str(), &token["mwt_".len()..]] {
        assert_eq!(
            files_containing(d.state.path(), needle)?,
            Vec::<std::path::PathBuf>::new(),
            "state dir files holding {needle:?} in plaintext"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let snapshot = d.state.path().join("snapshot.enc");
    let mode = std::fs::metadata(&snapshot)?.permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is mode {mode:o}", snapshot.display());

    // Control plane back: the proxy reconnects and enforces what changed since.
    d.cp.restart().await?;
    let later = token_in(
        &d.admin
            .ok(&[
                "workspace",
                "token",
                "create",
                "research",
                "--name",
                "After Restart",
            ])
            .await?,
    )?;
    let took =
        until_initialize_answers(&d.proxy.ws_url("research"), &later, 200, RECONNECT_LIMIT).await?;
    println!("control plane restart -> new token accepted by the proxy after {took:?}");
    serves(&d.proxy, &search, &later, &key).await?;
    let current = d.synced().await?;
    assert!(current > version);
    let proxies = d.admin.json(&["proxies"]).await?;
    let entry = proxy_entry(&proxies, PROXY_NAME)
        .ok_or_else(|| anyhow::anyhow!("{PROXY_NAME} not in `gatehouse proxies`: {proxies}"))?;
    assert_eq!(entry["connected"], true, "{entry}");
    assert_eq!(entry["lag"], 0, "{entry}");
    let table = d.admin.ok(&["proxies"]).await?;
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with(PROXY_NAME))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        row.get(..5),
        Some(
            &[
                PROXY_NAME,
                &current.to_string(),
                &current.to_string(),
                "0",
                "yes"
            ][..]
        ),
        "{table}"
    );

    // Neither process logged the secret or a token.
    for (who, log) in [("control plane", d.cp.log()), ("proxy", d.proxy.log())] {
        for needle in [&key, &token, &later] {
            assert!(
                !log.contains(needle.as_str()),
                "the {who} logged {needle:?}"
            );
        }
    }
    Ok(())
}

/// `docker stop` and Kubernetes send SIGTERM; in a container `serve` is process 1,
/// for which the kernel has no default action on it, so only a handler stops it
/// (else it is killed after the grace period). Outside a container a handled
/// SIGTERM is told apart by the exit: status 0, not "killed by signal 15".
#[tokio::test]
async fn serve_stops_cleanly_on_sigterm() -> anyhow::Result<()> {
    let mut cp = crate::fixture::control_plane().await?;
    let status = cp.stop().await?;
    assert!(
        status.success(),
        "gatehouse serve exited with {status} on SIGTERM"
    );
    Ok(())
}
