//! Stdio MCP servers Gatehouse hosts itself (`mcp install --command ...`): installed
//! from the CLI, started by the control plane's runner on first use with a minimal
//! environment and the server's secrets as variables, reached by real MCP clients
//! through a real proxy like any other server, and stopped, restarted or replaced
//! as the server's life goes on. The server is `gatehouse-stdio-fixture`, an rmcp
//! server on its stdio transport (see `tests/src/bin`).

use gatehouse_tests::config::random_base62;
use gatehouse_tests::control_plane::{Cli, ControlPlane, GatewayProxy};
use gatehouse_tests::metrics::sample;
use gatehouse_tests::{
    connect, connect_as, wait_until, CallOutcome, McpClient, RawClient, RawResponse, TempDir,
    STEP_TIMEOUT,
};
use reqwest::Method;
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};

use crate::fixture::{
    assert_fails, call_echo, database_args, token_in, tool_names, value_after, Deployment,
    PROXY_NAME,
};

const FIXTURE: &str = env!("CARGO_BIN_EXE_gatehouse-stdio-fixture");

/// A deployment whose control plane gets `args` (runner flags) too.
pub(crate) async fn hosting(args: &[&str]) -> anyhow::Result<Deployment> {
    let mut all: Vec<String> = database_args()?;
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let cp = ControlPlane::start_with_args(&all).await?;
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
    admin
        .login(&cp.api_url(), "admin", cp.admin_credential())
        .await?;
    Ok(Deployment {
        cp,
        proxy,
        admin,
        state,
    })
}

/// `mcp install --name NAME --command FIXTURE --arg ... -w engineering`.
async fn install_fixture(d: &Deployment, name: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut cli = vec![
        "mcp",
        "install",
        "--name",
        name,
        "--command",
        FIXTURE,
        "-w",
        "engineering",
    ];
    for arg in args {
        cli.push("--arg");
        cli.push(arg);
    }
    d.admin.ok(&cli).await
}

async fn call(client: &McpClient, tool: &str, arguments: Value) -> CallOutcome {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    let call = client
        .peer()
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments));
    match tokio::time::timeout(STEP_TIMEOUT, call).await {
        Ok(outcome) => outcome.into(),
        Err(_) => CallOutcome::Failed(format!("{tool} timed out")),
    }
}

async fn pid_of(client: &McpClient, tool: &str) -> anyhow::Result<u32> {
    let pid = call_echo(client, tool, json!({})).await?["pid"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("{tool} returned no pid"))?;
    Ok(pid as u32)
}

