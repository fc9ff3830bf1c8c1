//! Official MCP servers from npm hosted by Gatehouse's runner, as a user would
//! install them: `@modelcontextprotocol/server-filesystem` serving a directory and
//! `@modelcontextprotocol/server-everything` on stdio, run with the pinned Node 22.
//! `scripts/prereqs.sh --tests` installs them (pinned in `tests/hosted`) into
//! `$GATEHOUSE_HOSTED_CACHE` (default `~/.cache/gatehouse-hosted`); without them this
//! test fails, saying so.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use gatehouse_tests::config::random_base62;
use gatehouse_tests::{connect, text_of, within, McpClient, TempDir, STEP_TIMEOUT};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{json, Value};

use crate::fixture::{token_in, tool_names};
use crate::hosted_stdio::{hosting, until_gone};

/// The entry point of an installed npm MCP server.
fn npm_server(package: &str) -> anyhow::Result<PathBuf> {
    let cache = match std::env::var_os("GATEHOUSE_HOSTED_CACHE") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/gatehouse-hosted"),
    };
    let path = cache.join(format!(
        "node_modules/@modelcontextprotocol/{package}/dist/index.js"
    ));
    anyhow::ensure!(
        path.is_file(),
        "the hosted npm test needs {}: run `scripts/prereqs.sh --tests` (./test runs it) to install it",
        path.display()
    );
    Ok(path)
}

async fn call(client: &McpClient, tool: &str, arguments: Value) -> anyhow::Result<CallToolResult> {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    Ok(within(
        tool,
        STEP_TIMEOUT,
        client
            .peer()
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)),
    )
    .await??)
}

/// The process whose command line holds `needle`, and its resident memory.
fn process_with(needle: &str) -> Option<(u32, String)> {
    for entry in std::fs::read_dir("/proc").ok()? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss = status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .unwrap_or_default()
                .to_owned();
            return Some((pid, rss));
        }
    }
    None
}

#[tokio::test]
async fn official_filesystem_and_everything_servers_from_npm_are_hosted() -> anyhow::Result<()> {
    let node = gatehouse_tests::reference::assets()?.node;
    let node = node.to_str().context("node path")?.to_owned();
    let filesystem = npm_server("server-filesystem")?;
    let everything = npm_server("server-everything")?;
    let shared = TempDir::new("hosted-shared")?;
    let notes = shared.path().join("notes.txt");
    std::fs::write(&notes, "hello from a hosted filesystem server\n")?;

    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    let shared_dir = shared.path().to_str().context("temp path")?;
    let fs_entry = filesystem.to_str().context("path")?;
    let everything_entry = everything.to_str().context("path")?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            "--name",
            "fs",
            "--command",
            &node,
            "--arg",
            fs_entry,
            "--arg",
            shared_dir,
            "-w",
            "engineering",
        ])
        .await?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            "--name",
            "everything",
            "--command",
            &node,
            "--arg",
            everything_entry,
            "--arg",
            "stdio",
            "-w",
            "engineering",
        ])
        .await?;
    let secret = format!("tok_{}", random_base62(24));
    d.admin
        .ok(&[
            "secrets",
            "set",
            "everything",
            "EVERYTHING_TOKEN",
            &secret,
            "-w",
            "engineering",
        ])
        .await?;
    d.synced().await?;

    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    let names = tool_names(&client).await?;
    for name in [
        "fs__read_file",
        "fs__read_text_file",
        "everything__get-env",
        "everything__echo",
    ] {
        assert!(
            names.iter().any(|n| n == name),
            "{name} is not listed: {names:?}"
        );
    }
    let path = notes.to_str().context("path")?;
    for tool in ["fs__read_file", "fs__read_text_file"] {
        let read = call(&client, tool, json!({"path": path})).await?;
        assert_ne!(read.is_error, Some(true), "{tool}: {read:?}");
        assert_eq!(
            text_of(&read),
            "hello from a hosted filesystem server\n",
            "{tool}"
        );
    }
    // The server's own rule holds through the gateway: nothing outside its directory.
    let outside = call(
        &client,
        "fs__read_text_file",
        json!({"path": "/etc/hostname"}),
    )
    .await?;
    assert_eq!(outside.is_error, Some(true), "{outside:?}");
    assert!(text_of(&outside).contains("Access denied"), "{outside:?}");

    let echoed = call(
        &client,
        "everything__echo",
        json!({"message": "through the runner"}),
    )
    .await?;
    assert!(
        text_of(&echoed).contains("through the runner"),
        "{echoed:?}"
    );
    let env: BTreeMap<String, String> = serde_json::from_str(&text_of(
        &call(&client, "everything__get-env", json!({})).await?,
    ))?;
    assert_eq!(env.get("EVERYTHING_TOKEN"), Some(&secret));
    assert!(
        env.get("HOME")
            .is_some_and(|h| h.ends_with("/runner/engineering/everything")),
        "{env:?}"
    );
    let unexpected: Vec<&String> = env
        .keys()
        .filter(|k| {
            ![
                "PATH",
                "HOME",
                "EVERYTHING_TOKEN",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD",
            ]
            .contains(&k.as_str())
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "more than the minimal environment: {unexpected:?}"
    );
    assert!(
        !d.cp.log().contains(&secret),
        "the secret is in the control plane's log"
    );

    let (fs_pid, fs_rss) = process_with(fs_entry).context("no filesystem server process")?;
    let (everything_pid, everything_rss) =
        process_with(everything_entry).context("no everything server process")?;
    eprintln!("server-filesystem pid {fs_pid}: {fs_rss}; server-everything pid {everything_pid}: {everything_rss}");

    client.cancel().await?;
    d.admin
        .ok(&["mcp", "remove", "fs", "-w", "engineering"])
        .await?;
    until_gone(fs_pid, "the removed filesystem server exits").await?;
    assert!(
        crate::hosted_stdio::running(everything_pid),
        "removing fs stopped everything too"
    );
    Ok(())
}
