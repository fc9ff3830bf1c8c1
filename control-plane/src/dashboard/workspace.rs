//! One workspace's page: its URLs, MCP servers (install from a URL, or a Hub package
//! or skill through `hub`; enable or disable, change the tool policy, remove),
//! secrets (names and when they changed; set or replace a value, never shown back),
//! and tokens (create, shown once; list; revoke).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use gatehouse_config::{TokenScope, ToolPolicy};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::hub;
use super::session::{csrf_field, live_page, page, CsrfOnly, Session};
use super::shell::{copyable, PageError, PageResult, PATH};
use super::workspaces::shown_once;
use crate::api::error::ApiError;
use crate::api::request::Body;
use crate::api::servers::{self, Install, SecretValue, ServerChange};
use crate::api::workspaces::{self, NewTokenRequest, Revoke};
use crate::dates::{format_ago, format_minute};
use crate::state::App;
use crate::store::now;

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

/// Where a server is: its URL, or the command line Gatehouse runs for a stdio one.
fn source_of(server: &Value) -> String {
    match server["command"].as_str() {
        Some(command) => {
            let args: Vec<String> = server["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect();
            crate::runner::spec::command_line(command, &args)
        }
        None => text(server, "url").to_owned(),
    }
}

fn when(v: &Value, key: &str) -> String {
    v[key]
        .as_i64()
        .map_or_else(|| "never".to_owned(), |t| format_ago(t, now()))
}

fn base(ws: &str) -> String {
    format!("{PATH}/workspaces/{ws}")
}

pub async fn show(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
) -> PageResult<Markup> {
    let user = session.user.clone();
    let Json(workspace) =
        workspaces::show(State(app.clone()), user.clone(), Path(ws.clone())).await?;
    let Json(servers) = servers::list(State(app.clone()), user.clone(), Path(ws.clone())).await?;
    let Json(secrets) =
        servers::secrets(State(app.clone()), user.clone(), Path(ws.clone())).await?;
    let Json(tokens) = workspaces::tokens(State(app.clone()), user, Path(ws.clone())).await?;
    let packages = hub::installable(&app, &session).await?;
    let slug = text(&workspace, "slug").to_owned();
    let (gateway_url, sse_url) = app.gateway_urls(&slug);
    let servers = servers["servers"].as_array().cloned().unwrap_or_default();
    let secrets = secrets["secrets"].as_array().cloned().unwrap_or_default();
    let tokens = tokens["tokens"].as_array().cloned().unwrap_or_default();
    let here = base(&slug);
    let body = html! {
        h1 { (text(&workspace, "name")) " " small { "(" (slug) ")" } }
        nav.sub aria-label="Workspace" {
            a href=(here) aria-current="page" { "Overview" }
            a href={ (here) "/tools" } { "Tools" }
            a href={ (here) "/audit" } { "Workspace Audit" }
            a href={ (here) "/analytics" } { "Analytics" }
            a href={ (here) "/delete" } { "Delete…" }
        }
        (copyable("gateway-url", "Gateway URL (Streamable HTTP)", &gateway_url))
        (copyable("sse-url", "SSE URL (legacy clients)", &sse_url))
        (servers_section(&session, &here, &servers))
        (hub::workspace_install_form(&session, &here, &packages))
        (secrets_section(&session, &here, &servers, &secrets))
        (tokens_section(&session, &here, &tokens))
    };
    Ok(live_page(&session, &slug, body))
}

fn servers_section(session: &Session, here: &str, servers: &[Value]) -> Markup {
    html! {
        section aria-labelledby="servers" {
            h2 #servers { "MCP servers" }
            @if servers.is_empty() {
                p { "No MCP servers installed yet." }
            } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Server" } th scope="col" { "URL" } th scope="col" { "Transport" } th scope="col" { "Status" } th scope="col" { "Tool policy" } th scope="col" { "Secrets" } th scope="col" { span.sr { "Actions" } } } }
                    tbody { @for s in servers {
                        tr {
                            td { code { (text(s, "slug")) } }
                            td.url { (source_of(s)) }
                            td { (text(s, "transport")) }
                            td { @if s["enabled"] == true { "enabled" } @else { "disabled" } }
                            td.policy {
                                (policy_text(&s["policy"]))
                                (policy_form(session, here, s))
                            }
                            td { @for name in s["secrets"].as_array().into_iter().flatten() { code { (name.as_str().unwrap_or_default()) } " " } }
                            td.actions {
                                @let enabled = s["enabled"] == true;
                                form.inline method="post" action={ (here) "/servers/" (text(s, "slug")) "/enabled" } {
                                    (csrf_field(session))
                                    input type="hidden" name="enabled" value=(!enabled);
                                    button type="submit" aria-label={ @if enabled { "Disable " } @else { "Enable " } (text(s, "slug")) } {
                                        @if enabled { "Disable" } @else { "Enable" }
                                    }
                                }
                                " "
                                form.inline method="post" action={ (here) "/servers/" (text(s, "slug")) "/remove" } {
                                    (csrf_field(session))
                                    button.danger type="submit" aria-label={ "Remove " (text(s, "slug")) } { "Remove" }
                                }
                            }
                        }
                    } }
                } }
            }
            h3 { "Install from a URL" }
            form method="post" action={ (here) "/servers" } {
                (csrf_field(session))
                label for="srv-url" { "Server URL (Streamable HTTP or SSE)" }
                input #srv-url name="url" type="url" required placeholder="https://mcp.example.com/mcp";
                label for="srv-slug" { "Name (optional; tools are named <name>__<tool>)" }
                input #srv-slug name="slug" pattern="[a-z0-9][a-z0-9-]{0,31}" placeholder="github";
                label for="srv-transport" { "Transport" }
                select #srv-transport name="transport" {
                    option value="streamable_http" selected { "Streamable HTTP" }
                    option value="sse" { "SSE (legacy)" }
                }
                label for="srv-header" { "Header (optional), e.g. Authorization: Bearer {{secrets.GITHUB_TOKEN}}" }
                input #srv-header name="header" placeholder="Authorization: Bearer {{secrets.GITHUB_TOKEN}}";
                fieldset {
                    legend { "Tool policy" }
                    label for="srv-allow" { "Only expose tools matching (globs, space-separated)" }
                    input #srv-allow name="allow" placeholder="search_* get_*";
                    label for="srv-deny" { "Never expose tools matching (globs, space-separated)" }
                    input #srv-deny name="deny" placeholder="delete_*";
                    label.check for="srv-read-only" {
                        input #srv-read-only name="read_only" type="checkbox" value="on";
                        " Read-only: only tools annotated readOnlyHint"
                    }
                }
                button type="submit" { "Install" }
            }
        }
    }
}

