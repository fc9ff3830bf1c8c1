//! `gatehouse up --demo`, the README's first command: what it prints works the moment
//! it is printed, and Ctrl-C (here SIGTERM) stops it and its proxy.

use std::process::Stdio;
use std::time::Duration;

use gatehouse_tests::control_plane::{free_addr, gatehouse_binary, Cli};
use gatehouse_tests::{connect, text_of, within, TempDir, STEP_TIMEOUT};
use rmcp::model::CallToolRequestParams;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The last line `gatehouse up` prints before it just runs.
const LAST_LINE: &str = "Ctrl-C stops everything.";

/// Release builds of both binaries start in well under a second; a debug build on a
/// busy two-core machine, migrations included, needs more.
const START_LIMIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn gatehouse_up_demo_serves_what_it_prints_at_once() -> anyhow::Result<()> {
    let data = TempDir::new("up-data")?;
    let cli = Cli::new("up")?;
    let (api, listen, admin) = (free_addr()?, free_addr()?, free_addr()?);
    let mut up = tokio::process::Command::new(gatehouse_binary()?)
        .args(["up", "--demo", "--data-dir"])
        .arg(data.path())
        .args(["--api-listen", &api.to_string()])
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .args(crate::fixture::database_args()?)
        .env("GATEHOUSE_CLI_CONFIG", cli.config_path())
        .env_remove("GATEHOUSE_DATA_DIR")
        .env_remove("GATEHOUSE_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(up.stdout.take().expect("piped")).lines();
    let mut printed = Vec::new();
    let finished = within("gatehouse up prints its last line", START_LIMIT, async {
        while let Some(line) = lines.next_line().await? {
            let last = line.trim() == LAST_LINE;
            printed.push(line);
            if last {
                return Ok(());
            }
        }
        anyhow::bail!("gatehouse up ended its output early")
    })
    .await;
    let output = printed.join("\n");
    finished
        .and_then(|r| r)
        .map_err(|e| anyhow::anyhow!("{e}\n--- printed:\n{output}"))?;

    // The editor config block it prints, used as printed and without waiting.
    let start = output
        .find("{\n")
        .ok_or_else(|| anyhow::anyhow!("no config block in:\n{output}"))?;
    let end = output
        .rfind("\n}")
        .ok_or_else(|| anyhow::anyhow!("no config block in:\n{output}"))?;
    let block: Value = serde_json::from_str(&output[start..end + 2])?;
    let demo = &block["mcpServers"]["demo"];
    let url = demo["url"].as_str().expect("url");
    assert_eq!(url, format!("http://{listen}/ws/demo"));
    let bearer = demo["headers"]["Authorization"]
        .as_str()
        .expect("Authorization");
    let token = bearer.strip_prefix("Bearer ").expect("a bearer token");
    assert!(
        output.contains(&format!("Token: {token} (shown once")),
        "{output}"
    );

    let client = connect(url, token).await?;
    let mut names: Vec<String> = client
        .peer()
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["demo__add", "demo__current_time", "demo__echo"]);
    let mut arguments = serde_json::Map::new();
    arguments.insert("text".into(), json!("hello"));
    let echoed = client
        .peer()
        .call_tool(CallToolRequestParams::new("demo__echo").with_arguments(arguments))
        .await?;
    assert_eq!(text_of(&echoed), "hello");
    client.cancel().await?;

    // The dashboard URL it prints answers with its sign-in page.
    let dashboard = format!("http://{api}/dashboard");
    assert!(
        output.contains(&format!("  Dashboard:   {dashboard}\n")),
        "{output}"
    );
    let page = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{dashboard}/login"))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    assert!(page.text().await?.contains("Sign in to Gatehouse"));

    // The CLI is logged in to it as the admin.
    let workspaces = cli.json(&["workspace", "list"]).await?;
    assert!(
        workspaces.to_string().contains("\"demo\""),
        "`workspace list` does not show demo: {workspaces}"
    );

    // It hosts stdio servers: its runner starts one a client uses.
    assert!(
        output.contains("  Runner:      http://127.0.0.1:"),
        "{output}"
    );
    cli.ok(&[
        "mcp",
        "install",
        "--name",
        "fx",
        "--command",
        env!("CARGO_BIN_EXE_gatehouse-stdio-fixture"),
        "-w",
        "demo",
    ])
    .await?;
    let hosted = within(
        "the hosted server answers through the gateway",
        STEP_TIMEOUT,
        async {
            loop {
                // The proxy applies the new config a moment after the install.
                if let Ok(client) = connect(url, token).await {
                    let call = client
                        .peer()
                        .call_tool(CallToolRequestParams::new("fx__pid"))
                        .await;
                    client.cancel().await?;
                    if let Ok(result) = call {
                        let pid: Value = serde_json::from_str(&text_of(&result))?;
                        return anyhow::Ok(pid["pid"].as_u64().unwrap_or_default());
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await??;
    assert!(
        std::path::Path::new(&format!("/proc/{hosted}")).exists(),
        "no hosted process {hosted}"
    );

    // SIGTERM stops it, and its proxy and hosted servers with it.
    let pid = up.id().expect("running").to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    assert!(sent.success());
    let status = within("gatehouse up exits on SIGTERM", STEP_TIMEOUT, up.wait()).await??;
    assert!(status.success(), "gatehouse up exited {status}");
    assert!(
        tokio::net::TcpStream::connect(listen).await.is_err(),
        "the proxy still accepts on {listen} after gatehouse up stopped"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{hosted}")).exists(),
        "the hosted server {hosted} outlived gatehouse up"
    );
    Ok(())
}
