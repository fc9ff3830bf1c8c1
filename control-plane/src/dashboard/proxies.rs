//! Proxies: every proxy the control plane knows, whether it is connected, the config
//! version it applied against the current one (the lag), and when it was last seen.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use maud::{html, Markup};

use super::session::{live_page, Session};
use super::shell::PageResult;
use crate::api::proxies;
use crate::dates::format_ago;
use crate::state::App;
use crate::store::now;

pub async fn show(State(app): State<Arc<App>>, session: Session) -> PageResult<Markup> {
    let Json(answer) = proxies::list(State(app), session.user.clone()).await?;
    let list = answer["proxies"].as_array().cloned().unwrap_or_default();
    let body = html! {
        h1 { "Proxies" }
        @if list.is_empty() {
            p { "No proxy has connected yet." }
        } @else {
            div.scroll { table.proxies {
                thead { tr { th scope="col" { "Name" } th scope="col" { "Status" } th scope="col" { "Applied version" } th scope="col" { "Current version" } th scope="col" { "Lag" } th scope="col" { "Last seen" } } }
                tbody { @for p in &list {
                    tr {
                        td { (p["name"].as_str().unwrap_or_else(|| p["id"].as_str().unwrap_or_default())) }
                        td { @if p["connected"] == true { span.status.active { "connected" } } @else { span.status.revoked { "disconnected" } } }
                        td.num { (p["version"]) }
                        td.num { (p["config_version"]) }
                        td.num { (p["lag"]) }
                        td { (p["last_seen"].as_i64().map_or_else(|| "never".to_owned(), |t| format_ago(t, now()))) }
                    }
                } }
            } }
        }
    };
    Ok(live_page(&session, "Proxies", body))
}
