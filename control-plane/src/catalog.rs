//! The tool list a workspace's MCP clients see, for people to read: each enabled
//! server's tools (asked of the server itself with its headers and secrets, as the
//! gateway asks, over its own transport, Streamable HTTP or legacy HTTP+SSE, by the
//! install probe's client, to the addresses `--ask-servers` allows; a skill's as its
//! manifest declares them), filtered by the server's tool policy and named
//! `<server>__<tool>` by the same `gatehouse_config` functions the proxy uses. It
//! works from the snapshot the proxies are sent, so it lists what they serve. A
//! server that cannot be asked is listed with the reason, never with a secret.

use gatehouse_config::naming::exposed_name;
use gatehouse_config::policy::CompiledPolicy;
use gatehouse_config::template::HeaderTemplate;
use gatehouse_config::{McpServer, Transport};

use crate::outbound::AskServers;
use crate::probe;
use crate::state::App;

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
            match tools_of(app.ask_servers, &server).await {
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

async fn tools_of(ask_servers: AskServers, server: &McpServer) -> Result<Vec<CatalogTool>, String> {
    let policy = CompiledPolicy::compile(&server.policy).map_err(|e| format!("policy: {e}"))?;
    let listed: Vec<(String, String, bool)> = match server.transport {
        Transport::Skill => server
            .tools
            .iter()
            .map(|t| (t.name.clone(), t.description.clone(), t.read_only))
            .collect(),
        Transport::Sse => ask(ask_servers, server, true).await?,
        Transport::StreamableHttp => ask(ask_servers, server, false).await?,
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

/// `initialize` and `tools/list` against the server over its transport, with its
/// rendered headers.
async fn ask(
    ask_servers: AskServers,
    server: &McpServer,
    legacy_sse: bool,
) -> Result<Vec<(String, String, bool)>, String> {
    let headers = rendered_headers(server)?;
    let client = ask_servers.client(&server.url).map_err(|e| e.to_string())?;
    let listed = probe::server_tools(&client, &server.url, legacy_sse, headers)
        .await
        .map_err(|e| e.to_string())?;
    Ok(listed
        .into_iter()
        .map(|t| (t.name, t.description, t.read_only))
        .collect())
}
