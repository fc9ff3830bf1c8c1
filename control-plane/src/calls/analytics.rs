//! What a workspace's calls add up to: call and error counts and latency
//! percentiles in total, per server, per tool (target) and per token. Computed in
//! Rust from the stored latencies, which is exact and fine at the scale of one
//! workspace's window (eight bytes per call and grouping).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::store::calls::CallSample;
use crate::store::{Store, WorkspaceRow};

impl CallSample {
    /// Anything but `ok` is an error: a tool error, a protocol error, or an
    /// unavailable upstream all failed the caller.
    fn is_error(&self) -> bool {
        self.outcome != "ok"
    }
}

/// The nearest-rank percentile of ascending `sorted` values: the value at 1-based
/// rank ⌈p/100 · n⌉, i.e. the smallest value such that at least p% of the values are
/// at or below it. Always one of the values, never an interpolation between two, so
/// p50 of 10, 20, …, 200 is 100 and p95 is 190. `None` for no values.
pub fn nearest_rank(sorted: &[u64], p: u32) -> Option<u64> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    let p = p.min(100) as usize;
    let rank = (p * n).div_ceil(100).clamp(1, n);
    Some(sorted[rank - 1])
}

/// Calls and latencies of one group while they are being added up.
#[derive(Debug, Default)]
struct Tally {
    calls: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

impl Tally {
    fn add(&mut self, sample: &CallSample) {
        self.calls += 1;
        self.errors += u64::from(sample.is_error());
        self.latencies_us.push(sample.latency_us.max(0) as u64);
    }

    fn stats(mut self) -> CallStats {
        self.latencies_us.sort_unstable();
        let ms = |us: Option<u64>| us.map(|us| us as f64 / 1_000.0);
        CallStats {
            calls: self.calls,
            errors: self.errors,
            error_rate: error_rate(self.calls, self.errors),
            p50_ms: ms(nearest_rank(&self.latencies_us, 50)),
            p95_ms: ms(nearest_rank(&self.latencies_us, 95)),
        }
    }
}

/// Errors per call, from 0 to 1; 0 when there were no calls.
fn error_rate(calls: u64, errors: u64) -> f64 {
    if calls == 0 {
        0.0
    } else {
        errors as f64 / calls as f64
    }
}

#[derive(Debug, Default)]
struct TokenTally {
    name: String,
    actor: String,
    calls: u64,
    errors: u64,
}

/// The running sums; [`Analytics::add`] each call, then [`Analytics::report`].
#[derive(Debug, Default)]
pub struct Analytics {
    totals: Tally,
    servers: HashMap<String, Tally>,
    /// By (target, action): a prompt may share its exposed name with a tool.
    tools: HashMap<(String, String), Tally>,
    /// By token id: names need not be unique.
    tokens: HashMap<String, TokenTally>,
}

impl Analytics {
    /// The analytics of the workspace's calls since `since` (unix seconds), read as
    /// a stream so only the latencies are held, not the rows.
    pub async fn of_workspace(
        store: &Store,
        ws: &WorkspaceRow,
        since: i64,
    ) -> Result<Analytics, sqlx::Error> {
        let mut analytics = Analytics::default();
        store
            .each_call_sample(ws, since, |sample| analytics.add(sample))
            .await?;
        Ok(analytics)
    }

    pub fn add(&mut self, sample: CallSample) {
        self.totals.add(&sample);
        self.servers
            .entry(sample.server.clone())
            .or_default()
            .add(&sample);
        self.tools
            .entry((sample.target.clone(), sample.action.clone()))
            .or_default()
            .add(&sample);
        let token = self.tokens.entry(sample.token_id.clone()).or_default();
        token.calls += 1;
        token.errors += u64::from(sample.is_error());
        // The newest name and actor seen win; they only differ if a token id is
        // reused, which ids are random enough never to be.
        token.name = sample.token_name;
        token.actor = sample.actor;
    }

