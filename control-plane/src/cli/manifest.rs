//! The package manifest on disk (`gatehouse.json`): reading it for `skill publish`
//! and writing a valid example for `skill init`. Validation is the control plane's:
//! it answers with every problem named by its path, which the CLI lists.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use gatehouse_config::naming::{is_valid_slug, slugify};
use serde_json::Value;

use super::args::PackageType;
use super::error::CliError;

/// The manifest `skill publish` reads and `skill init` writes, in the current directory.
pub const DEFAULT_MANIFEST: &str = "gatehouse.json";

/// Reads a manifest: a JSON object, with `name` replaced by `name_override` when
/// given. Local problems (missing file, not JSON) are usage errors naming the file.
pub fn load(path: &Path, name_override: Option<&str>) -> Result<Value, CliError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::usage(format!(
                "no manifest at {}: write one with `gatehouse skill init`, or pass --manifest PATH",
                path.display()
            )))
        }
        Err(err) => {
            return Err(CliError::usage(format!(
                "cannot read {}: {err}",
                path.display()
            )))
        }
    };
    parse(&text, &path.display().to_string(), name_override)
}

fn parse(text: &str, origin: &str, name_override: Option<&str>) -> Result<Value, CliError> {
    let mut manifest: Value = serde_json::from_str(text)
        .map_err(|err| CliError::usage(format!("{origin} is not valid JSON: {err}")))?;
    let Some(object) = manifest.as_object_mut() else {
        return Err(CliError::usage(format!(
            "{origin} must hold a JSON object ({{\"name\": ..., \"type\": ..., \"version\": ...}})"
        )));
    };
    if let Some(name) = name_override {
        object.insert("name".to_owned(), Value::String(name.to_owned()));
    }
    Ok(manifest)
}

/// The name `skill init` uses when none is given: the directory's, as a slug.
pub fn default_name(dir: Option<&Path>, kind: PackageType) -> String {
    dir.and_then(Path::file_name)
        .map(|n| slugify(&n.to_string_lossy()).into_owned())
        .filter(|slug| is_valid_slug(slug))
        .unwrap_or_else(|| match kind {
            PackageType::Skill => "my-skill".to_owned(),
            PackageType::McpServer => "my-mcp-server".to_owned(),
        })
}

/// A complete, valid manifest to edit, keys in reading order.
pub fn example(kind: PackageType, name: &str) -> String {
    let name = serde_json::to_string(name).unwrap_or_else(|_| "\"my-skill\"".to_owned());
    match kind {
        PackageType::Skill => format!(
            r#"{{
  "name": {name},
  "type": "skill",
  "version": "1.0.0",
  "description": "Look up customers in the CRM",
  "category": "productivity",
  "tags": ["crm"],
  "secrets": [
    {{"name": "CRM_TOKEN", "description": "API token for the CRM"}}
  ],
  "tools": [
    {{
      "name": "lookup_customer",
      "description": "Fetch a customer record by id",
      "input_schema": {{
        "type": "object",
        "properties": {{
          "id": {{"type": "string"}}
        }},
        "required": ["id"]
      }},
      "read_only": true,
      "request": {{
        "method": "GET",
        "url": "https://crm.example.com/api/customers/{{{{args.id}}}}",
        "headers": {{
          "Authorization": "Bearer {{{{secrets.CRM_TOKEN}}}}"
        }}
      }},
      "response": {{"pointer": "/data"}}
    }}
  ]
}}
"#
        ),
        PackageType::McpServer => format!(
            r#"{{
  "name": {name},
  "type": "mcp-server",
  "version": "1.0.0",
  "description": "The Example API as MCP tools",
  "category": "developer-tools",
  "tags": ["example"],
  "secrets": [
    {{"name": "API_TOKEN", "description": "API token for api.example.com"}}
  ],
  "server": {{
    "url": "https://api.example.com/mcp",
    "transport": "streamable_http",
    "headers": {{
      "Authorization": "Bearer {{{{secrets.API_TOKEN}}}}"
    }}
  }}
}}
"#
        ),
    }
}

