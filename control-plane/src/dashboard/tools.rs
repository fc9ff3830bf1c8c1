//! A workspace's tools as its clients see them: names, descriptions, a read-only
//! badge and the server each comes from (`crate::catalog` asks the servers).

use std::sync::Arc;

use axum::extract::{Path, State};
use maud::{html, Markup};

use super::session::{page, Session};
use super::shell::{PageResult, PATH};
use crate::api::workspaces::visible;
use crate::catalog;
use crate::state::App;

pub async fn show(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
) -> PageResult<Markup> {
    // The same check as every API call on the workspace: 404 unless visible.
    let workspace = visible(&app, &session.user, &ws).await?;
    let servers = catalog::of_workspace(&app, &workspace.slug)
        .await
        .map_err(crate::api::error::ApiError::from)?;
    let count: usize = servers.iter().map(|s| s.tools.len()).sum();
    let here = format!("{PATH}/workspaces/{}", workspace.slug);
    let body = html! {
        h1 { "Tools " small { "(" (workspace.slug) ")" } }
        nav.sub aria-label="Workspace" {
            a href=(here) { "Overview" }
            a href={ (here) "/tools" } aria-current="page" { "Tools" }
            a href={ (here) "/audit" } { "Workspace Audit" }
            a href={ (here) "/analytics" } { "Analytics" }
        }
        p { (count) @if count == 1 { " tool" } @else { " tools" } " as clients of " code { (workspace.slug) } " see them, after each server's tool policy." }
        @for s in servers.iter().filter(|s| s.problem.is_some()) {
            p.error role="alert" { code { (s.server) } ": " (s.problem.as_deref().unwrap_or_default()) }
        }
        @if count > 0 {
            div.scroll { table.tools {
                thead { tr { th scope="col" { "Tool" } th scope="col" { "Description" } th scope="col" { "Server" } } }
                tbody { @for s in &servers { @for t in &s.tools {
                    tr {
                        td { code { (t.name) } @if t.read_only { " " span.badge { "read-only" } } }
                        td { (t.description) }
                        td { code { (s.server) } }
                    }
                } } }
            } }
        }
    };
    Ok(page(&session, "Tools", body))
}
