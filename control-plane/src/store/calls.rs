//! The `call_events` table: routed MCP calls reported by proxies, stored once per
//! event id however often a batch is resent.

use futures::TryStreamExt;
use gatehouse_config::audit::CallEvent;

use super::{now, AuditQuery, Store, WorkspaceRow};
use crate::calls::analytics::{Analytics, CallSample};

/// One stored call, as the audit listing shows it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CallEventRow {
    pub id: String,
    /// The proxy's clock, unix milliseconds.
    pub time_ms: i64,
    pub workspace: String,
    pub token_id: String,
    pub token_name: String,
    /// The token creator's username when the event arrived, else the token name.
    pub actor: String,
    pub action: String,
    pub server: String,
    pub target: String,
    pub outcome: String,
    pub latency_us: i64,
    pub request_id: String,
    pub transport: String,
    pub proxy_id: String,
    /// The control plane's clock, unix seconds.
    pub received_at: i64,
}

/// Per-event parameters of the insert; the proxy id and receive time are shared.
const EVENT_PARAMS: usize = 12;

/// Rows per INSERT statement: one statement per event would make a 5,000-event batch
/// 5,000 round trips to the database while holding its write lock. 64 rows keep a
/// statement under SQLite's historic limit of 999 parameters.
const ROWS_PER_STATEMENT: usize = 64;
const _: () = assert!(2 + ROWS_PER_STATEMENT * EVENT_PARAMS <= 999);

/// `INSERT ... VALUES (..), (..) ON CONFLICT (id) DO NOTHING` for `rows` events.
/// `$1` is the proxy id and `$2` the receive time; each row then takes
/// [`EVENT_PARAMS`] parameters. The actor is looked up in the same statement so it
/// is resolved against the tokens as they are when the batch is stored.
fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO call_events (id, time_ms, workspace, token_id, token_name, actor, action, \
         server, target, outcome, latency_us, request_id, transport, proxy_id, received_at) VALUES ",
    );
    for row in 0..rows {
        let p = |n: usize| format!("${}", 3 + row * EVENT_PARAMS + n);
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "({id}, {time}, {ws}, {tok}, {name}, COALESCE((SELECT u.username FROM workspace_tokens t \
             JOIN users u ON u.id = t.created_by WHERE t.id = {tok}), {name}), {action}, {server}, \
             {target}, {outcome}, {latency}, {request}, {transport}, $1, $2)",
            id = p(0),
            time = p(1),
            ws = p(2),
            tok = p(3),
            name = p(4),
            action = p(5),
            server = p(6),
            target = p(7),
            outcome = p(8),
            latency = p(9),
            request = p(10),
            transport = p(11),
        ));
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

impl Store {
    /// Stores the events of one batch in one transaction; an id already stored (a
    /// resent batch, or a repeat inside this one) is skipped. Returns how many
    /// events were new.
    pub async fn insert_call_events(
        &self,
        proxy_id: &str,
        events: &[CallEvent],
    ) -> Result<u64, sqlx::Error> {
        let received_at = now();
        let mut tx = self.begin().await?;
        let mut stored = 0;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let sql = insert_sql(chunk.len());
            let mut query = sqlx::query(&sql).bind(proxy_id).bind(received_at);
            for e in chunk {
                query = query
                    .bind(&e.id)
                    .bind(e.time_ms)
                    .bind(&e.workspace)
                    .bind(&e.token_id)
                    .bind(&e.token_name)
                    .bind(e.action.as_str())
                    .bind(&e.server)
                    .bind(&e.target)
                    .bind(e.outcome.as_str())
                    // Validated to fit before the batch got here.
                    .bind(i64::try_from(e.latency_us).unwrap_or(i64::MAX))
                    .bind(&e.request_id)
                    .bind(&e.transport);
            }
            stored += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Calls of the workspace since it was (last) created, filtered like the admin
    /// events: `actor` matches the actor or the token name. Oldest first, at most
    /// `q.limit`.
    pub async fn call_events(
        &self,
        ws: &WorkspaceRow,
        q: &AuditQuery,
    ) -> Result<Vec<CallEventRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM call_events WHERE workspace = $1 AND time_ms >= $2 \
             AND ($3 = '' OR actor = $3 OR token_name = $3) AND ($4 = '' OR action = $4) \
             ORDER BY time_ms, id LIMIT $5",
        )
        .bind(&ws.slug)
        .bind(from_ms(ws, q.since))
        .bind(q.actor.clone().unwrap_or_default())
        .bind(q.action.clone().unwrap_or_default())
        .bind(q.limit)
        .fetch_all(&self.pool)
        .await
    }

    /// The analytics of the workspace's calls since `since` (unix seconds), read as
    /// a stream so only the latencies are held, not the rows.
    pub async fn call_analytics(
        &self,
        ws: &WorkspaceRow,
        since: i64,
    ) -> Result<Analytics, sqlx::Error> {
        let mut rows = sqlx::query_as::<_, CallSample>(
            "SELECT server, target, action, token_id, token_name, actor, outcome, latency_us \
             FROM call_events WHERE workspace = $1 AND time_ms >= $2",
        )
        .bind(&ws.slug)
        .bind(from_ms(ws, Some(since)))
        .fetch(&self.pool);
        let mut analytics = Analytics::default();
        while let Some(sample) = rows.try_next().await? {
            analytics.add(sample);
        }
        Ok(analytics)
    }
}

