//! JSON-RPC framing errors, simple messages and request body limits.

use gatehouse_tests::config::random_base62;
use gatehouse_tests::{connect, echo_of, within, RawClient, STEP_TIMEOUT};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::fixture::{call, Gateway};

#[tokio::test]
async fn json_rpc_framing_errors_and_simple_messages() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;

    let malformed = client.send(r#"{"jsonrpc":"2.0","id":1,"method":"#).await?;
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    assert_eq!(malformed.error_code()?, -32700, "{}", malformed.text());

    let batch = client
        .send(r#"[{"jsonrpc":"2.0","id":2,"method":"ping"}]"#)
        .await?;
    assert_eq!(
        batch.error_code()?,
        -32600,
        "HTTP {}: {}",
        batch.status,
        batch.text()
    );

    let unknown = client.request(3, "no/such", json!({})).await?;
    assert_ne!(unknown.status, 404, "404 would mean the session is gone");
    assert_eq!(unknown.error_code()?, -32601, "{}", unknown.text());
    assert_eq!(unknown.message()?["id"], json!(3));

    let ping = client
        .send(r#"{"jsonrpc":"2.0","id":"p-7","method":"ping"}"#)
        .await?;
    assert_eq!(ping.status, 200);
    assert_eq!(
        ping.message()?["id"],
        json!("p-7"),
        "string ids come back as sent"
    );
    assert_eq!(ping.result()?, &json!({}));

    // Ids come back exactly as sent, including integers beyond f64 precision.
    for id in [json!("call-1"), json!(9_007_199_254_740_993_u64), json!(0)] {
        let response = client
            .send_json(&json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "github__create_issue", "arguments": {}},
            }))
            .await?;
        assert_eq!(response.message()?["id"], id, "{}", response.text());
        assert_eq!(response.tool_echo()?["tool"], json!("create_issue"));
    }

    let unsupported = client
        .post(r#"{"jsonrpc":"2.0","id":4,"method":"ping"}"#)
        .header("mcp-protocol-version", "1999-01-01")
        .send()
        .await?;
    assert_eq!(
        unsupported.status,
        400,
        "unsupported MCP-Protocol-Version: {}",
        unsupported.text()
    );

    let notification = client.notify("notifications/roots/list_changed").await?;
    assert_eq!(notification.status, 202, "{}", notification.text());
    assert!(notification.body.is_empty(), "{}", notification.text());
    Ok(())
}

#[tokio::test]
async fn a_mebibyte_argument_round_trips_intact() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let client = connect(&gw.eng_url(), &gw.alice).await?;
    let text = random_base62(1 << 20);
    let result = call(&client, "notes__echo_size", json!({"text": text})).await?;
    assert_eq!(
        echo_of(&result)?,
        json!({"len": 1 << 20, "sha256": hex::encode(Sha256::digest(text.as_bytes()))})
    );
    client.cancel().await?;
    Ok(())
}

/// A call larger than 64 KiB (once past Pingora's replay buffer, which set such calls
/// on a path of their own) gets a framed reply, or the client's connection would end
/// with every such call.
#[tokio::test]
async fn a_reply_to_a_call_over_64_kib_keeps_the_connection() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    let text = random_base62(100 << 10);
    let response = client
        .send_json(&json!({
            "jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "notes__echo_size", "arguments": {"text": text}},
        }))
        .await?;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.framed(),
        "reply delimited by closing the connection: {:?}",
        response.headers
    );
    assert_ne!(
        response.header("connection"),
        Some("close"),
        "{:?}",
        response.headers
    );
    let echoed = response.result()?["content"][0]["text"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no text content: {}", response.text()))?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(echoed)?,
        json!({"len": 100 << 10, "sha256": hex::encode(Sha256::digest(text.as_bytes()))})
    );
    Ok(())
}

