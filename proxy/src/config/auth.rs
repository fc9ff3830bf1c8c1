//! Workspace token authentication: `Authorization: Bearer mwt_...` -> SHA-256 -> an
//! index lookup in the current snapshot, then a constant-time comparison of the full
//! hash. Every failure looks the same to the caller; only metrics see the reason.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use gatehouse_config::policy::CompiledScope;
use gatehouse_config::{hash_token, Snapshot, TOKEN_PREFIX};
use subtle::ConstantTimeEq;

use crate::limits::{Budget, Schedules};

/// A token as the request path needs it.
#[derive(Debug, Clone)]
pub struct TokenRt {
    /// The SHA-256 of the token as four words: compared in four constant-time steps
    /// instead of thirty-two.
    hash: [u64; 4],
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub workspace: Arc<str>,
    pub expires_at: Option<u64>,
    pub revoked: bool,
    /// When this proxy last let the token in (unix seconds), shared with
    /// [`TokenUsage`] so it survives config reloads.
    last_used: Arc<AtomicU64>,
    /// Its rate budget and stream cap, if it has any.
    pub budget: Option<Arc<Budget>>,
    /// The tools it may see and call, if it is limited to some.
    pub scope: Option<Arc<CompiledScope>>,
}

/// When each token was last used on this proxy, and what was already reported to the
/// control plane. Outlives every config generation.
#[derive(Debug, Default)]
pub struct TokenUsage {
    tokens: DashMap<String, UsageEntry>,
}

#[derive(Debug, Default)]
struct UsageEntry {
    used: Arc<AtomicU64>,
    reported: AtomicU64,
}

impl TokenUsage {
    fn handle(&self, id: &str) -> Arc<AtomicU64> {
        self.tokens.entry(id.to_string()).or_default().used.clone()
    }

    /// (token id, last used) for every token used since the last report.
    pub fn unreported(&self) -> Vec<(String, u64)> {
        self.tokens
            .iter()
            .filter_map(|e| {
                let used = e.used.load(Ordering::Relaxed);
                (used > e.reported.load(Ordering::Relaxed)).then(|| (e.key().clone(), used))
            })
            .collect()
    }

    /// Marks these uses as delivered.
    pub fn reported(&self, delivered: &[(String, u64)]) {
        for (id, at) in delivered {
            if let Some(e) = self.tokens.get(id) {
                e.reported.fetch_max(*at, Ordering::Relaxed);
            }
        }
    }

    /// Forgets tokens no longer configured.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.tokens.retain(|id, _| keep(id));
    }
}

/// Why a request was refused; the label of `gatehouse_auth_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Unknown,
    Expired,
    Revoked,
    WrongWorkspace,
}

impl AuthFailure {
    pub fn as_label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown",
            AuthFailure::Expired => "expired",
            AuthFailure::Revoked => "revoked",
            AuthFailure::WrongWorkspace => "wrong_workspace",
        }
    }
}

/// Tokens keyed by the first 8 bytes of their hash. The hash of a random token is
/// uniformly distributed, so the prefix is a perfect hash key; the whole hash is then
/// compared in constant time.
#[derive(Debug, Default)]
pub struct TokenIndex {
    by_prefix: HashMap<u64, Vec<TokenRt>, PrefixHasher>,
}

impl TokenIndex {
    pub fn build(snapshot: &Snapshot) -> anyhow::Result<TokenIndex> {
        Self::build_with(snapshot, &TokenUsage::default(), &Schedules::default())
    }

    /// Builds the index with last-used clocks from `usage` and budgets scheduled in
    /// `schedules`.
    pub fn build_with(
        snapshot: &Snapshot,
        usage: &TokenUsage,
        schedules: &Schedules,
    ) -> anyhow::Result<TokenIndex> {
        let mut index = TokenIndex::default();
        for ws in &snapshot.workspaces {
            let workspace: Arc<str> = Arc::from(ws.slug.as_str());
            for t in &ws.tokens {
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut bytes)
                    .map_err(|e| anyhow::anyhow!("token {}: sha256: {e}", t.id))?;
                let hash = words(&bytes);
                index.by_prefix.entry(hash[0]).or_default().push(TokenRt {
                    hash,
                    id: Arc::from(t.id.as_str()),
                    name: Arc::from(t.name.as_str()),
                    workspace: workspace.clone(),
                    expires_at: t.expires_at,
                    revoked: t.revoked,
                    last_used: usage.handle(&t.id),
                    budget: schedules.token(snapshot, ws, &t.id, t.limits.as_ref()),
                    scope: t
                        .scope
                        .as_ref()
                        .filter(|s| !s.is_everything())
                        .map(CompiledScope::compile)
                        .transpose()
                        .map_err(|e| anyhow::anyhow!("token {}: scope: {e}", t.id))?
                        .map(Arc::new),
                });
            }
        }
        Ok(index)
    }

    /// Authenticates the `Authorization` header value for `workspace` at `now`
    /// (unix seconds).
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        workspace: &str,
        now: u64,
    ) -> Result<&TokenRt, AuthFailure> {
        let header = authorization.ok_or(AuthFailure::Missing)?;
        let token = bearer(header).ok_or(AuthFailure::Malformed)?;
        let hash = words(&hash_token(token));
        let Some(found) = self
            .by_prefix
            .get(&hash[0])
            .and_then(|bucket| bucket.iter().find(|t| bool::from(t.hash.ct_eq(&hash))))
        else {
            // Only a refused token pays for telling malformed from unknown: one whose
            // hash matched a configured token is that token, and those are well-formed.
            return Err(if well_formed(token) {
                AuthFailure::Unknown
            } else {
                AuthFailure::Malformed
            });
        };
        if found.revoked {
            return Err(AuthFailure::Revoked);
        }
        if found.expires_at.is_some_and(|at| now >= at) {
            return Err(AuthFailure::Expired);
        }
        if &*found.workspace != workspace {
            return Err(AuthFailure::WrongWorkspace);
        }
        // At most one store per token per second: a load on the hot path, rarely a store.
        if found.last_used.load(Ordering::Relaxed) < now {
            found.last_used.store(now, Ordering::Relaxed);
        }
        Ok(found)
    }
}

