//! `gatehouse.json`, the manifest a package is published from, and its validation:
//! every problem is reported with the path of the field it concerns.
//!
//! ```json
//! {"name": "internal-crm-skill", "type": "skill", "version": "1.0.0",
//!  "description": "Look customers up in the CRM", "category": "productivity",
//!  "tags": ["crm"], "secrets": [{"name": "CRM_TOKEN", "description": "CRM API token"}],
//!  "tools": [{"name": "lookup_customer", "description": "...",
//!             "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]},
//!             "read_only": true,
//!             "request": {"method": "GET", "url": "https://crm.example.com/api/customers/{{args.id}}",
//!                         "headers": {"Authorization": "Bearer {{secrets.CRM_TOKEN}}"}},
//!             "response": {"pointer": "/data"}}]}
//! ```
//! A `"type": "mcp-server"` package has `"server": {"url", "transport", "headers"}`
//! instead of `tools`, or `"server": {"command", "args", "env"}` for a stdio server
//! Gatehouse hosts (its secrets reach it as environment variables).

use std::collections::{BTreeMap, BTreeSet};

use gatehouse_config::naming::is_valid_slug;
use gatehouse_config::template::HeaderTemplate;
use gatehouse_config::{Problem, SkillTool};
use serde::{Deserialize, Serialize};

