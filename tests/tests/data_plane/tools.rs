//! Tool listing (names, order, policy) and call routing.

use gatehouse_tests::client::connect_stateless;
use gatehouse_tests::{
    connect, echo_of, wait_until, within, CallOutcome, ConfigBuilder, LegacySession, Proxy,
    RawClient, ServerSpec, TokenSpec, Upstream, UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::CallToolRequestParams;
use serde_json::json;

use crate::fixture::{
    args, call, names, tool_names, try_call, Gateway, ENG_TOOLS, GITHUB_SECRET, NOTES_SECRET,
};

#[tokio::test]
async fn tools_are_listed_prefixed_and_in_a_stable_order() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let client = connect(&gw.eng_url(), &gw.alice).await?;
    let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ENG_TOOLS, "github__delete_repo is denied by policy");

    let create = &tools[0];
    assert_eq!(create.description.as_deref(), Some("Open an issue"));
    let list_issues = &tools[1];
    assert_eq!(
        list_issues
            .annotations
            .as_ref()
            .and_then(|a| a.read_only_hint),
        Some(true),
        "annotations pass through"
    );

    // Same order on every session.
    let other = connect(&gw.eng_url(), &gw.bob).await?;
    assert_eq!(tool_names(&other).await?, ENG_TOOLS);
    client.cancel().await?;
    other.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn policies_filter_tools_and_long_names_are_shortened_but_callable() -> anyhow::Result<()> {
    let long = format!("generate_{}report", "quarterly_revenue_".repeat(4));
    assert!(long.len() > 64);
    let zulu = Upstream::start(
        "zulu",
        [UpstreamTool::new("b_tool"), UpstreamTool::new("a_tool")],
    )
    .await?;
    let alpha = Upstream::start(
        "alpha",
        [
            UpstreamTool::new("list_a"),
            UpstreamTool::new("get_b"),
            UpstreamTool::new("get_secret_c"),
            UpstreamTool::new("put_d"),
        ],
    )
    .await?;
    let beta = Upstream::start(
        "beta",
        [
            UpstreamTool::new("r1").read_only(true),
            UpstreamTool::new("w1"),
            UpstreamTool::new("w2").read_only(false),
            UpstreamTool::new("r2").read_only(true),
        ],
    )
    .await?;
    let gamma = Upstream::start(
        "gamma",
        [UpstreamTool::new(long.clone()), UpstreamTool::new("plain")],
    )
    .await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("pol", ServerSpec::new("zulu", &zulu.url()))
        .server("pol", ServerSpec::new("gamma", &gamma.url()))
        .server(
            "pol",
            ServerSpec::new("alpha", &alpha.url())
                .allow(&["get_*", "list_*"])
                .deny(&["get_secret*"]),
        )
        .server("pol", ServerSpec::new("beta", &beta.url()).read_only());
    let token = cfg.token("pol");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;

    let client = connect(&proxy.ws_url("pol"), &token).await?;
    let names = tool_names(&client).await?;
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(
        names[..4],
        ["alpha__list_a", "alpha__get_b", "beta__r1", "beta__r2"],
        "{names:?}"
    );
    assert_eq!(
        names[5..],
        ["gamma__plain", "zulu__b_tool", "zulu__a_tool"],
        "{names:?}"
    );

    let short = &names[4];
    assert!(short.starts_with("gamma__"), "{short}");
    assert!(short.len() <= 64, "{short} is {} chars", short.len());
    assert!(
        short
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
        "{short} must match ^[a-zA-Z0-9_-]{{1,64}}$"
    );
    let result = call(&client, short, json!({"k": "v"})).await?;
    assert_eq!(
        echo_of(&result)?,
        json!({"server": "gamma", "tool": long, "arguments": {"k": "v"}})
    );

    // The shortened name is the same on another session.
    let again = connect(&proxy.ws_url("pol"), &token).await?;
    assert_eq!(tool_names(&again).await?, names);

    // Filtered-out tools are not callable and never reach their upstream.
    for hidden in [
        "alpha__get_secret_c",
        "alpha__put_d",
        "beta__w1",
        "beta__w2",
    ] {
        match try_call(&client, hidden, json!({})).await? {
            CallOutcome::JsonRpcError(e) => {
                assert_eq!(e.code.0, -32602, "{hidden}: {e:?}");
                assert_eq!(e.message, format!("Unknown tool: {hidden}"));
            }
            other => panic!("{hidden}: expected a JSON-RPC error, got {other:?}"),
        }
    }
    assert!(alpha.calls().is_empty(), "{:?}", alpha.calls());
    assert!(beta.calls().is_empty(), "{:?}", beta.calls());
    Ok(())
}