#[tokio::test]
async fn bodies_over_the_default_limit_get_413() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "notes__echo_size", "arguments": {"text": "x".repeat(5 << 20)}},
    });
    let response = client
        .post(serde_json::to_vec(&body)?)
        .send_reading_early()
        .await?;
    assert_eq!(response.status, 413, "{}", response.text());
    assert!(
        response
            .content_type()
            .is_some_and(|ct| ct.starts_with("application/json")),
        "413 content-type {:?}",
        response.content_type()
    );
    response.json()?;
    assert!(
        gw.notes.calls().is_empty(),
        "an oversized call reached the upstream"
    );

    // The session is still usable afterwards.
    let ok = client
        .call_tool(2, "notes__echo_size", json!({"text": "abc"}))
        .await?;
    assert_eq!(ok.tool_echo()?["len"], json!(3));
    Ok(())
}

/// What an rmcp/reqwest (hyper) client sees. It reads the response only after its
/// write fails or finishes, so a 413 sent early and followed by a close races the
/// upload: the client often reports just "broken pipe" unless the server drains the
/// request body before closing. Several attempts make a lost race show reliably.
#[tokio::test]
async fn a_hyper_client_sending_too_much_sees_the_413() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    let body = json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "notes__echo_size", "arguments": {"text": "x".repeat(5 << 20)}},
    });
    for attempt in 1..=10 {
        let response = client
            .send_json(&body)
            .await
            .map_err(|e| anyhow::anyhow!("attempt {attempt}: no 413 seen: {e:#}"))?;
        assert_eq!(
            response.status,
            413,
            "attempt {attempt}: {}",
            response.text()
        );
        response.json()?;
    }
    Ok(())
}

