//! Protocol versions the gateway speaks on each side: the legacy (session) era's,
//! negotiated at `initialize`, and the modern (stateless) era's, named on every
//! request.

/// The modern era's version: no `initialize`, no session.
pub const MODERN_VERSION: &str = "2026-07-28";
/// Every version the gateway speaks, newest first, as `server/discover` and an
/// unsupported-version error list them.
pub const ALL_VERSIONS: [&str; 5] = [
    MODERN_VERSION,
    "2025-11-25",
    "2025-06-18",
    "2025-03-26",
    "2024-11-05",
];

/// Whether `version` is one of the modern era the gateway speaks.
pub fn is_modern(version: &str) -> bool {
    version == MODERN_VERSION
}

/// The legacy era's versions, newest first.
pub const SUPPORTED_VERSIONS: [&str; 4] = ["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
pub const LATEST_VERSION: &str = SUPPORTED_VERSIONS[0];
/// What a request without `MCP-Protocol-Version` is assumed to speak.
pub const DEFAULT_VERSION: &str = "2025-03-26";

pub fn is_supported(version: &str) -> bool {
    SUPPORTED_VERSIONS.contains(&version)
}

/// The version the gateway answers a client's `initialize` with: the client's own if
/// supported, else the newest.
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| SUPPORTED_VERSIONS.iter().find(|v| **v == r).copied())
        .unwrap_or(LATEST_VERSION)
}
