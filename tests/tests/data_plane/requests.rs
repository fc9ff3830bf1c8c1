//! Server-to-client requests (sampling, elicitation, roots) during a tool call and on
//! the GET stream, progress, and cancellation.

use gatehouse_tests::{
    connect_as, echo_of, wait_until, within, AnsweringClient, ConfigBuilder, Proxy, RawClient,
    ServerSpec, Upstream, UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use serde_json::{json, Value};

/// Tools that talk back to the client mid-call.
fn talking_tools() -> Vec<UpstreamTool> {
    [
        "sample",
        "elicit",
        "roots",
        "progress",
        "wait_cancel",
        "echo",
    ]
    .into_iter()
    .map(UpstreamTool::new)
    .collect()
}

struct Pair {
    proxy: Proxy,
    _cfg: ConfigBuilder,
    github: Upstream,
    notes: Upstream,
    token: String,
}

async fn pair() -> anyhow::Result<Pair> {
    let github = Upstream::start("github", talking_tools()).await?;
    let notes = Upstream::start("notes", talking_tools()).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("github", &github.url()))
        .server("eng", ServerSpec::new("notes", &notes.url()));
    let token = cfg.token("eng");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    Ok(Pair {
        proxy,
        _cfg: cfg,
        github,
        notes,
        token,
    })
}

async fn call(
    client: &AnsweringClient,
    name: &str,
    arguments: Value,
) -> anyhow::Result<CallToolResult> {
    let params = CallToolRequestParams::new(name.to_owned())
        .with_arguments(arguments.as_object().cloned().unwrap_or_default());
    Ok(within(name, STEP_TIMEOUT, client.peer().call_tool(params)).await??)
}

#[tokio::test]
async fn sampling_elicitation_and_roots_round_trip_during_tool_calls() -> anyhow::Result<()> {
    let p = pair().await?;
    let client = connect_as(&p.proxy.ws_url("eng"), &p.token).await?;

    let sampled = echo_of(&call(&client, "github__sample", json!({"prompt": "why?"})).await?)?;
    assert_eq!(
        sampled["sampled"]["model"],
        json!("test-model"),
        "{sampled}"
    );
    assert_eq!(
        sampled["sampled"]["content"]["text"],
        json!("sampled: why?")
    );

    let elicited = echo_of(&call(&client, "notes__elicit", json!({"message": "Name?"})).await?)?;
    assert_eq!(
        elicited["elicited"],
        json!({"action": "accept", "content": {"name": "gatehouse"}})
    );
    let roots = echo_of(&call(&client, "github__roots", json!({})).await?)?;
    assert_eq!(roots["roots"]["roots"][0]["uri"], json!("file:///work"));

    let inbox = client.service();
    assert_eq!(inbox.requests("sampling/createMessage").len(), 1);
    assert_eq!(
        inbox.requests("elicitation/create")[0]["message"],
        json!("Name?")
    );

    // Both upstreams number their requests from the same start: asked at the same
    // time, each still gets its own answer.
    let (a, b) = tokio::join!(
        call(&client, "github__sample", json!({"prompt": "from github"})),
        call(&client, "notes__sample", json!({"prompt": "from notes"})),
    );
    assert_eq!(
        echo_of(&a?)?["sampled"]["content"]["text"],
        json!("sampled: from github")
    );
    assert_eq!(
        echo_of(&b?)?["sampled"]["content"]["text"],
        json!("sampled: from notes")
    );
    client.cancel().await?;
    Ok(())
}

#[tokio::test]
async fn relayed_request_ids_are_the_gateways_and_foreign_answers_are_dropped() -> anyhow::Result<()>
{
    let p = pair().await?;
    let mut raw = RawClient::new(p.proxy.ws_url("eng"), Some(&p.token));
    raw.initialize_with(json!({"sampling": {}})).await?;

    let mut reply = raw
        .post(serde_json::to_vec(&json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "github__sample", "arguments": {"prompt": "raw"}},
        }))?)
        .send_streaming()
        .await?;
    let asked = reply.until_method("sampling/createMessage").await?;
    let request = asked.json().expect("json");
    let gateway_id = request["id"].as_str().expect("a string id").to_owned();
    assert!(gateway_id.starts_with("gh."), "{gateway_id}");
    let original: Vec<Value> = p
        .github
        .requests()
        .iter()
        .filter_map(|r| r.body.clone())
        .collect();
    assert!(
        !original.iter().any(|b| b["id"] == json!(gateway_id)),
        "the upstream never sees the gateway's id"
    );

    // Answers to ids the gateway never issued are accepted and dropped.
    for bogus in [json!("gh.forged"), json!(12345), json!("plain")] {
        let answer = raw
            .send_json(&json!({"jsonrpc": "2.0", "id": bogus, "result": {"model": "x", "role": "assistant", "content": {"type": "text", "text": "no"}}}))
            .await?;
        assert_eq!(answer.status, 202, "{}", answer.text());
    }
    // So is this session's id presented in another session.
    let mut other = RawClient::new(p.proxy.ws_url("eng"), Some(&p.token));
    other.initialize_with(json!({"sampling": {}})).await?;
    let stolen = other
        .send_json(&json!({"jsonrpc": "2.0", "id": gateway_id, "result": {"model": "x", "role": "assistant", "content": {"type": "text", "text": "stolen"}}}))
        .await?;
    assert_eq!(stolen.status, 202);

    let answer = raw
        .send_json(&json!({"jsonrpc": "2.0", "id": gateway_id, "result": {
            "model": "raw-model", "role": "assistant",
            "content": {"type": "text", "text": "the real answer"},
        }}))
        .await?;
    assert_eq!(answer.status, 202, "{}", answer.text());
    let (done, _) = reply
        .until("the tool result", |e| {
            e.json().is_some_and(|m| m["id"] == json!(7))
        })
        .await?;
    let result = done.json().expect("json");
    let text = result["result"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    let echo: Value = serde_json::from_str(text)?;
    assert_eq!(echo["sampled"]["content"]["text"], json!("the real answer"));

    let responses: Vec<Value> = p
        .github
        .requests()
        .into_iter()
        .filter_map(|r| r.body)
        .filter(|b| b.get("result").is_some())
        .collect();
    assert_eq!(
        responses.len(),
        1,
        "only the real answer reached github: {responses:?}"
    );
    assert!(responses[0]["id"].is_number() || responses[0]["id"].is_string());
    assert_ne!(
        responses[0]["id"],
        json!(gateway_id),
        "the original id is restored"
    );
    assert!(p
        .notes
        .requests()
        .iter()
        .all(|r| r.body.as_ref().is_none_or(|b| b.get("result").is_none())));
    Ok(())
}

