//! A workspace's merged tool list: every exposed tool of every server, prefixed
//! `<server>__<tool>`, policy applied, in a deterministic order, rendered to JSON once
//! so a warm `tools/list` is a memcpy, with the reverse map `tools/call` routes by.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_config::naming::exposed_name;
use serde_json::Value;

use gatehouse_config::policy::CompiledPolicy;

/// How long a catalog missing an unreachable server is served before trying again.
pub const INCOMPLETE_RETRY: Duration = Duration::from_secs(5);

/// An upstream's full tool list as it sent it, shared between catalogs.
pub type ToolList = Arc<Vec<Value>>;

/// A `tools/list` result as rendered: the upstreams' tools, written straight from their
/// cached lists with only the name replaced (no copy of 500 tool trees per build).
#[derive(serde::Serialize)]
struct ListResult<'a> {
    tools: Vec<Exposed<'a>>,
}

/// One upstream tool under its exposed name.
struct Exposed<'a> {
    tool: &'a Value,
    name: String,
}

impl serde::Serialize for Exposed<'_> {
    fn serialize<S: serde::Serializer>(&self, out: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(fields) = self.tool else {
            return self.tool.serialize(out);
        };
        let mut map = out.serialize_map(Some(fields.len()))?;
        for (key, value) in fields {
            if key == "name" {
                map.serialize_entry(key, &self.name)?;
            } else {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}

/// One server's part of a catalog: its slug, its tool policy and its tool list
/// (`None` when the list could not be fetched).
pub struct ServerTools<'a> {
    pub server: &'a str,
    pub policy: &'a CompiledPolicy,
    pub tools: Option<ToolList>,
}

/// Where an exposed tool name leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRoute {
    pub server: String,
    pub upstream_name: String,
}

pub struct ToolCatalog {
    /// Runtime generation this was built for.
    pub generation: u64,
    built: Instant,
    /// False when some server's list could not be fetched.
    pub complete: bool,
    /// The whole `tools/list` result, `{"tools":[...]}`: a warm `tools/list` copies it
    /// once, into the response.
    pub rendered: Bytes,
    routes: HashMap<String, ToolRoute>,
}

impl ToolCatalog {
    /// Merges upstream lists, given in the workspace's server order.
    pub fn build(generation: u64, lists: &[ServerTools<'_>]) -> ToolCatalog {
        let mut routes = HashMap::new();
        let mut merged = Vec::new();
        let mut complete = true;
        for server in lists {
            let Some(tools) = &server.tools else {
                complete = false;
                continue;
            };
            for tool in tools.iter() {
                let Some(name) = tool.get("name").and_then(Value::as_str) else {
                    continue;
                };
                let read_only = tool
                    .pointer("/annotations/readOnlyHint")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !server.policy.exposes(name, read_only) {
                    continue;
                }
                let exposed = exposed_name(server.server, name);
                if routes.contains_key(&exposed) {
                    tracing::warn!(server = %server.server, tool = name, "two tools map to the same exposed name; keeping the first");
                    continue;
                }
                merged.push(Exposed {
                    tool,
                    name: exposed.clone(),
                });
                routes.insert(
                    exposed,
                    ToolRoute {
                        server: server.server.to_string(),
                        upstream_name: name.to_string(),
                    },
                );
            }
        }
        ToolCatalog {
            generation,
            built: Instant::now(),
            complete,
            rendered: Bytes::from(
                serde_json::to_vec(&ListResult { tools: merged }).expect("tools serialise"),
            ),
            routes,
        }
    }

    pub fn route(&self, exposed: &str) -> Option<&ToolRoute> {
        self.routes.get(exposed)
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Whether this catalog may answer for `generation` now.
    pub fn is_fresh(&self, generation: u64) -> bool {
        self.generation == generation && (self.complete || self.built.elapsed() < INCOMPLETE_RETRY)
    }
}
