//! Builds the snapshot file a standalone proxy reads (`gatehouse.json`).
//!
//! The builder holds a [`Snapshot`] of the config crate's model, so every field is one
//! the proxy accepts; it validates before writing so a mistake in a test shows up as a
//! precise error here instead of a proxy that refuses to start. Writes are atomic
//! (temp file + rename) because a hot-reloading proxy may read the file at any moment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use gatehouse_config::{
    Limits, McpServer, Naming, Secret, SessionKey, Snapshot, ToolPolicy, Transport, Workspace,
    WorkspaceToken,
};
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};
use sha2::{Digest, Sha256};

use crate::TempDir;

/// `n` random characters of `[A-Za-z0-9]`.
pub fn random_base62(n: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// A fresh workspace token: `mwt_` and 43 random base62 characters.
pub fn new_token() -> String {
    format!("mwt_{}", random_base62(43))
}

/// Lowercase hex SHA-256 of the whole token text, as the snapshot stores it.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh session key: 32 random bytes, base64.
pub fn new_session_key(id: &str) -> SessionKey {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    SessionKey {
        id: id.to_owned(),
        key: Secret::new(base64::engine::general_purpose::STANDARD.encode(bytes)),
    }
}

/// An MCP server entry of a workspace.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    server: McpServer,
}

impl ServerSpec {
    pub fn new(slug: &str, url: &str) -> Self {
        ServerSpec {
            server: McpServer {
                slug: slug.to_owned(),
                url: url.to_owned(),
                transport: Transport::StreamableHttp,
                naming: Naming::Prefixed,
                enabled: true,
                headers: BTreeMap::new(),
                secrets: BTreeMap::new(),
                policy: ToolPolicy::default(),
                call_timeout_ms: McpServer::default_call_timeout_ms(),
                connect_timeout_ms: McpServer::default_connect_timeout_ms(),
                first_byte_timeout_ms: None,
                max_call_ms: McpServer::default_max_call_ms(),
                max_in_flight: McpServer::default_max_in_flight(),
                max_queued: McpServer::default_max_queued(),
                tools: vec![],
                overrides: BTreeMap::new(),
            },
        }
    }

    /// The server's names reach clients as it names them (no `<server>__` prefix).
    pub fn bare(mut self) -> Self {
        self.server.naming = Naming::Bare;
        self
    }

    /// The server speaks the legacy HTTP+SSE transport; its URL is the SSE endpoint.
    pub fn legacy_sse(mut self) -> Self {
        self.server.transport = Transport::Sse;
        self
    }

    /// A header sent upstream; the value may reference `{{secrets.NAME}}`.
    pub fn header(mut self, name: &str, template: &str) -> Self {
        self.server
            .headers
            .insert(name.to_owned(), template.to_owned());
        self
    }

    pub fn secret(mut self, name: &str, value: &str) -> Self {
        self.server
            .secrets
            .insert(name.to_owned(), Secret::new(value));
        self
    }

    pub fn allow(mut self, globs: &[&str]) -> Self {
        self.server.policy.allow = globs.iter().map(|g| g.to_string()).collect();
        self
    }

    pub fn deny(mut self, globs: &[&str]) -> Self {
        self.server.policy.deny = globs.iter().map(|g| g.to_string()).collect();
        self
    }

    pub fn read_only(mut self) -> Self {
        self.server.policy.read_only = true;
        self
    }

    pub fn disabled(mut self) -> Self {
        self.server.enabled = false;
        self
    }

    pub fn call_timeout_ms(mut self, ms: u64) -> Self {
        self.server.call_timeout_ms = ms;
        self
    }

    /// How long a call may take in all.
    pub fn max_call_ms(mut self, ms: u64) -> Self {
        self.server.max_call_ms = ms;
        self
    }

    /// How long a call waits for its reply's head (the call timeout otherwise).
    pub fn first_byte_timeout_ms(mut self, ms: u64) -> Self {
        self.server.first_byte_timeout_ms = Some(ms);
        self
    }

    /// The server's cap on routed calls in flight, and how many more may wait.
    pub fn in_flight(mut self, max_in_flight: u32, max_queued: u32) -> Self {
        self.server.max_in_flight = max_in_flight;
        self.server.max_queued = max_queued;
        self
    }

    /// Shapes the upstream's tool `tool` for clients as `how` says.
    pub fn override_tool(mut self, tool: &str, how: gatehouse_config::ToolOverride) -> Self {
        self.server.overrides.insert(tool.to_owned(), how);
        self
    }

    pub fn into_server(self) -> McpServer {
        self.server
    }
}

/// How a token is issued: valid by default.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    pub name: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: Option<u64>,
    pub revoked: bool,
    /// Its own rate budget.
    pub limits: Option<gatehouse_config::RateLimit>,
    /// The tools it may see and call.
    pub scope: Option<gatehouse_config::TokenScope>,
}

impl TokenSpec {
    pub fn named(name: &str) -> Self {
        TokenSpec {
            name: name.to_owned(),
            ..TokenSpec::default()
        }
    }