#[tokio::test]
async fn calls_reach_the_upstream_with_its_own_name_and_credentials() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let client = connect(&gw.eng_url(), &gw.alice).await?;

    let arguments = json!({
        "title": "Bug: ünïcode ✓",
        "labels": ["a", "b"],
        "n": 3,
        "nested": {"x": null, "y": [1.5, true, {"z": "\"quoted\""}]},
    });
    let result = call(&client, "github__create_issue", arguments.clone()).await?;
    assert_eq!(
        echo_of(&result)?,
        json!({"server": "github", "tool": "create_issue", "arguments": arguments})
    );
    let result = call(&client, "notes__search", json!({"q": "hello"})).await?;
    assert_eq!(
        echo_of(&result)?,
        json!({"server": "notes", "tool": "search", "arguments": {"q": "hello"}})
    );
    assert_eq!(gw.github.calls().len(), 1);
    assert_eq!(gw.notes.calls().len(), 1);

    let github_auth = format!("Bearer {GITHUB_SECRET}");
    for r in gw.github.requests() {
        assert_eq!(r.path, "/mcp");
        assert_eq!(
            r.header("authorization"),
            Some(github_auth.as_str()),
            "{r:?}"
        );
        assert_eq!(
            r.header("x-notes-key"),
            None,
            "notes' secret leaked to github"
        );
    }
    for r in gw.notes.requests() {
        assert_eq!(r.header("x-notes-key"), Some(NOTES_SECRET), "{r:?}");
        assert_eq!(r.header("authorization"), None, "{r:?}");
    }
    // The gateway's own client credentials and session never go upstream; each upstream
    // sees only the session id it issued.
    for upstream in [&gw.github, &gw.notes] {
        let issued = upstream.issued_sessions();
        for r in upstream.requests() {
            for (name, value) in &r.headers {
                let value = String::from_utf8_lossy(value.as_bytes());
                assert!(
                    !value.contains(&gw.alice) && !value.contains("mwt_"),
                    "{} received the client's token in {name}: {value}",
                    upstream.label()
                );
            }
            if r.rpc_method.as_deref() != Some("initialize") {
                let sent = r.header("mcp-session-id").unwrap_or_default();
                assert!(
                    issued.iter().any(|s| s == sent),
                    "{} got Mcp-Session-Id {sent:?}, it issued {issued:?}",
                    upstream.label()
                );
                let version = r.header("mcp-protocol-version").unwrap_or_default();
                assert!(
                    is_protocol_version(version),
                    "{} got {:?} without a valid MCP-Protocol-Version: {version:?}",
                    upstream.label(),
                    r.rpc_method
                );
            }
        }
    }
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn unknown_and_denied_tools_give_one_error() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    for (id, name) in [
        "nosuch__tool",
        "github__nosuch",
        "github__delete_repo",
        "noprefix",
        "pager__page",
        "archive__restore",
    ]
    .into_iter()
    .enumerate()
    {
        let response = client.call_tool(10 + id as u64, name, json!({})).await?;
        assert_ne!(
            response.status, 404,
            "{name}: 404 would mean the session is gone"
        );
        let error = response.error()?;
        assert_eq!(error["code"], json!(-32602), "{name}: {error}");
        assert_eq!(
            error["message"],
            json!(format!("Unknown tool: {name}")),
            "{name}"
        );
        assert_eq!(response.message()?["id"], json!(10 + id as u64));
    }
    assert!(
        gw.github.calls().iter().all(|c| c.tool != "delete_repo"),
        "a denied tool reached the upstream"
    );
    assert!(gw.pager.requests().is_empty());
    assert!(gw.archive.requests().is_empty());
    Ok(())
}

