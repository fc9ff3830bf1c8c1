//! Workspace analytics: calls, error rate and p50/p95 latency per server, tool and
//! token over a chosen window, as bar charts drawn here as inline SVG (no chart
//! library, no script), each followed by the table of its numbers.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use maud::{html, Markup};
use serde::Deserialize;

use super::session::{page, Session};
use super::shell::{PageResult, PATH};
use crate::api::calls::{self, AnalyticsParams};
use crate::calls::analytics::{AnalyticsReport, CallStats};
use crate::state::App;
use crate::store::now;

/// The windows offered, as (form value, label, seconds back).
const WINDOWS: [(&str, &str, i64); 4] = [
    ("1h", "Last hour", 3_600),
    ("24h", "Last 24 hours", 86_400),
    ("7d", "Last 7 days", 7 * 86_400),
    ("30d", "Last 30 days", 30 * 86_400),
];

const CALLS: (&str, &str) = ("call", "calls");
const MS: (&str, &str) = ("ms", "ms");

/// Rows a chart shows at most (the busiest ones); the table lists them all.
const CHART_ROWS: usize = 12;

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Window {
    window: String,
}

/// One bar of a chart: a label and its segments, each a CSS class and a value.
struct Bar<'a> {
    label: &'a str,
    segments: Vec<(&'static str, f64)>,
}

/// A horizontal bar chart; segments of a bar are stacked. `unit` (singular, plural)
/// follows each total.
fn bar_chart(id: &str, title: &str, bars: &[Bar<'_>], unit: (&str, &str)) -> Markup {
    let unit_of = |v: f64| if v == 1.0 { unit.0 } else { unit.1 };
    const LABEL: f64 = 200.0;
    const WIDTH: f64 = 640.0;
    const ROW: f64 = 28.0;
    let bars = &bars[..bars.len().min(CHART_ROWS)];
    let max = bars
        .iter()
        .map(|b| b.segments.iter().map(|s| s.1).sum::<f64>())
        .fold(0.0, f64::max);
    let scale = if max > 0.0 {
        (WIDTH - LABEL - 90.0) / max
    } else {
        0.0
    };
    let height = ROW * bars.len() as f64 + 8.0;
    html! {
        figure.chart {
            svg.chart id=(id) role="img" aria-labelledby={ (id) "-title" }
                viewBox={ "0 0 " (WIDTH) " " (height) } preserveAspectRatio="xMinYMin meet" {
                title id={ (id) "-title" } { (title) }
                @for (i, bar) in bars.iter().enumerate() {
                    @let y = 4.0 + ROW * i as f64;
                    @let total: f64 = bar.segments.iter().map(|s| s.1).sum();
                    text.name x=(LABEL - 8.0) y=(y + ROW / 2.0 + 4.0) text-anchor="end" { (short(bar.label)) }
                    @for (class, x, w, value) in placed(&bar.segments, LABEL, scale) {
                        rect class=(class) x=(x) y=(y + 4.0) width=(w) height=(ROW - 8.0) {
                            title { (bar.label) ": " (number(value)) " " (unit_of(value)) }
                        }
                    }
                    text.value x=(LABEL + total * scale + 6.0) y=(y + ROW / 2.0 + 4.0) { (number(total)) " " (unit_of(total)) }
                }
            }
            figcaption { (title) }
        }
    }
}

/// Each segment as (class, x, width, value), laid end to end from `start`.
fn placed(
    segments: &[(&'static str, f64)],
    start: f64,
    scale: f64,
) -> Vec<(&'static str, f64, f64, f64)> {
    segments
        .iter()
        .scan(start, |x, &(class, value)| {
            let at = *x;
            *x += value * scale;
            Some((class, at, value * scale, value))
        })
        .collect()
}

fn short(label: &str) -> String {
    if label.chars().count() > 28 {
        let head: String = label.chars().take(27).collect();
        format!("{head}…")
    } else {
        label.to_owned()
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn calls_bars<'a>(rows: impl Iterator<Item = (&'a str, &'a CallStats)>) -> Vec<Bar<'a>> {
    rows.map(|(label, s)| Bar {
        label,
        segments: vec![
            ("ok", s.calls.saturating_sub(s.errors) as f64),
            ("err", s.errors as f64),
        ],
    })
    .collect()
}

fn latency_bars<'a>(rows: impl Iterator<Item = (&'a str, &'a CallStats)>) -> Vec<Bar<'a>> {
    rows.filter_map(|(label, s)| {
        let p50 = s.p50_ms?;
        let p95 = s.p95_ms.unwrap_or(p50);
        Some(Bar {
            label,
            segments: vec![("p50", p50), ("p95", (p95 - p50).max(0.0))],
        })
    })
    .collect()
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1} ms"))
}

fn stats_table(first: &str, rows: &[(&str, &CallStats)]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr { th scope="col" { (first) } th scope="col" { "Calls" } th scope="col" { "Errors" } th scope="col" { "Error rate" } th scope="col" { "p50" } th scope="col" { "p95" } } }
            tbody { @for (label, s) in rows {
                tr { td { code { (label) } } td.num { (s.calls) } td.num { (s.errors) } td.num { (format!("{:.1} %", s.error_rate * 100.0)) } td.num { (ms(s.p50_ms)) } td.num { (ms(s.p95_ms)) } }
            } }
        } }
    }
}