/// The categories a package may declare.
pub const CATEGORIES: &[&str] = &[
    "developer-tools",
    "productivity",
    "communication",
    "data",
    "devops",
    "security",
    "search",
    "finance",
    "other",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub secrets: Vec<SecretSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<SkillTool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerSpec {
    /// Empty for a stdio server.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    #[serde(default = "ServerSpec::default_transport")]
    pub transport: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A stdio server's program (instead of `url`), its arguments and plain
    /// environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl ServerSpec {
    fn default_transport() -> String {
        "streamable_http".into()
    }
}

impl Manifest {
    /// Parses and validates a manifest. Every unknown field is reported (each is
    /// set aside and parsing goes on), and so is every other problem once the rest
    /// parses; a type error stops at that field.
    pub fn parse(mut value: serde_json::Value) -> Result<Manifest, Vec<Problem>> {
        let mut problems = Vec::new();
        // Bounded: each round removes one field.
        for _ in 0..100 {
            match serde_path_to_error::deserialize::<_, Manifest>(value.clone()) {
                Ok(manifest) => {
                    problems.extend(manifest.validate());
                    return if problems.is_empty() {
                        Ok(manifest)
                    } else {
                        Err(problems)
                    };
                }
                Err(e) => {
                    let path = e.path().to_string();
                    let message = e.inner().to_string();
                    let unknown = message.starts_with("unknown field");
                    problems.push(Problem {
                        path: if path == "." {
                            "manifest".into()
                        } else {
                            path.clone()
                        },
                        message,
                    });
                    if !unknown || !remove_at(&mut value, &path) {
                        return Err(problems);
                    }
                }
            }
        }
        Err(problems)
    }

    /// Every problem with the manifest; empty means publishable.
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |path: &str, message: String| {
            out.push(Problem {
                path: path.into(),
                message,
            })
        };
        if !is_valid_slug(&self.name) {
            push(
                "name",
                format!(
                    "{:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$ (it becomes the server's slug)",
                    self.name
                ),
            );
        }
        if semver::Version::parse(&self.version).is_err() {
            push(
                "version",
                format!("{:?} is not a semantic version like 1.2.0", self.version),
            );
        }
        if self.description.trim().is_empty() || self.description.len() > 500 {
            push("description", "must be 1 to 500 characters".into());
        }
        if !CATEGORIES.contains(&self.category.as_str()) {
            push(
                "category",
                format!(
                    "{:?} must be one of: {}",
                    self.category,
                    CATEGORIES.join(", ")
                ),
            );
        }
        if self.tags.len() > 10 {
            push("tags", "at most 10 tags".into());
        }
        for (i, tag) in self.tags.iter().enumerate() {
            if !is_valid_slug(tag) {
                push(
                    &format!("tags[{i}]"),
                    format!("{tag:?} must be lowercase letters, digits and -"),
                );
            }
        }
        let mut declared = BTreeSet::new();
        for (i, s) in self.secrets.iter().enumerate() {
            if s.name.is_empty()
                || !s
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                push(
                    &format!("secrets[{i}].name"),
                    format!("{:?} must match [A-Za-z0-9_]+", s.name),
                );
            }
            if !declared.insert(s.name.as_str()) {
                push(
                    &format!("secrets[{i}].name"),
                    format!("{:?} is declared twice", s.name),
                );
            }
        }
        let mut used: Vec<(String, String)> = Vec::new();
        match self.kind.as_str() {
            "mcp-server" => {
                if !self.tools.is_empty() {
                    push(
                        "tools",
                        "an mcp-server package declares no tools (its server has them)".into(),
                    );
                }
                match &self.server {
                    None => push("server", "an mcp-server package needs server.url".into()),
                    Some(server) if server.command.is_some() => {
                        let command = server.command.as_deref().unwrap_or_default();
                        if !server.url.is_empty() {
                            push(
                                "server.url",
                                "a stdio server (server.command) has no url".into(),
                            );
                        }
                        if !server.headers.is_empty() {
                            push(
                                "server.headers",
                                "a stdio server (server.command) gets its secrets as environment variables, not headers".into(),
                            );
                        }
                        if !matches!(server.transport.as_str(), "streamable_http" | "stdio") {
                            push(
                                "server.transport",
                                format!(
                                    "{:?} does not go with server.command (stdio)",
                                    server.transport
                                ),
                            );
                        }
                        if let Err(e) =
                            crate::runner::spec::check_command(command, &server.args, &server.env)
                        {
                            push("server.command", e.to_string());
                        }
                    }
                    Some(server) => {
                        let url_ok = url::Url::parse(&server.url).is_ok_and(|u| {
                            matches!(u.scheme(), "http" | "https") && u.host().is_some()
                        });
                        if !url_ok {
                            push(
                                "server.url",
                                format!("{:?} must be an http:// or https:// URL", server.url),
                            );
                        }
                        if !matches!(server.transport.as_str(), "streamable_http" | "sse") {
                            push(
                                "server.transport",
                                format!("{:?} must be streamable_http or sse", server.transport),
                            );
                        }
                        for (name, template) in &server.headers {
                            let path = format!("server.headers.{name}");
                            match HeaderTemplate::parse(template) {
                                Ok(t) => used.extend(
                                    t.secret_names().map(|n| (path.clone(), n.to_string())),
                                ),
                                Err(e) => push(&path, e.to_string()),
                            }
                        }
                    }
                }
            }
            "skill" => {
                if self.server.is_some() {
                    push("server", "a skill declares tools, not a server".into());
                }
                for p in gatehouse_config::validate_skill_tools(&self.tools, "tools") {
                    push(&p.path, p.message);
                }
                for (i, tool) in self.tools.iter().enumerate() {
                    let req = &tool.request;
                    let mut texts = vec![req.url.clone()];
                    texts.extend(req.headers.values().cloned());
                    if let Some(body) = &req.body {
                        texts.push(body.to_string());
                    }
                    for text in texts {
                        if let Ok(t) = HeaderTemplate::parse_skill(&text) {
                            used.extend(
                                t.secret_names()
                                    .map(|n| (format!("tools[{i}].request"), n.to_string())),
                            );
                        }
                    }
                }
            }
            other => push("type", format!("{other:?} must be skill or mcp-server")),
        }
        for (path, secret) in used {
            if !declared.contains(secret.as_str()) {
                push(
                    &path,
                    format!("uses secret {secret:?}, which `secrets` does not declare"),
                );
            }
        }
        out
    }
}

