//! Moving a whole store to another database (`gatehouse migrate`): every table,
//! row for row, into an empty store of the same schema version, in one transaction
//! on the target so a failed copy leaves it empty.

use sqlx::any::AnyRow;
use sqlx::Row;

use super::Store;

/// How a column's values are read and bound.
#[derive(Clone, Copy)]
enum Kind {
    Text,
    OptText,
    Int,
    OptInt,
    Bytes,
}

use Kind::{Bytes, Int, OptInt, OptText, Text};

/// Every table of the schema with its columns, parents before the tables that refer
/// to them. `config_version` and `schema_migrations` are not rows to copy: the target
/// has its own (the version is carried over by [`Store::copy_into`]).
const TABLES: &[(&str, &[(&str, Kind)])] = &[
    (
        "users",
        &[
            ("id", Text),
            ("username", Text),
            ("email", Text),
            ("admin", Int),
            ("credential_sha256", Text),
            ("created_at", Int),
        ],
    ),
    (
        "workspaces",
        &[
            ("id", Text),
            ("slug", Text),
            ("name", Text),
            ("owner_id", Text),
            ("created_at", Int),
            ("limits", OptText),
        ],
    ),
    (
        "workspace_members",
        &[("workspace_id", Text), ("user_id", Text), ("role", Text)],
    ),
    (
        "workspace_tokens",
        &[
            ("id", Text),
            ("workspace_id", Text),
            ("name", Text),
            ("sha256", Text),
            ("created_at", Int),
            ("expires_at", OptInt),
            ("last_used_at", OptInt),
            ("revoked_at", OptInt),
            ("created_by", OptText),
            ("limits", OptText),
            ("scope", OptText),
        ],
    ),
    (
        "servers",
        &[
            ("id", Text),
            ("workspace_id", Text),
            ("slug", Text),
            ("url", Text),
            ("transport", Text),
            ("headers", Text),
            ("policy", Text),
            ("enabled", Int),
            ("created_at", Int),
            ("package", OptText),
            ("installed_by", OptText),
            ("tools", OptText),
            ("naming", Text),
            ("command", OptText),
            ("args", OptText),
            ("env", OptText),
            ("limits", OptText),
        ],
    ),
    (
        "tool_overrides",
        &[("server_id", Text), ("tool", Text), ("shape", Text)],
    ),
    (
        "secrets",
        &[
            ("server_id", Text),
            ("name", Text),
            ("sealed", Bytes),
            ("updated_at", Int),
        ],
    ),
    (
        "audit_events",
        &[
            ("id", Text),
            ("time", Int),
            ("workspace", Text),
            ("actor", Text),
            ("action", Text),
            ("target", Text),
            ("outcome", Text),
        ],
    ),
    ("settings", &[("name", Text), ("sealed", Bytes)]),
    (
        "team_members",
        &[
            ("id", Text),
            ("owner_id", Text),
            ("email", Text),
            ("member_id", OptText),
            ("status", Text),
            ("code_sha256", Text),
            ("invited_at", Int),
            ("expires_at", Int),
            ("joined_at", OptInt),
        ],
    ),
    (
        "packages",
        &[
            ("id", Text),
            ("owner_id", Text),
            ("name", Text),
            ("kind", Text),
            ("visibility", Text),
            ("description", Text),
            ("category", Text),
            ("tags", Text),
            ("high_water", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "package_versions",
        &[
            ("package_id", Text),
            ("version", Text),
            ("manifest", Text),
            ("published_at", Int),
        ],
    ),
    (
        "call_events",
        &[
            ("id", Text),
            ("time_ms", Int),
            ("workspace", Text),
            ("token_id", Text),
            ("token_name", Text),
            ("actor", Text),
            ("action", Text),
            ("server", Text),
            ("target", Text),
            ("outcome", Text),
            ("latency_us", Int),
            ("request_id", Text),
            ("transport", Text),
            ("proxy_id", Text),
            ("received_at", Int),
        ],
    ),
    ("revoked_sessions", &[("sha256", Text), ("expires_at", Int)]),
];

/// Why a copy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the target store is not empty (it has {users} users and {workspaces} workspaces): `gatehouse migrate` copies into a new database only")]
    TargetNotEmpty { users: i64, workspaces: i64 },
    #[error("copying table {table}: {source}")]
    Table {
        table: &'static str,
        source: sqlx::Error,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Rows copied per table, in [`TABLES`] order.
#[derive(Debug, Default)]
pub struct Copied {
    pub tables: Vec<(&'static str, u64)>,
    pub config_version: i64,
}

impl Store {
    /// Copies every row of this store into `target`, which must hold no users and no
    /// workspaces (a freshly created database). The target's config version becomes
    /// this store's, so proxies that reconnect to the new store never see it go
    /// backwards.
    pub async fn copy_into(&self, target: &Store) -> Result<Copied, CopyError> {
        let users = target.count_users().await?;
        let workspaces: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces")
            .fetch_one(&target.pool)
            .await?;
        if users > 0 || workspaces > 0 {
            return Err(CopyError::TargetNotEmpty { users, workspaces });
        }
        // Read from one consistent moment of the source.
        let mut from = self
            .pool
            .begin_with(super::engine::begin_snapshot(self.engine))
            .await?;
        let mut to = target.begin().await?;
        let mut copied = Copied::default();
        for (table, columns) in TABLES {
            let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
            let select = format!("SELECT {} FROM {table}", names.join(", "));
            let params: Vec<String> = (1..=columns.len()).map(|n| format!("${n}")).collect();
            let insert = format!(
                "INSERT INTO {table} ({}) VALUES ({})",
                names.join(", "),
                params.join(", ")
            );
            // Settings exist in a fresh target only if something wrote them; the
            // source's are the ones its master key sealed.
            if *table == "settings" {
                sqlx::query("DELETE FROM settings")
                    .execute(&mut *to)
                    .await
                    .map_err(|source| CopyError::Table { table, source })?;
            }
            let rows: Vec<AnyRow> = sqlx::query(&select)
                .fetch_all(&mut *from)
                .await
                .map_err(|source| CopyError::Table { table, source })?;
            for row in &rows {
                let mut query = sqlx::query(&insert);
                for (i, (_, kind)) in columns.iter().enumerate() {
                    let read = |source| CopyError::Table { table, source };
                    query = match kind {
                        Text => query.bind(row.try_get::<String, _>(i).map_err(read)?),
                        OptText => query.bind(row.try_get::<Option<String>, _>(i).map_err(read)?),
                        Int => query.bind(row.try_get::<i64, _>(i).map_err(read)?),
                        OptInt => query.bind(row.try_get::<Option<i64>, _>(i).map_err(read)?),
                        Bytes => query.bind(row.try_get::<Vec<u8>, _>(i).map_err(read)?),
                    };
                }
                query
                    .execute(&mut *to)
                    .await
                    .map_err(|source| CopyError::Table { table, source })?;
            }
            copied.tables.push((table, rows.len() as u64));
        }
        let version: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&mut *from)
            .await?;
        sqlx::query("UPDATE config_version SET version = $1 WHERE id = 1")
            .bind(version)
            .execute(&mut *to)
            .await?;
        from.commit().await?;
        to.commit().await?;
        copied.config_version = version;
        Ok(copied)
    }
}
