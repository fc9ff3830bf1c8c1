//! The checks an [`AuditBatch`] passes before any of its events is stored. They are
//! cheap (lengths and ranges only) because proxies send a batch every few seconds,
//! and all-or-nothing: a batch with one bad event is refused whole, so a proxy never
//! has to work out which part of a batch was kept.

use gatehouse_config::audit::{AuditBatch, CallEvent};
use gatehouse_config::Problem;

/// The most events one batch may carry; a proxy with a bigger backlog sends it in
/// parts. It bounds the time the store's write lock is held by one batch.
pub const MAX_BATCH_EVENTS: usize = 5_000;

/// The largest request body `POST /v1/proxy/audit` reads. Generous for
/// [`MAX_BATCH_EVENTS`] events of ordinary size (~300 bytes each); a batch that
/// only fits with longer fields must be split.
pub const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// At most this many problems are reported: enough to fix a sender, and the error
/// body stays small however broken the batch is.
const MAX_PROBLEMS: usize = 20;

/// Longest accepted event id; proxies send `ce_` + 32 hex digits.
pub const MAX_ID_LEN: usize = 64;

/// Why a batch was refused; nothing of it was stored.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("an audit batch holds at most {MAX_BATCH_EVENTS} events, this one has {found}: send it in parts")]
    TooManyEvents { found: usize },
    #[error("invalid audit batch: {} problem(s), nothing was stored", .problems.len())]
    Invalid { problems: Vec<Problem> },
}

/// Checks every field of `batch` that is stored as text or as a number; the first
/// [`MAX_PROBLEMS`] problems found are reported.
pub fn validate(batch: &AuditBatch) -> Result<(), BatchError> {
    if batch.events.len() > MAX_BATCH_EVENTS {
        return Err(BatchError::TooManyEvents {
            found: batch.events.len(),
        });
    }
    let mut problems = Problems::default();
    problems.text("proxy_id", &batch.proxy_id, 1, 256);
    for (index, event) in batch.events.iter().enumerate() {
        check_event(&mut problems, index, event);
        if problems.full() {
            break;
        }
    }
    if problems.list.is_empty() {
        Ok(())
    } else {
        Err(BatchError::Invalid {
            problems: problems.list,
        })
    }
}

fn check_event(problems: &mut Problems, index: usize, e: &CallEvent) {
    let at = |field: &str| format!("events[{index}].{field}");
    problems.text(&at("id"), &e.id, 1, MAX_ID_LEN);
    // Ids are echoed in listings and CLI tables: no spaces or control characters.
    if !e.id.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(at("id"), "must be printable ASCII without spaces".into());
    }
    if e.time_ms < 0 {
        problems.push(
            at("time_ms"),
            format!("must not be negative, got {}", e.time_ms),
        );
    }
    // Stored in a signed 64-bit column.
    if i64::try_from(e.latency_us).is_err() {
        problems.push(
            at("latency_us"),
            format!("{} is out of range", e.latency_us),
        );
    }
    problems.text(&at("workspace"), &e.workspace, 1, 64);
    problems.text(&at("token_id"), &e.token_id, 0, 64);
    problems.text(&at("token_name"), &e.token_name, 0, 256);
    problems.text(&at("server"), &e.server, 0, 64);
    problems.text(&at("target"), &e.target, 0, 2048);
    problems.text(&at("request_id"), &e.request_id, 0, 256);
    problems.text(&at("transport"), &e.transport, 0, 32);
}

#[derive(Default)]
struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    fn full(&self) -> bool {
        self.list.len() >= MAX_PROBLEMS
    }

    fn push(&mut self, path: String, message: String) {
        if !self.full() {
            self.list.push(Problem { path, message });
        }
    }

    /// Lengths are in bytes: what the store and the request body pay for.
    fn text(&mut self, path: &str, value: &str, min: usize, max: usize) {
        if value.len() < min {
            self.push(path.to_owned(), "must not be empty".into());
        } else if value.len() > max {
            self.push(
                path.to_owned(),
                format!("is {} bytes long, at most {max} are accepted", value.len()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::audit::{CallAction, CallOutcome};

    fn event(id: &str) -> CallEvent {
        CallEvent {
            id: id.into(),
            time_ms: 1_700_000_000_000,
            workspace: "engineering".into(),
            token_id: "tok_1".into(),
            token_name: "Alice Cursor".into(),
            action: CallAction::ToolCall,
            server: "github".into(),
            target: "github__create_issue".into(),
            outcome: CallOutcome::Ok,
            latency_us: 1_500,
            request_id: "7".into(),
            transport: "streamable_http".into(),
        }
    }

    fn batch(events: Vec<CallEvent>) -> AuditBatch {
        AuditBatch {
            proxy_id: "px_1".into(),
            events,
        }
    }

    fn problems(batch: &AuditBatch) -> Vec<String> {
        match validate(batch) {
            Err(BatchError::Invalid { problems }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_well_formed_batch_passes() {
        validate(&batch(vec![event("ce_1"), event("ce_2")])).unwrap();
        validate(&batch(vec![])).unwrap();
    }

    #[test]
    fn bad_fields_are_named_by_path() {
        let mut long = event(&"x".repeat(MAX_ID_LEN + 1));
        long.time_ms = -1;
        let mut spaced = event("ce 2");
        spaced.latency_us = u64::MAX;
        spaced.target = "t".repeat(2049);
        assert_eq!(
            problems(&batch(vec![event("ce_0"), event(""), long, spaced])),
            [
                "events[1].id: must not be empty",
                "events[2].id: is 65 bytes long, at most 64 are accepted",
                "events[2].time_ms: must not be negative, got -1",
                "events[3].id: must be printable ASCII without spaces",
                "events[3].latency_us: 18446744073709551615 is out of range",
                "events[3].target: is 2049 bytes long, at most 2048 are accepted",
            ]
        );
    }

    #[test]
    fn problems_are_capped() {
        let events = (0..100).map(|_| event("")).collect();
        assert_eq!(problems(&batch(events)).len(), MAX_PROBLEMS);
    }

    #[test]
    fn too_many_events_are_refused_before_looking_at_them() {
        let events = vec![event(""); MAX_BATCH_EVENTS + 1];
        let err = validate(&batch(events)).unwrap_err();
        assert!(matches!(err, BatchError::TooManyEvents { found: 5_001 }));
        assert!(err.to_string().contains("at most 5000 events"), "{err}");
    }
}