#[tokio::test]
async fn the_configured_body_limit_applies() -> anyhow::Result<()> {
    let gw = Gateway::start_with(|cfg| cfg.limits_mut().max_body_bytes = 64 * 1024).await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    let fits = client
        .call_tool(
            1,
            "notes__echo_size",
            json!({"text": "y".repeat(32 * 1024)}),
        )
        .await?;
    assert_eq!(fits.tool_echo()?["len"], json!(32 * 1024));
    let too_big = client
        .call_tool(
            2,
            "notes__echo_size",
            json!({"text": "y".repeat(100 * 1024)}),
        )
        .await?;
    assert_eq!(too_big.status, 413, "{}", too_big.text());
    Ok(())
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gateway::start_with(|cfg| cfg.limits_mut().request_head_timeout_ms = 1_000).await?;
    let mut slow = tokio::net::TcpStream::connect(gw.proxy.addr()).await?;
    let started = std::time::Instant::now();
    slow.write_all(b"POST /ws/eng HTTP/1.1\r\nHost: gw\r\n")
        .await?;
    // A header line every 200 ms: each read is quick, the head never completes.
    let trickle = async {
        for i in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            if slow
                .write_all(format!("X-Slow-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest).await;
    };
    within("the slow head cut off", STEP_TIMEOUT, trickle).await?;
    let held = started.elapsed();
    assert!(
        held < std::time::Duration::from_secs(5),
        "a trickled head held the connection for {held:?}"
    );
    // Everyone else is served as before.
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    Ok(())
}

/// Reads what `stream` gives until it ends or fails; how many bytes that was.
async fn drain(stream: &mut tokio::net::TcpStream) -> usize {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return total,
            Ok(n) => total += n,
        }
    }
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_is_let_go() -> anyhow::Result<()> {
    use gatehouse_tests::{ConfigBuilder, Proxy, ServerSpec, TokenSpec, Upstream, UpstreamTool};
    use tokio::io::AsyncWriteExt;
    // Far more than the sockets between the proxy and the client buffer.
    const DESCRIPTION: usize = 24 << 20;
    let big = Upstream::start(
        "big",
        [UpstreamTool::new("tool").description("x".repeat(DESCRIPTION))],
    )
    .await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("eng", ServerSpec::new("big", &big.url()));
    cfg.limits_mut().slow_read_timeout_ms = 1_000;
    let token = cfg.token_with("eng", TokenSpec::named("alice"));
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    let raw = RawClient::new(proxy.ws_url("eng"), Some(&token));
    let init = raw.send_initialize().await?;
    let session = init
        .session_id()
        .ok_or_else(|| anyhow::anyhow!("no session: {}", init.text()))?
        .to_owned();
    // Its tools/list answer is as large as the description.
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#;
    let mut client = tokio::net::TcpStream::connect(proxy.addr()).await?;
    let head = format!(
        "POST /ws/eng HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\n\
         Mcp-Session-Id: {session}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    client.write_all(head.as_bytes()).await?;
    // The client reads nothing for well past the timeout: the proxy gives up on it.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let read = within(
        "the rest of the cut-off answer",
        STEP_TIMEOUT,
        drain(&mut client),
    )
    .await?;
    assert!(
        read < DESCRIPTION,
        "a client that stopped reading got its whole answer ({read} bytes)"
    );
    // A client that reads gets all of it.
    let mut reader = RawClient::new(proxy.ws_url("eng"), Some(&token));
    reader.initialize().await?;
    let listed = reader.list_tools(2).await?;
    assert!(
        listed.body.len() > DESCRIPTION,
        "{} bytes",
        listed.body.len()
    );
    Ok(())
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_at_once() -> anyhow::Result<()> {
    use gatehouse_tests::metrics::sample;
    use tokio::net::TcpStream;
    let gw = Gateway::start_with(|cfg| cfg.limits_mut().max_connections = 2).await?;
    let open = || async {
        let (_, metrics) = gw.proxy.metrics().await?;
        anyhow::Ok(sample(&metrics, "gatehouse_open_connections", &[]).unwrap_or(-1.0))
    };
    gatehouse_tests::wait_until("no client connection open", STEP_TIMEOUT, || async {
        open().await.is_ok_and(|n| n == 0.0)
    })
    .await?;
    // Two idle connections hold both places.
    let first = TcpStream::connect(gw.proxy.addr()).await?;
    let _second = TcpStream::connect(gw.proxy.addr()).await?;
    gatehouse_tests::wait_until("two connections open", STEP_TIMEOUT, || async {
        open().await.is_ok_and(|n| n == 2.0)
    })
    .await?;
    // A third is answered at once, before it sends anything, and closed.
    let mut third = TcpStream::connect(gw.proxy.addr()).await?;
    let mut answer = Vec::new();
    within("the refusal", STEP_TIMEOUT, async {
        tokio::io::AsyncReadExt::read_to_end(&mut third, &mut answer).await
    })
    .await??;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{answer}"
    );
    assert!(answer.contains("\r\nRetry-After: 1\r\n"), "{answer}");
    assert!(
        answer.contains("Gateway busy: 2 client connections are open"),
        "{answer}"
    );
    let (_, metrics) = gw.proxy.metrics().await?;
    assert_eq!(
        sample(&metrics, "gatehouse_connections_refused_total", &[]),
        Some(1.0),
        "{metrics}"
    );
    // One closes: its place serves a new client.
    drop(first);
    gatehouse_tests::wait_until("a place free again", STEP_TIMEOUT, || async {
        open().await.is_ok_and(|n| n == 1.0)
    })
    .await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    Ok(())
}

/// Sends `head` (a request head with its blank line) on a new connection; what came
/// back before the proxy closed it.
async fn answer_to_head(addr: std::net::SocketAddr, head: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut client = tokio::net::TcpStream::connect(addr).await?;
    // The proxy may answer and close before it has read all of a huge head.
    let _ = client.write_all(head.as_bytes()).await;
    let mut answer = Vec::new();
    let read = within("the answer to a bad head", STEP_TIMEOUT, async {
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut answer).await
    })
    .await?;
    if let Err(e) = read {
        anyhow::ensure!(!answer.is_empty(), "no answer, then {e}");
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn request_heads_with_too_many_or_too_large_headers_are_refused() -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let start = "POST /ws/eng HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n";
    let many: String = (0..300).map(|i| format!("X-Many-{i}: y\r\n")).collect();
    let answer = answer_to_head(gw.proxy.addr(), &format!("{start}{many}\r\n")).await?;
    assert!(
        answer.starts_with("HTTP/1.1 400 "),
        "300 headers: {answer:?}"
    );
    let huge = format!("X-Huge: {}\r\n", "y".repeat(2 << 20));
    let answer = answer_to_head(gw.proxy.addr(), &format!("{start}{huge}\r\n")).await?;
    assert!(
        answer.starts_with("HTTP/1.1 400 "),
        "a 2 MiB header: {answer:?}"
    );
    // Everyone else is served as before.
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    Ok(())
}
