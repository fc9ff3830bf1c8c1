//! Skill calls that cannot succeed end as tool errors (`isError: true`) the model can
//! read, never as a hung or broken gateway: arguments that violate the input schema
//! are refused before any request is made; a target that is down or too slow fails
//! within the tool's timeout; link-local and metadata addresses are never contacted;
//! an HTTP error status comes back as an error with the target's answer.

use std::time::{Duration, Instant};

use gatehouse_tests::control_plane::free_addr;
use gatehouse_tests::http_target::{HttpTarget, TargetAnswer};
use serde_json::{json, Value};

use crate::fixture::{call, skill_manifest, tool_error_text, tool_names, tool_ok_text, Registry};

/// How long past its `timeout_ms` a timed-out call may take to come back.
const TIMEOUT_MARGIN: Duration = Duration::from_millis(1500);
const SLOW_TIMEOUT_MS: u64 = 300;

fn tool(name: &str, url: String, extra: Value) -> Value {
    let mut tool = json!({"name": name, "input_schema": {"type": "object", "properties": {}},
                          "request": {"url": url}});
    if let (Some(tool), Some(extra)) = (tool.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "timeout_ms" {
                tool["request"]["timeout_ms"] = v.clone();
            } else {
                tool.insert(k.clone(), v.clone());
            }
        }
    }
    tool
}

