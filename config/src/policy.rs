//! Tool policy compiled once per snapshot: a server's allow/deny globs and read-only
//! mode over its own tool names, and a token's scope over the workspace's exposed
//! names.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::model::{TokenScope, ToolPolicy};

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

/// A [`TokenScope`] with its globs compiled.
#[derive(Debug, Clone)]
pub struct CompiledScope {
    tools: Option<GlobSet>,
    read_only: bool,
}

impl CompiledScope {
    pub fn compile(scope: &TokenScope) -> Result<Self, globset::Error> {
        Ok(CompiledScope {
            tools: (!scope.tools.is_empty())
                .then(|| build(&scope.tools))
                .transpose()?,
            read_only: scope.read_only,
        })
    }

    /// Whether the token may see and call the tool exposed as `exposed`, annotated
    /// `readOnlyHint` = `read_only_hint`.
    pub fn permits(&self, exposed: &str, read_only_hint: bool) -> bool {
        (!self.read_only || read_only_hint)
            && self.tools.as_ref().is_none_or(|g| g.is_match(exposed))
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

    #[test]
    fn a_scope_limits_exposed_names_and_read_only() {
        let scope = |tools: &[&str], read_only| {
            CompiledScope::compile(&TokenScope {
                tools: tools.iter().map(|s| s.to_string()).collect(),
                read_only,
            })
            .unwrap()
        };
        let all = scope(&[], false);
        assert!(all.permits("github__delete_repo", false));
        let listing = scope(&["github__list_*", "jira__get_*"], false);
        assert!(listing.permits("github__list_issues", false));
        assert!(listing.permits("jira__get_issue", true));
        assert!(!listing.permits("github__create_issue", true));
        let reading = scope(&[], true);
        assert!(reading.permits("github__create_issue", true));
        assert!(!reading.permits("github__list_issues", false));
        let both = scope(&["github__*"], true);
        assert!(both.permits("github__list_issues", true));
        assert!(!both.permits("github__create_issue", false));
        assert!(!both.permits("jira__get_issue", true));
        assert!(CompiledScope::compile(&TokenScope {
            tools: vec!["github__[".into()],
            read_only: false,
        })
        .is_err());
    }
}
