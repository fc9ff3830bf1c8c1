//! The tool list a workspace's MCP clients see, for people to read: each enabled
//! server's tools (asked of the server itself with its headers and secrets, as the
//! gateway asks: over Streamable HTTP with rmcp's client, over legacy HTTP+SSE with
//! the install probe's; a skill's as its manifest declares them),
//! filtered by the server's tool policy and named `<server>__<tool>` by the same
//! `gatehouse_config` functions the proxy uses. It works from the snapshot the
//! proxies are sent, so it lists what they serve. A server that cannot be asked is
//! listed with the reason, never with a secret.

use std::collections::HashMap;
use std::time::Duration;

use gatehouse_config::naming::exposed_name;
use gatehouse_config::policy::CompiledPolicy;
use gatehouse_config::template::HeaderTemplate;
use gatehouse_config::{McpServer, Transport};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;

use crate::probe;
use crate::state::App;

/// How long one server may take to answer `initialize` and `tools/list`.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A tool as a client of the workspace sees it.
#[derive(Debug, Clone)]
pub struct CatalogTool {
    /// The name clients call (`<server>__<tool>`, shortened if needed).
    pub name: String,
    pub description: String,
    pub read_only: bool,
}

/// One server's part of the list.
#[derive(Debug, Clone)]
pub struct ServerTools {
    pub server: String,
    pub tools: Vec<CatalogTool>,
    /// Why its tools could not be listed.
    pub problem: Option<String>,
}

/// The merged tool list of workspace `slug`, server by server (enabled ones only),
/// tools sorted by name. The caller has already decided the user may see it.
pub async fn of_workspace(app: &App, slug: &str) -> anyhow::Result<Vec<ServerTools>> {
    let snapshot = app.build_snapshot().await?;
    let Some(workspace) = snapshot.workspaces.into_iter().find(|w| w.slug == slug) else {
        return Ok(vec![]);
    };
    let asks = workspace
        .servers
        .into_iter()
        .filter(|s| s.enabled)
        .map(|server| async move {
            match tools_of(&server).await {
                Ok(mut tools) => {
                    tools.sort_by(|a, b| a.name.cmp(&b.name));
                    ServerTools {
                        server: server.slug,
                        tools,
                        problem: None,
                    }
                }
                Err(problem) => ServerTools {
                    server: server.slug,
                    tools: vec![],
                    problem: Some(problem),
                },
            }
        });
    Ok(futures::future::join_all(asks).await)
}

async fn tools_of(server: &McpServer) -> Result<Vec<CatalogTool>, String> {
    let policy = CompiledPolicy::compile(&server.policy).map_err(|e| format!("policy: {e}"))?;
    let listed: Vec<(String, String, bool)> = match server.transport {
        Transport::Skill => server
            .tools
            .iter()
            .map(|t| (t.name.clone(), t.description.clone(), t.read_only))
            .collect(),
        Transport::Sse => ask_legacy(server).await?,
        Transport::StreamableHttp => ask(server).await?,
    };
    Ok(listed
        .into_iter()
        .filter(|(name, _, read_only)| policy.exposes(name, *read_only))
        .map(|(name, description, read_only)| CatalogTool {
            name: exposed_name(&server.slug, &name),
            description,
            read_only,
        })
        .collect())
}

/// The server's headers with its secrets filled in.
fn rendered_headers(server: &McpServer) -> Result<http::HeaderMap, String> {
    let mut headers = http::HeaderMap::new();
    for (name, template) in &server.headers {
        let value = HeaderTemplate::parse(template)
            .map_err(|e| format!("header {name}: {e}"))?
            .render(&server.secrets)
            .map_err(|missing| format!("secret {} is not set", missing.name))?;
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("{name:?} is not a header name"))?;
        let value = http::HeaderValue::from_str(&value)
            .map_err(|_| format!("header {name} is not a valid header value"))?;
        headers.insert(name, value);
    }
    Ok(headers)
}

/// A legacy HTTP+SSE server's tools, over one session of the install probe's client.
async fn ask_legacy(server: &McpServer) -> Result<Vec<(String, String, bool)>, String> {
    let headers = rendered_headers(server)?;
    let listed = probe::legacy_tools(&reqwest::Client::new(), &server.url, headers)
        .await
        .map_err(|e| e.to_string())?;
    Ok(listed
        .into_iter()
        .map(|t| (t.name, t.description, t.read_only))
        .collect())
}

/// `initialize` and `tools/list` against the server, with its rendered headers.
async fn ask(server: &McpServer) -> Result<Vec<(String, String, bool)>, String> {
    let headers: HashMap<_, _> = rendered_headers(server)?
        .into_iter()
        .filter_map(|(k, v)| Some((k?, v)))
        .collect();
    let mut config = StreamableHttpClientTransportConfig::with_uri(server.url.clone());
    config.custom_headers = headers;
    let transport = StreamableHttpClientTransport::from_config(config);
    let listed = tokio::time::timeout(ASK_TIMEOUT, async {
        let client = ().serve(transport).await.map_err(|e| e.to_string())?;
        let tools = client
            .peer()
            .list_all_tools()
            .await
            .map_err(|e| e.to_string());
        let _ = client.cancel().await;
        tools
    })
    .await
    .map_err(|_| format!("{} did not answer within {ASK_TIMEOUT:?}", server.url))?
    .map_err(|e| format!("{}: {e}", server.url))?;
    Ok(listed
        .into_iter()
        .map(|t| {
            let read_only = t
                .annotations
                .as_ref()
                .and_then(|a| a.read_only_hint)
                .unwrap_or(false);
            (
                t.name.to_string(),
                t.description.map(|d| d.to_string()).unwrap_or_default(),
                read_only,
            )
        })
        .collect())
}