/// Removes the value at a serde path like `tools[0].request.retries`.
fn remove_at(value: &mut serde_json::Value, path: &str) -> bool {
    let mut steps: Vec<&str> = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        while let Some(open) = rest.find('[') {
            if open > 0 {
                steps.push(&rest[..open]);
            }
            let Some(close) = rest[open..].find(']') else {
                return false;
            };
            steps.push(&rest[open..open + close + 1]);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            steps.push(rest);
        }
    }
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut at = value;
    for step in parents {
        at = match step.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(i) => match i.parse::<usize>().ok().and_then(|i| at.get_mut(i)) {
                Some(v) => v,
                None => return false,
            },
            None => match at.get_mut(*step) {
                Some(v) => v,
                None => return false,
            },
        };
    }
    at.as_object_mut()
        .is_some_and(|map| map.remove(*last).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn skill() -> serde_json::Value {
        json!({"name": "crm", "type": "skill", "version": "1.0.0", "description": "CRM lookups",
               "category": "productivity", "tags": ["crm"],
               "secrets": [{"name": "CRM_TOKEN", "description": "token"}],
               "tools": [{"name": "lookup", "input_schema": {"type": "object", "properties": {"id": {"type": "string"}}},
                          "request": {"url": "https://crm.example.com/c/{{args.id}}",
                                      "headers": {"Authorization": "Bearer {{secrets.CRM_TOKEN}}"}}}]})
    }

    #[test]
    fn a_valid_skill_and_server_pass() {
        assert_eq!(Manifest::parse(skill()).unwrap().validate(), vec![]);
        let server = json!({"name": "github", "type": "mcp-server", "version": "0.1.0", "description": "GitHub",
            "category": "developer-tools", "secrets": [{"name": "GITHUB_PAT"}],
            "server": {"url": "https://api.githubcopilot.com/mcp/", "headers": {"Authorization": "Bearer {{secrets.GITHUB_PAT}}"}}});
        assert_eq!(Manifest::parse(server).unwrap().validate(), vec![]);
        let stdio = json!({"name": "memory", "type": "mcp-server", "version": "1.0.0",
            "description": "Memory", "category": "data",
            "server": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"],
                       "env": {"MEMORY_FILE_PATH": "memory.jsonl"}}});
        assert_eq!(Manifest::parse(stdio).unwrap().validate(), vec![]);
        let both = json!({"name": "x", "type": "mcp-server", "version": "1.0.0",
            "description": "X", "category": "data",
            "server": {"command": "npx", "url": "https://e.com/mcp", "env": {"1X": "y"}}});
        let problems: Vec<String> = Manifest::parse(both)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("a stdio server (server.command) has no url"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("environment variable name \"1X\""),
            "{problems:?}"
        );
    }

    #[test]
    fn every_field_error_is_named() {
        let mut bad = skill();
        bad["name"] = json!("CRM Skill");
        bad["version"] = json!("one");
        bad["category"] = json!("misc");
        bad["description"] = json!("");
        bad["tags"] = json!(["Bad Tag"]);
        bad["secrets"] = json!([]);
        let paths: Vec<String> = Manifest::parse(bad)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(
            paths,
            [
                "name",
                "version",
                "description",
                "category",
                "tags[0]",
                "tools[0].request"
            ]
        );
        let unknown =
            Manifest::parse(json!({"name": "x", "type": "skill", "version": "1.0.0", "colour": 1}))
                .unwrap_err();
        assert!(unknown[0].message.contains("colour"), "{unknown:?}");
        // An unknown field does not hide the other problems, nested ones included.
        let mut many = skill();
        many["colour"] = json!("red");
        many["version"] = json!("one");
        many["tools"][0]["request"]["retries"] = json!(3);
        let paths: Vec<String> = Manifest::parse(many)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect();
        assert_eq!(paths, ["colour", "tools[0].request.retries", "version"]);
        let typed =
            Manifest::parse(json!({"name": "x", "type": "skill", "version": 1})).unwrap_err();
        assert_eq!(typed[0].path, "version");
    }
}
