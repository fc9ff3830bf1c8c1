//! A workspace's audit log as one list: the admin events (installs, tokens, ...)
//! and the routed calls, in the order they happened, and the cursors its pages are
//! walked by (an entry's place in that order, so a page starts where the last
//! ended however many entries came before it).

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

    /// This entry's place in the list, as a page cursor: `<milliseconds>.<id>`.
    pub fn cursor(&self) -> String {
        let (ms, id) = self.order_key();
        format!("{ms}.{id}")
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

/// [`AuditEntry::cursor`] of an entry as the API shows it (`time_ms` for a call,
/// whole seconds `time` for an admin event).
pub fn cursor_of_json(entry: &Value) -> Option<String> {
    let ms = entry["time_ms"]
        .as_i64()
        .or_else(|| entry["time"].as_i64().map(|t| t.saturating_mul(1_000)))?;
    Some(format!("{ms}.{}", entry["id"].as_str()?))
}

/// The place a [`AuditEntry::cursor`] names; `None` for text that is not one.
pub fn parse_cursor(text: &str) -> Option<(i64, String)> {
    let (ms, id) = text.split_once('.')?;
    let ms = ms.parse().ok()?;
    (!id.is_empty()).then(|| (ms, id.to_owned()))
}

/// The first `limit` entries of both lists, oldest first (newest first when
/// `newest_first`). Each list is already its own first `limit` in that order (the
/// store sorts, starts and limits the same way), so nothing that belongs in the
/// result was left behind by either query.
pub fn merge(
    admin: Vec<AuditRow>,
    calls: Vec<CallEventRow>,
    limit: usize,
    newest_first: bool,
) -> Vec<AuditEntry> {
    let mut all: Vec<AuditEntry> = admin
        .into_iter()
        .map(AuditEntry::Admin)
        .chain(calls.into_iter().map(AuditEntry::Call))
        .collect();
    all.sort_by(|a, b| {
        let order = a.order_key().cmp(&b.order_key());
        if newest_first {
            order.reverse()
        } else {
            order
        }
    });
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
            false,
        );
        assert_eq!(ids(&merged), ["evt_a", "ce_ff", "ce_00", "ce_11", "evt_b"]);
        let same_ms = merge(vec![], vec![call("ce_b", 5), call("ce_a", 5)], 10, false);
        assert_eq!(ids(&same_ms), ["ce_a", "ce_b"]);
    }

    #[test]
    fn limit_keeps_the_oldest_of_the_merged_list() {
        let merged = merge(
            vec![admin("evt_a", 100), admin("evt_b", 103)],
            vec![call("ce_1", 101_000), call("ce_2", 102_000)],
            3,
            false,
        );
        assert_eq!(ids(&merged), ["evt_a", "ce_1", "ce_2"]);
    }

    #[test]
    fn newest_first_keeps_the_newest_and_cursors_name_the_place() {
        let merged = merge(
            vec![admin("evt_a", 100), admin("evt_b", 103)],
            vec![call("ce_1", 101_000), call("ce_2", 102_000)],
            3,
            true,
        );
        assert_eq!(ids(&merged), ["evt_b", "ce_2", "ce_1"]);
        assert_eq!(merged[0].cursor(), "103000.evt_b");
        assert_eq!(merged[2].cursor(), "101000.ce_1");
        for entry in &merged {
            assert_eq!(cursor_of_json(&entry.to_json()), Some(entry.cursor()));
        }
        assert_eq!(
            parse_cursor("101000.ce_1"),
            Some((101_000, "ce_1".to_owned()))
        );
        // Ids may hold dots: the time ends at the first.
        assert_eq!(parse_cursor("-5.a.b"), Some((-5, "a.b".to_owned())));
        for bad in ["", "101000", "x.ce_1", "101000.", ".ce_1"] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn calls_carry_their_own_fields_and_admin_events_keep_their_shape() {
        let merged = merge(
            vec![admin("evt_a", 100)],
            vec![call("ce_1", 101_234)],
            10,
            false,
        );
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
