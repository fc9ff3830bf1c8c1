//! Merged lists of prompts, resources and resource templates. Unlike tools (merged
//! whole and cached, because calls route by them), these are paged straight through:
//! the gateway walks the workspace's servers in slug order and hands out one upstream
//! page per gateway page, with a [`ListCursor`] that says where to continue. Items are
//! renamed on the way: prompt names get the `<server>__` prefix, URIs the
//! `gatehouse://<server>/` one (a bare server's pass as they are).

use std::time::Duration;

use serde_json::{json, Value};

use gatehouse_mcp::cursor::{BadCursor, ListCursor};
use gatehouse_mcp::envelope::SessionEnvelope;
use gatehouse_mcp::jsonrpc::METHOD_NOT_FOUND;

use crate::config::runtime::{Runtime, ServerRt, WorkspaceRt};
use crate::live::live;
use crate::upstream::error::UpstreamError;
use crate::upstream::upstreams::Upstreams;

/// Upstream pages fetched for one gateway page at most, when upstreams keep
/// answering empty pages.
const MAX_CALLS_PER_PAGE: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Prompts,
    Resources,
    Templates,
}

impl ListKind {
    pub fn method(self) -> &'static str {
        match self {
            ListKind::Prompts => "prompts/list",
            ListKind::Resources => "resources/list",
            ListKind::Templates => "resources/templates/list",
        }
    }

    /// The result field holding the items.
    pub fn items(self) -> &'static str {
        match self {
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::Templates => "resourceTemplates",
        }
    }

    fn capability(self) -> &'static str {
        match self {
            ListKind::Prompts => "prompts",
            ListKind::Resources | ListKind::Templates => "resources",
        }
    }

    /// Renames one item of `server` for the client.
    fn expose(self, server: &ServerRt, item: &mut Value) {
        let (field, rename): (&str, fn(&ServerRt, &str) -> String) = match self {
            ListKind::Prompts => ("name", ServerRt::expose_name),
            ListKind::Resources => ("uri", ServerRt::expose_uri),
            ListKind::Templates => ("uriTemplate", ServerRt::expose_uri),
        };
        if let Some(slot) = item.get_mut(field) {
            if let Some(text) = slot.as_str() {
                *slot = Value::String(rename(server, text));
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    BadCursor(#[from] BadCursor),
    #[error("MCP server {0:?} ended its session")]
    SessionGone(String),
}

/// Who is asking, under which config.
pub struct Lister<'a> {
    pub upstreams: &'a Upstreams,
    pub rt: &'a Runtime,
    pub ws: &'a WorkspaceRt,
    pub env: &'a SessionEnvelope,
}

impl Lister<'_> {
    fn servers(&self, kind: ListKind) -> Vec<&ServerRt> {
        self.ws
            .listed_servers()
            .filter(|s| s.usable())
            .filter(|s| {
                // Skip servers known not to have this kind of item; ask the others.
                live()
                    .capabilities(&self.ws.slug, &s.slug, s.fingerprint)
                    .is_none_or(|c| c.get(kind.capability()).is_some())
            })
            .map(|s| &**s)
            .collect()
    }

    /// One gateway page: the `result` of the list request.
    pub async fn page(&self, kind: ListKind, cursor: Option<&str>) -> Result<Value, ListError> {
        let servers = self.servers(kind);
        let (mut at, mut upstream_cursor) = match cursor {
            None => (0, None),
            Some(text) => {
                let c = ListCursor::decode(text)?;
                // A server removed since the cursor was issued: continue after it.
                let at = servers.partition_point(|s| s.slug < c.server);
                let same = servers.get(at).is_some_and(|s| s.slug == c.server);
                (at, if same { c.upstream } else { None })
            }
        };
        let mut next: Option<ListCursor> = None;
        for _ in 0..MAX_CALLS_PER_PAGE {
            let Some(server) = servers.get(at) else {
                next = None;
                break;
            };
            let (items, upstream_next) = self.upstream_page(server, kind, upstream_cursor).await?;
            next = match upstream_next {
                Some(c) => Some(ListCursor {
                    server: server.slug.clone(),
                    upstream: Some(c),
                }),
                None => servers.get(at + 1).map(|s| ListCursor {
                    server: s.slug.clone(),
                    upstream: None,
                }),
            };
            if !items.is_empty() || next.is_none() {
                let mut result = json!({ kind.items(): items });
                if let Some(c) = &next {
                    result["nextCursor"] = Value::String(c.encode());
                }
                return Ok(result);
            }
            // An empty page: keep walking within this request.
            let c = next.clone().expect("checked above");
            at = servers.partition_point(|s| s.slug < c.server);
            upstream_cursor = c.upstream;
        }
        let mut result = json!({ kind.items(): [] });
        if let Some(c) = next {
            result["nextCursor"] = Value::String(c.encode());
        }
        Ok(result)
    }

    /// One page of one server, renamed; a server that fails or lacks the method
    /// contributes an empty last page.
    async fn upstream_page(
        &self,
        server: &ServerRt,
        kind: ListKind,
        cursor: Option<String>,
    ) -> Result<(Vec<Value>, Option<String>), ListError> {
        let params = match cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let timeout = Duration::from_millis(self.rt.limits.initialize_timeout_ms);
        match self
            .upstreams
            .ask(self.rt, self.env, server, kind.method(), params, timeout)
            .await
        {
            Ok(mut result) => {
                let mut items = match result.get_mut(kind.items()).map(Value::take) {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for item in &mut items {
                    kind.expose(server, item);
                }
                let next = result
                    .get("nextCursor")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                Ok((items, next))
            }
            Err(UpstreamError::SessionGone) => Err(ListError::SessionGone(server.slug.clone())),
            Err(UpstreamError::Rpc { code, .. }) if code == METHOD_NOT_FOUND => {
                Ok((Vec::new(), None))
            }
            Err(e) => {
                tracing::warn!(workspace = %self.ws.slug, server = %server.slug, method = kind.method(), error = %e, "list from upstream failed; skipping the server");
                Ok((Vec::new(), None))
            }
        }
    }

    /// Every item of one server, as the server names them.
    pub async fn all_of(
        &self,
        server: &ServerRt,
        kind: ListKind,
    ) -> Result<Vec<Value>, UpstreamError> {
        self.upstreams
            .list_all(self.rt, self.env, server, kind.method(), kind.items())
            .await
    }
}
