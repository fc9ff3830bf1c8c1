//! The rest of the MCP surface through the gateway: prompts, resources, templates,
//! subscriptions, completions, logging levels, and merged lists that page through
//! every upstream.

use std::collections::BTreeSet;

use gatehouse_tests::{
    connect, within, ConfigBuilder, Proxy, RawClient, ServerSpec, Upstream, UpstreamTool,
    STEP_TIMEOUT,
};
use serde_json::{json, Value};

use crate::fixture::names;

/// A workspace `docs` with two servers offering prompts and resources, and one with
/// tools only.
struct Docs {
    proxy: Proxy,
    _cfg: ConfigBuilder,
    notes: Upstream,
    github: Upstream,
    plain: Upstream,
    token: String,
}

async fn docs() -> anyhow::Result<Docs> {
    let notes = Upstream::builder("notes")
        .tools([UpstreamTool::new("search")])
        .prompts(["summarize", "draft"])
        .resources(["file:///notes/a.md", "memo://insights"])
        .templates(["file:///notes/{path}"])
        .start()
        .await?;
    let github = Upstream::builder("github")
        .prompts(["review"])
        .resources(["repo://gatehouse/README.md"])
        .templates(["repo://{owner}/{repo}/issues/{n}"])
        .start()
        .await?;
    let plain = Upstream::start("plain", [UpstreamTool::new("ping")]).await?;
    let mut cfg = ConfigBuilder::new()?;
    cfg.server("docs", ServerSpec::new("notes", &notes.url()))
        .server("docs", ServerSpec::new("github", &github.url()))
        .server("docs", ServerSpec::new("plain", &plain.url()));
    let token = cfg.token("docs");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;
    Ok(Docs {
        proxy,
        _cfg: cfg,
        notes,
        github,
        plain,
        token,
    })
}

/// RFC 6570 level-1 expansion, as a client expands a resource template.
fn expand(template: &str, var: &str, value: &str) -> String {
    let encoded: String = value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    template.replace(&format!("{{{var}}}"), &encoded)
}

