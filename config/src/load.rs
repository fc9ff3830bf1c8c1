//! Reading a snapshot from a file and validating it, with errors that name the file,
//! the path inside it and what is wrong.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::model::{McpServer, Naming, RateLimit, SkillTool, Snapshot, Transport, Workspace};
use crate::naming::is_valid_slug;
use crate::policy::{CompiledPolicy, CompiledScope};
use crate::template::HeaderTemplate;

/// One thing wrong with a snapshot, at a path such as `workspaces[0].servers[1].slug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}: {path}: {message}")]
    Parse {
        file: PathBuf,
        path: String,
        message: String,
    },
    #[error("{}: invalid configuration:\n{}", .file.display(), list(.problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// File formats a snapshot may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `.json` is JSON; anything else is YAML (which also accepts JSON).
    pub fn from_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Reads, parses and validates a snapshot file.
pub fn load_file(path: &Path) -> Result<Snapshot, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    parse(&text, Format::from_path(path), path)
}

/// Parses and validates snapshot text; `file` only labels errors.
pub fn parse(text: &str, format: Format, file: &Path) -> Result<Snapshot, ConfigError> {
    let parse_error = |path: String, message: String| ConfigError::Parse {
        file: file.to_path_buf(),
        path,
        message,
    };
    let snapshot: Snapshot = match format {
        Format::Json => {
            let de = &mut serde_json::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| parse_error(e.path().to_string(), e.inner().to_string()))?
        }
        Format::Yaml => {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de)
                .map_err(|e| parse_error(e.path().to_string(), e.inner().to_string()))?
        }
    };
    let problems = validate(&snapshot);
    if problems.is_empty() {
        Ok(snapshot)
    } else {
        Err(ConfigError::Invalid {
            file: file.to_path_buf(),
            problems,
        })
    }
}

/// Every problem in a snapshot; empty means valid.
pub fn validate(snapshot: &Snapshot) -> Vec<Problem> {
    let mut out = Problems::default();
    if snapshot.session_keys.is_empty() {
        out.push(
            "session_keys",
            "at least one key is required to seal client sessions".into(),
        );
    }
    let mut key_ids = HashSet::new();
    for (i, key) in snapshot.session_keys.iter().enumerate() {
        let at = format!("session_keys[{i}]");
        if !key_ids.insert(key.id.as_str()) {
            out.push(format!("{at}.id"), format!("duplicate key id {:?}", key.id));
        }
        match base64::engine::general_purpose::STANDARD.decode(key.key.expose()) {
            Ok(bytes) if bytes.len() == 32 => {}
            Ok(bytes) => out.push(
                format!("{at}.key"),
                format!("expected 32 bytes (base64), found {}", bytes.len()),
            ),
            Err(_) => out.push(format!("{at}.key"), "not valid base64".into()),
        }
    }
    for (i, origin) in snapshot.allowed_origins.iter().enumerate() {
        if url::Url::parse(origin).is_err() {
            out.push(
                format!("allowed_origins[{i}]"),
                format!("{origin:?} is not an origin like https://app.example.com"),
            );
        }
    }
    if snapshot.limits.max_body_bytes == 0 {
        out.push("limits.max_body_bytes", "must be greater than 0".into());
    }
    if snapshot.limits.proxy_share == 0 {
        out.push("limits.proxy_share", "must be at least 1".into());
    }
    if snapshot.limits.max_stream_seconds == 0 {
        out.push("limits.max_stream_seconds", "must be at least 1".into());
    }
    for (field, ms) in [
        (
            "limits.request_head_timeout_ms",
            snapshot.limits.request_head_timeout_ms,
        ),
        (
            "limits.slow_read_timeout_ms",
            snapshot.limits.slow_read_timeout_ms,
        ),
    ] {
        if ms == 0 {
            out.push(field, "must be greater than 0".into());
        }
    }
    if snapshot.limits.max_connections == 0 {
        out.push("limits.max_connections", "must be at least 1".into());
    }

    let mut slugs = HashSet::new();
    let mut token_ids = HashSet::new();
    let mut token_hashes = HashSet::new();
    for (w, ws) in snapshot.workspaces.iter().enumerate() {
        let at = format!("workspaces[{w}]");
        if !is_valid_slug(&ws.slug) {
            out.push(
                format!("{at}.slug"),
                format!("{:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$", ws.slug),
            );
        }
        if !slugs.insert(ws.slug.as_str()) {
            out.push(
                format!("{at}.slug"),
                format!("duplicate workspace {:?}", ws.slug),
            );
        }
        validate_servers(ws, &at, &mut out);
        for (field, problem) in ws.limits.problems() {
            out.push(format!("{at}.limits.{field}"), problem);
        }
        for (t, token) in ws.tokens.iter().enumerate() {
            let at = format!("{at}.tokens[{t}]");
            for (field, problem) in token.limits.iter().flat_map(RateLimit::problems) {
                out.push(format!("{at}.limits.{field}"), problem);
            }
            if let Some(Err(e)) = token.scope.as_ref().map(CompiledScope::compile) {
                out.push(format!("{at}.scope.tools"), e.to_string());
            }
            if token.id.is_empty() {
                out.push(format!("{at}.id"), "must not be empty".into());
            } else if !token_ids.insert(token.id.as_str()) {
                out.push(
                    format!("{at}.id"),
                    format!("duplicate token id {:?}", token.id),
                );
            }
            let hex_ok = token.sha256.len() == 64
                && token
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok {
                out.push(
                    format!("{at}.sha256"),
                    "expected 64 lowercase hex digits (the SHA-256 of the token)".into(),
                );
            } else if !token_hashes.insert(token.sha256.as_str()) {
                out.push(
                    format!("{at}.sha256"),
                    "the same token is configured twice".into(),
                );
            }
        }
    }
    out.0
}