    /// Groups sorted by calls, most first, then by name.
    pub fn report(self) -> AnalyticsReport {
        let mut servers: Vec<ServerStats> = self
            .servers
            .into_iter()
            .map(|(server, tally)| ServerStats {
                server,
                stats: tally.stats(),
            })
            .collect();
        servers.sort_by(|a, b| {
            b.stats
                .calls
                .cmp(&a.stats.calls)
                .then_with(|| a.server.cmp(&b.server))
        });
        let mut tools: Vec<ToolStats> = self
            .tools
            .into_iter()
            .map(|((tool, action), tally)| ToolStats {
                tool,
                action,
                stats: tally.stats(),
            })
            .collect();
        tools.sort_by(|a, b| {
            b.stats
                .calls
                .cmp(&a.stats.calls)
                .then_with(|| a.tool.cmp(&b.tool))
                .then_with(|| a.action.cmp(&b.action))
        });
        let mut tokens: Vec<TokenStats> = self
            .tokens
            .into_iter()
            .map(|(token_id, t)| TokenStats {
                token_id,
                token: t.name,
                actor: t.actor,
                calls: t.calls,
                errors: t.errors,
            })
            .collect();
        tokens.sort_by(|a, b| {
            b.calls
                .cmp(&a.calls)
                .then_with(|| a.token.cmp(&b.token))
                .then_with(|| a.token_id.cmp(&b.token_id))
        });
        AnalyticsReport {
            totals: self.totals.stats(),
            servers,
            tools,
            tokens,
        }
    }
}

/// Calls, errors and latency of one group. Percentiles are `null` without calls.
/// The CLI reads the same types back from the API's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CallStats {
    pub calls: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServerStats {
    pub server: String,
    #[serde(flatten)]
    pub stats: CallStats,
}

/// One target: the exposed tool or prompt name, or the resource URI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToolStats {
    pub tool: String,
    pub action: String,
    #[serde(flatten)]
    pub stats: CallStats,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenStats {
    pub token_id: String,
    /// The token's name.
    pub token: String,
    pub actor: String,
    pub calls: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnalyticsReport {
    pub totals: CallStats,
    pub servers: Vec<ServerStats>,
    pub tools: Vec<ToolStats>,
    pub tokens: Vec<TokenStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_a_sample_at_rank_ceil_p_n() {
        let tens: Vec<u64> = (1..=20).map(|i| i * 10).collect();
        assert_eq!(nearest_rank(&tens, 50), Some(100));
        assert_eq!(nearest_rank(&tens, 95), Some(190));
        assert_eq!(nearest_rank(&tens, 100), Some(200));
        assert_eq!(nearest_rank(&tens, 0), Some(10));
        assert_eq!(nearest_rank(&[7], 50), Some(7));
        assert_eq!(nearest_rank(&[7], 95), Some(7));
        assert_eq!(nearest_rank(&[], 50), None);
        // n = 10: p50 is rank 5, p95 is rank ⌈9.5⌉ = 10.
        let odd: Vec<u64> = (0..10).map(|i| 10 + i * 20).collect();
        assert_eq!(nearest_rank(&odd, 50), Some(90));
        assert_eq!(nearest_rank(&odd, 95), Some(190));
        // n = 3: p50 is rank ⌈1.5⌉ = 2.
        assert_eq!(nearest_rank(&[1, 2, 3], 50), Some(2));
    }

    fn sample(server: &str, target: &str, token: &str, outcome: &str, ms: i64) -> CallSample {
        CallSample {
            server: server.into(),
            target: target.into(),
            action: "tool_call".into(),
            token_id: format!("tok_{token}"),
            token_name: token.into(),
            actor: format!("{token}-owner"),
            outcome: outcome.into(),
            latency_us: ms * 1_000,
        }
    }

    #[test]
    fn groups_count_errors_and_sort_by_calls_then_name() {
        let mut a = Analytics::default();
        for i in 1..=20 {
            let (server, tool) = if i % 2 == 1 {
                ("github", "github__create_issue")
            } else {
                ("jira", "jira__search")
            };
            let outcome = if i % 5 == 0 { "tool_error" } else { "ok" };
            let token = if i <= 12 { "default" } else { "alice" };
            a.add(sample(server, tool, token, outcome, i * 10));
        }
        a.add(sample("zeta", "zeta__x", "alice", "ok", 1));
        let report = a.report();
        assert_eq!(report.totals.calls, 21);
        assert_eq!(report.totals.errors, 4);
        assert_eq!(report.totals.p50_ms, Some(100.0));
        // 21 values: rank ⌈19.95⌉ = 20 -> the 20th smallest, 190 ms.
        assert_eq!(report.totals.p95_ms, Some(190.0));
        type Row<'a> = (&'a str, u64, u64, Option<f64>, Option<f64>);
        let servers: Vec<Row> = report
            .servers
            .iter()
            .map(|s| {
                let st = &s.stats;
                (s.server.as_str(), st.calls, st.errors, st.p50_ms, st.p95_ms)
            })
            .collect();
        assert_eq!(
            servers,
            [
                ("github", 10, 2, Some(90.0), Some(190.0)),
                ("jira", 10, 2, Some(100.0), Some(200.0)),
                ("zeta", 1, 0, Some(1.0), Some(1.0)),
            ]
        );
        assert_eq!(report.servers[0].stats.error_rate, 0.2);
        assert_eq!(report.tools[1].tool, "jira__search");
        let tokens: Vec<(&str, &str, u64, u64)> = report
            .tokens
            .iter()
            .map(|t| (t.token.as_str(), t.actor.as_str(), t.calls, t.errors))
            .collect();
        assert_eq!(
            tokens,
            [
                ("default", "default-owner", 12, 2),
                ("alice", "alice-owner", 9, 2)
            ]
        );
    }

    #[test]
    fn no_calls_report_zeroes_and_no_percentiles() {
        let report = Analytics::default().report();
        assert_eq!(report.totals.calls, 0);
        assert_eq!(report.totals.error_rate, 0.0);
        assert_eq!(report.totals.p50_ms, None);
        assert!(report.servers.is_empty() && report.tokens.is_empty());
        let json = serde_json::to_value(&report.totals).unwrap();
        assert_eq!(json["p95_ms"], serde_json::Value::Null);
    }
}
