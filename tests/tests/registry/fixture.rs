//! The deployment every registry test starts from — `gatehouse serve`, one
//! `gatehouse-proxy` fed by it, and four people each with their own CLI state file:
//! the bootstrap admin, who creates `acme`, `alice` (alice@acme.com) and `mallory` —
//! plus manifests written to disk and the helpers that read what users see.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use gatehouse_tests::control_plane::{gatehouse_binary, Cli, CliRun, ControlPlane, GatewayProxy};
pub use gatehouse_tests::deployment::{synced, token_in};
use gatehouse_tests::{connect, text_of, within, McpClient, TempDir, STEP_TIMEOUT};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{json, Value};

pub const ALICE_EMAIL: &str = "alice@acme.com";
pub const MALLORY_EMAIL: &str = "mallory@evil.example";

pub struct Registry {
    pub cp: ControlPlane,
    pub proxy: GatewayProxy,
    pub admin: Cli,
    pub acme: Cli,
    pub alice: Cli,
    pub mallory: Cli,
    /// The proxy's `--state-dir`.
    _state: TempDir,
    /// Where manifests are written, one directory per package.
    manifests: TempDir,
}

impl Registry {
    pub async fn start() -> anyhow::Result<Registry> {
        let cp = ControlPlane::start().await?;
        let state = TempDir::new("registry-gw-state")?;
        let proxy = GatewayProxy::start_named(
            &cp.api_url(),
            cp.proxy_token(),
            state.path(),
            cp.gateway_ports(),
            "registry-edge",
        )
        .await?;
        let admin = Cli::admin_of(&cp).await?;
        let acme = user(&cp, &admin, "acme", "ops@acme.com").await?;
        let alice = user(&cp, &admin, "alice", ALICE_EMAIL).await?;
        let mallory = user(&cp, &admin, "mallory", MALLORY_EMAIL).await?;
        Ok(Registry {
            cp,
            proxy,
            admin,
            acme,
            alice,
            mallory,
            _state: state,
            manifests: TempDir::new("registry-manifests")?,
        })
    }

    /// Writes `manifest` as `<dir>/gatehouse.json` in a directory of its own and
    /// returns that directory.
    pub fn write_manifest(&self, dir: &str, manifest: &Value) -> anyhow::Result<PathBuf> {
        self.write_manifest_text(dir, &serde_json::to_string_pretty(manifest)?)
    }

    pub fn write_manifest_text(&self, dir: &str, text: &str) -> anyhow::Result<PathBuf> {
        let dir = self.manifests.path().join(dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("gatehouse.json"), text)?;
        Ok(dir)
    }

    /// `gatehouse skill publish FLAGS` run by `who` in a directory holding `manifest`
    /// as `gatehouse.json`, the way the seeds publish.
    pub async fn publish(
        &self,
        who: &Cli,
        dir: &str,
        manifest: &Value,
        flags: &[&str],
    ) -> anyhow::Result<CliRun> {
        let dir = self.write_manifest(dir, manifest)?;
        let mut args = vec!["skill", "publish"];
        args.extend_from_slice(flags);
        run_in(who, &dir, &args).await
    }

    /// acme invites alice, who accepts; returns what `team accept` printed.
    pub async fn alice_joins_acme(&self) -> anyhow::Result<String> {
        let invited = self.acme.ok(&["team", "invite", ALICE_EMAIL]).await?;
        let code = join_code(&invited)?;
        self.alice.ok(&["team", "accept", &code]).await
    }

    /// Creates workspace `slug` for `who` and returns its first token.
    pub async fn workspace(&self, who: &Cli, slug: &str) -> anyhow::Result<String> {
        token_in(
            &who.ok(&["workspace", "create", slug, "--slug", slug])
                .await?,
        )
    }

    /// Waits until the proxy serves the control plane's current config.
    pub async fn synced(&self) -> anyhow::Result<u64> {
        synced(&self.cp, &self.admin, &self.proxy).await
    }

    /// An rmcp client on workspace `slug` through the proxy, once it serves the
    /// current config.
    pub async fn client(&self, slug: &str, token: &str) -> anyhow::Result<McpClient> {
        self.synced().await?;
        connect(&self.proxy.ws_url(slug), token).await
    }
}

/// The admin creates `name`, who logs in with their own CLI.
async fn user(cp: &ControlPlane, admin: &Cli, name: &str, email: &str) -> anyhow::Result<Cli> {
    let created = admin
        .ok(&["user", "create", name, "--email", email])
        .await?;
    let credential = value_after(&created, "Credential: ")?;
    let cli = Cli::new(name)?;
    cli.login(&cp.api_url(), name, &credential).await?;
    Ok(cli)
}

