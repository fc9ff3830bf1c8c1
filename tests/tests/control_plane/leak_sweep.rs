//! The secrets-leak sweep: distinctive secret values and workspace tokens go through
//! the whole product as a user runs it (`gatehouse up`: control plane, proxy and
//! runner, logging at debug level) — calls, errors, a bad token, an upstream that
//! dies and comes back, a hosted server that crashes, a rotated secret pushed as a
//! new config, audit shipping, metric scrapes — and then every place they could have
//! escaped to is read: every log line, both metric pages, the admin API and CLI
//! answers, the audit events, every file under the data directory (database, proxy
//! state, journal, spool) and the command line of every process. None may hold a
//! secret value or a raw token. Each place is also checked to hold what it should
//! (the upstream got the secret, the log is at debug level, the audit has the calls),
//! so the sweep cannot pass by reading nothing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use gatehouse_tests::config::random_base62;
use gatehouse_tests::control_plane::{free_addr, gatehouse_binary, Cli};
use gatehouse_tests::{
    connect, text_of, wait_until, within, TempDir, Upstream, UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};
use tokio::io::AsyncBufReadExt;

use crate::fixture::{bytes_of, contains, files_under, token_in};

const FIXTURE: &str = env!("CARGO_BIN_EXE_gatehouse-stdio-fixture");
const LAST_LINE: &str = "Ctrl-C stops everything.";
const WS: &str = "leaky";