pub(crate) fn running(pid: u32) -> bool {
    // A zombie is gone for our purposes: it runs nothing and holds no memory.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

pub(crate) async fn until_gone(pid: u32, what: &str) -> anyhow::Result<()> {
    wait_until(what, STEP_TIMEOUT, || async move { !running(pid) }).await
}

async fn env_var(client: &McpClient, name: &str) -> anyhow::Result<Value> {
    Ok(call_echo(client, "fx__env", json!({"name": name})).await?["value"].clone())
}

async fn api_key(client: &McpClient) -> anyhow::Result<Value> {
    Ok(call_echo(client, "fx__env", json!({"name": "API_KEY"})).await?["value"].clone())
}

async fn cp_metrics(d: &Deployment) -> anyhow::Result<String> {
    let answer = d.cp.request(Method::GET, "/metrics", None, None).await?;
    anyhow::ensure!(answer.status == 200, "/metrics: {}", answer.status);
    Ok(answer.body)
}

#[tokio::test]
async fn a_hosted_stdio_server_is_called_like_any_other_with_its_secrets_in_its_environment(
) -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    let installed = d
        .admin
        .ok(&[
            "mcp",
            "install",
            "--name",
            "fx",
            "--command",
            FIXTURE,
            "--arg",
            "--say-env",
            "--arg",
            "API_KEY",
            "--env",
            "GREETING=hello there",
            "-w",
            "engineering",
        ])
        .await?;
    assert_eq!(
        installed,
        format!(
            "Installed fx in engineering.\n\
             Gatehouse runs it when a client first uses it: {FIXTURE} --say-env API_KEY\n\
             Its secrets reach it as environment variables: gatehouse secrets set fx NAME VALUE --workspace engineering\n"
        )
    );
    let secret = format!("sk_{}", random_base62(32));
    d.admin
        .ok(&[
            "secrets",
            "set",
            "fx",
            "API_KEY",
            &secret,
            "-w",
            "engineering",
        ])
        .await?;
    let listing = d.admin.ok(&["mcp", "list", "-w", "engineering"]).await?;
    assert!(
        listing.lines().any(|l| l.starts_with("fx ")
            && l.contains(&format!("{FIXTURE} --say-env API_KEY"))
            && l.contains("stdio")
            && l.contains("API_KEY")),
        "mcp list:\n{listing}"
    );
    let listed = d.admin.json(&["mcp", "list", "-w", "engineering"]).await?;
    assert_eq!(listed["servers"][0]["command"], FIXTURE);
    assert_eq!(
        listed["servers"][0]["args"],
        json!(["--say-env", "API_KEY"])
    );
    assert_eq!(
        listed["servers"][0]["env"],
        json!({"GREETING": "hello there"})
    );
    assert_eq!(
        sample(
            &cp_metrics(&d).await?,
            "gatehouse_control_plane_hosted_processes",
            &[]
        ),
        Some(0.0),
        "nothing runs before a client uses it"
    );

    d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    let mut names = tool_names(&client).await?;
    names.sort();
    assert_eq!(
        names,
        [
            "fx__changed",
            "fx__crash",
            "fx__echo",
            "fx__env",
            "fx__pid",
            "fx__progress",
            "fx__sample",
            "fx__slow"
        ]
    );
    assert_eq!(
        call_echo(&client, "fx__echo", json!({"a": [1, 2]})).await?,
        json!({"a": [1, 2]})
    );
    // A body near the gateway's 4 MiB limit passes the runner and the process's pipe.
    let big = "x".repeat(3 * 1024 * 1024);
    let echoed = call_echo(&client, "fx__echo", json!({"big": big})).await?;
    assert_eq!(echoed["big"].as_str().map(str::len), Some(big.len()));
    let env = |name: &'static str| {
        let client = &client;
        async move {
            anyhow::Ok(call_echo(client, "fx__env", json!({"name": name})).await?["value"].clone())
        }
    };
    assert_eq!(env("API_KEY").await?, json!(secret));
    assert_eq!(env("GREETING").await?, json!("hello there"));
    let home = env("HOME").await?;
    assert!(
        home.as_str()
            .is_some_and(|h| h.ends_with("/runner/engineering/fx")),
        "HOME is the server's own directory: {home}"
    );
    // The minimal environment: nothing of the control plane's own.
    assert_eq!(env("GATEHOUSE_PROXY_TOKEN").await?, Value::Null);
    assert_eq!(env("GATEHOUSE_CLI_CONFIG").await?, Value::Null);

    let pid = pid_of(&client, "fx__pid").await?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let words: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    assert_eq!(words, [FIXTURE, "--say-env", "API_KEY"]);
    // Its limits: no core dumps (they would hold its secrets), 4096 open files.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let limit = |name: &str| -> Vec<String> {
        limits
            .lines()
            .find(|l| l.starts_with(name))
            .map(|l| {
                l[name.len()..]
                    .split_whitespace()
                    .take(2)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(limit("Max core file size"), ["0", "0"], "{limits}");
    assert_eq!(limit("Max open files")[0], "4096", "{limits}");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_default();
    eprintln!("hosted fixture process {pid}: {rss}");

    // One process for every session.
    let other = connect(&d.proxy.ws_url("engineering"), &token).await?;
    assert_eq!(pid_of(&other, "fx__pid").await?, pid);
    other.cancel().await?;
    let metrics = cp_metrics(&d).await?;
    assert_eq!(
        sample(&metrics, "gatehouse_control_plane_hosted_processes", &[]),
        Some(1.0),
        "{metrics}"
    );

    // Its stderr is in the control plane's log, its secret redacted; the secret is
    // in no log.
    let log = d.cp.log();
    assert!(
        log.contains("fx: API_KEY=<redacted>"),
        "the server's stderr is not in the log, redacted:\n{log}"
    );
    assert!(
        !log.contains(&secret),
        "the secret is in the control plane's log"
    );
    assert!(
        !d.proxy.log().contains(&secret),
        "the secret is in the proxy's log"
    );

    // Removing the server stops its process.
    client.cancel().await?;
    d.admin
        .ok(&["mcp", "remove", "fx", "-w", "engineering"])
        .await?;
    until_gone(pid, "the removed server's process exits").await?;
    wait_until(
        "the control plane counts no hosted process",
        STEP_TIMEOUT,
        || async {
            cp_metrics(&d).await.is_ok_and(|m| {
                sample(&m, "gatehouse_control_plane_hosted_processes", &[]) == Some(0.0)
            })
        },
    )
    .await?;
    assert!(
        !d.cp.data_dir().join("runner/engineering/fx").exists(),
        "the removed server's directory is left behind"
    );
    Ok(())
}

#[tokio::test]
async fn two_sessions_using_the_same_request_ids_get_their_own_answers() -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    d.synced().await?;
    let url = d.proxy.ws_url("engineering");
    let mut a = RawClient::new(&url, Some(&token));
    let mut b = RawClient::new(&url, Some(&token));
    a.initialize().await?;
    b.initialize().await?;
    for round in 0..5u64 {
        let id = 7 + round;
        // The first answers last: the runner must not hand it to the other caller.
        let (first, second) = tokio::join!(
            a.call_tool(
                id,
                "fx__slow",
                json!({"ms": 300, "who": "a", "round": round})
            ),
            b.call_tool(
                id,
                "fx__slow",
                json!({"ms": 10, "who": "b", "round": round})
            ),
        );
        let (first, second) = (first?, second?);
        assert_eq!(first.message()?["id"], json!(id), "{}", first.text());
        assert_eq!(second.message()?["id"], json!(id), "{}", second.text());
        assert_eq!(
            first.tool_echo()?,
            json!({"ms": 300, "who": "a", "round": round})
        );
        assert_eq!(
            second.tool_echo()?,
            json!({"ms": 10, "who": "b", "round": round})
        );
    }
    Ok(())
}

