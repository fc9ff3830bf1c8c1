//! `gatehouse mcp install URL` without `--transport`: the control plane asks the server
//! what it speaks (MCP 2026-07-28 through `server/discover`, else Streamable HTTP of
//! the session era, else legacy HTTP+SSE), saves that, and says what it found, or why
//! it could not tell.

use gatehouse_tests::{connect, Upstream, UpstreamTool};

use crate::fixture::{token_in, tool_names};

#[tokio::test]
async fn an_install_without_a_transport_finds_what_the_server_speaks() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    let created = d.admin.ok(&["workspace", "create", "Probe"]).await?;
    let token = token_in(&created)?;

    // A legacy HTTP+SSE server installed by its /sse URL, as a new user would.
    let legacy = Upstream::builder("old")
        .tools([UpstreamTool::new("ping"), UpstreamTool::new("pong")])
        .legacy_sse()
        .start()
        .await?;
    let out = d
        .admin
        .ok(&[
            "mcp",
            "install",
            &legacy.url(),
            "--name",
            "old",
            "--workspace",
            "probe",
        ])
        .await?;
    assert!(
        out.starts_with("Installed old in probe.\nFound legacy HTTP+SSE, protocol "),
        "{out}"
    );
    assert!(out.ends_with(": 2 tools.\n"), "{out}");

    // A Streamable HTTP server of the stateless era beside it (rmcp's, which also
    // speaks the session era): found through server/discover.
    let modern = Upstream::start("new", [UpstreamTool::new("echo")]).await?;
    let out = d
        .admin
        .ok(&[
            "mcp",
            "install",
            &modern.url(),
            "--name",
            "new",
            "--workspace",
            "probe",
        ])
        .await?;
    assert_eq!(
        out,
        "Installed new in probe.\nFound Streamable HTTP, protocol 2026-07-28 (stateless): 1 tool.\n"
    );

    // The same server limited to the session era: discover fails, initialize answers.
    let mid = Upstream::builder("mid")
        .tools([UpstreamTool::new("echo")])
        .up_to_2025()
        .start()
        .await?;
    let out = d
        .admin
        .ok(&[
            "mcp",
            "install",
            &mid.url(),
            "--name",
            "mid",
            "--workspace",
            "probe",
        ])
        .await?;
    assert_eq!(
        out,
        "Installed mid in probe.\nFound Streamable HTTP, protocol 2025-11-25: 1 tool.\n"
    );

    let listed = d
        .admin
        .ok(&["mcp", "list", "--workspace", "probe", "--json"])
        .await?;
    let listed: serde_json::Value = serde_json::from_str(&listed)?;
    let transports: Vec<(&str, &str)> = listed["servers"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    (
                        s["slug"].as_str().unwrap_or(""),
                        s["transport"].as_str().unwrap_or(""),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        transports,
        [
            ("mid", "streamable_http"),
            ("new", "streamable_http"),
            ("old", "sse")
        ]
    );

    // The workspace serves both servers' tools.
    d.synced().await?;
    let client = connect(&d.proxy.ws_url("probe"), &token).await?;
    assert_eq!(
        tool_names(&client).await?,
        ["mid__echo", "new__echo", "old__ping", "old__pong"]
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_installed_with_the_reason() -> anyhow::Result<()> {
    let d = crate::fixture::deployment().await?;
    d.admin.ok(&["workspace", "create", "Probe"]).await?;
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let out = d
        .admin
        .ok(&[
            "mcp",
            "install",
            &url,
            "--name",
            "gone",
            "--workspace",
            "probe",
        ])
        .await?;
    assert!(
        out.starts_with(&format!(
            "Installed gone in probe.\nCould not probe it: cannot reach {url}: "
        )),
        "{out}"
    );
    assert!(
        out.ends_with(
            ".\nSaved as Streamable HTTP; pass --transport sse if it is a legacy HTTP+SSE server.\n"
        ),
        "{out}"
    );
    assert!(
        out.to_lowercase().contains("refused"),
        "no reason given: {out}"
    );
    Ok(())
}
