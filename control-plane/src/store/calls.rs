//! The `call_events` table: routed MCP calls reported by proxies, stored once per
//! event id however often a batch is resent.

use std::collections::{BTreeSet, HashMap};

use futures::TryStreamExt;
use gatehouse_config::audit::CallEvent;

use super::engine::{self, Engine};
use super::{now, AuditQuery, Store, WorkspaceRow};

/// One stored call, as analytics (`calls::analytics`) reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CallSample {
    pub server: String,
    pub target: String,
    pub action: String,
    pub token_id: String,
    pub token_name: String,
    pub actor: String,
    pub outcome: String,
    pub latency_us: i64,
}

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

/// Parameters of one row of the insert: the event's 12 fields, the actor, the proxy id
/// and the receive time.
const ROW_PARAMS: usize = 15;

/// Rows per INSERT statement: one statement per event would make a 5,000-event batch
/// 5,000 round trips to the database while holding its write lock. 60 rows keep a
/// statement under SQLite's historic limit of 999 parameters.
const ROWS_PER_STATEMENT: usize = 60;
const _: () = assert!(ROWS_PER_STATEMENT * ROW_PARAMS <= 999);

/// Rows one pruning statement deletes at most.
const PRUNE_BATCH: i64 = 5_000;

/// `INSERT ... VALUES (..), (..) ON CONFLICT (id) DO NOTHING` for `rows` events, with
/// [`ROW_PARAMS`] parameters per row in order: anonymous on SQLite, numbered on
/// PostgreSQL (see [`engine::push_param`]).
fn insert_sql(engine: Engine, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO call_events (id, time_ms, workspace, token_id, token_name, actor, action, \
         server, target, outcome, latency_us, request_id, transport, proxy_id, received_at) VALUES ",
    );
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..ROW_PARAMS {
            if column > 0 {
                sql.push_str(", ");
            }
            engine::push_param(engine, &mut sql, row * ROW_PARAMS + column + 1);
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

/// The username of the creator of each token the events name, read in the batch's
/// transaction so actors are resolved against the tokens as they are when it is
/// stored (one lookup per token, not per event). A token without a known creator is
/// absent: its events keep the token name as actor.
async fn token_creators<'e>(
    tx: &mut super::Tx<'_>,
    events: &'e [CallEvent],
) -> Result<HashMap<&'e str, String>, sqlx::Error> {
    let ids: BTreeSet<&str> = events.iter().map(|e| e.token_id.as_str()).collect();
    let mut actors = HashMap::with_capacity(ids.len());
    for id in ids {
        let creator: Option<String> = sqlx::query_scalar(
            "SELECT u.username FROM workspace_tokens t JOIN users u ON u.id = t.created_by \
             WHERE t.id = $1",
        )
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(name) = creator {
            actors.insert(id, name);
        }
    }
    Ok(actors)
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
        let actors = token_creators(&mut tx, events).await?;
        let mut stored = 0;
        for chunk in events.chunks(ROWS_PER_STATEMENT) {
            let sql = insert_sql(self.engine, chunk.len());
            let mut query = sqlx::query(&sql);
            for e in chunk {
                query = query
                    .bind(&e.id)
                    .bind(e.time_ms)
                    .bind(&e.workspace)
                    .bind(&e.token_id)
                    .bind(&e.token_name)
                    .bind(actors.get(e.token_id.as_str()).unwrap_or(&e.token_name))
                    .bind(e.action.as_str())
                    .bind(&e.server)
                    .bind(&e.target)
                    .bind(e.outcome.as_str())
                    // Validated to fit before the batch got here.
                    .bind(i64::try_from(e.latency_us).unwrap_or(i64::MAX))
                    .bind(&e.request_id)
                    .bind(&e.transport)
                    .bind(proxy_id)
                    .bind(received_at);
            }
            stored += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Calls of the workspace since it was (last) created, filtered like the admin
    /// events: `actor` matches the actor or the token name. In the query's order
    /// from its key on, at most `q.limit`.
    pub async fn call_events(
        &self,
        ws: &WorkspaceRow,
        q: &AuditQuery,
    ) -> Result<Vec<CallEventRow>, sqlx::Error> {
        let (order, past, reach) = q.direction();
        let (key_ms, key_id) = q.start();
        sqlx::query_as(&format!(
            "SELECT * FROM call_events WHERE workspace = $1 AND time_ms >= $2 \
             AND ($3 = '' OR actor = $3 OR token_name = $3) AND ($4 = '' OR action = $4) \
             AND time_ms {reach} $6 AND (time_ms {past} $6 OR id {past} $7) \
             ORDER BY time_ms {order}, id {order} LIMIT $5",
        ))
        .bind(&ws.slug)
        .bind(from_ms(ws, q.since))
        .bind(q.actor.clone().unwrap_or_default())
        .bind(q.action.clone().unwrap_or_default())
        .bind(q.limit)
        .bind(key_ms)
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Deletes the calls made before `before_ms` (unix milliseconds): workspace by
    /// workspace along the `(workspace, time_ms)` index, at most [`PRUNE_BATCH`] rows a
    /// statement so a large backlog never holds the database's write lock for long.
    /// Returns how many went.
    pub async fn prune_call_events(&self, before_ms: i64) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        // Slugs are never empty, so every workspace sorts after "".
        let mut after = String::new();
        while let Some(workspace) = sqlx::query_scalar::<_, Option<String>>(
            "SELECT MIN(workspace) FROM call_events WHERE workspace > $1",
        )
        .bind(&after)
        .fetch_one(&self.pool)
        .await?
        {
            loop {
                let gone = sqlx::query(
                    "DELETE FROM call_events WHERE id IN (SELECT id FROM call_events \
                     WHERE workspace = $1 AND time_ms < $2 LIMIT $3)",
                )
                .bind(&workspace)
                .bind(before_ms)
                .bind(PRUNE_BATCH)
                .execute(&self.pool)
                .await?
                .rows_affected();
                deleted += gone;
                if gone < PRUNE_BATCH as u64 {
                    break;
                }
            }
            after = workspace;
        }
        Ok(deleted)
    }

    /// Hands `each` every call of the workspace since `since` (unix seconds), read as a
    /// stream so that only what `each` keeps is held, not the rows.
    pub async fn each_call_sample(
        &self,
        ws: &WorkspaceRow,
        since: i64,
        mut each: impl FnMut(CallSample),
    ) -> Result<(), sqlx::Error> {
        let mut rows = sqlx::query_as::<_, CallSample>(
            "SELECT server, target, action, token_id, token_name, actor, outcome, latency_us \
             FROM call_events WHERE workspace = $1 AND time_ms >= $2",
        )
        .bind(&ws.slug)
        .bind(from_ms(ws, Some(since)))
        .fetch(&self.pool);
        while let Some(sample) = rows.try_next().await? {
            each(sample);
        }
        Ok(())
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
    use crate::calls::analytics::Analytics;
    use crate::store::testing::{self, on_both_engines};
    use crate::store::NewToken;
    use gatehouse_config::audit::{CallAction, CallOutcome};

    /// A fresh store on `engine` with user `admin` and workspace `eng`, whose token
    /// `tok_admin` admin created.
    async fn store_with_workspace(
        engine: Engine,
    ) -> (Option<tempfile::TempDir>, Store, WorkspaceRow) {
        let (dir, store) = testing::fresh(engine).await;
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
            scope: None,
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

    on_both_engines! {
    async fn a_batch_is_stored_once_across_statements_and_resends(engine: Engine) {
        let (_dir, store, ws) = store_with_workspace(engine).await;
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
    }

    on_both_engines! {
    async fn pruning_deletes_older_calls_of_every_workspace_and_nothing_newer(engine: Engine) {
        let (_dir, store, ws) = store_with_workspace(engine).await;
        let cutoff = (ws.created_at + 100) * 1_000;
        let in_ws = |slug: &str, id: String, time_ms: i64| CallEvent {
            workspace: slug.into(),
            ..event(id, time_ms, "tok_admin")
        };
        // More old calls in `eng` than one statement deletes, and some in two other
        // workspaces (one sorting before it, one after; neither exists any more).
        let mut events: Vec<CallEvent> = (0..PRUNE_BATCH + 7)
            .map(|i| in_ws("eng", format!("ce_old_{i}"), cutoff - 1 - i))
            .collect();
        events.push(in_ws("alpha", "ce_alpha_old".into(), cutoff - 1));
        events.push(in_ws("zeta", "ce_zeta_old".into(), 0));
        events.push(in_ws("alpha", "ce_alpha_new".into(), cutoff));
        events.push(in_ws("eng", "ce_eng_new".into(), cutoff + 1));
        for chunk in events.chunks(1_000) {
            store.insert_call_events("px", chunk).await.unwrap();
        }
        assert_eq!(
            store.prune_call_events(cutoff).await.unwrap(),
            PRUNE_BATCH as u64 + 9
        );
        let left: Vec<String> = sqlx::query_scalar("SELECT id FROM call_events ORDER BY id")
            .fetch_all(&store.pool)
            .await
            .unwrap();
        assert_eq!(left, ["ce_alpha_new", "ce_eng_new"]);
        assert_eq!(store.prune_call_events(cutoff).await.unwrap(), 0);
    }
    }

    on_both_engines! {
    /// A transaction that read before another connection committed a write can still
    /// write: what an audit batch needs while the pruning deletes.
    async fn a_transaction_that_read_first_still_writes_after_another_writer(engine: Engine) {
        let (_dir, store, ws) = store_with_workspace(engine).await;
        let mut tx = store.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM call_events")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        let other = store.clone();
        let late = event("ce_other".into(), (ws.created_at + 1) * 1_000, "tok_admin");
        let mut writer = tokio::spawn(async move { other.insert_call_events("px", &[late]).await });
        // Let the other writer commit first if it can (on SQLite it cannot while `tx`
        // holds the write lock, and waits for it; on PostgreSQL it commits now).
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(300), &mut writer).await;
        sqlx::query("DELETE FROM call_events WHERE id = 'ce_none'")
            .execute(&mut *tx)
            .await
            .expect("the transaction's write");
        tx.commit().await.unwrap();
        let stored = match early {
            Ok(done) => done,
            Err(_) => writer.await,
        };
        assert_eq!(stored.unwrap().unwrap(), 1);
    }
    }

    on_both_engines! {
    async fn actor_is_the_token_creator_else_the_token_name(engine: Engine) {
        let (_dir, store, ws) = store_with_workspace(engine).await;
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
    }

    on_both_engines! {
    async fn listing_filters_and_starts_at_the_workspace_creation(engine: Engine) {
        let (_dir, store, ws) = store_with_workspace(engine).await;
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

        let report = Analytics::of_workspace(&store, &ws, ws.created_at + 11)
            .await
            .unwrap()
            .report();
        assert_eq!(report.totals.calls, 2);
        assert_eq!(report.tokens[0].actor, "tok_other name");
    }
    }

    on_both_engines! {
    /// Keyset pages of admin events and calls merged, in both orders, reach every
    /// entry once, whatever the page size, with calls sharing a millisecond and
    /// admin events sharing their second with calls.
    async fn keyset_pages_reach_every_entry_once_in_both_orders(engine: Engine) {
        use crate::calls::listing::{merge, AuditEntry};
        let (_dir, store, ws) = store_with_workspace(engine).await;
        let base = (ws.created_at + 1) * 1_000;
        // Three calls a millisecond, some in the very second (and millisecond) the
        // admin events below are stamped with.
        let events: Vec<CallEvent> = (0..45)
            .map(|i| event(format!("ce_{:03}", (i * 7) % 45), base + i / 3, "tok_admin"))
            .collect();
        store.insert_call_events("px", &events).await.unwrap();
        // Admin events in the second of the first calls: their key ties with those
        // calls' millisecond, and ids break the tie.
        for n in 0..3 {
            sqlx::query(
                "INSERT INTO audit_events (id, time, workspace, actor, action, target, outcome) \
                 VALUES ($1, $2, 'eng', 'admin', 'install', 'github', 'ok')",
            )
            .bind(format!("evt_{n}"))
            .bind(ws.created_at + 1)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        let everything = |newest_first| AuditQuery {
            newest_first,
            ..query(1_000)
        };
        let all_at_once = |newest_first| {
            let q = everything(newest_first);
            let store = &store;
            let ws = &ws;
            async move {
                let admin = store.audit_events(ws, true, &q).await.unwrap();
                let calls = store.call_events(ws, &q).await.unwrap();
                merge(admin, calls, 1_000, newest_first)
                    .iter()
                    .map(AuditEntry::cursor)
                    .collect::<Vec<_>>()
            }
        };
        let oldest_first = all_at_once(false).await;
        let admin = store.audit_events(&ws, true, &everything(false)).await.unwrap();
        assert!(admin.len() >= 4, "{admin:?}");
        assert_eq!(oldest_first.len(), 45 + admin.len(), "{oldest_first:?}");
        let mut reversed = oldest_first.clone();
        reversed.reverse();
        assert_eq!(all_at_once(true).await, reversed);
        for newest_first in [false, true] {
            for page in [1, 2, 7, 48, 49, 50] {
                let mut walked = Vec::new();
                let mut after = None;
                loop {
                    let q = AuditQuery {
                        after: after.clone(),
                        ..AuditQuery {
                            limit: page,
                            ..everything(newest_first)
                        }
                    };
                    let admin = store.audit_events(&ws, true, &q).await.unwrap();
                    let calls = store.call_events(&ws, &q).await.unwrap();
                    let got = merge(admin, calls, page as usize, newest_first);
                    walked.extend(got.iter().map(AuditEntry::cursor));
                    if got.len() < page as usize {
                        break;
                    }
                    after = got.last().map(|e| crate::calls::listing::parse_cursor(&e.cursor()).unwrap());
                }
                let expected = if newest_first { &reversed } else { &oldest_first };
                assert_eq!(&walked, expected, "pages of {page}, newest first {newest_first}");
            }
        }
    }
    }

    #[test]
    fn insert_sql_has_one_parameter_per_bound_value() {
        for rows in [1, 2, ROWS_PER_STATEMENT] {
            let sql = insert_sql(Engine::Sqlite, rows);
            assert_eq!(sql.matches('?').count(), rows * ROW_PARAMS, "{sql}");
            assert!(!sql.contains('$'), "{sql}");
            assert!(sql.ends_with(") ON CONFLICT (id) DO NOTHING"), "{sql}");
            let sql = insert_sql(Engine::Postgres, rows);
            assert!(!sql.contains('?'), "{sql}");
            let last = rows * ROW_PARAMS;
            assert!(sql.contains(&format!("${last})")), "{sql}");
            assert!(!sql.contains(&format!("${}", last + 1)), "{sql}");
        }
    }
}