#[tokio::test]
async fn prompts_resources_and_completions_are_namespaced_and_routed() -> anyhow::Result<()> {
    let d = docs().await?;
    let mut client = RawClient::new(d.proxy.ws_url("docs"), Some(&d.token));
    let init = client.initialize().await?;
    assert_eq!(
        init.result()?["capabilities"],
        json!({
            "tools": {"listChanged": true},
            "prompts": {"listChanged": true},
            "resources": {"listChanged": true, "subscribe": true},
            "completions": {},
            "logging": {},
        }),
        "the union of what the upstreams offer"
    );

    // Prompts: prefixed, in server order, and routed back with the name stripped.
    let prompts = client.request(1, "prompts/list", json!({})).await?;
    let mut all = names(prompts.result()?, "prompts", "name");
    let mut cursor = prompts.result()?["nextCursor"].as_str().map(str::to_owned);
    while let Some(c) = cursor {
        let page = client
            .request(1, "prompts/list", json!({"cursor": c}))
            .await?;
        all.extend(names(page.result()?, "prompts", "name"));
        cursor = page.result()?["nextCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(all, ["github__review", "notes__summarize", "notes__draft"]);
    assert!(
        d.plain.received("prompts/list").is_empty(),
        "plain has no prompts: not asked"
    );

    let got = client
        .request(
            2,
            "prompts/get",
            json!({"name": "notes__summarize", "arguments": {"topic": "q3"}}),
        )
        .await?;
    let messages = &got.result()?["messages"];
    let echo: Value = serde_json::from_str(messages[0]["content"]["text"].as_str().unwrap_or(""))?;
    assert_eq!(
        echo,
        json!({"server": "notes", "prompt": "summarize", "arguments": {"topic": "q3"}})
    );
    assert_eq!(
        messages[1]["content"]["resource"]["uri"],
        json!("gatehouse://notes/prompt://summarize/context"),
        "embedded resources get exposed URIs"
    );
    assert_eq!(
        d.notes.received("prompts/get")[0]["name"],
        json!("summarize")
    );
    let unknown = client
        .request(3, "prompts/get", json!({"name": "notes__nope"}))
        .await?;
    assert_eq!(unknown.error_code()?, -32602, "{}", unknown.text());
    let unknown = client
        .request(3, "prompts/get", json!({"name": "nosuch__review"}))
        .await?;
    assert_eq!(
        unknown.error()?["message"],
        json!("Unknown prompt: nosuch__review")
    );

    // Resources: URIs exposed as gatehouse://<server>/<original>.
    let resources = client.request(4, "resources/list", json!({})).await?;
    let mut uris = names(resources.result()?, "resources", "uri");
    let mut cursor = resources.result()?["nextCursor"]
        .as_str()
        .map(str::to_owned);
    while let Some(c) = cursor {
        let page = client
            .request(4, "resources/list", json!({"cursor": c}))
            .await?;
        uris.extend(names(page.result()?, "resources", "uri"));
        cursor = page.result()?["nextCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        uris,
        [
            "gatehouse://github/repo://gatehouse/README.md",
            "gatehouse://notes/file:///notes/a.md",
            "gatehouse://notes/memo://insights",
        ]
    );
    let read = client
        .request(
            5,
            "resources/read",
            json!({"uri": "gatehouse://notes/memo://insights"}),
        )
        .await?;
    let content = &read.result()?["contents"][0];
    assert_eq!(content["uri"], json!("gatehouse://notes/memo://insights"));
    assert_eq!(
        serde_json::from_str::<Value>(content["text"].as_str().unwrap_or(""))?,
        json!({"server": "notes", "uri": "memo://insights"})
    );
    let foreign = client
        .request(6, "resources/read", json!({"uri": "memo://insights"}))
        .await?;
    assert_eq!(foreign.error_code()?, -32002, "{}", foreign.text());
    let missing = client
        .request(
            6,
            "resources/read",
            json!({"uri": "gatehouse://notes/missing:x"}),
        )
        .await?;
    assert_eq!(
        missing.error_code()?,
        -32002,
        "the upstream's own error: {}",
        missing.text()
    );

    // Templates: the client expands the exposed template; the gateway maps the result
    // back to exactly what the upstream's template would have produced.
    let templates = client
        .request(7, "resources/templates/list", json!({}))
        .await?;
    let mut exposed = names(templates.result()?, "resourceTemplates", "uriTemplate");
    let mut cursor = templates.result()?["nextCursor"]
        .as_str()
        .map(str::to_owned);
    while let Some(c) = cursor {
        let page = client
            .request(7, "resources/templates/list", json!({"cursor": c}))
            .await?;
        exposed.extend(names(page.result()?, "resourceTemplates", "uriTemplate"));
        cursor = page.result()?["nextCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(
        exposed,
        [
            "gatehouse://github/repo://{owner}/{repo}/issues/{n}",
            "gatehouse://notes/file:///notes/{path}",
        ]
    );
    let uri = expand(&exposed[1], "path", "q3 plans/draft.md");
    let read = client
        .request(8, "resources/read", json!({"uri": uri}))
        .await?;
    assert_eq!(read.result()?["contents"][0]["uri"], json!(uri));
    assert_eq!(
        d.notes
            .received("resources/read")
            .last()
            .map(|p| p["uri"].clone()),
        Some(json!(expand(
            "file:///notes/{path}",
            "path",
            "q3 plans/draft.md"
        )))
    );

    // Subscriptions reach the server with its own URI.
    let sub = client
        .request(
            9,
            "resources/subscribe",
            json!({"uri": "gatehouse://github/repo://gatehouse/README.md"}),
        )
        .await?;
    assert_eq!(sub.result()?, &json!({}));
    let unsub = client
        .request(
            10,
            "resources/unsubscribe",
            json!({"uri": "gatehouse://github/repo://gatehouse/README.md"}),
        )
        .await?;
    unsub.result()?;
    assert_eq!(
        d.github.received("resources/subscribe"),
        [json!({"uri": "repo://gatehouse/README.md"})]
    );
    assert_eq!(
        d.github.received("resources/unsubscribe"),
        [json!({"uri": "repo://gatehouse/README.md"})]
    );

    // Completions route by their ref.
    let done = client
        .request(
            11,
            "completion/complete",
            json!({
                "ref": {"type": "ref/prompt", "name": "notes__summarize"},
                "argument": {"name": "topic", "value": "q"},
            }),
        )
        .await?;
    assert_eq!(
        done.result()?["completion"]["values"],
        json!(["notes:summarize:q"])
    );
    let done = client
        .request(12, "completion/complete", json!({
            "ref": {"type": "ref/resource", "uri": "gatehouse://github/repo://{owner}/{repo}/issues/{n}"},
            "argument": {"name": "owner", "value": "ac"},
        }))
        .await?;
    assert_eq!(
        done.result()?["completion"]["values"],
        json!(["github:repo://{owner}/{repo}/issues/{n}:ac"])
    );
    let nowhere = client
        .request(
            13,
            "completion/complete",
            json!({
                "ref": {"type": "ref/prompt", "name": "review"},
                "argument": {"name": "x", "value": ""},
            }),
        )
        .await?;
    assert_eq!(nowhere.error_code()?, -32602);

    // logging/setLevel applies to every server.
    let level = client
        .request(14, "logging/setLevel", json!({"level": "warning"}))
        .await?;
    assert_eq!(level.result()?, &json!({}));
    for upstream in [&d.notes, &d.github, &d.plain] {
        assert_eq!(
            upstream.received("logging/setLevel"),
            [json!({"level": "warning"})],
            "{}",
            upstream.label()
        );
    }
    Ok(())
}

#[tokio::test]
async fn merged_lists_page_through_every_upstream_without_loss_or_duplicates() -> anyhow::Result<()>
{
    // Three servers paging 1, 2 and 5 items at a time, with 7, 4 and 11 items of each kind.
    let specs = [
        ("alpha", 1usize, 7usize),
        ("bravo", 2, 4),
        ("charlie", 5, 11),
    ];
    let mut upstreams = Vec::new();
    let mut cfg = ConfigBuilder::new()?;
    for (label, page, n) in specs {
        let upstream = Upstream::builder(label)
            .page_size(page)
            .tools((0..n).map(|i| UpstreamTool::new(format!("t{i}"))))
            .prompts((0..n).map(|i| format!("p{i}")))
            .resources((0..n).map(|i| format!("mem://{label}/{i}")))
            .templates((0..n).map(|i| format!("tpl://{label}/{i}/{{x}}")))
            .start()
            .await?;
        // Configured in reverse order: listing must still follow slug order.
        cfg.server("paged", ServerSpec::new(label, &upstream.url()));
        upstreams.push(upstream);
    }
    let token = cfg.token("paged");
    cfg.write()?;
    let proxy = Proxy::start(cfg.path()).await?;

    let expected = |f: &dyn Fn(&str, usize) -> String| -> Vec<String> {
        specs
            .iter()
            .flat_map(|(label, _, n)| (0..*n).map(move |i| (label, i)))
            .map(|(label, i)| f(label, i))
            .collect()
    };

    // The rmcp client follows nextCursor to the end.
    let client = connect(&proxy.ws_url("paged"), &token).await?;
    let peer = client.peer();
    let prompts = within("prompts", STEP_TIMEOUT, peer.list_all_prompts()).await??;
    assert_eq!(
        prompts.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        expected(&|l, i| format!("{l}__p{i}"))
    );
    let resources = within("resources", STEP_TIMEOUT, peer.list_all_resources()).await??;
    assert_eq!(
        resources.iter().map(|r| r.uri.clone()).collect::<Vec<_>>(),
        expected(&|l, i| format!("gatehouse://{l}/mem://{l}/{i}"))
    );
    let templates = within(
        "templates",
        STEP_TIMEOUT,
        peer.list_all_resource_templates(),
    )
    .await??;
    assert_eq!(
        templates
            .iter()
            .map(|t| t.uri_template.clone())
            .collect::<Vec<_>>(),
        expected(&|l, i| format!("gatehouse://{l}/tpl://{l}/{i}/{{x}}"))
    );
    let tools = within("tools", STEP_TIMEOUT, peer.list_all_tools()).await??;
    assert_eq!(
        tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>(),
        expected(&|l, i| format!("{l}__t{i}"))
    );
    client.cancel().await?;

    // One gateway page is one upstream page: page sizes show through, each page comes
    // from one server, and the walk takes exactly as many pages as the upstreams have.
    let mut raw = RawClient::new(proxy.ws_url("paged"), Some(&token));
    raw.initialize().await?;
    let mut cursor: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let params = match &cursor {
            Some(c) => json!({"cursor": c}),
            None => json!({}),
        };
        let page = raw
            .request(pages.len() as u64, "prompts/list", params)
            .await?;
        let result = page.result()?.clone();
        pages.push(names(&result, "prompts", "name"));
        cursor = result["nextCursor"].as_str().map(str::to_owned);
        if cursor.is_none() {
            break;
        }
        anyhow::ensure!(pages.len() < 100, "the gateway pages forever");
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1, 1, 1, 1, 1, 1, 1, 2, 2, 5, 5, 1], "{pages:?}");
    for page in &pages {
        let servers: BTreeSet<&str> = page.iter().filter_map(|n| n.split("__").next()).collect();
        assert_eq!(servers.len(), 1, "a page mixes servers: {page:?}");
    }

    let bad = raw
        .request(99, "prompts/list", json!({"cursor": "not-ours"}))
        .await?;
    assert_eq!(bad.error_code()?, -32602, "{}", bad.text());
    Ok(())
}
