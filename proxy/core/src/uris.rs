//! How resource URIs of many servers share one workspace: each is exposed as
//!
//! ```text
//! gatehouse://<server>/<the upstream's URI, character for character>
//! ```
//!
//! and mapped back by stripping the prefix up to the first `/` after the server slug
//! (slugs never contain `/`). Nothing of the original is encoded, which is what makes
//! resource *templates* work: `file:///{path}` becomes `gatehouse://fs/file:///{path}`,
//! the literal prefix is just longer, and whatever a client's RFC 6570 expansion
//! produces after it is exactly what the upstream's own template would have produced.
//! Percent-encoding the original would break that, since the gateway could not tell
//! the client's escapes in expanded values from its own.

/// The scheme and separator every exposed resource URI starts with.
pub const PREFIX: &str = "gatehouse://";

/// The URI (or URI template) a client sees for `uri` of `server`.
pub fn expose(server: &str, uri: &str) -> String {
    let mut out = String::with_capacity(PREFIX.len() + server.len() + 1 + uri.len());
    out.push_str(PREFIX);
    out.push_str(server);
    out.push('/');
    out.push_str(uri);
    out
}

/// `(server, upstream URI)` of an exposed URI; `None` for anything else.
pub fn route(exposed: &str) -> Option<(&str, &str)> {
    let rest = exposed.strip_prefix(PREFIX)?;
    let (server, uri) = rest.split_once('/')?;
    (!server.is_empty() && !uri.is_empty()).then_some((server, uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6570 level-1 expansion (`{var}`: unreserved characters kept, the rest
    /// percent-encoded), as clients do for `resources/templates/list` entries.
    fn expand(template: &str, var: &str, value: &str) -> String {
        let encoded: String = value
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        template.replace(&format!("{{{var}}}"), &encoded)
    }

    #[test]
    fn any_uri_round_trips() {
        for uri in [
            "file:///home/user/notes.md",
            "https://example.com/a?b=c&d=%2F#frag",
            "memo://insights",
            "urn:isbn:0451450523",
            "db://table/row with spaces/ünïcode",
            "x://gatehouse://nested/",
            "relative/path",
        ] {
            let exposed = expose("notes", uri);
            assert!(exposed.starts_with("gatehouse://notes/"), "{exposed}");
            assert_eq!(route(&exposed), Some(("notes", uri)), "{exposed}");
        }
        assert_eq!(route("file:///x"), None);
        assert_eq!(route("gatehouse://notes"), None);
        assert_eq!(route("gatehouse:///x"), None);
        assert_eq!(route("gatehouse://notes/"), None);
    }

    #[test]
    fn expanded_templates_map_back_to_the_upstream_expansion() {
        for (template, value) in [
            ("file:///{path}", "dir/file name.txt"),
            ("users://{id}/profile", "42"),
            ("search://q?{term}", "a&b=c/d"),
        ] {
            let exposed = expose("fs", template);
            let via_gateway = expand(&exposed, template_var(template), value);
            let direct = expand(template, template_var(template), value);
            assert_eq!(route(&via_gateway), Some(("fs", direct.as_str())));
        }
    }

    fn template_var(template: &str) -> &str {
        let start = template.find('{').unwrap() + 1;
        let end = template.find('}').unwrap();
        &template[start..end]
    }
}
