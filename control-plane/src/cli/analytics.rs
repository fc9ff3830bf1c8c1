//! `gatehouse workspace analytics`: what a workspace's calls add up to — a summary
//! line, then tables per server, per tool and per token.

use super::api::decode;
use super::error::CliError;
use super::render::table;
use super::resources::Analytics;
use super::session::Context;
use crate::calls::analytics::CallStats;
use crate::dates::{format_minute, now_unix, Since};

pub async fn run(
    ctx: &Context,
    workspace: Option<String>,
    since: Since,
) -> Result<String, CliError> {
    let ws = ctx.workspace(workspace)?;
    let query = [("since", since.resolve(now_unix()).to_string())];
    let answer = ctx
        .client()?
        .get_query(&["v1", "workspaces", &ws, "analytics"], &query)
        .await?;
    let analytics: Analytics = decode(&answer, "workspace analytics")?;
    ctx.output(&answer, || Ok(analytics_text(&ws, &analytics)))
}

/// `12 ms`, `0.45 ms`, `12.3 ms`; `-` without calls.
fn latency(ms: Option<f64>) -> String {
    match ms {
        None => "-".to_owned(),
        Some(ms) if ms < 1.0 => format!("{ms:.2} ms"),
        Some(ms) if (ms - ms.round()).abs() < 0.05 => format!("{ms:.0} ms"),
        Some(ms) => format!("{ms:.1} ms"),
    }
}

fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

fn stats_cells(s: &CallStats) -> Vec<String> {
    vec![
        s.calls.to_string(),
        s.errors.to_string(),
        percent(s.error_rate),
        latency(s.p50_ms),
        latency(s.p95_ms),
    ]
}

/// Prompts and resources share the tool table; their kind is said so a prompt is
/// not read as a tool of the same name.
fn target_text(tool: &str, action: &str) -> String {
    match action {
        "prompt_get" => format!("{tool} (prompt)"),
        "resource_read" => format!("{tool} (resource)"),
        _ => tool.to_owned(),
    }
}

pub fn analytics_text(workspace: &str, a: &Analytics) -> String {
    let since = format_minute(a.since);
    let a = &a.report;
    let t = &a.totals;
    if t.calls == 0 {
        return format!("No calls in {workspace} since {since}.\n");
    }
    let mut out = format!(
        "Calls in {workspace} since {since}: {} ({} errors, {}), p50 {}, p95 {}\n",
        t.calls,
        t.errors,
        percent(t.error_rate),
        latency(t.p50_ms),
        latency(t.p95_ms),
    );
    let header = ["CALLS", "ERRORS", "ERROR RATE", "P50", "P95"];
    let with_first = |first: &'static str| {
        std::iter::once(first)
            .chain(header.iter().copied())
            .collect::<Vec<_>>()
    };
    out.push('\n');
    out += &table(
        &with_first("SERVER"),
        a.servers
            .iter()
            .map(|s| {
                let name = if s.server.is_empty() {
                    "(not routed)".to_owned()
                } else {
                    s.server.clone()
                };
                std::iter::once(name).chain(stats_cells(&s.stats)).collect()
            })
            .collect(),
    );
    out.push('\n');
    out += &table(
        &with_first("TOOL"),
        a.tools
            .iter()
            .map(|s| {
                std::iter::once(target_text(&s.tool, &s.action))
                    .chain(stats_cells(&s.stats))
                    .collect()
            })
            .collect(),
    );
    out.push('\n');
    out += &table(
        &["TOKEN", "USER", "CALLS", "ERRORS"],
        a.tokens
            .iter()
            .map(|t| {
                vec![
                    t.token.clone(),
                    t.actor.clone(),
                    t.calls.to_string(),
                    t.errors.to_string(),
                ]
            })
            .collect(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::analytics::{AnalyticsReport, ServerStats, TokenStats, ToolStats};

    const MAR_07_1012: i64 = 1_772_878_320;

    fn stats(calls: u64, errors: u64, p50: f64, p95: f64) -> CallStats {
        CallStats {
            calls,
            errors,
            error_rate: errors as f64 / calls as f64,
            p50_ms: Some(p50),
            p95_ms: Some(p95),
        }
    }

    #[test]
    fn summary_then_one_table_per_grouping() {
        let a = Analytics {
            since: MAR_07_1012,
            report: AnalyticsReport {
                totals: stats(21, 4, 100.0, 190.0),
                servers: vec![
                    ServerStats {
                        server: "github".into(),
                        stats: stats(20, 4, 100.0, 190.0),
                    },
                    ServerStats {
                        server: String::new(),
                        stats: stats(1, 0, 0.25, 0.25),
                    },
                ],
                tools: vec![
                    ToolStats {
                        tool: "github__create_issue".into(),
                        action: "tool_call".into(),
                        stats: stats(20, 4, 100.0, 190.0),
                    },
                    ToolStats {
                        tool: "github__triage".into(),
                        action: "prompt_get".into(),
                        stats: stats(1, 0, 12.34, 12.34),
                    },
                ],
                tokens: vec![TokenStats {
                    token_id: "tok_1".into(),
                    token: "Alice Cursor".into(),
                    actor: "alice".into(),
                    calls: 21,
                    errors: 4,
                }],
            },
        };
        assert_eq!(
            analytics_text("engineering", &a),
            "Calls in engineering since 2026-03-07 10:12 UTC: 21 (4 errors, 19.0%), p50 100 ms, p95 190 ms\n\
             \n\
             SERVER        CALLS  ERRORS  ERROR RATE  P50      P95\n\
             github        20     4       20.0%       100 ms   190 ms\n\
             (not routed)  1      0       0.0%        0.25 ms  0.25 ms\n\
             \n\
             TOOL                     CALLS  ERRORS  ERROR RATE  P50      P95\n\
             github__create_issue     20     4       20.0%       100 ms   190 ms\n\
             github__triage (prompt)  1      0       0.0%        12.3 ms  12.3 ms\n\
             \n\
             TOKEN         USER   CALLS  ERRORS\n\
             Alice Cursor  alice  21     4\n"
        );
    }

    #[test]
    fn no_calls_says_so() {
        let a = Analytics {
            since: MAR_07_1012,
            ..Analytics::default()
        };
        assert_eq!(
            analytics_text("engineering", &a),
            "No calls in engineering since 2026-03-07 10:12 UTC.\n"
        );
    }
}