fn secrets_section(session: &Session, here: &str, servers: &[Value], secrets: &[Value]) -> Markup {
    html! {
        section aria-labelledby="secrets" {
            h2 #secrets { "Secrets" }
            p.hint { "Values are encrypted at rest and never shown again, here or anywhere." }
            @if secrets.is_empty() {
                p { "No secrets set." }
            } @else {
                div.scroll { table {
                    thead { tr { th scope="col" { "Server" } th scope="col" { "Name" } th scope="col" { "Updated" } } }
                    tbody { @for s in secrets {
                        tr { td { code { (text(s, "server")) } } td { code { (text(s, "name")) } } td { (when(s, "updated_at")) } }
                    } }
                } }
            }
            @if !servers.is_empty() {
                h3 { "Set or replace a secret" }
                form method="post" action={ (here) "/secrets" } autocomplete="off" {
                    (csrf_field(session))
                    label for="sec-server" { "Server" }
                    select #sec-server name="server" {
                        @for s in servers { option value=(text(s, "slug")) { (text(s, "slug")) } }
                    }
                    label for="sec-name" { "Name" }
                    input #sec-name name="name" required pattern="[A-Za-z0-9_]+" placeholder="GITHUB_TOKEN";
                    label for="sec-value" { "Value" }
                    input #sec-value name="value" type="password" required autocomplete="new-password";
                    button type="submit" { "Save secret" }
                }
            }
        }
    }
}