/// The credential of a `Bearer` header, as bytes: nothing on the success path needs it
/// as text.
fn bearer(header: &[u8]) -> Option<&[u8]> {
    let space = memchr::memchr(b' ', header)?;
    let (scheme, token) = header.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| token.trim_ascii())
}

/// `mwt_` and at least 32 base62 characters.
fn well_formed(token: &[u8]) -> bool {
    token
        .strip_prefix(TOKEN_PREFIX.as_bytes())
        .is_some_and(|body| body.len() >= 32 && body.iter().all(u8::is_ascii_alphanumeric))
}

/// A SHA-256 as words; the first is the index key.
fn words(hash: &[u8; 32]) -> [u64; 4] {
    std::array::from_fn(|i| u64::from_le_bytes(hash[i * 8..i * 8 + 8].try_into().expect("8 bytes")))
}

/// The keys are already uniformly random: hashing them again is wasted work.
#[derive(Debug, Default, Clone, Copy)]
struct PrefixHasher;

impl std::hash::BuildHasher for PrefixHasher {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::{hash_token_hex, Workspace, WorkspaceToken};

    const ALICE: &str = "mwt_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const OLD: &str = "mwt_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const GONE: &str = "mwt_ccccccccccccccccccccccccccccccccccccccccccc";

    fn index() -> TokenIndex {
        let token = |id: &str, text: &str, expires_at, revoked| WorkspaceToken {
            id: id.into(),
            name: id.into(),
            sha256: hash_token_hex(text),
            expires_at,
            revoked,
            limits: None,
            scope: None,
        };
        let snapshot = Snapshot {
            workspaces: vec![Workspace {
                slug: "eng".into(),
                name: "Eng".into(),
                owner: None,
                servers: vec![],
                tokens: vec![
                    token("alice", ALICE, Some(2_000), false),
                    token("old", OLD, Some(1_000), false),
                    token("gone", GONE, None, true),
                ],
                limits: Default::default(),
            }],
            ..Snapshot::default()
        };
        TokenIndex::build(&snapshot).unwrap()
    }

    #[test]
    fn the_auth_matrix() {
        let idx = index();
        let auth = |h: Option<&str>, ws: &str| {
            idx.authenticate(h.map(str::as_bytes), ws, 1_500)
                .map(|t| t.id.to_string())
        };
        assert_eq!(
            auth(Some(&format!("Bearer {ALICE}")), "eng"),
            Ok("alice".into())
        );
        assert_eq!(
            auth(Some(&format!("bearer  {ALICE}")), "eng"),
            Ok("alice".into())
        );
        assert_eq!(auth(None, "eng"), Err(AuthFailure::Missing));
        assert_eq!(
            auth(Some("Basic dXNlcjpwdw=="), "eng"),
            Err(AuthFailure::Malformed)
        );
        assert_eq!(
            auth(Some("Bearer mwt_short"), "eng"),
            Err(AuthFailure::Malformed)
        );
        let unknown = format!("Bearer mwt_{}", "z".repeat(43));
        assert_eq!(auth(Some(&unknown), "eng"), Err(AuthFailure::Unknown));
        assert_eq!(
            auth(Some(&format!("Bearer {OLD}")), "eng"),
            Err(AuthFailure::Expired)
        );
        assert_eq!(
            auth(Some(&format!("Bearer {GONE}")), "eng"),
            Err(AuthFailure::Revoked)
        );
        assert_eq!(
            auth(Some(&format!("Bearer {ALICE}")), "other"),
            Err(AuthFailure::WrongWorkspace)
        );
    }
}
