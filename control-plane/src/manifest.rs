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
//! instead of `tools`.

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
    pub url: String,
    #[serde(default = "ServerSpec::default_transport")]
    pub transport: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

impl ServerSpec {
    fn default_transport() -> String {
        "streamable_http".into()
    }
}

impl Manifest {
    /// Parses a manifest, naming the field a type error is in.
    pub fn parse(value: serde_json::Value) -> Result<Manifest, Vec<Problem>> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            vec![Problem {
                path: match e.path().to_string() {
                    p if p == "." => "manifest".into(),
                    p => p,
                },
                message: e.inner().to_string(),
            }]
        })
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
            .unwrap()
            .validate()
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
        let typed =
            Manifest::parse(json!({"name": "x", "type": "skill", "version": 1})).unwrap_err();
        assert_eq!(typed[0].path, "version");
    }
}