    /// A token that expired a minute ago.
    pub fn expired(name: &str) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        TokenSpec {
            name: name.to_owned(),
            expires_at: Some(now.saturating_sub(60)),
            ..TokenSpec::default()
        }
    }

    /// A token limited to the tools matching `tools` (exposed names), and to
    /// read-only tools when `read_only`.
    pub fn scoped(name: &str, tools: &[&str], read_only: bool) -> Self {
        TokenSpec {
            name: name.to_owned(),
            scope: Some(gatehouse_config::TokenScope {
                tools: tools.iter().map(|t| t.to_string()).collect(),
                read_only,
            }),
            ..TokenSpec::default()
        }
    }

    pub fn revoked(name: &str) -> Self {
        TokenSpec {
            name: name.to_owned(),
            revoked: true,
            ..TokenSpec::default()
        }
    }
}

/// The snapshot under construction and the file it is written to.
pub struct ConfigBuilder {
    snapshot: Snapshot,
    dir: TempDir,
    path: PathBuf,
    next_token: u32,
}

impl ConfigBuilder {
    /// Version 1, one fresh session key, default limits, no workspaces.
    pub fn new() -> anyhow::Result<Self> {
        let dir = TempDir::new("config")?;
        let path = dir.path().join("gatehouse.json");
        Ok(ConfigBuilder {
            snapshot: Snapshot {
                version: 1,
                session_keys: vec![new_session_key("k1")],
                allowed_origins: Vec::new(),
                limits: Limits::default(),
                workspaces: Vec::new(),
            },
            dir,
            path,
            next_token: 1,
        })
    }

    /// The file [`write`](Self::write) and [`rewrite`](Self::rewrite) produce.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn version(&self) -> u64 {
        self.snapshot.version
    }

    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Direct access for what the helpers do not cover.
    pub fn snapshot_mut(&mut self) -> &mut Snapshot {
        &mut self.snapshot
    }

    /// The workspace `slug`, created (named after its slug) if it does not exist.
    pub fn workspace(&mut self, slug: &str) -> &mut Workspace {
        let at = match self.snapshot.workspaces.iter().position(|w| w.slug == slug) {
            Some(at) => at,
            None => {
                self.snapshot.workspaces.push(Workspace {
                    slug: slug.to_owned(),
                    name: slug.to_owned(),
                    owner: None,
                    servers: Vec::new(),
                    tokens: Vec::new(),
                    limits: Default::default(),
                });
                self.snapshot.workspaces.len() - 1
            }
        };
        &mut self.snapshot.workspaces[at]
    }

    /// Adds a server to workspace `ws`.
    pub fn server(&mut self, ws: &str, spec: ServerSpec) -> &mut Self {
        self.workspace(ws).servers.push(spec.into_server());
        self
    }

    /// Issues a valid token for workspace `ws` and returns its text.
    pub fn token(&mut self, ws: &str) -> String {
        self.token_with(ws, TokenSpec::default())
    }

    /// Issues a token for workspace `ws` as `spec` says and returns its text.
    pub fn token_with(&mut self, ws: &str, spec: TokenSpec) -> String {
        let text = new_token();
        let id = format!("t{}", self.next_token);
        self.next_token += 1;
        self.workspace(ws).tokens.push(WorkspaceToken {
            id,
            name: spec.name,
            sha256: token_sha256(&text),
            expires_at: spec.expires_at,
            revoked: spec.revoked,
            limits: spec.limits,
            scope: spec.scope,
        });
        text
    }

    pub fn allow_origin(&mut self, origin: &str) -> &mut Self {
        self.snapshot.allowed_origins.push(origin.to_owned());
        self
    }

    pub fn limits_mut(&mut self) -> &mut Limits {
        &mut self.snapshot.limits
    }

    /// Validates and writes the snapshot to [`path`](Self::path), atomically.
    pub fn write(&self) -> anyhow::Result<&Path> {
        self.write_to(&self.path)?;
        Ok(&self.path)
    }

    /// Bumps `version`, then writes atomically; returns the new version, which the
    /// proxy's `/healthz` reports once it has loaded the file.
    pub fn rewrite(&mut self) -> anyhow::Result<u64> {
        self.snapshot.version += 1;
        self.write()?;
        Ok(self.snapshot.version)
    }

    /// Validates and writes the snapshot to `path` through a temp file and a rename.
    pub fn write_to(&self, path: &Path) -> anyhow::Result<()> {
        let problems = gatehouse_config::validate(&self.snapshot);
        if !problems.is_empty() {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            anyhow::bail!(
                "the test built an invalid snapshot:\n  {}",
                list.join("\n  ")
            );
        }
        let text = serde_json::to_vec_pretty(&self.snapshot)?;
        let file_name = path
            .file_name()
            .ok_or_else(|| anyhow::anyhow!("{} has no file name", path.display()))?
            .to_string_lossy();
        let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", random_base62(8)));
        std::fs::write(&tmp, text)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| anyhow::anyhow!("cannot rename onto {}: {e}", path.display()))?;
        Ok(())
    }
}
