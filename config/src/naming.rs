//! Names as clients see them: `<server>__<tool>`, within the strictest client limit.
//!
//! Server slugs never contain `_`, so the first `__` splits a name unambiguously. A name
//! that would be too long or use characters clients reject is shortened
//! deterministically: the readable part is cut and a hash of the original tool name is
//! appended, so the same upstream tool always gets the same exposed name.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

/// Longest tool name any mainstream client accepts.
pub const MAX_TOOL_NAME_LEN: usize = 64;
/// Separator between the server slug and the upstream's own name.
pub const SEPARATOR: &str = "__";
const HASH_LEN: usize = 8;

/// Whether `c` may appear in an exposed name (`[A-Za-z0-9_.-]`).
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// Whether `name` satisfies `^[A-Za-z0-9_.-]{1,64}$`.
pub fn is_valid_exposed_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TOOL_NAME_LEN && name.chars().all(is_name_char)
}

/// The name a client sees for `tool` of `server`.
pub fn exposed_name(server: &str, tool: &str) -> String {
    let plain = format!("{server}{SEPARATOR}{tool}");
    if is_valid_exposed_name(&plain) {
        return plain;
    }
    let digest = Sha256::digest(tool.as_bytes());
    let hash = hex::encode(&digest[..HASH_LEN / 2]);
    let room = MAX_TOOL_NAME_LEN.saturating_sub(server.len() + SEPARATOR.len() + 1 + HASH_LEN);
    let readable: String = tool
        .chars()
        .map(|c| if is_name_char(c) { c } else { '_' })
        .take(room)
        .collect();
    format!("{server}{SEPARATOR}{readable}-{hash}")
}

/// Splits an exposed name into (server slug, rest) at the first `__`.
pub fn split_exposed(name: &str) -> Option<(&str, &str)> {
    let at = name.find(SEPARATOR)?;
    let (server, rest) = name.split_at(at);
    let rest = &rest[SEPARATOR.len()..];
    (!server.is_empty() && !rest.is_empty()).then_some((server, rest))
}

/// Derives a slug from a display name: "Engineering Team" -> `engineering-team`.
pub fn slugify(name: &str) -> Cow<'_, str> {
    if is_valid_slug(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_end_matches('-').chars().take(32).collect();
    Cow::Owned(trimmed.trim_end_matches('-').to_string())
}

/// The tool name an override may give: 1 to 128 of `A-Z a-z 0-9 _ - .`, as the MCP
/// spec recommends.
pub fn is_valid_tool_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
}

/// Slug rule for workspaces and servers: `^[a-z0-9][a-z0-9-]{0,31}$`.
pub fn is_valid_slug(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 32
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_prefixed_verbatim() {
        assert_eq!(
            exposed_name("github", "create_issue"),
            "github__create_issue"
        );
        assert_eq!(
            split_exposed("github__create_issue"),
            Some(("github", "create_issue"))
        );
        // The first `__` splits: tool names may contain `__` themselves.
        assert_eq!(split_exposed("a__b__c"), Some(("a", "b__c")));
        assert_eq!(split_exposed("nounderscore"), None);
        assert_eq!(split_exposed("__x"), None);
    }

    #[test]
    fn long_or_odd_names_are_shortened_deterministically() {
        let tool = "a".repeat(100);
        let a = exposed_name("server", &tool);
        assert_eq!(a.len(), MAX_TOOL_NAME_LEN);
        assert!(is_valid_exposed_name(&a));
        assert_eq!(a, exposed_name("server", &tool));
        // Two long names sharing a prefix still differ.
        let other = format!("{}b", "a".repeat(99));
        assert_ne!(a, exposed_name("server", &other));

        let spaced = exposed_name("svc", "get weather/now");
        assert!(is_valid_exposed_name(&spaced), "{spaced}");
        assert!(spaced.starts_with("svc__get_weather_now-"));
    }

    #[test]
    fn slugs() {
        assert_eq!(slugify("Engineering"), "engineering");
        assert_eq!(slugify("Acme Corp!"), "acme-corp");
        assert_eq!(slugify("client-acme"), "client-acme");
        assert!(is_valid_slug("eng-full"));
        assert!(!is_valid_slug("Eng"));
        assert!(!is_valid_slug("-eng"));
        assert!(!is_valid_slug("git_hub"));
        assert!(!is_valid_slug(&"a".repeat(33)));
    }
}