/// `YYYY-MM-DD`, the shape of every MCP protocol version.
fn is_protocol_version(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

#[tokio::test]
async fn concurrent_calls_get_their_own_results_and_do_not_wait_on_a_slow_one() -> anyhow::Result<()>
{
    let gw = Gateway::start().await?;
    let client = connect(&gw.eng_url(), &gw.alice).await?;

    let slow = {
        let peer = client.peer().clone();
        tokio::spawn(async move {
            let params = CallToolRequestParams::new("github__slow")
                .with_arguments(args(json!({"ms": 2000})));
            peer.call_tool(params).await
        })
    };
    wait_until("the slow call reaches github", STEP_TIMEOUT, || async {
        gw.github.calls().iter().any(|c| c.tool == "slow")
    })
    .await?;

    let calls = (0..16).map(|i| {
        let (name, server) = if i % 2 == 0 {
            ("github__create_issue", "github")
        } else {
            ("notes__write_note", "notes")
        };
        let client = &client;
        async move {
            let result = call(client, name, json!({"i": i})).await?;
            let echo = echo_of(&result)?;
            anyhow::ensure!(
                echo["server"] == json!(server) && echo["arguments"] == json!({"i": i}),
                "call {i} to {name} got {echo}"
            );
            Ok(())
        }
    });
    for outcome in futures::future::join_all(calls).await {
        outcome?;
    }
    assert!(
        !slow.is_finished(),
        "16 quick calls had to wait for the slow one on the same session"
    );
    let slow = within("the slow call", STEP_TIMEOUT, slow).await???;
    assert_eq!(echo_of(&slow)?["tool"], json!("slow"));
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn the_tool_lists_are_fetched_once_right_after_initialize() -> anyhow::Result<()> {
    let alpha = Upstream::start("alpha", [UpstreamTool::new("one")]).await?;
    let beta = Upstream::start("beta", [UpstreamTool::new("two")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("alpha", &alpha.url()))
        .server("eng", ServerSpec::new("beta", &beta.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let lists = |u: &Upstream| u.requests_for("tools/list").len();

    // The client has not asked yet: the gateway fetches while it finishes its handshake.
    let first = connect(&proxy.ws_url("eng"), &token).await?;
    wait_until(
        "each upstream is asked for its tools after initialize",
        STEP_TIMEOUT,
        || async { lists(&alpha) == 1 && lists(&beta) == 1 },
    )
    .await?;

    // Two sessions listing at once are both served from that one fetch.
    let second = connect(&proxy.ws_url("eng"), &token).await?;
    let (a, b) = tokio::join!(tool_names(&first), tool_names(&second));
    assert_eq!(a?, ["alpha__one", "beta__two"]);
    assert_eq!(b?, ["alpha__one", "beta__two"]);
    assert_eq!(
        (lists(&alpha), lists(&beta)),
        (1, 1),
        "no upstream was asked twice"
    );
    first.cancel().await?;
    second.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_routed_call_carries_the_clients_trace_headers_but_not_its_credentials(
) -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut raw = RawClient::new(gw.eng_url(), Some(&gw.alice));
    raw.initialize().await?;
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let body = json!({
        "jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "github__create_issue", "arguments": {"n": 1}},
    });
    let response = raw
        .post(serde_json::to_vec(&body)?)
        .header("traceparent", traceparent)
        .header("user-agent", "gatehouse-test/1")
        .header("cookie", "session=client-only")
        .header("accept-encoding", "gzip")
        .send()
        .await?;
    assert_eq!(response.tool_echo()?["arguments"], json!({"n": 1}));
    let calls: Vec<_> = gw
        .github
        .requests()
        .into_iter()
        .filter(|r| r.rpc_method.as_deref() == Some("tools/call"))
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let r = &calls[0];
    assert_eq!(r.header("traceparent"), Some(traceparent), "{r:?}");
    assert_eq!(r.header("user-agent"), Some("gatehouse-test/1"), "{r:?}");
    assert_eq!(
        r.header("cookie"),
        None,
        "the client's cookie reached the upstream"
    );
    assert_eq!(
        r.header("authorization"),
        Some(format!("Bearer {GITHUB_SECRET}").as_str()),
        "the upstream must get its own credential, not the client's"
    );
    Ok(())
}

/// A token limited to some tools (globs over exposed names, and/or read-only) sees
/// and calls only those, over every client transport and both protocol eras; to it a
/// tool outside its scope is a tool that does not exist. Tokens without a scope still
/// see everything.
#[tokio::test]
async fn a_token_sees_and_calls_only_the_tools_of_its_scope() -> anyhow::Result<()> {
    let (mut lister, mut reader, mut nothing) = (String::new(), String::new(), String::new());
    let gw = Gateway::start_with(|cfg| {
        let scoped = |name, tools: &[&str], read_only| TokenSpec::scoped(name, tools, read_only);
        lister = cfg.token_with(
            "eng",
            scoped("lister", &["github__list_*", "notes__*"], false),
        );
        reader = cfg.token_with("eng", scoped("reader", &["notes__*"], true));
        nothing = cfg.token_with("eng", scoped("nothing", &["jira__*"], false));
    })
    .await?;
    let url = gw.eng_url();
    let scopes: [(&str, &[&str]); 3] = [
        (
            &lister,
            &[
                "github__list_issues",
                "notes__search",
                "notes__write_note",
                "notes__echo_size",
            ],
        ),
        (&reader, &["notes__search", "notes__echo_size"]),
        (&nothing, &[]),
    ];
    let sse_url = gw.proxy.url("/ws/eng/sse");
    for (token, expected) in scopes {
        // Session era (Streamable HTTP), stateless era, legacy HTTP+SSE.
        let session = connect(&url, token).await?;
        assert_eq!(tool_names(&session).await?, expected);
        let stateless = connect_stateless(&url, token).await?;
        assert_eq!(tool_names(&stateless).await?, expected);
        let mut legacy = LegacySession::open(&sse_url, Some(token)).await?;
        legacy.initialize(json!({})).await?;
        let listed = legacy.request(1, "tools/list", json!({})).await?;
        assert_eq!(names(&listed["result"], "tools", "name"), expected);

        // Outside the scope: the answer an unknown tool gets, on every transport.
        for name in [
            "github__create_issue",
            "notes__write_note",
            "github__list_issues",
        ] {
            if expected.contains(&name) {
                continue;
            }
            let unknown = format!("Unknown tool: {name}");
            for client in [&session, &stateless] {
                match try_call(client, name, json!({"title": "t"})).await? {
                    CallOutcome::JsonRpcError(e) => {
                        assert_eq!(e.code.0, -32602, "{name}: {e:?}");
                        assert_eq!(e.message, unknown);
                    }
                    other => panic!("{name} outside the scope answered {other:?}"),
                }
            }
            let answer = legacy
                .request(2, "tools/call", json!({"name": name, "arguments": {}}))
                .await?;
            assert_eq!(answer["error"]["message"], json!(unknown), "{answer}");
        }
        session.cancel().await?;
        stateless.cancel().await?;
    }
    assert!(
        gw.github.calls().iter().all(|c| c.tool == "list_issues"),
        "a call outside a token's scope reached the upstream: {:?}",
        gw.github.calls()
    );
    assert!(gw.notes.calls().iter().all(|c| c.tool != "write_note"));

    // Inside it, calls go through as for any token.
    let session = connect(&url, &lister).await?;
    call(&session, "github__list_issues", json!({})).await?;
    call(&session, "notes__write_note", json!({"text": "hi"})).await?;
    let stateless = connect_stateless(&url, &reader).await?;
    call(&stateless, "notes__search", json!({"q": "x"})).await?;
    let executed: Vec<String> = gw
        .github
        .calls()
        .iter()
        .chain(gw.notes.calls().iter())
        .map(|c| c.tool.clone())
        .collect();
    assert_eq!(executed, ["list_issues", "write_note", "search"]);

    // A token without a scope is unchanged.
    let alice = connect(&url, &gw.alice).await?;
    assert_eq!(tool_names(&alice).await?, ENG_TOOLS);
    for c in [session, stateless, alice] {
        c.cancel().await?;
    }
    Ok(())
}

/// A tool shaped by an override: renamed, its description extended, an argument
/// fixed (gone from the schema clients see, and set on every call whatever the client
/// sends) and an annotation set. Clients of both eras see the shaped tool; the
/// upstream gets its own name and its schema satisfied; the old name is unknown.
#[tokio::test]
async fn an_overridden_tool_is_shaped_for_clients_and_reversed_for_the_upstream(
) -> anyhow::Result<()> {
    let tracker = Upstream::start(
        "tracker",
        [UpstreamTool::new("create_issue")
            .description("Create an issue in a repository")
            .schema(json!({
                "type": "object",
                "properties": {
                    "owner": {"type": "string"},
                    "title": {"type": "string"}
                },
                "required": ["owner", "title"]
            }))],
    )
    .await?;
    let mut cfg = ConfigBuilder::new()?;
    let how: gatehouse_config::ToolOverride = serde_json::from_value(json!({
        "name": "open_ticket",
        "extend_description": "Tickets always go to acme.",
        "fixed_arguments": {"owner": "acme"},
        "annotations": {"destructiveHint": false, "readOnlyHint": false}
    }))?;
    cfg.server(
        "eng",
        ServerSpec::new("gh", &tracker.url()).override_tool("create_issue", how),
    );
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let url = proxy.ws_url("eng");

    let session = connect(&url, &token).await?;
    let stateless = connect_stateless(&url, &token).await?;
    for client in [&session, &stateless] {
        let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
        assert_eq!(tools.len(), 1);
        let tool = &tools[0];
        assert_eq!(tool.name, "gh__open_ticket");
        assert_eq!(
            tool.description.as_deref(),
            Some("Create an issue in a repository\n\nTickets always go to acme.")
        );
        let schema = serde_json::to_value(&*tool.input_schema)?;
        assert_eq!(schema["properties"], json!({"title": {"type": "string"}}));
        assert_eq!(schema["required"], json!(["title"]));
        let annotations = tool.annotations.as_ref().expect("annotations set");
        assert_eq!(annotations.destructive_hint, Some(false));
        assert_eq!(annotations.read_only_hint, Some(false));
    }
    // The client cannot see or change the fixed argument.
    call(&session, "gh__open_ticket", json!({"title": "one"})).await?;
    call(
        &stateless,
        "gh__open_ticket",
        json!({"title": "two", "owner": "evil"}),
    )
    .await?;
    let received: Vec<(String, serde_json::Value)> = tracker
        .calls()
        .iter()
        .map(|c| (c.tool.clone(), c.arguments.clone()))
        .collect();
    assert_eq!(
        received,
        [
            (
                "create_issue".to_string(),
                json!({"owner": "acme", "title": "one"})
            ),
            (
                "create_issue".to_string(),
                json!({"owner": "acme", "title": "two"})
            ),
        ]
    );
    match try_call(
        &session,
        "gh__create_issue",
        json!({"owner": "x", "title": "t"}),
    )
    .await?
    {
        CallOutcome::JsonRpcError(e) => assert_eq!(e.message, "Unknown tool: gh__create_issue"),
        other => panic!("the upstream's own name answered {other:?}"),
    }
    assert_eq!(tracker.calls().len(), 2);
    session.cancel().await?;
    stateless.cancel().await?;
    Ok(())
}