/// `gatehouse ARGS` as `who`, with `dir` as the current directory.
pub async fn run_in(who: &Cli, dir: &Path, args: &[&str]) -> anyhow::Result<CliRun> {
    let mut command = tokio::process::Command::new(gatehouse_binary()?);
    command
        .args(args)
        .current_dir(dir)
        .env("GATEHOUSE_CLI_CONFIG", who.config_path())
        .env_remove("GATEHOUSE_API")
        .env_remove("GATEHOUSE_CREDENTIAL")
        .env_remove("GATEHOUSE_DATA_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let output = within(
        &format!("gatehouse {}", args.join(" ")),
        STEP_TIMEOUT,
        command.output(),
    )
    .await??;
    Ok(CliRun {
        args: args.iter().map(|a| a.to_string()).collect(),
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// The `inv_...` code in `team invite`'s "gatehouse team accept CODE" line.
pub fn join_code(invited: &str) -> anyhow::Result<String> {
    invited
        .split_whitespace()
        .find(|w| w.starts_with("inv_"))
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no join code in `team invite` output:\n{invited}"))
}

/// The word after `label` on the line that starts with it.
pub fn value_after(stdout: &str, label: &str) -> anyhow::Result<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split(' ').next())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no {label:?} line in:\n{stdout}"))
}

/// The rows of a table the CLI printed (header line dropped), split on whitespace.
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The first column of every row.
pub fn first_column(table: &str) -> Vec<String> {
    rows(table)
        .into_iter()
        .filter_map(|r| r.into_iter().next())
        .collect()
}

/// The row whose first column is `key`.
pub fn row(table: &str, key: &str) -> Option<Vec<String>> {
    rows(table)
        .into_iter()
        .find(|r| r.first().is_some_and(|k| k == key))
}

/// Asserts a CLI run failed with `code`, printed `stderr` exactly and nothing on stdout.
pub fn assert_refused(run: &CliRun, code: i32, stderr: &str) {
    assert_eq!(run.code, code, "exit code of {run}");
    assert_eq!(run.stderr, stderr, "stderr of {run}");
    assert!(
        run.stdout.is_empty(),
        "a refused run printed to stdout: {run}"
    );
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

/// Tool names the gateway lists to `client`.
pub async fn tool_names(client: &McpClient) -> anyhow::Result<Vec<String>> {
    let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    Ok(tools.iter().map(|t| t.name.to_string()).collect())
}

/// Calls `tool` with `arguments`; a JSON-RPC error is an `Err`.
pub async fn call(
    client: &McpClient,
    tool: &str,
    arguments: Value,
) -> anyhow::Result<CallToolResult> {
    let arguments = arguments
        .as_object()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("arguments must be an object"))?;
    let result = within(
        &format!("tools/call {tool}"),
        STEP_TIMEOUT,
        client
            .peer()
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)),
    )
    .await?
    .map_err(|e| anyhow::anyhow!("tools/call {tool} answered a JSON-RPC error: {e}"))?;
    Ok(result)
}

/// The text of a tool result that must be a tool error (`isError: true`).
pub fn tool_error_text(tool: &str, result: &CallToolResult) -> String {
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} should have returned a tool error: {result:?}"
    );
    text_of(result)
}

/// The text of a tool result that must have succeeded.
pub fn tool_ok_text(tool: &str, result: &CallToolResult) -> String {
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} returned a tool error: {result:?}"
    );
    text_of(result)
}

/// A `skill` manifest with one tool per `(name, request, input_schema)`.
pub fn skill_manifest(name: &str, version: &str, tools: Vec<Value>) -> Value {
    json!({
        "name": name, "type": "skill", "version": version,
        "description": format!("The {name} skill"), "category": "other",
        "tags": [name], "tools": tools,
    })
}

/// The CRM skill the seeds publish, calling `base` (the recording target):
/// `lookup_customer` GETs `/api/customers/{id}?expand=orders` with the CRM token,
/// `add_note` POSTs a JSON body built from its arguments.
pub fn crm_manifest(name: &str, version: &str, base: &str) -> Value {
    json!({
        "name": name, "type": "skill", "version": version,
        "description": "Look up customers in the internal CRM",
        "category": "productivity", "tags": ["crm", "customers"],
        "secrets": [{"name": "CRM_TOKEN", "description": "CRM API token"}],
        "tools": [
            {"name": "lookup_customer", "description": "Fetch a customer record by id",
             "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
             "read_only": true,
             "request": {"method": "GET",
                         "url": format!("{base}/api/customers/{{{{args.id}}}}?expand=orders"),
                         "headers": {"Authorization": "Bearer {{secrets.CRM_TOKEN}}",
                                     "X-Crm-Client": "gatehouse {{args.id}}"}},
             "response": {"pointer": "/data"}},
            {"name": "add_note", "description": "Attach a note to a customer",
             "input_schema": {"type": "object",
                              "properties": {"id": {"type": "string"}, "text": {"type": "string"},
                                             "priority": {"type": "integer"}},
                              "required": ["id", "text"]},
             "request": {"method": "POST",
                         "url": format!("{base}/api/customers/{{{{args.id}}}}/notes"),
                         "headers": {"Authorization": "Bearer {{secrets.CRM_TOKEN}}"},
                         "body": {"text": "{{args.text}}", "priority": "{{args.priority}}",
                                  "source": "gatehouse for {{args.id}}"}}}
        ]
    })
}