/// The JSON-RPC messages of an event-stream reply, in order.
fn messages_of(reply: &RawResponse) -> Vec<Value> {
    reply
        .text()
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|data| serde_json::from_str(data.trim()).ok())
        .collect()
}

#[tokio::test]
async fn progress_reaches_the_call_that_asked_for_it_with_its_own_token() -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    d.synced().await?;
    let url = d.proxy.ws_url("engineering");
    let mut a = RawClient::new(&url, Some(&token));
    let mut b = RawClient::new(&url, Some(&token));
    a.initialize().await?;
    b.initialize().await?;
    // The same request id and the same progress token in both sessions, at once.
    let ask = |who: &str| {
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "fx__progress", "arguments": {"who": who, "steps": 4},
            "_meta": {"progressToken": "p-1"},
        }})
    };
    let (for_a, for_b) = (ask("a"), ask("b"));
    let (ra, rb) = tokio::join!(a.send_json(&for_a), b.send_json(&for_b));
    for (who, reply) in [("a", ra?), ("b", rb?)] {
        let messages = messages_of(&reply);
        let progress: Vec<&Value> = messages
            .iter()
            .filter(|m| m["method"] == "notifications/progress")
            .collect();
        let said: Vec<&str> = progress
            .iter()
            .filter_map(|m| m["params"]["message"].as_str())
            .collect();
        assert_eq!(
            said,
            (1..=4)
                .map(|n| format!("{who} step {n}"))
                .collect::<Vec<_>>(),
            "{who}: {}",
            reply.text()
        );
        assert!(
            progress
                .iter()
                .all(|m| m["params"]["progressToken"] == "p-1"),
            "{who}: the caller's own token comes back: {}",
            reply.text()
        );
        let last = messages.last().cloned().unwrap_or_default();
        assert_eq!(last["id"], 3, "{who}: {}", reply.text());
        assert_eq!(reply.tool_echo()?, json!({"who": who, "steps": 4}), "{who}");
    }
    Ok(())
}

