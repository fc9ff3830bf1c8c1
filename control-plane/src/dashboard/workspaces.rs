//! Workspaces: the list (SLUG NAME MCP SERVERS TOKENS, as `gatehouse workspace
//! list`), New Workspace (its URLs and first token, shown once), and delete behind
//! the seeds' confirmation text.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Form, Json};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::session::{csrf_field, live_page, page, CsrfOnly, Session};
use super::shell::{copyable, copyable_block, PageError, PageResult, PATH};
use crate::api::request::Body;
use crate::api::workspaces::{self, NewWorkspace};
use crate::state::App;
use crate::wording::delete_warning;

/// A workspace as the API lists it (`GET /v1/workspaces`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct Workspace {
    slug: String,
    name: String,
    owner: String,
    /// MCP servers installed.
    servers: u64,
    /// Active tokens.
    tokens: u64,
}

pub async fn home(session: Result<Session, PageError>) -> Redirect {
    match session {
        Ok(_) => Redirect::to(&format!("{PATH}/workspaces")),
        Err(_) => Redirect::to(&format!("{PATH}/login")),
    }
}

fn new_workspace_form(session: &Session) -> Markup {
    html! {
        section aria-labelledby="new-ws" {
            h2 #new-ws { "New Workspace" }
            form method="post" action={ (PATH) "/workspaces" } {
                (csrf_field(session))
                label for="ws-name" { "Name" }
                input #ws-name name="name" required maxlength="100" placeholder="Engineering";
                label for="ws-slug" { "Slug (optional, derived from the name)" }
                input #ws-slug name="slug" pattern="[a-z0-9][a-z0-9-]{0,31}" placeholder="engineering";
                button type="submit" { "Create workspace" }
            }
        }
    }
}

pub async fn list(State(app): State<Arc<App>>, session: Session) -> PageResult<Markup> {
    let Json(answer) = workspaces::list(State(app), session.user.clone()).await?;
    let rows: Vec<Workspace> =
        serde_json::from_value(answer["workspaces"].clone()).unwrap_or_default();
    let body = html! {
        h1 { "Workspaces" }
        @if rows.is_empty() {
            p { "No workspaces yet: create the first one below." }
        } @else {
            div.scroll {
                table {
                    thead { tr { th scope="col" { "Slug" } th scope="col" { "Name" } th scope="col" { "MCP servers" } th scope="col" { "Tokens" } th scope="col" { "Owner" } } }
                    tbody {
                        @for w in &rows {
                            tr {
                                td { a href={ (PATH) "/workspaces/" (w.slug) } { (w.slug) } }
                                td { (w.name) }
                                td.num { (w.servers) }
                                td.num { (w.tokens) }
                                td { (w.owner) }
                            }
                        }
                    }
                }
            }
        }
        (new_workspace_form(&session))
    };
    Ok(live_page(&session, "Workspaces", body))
}

#[derive(Deserialize)]
pub struct NewWorkspaceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
}

/// Creates the workspace and shows its URLs and first token, once: the answer to
/// the POST itself (never cached), not a page that can be opened again.
pub async fn create(
    State(app): State<Arc<App>>,
    session: Session,
    Form(form): Form<NewWorkspaceForm>,
) -> PageResult<Markup> {
    session.check_csrf(&form.csrf)?;
    let slug = Some(form.slug.trim().to_owned()).filter(|s| !s.is_empty());
    let (_, Json(created)) = workspaces::create(
        State(app),
        session.user.clone(),
        Body(NewWorkspace {
            name: form.name,
            slug,
        }),
    )
    .await?;
    let slug = created["workspace"]["slug"].as_str().unwrap_or_default();
    let body = html! {
        h1 { "Workspace created." }
        p { "Workspace " strong { (created["workspace"]["name"].as_str().unwrap_or_default()) } " (" code { (slug) } ") is ready." }
        (copyable("gateway-url", "Gateway URL (Streamable HTTP)", created["gateway_url"].as_str().unwrap_or_default()))
        (copyable("sse-url", "SSE URL (legacy clients)", created["sse_url"].as_str().unwrap_or_default()))
        (shown_once(&created))
        p { a.button href={ (PATH) "/workspaces/" (slug) } { "Open " (slug) } }
    };
    Ok(page(&session, "Workspace created", body))
}

/// A token's secret and the editor config that uses it, with the warning that this
/// is the only time they are shown.
pub fn shown_once(created: &Value) -> Markup {
    let config = serde_json::to_string_pretty(&created["mcp_json"]).unwrap_or_default();
    html! {
        div.once role="status" {
            p { strong { "Token (shown once — save this)" } }
            (copyable("token", "Token", created["secret"].as_str().unwrap_or_default()))
            (copyable_block("mcp-json", "Editor config (Claude Desktop, Cursor, VS Code: mcp.json)", &config))
        }
    }
}

async fn shown(app: &Arc<App>, session: &Session, ws: &str) -> PageResult<Workspace> {
    let Json(answer) = workspaces::show(
        State(app.clone()),
        session.user.clone(),
        Path(ws.to_owned()),
    )
    .await?;
    Ok(serde_json::from_value(answer).unwrap_or_default())
}

pub async fn confirm_delete(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
) -> PageResult<Markup> {
    let workspace = shown(&app, &session, &ws).await?;
    let body = html! {
        h1 { "Delete " (workspace.name) "?" }
        p.warning role="alert" { (delete_warning(&workspace.slug, workspace.servers, workspace.tokens)) }
        @if workspace.owner != session.user.username {
            p { "Only its owner, " strong { (workspace.owner) } ", can delete it." }
        }
        form method="post" action={ (PATH) "/workspaces/" (workspace.slug) "/delete" } {
            (csrf_field(&session))
            button.danger type="submit" { "Delete workspace " (workspace.slug) }
            " "
            a href={ (PATH) "/workspaces/" (workspace.slug) } { "Cancel" }
        }
    };
    Ok(page(&session, "Delete workspace", body))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> PageResult<Response> {
    session.check_csrf(&form.csrf)?;
    let _done = workspaces::remove(State(app), session.user.clone(), Path(ws)).await?;
    Ok(Redirect::to(&format!("{PATH}/workspaces")).into_response())
}