#[tokio::test]
async fn progress_comes_back_on_the_call_stream() -> anyhow::Result<()> {
    let p = pair().await?;
    let mut raw = RawClient::new(p.proxy.ws_url("eng"), Some(&p.token));
    raw.initialize().await?;
    let reply = raw
        .send_json(&json!({
            "jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "notes__progress", "arguments": {"steps": 3}, "_meta": {"progressToken": "p-1"}},
        }))
        .await?;
    let progress: Vec<&Value> = reply
        .messages
        .iter()
        .filter(|m| m["method"] == json!("notifications/progress"))
        .collect();
    assert_eq!(progress.len(), 3, "{}", reply.text());
    for (i, note) in progress.iter().enumerate() {
        assert_eq!(note["params"]["progressToken"], json!("p-1"));
        assert_eq!(note["params"]["progress"].as_f64(), Some((i + 1) as f64));
    }
    assert_eq!(reply.tool_echo()?["tool"], json!("progress"));
    assert_eq!(
        p.notes.calls()[0].progress_token,
        Some(json!("p-1")),
        "the token reached the upstream"
    );
    Ok(())
}

#[tokio::test]
async fn cancellation_reaches_only_the_upstream_that_owns_the_request() -> anyhow::Result<()> {
    let p = pair().await?;
    let mut raw = RawClient::new(p.proxy.ws_url("eng"), Some(&p.token));
    raw.initialize().await?;
    let start = |id: u64, name: &str| {
        let post = raw.post(
            serde_json::to_vec(&json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": name, "arguments": {}},
            }))
            .expect("json"),
        );
        tokio::spawn(async move {
            let mut reply = post.send_streaming().await?;
            reply.until_end().await
        })
    };
    let github_call = start(41, "github__wait_cancel");
    let notes_call = start(42, "notes__wait_cancel");
    wait_until("both calls are running", STEP_TIMEOUT, || async {
        !p.github.calls().is_empty() && !p.notes.calls().is_empty()
    })
    .await?;

    let cancel = |id: u64| json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": id, "reason": "user"}});
    assert_eq!(raw.send_json(&cancel(41)).await?.status, 202);
    wait_until("github is told", STEP_TIMEOUT, || async {
        p.github.cancelled() == [json!(41)]
    })
    .await?;
    assert!(
        p.notes.requests_for("notifications/cancelled").is_empty(),
        "notes does not own request 41"
    );

    assert_eq!(raw.send_json(&cancel(42)).await?.status, 202);
    wait_until("notes is told", STEP_TIMEOUT, || async {
        p.notes.cancelled() == [json!(42)]
    })
    .await?;
    assert_eq!(p.github.requests_for("notifications/cancelled").len(), 1);
    github_call.abort();
    notes_call.abort();
    Ok(())
}

#[tokio::test]
async fn a_request_on_an_upstream_get_stream_is_answered_through_the_gateway() -> anyhow::Result<()>
{
    let p = pair().await?;
    let client = connect_as(&p.proxy.ws_url("eng"), &p.token).await?;
    wait_until("github's GET stream is open", STEP_TIMEOUT, || async {
        p.github
            .requests()
            .iter()
            .any(|r| r.method == http::Method::GET)
    })
    .await?;
    let answers = within(
        "an unprompted sampling",
        STEP_TIMEOUT,
        p.github.sample_unprompted("anyone there?"),
    )
    .await?;
    assert_eq!(answers.len(), 1);
    assert_eq!(
        answers[0].as_ref().map_err(|e| anyhow::anyhow!("{e:#}"))?,
        "sampled: anyone there?"
    );
    client.cancel().await?;
    Ok(())
}