#[tokio::test]
async fn a_crash_mid_call_is_a_clear_error_and_the_next_call_starts_it_again() -> anyhow::Result<()>
{
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    let before = pid_of(&client, "fx__pid").await?;

    // A call in flight when another crashes the process fails too, saying so.
    let (slow, crash) = tokio::join!(
        call(&client, "fx__slow", json!({"ms": 20_000})),
        call(&client, "fx__crash", json!({"ms": 200})),
    );
    for (tool, outcome) in [("fx__slow", slow), ("fx__crash", crash)] {
        match outcome {
            CallOutcome::JsonRpcError(error) => {
                assert_eq!(error.code.0, -32603, "{tool}: {error:?}");
                assert!(
                    error
                        .message
                        .contains("hosted server fx exited (exit status: 3)"),
                    "{tool}: {error:?}"
                );
            }
            other => panic!("{tool} should fail with a JSON-RPC error: {other:?}"),
        }
    }
    until_gone(before, "the crashed process is gone").await?;

    // The same session goes on: the runner starts the server again.
    let after = pid_of(&client, "fx__pid").await?;
    assert_ne!(after, before);
    assert_eq!(
        call_echo(&client, "fx__echo", json!({"still": "here"})).await?,
        json!({"still": "here"})
    );
    let metrics = cp_metrics(&d).await?;
    assert_eq!(
        sample(
            &metrics,
            "gatehouse_control_plane_hosted_crashes_total",
            &[("server", "fx")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "gatehouse_control_plane_hosted_restarts_total",
            &[("server", "fx")]
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        d.cp.log().contains("hosted server exited"),
        "the crash is not in the log"
    );
    Ok(())
}

#[tokio::test]
async fn servers_that_cannot_start_say_why_and_leave_the_others_alone() -> anyhow::Result<()> {
    let d = hosting(&["--runner-start-timeout", "2"]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "good", &[]).await?;
    install_fixture(&d, "garbage", &["--garbage"]).await?;
    install_fixture(&d, "mute", &["--mute"]).await?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            "--name",
            "missing",
            "--command",
            "/nonexistent/mcp-server",
            "-w",
            "engineering",
        ])
        .await?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    let mut names = tool_names(&client).await?;
    names.sort();
    assert_eq!(
        names,
        [
            "good__changed",
            "good__crash",
            "good__echo",
            "good__env",
            "good__pid",
            "good__progress",
            "good__sample",
            "good__slow"
        ]
    );
    assert_eq!(
        call_echo(&client, "good__echo", json!({"ok": true})).await?,
        json!({"ok": true})
    );
    let log = d.cp.log();
    for said in [
        "hosted server garbage wrote something that is not JSON-RPC on stdout before answering initialize: \"starting up... this line is not JSON-RPC\"",
        "hosted server mute did not answer initialize within 2 s",
        "hosted server missing exited (exit status: 127) before answering initialize; it said on stderr:",
    ] {
        assert!(log.contains(said), "the log does not say {said:?}:\n{log}");
    }
    Ok(())
}

