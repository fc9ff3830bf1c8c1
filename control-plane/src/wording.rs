//! Sentences both the CLI and the admin dashboard say to people, written once so the
//! two say them the same way (the seeds' wording).

/// "This will revoke all 3 tokens and remove 1 MCP server." (without "Confirm?"):
/// what deleting workspace `slug` with `servers` MCP servers and `tokens` active
/// tokens does.
pub fn delete_warning(slug: &str, servers: u64, tokens: u64) -> String {
    let mut effects = Vec::new();
    match tokens {
        0 => {}
        1 => effects.push("revoke 1 token".to_owned()),
        n => effects.push(format!("revoke all {n} tokens")),
    }
    match servers {
        0 => {}
        1 => effects.push("remove 1 MCP server".to_owned()),
        n => effects.push(format!("remove {n} MCP servers")),
    }
    if effects.is_empty() {
        format!("This will delete workspace {slug} (it has no active tokens and no MCP servers).")
    } else {
        format!("This will {}.", effects.join(" and "))
    }
}