fn validate_servers(ws: &Workspace, at: &str, out: &mut Problems) {
    let mut slugs = HashSet::new();
    let mut bare: Option<&str> = None;
    for (s, server) in ws.servers.iter().enumerate() {
        let at = format!("{at}.servers[{s}]");
        if server.naming == Naming::Bare {
            if let Some(first) = bare {
                out.push(
                    format!("{at}.naming"),
                    format!(
                        "server {first:?} already exposes its names bare in this workspace; at most one server may (bare names of two servers could collide)"
                    ),
                );
            }
            bare.get_or_insert(&server.slug);
            if server.transport == Transport::Skill {
                out.push(
                    format!("{at}.naming"),
                    "a skill's tools are always prefixed".into(),
                );
            }
        }
        if !is_valid_slug(&server.slug) {
            out.push(
                format!("{at}.slug"),
                format!("{:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$", server.slug),
            );
        }
        if !slugs.insert(server.slug.as_str()) {
            out.push(
                format!("{at}.slug"),
                format!("duplicate server {:?} in this workspace", server.slug),
            );
        }
        if server.transport == Transport::Skill {
            out.0
                .extend(validate_skill_tools(&server.tools, &format!("{at}.tools")));
        } else {
            validate_url(server, &at, out);
            if !server.tools.is_empty() {
                out.push(
                    format!("{at}.tools"),
                    "only a skill (transport: skill) declares tools".into(),
                );
            }
        }
        for (name, value) in &server.headers {
            let at = format!("{at}.headers.{name}");
            if http_header_name_invalid(name) {
                out.push(at.clone(), "not a valid HTTP header name".into());
            }
            if let Err(e) = HeaderTemplate::parse(value) {
                out.push(at, e.to_string());
            }
        }
        if let Err(e) = CompiledPolicy::compile(&server.policy) {
            out.push(format!("{at}.policy"), e.to_string());
        }
        for (tool, how) in &server.overrides {
            if tool.is_empty() {
                out.push(
                    format!("{at}.overrides"),
                    "a tool name must not be empty".into(),
                );
            }
            if let Some(name) = how
                .name
                .as_deref()
                .filter(|n| !crate::naming::is_valid_tool_name(n))
            {
                out.push(
                    format!("{at}.overrides.{tool}.name"),
                    format!("{name:?} must be 1 to 128 of A-Z a-z 0-9 _ - . (a tool name)"),
                );
            }
        }
        for (field, ms) in [
            ("call_timeout_ms", Some(server.call_timeout_ms)),
            ("connect_timeout_ms", Some(server.connect_timeout_ms)),
            ("first_byte_timeout_ms", server.first_byte_timeout_ms),
            ("max_call_ms", Some(server.max_call_ms)),
        ] {
            if ms == Some(0) {
                out.push(format!("{at}.{field}"), "must be greater than 0".into());
            }
        }
    }
}