#[tokio::test]
async fn new_secrets_replace_the_process_idle_ones_stop_and_a_deleted_workspace_takes_its_servers(
) -> anyhow::Result<()> {
    let d = hosting(&["--runner-idle-stop", "2"]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    d.admin
        .ok(&[
            "secrets",
            "set",
            "fx",
            "API_KEY",
            "first-value",
            "-w",
            "engineering",
        ])
        .await?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    let first = pid_of(&client, "fx__pid").await?;
    assert_eq!(api_key(&client).await?, json!("first-value"));

    d.admin
        .ok(&[
            "secrets",
            "set",
            "fx",
            "API_KEY",
            "second-value",
            "-w",
            "engineering",
        ])
        .await?;
    until_gone(first, "the process started with the old secret stops").await?;
    d.synced().await?;
    assert_eq!(api_key(&client).await?, json!("second-value"));
    let second = pid_of(&client, "fx__pid").await?;
    assert_ne!(second, first);

    // No call for 2 s: stopped; the next call starts it again.
    until_gone(second, "the idle process stops").await?;
    let third = pid_of(&client, "fx__pid").await?;
    assert_ne!(third, second);
    assert!(running(third));

    client.cancel().await?;
    d.admin
        .ok(&["workspace", "delete", "engineering", "--yes"])
        .await?;
    until_gone(third, "the deleted workspace's server stops").await?;
    Ok(())
}

#[tokio::test]
async fn install_takes_a_url_or_a_command_and_says_what_is_wrong() -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    d.admin.ok(&["workspace", "create", "Engineering"]).await?;
    let jwt = d.admin.session_token()?;
    let path = "/v1/workspaces/engineering/servers";
    for (body, says) in [
        (
            json!({"url": "http://127.0.0.1:9/mcp", "command": "npx", "slug": "x"}),
            "give url (a server reached over HTTP) or command (a stdio server Gatehouse runs), not both",
        ),
        (
            json!({"slug": "x"}),
            "give url (a server reached over HTTP) or command (a stdio server Gatehouse runs)",
        ),
        (
            json!({"command": "npx", "env": {"1BAD": "x"}, "slug": "x"}),
            "environment variable name \"1BAD\" must match ^[A-Za-z_][A-Za-z0-9_]*$",
        ),
        (
            json!({"command": "npx", "headers": {"X": "y"}, "slug": "x"}),
            "headers apply to servers reached by url",
        ),
        (
            json!({"command": "npx", "transport": "sse", "slug": "x"}),
            "transport \"sse\" does not go with command",
        ),
        (
            json!({"url": "http://127.0.0.1:9/mcp", "args": ["-y"], "slug": "x"}),
            "args and env apply to stdio servers (command)",
        ),
    ] {
        let answer = d
            .cp
            .request(Method::POST, path, Some(&jwt), Some(&body))
            .await?;
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(
            answer.body.contains(&says.replace('"', "\\\"")),
            "{body}: {} does not say {says:?}",
            answer.body
        );
    }
    let run = d
        .admin
        .run(&["mcp", "install", "--command", "npx", "--header", "X: y"])
        .await?;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains("--header does not apply to a stdio server"),
        "{run}"
    );
    let run = d
        .admin
        .run(&["mcp", "install", "http://127.0.0.1:9/mcp", "--arg", "-y"])
        .await?;
    assert_eq!(run.code, 1, "{run}");
    assert!(
        run.stderr
            .contains("--arg applies to a stdio server (--command), not to http://127.0.0.1:9/mcp"),
        "{run}"
    );
    // Only an admin may: the command runs as the control plane's user.
    let created = d
        .admin
        .ok(&["user", "create", "bob", "--email", "bob@example.com"])
        .await?;
    let bob = Cli::new("bob")?;
    bob.login(
        &d.cp.api_url(),
        "bob",
        &value_after(&created, "Credential: ")?,
    )
    .await?;
    bob.ok(&["workspace", "create", "Bobs"]).await?;
    let refused = bob
        .run(&["mcp", "install", "--command", "sh", "-w", "bobs"])
        .await?;
    assert_fails(
        &refused,
        2,
        "only an admin may install a stdio server: Gatehouse runs its command on the control plane's machine",
    );
    // A member of the admin's team works in its workspaces, but may not set what
    // becomes a hosted server's environment.
    let invited = d.admin.ok(&["team", "invite", "bob@example.com"]).await?;
    let code = invited
        .split_whitespace()
        .find(|w| w.starts_with("inv_"))
        .ok_or_else(|| anyhow::anyhow!("no join code in:\n{invited}"))?;
    bob.ok(&["team", "accept", code]).await?;
    install_fixture(&d, "fx", &[]).await?;
    let refused = bob
        .run(&[
            "secrets",
            "set",
            "fx",
            "LD_PRELOAD",
            "/tmp/x.so",
            "-w",
            "engineering",
        ])
        .await?;
    assert_fails(
        &refused,
        2,
        "only an admin may set the secrets of \"fx\": they become the environment of a command",
    );
    // The Hub's stdio packages install as hosted servers, for admins only.
    let refused = bob
        .run(&["mcp", "install", "@gatehouse/memory", "-w", "bobs"])
        .await?;
    assert_fails(
        &refused,
        2,
        "only an admin may install @gatehouse/memory: it is a stdio server",
    );
    let from_hub = d
        .admin
        .ok(&["mcp", "install", "@gatehouse/memory", "-w", "engineering"])
        .await?;
    assert!(from_hub.contains("@gatehouse/memory"), "{from_hub}");
    let listed = d.admin.json(&["mcp", "list", "-w", "engineering"]).await?;
    let memory = listed["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["slug"] == "memory"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(memory["transport"], "stdio", "{listed}");
    assert_eq!(memory["command"], "npx", "{listed}");
    assert_eq!(
        memory["args"],
        json!(["-y", "@modelcontextprotocol/server-memory"])
    );
    assert_eq!(memory["env"], json!({"MEMORY_FILE_PATH": "memory.jsonl"}));
    // Without --name, the slug comes from the command's file name.
    let installed = d
        .admin
        .json(&[
            "mcp",
            "install",
            "--command",
            "/usr/local/bin/My_Server",
            "-w",
            "engineering",
        ])
        .await?;
    assert_eq!(installed["server"]["slug"], "my-server");
    assert_eq!(installed["server"]["transport"], "stdio");
    assert_eq!(installed["server"]["url"], "");
    Ok(())
}