/// Writes `text` to `path` unless something is already there.
pub fn write_new(path: &Path, text: &str) -> Result<(), CliError> {
    let mut file = match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(CliError::usage(format!(
                "{} already exists; not overwriting it (remove it first, or edit it)",
                path.display()
            )))
        }
        Err(err) => {
            return Err(CliError::usage(format!(
                "cannot create {}: {err}",
                path.display()
            )))
        }
    };
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(CliError::Local)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn skill_example_is_the_documented_schema() {
        let text = example(PackageType::Skill, "internal-crm-skill");
        let manifest: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(manifest["name"], "internal-crm-skill");
        assert_eq!(manifest["type"], "skill");
        assert_eq!(manifest["version"], "1.0.0");
        assert_eq!(manifest["category"], "productivity");
        assert_eq!(manifest["secrets"][0]["name"], "CRM_TOKEN");
        let tool = &manifest["tools"][0];
        assert_eq!(tool["name"], "lookup_customer");
        assert_eq!(tool["input_schema"]["required"], json!(["id"]));
        assert_eq!(tool["read_only"], true);
        assert_eq!(
            tool["request"]["url"],
            "https://crm.example.com/api/customers/{{args.id}}"
        );
        assert_eq!(
            tool["request"]["headers"]["Authorization"],
            "Bearer {{secrets.CRM_TOKEN}}"
        );
        assert_eq!(tool["response"]["pointer"], "/data");
        assert!(manifest.get("server").is_none());
        // Reading order, not alphabetical.
        assert!(text.find("\"name\"").unwrap() < text.find("\"type\"").unwrap());
    }

    #[test]
    fn mcp_server_example_has_a_server_and_no_tools() {
        let manifest: Value =
            serde_json::from_str(&example(PackageType::McpServer, "example-api")).unwrap();
        assert_eq!(manifest["type"], "mcp-server");
        assert_eq!(manifest["server"]["transport"], "streamable_http");
        assert_eq!(
            manifest["server"]["headers"]["Authorization"],
            "Bearer {{secrets.API_TOKEN}}"
        );
        assert_eq!(manifest["secrets"][0]["name"], "API_TOKEN");
        assert!(manifest.get("tools").is_none());
    }

    #[test]
    fn default_name_comes_from_the_directory() {
        assert_eq!(
            default_name(Some(Path::new("/src/Internal CRM")), PackageType::Skill),
            "internal-crm"
        );
        assert_eq!(default_name(None, PackageType::Skill), "my-skill");
        assert_eq!(
            default_name(Some(Path::new("/")), PackageType::McpServer),
            "my-mcp-server"
        );
    }

    #[test]
    fn name_flag_overrides_the_manifest() {
        let manifest = parse(
            r#"{"name": "a", "version": "1.0.0"}"#,
            "gatehouse.json",
            Some("internal-crm-skill"),
        )
        .unwrap();
        assert_eq!(
            manifest,
            json!({"name": "internal-crm-skill", "version": "1.0.0"})
        );
        let kept = parse(r#"{"name": "a"}"#, "m", None).unwrap();
        assert_eq!(kept["name"], "a");
    }

    #[test]
    fn local_problems_name_the_file() {
        let err = parse("{nope", "gatehouse.json", None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("gatehouse.json is not valid JSON"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 1);
        let err = parse("[1]", "gatehouse.json", None).unwrap_err();
        assert!(err.to_string().contains("JSON object"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let err = load(&dir.path().join("gatehouse.json"), None).unwrap_err();
        assert!(err.to_string().contains("gatehouse skill init"), "{err}");
    }

    #[test]
    fn init_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DEFAULT_MANIFEST);
        write_new(&path, "first").unwrap();
        let err = write_new(&path, "second").unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "first");
    }
}