/// The first millisecond to list: `since`, but never before the workspace was
/// created, so a reused slug starts clean (to the second: `created_at` is in
/// seconds).
fn from_ms(ws: &WorkspaceRow, since: Option<i64>) -> i64 {
    since.unwrap_or(0).max(ws.created_at).saturating_mul(1_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewToken;
    use gatehouse_config::audit::{CallAction, CallOutcome};

    /// A store in a fresh directory with user `admin` and workspace `eng`, whose
    /// token `tok_admin` admin created.
    async fn store_with_workspace() -> (tempfile::TempDir, Store, WorkspaceRow) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).await.unwrap();
        let admin = store
            .insert_user("admin", "admin@localhost", true, "x", "test")
            .await
            .unwrap();
        let token = NewToken {
            id: "tok_admin".into(),
            name: "Admin Laptop".into(),
            sha256: "00".repeat(32),
            expires_at: None,
            created_by: admin.id.clone(),
        };
        store
            .insert_workspace("eng", "Eng", &admin.id, &token, "admin")
            .await
            .unwrap();
        let ws = store
            .visible_workspace(&admin.id, "eng")
            .await
            .unwrap()
            .unwrap();
        (dir, store, ws)
    }

    fn event(id: String, time_ms: i64, token_id: &str) -> CallEvent {
        CallEvent {
            id,
            time_ms,
            workspace: "eng".into(),
            token_id: token_id.into(),
            token_name: format!("{token_id} name"),
            action: CallAction::ToolCall,
            server: "github".into(),
            target: "github__create_issue".into(),
            outcome: CallOutcome::Ok,
            latency_us: 1_000,
            request_id: "1".into(),
            transport: "streamable_http".into(),
        }
    }

    fn query(limit: i64) -> AuditQuery {
        AuditQuery {
            limit,
            ..AuditQuery::default()
        }
    }

    #[tokio::test]
    async fn a_batch_is_stored_once_across_statements_and_resends() {
        let (_dir, store, ws) = store_with_workspace().await;
        let base = (ws.created_at + 1) * 1_000;
        let mut events: Vec<CallEvent> = (0..150)
            .map(|i| event(format!("ce_{i:03}"), base + i, "tok_admin"))
            .collect();
        // A repeat inside the batch, in another INSERT statement than the first.
        events.push(events[0].clone());
        assert_eq!(store.insert_call_events("px", &events).await.unwrap(), 150);
        assert_eq!(store.insert_call_events("px", &events).await.unwrap(), 0);
        let listed = store.call_events(&ws, &query(1_000)).await.unwrap();
        assert_eq!(listed.len(), 150);
        assert_eq!(listed[0].id, "ce_000");
        assert_eq!(listed[149].id, "ce_149");
        assert_eq!(listed[0].proxy_id, "px");
    }

    #[tokio::test]
    async fn actor_is_the_token_creator_else_the_token_name() {
        let (_dir, store, ws) = store_with_workspace().await;
        let base = (ws.created_at + 1) * 1_000;
        let events = [
            event("ce_a".into(), base, "tok_admin"),
            event("ce_b".into(), base + 1, "tok_gone"),
        ];
        store.insert_call_events("px", &events).await.unwrap();
        let actors: Vec<(String, String)> = store
            .call_events(&ws, &query(10))
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.id, c.actor))
            .collect();
        assert_eq!(
            actors,
            [
                ("ce_a".to_owned(), "admin".to_owned()),
                ("ce_b".to_owned(), "tok_gone name".to_owned())
            ]
        );
    }

    #[tokio::test]
    async fn listing_filters_and_starts_at_the_workspace_creation() {
        let (_dir, store, ws) = store_with_workspace().await;
        let base = (ws.created_at + 10) * 1_000;
        let mut prompt = event("ce_prompt".into(), base + 5_000, "tok_other");
        prompt.action = CallAction::PromptGet;
        let events = [
            // Before the workspace (a former one with the same slug).
            event("ce_old".into(), (ws.created_at - 1) * 1_000, "tok_admin"),
            event("ce_1".into(), base, "tok_admin"),
            event("ce_2".into(), base + 1_000, "tok_other"),
            prompt,
        ];
        store.insert_call_events("px", &events).await.unwrap();
        let ids = |q: AuditQuery| {
            let store = store.clone();
            let ws = ws.clone();
            async move {
                let rows = store.call_events(&ws, &q).await.unwrap();
                rows.into_iter().map(|c| c.id).collect::<Vec<_>>()
            }
        };
        assert_eq!(ids(query(10)).await, ["ce_1", "ce_2", "ce_prompt"]);
        assert_eq!(ids(query(2)).await, ["ce_1", "ce_2"]);
        let by = |actor: &str| AuditQuery {
            actor: Some(actor.into()),
            ..query(10)
        };
        assert_eq!(ids(by("admin")).await, ["ce_1"]);
        assert_eq!(ids(by("tok_other name")).await, ["ce_2", "ce_prompt"]);
        let prompts = AuditQuery {
            action: Some("prompt_get".into()),
            ..query(10)
        };
        assert_eq!(ids(prompts).await, ["ce_prompt"]);
        let recent = AuditQuery {
            since: Some(ws.created_at + 11),
            ..query(10)
        };
        assert_eq!(ids(recent).await, ["ce_2", "ce_prompt"]);

        let report = store
            .call_analytics(&ws, ws.created_at + 11)
            .await
            .unwrap()
            .report();
        assert_eq!(report.totals.calls, 2);
        assert_eq!(report.tokens[0].actor, "tok_other name");
    }

    #[test]
    fn insert_sql_numbers_parameters_per_row() {
        let sql = insert_sql(2);
        assert!(sql.contains("($3, $4, $5, $6, $7, COALESCE("), "{sql}");
        assert!(sql.contains("WHERE t.id = $18), $19), $20"), "{sql}");
        assert!(
            sql.ends_with("$26, $1, $2) ON CONFLICT (id) DO NOTHING"),
            "{sql}"
        );
    }
}
