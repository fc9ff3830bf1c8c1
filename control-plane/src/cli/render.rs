//! Text output: the tables and messages of the seeds, as pure functions of the API's
//! answers so their exact shape is unit-tested. Every function returns the whole
//! stdout text, ending in a newline.

use std::collections::BTreeMap;

use comfy_table::{presets, ContentArrangement, Table};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::dates::{format_ago, format_date, format_minute};
use super::resources::{
    scalar_text, AuditEvent, McpServer, Proxy, SecretEntry, ServerInstalled, TokenCreated,
    Workspace, WorkspaceCreated, WorkspaceToken,
};

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
    let mut effects = Vec::new();
    match workspace.tokens {
        0 => {}
        1 => effects.push("revoke 1 token".to_owned()),
        n => effects.push(format!("revoke all {n} tokens")),
    }
    if workspace.servers > 0 {
        effects.push(format!(
            "remove {}",
            count(workspace.servers, "MCP server", "MCP servers")
        ));
    }
    if effects.is_empty() {
        format!(
            "This will delete workspace {} (it has no active tokens and no MCP servers).",
            workspace.slug
        )
    } else {
        format!("This will {}.", effects.join(" and "))
    }
}

pub fn token_created(created: &TokenCreated) -> String {
    let mut out = token_line(&created.secret);
    if let Some(expires) = created.token.expires_at {
        out += &format!("Expires: {}\n", format_minute(expires));
    }
    out += &mcp_json_block(&created.mcp_json);
    out
}

/// `TOKEN NAME  CREATED  LAST USED  STATUS`.
pub fn token_table(workspace: &str, tokens: &[WorkspaceToken]) -> String {
    if tokens.is_empty() {
        return format!(
            "No tokens in {workspace}. Create one: gatehouse workspace token create {workspace} --name NAME\n"
        );
    }
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                format_date(t.created_at),
                t.last_used_at
                    .map(format_date)
                    .unwrap_or_else(|| "never".to_owned()),
                t.status.clone(),
            ]
        })
        .collect();
    table(&["TOKEN NAME", "CREATED", "LAST USED", "STATUS"], rows)
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
            vec![
                s.slug.clone(),
                s.url.clone(),
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
        }];
        assert_eq!(
            server_table("eng", &servers),
            "SLUG        URL           TRANSPORT        ENABLED  SECRETS\n\
             github-mcp  http://u/mcp  streamable-http  yes      A,B\n"
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
}
