//! The end-to-end harness: real MCP servers, a real `gatehouse-proxy` process and real
//! MCP clients, so tests assert on what a user of the gateway would observe.
//!
//! - [`Upstream`]: an rmcp Streamable HTTP server with a chosen set of tools that echo
//!   what they receive and record every HTTP request (headers included).
//! - [`ConfigBuilder`]: writes the snapshot file the proxy reads, and rewrites it
//!   atomically for hot-reload tests.
//! - [`Proxy`]: the `gatehouse-proxy` binary as a child process, ready once `/healthz`
//!   answers.
//! - [`client`]: the rmcp client, for ordinary flows.
//! - [`raw`]: [`RawClient`], for protocol details (status codes, headers, exact JSON-RPC
//!   bodies); [`wire`] reads SSE and HTTP/1.1 replies for it, [`events`] long-lived
//!   event streams.
//! - [`legacy_client`]: [`LegacySession`], a hand-driven legacy HTTP+SSE client; an
//!   [`Upstream`] can also speak legacy SSE (`Upstream::builder(..).legacy_sse()`).
//! - [`broken`]: [`BrokenUpstream`], the one server that is deliberately not a real MCP
//!   peer: it sends garbage on its event stream, for the bad-input tests.
//! - [`faulty`]: [`FaultyUpstream`], the other one: it fails each `tools/call` in one
//!   of the ways a real server fails ([`Fault`]), for the fault-injection tests;
//!   [`Proxy::usage`] samples what the proxy process holds meanwhile.
//!
//! Nothing here sleeps to synchronise: [`wait_until`] polls a condition with a deadline.

pub mod balancer;
pub mod broken;
pub mod client;
pub mod config;
pub mod control_plane;
pub mod deployment;
pub mod events;
pub mod faulty;
pub mod forwarder;
pub mod http_target;
pub mod legacy_client;
mod legacy_sse;
pub mod metrics;
pub mod modern;
pub mod postgres;
pub mod proxy;
pub mod raw;
pub mod reference;
pub mod replica_set;
pub mod upstream;
pub mod wire;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use broken::BrokenUpstream;
pub use client::{
    connect, connect_as, connect_upstream, echo_of, text_of, Answering, AnsweringClient,
    CallOutcome, McpClient,
};
pub use config::{ConfigBuilder, ServerSpec, TokenSpec};
pub use events::{Event, EventStream};
pub use faulty::{Fault, FaultyUpstream};
pub use legacy_client::LegacySession;
pub use proxy::{Health, ProcessUsage, Proxy};
pub use raw::{RawClient, RawPost, RawResponse};
pub use upstream::{RecordedCall, RecordedRequest, Upstream, UpstreamBuilder, UpstreamTool};

/// How long one test step may take before the harness calls it a hang.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `fut`, failing with `what` if it does not finish within `limit`.
pub async fn within<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `check` until it returns true, failing with `what` after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if check().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {limit:?} waiting until {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// A directory under the system temp dir, removed with everything in it on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "gatehouse-{label}-{}-{}",
            std::process::id(),
            config::random_base62(10)
        ));
        std::fs::create_dir_all(&path)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