pub async fn show(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Query(q): Query<Window>,
) -> PageResult<Markup> {
    let (window, label, back) = WINDOWS
        .iter()
        .find(|(value, ..)| *value == q.window)
        .copied()
        .unwrap_or(WINDOWS[1]);
    let Json(answer) = calls::analytics(
        State(app),
        session.user.clone(),
        Path(ws.clone()),
        Query(AnalyticsParams {
            since: Some(now() - back),
        }),
    )
    .await?;
    let report: AnalyticsReport = serde_json::to_value(answer)
        .and_then(serde_json::from_value)
        .map_err(anyhow::Error::from)
        .map_err(crate::api::error::ApiError::from)?;
    let servers: Vec<(&str, &CallStats)> = report
        .servers
        .iter()
        .map(|s| (s.server.as_str(), &s.stats))
        .collect();
    let tools: Vec<(&str, &CallStats)> = report
        .tools
        .iter()
        .map(|t| (t.tool.as_str(), &t.stats))
        .collect();
    let token_bars: Vec<Bar<'_>> = report
        .tokens
        .iter()
        .map(|t| Bar {
            label: &t.token,
            segments: vec![
                ("ok", t.calls.saturating_sub(t.errors) as f64),
                ("err", t.errors as f64),
            ],
        })
        .collect();
    let here = format!("{PATH}/workspaces/{ws}");
    let t = &report.totals;
    let body = html! {
        h1 { "Analytics " small { "(" (ws) ")" } }
        nav.sub aria-label="Workspace" {
            a href=(here) { "Overview" }
            a href={ (here) "/tools" } { "Tools" }
            a href={ (here) "/audit" } { "Workspace Audit" }
            a href={ (here) "/analytics" } aria-current="page" { "Analytics" }
        }
        form.filters method="get" action={ (here) "/analytics" } {
            div.field {
                label for="a-window" { "Window" }
                select #a-window name="window" {
                    @for (value, text, _) in WINDOWS {
                        option value=(value) selected[value == window] { (text) }
                    }
                }
            }
            button type="submit" { "Show" }
        }
        p.totals {
            strong { (t.calls) } @if t.calls == 1 { " call · " } @else { " calls · " }
            strong { (t.errors) } @if t.errors == 1 { " error (" } @else { " errors (" }
            (format!("{:.1} %", t.error_rate * 100.0)) ") · p50 " (ms(t.p50_ms)) " · p95 " (ms(t.p95_ms))
            " · " (label)
        }
        @if t.calls == 0 {
            p { "No calls in this window." }
        } @else {
            p.legend aria-hidden="true" {
                span.key.ok {} " succeeded " span.key.err {} " failed " span.key.p50 {} " p50 " span.key.p95 {} " p95"
            }
            section aria-labelledby="by-server" {
                h2 #by-server { "Per server" }
                (bar_chart("calls-per-server", "Calls per server", &calls_bars(servers.iter().copied()), CALLS))
                (bar_chart("latency-per-server", "Latency per server (p50, p95)", &latency_bars(servers.iter().copied()), MS))
                (stats_table("Server", &servers))
            }
            section aria-labelledby="by-tool" {
                h2 #by-tool { "Per tool" }
                (bar_chart("calls-per-tool", "Calls per tool", &calls_bars(tools.iter().copied()), CALLS))
                (bar_chart("latency-per-tool", "Latency per tool (p50, p95)", &latency_bars(tools.iter().copied()), MS))
                (stats_table("Tool", &tools))
            }
            section aria-labelledby="by-token" {
                h2 #by-token { "Per token" }
                (bar_chart("calls-per-token", "Calls per token", &token_bars, CALLS))
                div.scroll { table {
                    thead { tr { th scope="col" { "Token" } th scope="col" { "User" } th scope="col" { "Calls" } th scope="col" { "Errors" } } }
                    tbody { @for tok in &report.tokens {
                        tr { td { (tok.token) } td { (tok.actor) } td.num { (tok.calls) } td.num { (tok.errors) } }
                    } }
                } }
            }
        }
    };
    Ok(page(&session, "Analytics", body))
}