#[tokio::test]
async fn no_secret_or_token_escapes_anywhere() -> anyhow::Result<()> {
    let data = TempDir::new("sweep-data")?;
    let logs = TempDir::new("sweep-logs")?;
    let log_path = logs.path().join("up.log");
    let cli = Cli::new("sweep")?;
    let (api, listen, admin) = (free_addr()?, free_addr()?, free_addr()?);
    let log_file = std::fs::File::create(&log_path)?;
    let mut up = tokio::process::Command::new(gatehouse_binary()?)
        .args(["up", "--data-dir"])
        .arg(data.path())
        .args(["--api-listen", &api.to_string()])
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .env("GATEHOUSE_CLI_CONFIG", cli.config_path())
        .env("RUST_LOG", "debug")
        .env_remove("GATEHOUSE_DATA_DIR")
        .env_remove("GATEHOUSE_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(up.stdout.take().expect("piped")).lines();
    let mut printed = Vec::new();
    within("gatehouse up starts", Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            let last = line.trim() == LAST_LINE;
            printed.push(line);
            if last {
                return Ok(());
            }
        }
        anyhow::bail!(
            "gatehouse up ended early:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    })
    .await??;
    // What it prints later goes to the log with the rest.
    let stdout_rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push(line);
        }
        rest.join("\n")
    });

    // The secrets and tokens the sweep looks for, each distinctive.
    let wiki_secret = format!("wikisecret_{}", random_base62(24));
    let rotated_secret = format!("wikirotated_{}", random_base62(24));
    let hosted_secret = format!("hostedsecret_{}", random_base62(24));
    let alice = token_in(&cli.ok(&["workspace", "create", "Leaky"]).await?)?;
    let bob = token_in(
        &cli.ok(&["workspace", "token", "create", WS, "--name", "Bob"])
            .await?,
    )?;
    let wrong = format!("mwt_{}", random_base62(43));

    let mut wiki = Upstream::start("wiki", wiki_tools()).await?;
    let wiki_addr = wiki.addr();
    let mut answers: Vec<String> = Vec::new();
    answers.push(
        cli.ok(&[
            "mcp",
            "install",
            &wiki.url(),
            "--name",
            "wiki",
            "-w",
            WS,
            "--header",
            "Authorization: Bearer {{secrets.WIKI_TOKEN}}",
        ])
        .await?,
    );
    answers.push(
        cli.ok(&[
            "secrets",
            "set",
            "wiki",
            "WIKI_TOKEN",
            &wiki_secret,
            "-w",
            WS,
        ])
        .await?,
    );
    answers.push(
        cli.ok(&[
            "mcp",
            "install",
            "--name",
            "fx",
            "--command",
            FIXTURE,
            "-w",
            WS,
        ])
        .await?,
    );
    answers.push(
        cli.ok(&["secrets", "set", "fx", "API_KEY", &hosted_secret, "-w", WS])
            .await?,
    );

    // Calls that work, through the proxy's debug-level request path.
    let url = format!("http://{listen}/ws/{WS}");
    let client = within("the proxy serves the workspace", STEP_TIMEOUT, async {
        loop {
            if let Ok(client) = connect(&url, &alice).await {
                let tools = client.peer().list_all_tools().await?;
                if tools.iter().any(|t| t.name == "wiki__echo")
                    && tools.iter().any(|t| t.name == "fx__env")
                {
                    return anyhow::Ok(client);
                }
                client.cancel().await?;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await??;
    call(&client, "wiki__echo", json!({"text": "hello"})).await?;
    let env = call(&client, "fx__env", json!({"name": "API_KEY"})).await?;
    assert!(
        env.contains(&hosted_secret),
        "the hosted server did not get its secret: {env}"
    );
    assert!(
        wiki.requests()
            .iter()
            .any(|r| r.header("authorization") == Some(format!("Bearer {wiki_secret}").as_str())),
        "the wiki never got its secret: the sweep would look for nothing"
    );
    let bobs = connect(&url, &bob).await?;
    call(&bobs, "wiki__fail", json!({"text": "a tool error"})).await?;
    bobs.cancel().await?;

    // Errors: a wrong token, an unknown tool, an upstream that dies, a hosted crash.
    let http = reqwest::Client::builder().no_proxy().build()?;
    let refused = http
        .post(&url)
        .bearer_auth(&wrong)
        .header("Accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await?;
    assert_eq!(refused.status(), 401);
    answers.push(refused.text().await?);
    assert!(call(&client, "wiki__nope", json!({})).await.is_err());
    wiki.stop().await;
    let dead = call(&client, "wiki__echo", json!({"text": "anyone?"})).await;
    assert!(dead.is_err(), "a stopped upstream answered: {dead:?}");
    let crashed = call(&client, "fx__crash", json!({})).await;
    assert!(crashed.is_err(), "a crashing server answered: {crashed:?}");
    let wiki = Upstream::builder("wiki")
        .listen_on(wiki_addr)
        .tools(wiki_tools())
        .start()
        .await?;
    client.cancel().await?;

    // A rotated secret is a new config version pushed to the proxy.
    answers.push(
        cli.ok(&[
            "secrets",
            "set",
            "wiki",
            "WIKI_TOKEN",
            &rotated_secret,
            "-w",
            WS,
        ])
        .await?,
    );
    wait_until("the rotated secret reaches the wiki", STEP_TIMEOUT, || {
        let (url, alice, wiki, rotated) = (&url, &alice, &wiki, &rotated_secret);
        async move {
            let Ok(client) = connect(url, alice).await else {
                return false;
            };
            let _ = call(&client, "wiki__echo", json!({"text": "again"})).await;
            let _ = client.cancel().await;
            wiki.requests()
                .iter()
                .any(|r| r.header("authorization") == Some(format!("Bearer {rotated}").as_str()))
        }
    })
    .await?;

    // Audit shipping: the calls reach the control plane's store.
    let audit = within("the calls reach the audit log", STEP_TIMEOUT, async {
        loop {
            if let Ok(events) = cli
                .json(&["workspace", "audit", WS, "--action", "tool_call"])
                .await
            {
                if events["events"].as_array().is_some_and(|e| e.len() >= 5) {
                    return events;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await?;
    answers.push(audit.to_string());
    answers.push(cli.ok(&["workspace", "audit", WS]).await?);

    // Metrics of the proxy and of the control plane.
    for page in [
        format!("http://{admin}/metrics"),
        format!("http://{api}/metrics"),
    ] {
        let text = http.get(&page).send().await?.text().await?;
        assert!(text.contains("gatehouse_"), "{page}: {text}");
        answers.push(text);
    }
    // What the admin API and the CLI show.
    let jwt = cli.session_token()?;
    for path in [
        "/v1/workspaces".to_string(),
        format!("/v1/workspaces/{WS}"),
        format!("/v1/workspaces/{WS}/servers"),
        format!("/v1/workspaces/{WS}/secrets"),
        format!("/v1/workspaces/{WS}/tokens"),
        format!("/v1/workspaces/{WS}/audit"),
        "/v1/proxies".to_string(),
    ] {
        let answer = http
            .get(format!("http://{api}{path}"))
            .bearer_auth(&jwt)
            .send()
            .await?;
        assert_eq!(answer.status(), 200, "{path}");
        answers.push(answer.text().await?);
    }
    for args in [
        &["mcp", "list", "-w", WS][..],
        &["secrets", "list", "-w", WS],
        &["workspace", "token", "list", WS],
        &["proxies"],
    ] {
        answers.push(cli.ok(args).await?);
        answers.push(cli.json(args).await?.to_string());
    }

    // Every process's command line, while they run.
    let pid = up.id().expect("running");
    let mut cmdlines = Vec::new();
    for p in std::iter::once(pid).chain(descendants(pid)) {
        if let Ok(bytes) = std::fs::read(format!("/proc/{p}/cmdline")) {
            cmdlines.push((p, String::from_utf8_lossy(&bytes).replace('\0', " ")));
        }
    }
    assert!(
        cmdlines.iter().any(|(_, c)| c.contains("gatehouse-proxy")),
        "no proxy among {cmdlines:?}"
    );
    assert!(
        cmdlines.iter().any(|(_, c)| c.contains(FIXTURE)),
        "no hosted process among {cmdlines:?}"
    );

    // Stop it, so the logs and files are complete.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    assert!(term.success());
    let status = within("gatehouse up stops", STEP_TIMEOUT, up.wait()).await??;
    assert!(status.success(), "gatehouse up exited {status}");
    let log = format!(
        "{}\n{}\n{}",
        printed.join("\n"),
        stdout_rest.await?,
        std::fs::read_to_string(&log_path)?
    );
    assert!(
        log.contains("DEBUG"),
        "the log is not at debug level: the sweep reads too little"
    );
    let files = files_under(data.path())?;
    for expected in ["gatehouse.db", "proxy"] {
        assert!(
            files.iter().any(|f| f
                .strip_prefix(data.path())
                .is_ok_and(|r| r.starts_with(expected))),
            "no {expected} under {}: {files:?}",
            data.path().display()
        );
    }

    let needles = [
        ("the wiki's secret", wiki_secret.as_str()),
        ("the wiki's rotated secret", rotated_secret.as_str()),
        ("the hosted server's secret", hosted_secret.as_str()),
        ("Alice's token", alice.as_str()),
        ("Bob's token", bob.as_str()),
        ("the wrong token presented", wrong.as_str()),
    ];
    let mut leaks = Vec::new();
    for (what, needle) in needles {
        // The random part too: a value logged without its prefix is still leaked.
        let tail = &needle[needle.len() - 20..];
        for text in [needle, tail] {
            if log.contains(text) {
                leaks.push(format!("{what} is in the log: {}", line_with(&log, text)));
            }
            for answer in &answers {
                if answer.contains(text) {
                    leaks.push(format!("{what} came back: {}", line_with(answer, text)));
                }
            }
            for (p, cmdline) in &cmdlines {
                if cmdline.contains(text) {
                    leaks.push(format!("{what} is on the command line of {p}: {cmdline}"));
                }
            }
            for file in &files {
                if contains(&bytes_of(file)?, text.as_bytes()) {
                    leaks.push(format!("{what} is in {}", relative(file, data.path())));
                }
            }
        }
    }
    assert!(leaks.is_empty(), "leaks:\n{}", leaks.join("\n"));
    Ok(())
}

fn wiki_tools() -> [UpstreamTool; 2] {
    [UpstreamTool::new("echo"), UpstreamTool::new("fail")]
}

/// Calls `tool` and returns its text; a JSON-RPC error or a tool error is an error.
async fn call(
    client: &gatehouse_tests::McpClient,
    tool: &str,
    arguments: Value,
) -> anyhow::Result<String> {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    let result = within(
        tool,
        STEP_TIMEOUT,
        client
            .peer()
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)),
    )
    .await??;
    let text = text_of(&result);
    if result.is_error == Some(true) && tool != "wiki__fail" {
        anyhow::bail!("{tool} answered a tool error: {text}");
    }
    Ok(text)
}

/// Every process below `pid`, from `/proc/<p>/stat`'s parent field.
fn descendants(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The command may hold spaces and parentheses: the fields follow the last ')'.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|f| f.parse().ok()) {
            parents.push((p, ppid));
        }
    }
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    found.remove(0);
    found
}

fn line_with(text: &str, needle: &str) -> String {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_default()
        .chars()
        .take(400)
        .collect()
}

fn relative(file: &Path, root: &Path) -> String {
    file.strip_prefix(root)
        .map(PathBuf::from)
        .unwrap_or_else(|_| file.to_path_buf())
        .display()
        .to_string()
}