fn tokens_section(session: &Session, here: &str, tokens: &[Value]) -> Markup {
    html! {
        section aria-labelledby="tokens" {
            h2 #tokens { "Tokens" }
            div.scroll { table {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Created" } th scope="col" { "Last used" } th scope="col" { "Expires" } th scope="col" { "Tools" } th scope="col" { "Status" } th scope="col" { span.sr { "Actions" } } } }
                tbody { @for t in tokens {
                    tr {
                        td { (text(t, "name")) }
                        td { (t["created_at"].as_i64().map(format_minute).unwrap_or_default()) }
                        td { (when(t, "last_used_at")) }
                        td { (t["expires_at"].as_i64().map_or_else(|| "never".to_owned(), format_minute)) }
                        td { (scope_text(&t["scope"])) }
                        td { span class={ "status " (text(t, "status")) } { (text(t, "status")) } }
                        td {
                            @if text(t, "status") == "active" {
                                form.inline method="post" action={ (here) "/tokens/revoke" } {
                                    (csrf_field(session))
                                    input type="hidden" name="id" value=(text(t, "id"));
                                    button.danger type="submit" aria-label={ "Revoke " (text(t, "name")) } { "Revoke" }
                                }
                            }
                        }
                    }
                } }
            } }
            h3 { "Create a token" }
            form method="post" action={ (here) "/tokens" } {
                (csrf_field(session))
                label for="tok-name" { "Name" }
                input #tok-name name="name" required maxlength="100" placeholder="Alice Cursor";
                label for="tok-expires" { "Expires in (seconds, optional)" }
                input #tok-expires name="expires_in" type="number" min="1" placeholder="86400";
                label for="tok-tools" { "Only the tools matching (globs over exposed names, comma-separated, optional)" }
                input #tok-tools name="tools" placeholder="github__list_*, jira__get_*";
                label.check for="tok-read-only" {
                    input #tok-read-only name="read_only" type="checkbox" value="on";
                    " Only read-only tools"
                }
                button type="submit" { "Create token" }
            }
        }
    }
}

/// A token's scope in a few words: "all", or its globs and "read-only".
fn scope_text(scope: &Value) -> String {
    let mut parts: Vec<String> = scope["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if scope["read_only"].as_bool() == Some(true) {
        parts.push("read-only".into());
    }
    if parts.is_empty() {
        "all".into()
    } else {
        parts.join(", ")
    }
}

/// A server's tool policy in a few words: "all tools", or its parts.
fn policy_text(policy: &Value) -> String {
    let globs = |key: &str| -> Vec<&str> {
        policy[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect()
    };
    let mut parts = Vec::new();
    if policy["read_only"] == true {
        parts.push("read-only".to_owned());
    }
    let (allow, deny) = (globs("allow"), globs("deny"));
    if !allow.is_empty() {
        parts.push(format!("only {}", allow.join(" ")));
    }
    if !deny.is_empty() {
        parts.push(format!("never {}", deny.join(" ")));
    }
    if parts.is_empty() {
        "all tools".to_owned()
    } else {
        parts.join("; ")
    }
}

/// The policy editor of one server, folded away until opened, filled with the
/// current policy.
fn policy_form(session: &Session, here: &str, server: &Value) -> Markup {
    let slug = text(server, "slug");
    let joined = |key: &str| -> String {
        server["policy"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        details.policy {
            summary aria-label={ "Change the tool policy of " (slug) } { "Change" }
            form method="post" action={ (here) "/servers/" (slug) "/policy" } {
                (csrf_field(session))
                label for={ "allow-" (slug) } { "Only tools matching" }
                input id={ "allow-" (slug) } name="allow" value=(joined("allow"));
                label for={ "deny-" (slug) } { "Never tools matching" }
                input id={ "deny-" (slug) } name="deny" value=(joined("deny"));
                label.check for={ "ro-" (slug) } {
                    input id={ "ro-" (slug) } name="read_only" type="checkbox" value="on" checked[server["policy"]["read_only"] == true];
                    " Read-only"
                }
                button type="submit" { "Save policy" }
            }
        }
    }
}

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    allow: String,
    #[serde(default)]
    deny: String,
    #[serde(default)]
    read_only: String,
}

pub async fn set_policy(
    State(app): State<Arc<App>>,
    session: Session,
    Path((ws, server)): Path<(String, String)>,
    Form(form): Form<PolicyForm>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let _done = servers::update(
        State(app),
        session.user.clone(),
        Path((ws.clone(), server)),
        Body(ServerChange {
            enabled: None,
            policy: Some(ToolPolicy {
                allow: globs(&form.allow),
                deny: globs(&form.deny),
                read_only: !form.read_only.is_empty(),
            }),
            naming: None,
            limits: None,
            command: None,
            args: None,
            env: None,
        }),
    )
    .await?;
    Ok(back_to(&ws))
}

/// Globs typed in one field, split on spaces and commas.
fn globs(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == ',')
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
pub struct InstallForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    transport: String,
    #[serde(default)]
    header: String,
    #[serde(default)]
    allow: String,
    #[serde(default)]
    deny: String,
    /// "on" when the box is ticked; absent otherwise.
    #[serde(default)]
    read_only: String,
}

