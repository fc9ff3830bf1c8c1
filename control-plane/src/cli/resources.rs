//! The admin API's resources as the CLI reads them for text output. Fields default
//! when absent so an older or newer control plane still renders; `--json` output
//! never goes through these types and shows the answer exactly as sent.

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct User {
    pub username: String,
    pub email: String,
    pub admin: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Workspace {
    pub slug: String,
    pub name: String,
    pub owner: String,
    /// Number of MCP servers installed.
    pub servers: u64,
    /// Number of active tokens.
    pub tokens: u64,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WorkspaceToken {
    /// Opaque: whatever type the control plane uses, shown and sent back as is.
    pub id: Value,
    pub name: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct McpServer {
    pub slug: String,
    pub url: String,
    pub transport: String,
    pub enabled: bool,
    /// Names of the secrets set for this server in this workspace.
    pub secrets: Vec<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SecretEntry {
    pub server: String,
    pub name: String,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditEvent {
    pub time: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Proxy {
    pub id: Value,
    pub name: String,
    /// Config version the proxy reports as applied.
    pub version: Value,
    /// The control plane's current config version.
    pub config_version: Value,
    /// How many versions the proxy is behind.
    pub lag: Value,
    pub connected: bool,
    pub last_seen: Option<i64>,
}

/// `POST /v1/login`.
#[derive(Debug, Clone, Deserialize)]
pub struct LoginAnswer {
    pub token: String,
    #[serde(default)]
    pub user: Option<User>,
}

/// `POST /v1/users`.
#[derive(Debug, Clone, Deserialize)]
pub struct UserCreated {
    #[serde(default)]
    pub user: User,
    pub credential: String,
}

/// `POST /v1/workspaces`.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkspaceCreated {
    pub workspace: Workspace,
    #[serde(default)]
    pub gateway_url: String,
    #[serde(default)]
    pub sse_url: String,
    pub secret: String,
    #[serde(default)]
    pub mcp_json: Value,
}

/// `POST /v1/workspaces/{ws}/tokens`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenCreated {
    #[serde(default)]
    pub token: WorkspaceToken,
    pub secret: String,
    #[serde(default)]
    pub mcp_json: Value,
}

/// `POST /v1/workspaces/{ws}/servers`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInstalled {
    pub server: McpServer,
    #[serde(default)]
    pub missing_secrets: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WorkspaceList {
    pub workspaces: Vec<Workspace>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TokenList {
    pub tokens: Vec<WorkspaceToken>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerList {
    pub servers: Vec<McpServer>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SecretList {
    pub secrets: Vec<SecretEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuditLog {
    pub events: Vec<AuditEvent>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProxyList {
    pub proxies: Vec<Proxy>,
}

/// A JSON scalar as a table cell: strings unquoted, null as `-`.
pub fn scalar_text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
