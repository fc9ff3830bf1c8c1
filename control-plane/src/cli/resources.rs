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
    /// The tools it may see and call; every tool when absent.
    pub scope: Option<TokenScope>,
}

/// A token's subset of its workspace's tools.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TokenScope {
    /// Globs over exposed names.
    pub tools: Vec<String>,
    pub read_only: bool,
}

impl TokenScope {
    /// "github__list_*, jira__get_* (read-only)", or "all".
    pub fn describe(scope: Option<&TokenScope>) -> String {
        let Some(scope) = scope.filter(|s| !s.tools.is_empty() || s.read_only) else {
            return "all".into();
        };
        let globs = if scope.tools.is_empty() {
            "all".to_string()
        } else {
            scope.tools.join(", ")
        };
        if scope.read_only {
            format!("{globs} (read-only)")
        } else {
            globs
        }
    }
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
    /// `@owner/name@version` when installed from a package.
    pub package: Option<String>,
    pub policy: ServerPolicy,
    /// `prefixed` or `bare`.
    #[serde(default)]
    pub naming: String,
    /// A hosted stdio server's program and arguments (transport `stdio`).
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Vec<String>,
    /// Its plain environment variables.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Its timeouts and cap on calls in flight, where not the defaults.
    #[serde(default)]
    pub limits: Option<gatehouse_config::ServerLimits>,
}

/// A server's tool policy as the API shows it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ServerPolicy {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub read_only: bool,
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

/// `PATCH /v1/workspaces/{ws}/servers/{server}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerChanged {
    pub server: McpServer,
}

/// `POST /v1/workspaces/{ws}/servers`.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInstalled {
    pub server: McpServer,
    #[serde(default)]
    pub missing_secrets: Vec<String>,
    /// What the control plane found at the URL when no transport was given.
    #[serde(default)]
    pub probe: Option<Probe>,
}

/// The install's probe: what the server speaks, or why that could not be told.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Probe {
    pub found: Option<ProbeFound>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProbeFound {
    pub transport: String,
    pub protocol_version: Option<String>,
    pub server: Option<String>,
    pub tools: Option<usize>,
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
    /// Set when the page is full: where the next one starts.
    pub next_cursor: Option<String>,
}

/// `GET /v1/workspaces/{ws}/analytics`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Analytics {
    pub since: i64,
    #[serde(flatten)]
    pub report: crate::calls::analytics::AnalyticsReport,
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

/// A secret a package needs: `{name, description}` (a bare name is accepted too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(from = "SecretSpecWire")]
pub struct SecretSpec {
    pub name: String,
    pub description: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum SecretSpecWire {
    Name(String),
    Full {
        #[serde(default)]
        name: Option<String>,
        #[serde(default)]
        description: Option<String>,
    },
}

impl From<SecretSpecWire> for SecretSpec {
    fn from(wire: SecretSpecWire) -> Self {
        match wire {
            SecretSpecWire::Name(name) => SecretSpec {
                name,
                description: String::new(),
            },
            SecretSpecWire::Full { name, description } => SecretSpec {
                name: name.unwrap_or_default(),
                description: description.unwrap_or_default(),
            },
        }
    }
}

/// A published package (its latest version, or the one asked for).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Package {
    /// `@owner/name`.
    #[serde(deserialize_with = "nullable")]
    pub package: String,
    #[serde(deserialize_with = "nullable")]
    pub owner: String,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(rename = "type")]
    #[serde(deserialize_with = "nullable")]
    pub kind: String,
    #[serde(deserialize_with = "nullable")]
    pub version: String,
    #[serde(deserialize_with = "nullable")]
    pub visibility: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tags: Vec<String>,
    pub secrets: Vec<SecretSpec>,
    pub updated_at: Value,
}

impl Package {
    /// `@owner/name`, built from the parts if the API left it out.
    pub fn id(&self) -> String {
        if self.package.is_empty() {
            format!("@{}/{}", self.owner, self.name)
        } else {
            self.package.clone()
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PackageList {
    pub packages: Vec<Package>,
}

/// `POST /v1/packages`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PackagePublished {
    pub package: Package,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PackageVersion {
    #[serde(deserialize_with = "nullable")]
    pub version: String,
    /// Unix seconds (an RFC 3339 string is shown as its date).
    pub published_at: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct VersionList {
    pub versions: Vec<PackageVersion>,
}

/// `POST /v1/workspaces/{ws}/packages`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PackageInstalled {
    pub server: McpServer,
    #[serde(deserialize_with = "nullable")]
    pub package: String,
    #[serde(deserialize_with = "nullable")]
    pub version: String,
    pub missing_secrets: Vec<SecretSpec>,
    pub membership_verified: bool,
}

/// A team member or a pending invitation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TeamMember {
    #[serde(deserialize_with = "nullable")]
    pub email: String,
    pub username: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    pub invited_at: Value,
    pub joined_at: Value,
}

/// `GET /v1/team`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Team {
    #[serde(deserialize_with = "nullable")]
    pub owner: String,
    pub members: Vec<TeamMember>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Invitation {
    #[serde(deserialize_with = "nullable")]
    pub email: String,
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    pub invited_at: Value,
    pub expires_at: Value,
}

/// `POST /v1/team/invitations`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct InvitationCreated {
    pub invitation: Invitation,
    #[serde(deserialize_with = "nullable")]
    pub code: String,
    #[serde(deserialize_with = "nullable")]
    pub join_command: String,
    pub emailed: bool,
}

/// `POST /v1/team/accept`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct TeamJoined {
    #[serde(deserialize_with = "nullable")]
    pub owner: String,
}

/// `DELETE /v1/packages/{owner}/{name}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct PackageUnpublished {
    pub removed_versions: Option<u64>,
}

/// `DELETE /v1/team/members/{member}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct MemberRemoved {
    #[serde(deserialize_with = "nullable")]
    pub removed: String,
    pub uninstalled: u64,
    pub owner: Option<String>,
}

/// A string field the API may send as `null` (e.g. the version of a package whose
/// versions were all unpublished): read as empty, shown as `-`.
fn nullable<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.unwrap_or_default())
}
