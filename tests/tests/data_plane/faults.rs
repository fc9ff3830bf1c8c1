//! Upstreams that misbehave ([`FaultyUpstream`]): for each fault, the client's call
//! ends in bounded time with an error that says what happened, the other servers of
//! the workspace and of another workspace keep answering meanwhile, and the proxy
//! serves on afterwards without holding more memory or file descriptors.

use std::time::{Duration, Instant};

use futures::StreamExt;
use gatehouse_tests::faulty::{mixed_call, FLAKY, FLAKY_IDEMPOTENT, GET_STREAM_LIFETIME, OK_TOOL};
use gatehouse_tests::{
    connect, connect_as, text_of, wait_until, within, AnsweringClient, CallOutcome, ConfigBuilder,
    Fault, FaultyUpstream, McpClient, Proxy, RawClient, ServerSpec, TokenSpec, Upstream,
    UpstreamTool, STEP_TIMEOUT,
};
use rmcp::model::CallToolRequestParams;
use serde_json::json;

use crate::fixture::{args, call, try_call};

/// The faulty server's per-read timeout: short, so stalls end quickly.
const CALL_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long past what it waits for the proxy may take to tell the client, on a
/// loaded machine.
const SLACK: Duration = Duration::from_secs(4);
/// How long a healthy server's call may take while another server misbehaves.
const HEALTHY_LIMIT: Duration = Duration::from_secs(3);
/// JSON-RPC "internal error": what the gateway answers in a failing server's name.
const INTERNAL_ERROR: i32 = -32603;

/// Workspace `eng` has the faulty server and a healthy `notes`; workspace `ops` has a
/// healthy `pager`. A client of each is connected.
struct Faults {
    proxy: Proxy,
    _cfg: ConfigBuilder,
    faulty: FaultyUpstream,
    _notes: Upstream,
    _pager: Upstream,
    eng_token: String,
    eng: McpClient,
    ops: McpClient,
}

impl Faults {
    async fn start() -> anyhow::Result<Faults> {
        let faulty = FaultyUpstream::start().await?;
        let notes = Upstream::start("notes", [UpstreamTool::new("search").read_only(true)]).await?;
        let pager = Upstream::start("pager", [UpstreamTool::new("page")]).await?;
        let mut cfg = ConfigBuilder::new()?;
        cfg.server(
            "eng",
            ServerSpec::new("faulty", &faulty.url())
                .call_timeout_ms(CALL_TIMEOUT.as_millis() as u64),
        )
        .server("eng", ServerSpec::new("notes", &notes.url()))
        .server("ops", ServerSpec::new("pager", &pager.url()));
        let eng_token = cfg.token_with("eng", TokenSpec::named("alice"));
        let ops_token = cfg.token_with("ops", TokenSpec::named("carol"));
        cfg.write()?;
        let proxy = Proxy::start(cfg.path()).await?;
        let eng = connect(&proxy.ws_url("eng"), &eng_token).await?;
        let ops = connect(&proxy.ws_url("ops"), &ops_token).await?;
        Ok(Faults {
            proxy,
            _cfg: cfg,
            faulty,
            _notes: notes,
            _pager: pager,
            eng_token,
            eng,
            ops,
        })
    }

    /// A healthy server of the same workspace (on the same client session) and one of
    /// another workspace each answer within [`HEALTHY_LIMIT`].
    async fn others_answer(&self) -> anyhow::Result<()> {
        for (client, tool) in [(&self.eng, "notes__search"), (&self.ops, "pager__page")] {
            let started = Instant::now();
            let result = within(tool, HEALTHY_LIMIT, call(client, tool, json!({"q": "x"})))
                .await
                .map_err(|e| anyhow::anyhow!("while the faulty server misbehaves: {e}"))??;
            assert_ne!(result.is_error, Some(true), "{tool}: {result:?}");
            let took = started.elapsed();
            assert!(took < HEALTHY_LIMIT, "{tool} took {took:?}");
        }
        Ok(())
    }

    /// Calls `fault`'s tool; while it is at the faulty server, the others answer.
    /// How the call ended, and how long it took.
    async fn fault(&self, fault: Fault) -> anyhow::Result<(CallOutcome, Duration)> {
        let before = self.faulty.calls(fault.tool());
        let peer = self.eng.peer().clone();
        let name = format!("faulty__{}", fault.tool());
        let started = Instant::now();
        let calling = tokio::spawn(async move {
            let params = CallToolRequestParams::new(name).with_arguments(args(json!({})));
            let outcome = CallOutcome::from(peer.call_tool(params).await);
            (outcome, started.elapsed())
        });
        wait_until(
            &format!("{} reaches the faulty server", fault.tool()),
            STEP_TIMEOUT,
            || async { self.faulty.calls(fault.tool()) > before },
        )
        .await?;
        self.others_answer().await?;
        Ok(within(fault.tool(), STEP_TIMEOUT, calling).await??)
    }