#[tokio::test]
async fn failing_skill_calls_are_tool_errors_and_the_gateway_keeps_serving() -> anyhow::Result<()> {
    let target = HttpTarget::answering(TargetAnswer {
        body: json!({"item": {"id": "a1"}}),
        ..TargetAnswer::default()
    })
    .await?;
    let slow = HttpTarget::answering(TargetAnswer {
        delay: Duration::from_secs(2),
        ..TargetAnswer::default()
    })
    .await?;
    let dead = free_addr()?;
    let reg = Registry::start().await?;

    let strict_schema = json!({
        "type": "object",
        "properties": {"id": {"type": "string", "minLength": 1},
                       "limit": {"type": "integer", "minimum": 1, "maximum": 50}},
        "required": ["id"],
        "additionalProperties": false,
    });
    let manifest = skill_manifest(
        "probe",
        "1.0.0",
        vec![
            tool(
                "lookup",
                target.url("/items/{{args.id}}?limit={{args.limit}}"),
                json!({"input_schema": strict_schema}),
            ),
            tool("down", format!("http://{dead}/x"), json!({})),
            tool(
                "slow",
                slow.url("/slow"),
                json!({"timeout_ms": SLOW_TIMEOUT_MS}),
            ),
            tool(
                "metadata",
                "http://169.254.169.254/latest/meta-data/iam/security-credentials/".into(),
                json!({}),
            ),
            tool(
                "metadata_v6",
                "http://[::ffff:169.254.169.254]/latest/".into(),
                json!({}),
            ),
            tool(
                "link_local",
                "http://169.254.10.20:8080/admin".into(),
                json!({}),
            ),
        ],
    );
    reg.publish(&reg.acme, "probe", &manifest, &["--private"])
        .await?
        .success()?;
    let token = reg.workspace(&reg.acme, "probe-ws").await?;
    let installed = reg
        .acme
        .ok(&["skill", "install", "@acme/probe", "--workspace", "probe-ws"])
        .await?;
    assert_eq!(
        installed,
        "✓ Installed @acme/probe@1.0.0 as probe in probe-ws\n"
    );
    let client = reg.client("probe-ws", &token).await?;
    assert_eq!(tool_names(&client).await?.len(), 6);

    // Arguments that break the schema: a tool error each, and no request at all.
    for (arguments, says) in [
        (json!({}), "id"),
        (json!({"id": 5}), "string"),
        (json!({"id": ""}), "id"),
        (json!({"id": "a1", "limit": 0}), "limit"),
        (json!({"id": "a1", "limit": "ten"}), "limit"),
        (json!({"id": "a1", "url": "http://169.254.169.254/"}), "url"),
    ] {
        let result = call(&client, "probe__lookup", arguments.clone()).await?;
        let text = tool_error_text("probe__lookup", &result);
        assert!(
            text.contains("invalid arguments") && text.contains(says),
            "{arguments} -> {text:?}"
        );
    }
    // A valid call is the first (and only) request the target ever sees.
    let result = call(&client, "probe__lookup", json!({"id": "a1", "limit": 5})).await?;
    assert_eq!(
        tool_ok_text("probe__lookup", &result),
        r#"{"item":{"id":"a1"}}"#
    );
    let seen = target.requests();
    assert_eq!(seen.len(), 1, "invalid calls reached the target: {seen:?}");
    assert_eq!(seen[0].path, "/items/a1");
    assert_eq!(seen[0].query.as_deref(), Some("limit=5"));

    // The target is down: a tool error, and the next call works.
    let result = call(&client, "probe__down", json!({})).await?;
    let text = tool_error_text("probe__down", &result);
    assert!(text.contains("failed"), "{text:?}");
    assert!(
        !text.contains(&dead.to_string()),
        "the URL leaked into the error: {text:?}"
    );
    let result = call(&client, "probe__lookup", json!({"id": "a2"})).await?;
    tool_ok_text("probe__lookup", &result);

    // The target is slower than the tool's timeout: an error naming the timeout, in
    // about timeout_ms; a call made meanwhile is not held up by it.
    let started = Instant::now();
    let (slow_result, fast) = tokio::join!(call(&client, "probe__slow", json!({})), async {
        let result = call(&client, "probe__lookup", json!({"id": "a3"})).await;
        (result, started.elapsed())
    });
    let slow_elapsed = started.elapsed();
    let text = tool_error_text("probe__slow", &slow_result?);
    assert!(
        text.contains("timed out") && text.contains(&format!("{SLOW_TIMEOUT_MS} ms")),
        "{text:?}"
    );
    assert!(
        slow_elapsed >= Duration::from_millis(SLOW_TIMEOUT_MS)
            && slow_elapsed < Duration::from_millis(SLOW_TIMEOUT_MS) + TIMEOUT_MARGIN,
        "the slow call took {slow_elapsed:?} (timeout {SLOW_TIMEOUT_MS} ms)"
    );
    let (fast_result, fast_elapsed) = fast;
    tool_ok_text("probe__lookup", &fast_result?);
    assert!(
        fast_elapsed < slow_elapsed,
        "a fast call waited for the slow one: {fast_elapsed:?} vs {slow_elapsed:?}"
    );
    assert_eq!(slow.requests().len(), 1, "the slow target was asked once");

    // Link-local and metadata addresses are refused without a request.
    for name in ["probe__metadata", "probe__metadata_v6", "probe__link_local"] {
        let started = Instant::now();
        let result = call(&client, name, json!({})).await?;
        let text = tool_error_text(name, &result);
        assert!(
            text.contains("link-local") && text.contains("metadata"),
            "{name}: {text:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{name} took {:?}: was a connection attempted?",
            started.elapsed()
        );
    }

    // An error status is a tool error carrying the target's answer.
    target.set_answer(TargetAnswer {
        status: 503,
        body: json!({"error": "crm is in maintenance"}),
        ..TargetAnswer::default()
    });
    let result = call(&client, "probe__lookup", json!({"id": "a4"})).await?;
    let text = tool_error_text("probe__lookup", &result);
    assert!(
        text.contains("503") && text.contains("crm is in maintenance"),
        "{text:?}"
    );

    // After all of that, the gateway still serves.
    target.set_answer(TargetAnswer::default());
    let result = call(&client, "probe__lookup", json!({"id": "a5"})).await?;
    assert_eq!(tool_ok_text("probe__lookup", &result), r#"{"ok":true}"#);
    client.cancel().await?;
    Ok(())
}

/// Arguments fill one path segment and nothing more: `..` or `.` must not walk the
/// request up to another endpoint of the target (with the skill's secret attached),
/// and a line break must not smuggle a header in.
#[tokio::test]
async fn arguments_cannot_leave_their_place_in_the_request() -> anyhow::Result<()> {
    let target = HttpTarget::start().await?;
    let reg = Registry::start().await?;
    let manifest = skill_manifest(
        "files",
        "1.0.0",
        vec![json!({
            "name": "read",
            "input_schema": {"type": "object", "properties": {"id": {"type": "string"}},
                             "required": ["id"]},
            "request": {"url": target.url("/api/files/{{args.id}}/content"),
                        "headers": {"X-File": "{{args.id}}"}},
        })],
    );
    reg.publish(&reg.acme, "files", &manifest, &["--private"])
        .await?
        .success()?;
    let token = reg.workspace(&reg.acme, "files-ws").await?;
    reg.acme
        .ok(&["skill", "install", "@acme/files", "--workspace", "files-ws"])
        .await?;
    let client = reg.client("files-ws", &token).await?;

    // A line break in a header value: a tool error, nothing sent.
    let result = call(
        &client,
        "files__read",
        json!({"id": "a\r\nX-Injected: yes"}),
    )
    .await?;
    tool_error_text("files__read", &result);
    assert!(target.requests().is_empty(), "{:?}", target.requests());

    // Dot segments: whatever happens, the target never sees a path outside
    // /api/files/<one segment>/content.
    for id in ["..", ".", "../.."] {
        target.clear();
        let result = call(&client, "files__read", json!({"id": id})).await?;
        for request in target.requests() {
            let segment = request
                .path
                .strip_prefix("/api/files/")
                .and_then(|rest| rest.strip_suffix("/content"));
            assert!(
                segment.is_some_and(|s| !s.is_empty() && !s.contains('/') && s != "." && s != ".."),
                "id {id:?} sent the request to {} (result: {result:?})",
                request.path
            );
        }
    }
    client.cancel().await?;
    Ok(())
}
