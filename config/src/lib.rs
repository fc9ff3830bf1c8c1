//! The Gatehouse configuration snapshot, shared by the proxy and the control plane.
//!
//! It owns the data model of workspaces, MCP servers, tokens, secrets and tool policies
//! ([`model`]), reading and validating it with precise errors ([`load`]), and the rules
//! both sides must agree on: how tool names are namespaced ([`naming`]), how header
//! templates reference secrets ([`template`]), how policies match ([`policy`]) and how
//! a bearer token is hashed ([`hash_token`]), and the audit events proxies ship
//! ([`audit`]).

pub mod audit;
pub mod load;
pub mod model;
pub mod naming;
pub mod policy;
pub mod template;

pub use load::{load_file, parse, validate, validate_skill_tools, ConfigError, Format, Problem};
pub use model::{
    Limits, McpServer, Naming, RateLimit, Secret, ServerLimits, SessionKey, SkillRequest,
    SkillResponse, SkillTool, Snapshot, TokenScope, ToolOverride, ToolPolicy, Transport, Workspace,
    WorkspaceLimits, WorkspaceToken,
};

use sha2::{Digest, Sha256};

/// Prefix of every workspace token.
pub const TOKEN_PREFIX: &str = "mwt_";

/// SHA-256 of a workspace token's full text, as stored in the snapshot.
pub fn hash_token(token: impl AsRef<[u8]>) -> [u8; 32] {
    Sha256::digest(token.as_ref()).into()
}

/// Lowercase hex of [`hash_token`], the form the snapshot stores.
pub fn hash_token_hex(token: &str) -> String {
    hex::encode(hash_token(token))
}