    /// After a fault: the proxy still serves every server, the faulty one's good tool
    /// included, and the faulty server's connections were all let go.
    async fn still_serves(&self) -> anyhow::Result<()> {
        self.others_answer().await?;
        let ok = call(&self.eng, &format!("faulty__{OK_TOOL}"), json!({})).await?;
        assert_eq!(text_of(&ok), "ok");
        wait_until(
            "the proxy let go of every faulty reply",
            STEP_TIMEOUT,
            || async { self.faulty.open_replies() == 0 },
        )
        .await
    }
}

/// The JSON-RPC error of `outcome`, which must be one, with `code` and a message
/// that contains `says`.
fn assert_error(outcome: &CallOutcome, code: i32, says: &str) {
    match outcome {
        CallOutcome::JsonRpcError(e) => {
            assert_eq!(e.code.0, code, "{e:?}");
            assert!(
                e.message.contains(says),
                "{:?} must say {says:?}",
                e.message
            );
        }
        other => panic!("expected a JSON-RPC error saying {says:?}, got {other:?}"),
    }
}

fn assert_took(elapsed: Duration, at_least: Duration, at_most: Duration) {
    assert!(
        elapsed >= at_least && elapsed <= at_most,
        "took {elapsed:?}, expected between {at_least:?} and {at_most:?}"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let (outcome, elapsed) = f.fault(Fault::StallBeforeHeaders).await?;
    assert_error(
        &outcome,
        INTERNAL_ERROR,
        "\"faulty\" did not answer in time",
    );
    assert_took(elapsed, CALL_TIMEOUT, CALL_TIMEOUT + SLACK);
    f.still_serves().await
}

#[tokio::test]
async fn a_reply_stream_that_stalls_times_out() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let (outcome, elapsed) = f.fault(Fault::StallMidStream).await?;
    assert_error(
        &outcome,
        INTERNAL_ERROR,
        "\"faulty\" did not answer in time",
    );
    assert_took(elapsed, CALL_TIMEOUT, CALL_TIMEOUT + SLACK);
    f.still_serves().await
}

#[tokio::test]
async fn a_connection_reset_mid_reply_is_an_error() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let (outcome, elapsed) = f.fault(Fault::ResetMidReply).await?;
    assert_error(
        &outcome,
        INTERNAL_ERROR,
        "\"faulty\" is unavailable: sent an invalid reply: error reading a body from connection",
    );
    assert_took(elapsed, Duration::ZERO, SLACK);
    f.still_serves().await
}

#[tokio::test]
async fn a_reply_that_is_not_json_is_an_error() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let (outcome, elapsed) = f.fault(Fault::InvalidJson).await?;
    assert_error(
        &outcome,
        INTERNAL_ERROR,
        "\"faulty\" is unavailable: sent an invalid reply: the reply is not JSON",
    );
    assert_took(elapsed, Duration::ZERO, SLACK);
    f.still_serves().await
}

#[tokio::test]
async fn a_huge_event_is_refused_without_holding_it() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let before = f.proxy.usage()?;
    let mut after = Vec::new();
    for _ in 0..3 {
        let (outcome, elapsed) = f.fault(Fault::HugeEvent).await?;
        assert_error(
            &outcome,
            INTERNAL_ERROR,
            "\"faulty\" is unavailable: sent an invalid reply: an event larger than 16 MiB",
        );
        assert_took(elapsed, Duration::ZERO, STEP_TIMEOUT);
        after.push(f.proxy.usage()?);
    }
    eprintln!("proxy before {before:?}, after each 50 MiB event {after:?}");
    // Held up to the limit and let go: the allocator keeps some of it for the next
    // one (mimalloc, per worker thread), but events do not add up.
    let mib = |from: &gatehouse_tests::ProcessUsage, to: &gatehouse_tests::ProcessUsage| {
        to.rss_kib.saturating_sub(from.rss_kib) / 1024
    };
    assert!(mib(&before, &after[0]) < 100, "{before:?} -> {after:?}");
    assert!(mib(&after[0], &after[2]) < 64, "{before:?} -> {after:?}");
    f.still_serves().await
}

