//! A workspace's audit log as one list: the admin events (installs, tokens, ...)
//! and the routed calls, in the order they happened.

use serde_json::{json, Value};

use crate::store::calls::CallEventRow;
use crate::store::AuditRow;

/// One line of the audit log.
#[derive(Debug, Clone)]
pub enum AuditEntry {
    Admin(AuditRow),
    Call(CallEventRow),
}

impl AuditEntry {
    /// Admin events have whole seconds, calls milliseconds: both are compared in
    /// milliseconds, so calls within one second keep their order and an admin event
    /// sorts before the calls of its second. Ties go by id.
    fn order_key(&self) -> (i64, &str) {
        match self {
            AuditEntry::Admin(e) => (e.time.saturating_mul(1_000), &e.id),
            AuditEntry::Call(c) => (c.time_ms, &c.id),
        }
    }

    /// The API's shape. Admin events keep theirs; a call adds what only calls have.
    pub fn to_json(&self) -> Value {
        match self {
            AuditEntry::Admin(e) => json!({
                "id": e.id, "time": e.time, "workspace": e.workspace, "actor": e.actor,
                "action": e.action, "target": e.target, "outcome": e.outcome,
            }),
            AuditEntry::Call(c) => json!({
                "id": c.id, "time": c.time_ms.div_euclid(1_000), "time_ms": c.time_ms,
                "workspace": c.workspace, "actor": c.actor, "action": c.action,
                "target": c.target, "outcome": c.outcome, "server": c.server,
                "token": c.token_name, "latency_ms": c.latency_us as f64 / 1_000.0,
                "request_id": c.request_id, "transport": c.transport,
            }),
        }
    }
}

/// The oldest `limit` entries of both lists, oldest first. Each list is already
/// its own oldest `limit` (the store sorts and limits the same way), so nothing
/// that belongs in the result was left behind by either query.
pub fn merge(admin: Vec<AuditRow>, calls: Vec<CallEventRow>, limit: usize) -> Vec<AuditEntry> {
    let mut all: Vec<AuditEntry> = admin
        .into_iter()
        .map(AuditEntry::Admin)
        .chain(calls.into_iter().map(AuditEntry::Call))
        .collect();
    all.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    all.truncate(limit);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin(id: &str, time: i64) -> AuditRow {
        AuditRow {
            id: id.into(),
            time,
            workspace: "eng".into(),
            actor: "admin".into(),
            action: "install".into(),
            target: "github".into(),
            outcome: "ok".into(),
        }
    }

    fn call(id: &str, time_ms: i64) -> CallEventRow {
        CallEventRow {
            id: id.into(),
            time_ms,
            workspace: "eng".into(),
            token_id: "tok_1".into(),
            token_name: "Alice Cursor".into(),
            actor: "alice".into(),
            action: "tool_call".into(),
            server: "github".into(),
            target: "github__create_issue".into(),
            outcome: "tool_error".into(),
            latency_us: 12_345,
            request_id: "7".into(),
            transport: "streamable_http".into(),
            proxy_id: "px".into(),
            received_at: 100,
        }
    }

    fn ids(entries: &[AuditEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| e.to_json()["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn merges_by_time_in_milliseconds_then_id() {
        let merged = merge(
            vec![admin("evt_a", 100), admin("evt_b", 102)],
            // The random ids of calls must not reorder calls of the same second.
            vec![
                call("ce_ff", 100_100),
                call("ce_00", 100_900),
                call("ce_11", 101_000),
            ],
            10,
        );
        assert_eq!(ids(&merged), ["evt_a", "ce_ff", "ce_00", "ce_11", "evt_b"]);
        let same_ms = merge(vec![], vec![call("ce_b", 5), call("ce_a", 5)], 10);
        assert_eq!(ids(&same_ms), ["ce_a", "ce_b"]);
    }

    #[test]
    fn limit_keeps_the_oldest_of_the_merged_list() {
        let merged = merge(
            vec![admin("evt_a", 100), admin("evt_b", 103)],
            vec![call("ce_1", 101_000), call("ce_2", 102_000)],
            3,
        );
        assert_eq!(ids(&merged), ["evt_a", "ce_1", "ce_2"]);
    }

    #[test]
    fn calls_carry_their_own_fields_and_admin_events_keep_their_shape() {
        let merged = merge(vec![admin("evt_a", 100)], vec![call("ce_1", 101_234)], 10);
        assert_eq!(
            merged[0].to_json(),
            json!({"id": "evt_a", "time": 100, "workspace": "eng", "actor": "admin",
                   "action": "install", "target": "github", "outcome": "ok"})
        );
        assert_eq!(
            merged[1].to_json(),
            json!({"id": "ce_1", "time": 101, "time_ms": 101_234, "workspace": "eng",
                   "actor": "alice", "action": "tool_call", "target": "github__create_issue",
                   "outcome": "tool_error", "server": "github", "token": "Alice Cursor",
                   "latency_ms": 12.345, "request_id": "7", "transport": "streamable_http"})
        );
    }
}
