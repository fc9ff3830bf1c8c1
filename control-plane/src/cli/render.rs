//! Text output: the tables and messages of the seeds, as pure functions of the API's
//! answers so their exact shape is unit-tested. Every function returns the whole
//! stdout text, ending in a newline.

use std::collections::BTreeMap;

use comfy_table::{presets, ContentArrangement, Table};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::resources::{
    scalar_text, AuditEvent, InvitationCreated, McpServer, MemberRemoved, Package,
    PackageInstalled, PackageVersion, Proxy, SecretEntry, ServerInstalled, Team, TokenCreated,
    TokenScope, Workspace, WorkspaceCreated, WorkspaceToken,
};
use crate::dates::{format_ago, format_date, format_minute};

/// Columns separated by two spaces, no borders, no wrapping (scripts may `awk` it).
pub fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .force_no_tty()
        .set_header(header.to_vec());
    for row in rows {
        table.add_row(row);
    }
    let last = header.len().saturating_sub(1);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index == last { 0 } else { 2 }));
    }
    let mut text = table.trim_fmt();
    text.push('\n');
    text
}

/// `2 MCP servers`, `1 token`.
pub fn count(n: u64, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// An editor config entry with `url` first, as editors' docs (and the seeds) show
/// it; the API's JSON objects come back with sorted keys.
#[derive(Serialize, Deserialize)]
struct EditorEntry {
    url: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    headers: Option<Value>,
    #[serde(flatten)]
    other: Map<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct EditorConfig {
    #[serde(rename = "mcpServers")]
    mcp_servers: BTreeMap<String, EditorEntry>,
}

fn mcp_json_block(mcp_json: &Value) -> String {
    if mcp_json.is_null() {
        return String::new();
    }
    let pretty = EditorConfig::deserialize(mcp_json)
        .ok()
        .and_then(|config| serde_json::to_string_pretty(&config).ok())
        .or_else(|| serde_json::to_string_pretty(mcp_json).ok())
        .unwrap_or_else(|| mcp_json.to_string());
    format!("\nAdd this to your editor's MCP config:\n{pretty}\n")
}

fn token_line(secret: &str) -> String {
    format!("Token: {secret} (shown once — save this)\n")
}

pub fn workspace_created(created: &WorkspaceCreated, made_active: bool) -> String {
    let mut out = String::from("Workspace created.\n");
    out += &format!("Gateway URL: {}\n", created.gateway_url);
    out += &format!("SSE URL: {}\n", created.sse_url);
    out += &token_line(&created.secret);
    if made_active {
        out += &format!("Active workspace set to: {}\n", created.workspace.slug);
    }
    out += &mcp_json_block(&created.mcp_json);
    out
}

/// `SLUG NAME MCP SERVERS TOKENS`, the active row marked `* `.
pub fn workspace_table(workspaces: &[Workspace], active: Option<&str>) -> String {
    if workspaces.is_empty() {
        return "No workspaces. Create one: gatehouse workspace create NAME\n".to_owned();
    }
    let rows = workspaces
        .iter()
        .map(|w| {
            let marker = if Some(w.slug.as_str()) == active {
                "* "
            } else {
                "  "
            };
            vec![
                format!("{marker}{}", w.slug),
                w.name.clone(),
                w.servers.to_string(),
                w.tokens.to_string(),
            ]
        })
        .collect();
    table(&["  SLUG", "NAME", "MCP SERVERS", "TOKENS"], rows)
}

pub fn workspace_active(slug: &str) -> String {
    format!("Active workspace set to: {slug}\n")
}

/// "This will revoke all 3 tokens and remove 1 MCP server." (without "Confirm?").
pub fn delete_warning(workspace: &Workspace) -> String {
    crate::wording::delete_warning(&workspace.slug, workspace.servers, workspace.tokens)
}

pub fn token_created(created: &TokenCreated) -> String {
    let mut out = token_line(&created.secret);
    if let Some(expires) = created.token.expires_at {
        out += &format!("Expires: {}\n", format_minute(expires));
    }
    if created.token.scope.is_some() {
        out += &format!(
            "Tools: {}\n",
            TokenScope::describe(created.token.scope.as_ref())
        );
    }
    out += &mcp_json_block(&created.mcp_json);
    out
}

/// What `mcp tool set` changed, from the API's answer.
pub fn tool_override(workspace: &str, answer: &Value) -> String {
    let server = answer["server"].as_str().unwrap_or_default();
    let tool = answer["tool"].as_str().unwrap_or_default();
    let shape = &answer["override"];
    if shape.is_null() {
        return format!("✓ {server}'s tool {tool} is shown in {workspace} as the server has it.\n");
    }
    let mut out = format!("✓ {server}'s tool {tool} in {workspace}:\n");
    if let Some(name) = shape["name"].as_str() {
        out += &format!("  shown as:     {name}\n");
    }
    if let Some(text) = shape["description"].as_str() {
        out += &format!("  description:  {text}\n");
    }
    if let Some(text) = shape["extend_description"].as_str() {
        out += &format!("  + description: {text}\n");
    }
    for (field, label) in [("fixed_arguments", "fixed"), ("annotations", "annotated")] {
        if let Some(map) = shape[field].as_object() {
            for (name, value) in map {
                out += &format!("  {:<13} {name} = {value}\n", format!("{label}:"));
            }
        }
    }
    out
}

/// `TOKEN NAME  CREATED  LAST USED  STATUS`.
pub fn token_table(workspace: &str, tokens: &[WorkspaceToken]) -> String {
    if tokens.is_empty() {
        return format!(
            "No tokens in {workspace}. Create one: gatehouse workspace token create {workspace} --name NAME\n"
        );
    }
    // The TOOLS column only where some token is limited to some tools.
    let scoped = tokens.iter().any(|t| t.scope.is_some());
    let rows = tokens
        .iter()
        .map(|t| {
            let mut row = vec![
                t.name.clone(),
                format_date(t.created_at),
                t.last_used_at
                    .map(format_date)
                    .unwrap_or_else(|| "never".to_owned()),
            ];
            if scoped {
                row.push(TokenScope::describe(t.scope.as_ref()));
            }
            row.push(t.status.clone());
            row
        })
        .collect();
    if scoped {
        table(
            &["TOKEN NAME", "CREATED", "LAST USED", "TOOLS", "STATUS"],
            rows,
        )
    } else {
        table(&["TOKEN NAME", "CREATED", "LAST USED", "STATUS"], rows)
    }
}

pub fn token_revoked(token: &WorkspaceToken) -> String {
    format!(
        "✓ Token revoked. {}'s gateway access is immediately disabled.\n",
        token.name
    )
}

/// `DATE  USER  SKILL  ACTION`; SKILL is the event's target. A failed or denied
/// outcome is shown next to the action so it is not mistaken for a success.
pub fn audit_table(workspace: &str, events: &[AuditEvent]) -> String {
    if events.is_empty() {
        return format!("No audit events in {workspace} for this filter.\n");
    }
    let rows = events
        .iter()
        .map(|e| {
            let action = match e.outcome.as_str() {
                "" | "ok" | "success" | "succeeded" | "allowed" => e.action.clone(),
                outcome => format!("{} ({outcome})", e.action),
            };
            vec![
                format_minute(e.time),
                e.actor.clone(),
                dash_if_empty(&e.target),
                action,
            ]
        })
        .collect();
    table(&["DATE", "USER", "SKILL", "ACTION"], rows)
}

/// The API's `streamable_http` as the CLI flag spells it.
pub fn transport_text(transport: &str) -> String {
    transport.replace('_', "-")
}

pub fn server_installed(installed: &ServerInstalled, workspace: &str) -> String {
    let slug = &installed.server.slug;
    let mut out = format!("Installed {slug} in {workspace}.\n");
    if let Some(command) = &installed.server.command {
        out += &format!(
            "Gatehouse runs it when a client first uses it: {}\n\
             Its secrets reach it as environment variables: gatehouse secrets set {slug} NAME VALUE --workspace {workspace}\n",
            crate::runner::spec::command_line(command, &installed.server.args)
        );
    }
    match installed.probe.as_ref().map(|p| (&p.found, &p.error)) {
        Some((Some(found), _)) => {
            let transport = match found.transport.as_str() {
                "sse" => "legacy HTTP+SSE",
                _ => "Streamable HTTP",
            };
            let version = match found.protocol_version.as_deref() {
                Some("2026-07-28") => ", protocol 2026-07-28 (stateless)".to_string(),
                Some(v) => format!(", protocol {v}"),
                None => String::new(),
            };
            let tools = match found.tools {
                Some(1) => "1 tool".to_string(),
                Some(n) => format!("{n} tools"),
                None => "its tools could not be listed".to_string(),
            };
            out += &format!("Found {transport}{version}: {tools}.\n");
        }
        Some((None, Some(error))) => {
            out += &format!(
                "Could not probe it: {error}.\nSaved as Streamable HTTP; pass --transport sse if it is a legacy HTTP+SSE server.\n"
            );
        }
        _ => {}
    }
    for name in &installed.missing_secrets {
        out += &format!(
            "Set its secrets: gatehouse secrets set {slug} {name} VALUE --workspace {workspace}\n"
        );
    }
    out
}

pub fn server_removed(server: &McpServer, workspace: &str) -> String {
    format!("Removed {} from {workspace}.\n", server.slug)
}

/// A server after `mcp enable`, `mcp disable` or `mcp policy`: whether clients see
/// it, and the policy its tools pass through.
pub fn server_changed(server: &McpServer, workspace: &str) -> String {
    let slug = &server.slug;
    let state = if server.enabled {
        format!("{slug} in {workspace} is enabled: its tools reach clients")
    } else {
        format!("{slug} in {workspace} is disabled: clients do not see its tools")
    };
    let p = &server.policy;
    let globs = |g: &[String]| {
        if g.is_empty() {
            "-".to_owned()
        } else {
            g.join(",")
        }
    };
    let policy = if p.allow.is_empty() && p.deny.is_empty() && !p.read_only {
        "open (every tool)".to_owned()
    } else {
        format!(
            "allow {}; deny {}; read-only {}",
            globs(&p.allow),
            globs(&p.deny),
            yes_no(p.read_only)
        )
    };
    let naming = if server.naming == "bare" {
        "bare (the server's own names)".to_owned()
    } else {
        format!("prefixed ({slug}__<tool>)")
    };
    let mut out = format!("{state}.\nTool policy: {policy}.\nNaming: {naming}.\n");
    if let Some(command) = &server.command {
        out += &format!(
            "Runs: {}\n",
            crate::runner::spec::command_line(command, &server.args)
        );
        if !server.env.is_empty() {
            let names: Vec<&str> = server.env.keys().map(String::as_str).collect();
            out += &format!("Environment: {}\n", names.join(", "));
        }
    }
    out += &format!("Limits: {}.\n", server_limits(server.limits.as_ref()));
    out
}

/// A server's timeouts and cap, each as set or its default.
fn server_limits(limits: Option<&gatehouse_config::ServerLimits>) -> String {
    use gatehouse_config::McpServer as Defaults;
    let l = limits.cloned().unwrap_or_default();
    let call = l
        .call_timeout_ms
        .unwrap_or_else(Defaults::default_call_timeout_ms);
    let first_byte = match l.first_byte_timeout_ms {
        Some(ms) => format!("{ms} ms"),
        None => "the call timeout".into(),
    };
    let cap = match l
        .max_in_flight
        .unwrap_or_else(Defaults::default_max_in_flight)
    {
        0 => "no cap on calls in flight".to_owned(),
        n => format!(
            "{n} calls in flight per proxy, {} more waiting",
            l.max_queued.unwrap_or_else(Defaults::default_max_queued)
        ),
    };
    format!(
        "connect {} ms, first byte {first_byte}, silent mid-call {call} ms, whole call {} ms; {cap}",
        l.connect_timeout_ms
            .unwrap_or_else(Defaults::default_connect_timeout_ms),
        l.max_call_ms.unwrap_or_else(Defaults::default_max_call_ms)
    )
}

/// `SLUG URL TRANSPORT ENABLED SECRETS`.
pub fn server_table(workspace: &str, servers: &[McpServer]) -> String {
    if servers.is_empty() {
        return format!(
            "No MCP servers in {workspace}. Install one: gatehouse mcp install URL --workspace {workspace}\n"
        );
    }
    let rows = servers
        .iter()
        .map(|s| {
            // A skill has no upstream URL: the gateway runs it; show where it came from.
            let source = match (&s.url, &s.package, &s.command) {
                (_, _, Some(command)) => crate::runner::spec::command_line(command, &s.args),
                (url, Some(package), _) if url.is_empty() => package.clone(),
                (url, _, _) => dash_if_empty(url),
            };
            vec![
                s.slug.clone(),
                source,
                transport_text(&s.transport),
                yes_no(s.enabled),
                if s.secrets.is_empty() {
                    "-".to_owned()
                } else {
                    s.secrets.join(",")
                },
            ]
        })
        .collect();
    table(&["SLUG", "URL", "TRANSPORT", "ENABLED", "SECRETS"], rows)
}

pub fn secret_set(server: &str, name: &str, workspace: &str) -> String {
    format!("Secret {name} set for {server} in {workspace}.\n")
}

pub fn secret_deleted(server: &str, name: &str, workspace: &str) -> String {
    format!("Secret {name} deleted from {server} in {workspace}.\n")
}

/// `SERVER NAME UPDATED`. Values are never returned by the API, so never shown.
pub fn secret_table(workspace: &str, secrets: &[SecretEntry]) -> String {
    if secrets.is_empty() {
        return format!("No secrets in {workspace}.\n");
    }
    let rows = secrets
        .iter()
        .map(|s| vec![s.server.clone(), s.name.clone(), format_date(s.updated_at)])
        .collect();
    table(&["SERVER", "NAME", "UPDATED"], rows)
}

/// `PROXY VERSION CONFIG LAG CONNECTED LAST SEEN`.
pub fn proxy_table(proxies: &[Proxy], now: i64) -> String {
    if proxies.is_empty() {
        return "No proxies have connected to this control plane.\n".to_owned();
    }
    let rows = proxies
        .iter()
        .map(|p| {
            let name = if p.name.is_empty() {
                scalar_text(&p.id)
            } else {
                p.name.clone()
            };
            vec![
                name,
                scalar_text(&p.version),
                scalar_text(&p.config_version),
                scalar_text(&p.lag),
                yes_no(p.connected),
                p.last_seen
                    .map(|t| format_ago(t, now))
                    .unwrap_or_else(|| "never".to_owned()),
            ]
        })
        .collect();
    table(
        &[
            "PROXY",
            "VERSION",
            "CONFIG",
            "LAG",
            "CONNECTED",
            "LAST SEEN",
        ],
        rows,
    )
}

/// `✓ Published @acme/crm@1.2.0 (team)`.
pub fn package_published(package: &Package) -> String {
    let visibility = if package.visibility.is_empty() {
        "public"
    } else {
        &package.visibility
    };
    format!(
        "✓ Published {}@{} ({visibility})\n",
        package.id(),
        package.version
    )
}

/// Descriptions are one table cell: one line, cut at this many characters.
const DESCRIPTION_WIDTH: usize = 60;

fn description_cell(description: Option<&str>) -> String {
    let one_line = description
        .unwrap_or("")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.is_empty() {
        return "-".to_owned();
    }
    if one_line.chars().count() <= DESCRIPTION_WIDTH {
        return one_line;
    }
    let cut: String = one_line.chars().take(DESCRIPTION_WIDTH - 1).collect();
    format!("{}…", cut.trim_end())
}

/// `skill list`: `PACKAGE VERSION TYPE VISIBILITY DESCRIPTION`.
pub fn package_table(packages: &[Package]) -> String {
    if packages.is_empty() {
        return "No packages. Publish one: gatehouse skill publish (in a directory with a gatehouse.json)\n"
            .to_owned();
    }
    let rows = packages
        .iter()
        .map(|p| {
            vec![
                p.id(),
                dash_if_empty(&p.version),
                dash_if_empty(&p.kind),
                dash_if_empty(&p.visibility),
                description_cell(p.description.as_deref()),
            ]
        })
        .collect();
    table(
        &["PACKAGE", "VERSION", "TYPE", "VISIBILITY", "DESCRIPTION"],
        rows,
    )
}

/// `skill search`: public packages only, so no VISIBILITY column.
pub fn search_table(query: &str, packages: &[Package]) -> String {
    if packages.is_empty() {
        return format!("No public packages match {query:?}.\n");
    }
    let rows = packages
        .iter()
        .map(|p| {
            vec![
                p.id(),
                dash_if_empty(&p.version),
                dash_if_empty(&p.kind),
                description_cell(p.description.as_deref()),
            ]
        })
        .collect();
    table(&["PACKAGE", "VERSION", "TYPE", "DESCRIPTION"], rows)
}

/// `VERSION PUBLISHED`, in the API's order.
pub fn version_table(package: &str, versions: &[PackageVersion]) -> String {
    if versions.is_empty() {
        return format!("No published versions of {package}.\n");
    }
    let rows = versions
        .iter()
        .map(|v| vec![v.version.clone(), minute_cell(&v.published_at)])
        .collect();
    table(&["VERSION", "PUBLISHED"], rows)
}

/// The seed's `✓ Installed (team membership verified)` for a team package,
/// otherwise what was installed where; then one line per secret still to set.
pub fn package_installed(installed: &PackageInstalled, requested: &str, workspace: &str) -> String {
    let slug = &installed.server.slug;
    let mut out = if installed.membership_verified {
        "✓ Installed (team membership verified)\n".to_owned()
    } else {
        let package = if installed.package.is_empty() {
            requested
        } else {
            &installed.package
        };
        let version = if installed.version.is_empty() {
            String::new()
        } else {
            format!("@{}", installed.version)
        };
        format!("✓ Installed {package}{version} as {slug} in {workspace}\n")
    };
    for secret in &installed.missing_secrets {
        out += &format!(
            "Set its secrets: gatehouse secrets set {slug} {} VALUE --workspace {workspace}",
            secret.name
        );
        let description = secret.description.trim();
        if !description.is_empty() {
            out += &format!("  # {description}");
        }
        out.push('\n');
    }
    out
}

/// What `skill unpublish` is about to do (without "Confirm?").
pub fn unpublish_warning(package: &str, version: Option<&str>) -> String {
    match version {
        Some(version) => {
            format!("This will unpublish {package}@{version}; it can no longer be installed.")
        }
        None => format!(
            "This will unpublish every version of {package}; it can no longer be installed."
        ),
    }
}

pub fn package_unpublished(package: &str, version: Option<&str>, removed: Option<u64>) -> String {
    match (version, removed) {
        (Some(version), _) => format!("✓ Unpublished {package}@{version}\n"),
        (None, Some(n)) => format!(
            "✓ Unpublished {package} ({})\n",
            count(n, "version", "versions")
        ),
        (None, None) => format!("✓ Unpublished {package} (all versions)\n"),
    }
}

/// `→ Invitation created for alice@acme.com.` and how the code reaches them.
pub fn invitation_created(created: &InvitationCreated, email: &str) -> String {
    let email = if created.invitation.email.is_empty() {
        email
    } else {
        &created.invitation.email
    };
    let mut out = format!("→ Invitation created for {email}.\n");
    if created.emailed {
        out += "An email with the join code was sent.\n";
    } else {
        let command = if created.join_command.trim().is_empty() {
            format!("gatehouse team accept {}", created.code)
        } else {
            created.join_command.trim().to_owned()
        };
        out += &format!("Send them this join command: {command}\n");
    }
    if let Some(expires) = created.invitation.expires_at.as_i64() {
        out += &format!("The code expires {}.\n", format_minute(expires));
    }
    out
}

/// The seed's `Members of @acme:` and one `EMAIL  STATUS  joined|invited DATE` row each.
pub fn team_members(team: &Team, fallback_owner: &str) -> String {
    let owner = if team.owner.is_empty() {
        fallback_owner
    } else {
        &team.owner
    };
    let mut out = format!("Members of @{owner}:\n");
    if team.members.is_empty() {
        out += "  (none yet) Invite someone: gatehouse team invite EMAIL\n";
        return out;
    }
    let who = |m: &super::resources::TeamMember| {
        if m.email.is_empty() {
            m.username.clone().unwrap_or_default()
        } else {
            m.email.clone()
        }
    };
    // Column minimums reproduce the seed's layout for short addresses.
    let who_width = team
        .members
        .iter()
        .map(|m| who(m).chars().count())
        .max()
        .unwrap_or(0)
        .max(17)
        + 2;
    let status_width = team
        .members
        .iter()
        .map(|m| m.status.chars().count())
        .max()
        .unwrap_or(0)
        .max(8)
        + 2;
    for member in &team.members {
        let when = if !member.joined_at.is_null() {
            format!("joined {}", date_cell(&member.joined_at))
        } else {
            format!("invited {}", date_cell(&member.invited_at))
        };
        out += &format!(
            "{:<who_width$}{:<status_width$}{when}\n",
            who(member),
            member.status
        );
    }
    out
}

pub fn team_joined(owner: &str) -> String {
    format!("✓ Joined @{owner}\n")
}

/// `✓ Removed alice@acme.com from @acme (2 team installs removed from their workspaces)`.
pub fn member_removed(removed: &MemberRemoved, requested: &str, fallback_owner: &str) -> String {
    let who = if removed.removed.is_empty() {
        requested
    } else {
        &removed.removed
    };
    let owner = removed.owner.as_deref().unwrap_or(fallback_owner);
    format!(
        "✓ Removed {who} from @{owner} ({} removed from their workspaces)\n",
        count(removed.uninstalled, "team install", "team installs")
    )
}

/// A time the API sends as unix seconds (or, tolerated, an RFC 3339 string), as a day.
pub fn date_cell(time: &Value) -> String {
    match time {
        Value::Number(n) => n.as_i64().map(format_date).unwrap_or_else(|| n.to_string()),
        Value::String(s) => match s.parse::<i64>() {
            Ok(unix) => format_date(unix),
            Err(_) => s.get(..10).unwrap_or(s).to_owned(),
        },
        _ => "-".to_owned(),
    }
}

/// Like [`date_cell`], to the minute.
pub fn minute_cell(time: &Value) -> String {
    match time {
        Value::Number(n) => n
            .as_i64()
            .map(format_minute)
            .unwrap_or_else(|| n.to_string()),
        Value::String(s) => match s.parse::<i64>() {
            Ok(unix) => format_minute(unix),
            Err(_) => s.clone(),
        },
        _ => "-".to_owned(),
    }
}

fn yes_no(flag: bool) -> String {
    if flag { "yes" } else { "no" }.to_owned()
}

fn dash_if_empty(text: &str) -> String {
    if text.is_empty() {
        "-".to_owned()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::resources::{Invitation, SecretSpec, TeamMember};
    use serde_json::json;

    // 2026-03-07 10:12 UTC and friends.
    const MAR_01: i64 = 1_772_323_200;
    const MAR_07_1012: i64 = 1_772_878_320;

    fn workspace(slug: &str, name: &str, servers: u64, tokens: u64) -> Workspace {
        Workspace {
            slug: slug.into(),
            name: name.into(),
            servers,
            tokens,
            ..Workspace::default()
        }
    }

    #[test]
    fn workspace_list_marks_the_active_row_like_the_seed() {
        let list = [
            workspace("engineering", "Engineering", 4, 8),
            workspace("personal", "Personal", 2, 1),
            workspace("client-acme", "Acme Corp", 1, 3),
        ];
        assert_eq!(
            workspace_table(&list, Some("engineering")),
            [
                "  SLUG         NAME         MCP SERVERS  TOKENS",
                "* engineering  Engineering  4            8",
                "  personal     Personal     2            1",
                "  client-acme  Acme Corp    1            3",
                "",
            ]
            .join("\n")
        );
    }

    #[test]
    fn workspace_list_without_active_has_no_star() {
        let text = workspace_table(&[workspace("a", "A", 0, 0)], None);
        assert!(!text.contains('*'), "{text}");
        assert!(workspace_table(&[], None).starts_with("No workspaces."));
    }

    #[test]
    fn delete_warning_matches_the_seed_and_pluralises() {
        assert_eq!(
            delete_warning(&workspace("client-acme", "Acme", 1, 3)),
            "This will revoke all 3 tokens and remove 1 MCP server."
        );
        assert_eq!(
            delete_warning(&workspace("x", "X", 2, 1)),
            "This will revoke 1 token and remove 2 MCP servers."
        );
        assert_eq!(
            delete_warning(&workspace("x", "X", 0, 2)),
            "This will revoke all 2 tokens."
        );
        assert_eq!(
            delete_warning(&workspace("x", "X", 0, 0)),
            "This will delete workspace x (it has no active tokens and no MCP servers)."
        );
    }

    #[test]
    fn workspace_created_prints_urls_token_and_mcp_json() {
        let created = WorkspaceCreated {
            workspace: workspace("engineering", "Engineering", 0, 1),
            gateway_url: "http://127.0.0.1:8080/ws/engineering".into(),
            sse_url: "http://127.0.0.1:8080/ws/engineering/sse".into(),
            secret: "mwt_abc".into(),
            mcp_json: json!({"mcpServers": {"engineering": {"url": "u", "headers": {"Authorization": "Bearer mwt_abc"}}}}),
        };
        let text = workspace_created(&created, true);
        assert!(text.starts_with(
            "Workspace created.\n\
             Gateway URL: http://127.0.0.1:8080/ws/engineering\n\
             SSE URL: http://127.0.0.1:8080/ws/engineering/sse\n\
             Token: mwt_abc (shown once — save this)\n\
             Active workspace set to: engineering\n"
        ));
        assert!(text.ends_with(
            "\nAdd this to your editor's MCP config:\n\
             {\n  \"mcpServers\": {\n    \"engineering\": {\n      \"url\": \"u\",\n      \
             \"headers\": {\n        \"Authorization\": \"Bearer mwt_abc\"\n      }\n    }\n  }\n}\n"
        ), "{text}");
        assert!(!workspace_created(&created, false).contains("Active workspace"));
    }

    #[test]
    fn token_list_matches_the_seed() {
        let tokens = [
            WorkspaceToken {
                name: "Alice Cursor".into(),
                created_at: MAR_01,
                last_used_at: Some(MAR_07_1012),
                status: "active".into(),
                ..WorkspaceToken::default()
            },
            WorkspaceToken {
                name: "Bob VSCode".into(),
                created_at: MAR_01 + 86_400,
                last_used_at: None,
                status: "revoked".into(),
                ..WorkspaceToken::default()
            },
        ];
        assert_eq!(
            token_table("acme-team", &tokens),
            "TOKEN NAME    CREATED     LAST USED   STATUS\n\
             Alice Cursor  2026-03-01  2026-03-07  active\n\
             Bob VSCode    2026-03-02  never       revoked\n"
        );
        assert!(token_table("acme-team", &[]).contains("workspace token create acme-team"));
        let mut scoped = tokens.clone();
        scoped[1].scope = Some(TokenScope {
            tools: vec!["github__list_*".into()],
            read_only: true,
        });
        assert_eq!(
            token_table("acme-team", &scoped),
            "TOKEN NAME    CREATED     LAST USED   TOOLS                       STATUS\n\
             Alice Cursor  2026-03-01  2026-03-07  all                         active\n\
             Bob VSCode    2026-03-02  never       github__list_* (read-only)  revoked\n"
        );
    }

    #[test]
    fn token_created_and_revoked_messages() {
        let created = TokenCreated {
            token: WorkspaceToken::default(),
            secret: "mwt_xyz".into(),
            mcp_json: json!({"mcpServers": {}}),
        };
        assert!(token_created(&created).starts_with("Token: mwt_xyz (shown once — save this)\n"));
        let revoked = WorkspaceToken {
            name: "Alice".into(),
            ..WorkspaceToken::default()
        };
        assert_eq!(
            token_revoked(&revoked),
            "✓ Token revoked. Alice's gateway access is immediately disabled.\n"
        );
    }

    #[test]
    fn audit_table_matches_the_seed() {
        let events = [
            AuditEvent {
                time: MAR_07_1012,
                actor: "alice@acme".into(),
                action: "install".into(),
                target: "@acme/crm-skill".into(),
                outcome: "ok".into(),
            },
            AuditEvent {
                time: MAR_07_1012 + 120,
                actor: "alice@acme".into(),
                action: "tool_call".into(),
                target: "github__create_issue".into(),
                outcome: "denied".into(),
            },
        ];
        assert_eq!(
            audit_table("acme-team", &events),
            "DATE                  USER        SKILL                 ACTION\n\
             2026-03-07 10:12 UTC  alice@acme  @acme/crm-skill       install\n\
             2026-03-07 10:14 UTC  alice@acme  github__create_issue  tool_call (denied)\n"
        );
    }

    #[test]
    fn install_prints_one_hint_per_missing_secret() {
        let installed = ServerInstalled {
            server: McpServer {
                slug: "github-mcp".into(),
                ..McpServer::default()
            },
            missing_secrets: vec!["GITHUB_TOKEN".into()],
            probe: None,
        };
        assert_eq!(
            server_installed(&installed, "engineering"),
            "Installed github-mcp in engineering.\n\
             Set its secrets: gatehouse secrets set github-mcp GITHUB_TOKEN VALUE --workspace engineering\n"
        );
    }

    #[test]
    fn server_table_spells_transport_like_the_flag() {
        let servers = [McpServer {
            slug: "github-mcp".into(),
            url: "http://u/mcp".into(),
            transport: "streamable_http".into(),
            enabled: true,
            secrets: vec!["A".into(), "B".into()],
            created_at: 0,
            package: None,
            policy: Default::default(),
            naming: "prefixed".into(),
            ..McpServer::default()
        }];
        assert_eq!(
            server_table("eng", &servers),
            "SLUG        URL           TRANSPORT        ENABLED  SECRETS\n\
             github-mcp  http://u/mcp  streamable-http  yes      A,B\n"
        );
    }

    #[test]
    fn hosted_servers_show_their_command_line() {
        let servers = [McpServer {
            slug: "fs".into(),
            transport: "stdio".into(),
            enabled: true,
            command: Some("npx".into()),
            args: vec!["-y".into(), "my server".into(), "it's".into()],
            ..McpServer::default()
        }];
        assert_eq!(
            server_table("eng", &servers),
            "SLUG  URL                           TRANSPORT  ENABLED  SECRETS\n\
             fs    npx -y 'my server' 'it'\\''s'  stdio      yes      -\n"
        );
    }

    #[test]
    fn skills_show_their_package_instead_of_a_url() {
        let servers = [
            McpServer {
                slug: "crm".into(),
                transport: "skill".into(),
                enabled: true,
                package: Some("@acme/crm@1.1.0".into()),
                ..McpServer::default()
            },
            McpServer {
                slug: "odd".into(),
                transport: "skill".into(),
                ..McpServer::default()
            },
        ];
        assert_eq!(
            server_table("eng", &servers),
            "SLUG  URL              TRANSPORT  ENABLED  SECRETS\n\
             crm   @acme/crm@1.1.0  skill      yes      -\n\
             odd   -                skill      no       -\n"
        );
    }

    #[test]
    fn secret_messages_never_carry_a_value() {
        assert_eq!(
            secret_set("github-mcp", "GITHUB_TOKEN", "engineering"),
            "Secret GITHUB_TOKEN set for github-mcp in engineering.\n"
        );
        let list = [SecretEntry {
            server: "github-mcp".into(),
            name: "GITHUB_TOKEN".into(),
            updated_at: MAR_07_1012,
        }];
        assert_eq!(
            secret_table("eng", &list),
            "SERVER      NAME          UPDATED\n\
             github-mcp  GITHUB_TOKEN  2026-03-07\n"
        );
    }

    #[test]
    fn proxy_table_shows_lag_and_recency() {
        let proxies = [Proxy {
            id: json!("p1"),
            name: "proxy-1".into(),
            version: json!(41),
            config_version: json!(42),
            lag: json!(1),
            connected: true,
            last_seen: Some(MAR_07_1012 - 3),
        }];
        assert_eq!(
            proxy_table(&proxies, MAR_07_1012),
            "PROXY    VERSION  CONFIG  LAG  CONNECTED  LAST SEEN\n\
             proxy-1  41       42      1    yes        3s ago\n"
        );
    }

    #[test]
    fn counts_pluralise() {
        assert_eq!(count(1, "MCP server", "MCP servers"), "1 MCP server");
        assert_eq!(count(0, "MCP server", "MCP servers"), "0 MCP servers");
    }

    fn package(
        id: &str,
        version: &str,
        kind: &str,
        visibility: &str,
        description: &str,
    ) -> Package {
        Package {
            package: id.into(),
            version: version.into(),
            kind: kind.into(),
            visibility: visibility.into(),
            description: Some(description.into()),
            ..Package::default()
        }
    }

    #[test]
    fn publish_names_the_version_and_visibility() {
        let published = package("@acme/internal-crm-skill", "1.2.0", "skill", "team", "");
        assert_eq!(
            package_published(&published),
            "✓ Published @acme/internal-crm-skill@1.2.0 (team)\n"
        );
        let built = Package {
            owner: "me".into(),
            name: "tool".into(),
            version: "0.1.0".into(),
            ..Package::default()
        };
        assert_eq!(
            package_published(&built),
            "✓ Published @me/tool@0.1.0 (public)\n"
        );
    }

    #[test]
    fn package_list_and_search_tables() {
        let packages = [
            package(
                "@acme/crm",
                "1.2.0",
                "skill",
                "team",
                "Look up customers\nin the CRM",
            ),
            package("@gatehouse/github", "1.0.0", "mcp-server", "public", ""),
        ];
        assert_eq!(
            package_table(&packages),
            "PACKAGE            VERSION  TYPE        VISIBILITY  DESCRIPTION\n\
             @acme/crm          1.2.0    skill       team        Look up customers in the CRM\n\
             @gatehouse/github  1.0.0    mcp-server  public      -\n"
        );
        assert_eq!(
            search_table("github", &packages[1..]),
            "PACKAGE            VERSION  TYPE        DESCRIPTION\n\
             @gatehouse/github  1.0.0    mcp-server  -\n"
        );
        assert_eq!(
            search_table("nothing", &[]),
            "No public packages match \"nothing\".\n"
        );
        assert!(package_table(&[]).starts_with("No packages."));
    }

    #[test]
    fn long_descriptions_are_cut() {
        let long = "word ".repeat(30);
        let cell = description_cell(Some(&long));
        assert_eq!(cell.chars().count(), 60, "{cell}");
        assert!(cell.ends_with('…'));
        assert_eq!(description_cell(None), "-");
    }

    #[test]
    fn versions_table_shows_when() {
        let versions = [
            PackageVersion {
                version: "1.1.0".into(),
                published_at: json!(MAR_07_1012),
            },
            PackageVersion {
                version: "1.0.0".into(),
                published_at: json!(MAR_01),
            },
        ];
        assert_eq!(
            version_table("@acme/crm", &versions),
            "VERSION  PUBLISHED\n\
             1.1.0    2026-03-07 10:12 UTC\n\
             1.0.0    2026-03-01 00:00 UTC\n"
        );
        assert_eq!(
            version_table("@acme/crm", &[]),
            "No published versions of @acme/crm.\n"
        );
    }

    fn installed(verified: bool, missing: Vec<SecretSpec>) -> PackageInstalled {
        PackageInstalled {
            server: McpServer {
                slug: "internal-crm-skill".into(),
                ..McpServer::default()
            },
            package: "@acme/internal-crm-skill".into(),
            version: "1.2.0".into(),
            missing_secrets: missing,
            membership_verified: verified,
        }
    }

    #[test]
    fn team_install_prints_the_seed_line() {
        assert_eq!(
            package_installed(
                &installed(true, vec![]),
                "@acme/internal-crm-skill",
                "acme-team"
            ),
            "✓ Installed (team membership verified)\n"
        );
    }

    #[test]
    fn install_says_what_went_where_and_which_secrets_to_set() {
        let missing = vec![
            SecretSpec {
                name: "CRM_TOKEN".into(),
                description: "API token for the CRM".into(),
            },
            SecretSpec {
                name: "OTHER".into(),
                description: String::new(),
            },
        ];
        assert_eq!(
            package_installed(&installed(false, missing.clone()), "@acme/x", "acme-team"),
            "✓ Installed @acme/internal-crm-skill@1.2.0 as internal-crm-skill in acme-team\n\
             Set its secrets: gatehouse secrets set internal-crm-skill CRM_TOKEN VALUE --workspace acme-team  # API token for the CRM\n\
             Set its secrets: gatehouse secrets set internal-crm-skill OTHER VALUE --workspace acme-team\n"
        );
        // Team installs list the secrets too.
        let text = package_installed(&installed(true, missing), "@acme/x", "acme-team");
        assert!(text.starts_with("✓ Installed (team membership verified)\nSet its secrets: "));
    }

    #[test]
    fn null_fields_read_as_empty() {
        let answer = json!({"packages": [{
            "package": "@acme/crm", "owner": "acme", "name": "crm", "type": "skill",
            "version": null, "visibility": "team", "description": null, "category": null,
            "tags": [], "secrets": [], "updated_at": 1
        }]});
        let list: crate::cli::resources::PackageList = serde_json::from_value(answer).unwrap();
        assert_eq!(
            package_table(&list.packages),
            "PACKAGE    VERSION  TYPE   VISIBILITY  DESCRIPTION\n\
             @acme/crm  -        skill  team        -\n"
        );
        let member: TeamMember = serde_json::from_value(json!({
            "email": "bob@acme.com", "username": null, "status": "pending",
            "invited_at": MAR_07_1012, "joined_at": null, "expires_at": MAR_07_1012
        }))
        .unwrap();
        assert_eq!(member.username, None);
        assert!(member.joined_at.is_null());
    }

    #[test]
    fn missing_secrets_may_be_bare_names() {
        let answer = json!({
            "server": {"slug": "github"},
            "package": "@gatehouse/github",
            "version": "1.0.0",
            "missing_secrets": ["GITHUB_TOKEN", {"name": "X", "description": null}],
            "membership_verified": false
        });
        let parsed: PackageInstalled = serde_json::from_value(answer).unwrap();
        assert_eq!(parsed.missing_secrets[0].name, "GITHUB_TOKEN");
        assert_eq!(parsed.missing_secrets[1].name, "X");
        assert_eq!(parsed.missing_secrets[1].description, "");
    }

    #[test]
    fn unpublish_texts() {
        assert_eq!(
            package_unpublished("@acme/crm", Some("1.0.0"), Some(1)),
            "✓ Unpublished @acme/crm@1.0.0\n"
        );
        assert_eq!(
            package_unpublished("@acme/crm", None, Some(3)),
            "✓ Unpublished @acme/crm (3 versions)\n"
        );
        assert_eq!(
            package_unpublished("@acme/crm", None, None),
            "✓ Unpublished @acme/crm (all versions)\n"
        );
        assert!(unpublish_warning("@acme/crm", None).contains("every version of @acme/crm"));
    }

    #[test]
    fn invitation_prints_the_join_command_unless_emailed() {
        let mut created = InvitationCreated {
            invitation: Invitation {
                email: "alice@acme.com".into(),
                ..Invitation::default()
            },
            code: "ghj_abc".into(),
            join_command: "gatehouse team accept ghj_abc".into(),
            emailed: false,
        };
        assert_eq!(
            invitation_created(&created, "alice@acme.com"),
            "→ Invitation created for alice@acme.com.\n\
             Send them this join command: gatehouse team accept ghj_abc\n"
        );
        created.join_command.clear();
        created.invitation.expires_at = json!(MAR_07_1012);
        assert_eq!(
            invitation_created(&created, "alice@acme.com"),
            "→ Invitation created for alice@acme.com.\n\
             Send them this join command: gatehouse team accept ghj_abc\n\
             The code expires 2026-03-07 10:12 UTC.\n"
        );
        created.emailed = true;
        created.invitation.expires_at = Value::Null;
        assert_eq!(
            invitation_created(&created, "alice@acme.com"),
            "→ Invitation created for alice@acme.com.\n\
             An email with the join code was sent.\n"
        );
    }

    #[test]
    fn team_list_matches_the_seed() {
        let team = Team {
            owner: "acme".into(),
            members: vec![
                TeamMember {
                    email: "alice@acme.com".into(),
                    username: Some("alice".into()),
                    status: "active".into(),
                    invited_at: json!(MAR_01 - 86_400),
                    joined_at: json!(MAR_01),
                },
                TeamMember {
                    email: "bob@acme.com".into(),
                    username: None,
                    status: "pending".into(),
                    invited_at: json!(MAR_07_1012),
                    joined_at: Value::Null,
                },
            ],
        };
        assert_eq!(
            team_members(&team, "ignored"),
            "Members of @acme:\n\
             alice@acme.com     active    joined 2026-03-01\n\
             bob@acme.com       pending   invited 2026-03-07\n"
        );
        let empty = Team::default();
        assert!(team_members(&empty, "acme").starts_with("Members of @acme:\n  (none yet)"));
    }

    #[test]
    fn team_list_widens_for_long_addresses() {
        let team = Team {
            owner: "acme".into(),
            members: vec![
                TeamMember {
                    email: "someone.with.a.long.name@acme.com".into(),
                    status: "active".into(),
                    joined_at: json!(MAR_01),
                    ..TeamMember::default()
                },
                TeamMember {
                    email: "bo@acme.com".into(),
                    status: "pending".into(),
                    invited_at: json!("2026-03-07T10:12:00Z"),
                    ..TeamMember::default()
                },
            ],
        };
        assert_eq!(
            team_members(&team, "acme"),
            "Members of @acme:\n\
             someone.with.a.long.name@acme.com  active    joined 2026-03-01\n\
             bo@acme.com                        pending   invited 2026-03-07\n"
        );
    }

    #[test]
    fn accept_and_remove_texts() {
        assert_eq!(team_joined("acme"), "✓ Joined @acme\n");
        let removed = MemberRemoved {
            removed: "alice@acme.com".into(),
            uninstalled: 2,
            owner: None,
        };
        assert_eq!(
            member_removed(&removed, "alice", "acme"),
            "✓ Removed alice@acme.com from @acme (2 team installs removed from their workspaces)\n"
        );
        let one = MemberRemoved {
            removed: String::new(),
            uninstalled: 1,
            owner: Some("acme".into()),
        };
        assert_eq!(
            member_removed(&one, "alice", "me"),
            "✓ Removed alice from @acme (1 team install removed from their workspaces)\n"
        );
    }

    #[test]
    fn times_render_from_seconds_or_strings() {
        assert_eq!(date_cell(&json!(MAR_01)), "2026-03-01");
        assert_eq!(date_cell(&json!("2026-03-01T08:00:00Z")), "2026-03-01");
        assert_eq!(date_cell(&Value::Null), "-");
        assert_eq!(minute_cell(&json!(MAR_07_1012)), "2026-03-07 10:12 UTC");
    }
}
