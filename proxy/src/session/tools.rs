//! The tool catalogs of this process: each workspace's merged tool list, and each
//! server's own list it was built from, kept until the server's config changes or it
//! says its list changed. Only the servers whose lists are not cached are asked, in
//! parallel, and concurrent cold builds of one workspace wait for one fan-out.

use std::sync::Arc;

use dashmap::DashMap;
use gatehouse_config::Naming;
use gatehouse_mcp::catalog::{ServerTools, ToolCatalog, ToolList};
use gatehouse_mcp::envelope::SessionEnvelope;

use crate::config::runtime::{Runtime, WorkspaceRt};
use crate::upstream::error::UpstreamError;
use crate::upstream::upstreams::Upstreams;

/// A server's tool list, valid while the server's fingerprint is unchanged.
struct CachedTools {
    fingerprint: [u8; 16],
    tools: ToolList,
}

pub struct Catalogs {
    catalogs: DashMap<String, Arc<ToolCatalog>>,
    /// Held while a workspace's catalog is built, so concurrent cold `tools/list`s
    /// (and the fetch started after `initialize`) wait for one fan-out instead of each
    /// making their own. The warm path never touches it.
    builds: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
    /// (workspace, server) -> the upstream's tool list.
    server_tools: DashMap<(String, String), CachedTools>,
    /// `gatehouse_tool_name_collisions`, per workspace, set at each build.
    collisions: prometheus::IntGaugeVec,
}

impl Catalogs {
    pub fn new(collisions: prometheus::IntGaugeVec) -> Catalogs {
        Catalogs {
            catalogs: DashMap::new(),
            builds: DashMap::new(),
            server_tools: DashMap::new(),
            collisions,
        }
    }

    /// Drops what a new config made stale: lists of servers whose config changed,
    /// catalogs of workspaces that are gone.
    pub fn retain_for(&self, rt: &Runtime) {
        self.server_tools.retain(|(ws, server), cached| {
            rt.workspaces
                .get(ws)
                .and_then(|w| w.server(server))
                .is_some_and(|s| s.fingerprint == cached.fingerprint)
        });
        self.catalogs.retain(|ws, _| rt.workspaces.contains_key(ws));
        self.builds.retain(|ws, _| rt.workspaces.contains_key(ws));
    }

    /// Forgets a server's cached tool list (it said its list changed); the next
    /// `tools/list` of the workspace fetches it again.
    pub fn invalidate(&self, workspace: &str, server: &str) {
        self.server_tools
            .remove(&(workspace.to_string(), server.to_string()));
        self.catalogs.remove(workspace);
    }

    /// The workspace's merged tool catalog, from cache when fresh.
    pub async fn catalog(
        &self,
        upstreams: &Upstreams,
        rt: &Runtime,
        ws: &WorkspaceRt,
        env: &SessionEnvelope,
    ) -> Result<Arc<ToolCatalog>, UpstreamError> {
        if let Some(c) = self.fresh(rt, ws) {
            return Ok(c);
        }
        let build = self.builds.entry(ws.slug.clone()).or_default().clone();
        let _building = build.lock().await;
        // Built by whoever held the lock before us?
        if let Some(c) = self.fresh(rt, ws) {
            return Ok(c);
        }
        let fetches = ws.listed_servers().map(|server| async move {
            let key = (ws.slug.clone(), server.slug.clone());
            if let Some(entry) = self.server_tools.get(&key) {
                if entry.fingerprint == server.fingerprint {
                    return Ok(Some(entry.tools.clone()));
                }
            }
            match upstreams
                .list_all(rt, env, server, "tools/list", "tools")
                .await
            {
                Ok(tools) => {
                    let tools = Arc::new(tools);
                    self.server_tools.insert(
                        key,
                        CachedTools {
                            fingerprint: server.fingerprint,
                            tools: tools.clone(),
                        },
                    );
                    Ok(Some(tools))
                }
                // The client's own upstream session is gone: it must re-initialize.
                Err(UpstreamError::SessionGone) => Err(UpstreamError::SessionGone),
                // Counted in the upstream error metrics by `Upstreams::ask`.
                Err(e) => {
                    tracing::warn!(workspace = %ws.slug, server = %server.slug, error = %e, "tools/list from upstream failed");
                    Ok(None)
                }
            }
        });
        let lists = futures::future::try_join_all(fetches).await?;
        let parts: Vec<ServerTools<'_>> = ws
            .listed_servers()
            .zip(lists)
            .map(|(server, tools)| ServerTools {
                server: &server.slug,
                bare: server.naming == Naming::Bare,
                policy: &server.policy,
                overrides: &server.overrides,
                tools,
            })
            .collect();
        let catalog = Arc::new(ToolCatalog::build(rt.generation, &parts));
        for c in &catalog.collisions {
            tracing::warn!(workspace = %ws.slug, server = %c.server, tool = %c.tool, name = %c.name, "tool left out: another tool of the workspace already has its exposed name");
        }
        self.collisions
            .with_label_values(&[&ws.slug])
            .set(catalog.collisions.len() as i64);
        self.catalogs.insert(ws.slug.clone(), catalog.clone());
        Ok(catalog)
    }

    /// The workspace's catalog if it may answer for this config generation now.
    pub fn fresh(&self, rt: &Runtime, ws: &WorkspaceRt) -> Option<Arc<ToolCatalog>> {
        self.catalogs
            .get(&ws.slug)
            .filter(|c| c.is_fresh(rt.generation))
            .map(|c| c.clone())
    }
}
