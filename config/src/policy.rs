//! Tool policy compiled once per snapshot: allow/deny globs and read-only mode.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::model::ToolPolicy;

/// A [`ToolPolicy`] with its globs compiled.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    allow: Option<GlobSet>,
    deny: GlobSet,
    read_only: bool,
}

impl CompiledPolicy {
    pub fn compile(policy: &ToolPolicy) -> Result<Self, globset::Error> {
        let allow = if policy.allow.is_empty() {
            None
        } else {
            Some(build(&policy.allow)?)
        };
        Ok(CompiledPolicy {
            allow,
            deny: build(&policy.deny)?,
            read_only: policy.read_only,
        })
    }

    /// Whether the policy exposes every tool (no allow list, no deny, not read-only).
    pub fn is_open(&self) -> bool {
        self.allow.is_none() && self.deny.is_empty() && !self.read_only
    }

    /// Whether an upstream tool named `name` is exposed. `read_only_hint` is the tool's
    /// `annotations.readOnlyHint` (absent means false, per the spec).
    pub fn exposes(&self, name: &str, read_only_hint: bool) -> bool {
        if self.read_only && !read_only_hint {
            return false;
        }
        if let Some(allow) = &self.allow {
            if !allow.is_match(name) {
                return false;
            }
        }
        !self.deny.is_match(name)
    }
}

fn build(globs: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for g in globs {
        builder.add(Glob::new(g)?);
    }
    builder.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str], read_only: bool) -> CompiledPolicy {
        CompiledPolicy::compile(&ToolPolicy {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            read_only,
        })
        .unwrap()
    }

    #[test]
    fn allow_deny_and_read_only() {
        let open = policy(&[], &[], false);
        assert!(open.exposes("anything", false));
        assert!(open.is_open());
        assert!(!policy(&[], &["x"], false).is_open());
        assert!(!policy(&["x"], &[], false).is_open());
        assert!(!policy(&[], &[], true).is_open());

        let p = policy(&["list_*", "get_*"], &["get_secret*"], false);
        assert!(p.exposes("list_issues", false));
        assert!(p.exposes("get_issue", false));
        assert!(!p.exposes("get_secret_value", false));
        assert!(!p.exposes("delete_repo", false));

        let ro = policy(&[], &["dangerous"], true);
        assert!(ro.exposes("search", true));
        assert!(!ro.exposes("write", false));
        assert!(!ro.exposes("dangerous", true));
    }
}
