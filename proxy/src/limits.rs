//! Budgets: how much each token and each workspace may ask of this proxy — requests
//! per second, `tools/call` and new sessions per minute, event streams open at once —
//! checked on the request path with one atomic operation per budget, no lock and no
//! call to anyone.
//!
//! Every proxy enforces its share of each budget (`limits.proxy_share` of the pushed
//! config, the number of proxies behind the balancer): with N proxies behind a
//! balancer that spreads requests evenly, together they let in about the configured
//! budget. A shared counter (a store every request asks) would be exact, but would put
//! a network round trip and a second point of failure on every request; the share
//! costs nothing and is off only when one client's requests all land on one proxy
//! (then it gets its share, never more than the budget).
//!
//! The schedules (each budget's GCRA arrival time, each token's open streams) outlive
//! config generations, so a config push neither resets a budget nor lets a fresh
//! burst in; a token's own limits apply field by field over its workspace's
//! `per_token` limits.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use gatehouse_config::{RateLimit, Snapshot};
use gatehouse_mcp::rate::{retry_after_seconds, Rate};

/// The schedules of every budget on this proxy, by token id (`t/`) and workspace
/// slug (`w/`). Outlives every config generation.
#[derive(Debug, Default)]
pub struct Schedules {
    by_key: DashMap<String, Arc<Schedule>>,
}

/// Where one budget stands.
#[derive(Debug, Default)]
pub struct Schedule {
    requests: AtomicU64,
    tool_calls: AtomicU64,
    sessions: AtomicU64,
    streams: AtomicU32,
}

impl Schedules {
    fn of(&self, key: String) -> Arc<Schedule> {
        self.by_key.entry(key).or_default().clone()
    }

    /// The budget of token `id` under `snapshot`'s limits, `None` when it has none.
    pub fn token(
        &self,
        snapshot: &Snapshot,
        ws: &gatehouse_config::Workspace,
        id: &str,
        own: Option<&RateLimit>,
    ) -> Option<Arc<Budget>> {
        let limit = own.map_or_else(
            || ws.limits.per_token.clone(),
            |l| l.or(&ws.limits.per_token),
        );
        let streams = ws.limits.streams_per_token;
        if limit.is_unlimited() && streams.is_none() {
            return None;
        }
        let share = snapshot.limits.proxy_share;
        Some(Arc::new(Budget::compile(
            &limit,
            streams,
            share,
            self.of(format!("t/{id}")),
        )))
    }

    /// The budget of the whole workspace, `None` when it has none.
    pub fn workspace(
        &self,
        snapshot: &Snapshot,
        ws: &gatehouse_config::Workspace,
    ) -> Option<Arc<Budget>> {
        let limit = &ws.limits.workspace;
        if limit.is_unlimited() {
            return None;
        }
        let share = snapshot.limits.proxy_share;
        Some(Arc::new(Budget::compile(
            limit,
            None,
            share,
            self.of(format!("w/{}", ws.slug)),
        )))
    }

    /// Forgets the schedules `snapshot` no longer has a budget for.
    pub fn retain(&self, snapshot: &Snapshot) {
        let mut keep = std::collections::HashSet::new();
        for ws in &snapshot.workspaces {
            keep.insert(format!("w/{}", ws.slug));
            for t in &ws.tokens {
                keep.insert(format!("t/{}", t.id));
            }
        }
        self.by_key.retain(|k, _| keep.contains(k));
    }
}

/// One token's or workspace's budget, for one config generation.
#[derive(Debug)]
pub struct Budget {
    requests: Option<Rate>,
    tool_calls: Option<Rate>,
    sessions: Option<Rate>,
    max_streams: Option<u32>,
    schedule: Arc<Schedule>,
}

impl Budget {
    fn compile(
        limit: &RateLimit,
        max_streams: Option<u32>,
        share: u32,
        schedule: Arc<Schedule>,
    ) -> Budget {
        let requests = limit
            .requests_per_second
            .and_then(|rps| Rate::per_second(rps, limit.request_burst()))
            .map(|r| r.share(share));
        let tool_calls = limit
            .tool_calls_per_minute
            .and_then(|n| Rate::per_minute(n, n))
            .map(|r| r.share(share));
        let sessions = limit
            .sessions_per_minute
            .and_then(|n| Rate::per_minute(n, n))
            .map(|r| r.share(share));
        let max_streams = max_streams.map(|m| m.div_ceil(share.max(1)).max(1));
        Budget {
            requests,
            tool_calls,
            sessions,
            max_streams,
            schedule,
        }
    }
}