/// Problems with a skill's tools, at paths under `at` (e.g. `tools`). Shared with the
/// control plane's manifest checks.
pub fn validate_skill_tools(tools: &[SkillTool], at: &str) -> Vec<Problem> {
    let mut out = Problems::default();
    if tools.is_empty() {
        out.push(at, "a skill needs at least one tool".into());
    }
    let mut names = HashSet::new();
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if !crate::naming::is_valid_exposed_name(&tool.name) {
            out.push(
                format!("{at}.name"),
                format!("{:?} must match ^[A-Za-z0-9_.-]{{1,64}}$", tool.name),
            );
        } else if !names.insert(tool.name.as_str()) {
            out.push(
                format!("{at}.name"),
                format!("duplicate tool {:?}", tool.name),
            );
        }
        let properties = tool
            .input_schema
            .get("properties")
            .and_then(|p| p.as_object());
        if tool.input_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            out.push(
                format!("{at}.input_schema"),
                "must be a JSON Schema with \"type\": \"object\"".into(),
            );
        }
        let req = &tool.request;
        if !matches!(
            req.method.as_str(),
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
        ) {
            out.push(
                format!("{at}.request.method"),
                format!("{:?} must be GET, POST, PUT, PATCH or DELETE", req.method),
            );
        }
        if req.timeout_ms == 0 || req.timeout_ms > 120_000 {
            out.push(
                format!("{at}.request.timeout_ms"),
                "must be between 1 and 120000".into(),
            );
        }
        let mut templates: Vec<(String, &str)> =
            vec![(format!("{at}.request.url"), req.url.as_str())];
        for (name, value) in &req.headers {
            if http_header_name_invalid(name) {
                out.push(
                    format!("{at}.request.headers.{name}"),
                    "not a valid HTTP header name".into(),
                );
            }
            templates.push((format!("{at}.request.headers.{name}"), value.as_str()));
        }
        let mut body_strings = Vec::new();
        if let Some(body) = &req.body {
            collect_strings(body, &mut body_strings);
        }
        templates.extend(
            body_strings
                .iter()
                .map(|s| (format!("{at}.request.body"), *s)),
        );
        for (path, text) in templates {
            match HeaderTemplate::parse_skill(text) {
                Ok(t) => {
                    for arg in t.arg_names() {
                        if !properties.is_some_and(|p| p.contains_key(arg)) {
                            out.push(
                                path.clone(),
                                format!("uses {{{{args.{arg}}}}} but input_schema has no property {arg:?}"),
                            );
                        }
                    }
                }
                Err(e) => out.push(path, e.to_string()),
            }
        }
        // Arguments may fill the path and query, never choose the host.
        if let Ok(t) = HeaderTemplate::parse_skill(&req.url) {
            let secrets = Default::default();
            let with = |v: &'static str| {
                t.render_with(&secrets, |_| v.to_string())
                    .ok()
                    .and_then(|u| url::Url::parse(&u).ok())
            };
            match (with("a"), with("b")) {
                (Some(a), Some(b))
                    if matches!(a.scheme(), "http" | "https")
                        && a.host().is_some()
                        && a.scheme() == b.scheme()
                        && a.host() == b.host()
                        && a.port() == b.port() => {}
                _ => out.push(
                    format!("{at}.request.url"),
                    "must be an http(s) URL whose scheme, host and port do not depend on the arguments".into(),
                ),
            }
        }
        if let Some(pointer) = &tool.response.pointer {
            if !(pointer.is_empty() || pointer.starts_with('/')) {
                out.push(
                    format!("{at}.response.pointer"),
                    "a JSON pointer starts with /".into(),
                );
            }
        }
    }
    out.0
}

fn collect_strings<'a>(value: &'a serde_json::Value, out: &mut Vec<&'a str>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

fn validate_url(server: &McpServer, at: &str, out: &mut Problems) {
    match url::Url::parse(&server.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
        Ok(_) => out.push(
            format!("{at}.url"),
            format!("{:?} must be an http:// or https:// URL", server.url),
        ),
        Err(e) => out.push(format!("{at}.url"), format!("{:?}: {e}", server.url)),
    }
}