#[tokio::test]
async fn an_endless_reply_stream_is_let_go_when_the_client_gives_up() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let mut raw = RawClient::new(f.proxy.ws_url("eng"), Some(&f.eng_token));
    raw.initialize().await?;
    let tool = format!("faulty__{}", Fault::EndlessStream.tool());
    let calling = tokio::spawn(async move { raw.call_tool(1, &tool, json!({})).await });
    wait_until("the endless stream starts", STEP_TIMEOUT, || async {
        f.faulty.open_replies() == 1
    })
    .await?;
    f.others_answer().await?;
    // The stream never ends on its own: the client gives up, and the proxy drops
    // the upstream connection with it.
    assert!(!calling.is_finished(), "an endless stream ended by itself");
    calling.abort();
    f.still_serves().await
}

#[tokio::test]
async fn an_endless_reply_stream_ends_at_the_servers_whole_call_time() -> anyhow::Result<()> {
    const MAX_CALL: Duration = Duration::from_millis(1_500);
    let faulty = FaultyUpstream::start().await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server(
        "eng",
        ServerSpec::new("faulty", &faulty.url()).max_call_ms(MAX_CALL.as_millis() as u64),
    );
    let token = cfg.token_with("eng", TokenSpec::named("alice"));
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let eng = connect(&proxy.ws_url("eng"), &token).await?;
    // Log messages every 20 ms, never a response: each read is well within the call
    // timeout, the whole call is not.
    let started = Instant::now();
    let tool = format!("faulty__{}", Fault::EndlessStream.tool());
    let outcome = try_call(&eng, &tool, json!({})).await?;
    assert_error(
        &outcome,
        INTERNAL_ERROR,
        "\"faulty\" did not answer in time",
    );
    assert_took(started.elapsed(), MAX_CALL, MAX_CALL + SLACK);
    wait_until(
        "the proxy let go of the endless reply",
        STEP_TIMEOUT,
        || async { faulty.open_replies() == 0 },
    )
    .await?;
    let ok = call(&eng, &format!("faulty__{OK_TOOL}"), json!({})).await?;
    assert_eq!(text_of(&ok), "ok");
    Ok(())
}

#[tokio::test]
async fn a_response_to_another_request_is_an_error() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    // As plain JSON, and as the one response of an event stream.
    for fault in [Fault::WrongId, Fault::WrongIdStream] {
        let (outcome, elapsed) = f.fault(fault).await?;
        assert_error(
            &outcome,
            INTERNAL_ERROR,
            "\"faulty\" is unavailable: sent an invalid reply: the response is to another request",
        );
        assert_took(elapsed, Duration::ZERO, SLACK);
        f.still_serves().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_second_answer_is_not_taken_for_the_first() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let (outcome, elapsed) = f.fault(Fault::AnswerTwice).await?;
    match &outcome {
        CallOutcome::Result(result) => assert_eq!(text_of(result), "first"),
        other => panic!("expected the first answer, got {other:?}"),
    }
    assert_took(elapsed, Duration::ZERO, SLACK);
    f.still_serves().await
}

#[tokio::test]
async fn server_errors_are_json_rpc_errors_that_name_the_status() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    for _ in 0..3 {
        let (outcome, elapsed) = f.fault(Fault::ServerError).await?;
        assert_error(
            &outcome,
            INTERNAL_ERROR,
            "\"faulty\" is unavailable: answered HTTP 50",
        );
        assert_took(elapsed, Duration::ZERO, SLACK);
    }
    // Counted as the server failing (what its circuit breaker goes by), not as an
    // answer.
    let (_, metrics) = f.proxy.metrics().await?;
    let failed = gatehouse_tests::metrics::sample(
        &metrics,
        "gatehouse_upstream_errors_total",
        &[
            ("workspace", "eng"),
            ("server", "faulty"),
            ("kind", "http_status"),
        ],
    );
    assert_eq!(failed, Some(3.0), "{metrics}");
    f.still_serves().await
}

#[tokio::test]
async fn a_server_whose_replies_are_unusable_is_stopped_by_its_breaker() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let wrong_id = format!("faulty__{}", Fault::WrongId.tool());
    let ok = format!("faulty__{OK_TOOL}");
    // Each reply has a good head and a body that is not the call's response: five in
    // a row open the breaker, as five refused connections would.
    for _ in 0..5 {
        let outcome = try_call(&f.eng, &wrong_id, json!({})).await?;
        assert_error(
            &outcome,
            INTERNAL_ERROR,
            "the response is to another request",
        );
    }
    let before = f.faulty.calls(OK_TOOL);
    let refused = try_call(&f.eng, &ok, json!({})).await?;
    assert_error(&refused, INTERNAL_ERROR, "circuit breaker open");
    assert_eq!(
        f.faulty.calls(OK_TOOL),
        before,
        "the open breaker let a call through"
    );
    let (_, metrics) = f.proxy.metrics().await?;
    let opened = gatehouse_tests::metrics::sample(
        &metrics,
        "gatehouse_upstream_circuit_opened_total",
        &[("workspace", "eng"), ("server", "faulty")],
    );
    assert_eq!(opened, Some(1.0), "{metrics}");
    f.others_answer().await?;
    // After the cool-down a good reply, relayed whole, closes it again.
    wait_until("the breaker closes on a good reply", STEP_TIMEOUT, || async {
        matches!(try_call(&f.eng, &ok, json!({})).await, Ok(CallOutcome::Result(r)) if text_of(&r) == "ok")
    })
    .await?;
    f.still_serves().await
}