/// Which budget a request exceeded: the label of `gatehouse_limited_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    TokenRequests,
    WorkspaceRequests,
    TokenToolCalls,
    WorkspaceToolCalls,
    TokenSessions,
    WorkspaceSessions,
    TokenStreams,
}

impl Exceeded {
    pub fn as_label(self) -> &'static str {
        match self {
            Exceeded::TokenRequests => "token_requests",
            Exceeded::WorkspaceRequests => "workspace_requests",
            Exceeded::TokenToolCalls => "token_tool_calls",
            Exceeded::WorkspaceToolCalls => "workspace_tool_calls",
            Exceeded::TokenSessions => "token_sessions",
            Exceeded::WorkspaceSessions => "workspace_sessions",
            Exceeded::TokenStreams => "token_streams",
        }
    }
}

/// A request over budget: which budget, and how long until it would be let in (none
/// for a stream cap: that waits for a stream to close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub exceeded: Exceeded,
    pub wait: Option<Duration>,
}

impl Refusal {
    /// Seconds for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        self.wait.map(retry_after_seconds)
    }

    /// What the client is told.
    pub fn message(&self) -> String {
        let what = match self.exceeded {
            Exceeded::TokenRequests => "this token's request rate",
            Exceeded::WorkspaceRequests => "this workspace's request rate",
            Exceeded::TokenToolCalls => "this token's tool calls per minute",
            Exceeded::WorkspaceToolCalls => "this workspace's tool calls per minute",
            Exceeded::TokenSessions => "this token's new sessions per minute",
            Exceeded::WorkspaceSessions => "this workspace's new sessions per minute",
            Exceeded::TokenStreams => "this token's open streams",
        };
        match self.retry_after() {
            Some(s) => format!("Rate limit exceeded: {what}; retry after {s} s"),
            None => format!("Limit exceeded: {what}; close a stream first"),
        }
    }
}

/// Lets one request in against the token's and then the workspace's request rate.
pub fn admit_request(token: Option<&Budget>, ws: Option<&Budget>) -> Result<(), Refusal> {
    admit(
        token,
        ws,
        |b| (b.requests, &b.schedule.requests),
        Exceeded::TokenRequests,
        Exceeded::WorkspaceRequests,
    )
}

/// Lets one `tools/call` in against the token's and then the workspace's call rate.
pub fn admit_tool_call(token: Option<&Budget>, ws: Option<&Budget>) -> Result<(), Refusal> {
    admit(
        token,
        ws,
        |b| (b.tool_calls, &b.schedule.tool_calls),
        Exceeded::TokenToolCalls,
        Exceeded::WorkspaceToolCalls,
    )
}

/// Lets one `initialize` (a new session) in against the token's and then the
/// workspace's session rate.
pub fn admit_session(token: Option<&Budget>, ws: Option<&Budget>) -> Result<(), Refusal> {
    admit(
        token,
        ws,
        |b| (b.sessions, &b.schedule.sessions),
        Exceeded::TokenSessions,
        Exceeded::WorkspaceSessions,
    )
}

fn admit(
    token: Option<&Budget>,
    ws: Option<&Budget>,
    pick: impl Fn(&Budget) -> (Option<Rate>, &AtomicU64),
    token_exceeded: Exceeded,
    ws_exceeded: Exceeded,
) -> Result<(), Refusal> {
    let mut now = None;
    for (budget, exceeded) in [(token, token_exceeded), (ws, ws_exceeded)] {
        let Some((Some(rate), tat)) = budget.map(&pick) else {
            continue;
        };
        let at = *now.get_or_insert_with(now_ns);
        rate.admit(tat, at).map_err(|wait| Refusal {
            exceeded,
            wait: Some(wait),
        })?;
    }
    Ok(())
}

/// Takes one of the token's stream slots for as long as the returned guard lives.
pub fn open_stream(token: Option<&Arc<Budget>>) -> Result<StreamSlot, Refusal> {
    let Some(budget) = token.filter(|b| b.max_streams.is_some()) else {
        return Ok(StreamSlot(None));
    };
    let max = budget.max_streams.expect("filtered");
    let streams = &budget.schedule.streams;
    let mut open = streams.load(Ordering::Relaxed);
    loop {
        if open >= max {
            return Err(Refusal {
                exceeded: Exceeded::TokenStreams,
                wait: None,
            });
        }
        match streams.compare_exchange_weak(open, open + 1, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return Ok(StreamSlot(Some(budget.schedule.clone()))),
            Err(seen) => open = seen,
        }
    }
}