#[tokio::test]
async fn a_restarted_control_plane_hosts_its_servers_again_where_proxies_find_them(
) -> anyhow::Result<()> {
    let mut d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    let before = d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    let first = pid_of(&client, "fx__pid").await?;

    // Killed outright: the process it hosted sees its stdin close and exits.
    d.cp.restart().await?;
    until_gone(first, "the killed control plane's hosted process exits").await?;
    // The runner listens on another port now: a new config version says where.
    let after = d.synced().await?;
    assert!(
        after > before,
        "no new config version ({before} -> {after})"
    );
    let second = pid_of(&client, "fx__pid").await?;
    assert_ne!(second, first);
    Ok(())
}

#[tokio::test]
async fn changing_what_a_stdio_server_runs_replaces_its_process() -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    d.admin
        .ok(&[
            "mcp",
            "install",
            "--name",
            "fx",
            "--command",
            FIXTURE,
            "--env",
            "GREETING=one",
            "-w",
            "engineering",
        ])
        .await?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    assert_eq!(env_var(&client, "GREETING").await?, json!("one"));
    let first = pid_of(&client, "fx__pid").await?;

    let changed = d
        .admin
        .ok(&["mcp", "env", "fx", "GREETING=two", "-w", "engineering"])
        .await?;
    assert!(
        changed.contains(&format!("Runs: {FIXTURE}\nEnvironment: GREETING\n")),
        "{changed}"
    );
    until_gone(first, "the process with the old environment stops").await?;
    d.synced().await?;
    assert_eq!(env_var(&client, "GREETING").await?, json!("two"));
    let second = pid_of(&client, "fx__pid").await?;

    d.admin
        .ok(&[
            "mcp",
            "command",
            "fx",
            "-w",
            "engineering",
            FIXTURE,
            "--say-env",
            "GREETING",
        ])
        .await?;
    until_gone(second, "the process with the old command line stops").await?;
    d.synced().await?;
    let third = pid_of(&client, "fx__pid").await?;
    let cmdline = std::fs::read_to_string(format!("/proc/{third}/cmdline"))?;
    assert_eq!(cmdline, format!("{FIXTURE}\0--say-env\0GREETING\0"));
    assert_eq!(env_var(&client, "GREETING").await?, json!("two"));
    assert!(d.cp.log().contains("fx: GREETING=two"), "{}", d.cp.log());

    // The same change of a server reached by URL is refused, saying why.
    d.admin
        .ok(&[
            "mcp",
            "install",
            "http://127.0.0.1:9/mcp",
            "--name",
            "remote",
            "--transport",
            "streamable-http",
            "-w",
            "engineering",
        ])
        .await?;
    let refused = d
        .admin
        .run(&["mcp", "env", "remote", "A=b", "-w", "engineering"])
        .await?;
    assert_fails(
        &refused,
        2,
        "command, args and env apply to stdio servers; \"remote\" is reached by url",
    );
    let audit = d.admin.ok(&["workspace", "audit", "engineering"]).await?;
    assert_eq!(
        audit.lines().filter(|l| l.contains("command_set")).count(),
        2,
        "{audit}"
    );
    Ok(())
}