#[tokio::test]
async fn a_refused_call_is_sent_again_only_for_an_idempotent_tool() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    // Its server refuses the first call with a 503 page: the gateway sends it again,
    // and the client gets the second call's answer.
    let retried = try_call(&f.eng, &format!("faulty__{FLAKY_IDEMPOTENT}"), json!({})).await?;
    match &retried {
        CallOutcome::Result(result) => assert_eq!(text_of(result), "ok"),
        other => panic!("expected the retried call's answer, got {other:?}"),
    }
    assert_eq!(f.faulty.calls(FLAKY_IDEMPOTENT), 2);
    // A tool not annotated idempotent may have run: sent once, the refusal answers.
    let refused = try_call(&f.eng, &format!("faulty__{FLAKY}"), json!({})).await?;
    assert_error(
        &refused,
        INTERNAL_ERROR,
        "\"faulty\" is unavailable: answered HTTP 503",
    );
    assert_eq!(f.faulty.calls(FLAKY), 1);
    let (_, metrics) = f.proxy.metrics().await?;
    let retries = gatehouse_tests::metrics::sample(
        &metrics,
        "gatehouse_upstream_retries_total",
        &[("workspace", "eng"), ("server", "faulty")],
    );
    assert_eq!(retries, Some(1.0), "{metrics}");
    f.still_serves().await
}

#[tokio::test]
async fn a_server_stream_that_keeps_closing_is_reopened_without_a_storm() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let client: AnsweringClient = connect_as(&f.proxy.ws_url("eng"), &f.eng_token).await?;
    let started = Instant::now();
    // Each of the faulty server's streams says its number once, then ends after a
    // second; the client's one stream carries the messages of several.
    wait_until(
        "messages of three upstream streams reach the client's one stream",
        STEP_TIMEOUT,
        || async {
            let texts: Vec<String> = client
                .service()
                .notifications("notifications/message")
                .iter()
                .filter_map(|m| m["data"].as_str().map(str::to_owned))
                .filter(|t| t.starts_with("faulty stream"))
                .collect();
            texts.len() >= 3
        },
    )
    .await?;
    f.others_answer().await?;
    let opened = f.faulty.streams_opened();
    let lifetimes = (started.elapsed().as_millis() / GET_STREAM_LIFETIME.as_millis()) as usize;
    assert!(
        opened <= lifetimes + 4,
        "{opened} streams opened in {:?}: the proxy reopens too eagerly",
        started.elapsed()
    );
    client.cancel().await?;
    f.still_serves().await
}

/// `n` calls of [`mixed_call`], eight at a time, on one session.
async fn faulty_calls(raw: &RawClient, n: usize) {
    let calls = (0..n).map(|i| {
        let tool = mixed_call(i);
        let raw = raw.clone();
        async move {
            let _ = raw
                .call_tool(i as u64, &format!("faulty__{tool}"), json!({}))
                .await;
        }
    });
    futures::stream::iter(calls)
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

#[tokio::test]
async fn a_thousand_faulty_calls_leak_neither_memory_nor_descriptors() -> anyhow::Result<()> {
    let f = Faults::start().await?;
    let mut raw = RawClient::new(f.proxy.ws_url("eng"), Some(&f.eng_token));
    raw.initialize().await?;
    faulty_calls(&raw, 200).await;
    let warm = f.proxy.usage()?;
    faulty_calls(&raw, 1_000).await;
    wait_until(
        "the proxy let go of every faulty reply",
        STEP_TIMEOUT,
        || async { f.faulty.open_replies() == 0 },
    )
    .await?;
    let after = f.proxy.usage()?;
    eprintln!("proxy after warm-up {warm:?}, after 1,000 faulty calls {after:?}");
    assert!(
        after.open_fds <= warm.open_fds + 4,
        "file descriptors grew: {warm:?} -> {after:?}"
    );
    assert!(
        after.rss_kib <= warm.rss_kib + 20 * 1024,
        "memory grew: {warm:?} -> {after:?}"
    );
    f.still_serves().await
}
