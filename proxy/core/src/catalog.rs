//! A workspace's merged tool list: every exposed tool of every server, prefixed
//! `<server>__<tool>` (or bare, for a server exposed as it names its tools), policy
//! applied, in a deterministic order, rendered to JSON once so a warm `tools/list` is a
//! memcpy, with the reverse map `tools/call` routes by. A token limited to some tools
//! (its [`CompiledScope`]) gets the rendered tools it may see, copied out of the same
//! rendering, and a route only to those.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_config::naming::exposed_name;
use serde_json::Value;

use gatehouse_config::policy::{CompiledPolicy, CompiledScope};
use gatehouse_config::ToolOverride;

/// How long a catalog missing an unreachable server is served before trying again.
pub const INCOMPLETE_RETRY: Duration = Duration::from_secs(5);

/// An upstream's full tool list as it sent it, shared between catalogs.
pub type ToolList = Arc<Vec<Value>>;

/// The start and end of a rendered `tools/list` result, `{"tools":[...]}`.
const LIST_OPEN: &[u8] = br#"{"tools":["#;
const LIST_CLOSE: &[u8] = b"]}";

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

/// One server's part of a catalog: its slug, whether its names are exposed bare, its
/// tool policy, its tool overrides (by upstream name) and its tool list (`None` when
/// the list could not be fetched).
pub struct ServerTools<'a> {
    pub server: &'a str,
    pub bare: bool,
    pub policy: &'a CompiledPolicy,
    pub overrides: &'a BTreeMap<String, ToolOverride>,
    pub tools: Option<ToolList>,
}

/// Arguments a call's `params.arguments` gets set to, whatever the client sent.
pub type FixedArguments = Arc<serde_json::Map<String, Value>>;

/// A tool left out because another tool already has its exposed name. A prefixed name
/// always wins over a bare one, whatever the server order: the prefixed namespace is
/// the gateway's, and a bare server adding a tool must not shadow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collision {
    pub server: String,
    pub tool: String,
    /// The exposed name both would have had.
    pub name: String,
}

/// Where an exposed tool name leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRoute {
    pub server: String,
    pub upstream_name: String,
    /// Annotated read-only or idempotent: running it twice does no more than once, so
    /// a call its server refused may be sent again.
    pub retry_safe: bool,
    /// Annotated `readOnlyHint: true`.
    pub read_only: bool,
    /// Arguments an override fixes, set on every call.
    pub fixed: Option<FixedArguments>,
}

/// Whether a tool's annotations say calling it again does no harm.
fn retry_safe(tool: &Value) -> bool {
    ["/annotations/readOnlyHint", "/annotations/idempotentHint"]
        .iter()
        .any(|hint| tool.pointer(hint).and_then(Value::as_bool) == Some(true))
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
    /// Each listed tool in list order: its exposed name, whether it is read-only, and
    /// where it lies in `rendered`.
    spans: Vec<(String, bool, Range<usize>)>,
    routes: HashMap<String, ToolRoute>,
    /// Tools left out for a name another tool has.
    pub collisions: Vec<Collision>,
}

/// Whether a tool is annotated `readOnlyHint: true` (absent means false, per the spec).
fn read_only(tool: &Value) -> bool {
    tool.pointer("/annotations/readOnlyHint")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// A tool as an override shapes it: its description replaced or extended, its
/// annotations set, its fixed arguments left out of its input schema. The name is
/// written by [`Exposed`].
fn shaped(tool: &Value, how: &ToolOverride) -> Value {
    let mut tool = tool.clone();
    let Value::Object(fields) = &mut tool else {
        return tool;
    };
    if let Some(text) = &how.description {
        fields.insert("description".into(), Value::String(text.clone()));
    }
    if let Some(more) = &how.extend_description {
        let text = match fields.get("description").and_then(Value::as_str) {
            Some(base) if !base.is_empty() => format!("{base}\n\n{more}"),
            _ => more.clone(),
        };
        fields.insert("description".into(), Value::String(text));
    }
    if !how.annotations.is_empty() {
        let annotations = fields
            .entry("annotations")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(annotations) = annotations {
            annotations.extend(how.annotations.clone());
        }
    }
    if let Some(Value::Object(schema)) = fields.get_mut("inputSchema") {
        if let Some(Value::Object(properties)) = schema.get_mut("properties") {
            properties.retain(|name, _| !how.fixed_arguments.contains_key(name));
        }
        if let Some(Value::Array(required)) = schema.get_mut("required") {
            required.retain(|name| {
                name.as_str()
                    .is_none_or(|n| !how.fixed_arguments.contains_key(n))
            });
        }
    }
    tool
}

/// One tool a server's policy exposes, as clients see it.
struct Shown<'a> {
    tool: Cow<'a, Value>,
    /// The upstream's name.
    name: String,
    exposed: String,
    fixed: Option<FixedArguments>,
}