#[tokio::test]
async fn a_hosted_servers_request_to_the_client_is_answered_by_the_client_of_that_call(
) -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    d.synced().await?;
    let client = connect_as(&d.proxy.ws_url("engineering"), &token).await?;
    let arguments = json!({"prompt": "what is a gateway?"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let result = tokio::time::timeout(
        STEP_TIMEOUT,
        client
            .peer()
            .call_tool(CallToolRequestParams::new("fx__sample").with_arguments(arguments)),
    )
    .await??;
    let sampled = gatehouse_tests::echo_of(&result)?;
    assert_eq!(
        sampled["sampled"]["content"]["text"], "sampled: what is a gateway?",
        "{sampled}"
    );
    let asked = client.service().requests("sampling/createMessage");
    assert_eq!(asked.len(), 1, "{asked:?}");
    Ok(())
}

#[tokio::test]
async fn a_hosted_servers_list_change_reaches_the_clients_stream() -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    d.synced().await?;
    let watching = connect_as(&d.proxy.ws_url("engineering"), &token).await?;
    let caller = connect(&d.proxy.ws_url("engineering"), &token).await?;
    // The watching client's stream is open once the gateway has opened the runner's.
    let mut announced = 0;
    wait_until(
        "the watching client hears notifications/tools/list_changed",
        STEP_TIMEOUT,
        || {
            announced += 1;
            let caller = &caller;
            let watching = &watching;
            async move {
                // Announced again until heard: the streams open while this runs.
                let _ = call_echo(caller, "fx__changed", json!({})).await;
                !watching
                    .service()
                    .notifications("notifications/tools/list_changed")
                    .is_empty()
            }
        },
    )
    .await?;
    assert!(announced >= 1);
    Ok(())
}

#[tokio::test]
async fn a_disabled_server_stops_and_keeps_its_directory_a_removed_one_loses_it(
) -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "fx", &[]).await?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    let pid = pid_of(&client, "fx__pid").await?;
    let dir = d.cp.data_dir().join("runner/engineering/fx");
    std::fs::write(dir.join("memory.jsonl"), "what the server keeps\n")?;

    d.admin
        .ok(&["mcp", "disable", "fx", "-w", "engineering"])
        .await?;
    until_gone(pid, "the disabled server's process exits").await?;
    assert!(dir.join("memory.jsonl").exists(), "disabling lost its data");
    d.admin
        .ok(&["mcp", "enable", "fx", "-w", "engineering"])
        .await?;
    d.synced().await?;
    let again = pid_of(&client, "fx__pid").await?;
    assert_ne!(again, pid);
    assert!(dir.join("memory.jsonl").exists());

    client.cancel().await?;
    d.admin
        .ok(&["mcp", "remove", "fx", "-w", "engineering"])
        .await?;
    until_gone(again, "the removed server's process exits").await?;
    wait_until("its directory is deleted", STEP_TIMEOUT, || async {
        !dir.exists()
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_chatty_servers_stderr_is_logged_at_a_bounded_rate() -> anyhow::Result<()> {
    let d = hosting(&[]).await?;
    let token = token_in(&d.admin.ok(&["workspace", "create", "Engineering"]).await?)?;
    install_fixture(&d, "chatty", &["--chatty", "2000"]).await?;
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("engineering"), &token).await?;
    assert_eq!(
        call_echo(&client, "chatty__echo", json!({"ok": 1})).await?,
        json!({"ok": 1})
    );
    wait_until(
        "the log counts the stderr lines it left out",
        STEP_TIMEOUT,
        || async { d.cp.log().contains("stderr lines not logged") },
    )
    .await?;
    let logged = d.cp.log().matches("chatty: chatty line").count();
    assert!(
        (20..2000).contains(&logged),
        "{logged} of 2000 stderr lines logged"
    );
    Ok(())
}
