//! Workspace Audit: the seeds' `DATE USER SKILL ACTION` table of admin events and
//! tool calls, newest first, filtered by user, action and time window, paged by the
//! API's cursors (each page starts after the entry the last one ended with, so
//! "Older" reaches the very first entry however many there are).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::session::{page, Session};
use super::shell::{PageResult, PATH};
use crate::api::workspaces::{self, AuditParams};
use crate::calls::listing::cursor_of_json;
use crate::dates::format_minute;
use crate::state::App;
use crate::store::now;

/// Rows per page.
const PAGE_SIZE: usize = 50;

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
    /// Show the page of entries older than this cursor.
    before: String,
    /// Show the page of entries newer than this cursor.
    after: String,
    /// The page's number, for the reader only (1 = the newest).
    page: usize,
}

impl Filter {
    /// The link to the page next to this one: `(before|after, cursor)`.
    fn query(&self, (side, cursor): (&str, &str), page: usize) -> String {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("user", &self.user)
            .append_pair("action", &self.action)
            .append_pair("window", &self.window)
            .append_pair(side, cursor)
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
    // Newer than a cursor: the API walks oldest first from it, and the page is turned
    // round. Otherwise newest first, from the top or from an older-than cursor. One
    // entry more than a page tells whether there is a page beyond.
    let toward_newer = !filter.after.is_empty();
    let Json(answer) = workspaces::audit(
        State(app),
        session.user.clone(),
        Path(ws.clone()),
        Query(AuditParams {
            since: (back > 0).then(|| now() - back),
            user: nonempty(&filter.user),
            action: nonempty(&filter.action),
            limit: Some(PAGE_SIZE as i64 + 1),
            order: Some(if toward_newer { "asc" } else { "desc" }.into()),
            cursor: nonempty(if toward_newer {
                &filter.after
            } else {
                &filter.before
            }),
        }),
    )
    .await?;
    let mut events = answer["events"].as_array().cloned().unwrap_or_default();
    let beyond = events.len() > PAGE_SIZE;
    events.truncate(PAGE_SIZE);
    if toward_newer {
        events.reverse();
    }
    // Newer entries exist past the first row when this page was reached from a newer
    // one, or when walking toward newer found more; older ones likewise.
    let (newer, older) = if toward_newer {
        (beyond, true)
    } else {
        (!filter.before.is_empty(), beyond)
    };
    let current = filter.page.max(1);
    let cursor_of = |e: Option<&Value>| e.and_then(cursor_of_json);
    let newer_link = newer
        .then(|| cursor_of(events.first()))
        .flatten()
        .map(|c| filter.query(("after", &c), current.saturating_sub(1).max(1)));
    let older_link = older
        .then(|| cursor_of(events.last()))
        .flatten()
        .map(|c| filter.query(("before", &c), current + 1));
    let shown = events.iter();
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
                @if let Some(q) = &newer_link {
                    a href={ (here) "/audit?" (q) } rel="prev" { "← Newer" }
                }
                span { "Page " (current) " · " (events.len()) @if events.len() == 1 { " event" } @else { " events" } }
                @if let Some(q) = &older_link {
                    a href={ (here) "/audit?" (q) } rel="next" { "Older →" }
                }
            }
        }
    };
    Ok(page(&session, "Workspace Audit", body))
}
