//! `initialize` and the client-facing session id.

use gatehouse_tests::{wait_until, RawClient, STEP_TIMEOUT};
use serde_json::{json, Value};

use crate::fixture::{Gateway, ENG_TOOLS};

#[tokio::test]
async fn initialize_opens_every_enabled_upstream_and_returns_an_opaque_session(
) -> anyhow::Result<()> {
    let gw = Gateway::start().await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    let init = client.initialize().await?;

    let result = init.result()?;
    assert_eq!(
        result.pointer("/serverInfo/name"),
        Some(&json!("gatehouse"))
    );
    assert_eq!(
        result.pointer("/protocolVersion"),
        Some(&json!("2025-06-18")),
        "a supported requested version is echoed"
    );
    assert!(
        result
            .pointer("/capabilities/tools")
            .is_some_and(Value::is_object),
        "the gateway advertises tools: {result}"
    );

    let session = init.session_id().expect("checked by initialize");
    assert!(!session.is_empty());
    assert!(
        session.bytes().all(|b| (0x21..=0x7e).contains(&b)),
        "Mcp-Session-Id must be visible ASCII: {session:?}"
    );
    for upstream in [&gw.github, &gw.notes] {
        assert_eq!(
            upstream.requests_for("initialize").len(),
            1,
            "{} was initialized once",
            upstream.label()
        );
        let issued = upstream.issued_sessions();
        assert_eq!(issued.len(), 1, "{}", upstream.label());
        assert!(
            !session.contains(issued[0].as_str()),
            "the client session {session:?} exposes {}'s session id {:?}",
            upstream.label(),
            issued[0]
        );
        wait_until(
            &format!("{} receives notifications/initialized", upstream.label()),
            STEP_TIMEOUT,
            || async {
                !upstream
                    .requests_for("notifications/initialized")
                    .is_empty()
            },
        )
        .await?;
    }
    assert!(
        gw.archive.requests().is_empty(),
        "a disabled server is never contacted"
    );
    assert!(
        gw.pager.requests().is_empty(),
        "another workspace's server is not contacted"
    );

    // Two initializes give two different sessions.
    let second = RawClient::new(gw.eng_url(), Some(&gw.alice))
        .send_initialize()
        .await?;
    assert_ne!(second.session_id(), Some(session));
    Ok(())
}

#[tokio::test]
async fn session_ids_are_required_verified_and_bound_to_token_and_workspace() -> anyhow::Result<()>
{
    let gw = Gateway::start().await?;
    let mut client = RawClient::new(gw.eng_url(), Some(&gw.alice));
    client.initialize().await?;
    let session = client.session.clone().expect("session");

    let missing = client.without_session().list_tools(1).await?;
    assert_eq!(missing.status, 400, "no Mcp-Session-Id: {}", missing.text());

    let chars: Vec<char> = session.chars().collect();
    for at in [0, chars.len() / 2, chars.len() - 1] {
        let mut tampered = chars.clone();
        tampered[at] = if chars[at] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        let mut forged = client.clone();
        forged.session = Some(tampered.clone());
        let response = forged.list_tools(2).await?;
        assert_eq!(
            response.status,
            404,
            "tampered at {at}: {tampered:?}: {}",
            response.text()
        );
    }
    for garbage in ["not-a-session", "0", &"A".repeat(session.len())] {
        let mut forged = client.clone();
        forged.session = Some(garbage.to_owned());
        let response = forged.list_tools(3).await?;
        assert_eq!(
            response.status,
            404,
            "session {garbage:?}: {}",
            response.text()
        );
    }

    let as_bob = client.with_token(Some(&gw.bob)).list_tools(4).await?;
    assert_eq!(
        as_bob.status,
        404,
        "alice's session presented with bob's token: {}",
        as_bob.text()
    );

    let in_ops = client
        .with_url(gw.proxy.ws_url("ops"))
        .with_token(Some(&gw.carol))
        .list_tools(5)
        .await?;
    assert_eq!(
        in_ops.status,
        404,
        "an eng session presented to ops with an ops token: {}",
        in_ops.text()
    );

    let genuine = client.list_tools(6).await?;
    assert_eq!(genuine.status, 200);
    assert_eq!(genuine.tool_names()?, ENG_TOOLS);
    Ok(())
}