fn http_header_name_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: String) {
        self.0.push(Problem {
            path: path.into(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

    fn yaml(body: &str) -> Result<Snapshot, ConfigError> {
        parse(body, Format::Yaml, Path::new("gatehouse.yaml"))
    }

    #[test]
    fn parses_a_full_snapshot() {
        let s = yaml(&format!(
            r#"
version: 3
session_keys: [{{id: k1, key: "{KEY}"}}]
workspaces:
  - slug: engineering
    name: Engineering
    servers:
      - slug: github
        url: http://127.0.0.1:9000/mcp
        headers: {{Authorization: "Bearer {{{{secrets.GITHUB_TOKEN}}}}"}}
        secrets: {{GITHUB_TOKEN: ghp_x}}
        policy: {{deny: ["delete_*"], read_only: false}}
    tokens:
      - id: t1
        name: Alice
        sha256: "{}"
"#,
            "a".repeat(64)
        ))
        .unwrap();
        assert_eq!(s.version, 3);
        let server = &s.workspaces[0].servers[0];
        assert!(server.enabled);
        assert_eq!(server.secrets["GITHUB_TOKEN"].expose(), "ghp_x");
        assert!(!format!("{s:?}").contains("ghp_x"), "Debug leaks a secret");
        assert!(!format!("{s:?}").contains(KEY), "Debug leaks a session key");
    }

    #[test]
    fn one_server_of_a_workspace_may_be_bare() {
        let body = |second: &str| {
            format!(
                r#"
session_keys: [{{id: k1, key: "{KEY}"}}]
workspaces:
  - slug: front
    servers:
      - {{slug: a, url: "http://127.0.0.1:9000/mcp", naming: bare}}
      - {{slug: b, url: "http://127.0.0.1:9001/mcp"{second}}}
"#
            )
        };
        let one = yaml(&body("")).unwrap();
        assert_eq!(one.workspaces[0].servers[0].naming, Naming::Bare);
        assert_eq!(one.workspaces[0].servers[1].naming, Naming::Prefixed);
        let ConfigError::Invalid { problems, .. } = yaml(&body(", naming: bare")).unwrap_err()
        else {
            panic!("two bare servers accepted");
        };
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].path, "workspaces[0].servers[1].naming");
        assert!(
            problems[0]
                .message
                .starts_with("server \"a\" already exposes its names bare"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn parse_errors_name_the_path() {
        let err = yaml("session_keys: [{id: k, key: x}]\nworkspaces: [{slug: a, servers: [{slug: s, url: http://x, colour: red}]}]")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("gatehouse.yaml: workspaces[0].servers[0]"),
            "{err}"
        );
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn validation_lists_every_problem_with_its_path() {
        let err = yaml(&format!(
            r#"
session_keys: [{{id: k1, key: "c2hvcnQ="}}]
workspaces:
  - slug: Engineering
    servers:
      - {{slug: git_hub, url: "ftp://x"}}
      - {{slug: ok, url: "http://x", headers: {{X: "{{{{secrets.A"}}, overrides: {{create: {{name: "open ticket"}}}}}}
    tokens:
      - {{id: t1, sha256: "nothex", scope: {{tools: ["a["]}}}}
  - slug: dup
    tokens: [{{id: t1, sha256: "{h}"}}]
  - slug: dup
    tokens: [{{id: t2, sha256: "{h}"}}]
"#,
            h = "b".repeat(64)
        ))
        .unwrap_err();
        let ConfigError::Invalid { problems, .. } = err else {
            panic!("expected validation errors, got {err}")
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "session_keys[0].key",
                "workspaces[0].slug",
                "workspaces[0].servers[0].slug",
                "workspaces[0].servers[0].url",
                "workspaces[0].servers[1].headers.X",
                "workspaces[0].servers[1].overrides.create.name",
                "workspaces[0].tokens[0].scope.tools",
                "workspaces[0].tokens[0].sha256",
                "workspaces[1].tokens[0].id",
                "workspaces[2].slug",
                "workspaces[2].tokens[0].sha256",
            ]
        );
        assert!(problems[5].message.contains("a tool name"));
        assert!(problems[8].message.contains("duplicate token id"));
        assert!(problems[9].message.contains("duplicate workspace"));
        assert!(problems[10].message.contains("twice"));
    }

    #[test]
    fn skills_are_validated_tool_by_tool() {
        let ok = serde_json::json!([{
            "name": "lookup", "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
            "request": {"url": "https://crm.example.com/c/{{args.id}}", "headers": {"Authorization": "Bearer {{secrets.K}}"}}
        }]);
        let tools: Vec<SkillTool> = serde_json::from_value(ok).unwrap();
        assert_eq!(validate_skill_tools(&tools, "tools"), vec![]);

        let bad = serde_json::json!([
            {"name": "a b", "input_schema": {"type": "string"}, "request": {"method": "TRACE", "url": "https://{{args.host}}/x"}},
            {"name": "ok", "input_schema": {"type": "object"}, "request": {"url": "ftp://x", "body": {"q": "{{args.q}}"}, "timeout_ms": 0}}
        ]);
        let tools: Vec<SkillTool> = serde_json::from_value(bad).unwrap();
        let paths: Vec<String> = validate_skill_tools(&tools, "tools")
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "tools[0].name",
                "tools[0].input_schema",
                "tools[0].request.method",
                "tools[0].request.url",
                "tools[0].request.url",
                "tools[1].request.timeout_ms",
                "tools[1].request.body",
                "tools[1].request.url",
            ]
        );
    }

    #[test]
    fn json_files_are_json() {
        let err = parse("{\"version\": \"x\"}", Format::Json, Path::new("c.json"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.json: version:"), "{err}");
    }
}
