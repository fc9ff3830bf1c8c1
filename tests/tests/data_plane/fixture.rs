//! The standard gateway most data-plane tests start from, and small helpers.
//!
//! Workspace `eng` has `notes` and `github` (configured in that order, so listing must
//! sort them) and a disabled `archive`; workspace `ops` has `pager`. `github` gets
//! `Authorization: Bearer ghp_secret` and denies `delete_*`; `notes` gets
//! `X-Notes-Key: notes-k3y`.

use gatehouse_tests::{
    within, CallOutcome, ConfigBuilder, McpClient, Proxy, ServerSpec, TokenSpec, Upstream,
    UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::Value;

/// What `eng` exposes, in the order tools/list must return it.
pub const ENG_TOOLS: [&str; 6] = [
    "github__create_issue",
    "github__list_issues",
    "github__slow",
    "notes__search",
    "notes__write_note",
    "notes__echo_size",
];

/// An `initialize` request body (protocol 2025-06-18).
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"gatehouse-tests","version":"1.0.0"}}}"#;

pub const GITHUB_SECRET: &str = "ghp_secret";
pub const NOTES_SECRET: &str = "notes-k3y";
pub const ALLOWED_ORIGIN: &str = "https://app.example.com";

pub struct Gateway {
    pub proxy: Proxy,
    pub cfg: ConfigBuilder,
    pub github: Upstream,
    pub notes: Upstream,
    pub archive: Upstream,
    pub pager: Upstream,
    /// Valid tokens of `eng`.
    pub alice: String,
    pub bob: String,
    /// Tokens of `eng` that must be refused.
    pub expired: String,
    pub revoked: String,
    /// A valid token of `ops`.
    pub carol: String,
}

impl Gateway {
    /// The standard gateway, running.
    pub async fn start() -> anyhow::Result<Gateway> {
        Self::start_with(|_| {}).await
    }

    /// The standard gateway with `adjust` applied to its config before the proxy starts.
    pub async fn start_with(adjust: impl FnOnce(&mut ConfigBuilder)) -> anyhow::Result<Gateway> {
        let github = Upstream::start(
            "github",
            [
                UpstreamTool::new("create_issue").description("Open an issue"),
                UpstreamTool::new("list_issues").read_only(true),
                UpstreamTool::new("delete_repo"),
                UpstreamTool::new("slow").read_only(true),
            ],
        )
        .await?;
        let notes = Upstream::start(
            "notes",
            [
                UpstreamTool::new("search").read_only(true),
                UpstreamTool::new("write_note"),
                UpstreamTool::new("echo_size").read_only(true),
            ],
        )
        .await?;
        let archive = Upstream::start("archive", [UpstreamTool::new("restore")]).await?;
        let pager = Upstream::start("pager", [UpstreamTool::new("page")]).await?;

        let mut cfg = ConfigBuilder::new()?;
        cfg.server("eng", notes_spec(&notes))
            .server("eng", github_spec(&github))
            .server("eng", ServerSpec::new("archive", &archive.url()).disabled())
            .server("ops", ServerSpec::new("pager", &pager.url()))
            .allow_origin(ALLOWED_ORIGIN);
        let alice = cfg.token_with("eng", TokenSpec::named("alice"));
        let bob = cfg.token_with("eng", TokenSpec::named("bob"));
        let expired = cfg.token_with("eng", TokenSpec::expired("expired"));
        let revoked = cfg.token_with("eng", TokenSpec::revoked("revoked"));
        let carol = cfg.token_with("ops", TokenSpec::named("carol"));
        adjust(&mut cfg);
        cfg.write()?;
        let proxy = Proxy::start(cfg.path()).await?;
        Ok(Gateway {
            proxy,
            cfg,
            github,
            notes,
            archive,
            pager,
            alice,
            bob,
            expired,
            revoked,
            carol,
        })
    }

    pub fn eng_url(&self) -> String {
        self.proxy.ws_url("eng")
    }

    /// Every upstream of the fixture, for assertions over all of them.
    pub fn upstreams(&self) -> [&Upstream; 4] {
        [&self.github, &self.notes, &self.archive, &self.pager]
    }
}

pub fn github_spec(github: &Upstream) -> ServerSpec {
    ServerSpec::new("github", &github.url())
        .header("Authorization", "Bearer {{secrets.GITHUB_TOKEN}}")
        .secret("GITHUB_TOKEN", GITHUB_SECRET)
        .deny(&["delete_*"])
}

pub fn notes_spec(notes: &Upstream) -> ServerSpec {
    ServerSpec::new("notes", &notes.url())
        .header("X-Notes-Key", "{{secrets.NOTES_KEY}}")
        .secret("NOTES_KEY", NOTES_SECRET)
}

/// `value` as tool arguments.
pub fn args(value: Value) -> rmcp::model::JsonObject {
    value.as_object().cloned().expect("arguments are an object")
}

/// The names tools/list returns, through the rmcp client (all pages).
pub async fn tool_names(client: &McpClient) -> anyhow::Result<Vec<String>> {
    let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    Ok(tools.into_iter().map(|t| t.name.into_owned()).collect())
}

/// tools/call through the rmcp client; a JSON-RPC error is an `Err`.
pub async fn call(
    client: &McpClient,
    name: &str,
    arguments: Value,
) -> anyhow::Result<CallToolResult> {
    let params = CallToolRequestParams::new(name.to_owned()).with_arguments(args(arguments));
    Ok(within(
        &format!("tools/call {name}"),
        STEP_TIMEOUT,
        client.peer().call_tool(params),
    )
    .await??)
}

/// tools/call through the rmcp client, telling a JSON-RPC error apart from a
/// transport failure.
pub async fn try_call(
    client: &McpClient,
    name: &str,
    arguments: Value,
) -> anyhow::Result<CallOutcome> {
    let params = CallToolRequestParams::new(name.to_owned()).with_arguments(args(arguments));
    let outcome = within(
        &format!("tools/call {name}"),
        STEP_TIMEOUT,
        client.peer().call_tool(params),
    )
    .await?;
    Ok(CallOutcome::from(outcome))
}

/// The `field` of each item in a list result's `items` array, in order.
pub fn names(result: &Value, items: &str, field: &str) -> Vec<String> {
    result[items]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i[field].as_str().map(str::to_owned))
        .collect()
}