fn back_to(ws: &str) -> Response {
    Redirect::to(&base(ws)).into_response()
}

pub async fn install(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Form(form): Form<InstallForm>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let mut headers = BTreeMap::new();
    let header = form.header.trim();
    if !header.is_empty() {
        let (name, value) = header.split_once(':').ok_or_else(|| {
            PageError::Api(ApiError::BadRequest(format!(
                "header {header:?} must look like `Name: value`"
            )))
        })?;
        headers.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    let nonempty = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let _done = servers::install(
        State(app),
        session.user.clone(),
        Path(ws.clone()),
        Body(Install {
            url: Some(form.url.trim().to_owned()),
            command: None,
            args: Vec::new(),
            env: Default::default(),
            slug: nonempty(form.slug),
            transport: nonempty(form.transport),
            headers,
            policy: ToolPolicy {
                allow: globs(&form.allow),
                deny: globs(&form.deny),
                read_only: !form.read_only.is_empty(),
            },
            enabled: true,
            naming: None,
            limits: None,
        }),
    )
    .await?;
    Ok(back_to(&ws))
}

pub async fn remove_server(
    State(app): State<Arc<App>>,
    session: Session,
    Path((ws, server)): Path<(String, String)>,
    Form(form): Form<CsrfOnly>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let _done =
        servers::remove(State(app), session.user.clone(), Path((ws.clone(), server))).await?;
    Ok(back_to(&ws))
}

#[derive(Deserialize)]
pub struct EnabledForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    enabled: String,
}

pub async fn set_enabled(
    State(app): State<Arc<App>>,
    session: Session,
    Path((ws, server)): Path<(String, String)>,
    Form(form): Form<EnabledForm>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let enabled = match form.enabled.as_str() {
        "true" => true,
        "false" => false,
        other => {
            return Err(PageError::Api(ApiError::BadRequest(format!(
                "enabled must be true or false, not {other:?}"
            ))))
        }
    };
    let _done = servers::update(
        State(app),
        session.user.clone(),
        Path((ws.clone(), server)),
        Body(ServerChange {
            enabled: Some(enabled),
            policy: None,
            naming: None,
            limits: None,
            command: None,
            args: None,
            env: None,
        }),
    )
    .await?;
    Ok(back_to(&ws))
}

#[derive(Deserialize)]
pub struct SecretForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    server: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
}

pub async fn set_secret(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Form(form): Form<SecretForm>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let _done = servers::set_secret(
        State(app),
        session.user.clone(),
        Path((ws.clone(), form.server, form.name.trim().to_owned())),
        Body(SecretValue { value: form.value }),
    )
    .await?;
    Ok(back_to(&ws))
}

#[derive(Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    expires_in: String,
    /// Comma-separated globs over exposed tool names.
    #[serde(default)]
    tools: String,
    /// "on" when checked.
    #[serde(default)]
    read_only: Option<String>,
}

pub async fn create_token(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Form(form): Form<TokenForm>,
) -> PageResult<Markup> {
    session.check_csrf(&form.csrf)?;
    let expires = form.expires_in.trim();
    let expires_in = if expires.is_empty() {
        None
    } else {
        Some(expires.parse::<i64>().map_err(|_| {
            PageError::Api(ApiError::BadRequest(format!(
                "expires in {expires:?} must be a whole number of seconds"
            )))
        })?)
    };
    let (_, Json(created)) = workspaces::create_token(
        State(app),
        session.user.clone(),
        Path(ws.clone()),
        Body(NewTokenRequest {
            name: form.name,
            expires_in,
            scope: Some(TokenScope {
                tools: form
                    .tools
                    .split(',')
                    .map(str::trim)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .collect(),
                read_only: form.read_only.is_some(),
            }),
        }),
    )
    .await?;
    let body = html! {
        h1 { "Token created." }
        p { "Token " strong { (text(&created["token"], "name")) } " for " code { (ws) } "." }
        (shown_once(&created))
        p { a.button href=(base(&ws)) { "Back to " (ws) } }
    };
    Ok(page(&session, "Token created", body))
}

#[derive(Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

pub async fn revoke_token(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Form(form): Form<RevokeForm>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let _done = workspaces::revoke_token(
        State(app),
        session.user.clone(),
        Path(ws.clone()),
        Body(Revoke {
            name: None,
            id: Some(form.id),
        }),
    )
    .await?;
    Ok(back_to(&ws))
}