/// A server's tools its policy exposes, shaped by its overrides.
fn exposed_of<'a>(server: &'a ServerTools<'_>) -> Vec<Shown<'a>> {
    server
        .tools
        .iter()
        .flat_map(|tools| tools.iter())
        .filter_map(|tool| {
            let name = tool.get("name").and_then(Value::as_str)?;
            let how = server.overrides.get(name);
            let tool = match how {
                Some(how) => Cow::Owned(shaped(tool, how)),
                None => Cow::Borrowed(tool),
            };
            server.policy.exposes(name, read_only(&tool)).then(|| {
                let shown = how.and_then(|h| h.name.as_deref()).unwrap_or(name);
                let exposed = if server.bare {
                    shown.to_string()
                } else {
                    exposed_name(server.server, shown)
                };
                let fixed = how
                    .filter(|h| !h.fixed_arguments.is_empty())
                    .map(|h| Arc::new(h.fixed_arguments.clone()));
                Shown {
                    tool,
                    name: name.to_string(),
                    exposed,
                    fixed,
                }
            })
        })
        .collect()
}

impl ToolCatalog {
    /// Merges upstream lists, given in the workspace's server order.
    pub fn build(generation: u64, lists: &[ServerTools<'_>]) -> ToolCatalog {
        let mut routes = HashMap::new();
        let mut rendered = LIST_OPEN.to_vec();
        let mut spans = Vec::new();
        let mut collisions = Vec::new();
        let mut complete = true;
        // Prefixed names first, so a bare tool never takes one of theirs.
        let parts: Vec<Vec<Shown<'_>>> = lists.iter().map(|server| exposed_of(server)).collect();
        let prefixed: std::collections::HashSet<&str> = lists
            .iter()
            .zip(&parts)
            .filter(|(server, _)| !server.bare)
            .flat_map(|(_, tools)| tools.iter().map(|t| t.exposed.as_str()))
            .collect();
        for (server, tools) in lists.iter().zip(&parts) {
            if server.tools.is_none() {
                complete = false;
                continue;
            }
            for Shown {
                tool,
                name,
                exposed,
                fixed,
            } in tools
            {
                let taken = routes.contains_key(exposed)
                    || (server.bare && prefixed.contains(exposed.as_str()));
                if taken {
                    collisions.push(Collision {
                        server: server.server.to_string(),
                        tool: name.clone(),
                        name: exposed.clone(),
                    });
                    continue;
                }
                if !spans.is_empty() {
                    rendered.push(b',');
                }
                let start = rendered.len();
                let tool = Exposed {
                    tool: tool.as_ref(),
                    name: exposed.clone(),
                };
                serde_json::to_writer(&mut rendered, &tool).expect("tools serialise");
                spans.push((exposed.clone(), read_only(tool.tool), start..rendered.len()));
                routes.insert(
                    exposed.clone(),
                    ToolRoute {
                        server: server.server.to_string(),
                        upstream_name: name.clone(),
                        retry_safe: retry_safe(tool.tool),
                        read_only: read_only(tool.tool),
                        fixed: fixed.clone(),
                    },
                );
            }
        }
        rendered.extend_from_slice(LIST_CLOSE);
        ToolCatalog {
            generation,
            built: Instant::now(),
            complete,
            rendered: Bytes::from(rendered),
            spans,
            routes,
            collisions,
        }
    }

    pub fn route(&self, exposed: &str) -> Option<&ToolRoute> {
        self.routes.get(exposed)
    }

    /// The route of a tool a token limited to `scope` may call; `None` for a tool
    /// outside it, as for one that does not exist.
    pub fn route_in(&self, exposed: &str, scope: Option<&CompiledScope>) -> Option<&ToolRoute> {
        self.route(exposed)
            .filter(|r| scope.is_none_or(|s| s.permits(exposed, r.read_only)))
    }

    /// The `tools/list` result a token limited to `scope` sees: the whole rendering,
    /// or the tools in its scope copied out of it, in the same order.
    pub fn rendered_in(&self, scope: Option<&CompiledScope>) -> Bytes {
        let Some(scope) = scope else {
            return self.rendered.clone();
        };
        let mut out = Vec::with_capacity(self.rendered.len());
        out.extend_from_slice(LIST_OPEN);
        for (name, read_only, span) in &self.spans {
            if scope.permits(name, *read_only) {
                if out.len() > LIST_OPEN.len() {
                    out.push(b',');
                }
                out.extend_from_slice(&self.rendered[span.clone()]);
            }
        }
        out.extend_from_slice(LIST_CLOSE);
        Bytes::from(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::ToolPolicy;

    fn tools(names: &[&str]) -> Option<ToolList> {
        Some(Arc::new(
            names
                .iter()
                .map(|n| serde_json::json!({"name": n, "inputSchema": {"type": "object"}}))
                .collect(),
        ))
    }

    fn listed(catalog: &ToolCatalog) -> Vec<String> {
        let v: Value = serde_json::from_slice(&catalog.rendered).unwrap();
        v["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_bare_tool_never_takes_a_prefixed_name_whatever_the_order() {
        let open = CompiledPolicy::compile(&ToolPolicy::default()).unwrap();
        let none = BTreeMap::new();
        // The bare server listed after, then before, the prefixed one (the
        // workspace's server order is by slug).
        for bare_slug in ["zz", "aa"] {
            let mut parts = vec![
                ServerTools {
                    server: bare_slug,
                    bare: true,
                    policy: &open,
                    overrides: &none,
                    tools: tools(&["search", "github__create_issue"]),
                },
                ServerTools {
                    server: "github",
                    bare: false,
                    policy: &open,
                    overrides: &none,
                    tools: tools(&["create_issue"]),
                },
            ];
            if bare_slug == "zz" {
                parts.reverse();
            }
            let catalog = ToolCatalog::build(1, &parts);
            let mut names = listed(&catalog);
            names.sort();
            assert_eq!(names, ["github__create_issue", "search"]);
            assert_eq!(
                catalog.route("github__create_issue").unwrap().server,
                "github"
            );
            assert_eq!(
                catalog.route("search").unwrap(),
                &ToolRoute {
                    server: bare_slug.into(),
                    upstream_name: "search".into(),
                    retry_safe: false,
                    read_only: false,
                    fixed: None,
                }
            );
            assert_eq!(
                catalog.collisions,
                [Collision {
                    server: bare_slug.into(),
                    tool: "github__create_issue".into(),
                    name: "github__create_issue".into(),
                }]
            );
        }
    }

    #[test]
    fn only_read_only_or_idempotent_tools_are_retry_safe() {
        let policy = CompiledPolicy::compile(&Default::default()).unwrap();
        let list = Arc::new(vec![
            serde_json::json!({"name": "get", "annotations": {"readOnlyHint": true}}),
            serde_json::json!({"name": "put", "annotations": {"idempotentHint": true}}),
            serde_json::json!({"name": "post", "annotations": {"idempotentHint": false}}),
            serde_json::json!({"name": "bare"}),
        ]);
        let catalog = ToolCatalog::build(
            1,
            &[ServerTools {
                server: "api",
                bare: false,
                policy: &policy,
                overrides: &BTreeMap::new(),
                tools: Some(list),
            }],
        );
        let safe = |name: &str| catalog.route(name).unwrap().retry_safe;
        assert!(safe("api__get"));
        assert!(safe("api__put"));
        assert!(!safe("api__post"));
        assert!(!safe("api__bare"));
    }

    #[test]
    fn a_scope_sees_and_routes_only_its_tools_in_list_order() {
        let policy = CompiledPolicy::compile(&Default::default()).unwrap();
        let list = Arc::new(vec![
            serde_json::json!({"name": "list_issues", "annotations": {"readOnlyHint": true}}),
            serde_json::json!({"name": "create_issue", "description": "Opens one"}),
            serde_json::json!({"name": "list_repos", "annotations": {"readOnlyHint": false}}),
        ]);
        let catalog = ToolCatalog::build(
            1,
            &[ServerTools {
                server: "github",
                bare: false,
                policy: &policy,
                overrides: &BTreeMap::new(),
                tools: Some(list),
            }],
        );
        let scope = |tools: &[&str], read_only| {
            CompiledScope::compile(&gatehouse_config::TokenScope {
                tools: tools.iter().map(|s| s.to_string()).collect(),
                read_only,
            })
            .unwrap()
        };
        let names = |bytes: Bytes| -> Vec<String> {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            v["tools"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(catalog.rendered_in(None), catalog.rendered);
        let everything = scope(&["*"], false);
        assert_eq!(catalog.rendered_in(Some(&everything)), catalog.rendered);
        let listing = scope(&["github__list_*"], false);
        assert_eq!(
            names(catalog.rendered_in(Some(&listing))),
            ["github__list_issues", "github__list_repos"]
        );
        let reading = scope(&["github__list_*"], true);
        assert_eq!(
            names(catalog.rendered_in(Some(&reading))),
            ["github__list_issues"]
        );
        let nothing = scope(&["jira__*"], false);
        assert_eq!(&catalog.rendered_in(Some(&nothing))[..], br#"{"tools":[]}"#);
        assert!(catalog
            .route_in("github__list_repos", Some(&listing))
            .is_some());
        assert!(catalog
            .route_in("github__list_repos", Some(&reading))
            .is_none());
        assert!(catalog
            .route_in("github__create_issue", Some(&listing))
            .is_none());
        assert!(catalog.route_in("github__create_issue", None).is_some());
    }
}
