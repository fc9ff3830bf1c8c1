//! The client-facing GET stream: upstream notifications merged and rewritten,
//! list_changed on config reloads, keep-alives, resumption, and how it ends.

use gatehouse_tests::{
    connect_as, echo_of, wait_until, within, BrokenUpstream, ConfigBuilder, Proxy, RawClient,
    ServerSpec, Upstream, UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::CallToolRequestParams;
use serde_json::json;

use crate::fixture::Gateway;

fn saw_get(upstream: &Upstream) -> bool {
    gets(upstream) > 0
}

/// How many GETs (stream openings) the upstream received.
fn gets(upstream: &Upstream) -> usize {
    upstream
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::GET)
        .count()
}

#[tokio::test]
async fn upstream_notifications_reach_the_client_rewritten() -> anyhow::Result<()> {
    let notes = Upstream::builder("notes")
        .tools([UpstreamTool::new("search")])
        .resources(["file:///notes/a.md"])
        .start()
        .await?;
    let github = Upstream::start("github", [UpstreamTool::new("create_issue")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("notes", &notes.url()))
        .server("eng", ServerSpec::new("github", &github.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;

    // The rmcp client opens the GET stream on its own; the gateway opens one with
    // each upstream behind it.
    let client = connect_as(&proxy.ws_url("eng"), &token).await?;
    wait_until(
        "both upstreams are asked for their GET stream",
        STEP_TIMEOUT,
        || async { saw_get(&notes) && saw_get(&github) },
    )
    .await?;
    let inbox = client.service().clone();

    notes.log("hello from notes").await;
    wait_until("the log message arrives", STEP_TIMEOUT, || async {
        !inbox.notifications("notifications/message").is_empty()
    })
    .await?;
    let message = &inbox.notifications("notifications/message")[0];
    assert_eq!(
        message["logger"],
        json!("notes"),
        "tagged with its server: {message}"
    );
    assert_eq!(message["data"], json!("hello from notes"));

    notes.notify_resource_updated("file:///notes/a.md").await;
    wait_until("resources/updated arrives", STEP_TIMEOUT, || async {
        !inbox
            .notifications("notifications/resources/updated")
            .is_empty()
    })
    .await?;
    assert_eq!(
        inbox.notifications("notifications/resources/updated")[0]["uri"],
        json!("gatehouse://notes/file:///notes/a.md")
    );

    let before = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    assert_eq!(before.len(), 2);
    github.set_tools([
        UpstreamTool::new("create_issue"),
        UpstreamTool::new("close_issue"),
    ]);
    github.notify_tools_changed().await;
    wait_until("tools/list_changed arrives", STEP_TIMEOUT, || async {
        !inbox
            .notifications("notifications/tools/list_changed")
            .is_empty()
    })
    .await?;
    let after = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    let names: Vec<String> = after.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        [
            "github__create_issue",
            "github__close_issue",
            "notes__search"
        ],
        "the gateway dropped its cached list when github said it changed"
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn a_config_reload_announces_list_changed_on_open_streams() -> anyhow::Result<()> {
    let mut gw = Gateway::start().await?;
    let mut raw = RawClient::new(gw.eng_url(), Some(&gw.alice));
    raw.initialize().await?;
    let mut stream = raw.open_stream(None).await?;
    assert_eq!(
        stream
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("text/event-stream")
    );

    gw.cfg
        .workspace("eng")
        .servers
        .retain(|s| s.slug != "notes");
    let version = gw.cfg.rewrite()?;
    gw.proxy.wait_for_config_version(version).await?;
    let changed = stream
        .until_method("notifications/tools/list_changed")
        .await?;
    assert!(
        changed.id.is_some(),
        "gateway events carry ids: {changed:?}"
    );
    let listed = raw.list_tools(2).await?;
    assert_eq!(
        listed.tool_names()?,
        [
            "github__create_issue",
            "github__list_issues",
            "github__slow"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn idle_streams_get_keep_alives_and_resume_after_the_last_event_id() -> anyhow::Result<()> {
    let notes = Upstream::start("notes", [UpstreamTool::new("search")]).await?;
    let github = Upstream::start("github", [UpstreamTool::new("create_issue")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("notes", &notes.url()))
        .server("eng", ServerSpec::new("github", &github.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start_with_env(cfg.path(), &[("GATEHOUSE_SSE_KEEPALIVE_MS", "100")]).await?;
    let mut raw = RawClient::new(proxy.ws_url("eng"), Some(&token));
    raw.initialize().await?;

    let mut stream = raw.open_stream(None).await?;
    stream
        .until("a keep-alive comment", |e| {
            e.comments.iter().any(|c| c == "keep-alive")
        })
        .await?;

    // Three gateway events (tools, prompts, resources list_changed) after a reload.
    cfg.workspace("eng").servers.retain(|s| s.slug != "notes");
    proxy.wait_for_config_version(cfg.rewrite()?).await?;
    let mut events = Vec::new();
    while events.len() < 3 {
        let (event, _) = stream.until("a message", |e| e.data.is_some()).await?;
        events.push(event);
    }
    let ids: Vec<String> = events.iter().filter_map(|e| e.id.clone()).collect();
    assert_eq!(ids.len(), 3, "{events:?}");
    assert_eq!(
        ids.iter().collect::<std::collections::BTreeSet<_>>().len(),
        3,
        "event ids are unique: {ids:?}"
    );
    drop(stream);

    // Reconnecting after the first id replays the other two, identically.
    let mut resumed = raw.open_stream(Some(&ids[0])).await?;
    for expected in &events[1..] {
        let (replayed, _) = resumed
            .until("a replayed event", |e| e.data.is_some())
            .await?;
        assert_eq!(&replayed, expected);
    }
    // An id this gateway never issued starts a fresh stream: nothing is replayed.
    let mut fresh = raw.open_stream(Some("0000-7")).await?;
    let first = fresh.next().await?.expect("the stream stays open");
    assert!(
        first.data.is_none(),
        "a fresh stream replays nothing: {first:?}"
    );
    Ok(())
}

#[tokio::test]
async fn delete_and_revocation_end_open_streams() -> anyhow::Result<()> {
    let mut gw = Gateway::start().await?;
    let mut alice = RawClient::new(gw.eng_url(), Some(&gw.alice));
    alice.initialize().await?;
    let mut stream = alice.open_stream(None).await?;
    assert_eq!(alice.delete().await?, 204);
    within(
        "the stream ends after DELETE",
        STEP_TIMEOUT,
        stream.until_end(),
    )
    .await??;
    // Ended with a last chunk, not by closing the client's connection.
    stream.ended_framed().map_err(anyhow::Error::msg)?;
    let again = alice.get_stream(None).await?;
    assert_eq!(again.status, 404, "a deleted session is gone");

    let mut bob = RawClient::new(gw.eng_url(), Some(&gw.bob));
    bob.initialize().await?;
    let mut stream = bob.open_stream(None).await?;
    let bob_token = gw
        .cfg
        .workspace("eng")
        .tokens
        .iter_mut()
        .find(|t| t.name == "bob")
        .expect("bob's token");
    bob_token.revoked = true;
    let version = gw.cfg.rewrite()?;
    gw.proxy.wait_for_config_version(version).await?;
    within(
        "the stream ends after revocation",
        STEP_TIMEOUT,
        stream.until_end(),
    )
    .await??;
    stream.ended_framed().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[tokio::test]
async fn an_upstream_sending_garbage_is_dropped_and_the_others_carry_on() -> anyhow::Result<()> {
    let broken = BrokenUpstream::start("data: this is not json-rpc\n\n").await?;
    let notes = Upstream::start("notes", [UpstreamTool::new("search")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("broken", &broken.url()))
        .server("eng", ServerSpec::new("notes", &notes.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;

    let client = connect_as(&proxy.ws_url("eng"), &token).await?;
    wait_until("both streams are open", STEP_TIMEOUT, || async {
        broken.streams_opened() >= 1 && saw_get(&notes)
    })
    .await?;
    wait_until("the gateway reports the garbage", STEP_TIMEOUT, || async {
        proxy.log().contains("garbage")
    })
    .await?;
    notes.log("still here").await;
    let inbox = client.service().clone();
    wait_until("notes' message still arrives", STEP_TIMEOUT, || async {
        inbox
            .notifications("notifications/message")
            .iter()
            .any(|m| m["data"] == json!("still here"))
    })
    .await?;
    assert_eq!(
        broken.streams_opened(),
        1,
        "a garbage stream is not reopened"
    );
    let tools = within("tools/list", STEP_TIMEOUT, client.peer().list_all_tools()).await??;
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["broken__ok", "notes__search"]);
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn an_upstream_without_a_get_stream_is_asked_once_not_per_client_stream() -> anyhow::Result<()>
{
    // `lookup` answers GET with 405; `notes` keeps a GET stream per client stream.
    let lookup = Upstream::builder("lookup")
        .tools([UpstreamTool::new("find")])
        .stateless()
        .start()
        .await?;
    let notes = Upstream::start("notes", [UpstreamTool::new("search")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("lookup", &lookup.url()))
        .server("eng", ServerSpec::new("notes", &notes.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    // The gateway logs (debug) when an upstream turns out to have no GET stream: the
    // moment it remembers so, which the test waits for instead of the 405 alone.
    let proxy = Proxy::start_with_env(
        cfg.path(),
        &[(
            "RUST_LOG",
            "info,pingora_core=warn,pingora_proxy=warn,gatehouse_proxy::client::stream=debug",
        )],
    )
    .await?;
    let no_get_stream = || proxy.log().matches("upstream has no GET stream").count();

    let first = connect_as(&proxy.ws_url("eng"), &token).await?;
    wait_until(
        "both upstreams are asked for their GET stream",
        STEP_TIMEOUT,
        || async { saw_get(&lookup) && saw_get(&notes) },
    )
    .await?;
    wait_until(
        "the gateway has seen lookup's 405",
        STEP_TIMEOUT,
        || async { no_get_stream() >= 1 },
    )
    .await?;

    let second = connect_as(&proxy.ws_url("eng"), &token).await?;
    let third = connect_as(&proxy.ws_url("eng"), &token).await?;
    wait_until(
        "notes has a GET stream per client stream (3)",
        STEP_TIMEOUT,
        || async { gets(&notes) >= 3 },
    )
    .await?;
    assert_eq!(
        gets(&lookup),
        1,
        "an upstream that answered 405 is not asked again by later client streams"
    );

    // It still serves calls.
    let params = CallToolRequestParams::new("lookup__find")
        .with_arguments(json!({"q": "x"}).as_object().cloned().unwrap_or_default());
    let result = within(
        "tools/call lookup__find",
        STEP_TIMEOUT,
        third.peer().call_tool(params),
    )
    .await??;
    let echo = echo_of(&result)?;
    assert_eq!(echo["server"], json!("lookup"), "{echo}");
    assert_eq!(echo["arguments"], json!({"q": "x"}), "{echo}");
    assert_eq!(gets(&lookup), 1, "still one GET after a call");

    // A config change compiles a new runtime, which forgets what lookup said. The open
    // streams keep their state for servers whose fingerprint did not change (lookup,
    // notes) and open only the new server's stream; a new client stream asks lookup
    // once more, and the stream after it does not.
    let wiki = Upstream::start("wiki", [UpstreamTool::new("page")]).await?;
    cfg.server("eng", ServerSpec::new("wiki", &wiki.url()));
    proxy.wait_for_config_version(cfg.rewrite()?).await?;
    wait_until(
        "the open streams open wiki's GET stream (3)",
        STEP_TIMEOUT,
        || async { gets(&wiki) >= 3 },
    )
    .await?;
    let fourth = connect_as(&proxy.ws_url("eng"), &token).await?;
    wait_until(
        "the fourth stream opens notes' and wiki's GET streams",
        STEP_TIMEOUT,
        || async { gets(&notes) >= 4 && gets(&wiki) >= 4 },
    )
    .await?;
    wait_until(
        "the gateway has seen lookup's 405 under the new config",
        STEP_TIMEOUT,
        || async { no_get_stream() >= 2 },
    )
    .await?;
    let fifth = connect_as(&proxy.ws_url("eng"), &token).await?;
    wait_until(
        "the fifth stream opens notes' and wiki's GET streams",
        STEP_TIMEOUT,
        || async { gets(&notes) >= 5 && gets(&wiki) >= 5 },
    )
    .await?;
    assert_eq!(
        gets(&lookup),
        2,
        "one GET per compiled config: the first stream under each asks, no other"
    );
    assert_eq!(gets(&notes), 5, "open streams kept their notes stream");

    for client in [first, second, third, fourth, fifth] {
        client.cancel().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_past_its_lifetime_ends_cleanly_and_can_be_reopened() -> anyhow::Result<()> {
    let gw = Gateway::start_with(|cfg| cfg.limits_mut().max_stream_seconds = 1).await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    let opened = std::time::Instant::now();
    let mut stream = client.open_stream(None).await?;
    within("the stream's end", STEP_TIMEOUT, stream.until_end()).await??;
    let lasted = opened.elapsed();
    assert!(
        lasted >= std::time::Duration::from_millis(900),
        "ended after {lasted:?}, before its lifetime"
    );
    stream.ended_framed().map_err(anyhow::Error::msg)?;
    // The session goes on: a new stream opens, and calls work.
    let _again = client.open_stream(None).await?;
    let echo = client
        .call_tool(2, "github__create_issue", json!({"n": 1}))
        .await?;
    assert_eq!(echo.tool_echo()?["arguments"], json!({"n": 1}));
    Ok(())
}