/// An open stream counted against its token; the slot is given back when dropped.
#[derive(Debug)]
pub struct StreamSlot(Option<Arc<Schedule>>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if let Some(schedule) = &self.0 {
            schedule.streams.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Nanoseconds of a monotonic clock, never 0.
fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::{Workspace, WorkspaceLimits};

    fn workspace(limits: WorkspaceLimits) -> Workspace {
        Workspace {
            slug: "eng".into(),
            name: String::new(),
            owner: None,
            servers: vec![],
            tokens: vec![],
            limits,
        }
    }

    fn rate(rps: f64, burst: u32) -> RateLimit {
        RateLimit {
            requests_per_second: Some(rps),
            burst: Some(burst),
            tool_calls_per_minute: None,
            sessions_per_minute: None,
        }
    }

    #[test]
    fn a_token_over_its_rate_is_refused_with_a_wait() {
        let schedules = Schedules::default();
        let ws = workspace(WorkspaceLimits {
            per_token: rate(1.0, 2),
            ..Default::default()
        });
        let snapshot = Snapshot::default();
        let budget = schedules.token(&snapshot, &ws, "alice", None).unwrap();
        assert!(admit_request(Some(&budget), None).is_ok());
        assert!(admit_request(Some(&budget), None).is_ok());
        let refused = admit_request(Some(&budget), None).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::TokenRequests);
        assert_eq!(refused.retry_after(), Some(1));
        // A new generation shares the schedule: no fresh burst.
        let again = schedules.token(&snapshot, &ws, "alice", None).unwrap();
        assert!(admit_request(Some(&again), None).is_err());
        // Another token has its own.
        let bob = schedules.token(&snapshot, &ws, "bob", None).unwrap();
        assert!(admit_request(Some(&bob), None).is_ok());
    }

    #[test]
    fn a_token_override_applies_field_by_field() {
        let schedules = Schedules::default();
        let ws = workspace(WorkspaceLimits {
            per_token: RateLimit {
                requests_per_second: Some(100.0),
                burst: None,
                tool_calls_per_minute: Some(1),
                sessions_per_minute: None,
            },
            ..Default::default()
        });
        let own = rate(1.0, 1);
        let budget = schedules
            .token(&Snapshot::default(), &ws, "t", Some(&own))
            .unwrap();
        assert!(admit_request(Some(&budget), None).is_ok());
        assert!(admit_request(Some(&budget), None).is_err());
        assert!(admit_tool_call(Some(&budget), None).is_ok());
        let refused = admit_tool_call(Some(&budget), None).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::TokenToolCalls);
        assert_eq!(refused.retry_after(), Some(60));
    }

    #[test]
    fn the_workspace_budget_is_shared_by_its_tokens_and_divided_among_proxies() {
        let schedules = Schedules::default();
        let ws = workspace(WorkspaceLimits {
            workspace: rate(30.0, 6),
            ..Default::default()
        });
        let mut snapshot = Snapshot::default();
        snapshot.limits.proxy_share = 3;
        let budget = schedules.workspace(&snapshot, &ws).unwrap();
        assert!(admit_request(None, Some(&budget)).is_ok());
        assert!(admit_request(None, Some(&budget)).is_ok());
        let refused = admit_request(None, Some(&budget)).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::WorkspaceRequests);
        assert!(schedules.token(&snapshot, &ws, "t", None).is_none());
    }

    #[test]
    fn stream_slots_are_given_back() {
        let schedules = Schedules::default();
        let ws = workspace(WorkspaceLimits {
            streams_per_token: Some(2),
            ..Default::default()
        });
        let budget = schedules.token(&Snapshot::default(), &ws, "t", None);
        let a = open_stream(budget.as_ref()).unwrap();
        let _b = open_stream(budget.as_ref()).unwrap();
        let refused = open_stream(budget.as_ref()).unwrap_err();
        assert_eq!(refused.exceeded, Exceeded::TokenStreams);
        assert_eq!(refused.retry_after(), None);
        drop(a);
        assert!(open_stream(budget.as_ref()).is_ok());
        // No budget, no cap.
        assert!(open_stream(None).is_ok());
    }
}
