//! Workspace Audit: the seeds' `DATE USER SKILL ACTION` table of admin events and
//! tool calls, newest first, filtered by user, action and time window, paged.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::session::{page, Session};
use super::shell::{PageResult, PATH};
use crate::api::workspaces::{self, AuditParams};
use crate::dates::format_minute;
use crate::state::App;
use crate::store::now;

/// Rows per page.
const PAGE_SIZE: usize = 50;

/// The most events one filter reads (the API's own ceiling).
const MAX_EVENTS: i64 = 10_000;

/// The time windows offered, as (form value, label, seconds back; 0 = all time).
const WINDOWS: [(&str, &str, i64); 5] = [
    ("1h", "Last hour", 3_600),
    ("24h", "Last 24 hours", 86_400),
    ("7d", "Last 7 days", 7 * 86_400),
    ("30d", "Last 30 days", 30 * 86_400),
    ("all", "All time", 0),
];

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Filter {
    user: String,
    action: String,
    window: String,
    page: usize,
}

impl Filter {
    fn query(&self, page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("user", &self.user)
            .append_pair("action", &self.action)
            .append_pair("window", &self.window)
            .append_pair("page", &page.to_string());
        q.finish()
    }
}

/// What the SKILL column shows, and the action with any failure beside it (as the
/// CLI's `workspace audit` does, so a refused call is not mistaken for a success).
fn row(e: &Value) -> (String, String, String, String) {
    let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let action = match s("outcome").as_str() {
        "" | "ok" | "success" | "succeeded" | "allowed" => s("action"),
        outcome => format!("{} ({outcome})", s("action")),
    };
    let target = Some(s("target")).filter(|t| !t.is_empty());
    (
        e["time"].as_i64().map(format_minute).unwrap_or_default(),
        s("actor"),
        target.unwrap_or_else(|| "-".into()),
        action,
    )
}

pub async fn show(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Query(filter): Query<Filter>,
) -> PageResult<Markup> {
    let back = WINDOWS
        .iter()
        .find(|(value, ..)| *value == filter.window)
        .map_or(0, |w| w.2);
    let nonempty = |s: &str| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let Json(answer) = workspaces::audit(
        State(app),
        session.user.clone(),
        Path(ws.clone()),
        Query(AuditParams {
            since: (back > 0).then(|| now() - back),
            user: nonempty(&filter.user),
            action: nonempty(&filter.action),
            limit: Some(MAX_EVENTS),
        }),
    )
    .await?;
    let mut events = answer["events"].as_array().cloned().unwrap_or_default();
    events.reverse();
    let pages = events.len().div_ceil(PAGE_SIZE).max(1);
    let current = filter.page.clamp(1, pages);
    let shown = events
        .iter()
        .skip((current - 1) * PAGE_SIZE)
        .take(PAGE_SIZE);
    let here = format!("{PATH}/workspaces/{ws}");
    let body = html! {
        h1 { "Workspace Audit " small { "(" (ws) ")" } }
        nav.sub aria-label="Workspace" {
            a href=(here) { "Overview" }
            a href={ (here) "/tools" } { "Tools" }
            a href={ (here) "/audit" } aria-current="page" { "Workspace Audit" }
            a href={ (here) "/analytics" } { "Analytics" }
        }
        form.filters method="get" action={ (here) "/audit" } {
            div.field {
                label for="f-user" { "User or token" }
                input #f-user name="user" value=(filter.user);
            }
            div.field {
                label for="f-action" { "Action" }
                input #f-action name="action" value=(filter.action) placeholder="tool_call";
            }
            div.field {
                label for="f-window" { "Time" }
                select #f-window name="window" {
                    @for (value, label, _) in WINDOWS {
                        option value=(value) selected[value == filter.window || (value == "all" && back == 0)] { (label) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if events.is_empty() {
            p { "No audit events in " (ws) " for this filter." }
        } @else {
            div.scroll { table.audit {
                thead { tr { th scope="col" { "Date" } th scope="col" { "User" } th scope="col" { "Skill" } th scope="col" { "Action" } } }
                tbody { @for e in shown {
                    @let (date, user, skill, action) = row(e);
                    tr { td { (date) } td { (user) } td { code { (skill) } } td { (action) } }
                } }
            } }
            nav.pages aria-label="Pages" {
                @if current > 1 {
                    a href={ (here) "/audit?" (filter.query(current - 1)) } rel="prev" { "← Newer" }
                }
                span { "Page " (current) " of " (pages) " · " (events.len()) @if events.len() == 1 { " event" } @else { " events" } }
                @if current < pages {
                    a href={ (here) "/audit?" (filter.query(current + 1)) } rel="next" { "Older →" }
                }
            }
        }
    };
    Ok(page(&session, "Workspace Audit", body))
}
