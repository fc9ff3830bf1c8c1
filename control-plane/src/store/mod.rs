//! The control plane's database: the embedded SQLite file by default, or PostgreSQL
//! (`--database postgres://...`), through sqlx's `Any` driver. Queries use `$N`
//! placeholders and SQL both engines accept, so each is written once; what differs
//! (migration files, how a transaction begins, many-parameter statements) is in
//! [`engine`]. Every change that alters what proxies serve runs in one transaction
//! that also writes its audit event and bumps the config version.
//!
//! This file owns the pool, the migrations, the shared transaction steps and the
//! core tables (users, workspaces, tokens, servers, secrets, audit events, settings).
//! Its submodules ([`calls`], [`packages`], [`teams`], [`sessions`]) build on it:
//! each adds its tables' queries to [`Store`] and defines their rows, which are
//! imported from there. [`copy`] moves a whole store from one database to another;
//! [`changes`] hears of the config changes other control planes make on the same
//! database; [`leases`] lets one of them at a time do what only one should.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Connection, Row};

use crate::crypto::random_id;

pub mod calls;
pub mod changes;
pub mod copy;
pub mod engine;
pub mod leases;
pub mod packages;
pub mod sessions;
pub mod teams;
#[cfg(test)]
pub(crate) mod testing;

pub use engine::{Database, Engine};

pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    database: Database,
}

/// Why a store could not be opened: which database, and what failed there. The
/// database is named as [`Database`] shows it, never with its password.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot connect to the PostgreSQL database at {target}: {error}")]
    Unreachable {
        /// `host:port/database`.
        target: String,
        error: sqlx::Error,
    },
    #[error("cannot open the store at {database}: {error}")]
    Open {
        database: Database,
        error: sqlx::Error,
    },
    #[error("cannot migrate the store at {database}: {error}")]
    Migrate {
        database: Database,
        error: sqlx::Error,
    },
    #[error("cannot create the data directory {path}: {error}")]
    DataDir { path: String, error: std::io::Error },
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub username: String,
    pub email: String,
    pub admin: i64,
    pub credential_sha256: String,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkspaceRow {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub owner: String,
    pub created_at: i64,
    pub servers: i64,
    pub tokens: i64,
    /// Its budgets as `WorkspaceLimits` JSON; `None`: none.
    pub limits: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    pub id: String,
    pub workspace_id: String,
    pub name: String,
    pub sha256: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Its own budget as `RateLimit` JSON; `None`: the workspace's `per_token`.
    pub limits: Option<String>,
    /// The tools it may see and call as `TokenScope` JSON (migration 11); `None`:
    /// every tool of its workspace.
    pub scope: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ServerRow {
    pub id: String,
    pub workspace_id: String,
    pub slug: String,
    pub url: String,
    pub transport: String,
    /// JSON object of header templates.
    pub headers: String,
    /// JSON of a `ToolPolicy`.
    pub policy: String,
    pub enabled: i64,
    pub created_at: i64,
    /// `@owner/name@version` when installed from a package.
    pub package: Option<String>,
    /// User id of whoever installed it.
    pub installed_by: Option<String>,
    /// A skill's tools as JSON (transport `skill`).
    pub tools: Option<String>,
    /// `prefixed` or `bare` (see migration 7).
    pub naming: String,
    /// A hosted stdio server's program (transport `stdio`, see migration 9).
    pub command: Option<String>,
    /// Its arguments, a JSON array of strings.
    pub args: Option<String>,
    /// Its plain environment values, a JSON object (secrets are kept sealed apart).
    pub env: Option<String>,
    /// Its timeouts and cap on calls in flight, `ServerLimits` JSON (migration 10);
    /// `None`: the defaults.
    pub limits: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecretRow {
    pub server_id: String,
    pub name: String,
    pub sealed: Vec<u8>,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub time: i64,
    pub workspace: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
}

/// Filters of the audit listing, and where a page of it starts.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    pub since: Option<i64>,
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: i64,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
    /// Only entries strictly past this one in the listing's order (keyset paging, so
    /// every page costs the same however deep): its time in milliseconds (an admin
    /// event's whole second times 1,000) and its id.
    pub after: Option<(i64, String)>,
}

impl AuditQuery {
    /// The `ORDER BY` direction, the comparison "past the key" needs, and its
    /// inclusive twin (a plain range on the time column, which the index serves, so a
    /// deep page does not scan the rows before it).
    fn direction(&self) -> (&'static str, &'static str, &'static str) {
        if self.newest_first {
            ("DESC", "<", "<=")
        } else {
            ("ASC", ">", ">=")
        }
    }

    /// The key to start past; with none, one every entry is past.
    fn start(&self) -> (i64, String) {
        self.after.clone().unwrap_or(if self.newest_first {
            (i64::MAX, String::new())
        } else {
            (i64::MIN, String::new())
        })
    }
}

const WORKSPACE_COLUMNS: &str = "w.id, w.slug, w.name, u.username AS owner, w.created_at, w.limits, \
    (SELECT COUNT(*) FROM servers s WHERE s.workspace_id = w.id) AS servers, \
    (SELECT COUNT(*) FROM workspace_tokens t WHERE t.workspace_id = w.id AND t.revoked_at IS NULL) AS tokens";

impl Store {
    /// Opens (creating if needed) `gatehouse.db` in `data_dir` and migrates it.
    pub async fn open(data_dir: &Path) -> Result<Store, OpenError> {
        Self::connect(&Database::Embedded(data_dir.to_owned())).await
    }

    /// Connects to `database` and brings its schema up to date. A PostgreSQL server
    /// that does not answer fails here, at once, with its address.
    pub async fn connect(database: &Database) -> Result<Store, OpenError> {
        sqlx::any::install_default_drivers();
        let engine = database.engine();
        if let Database::Embedded(dir) = database {
            std::fs::create_dir_all(dir).map_err(|error| OpenError::DataDir {
                path: dir.display().to_string(),
                error,
            })?;
        }
        let url = database.connect_url();
        let open = |error| OpenError::Open {
            database: database.clone(),
            error,
        };
        if engine == Engine::Postgres {
            // The pool retries a refused connection until its acquire timeout and then
            // reports only the timeout: one plain connection first gives the reason.
            let probe =
                AnyConnection::connect(&url)
                    .await
                    .map_err(|error| OpenError::Unreachable {
                        target: engine::postgres_target(&url),
                        error,
                    })?;
            probe.close().await.map_err(open)?;
        }
        // sqlx's SQLite driver enables foreign keys and a 5 s busy timeout by default.
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                Engine::Sqlite => 4,
                Engine::Postgres => 8,
            })
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(open)?;
        if engine == Engine::Sqlite {
            sqlx::raw_sql("PRAGMA journal_mode = WAL;")
                .execute(&pool)
                .await
                .map_err(open)?;
        }
        let store = Store {
            pool,
            engine,
            database: database.clone(),
        };
        store.migrate().await.map_err(|error| OpenError::Migrate {
            database: database.clone(),
            error,
        })?;
        Ok(store)
    }

    /// The engine this store runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Applies the migrations not applied yet, all in one transaction, which control
    /// planes starting together on one database take in turn.
    async fn migrate(&self) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        if let Some(lock) = engine::migration_lock(self.engine) {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await?;
        for (version, sql) in engine::migrations(self.engine) {
            let applied: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if applied.is_some() {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(version)
                .bind(now())
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "applied schema migration");
        }
        tx.commit().await
    }

    /// A write transaction (see [`engine::begin_write`] for how each engine starts
    /// one).
    pub async fn begin(&self) -> Result<Tx<'static>, sqlx::Error> {
        self.pool.begin_with(engine::begin_write(self.engine)).await
    }

    // ---- settings -------------------------------------------------------------

    pub async fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar("SELECT sealed FROM settings WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn put_setting(&self, name: &str, sealed: Vec<u8>) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO settings (name, sealed) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed")
            .bind(name)
            .bind(sealed)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Stores a setting that changes what proxies are told, with a new config version.
    pub async fn put_published_setting(
        &self,
        name: &str,
        sealed: Vec<u8>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO settings (name, sealed) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed")
            .bind(name)
            .bind(sealed)
            .execute(&mut *tx)
            .await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    // ---- users ----------------------------------------------------------------

    pub async fn user_by_name(&self, username: &str) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn users(&self) -> Result<Vec<UserRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM users ORDER BY username")
            .fetch_all(&self.pool)
            .await
    }

    pub async fn count_users(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
    }

    pub async fn insert_user(
        &self,
        username: &str,
        email: &str,
        admin: bool,
        credential_sha256: &str,
        actor: &str,
    ) -> Result<UserRow, sqlx::Error> {
        let user = UserRow {
            id: random_id("usr_"),
            username: username.to_string(),
            email: email.to_string(),
            admin: i64::from(admin),
            credential_sha256: credential_sha256.to_string(),
            created_at: now(),
        };
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO users (id, username, email, admin, credential_sha256, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&user.id)
            .bind(&user.username)
            .bind(&user.email)
            .bind(user.admin)
            .bind(&user.credential_sha256)
            .bind(user.created_at)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, "", actor, "user_create", username).await?;
        tx.commit().await?;
        Ok(user)
    }

    // ---- workspaces -----------------------------------------------------------

    /// The workspace if `user_id` owns it or is a member; `None` otherwise, whether or
    /// not it exists.
    pub async fn visible_workspace(
        &self,
        user_id: &str,
        slug: &str,
    ) -> Result<Option<WorkspaceRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces w JOIN users u ON u.id = w.owner_id \
             WHERE w.slug = $1 AND (w.owner_id = $2 OR EXISTS \
             (SELECT 1 FROM workspace_members m WHERE m.workspace_id = w.id AND m.user_id = $2) OR EXISTS \
             (SELECT 1 FROM team_members t WHERE t.owner_id = w.owner_id AND t.member_id = $2 AND t.status = 'active'))"
        ))
        .bind(slug)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await
    }

    pub async fn visible_workspaces(
        &self,
        user_id: &str,
    ) -> Result<Vec<WorkspaceRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces w JOIN users u ON u.id = w.owner_id \
             WHERE w.owner_id = $1 OR EXISTS \
             (SELECT 1 FROM workspace_members m WHERE m.workspace_id = w.id AND m.user_id = $1) OR EXISTS \
             (SELECT 1 FROM team_members t WHERE t.owner_id = w.owner_id AND t.member_id = $1 AND t.status = 'active') \
             ORDER BY w.slug"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn workspace_slug_taken(&self, slug: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM workspaces WHERE slug = $1")
            .bind(slug)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// Creates a workspace owned by `owner_id` with its first token.
    pub async fn insert_workspace(
        &self,
        slug: &str,
        name: &str,
        owner_id: &str,
        first_token: &NewToken,
        actor: &str,
    ) -> Result<String, sqlx::Error> {
        let id = random_id("ws_");
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO workspaces (id, slug, name, owner_id, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&id)
            .bind(slug)
            .bind(name)
            .bind(owner_id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO workspace_members (workspace_id, user_id, role) VALUES ($1, $2, 'owner')",
        )
        .bind(&id)
        .bind(owner_id)
        .execute(&mut *tx)
        .await?;
        audit(&mut tx, slug, actor, "workspace_create", slug).await?;
        insert_token(&mut tx, &id, first_token).await?;
        audit(&mut tx, slug, actor, "token_create", &first_token.name).await?;
        bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Deletes a workspace, its tokens, servers and secrets in one transaction.
    /// Returns (tokens revoked, servers removed, secrets deleted).
    pub async fn delete_workspace(
        &self,
        ws: &WorkspaceRow,
        actor: &str,
    ) -> Result<(i64, i64, i64), sqlx::Error> {
        let mut tx = self.begin().await?;
        let tokens = sqlx::query("DELETE FROM workspace_tokens WHERE workspace_id = $1")
            .bind(&ws.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "DELETE FROM tool_overrides WHERE server_id IN (SELECT id FROM servers WHERE workspace_id = $1)",
        )
        .bind(&ws.id)
        .execute(&mut *tx)
        .await?;
        let secrets = sqlx::query(
            "DELETE FROM secrets WHERE server_id IN (SELECT id FROM servers WHERE workspace_id = $1)",
        )
        .bind(&ws.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let servers = sqlx::query("DELETE FROM servers WHERE workspace_id = $1")
            .bind(&ws.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM workspace_members WHERE workspace_id = $1")
            .bind(&ws.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM workspaces WHERE id = $1")
            .bind(&ws.id)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, &ws.slug, actor, "workspace_delete", &ws.slug).await?;
        bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok((tokens as i64, servers as i64, secrets as i64))
    }

    // ---- tokens ---------------------------------------------------------------

    pub async fn create_token(
        &self,
        ws: &WorkspaceRow,
        token: &NewToken,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        insert_token(&mut tx, &ws.id, token).await?;
        let target = match &token.scope {
            Some(scope) => format!("{} scope {scope}", token.name),
            None => token.name.clone(),
        };
        audit(&mut tx, &ws.slug, actor, "token_create", &target).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    pub async fn tokens(&self, workspace_id: &str) -> Result<Vec<TokenRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT * FROM workspace_tokens WHERE workspace_id = $1 ORDER BY created_at, name",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Records token use reported by proxies; a time never moves backwards. Use is
    /// not a config change: no audit event, no version bump. Rows are updated in id
    /// order: several proxies report the same tokens at once, each in its own order,
    /// and on PostgreSQL two reports locking rows in opposite orders deadlock (one
    /// fails with a 500 after the 1 s deadlock timeout; changes to those tokens wait
    /// meanwhile).
    pub async fn touch_tokens(&self, uses: &[(String, i64)]) -> Result<u64, sqlx::Error> {
        let mut ordered: Vec<&(String, i64)> = uses.iter().collect();
        ordered.sort();
        let mut tx = self.begin().await?;
        let mut updated = 0;
        for (id, at) in ordered {
            updated += sqlx::query(
                "UPDATE workspace_tokens SET last_used_at = $1 \
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(at)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(updated)
    }

    /// Revokes a token; returns it as it is now, or `None` when it was no longer
    /// active (revoked or deleted since it was read: of two revocations at once, on
    /// two control planes, exactly one revokes it and writes the audit event).
    pub async fn revoke_token(
        &self,
        ws: &WorkspaceRow,
        token: &TokenRow,
        actor: &str,
    ) -> Result<Option<TokenRow>, sqlx::Error> {
        let mut tx = self.begin().await?;
        let at = now();
        let revoked = sqlx::query(
            "UPDATE workspace_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(&token.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if revoked == 0 {
            return Ok(None);
        }
        audit(&mut tx, &ws.slug, actor, "token_revoke", &token.name).await?;
        bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(TokenRow {
            revoked_at: Some(at),
            ..token.clone()
        }))
    }

    // ---- servers and secrets --------------------------------------------------

    pub async fn servers(&self, workspace_id: &str) -> Result<Vec<ServerRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM servers WHERE workspace_id = $1 ORDER BY slug")
            .bind(workspace_id)
            .fetch_all(&self.pool)
            .await
    }

    pub async fn server(
        &self,
        workspace_id: &str,
        slug: &str,
    ) -> Result<Option<ServerRow>, sqlx::Error> {
        sqlx::query_as("SELECT * FROM servers WHERE workspace_id = $1 AND slug = $2")
            .bind(workspace_id)
            .bind(slug)
            .fetch_optional(&self.pool)
            .await
    }

    pub async fn insert_server(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO servers (id, workspace_id, slug, url, transport, headers, policy, enabled, created_at, package, installed_by, tools, naming, command, args, env, limits) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)")
            .bind(&server.id)
            .bind(&server.workspace_id)
            .bind(&server.slug)
            .bind(&server.url)
            .bind(&server.transport)
            .bind(&server.headers)
            .bind(&server.policy)
            .bind(server.enabled)
            .bind(server.created_at)
            .bind(&server.package)
            .bind(&server.installed_by)
            .bind(&server.tools)
            .bind(&server.naming)
            .bind(&server.command)
            .bind(&server.args)
            .bind(&server.env)
            .bind(&server.limits)
            .execute(&mut *tx)
            .await?;
        let target = server.package.as_deref().unwrap_or(&server.slug);
        audit(&mut tx, &ws.slug, actor, "install", target).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    pub async fn delete_server(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM tool_overrides WHERE server_id = $1")
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM secrets WHERE server_id = $1")
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM servers WHERE id = $1")
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, &ws.slug, actor, "remove", &server.slug).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// Enables or disables a server: a disabled one stays installed, with its secrets,
    /// but clients see none of its tools.
    pub async fn set_server_enabled(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        enabled: bool,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE servers SET enabled = $1 WHERE id = $2")
            .bind(i64::from(enabled))
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        let action = if enabled { "enable" } else { "disable" };
        audit(&mut tx, &ws.slug, actor, action, &server.slug).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// Sets how a server's names reach clients (`prefixed` or `bare`). A second bare
    /// server in the workspace fails on the `servers_one_bare` index, whichever
    /// control plane tries.
    pub async fn set_server_naming(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        naming: &str,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE servers SET naming = $1 WHERE id = $2")
            .bind(naming)
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &ws.slug,
            actor,
            "naming_set",
            &format!("{} {naming}", server.slug),
        )
        .await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// The tool overrides of a server: (upstream tool name, `ToolOverride` JSON).
    pub async fn tool_overrides(
        &self,
        server_id: &str,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        sqlx::query_as("SELECT tool, shape FROM tool_overrides WHERE server_id = $1 ORDER BY tool")
            .bind(server_id)
            .fetch_all(&self.pool)
            .await
    }

    /// Sets how a server's tool is shaped for clients (`ToolOverride` JSON), or
    /// removes its override (`None`).
    pub async fn set_tool_override(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        tool: &str,
        shape: Option<&str>,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        match shape {
            Some(shape) => {
                sqlx::query(
                    "INSERT INTO tool_overrides (server_id, tool, shape) VALUES ($1, $2, $3) \
                     ON CONFLICT (server_id, tool) DO UPDATE SET shape = excluded.shape",
                )
                .bind(&server.id)
                .bind(tool)
                .bind(shape)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM tool_overrides WHERE server_id = $1 AND tool = $2")
                    .bind(&server.id)
                    .bind(tool)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        let target = format!(
            "{} {tool} {}",
            server.slug,
            shape.unwrap_or("as the server has it")
        );
        audit(&mut tx, &ws.slug, actor, "tool_override_set", &target).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// Sets a server's timeouts and cap (`ServerLimits` JSON; `None`: the defaults).
    pub async fn set_server_limits(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        limits: Option<&str>,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE servers SET limits = $1 WHERE id = $2")
            .bind(limits)
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        let target = format!("{} {}", server.slug, limits.unwrap_or("defaults"));
        audit(&mut tx, &ws.slug, actor, "server_limits_set", &target).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// Sets a workspace's budgets (`WorkspaceLimits` JSON; `None` clears them).
    pub async fn set_workspace_limits(
        &self,
        ws: &WorkspaceRow,
        limits: Option<&str>,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE workspaces SET limits = $1 WHERE id = $2")
            .bind(limits)
            .bind(&ws.id)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &ws.slug,
            actor,
            "limits_set",
            limits.unwrap_or("none"),
        )
        .await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// Sets a token's own budget (`RateLimit` JSON; `None`: the workspace's).
    pub async fn set_token_limits(
        &self,
        ws: &WorkspaceRow,
        token: &TokenRow,
        limits: Option<&str>,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE workspace_tokens SET limits = $1 WHERE id = $2")
            .bind(limits)
            .bind(&token.id)
            .execute(&mut *tx)
            .await?;
        let target = format!("{} {}", token.name, limits.unwrap_or("workspace default"));
        audit(&mut tx, &ws.slug, actor, "token_limits_set", &target).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// The workspace's bare server, if it has one.
    /// Whether any workspace has a stdio server (the runner hosts it).
    pub async fn hosts_servers(&self) -> Result<bool, sqlx::Error> {
        let count: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM servers WHERE transport = 'stdio'")
                .fetch_one(&self.pool)
                .await?;
        Ok(count > 0)
    }

    pub async fn bare_server(&self, workspace_id: &str) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar("SELECT slug FROM servers WHERE workspace_id = $1 AND naming = 'bare'")
            .bind(workspace_id)
            .fetch_optional(&self.pool)
            .await
    }

    /// Replaces a server's tool policy (`policy` is its JSON).
    pub async fn set_server_policy(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        policy: &str,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE servers SET policy = $1 WHERE id = $2")
            .bind(policy)
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, &ws.slug, actor, "policy_set", &server.slug).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    /// Replaces a stdio server's command line and environment (the runner replaces
    /// its process).
    pub async fn set_server_command(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE servers SET command = $1, args = $2, env = $3 WHERE id = $4")
            .bind(&server.command)
            .bind(&server.args)
            .bind(&server.env)
            .bind(&server.id)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, &ws.slug, actor, "command_set", &server.slug).await?;
        bump_version(&mut tx).await?;
        tx.commit().await
    }

    pub async fn secrets_of_workspace(
        &self,
        workspace_id: &str,
    ) -> Result<Vec<(String, SecretRow)>, sqlx::Error> {
        let rows: Vec<AnyRow> = sqlx::query(
            "SELECT s.slug AS server_slug, x.server_id, x.name, x.sealed, x.updated_at FROM secrets x \
             JOIN servers s ON s.id = x.server_id WHERE s.workspace_id = $1 ORDER BY s.slug, x.name",
        )
        .bind(workspace_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok((
                    r.try_get("server_slug")?,
                    SecretRow {
                        server_id: r.try_get("server_id")?,
                        name: r.try_get("name")?,
                        sealed: r.try_get("sealed")?,
                        updated_at: r.try_get("updated_at")?,
                    },
                ))
            })
            .collect()
    }

    pub async fn put_secret(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        name: &str,
        sealed: Vec<u8>,
        actor: &str,
    ) -> Result<i64, sqlx::Error> {
        let at = now();
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO secrets (server_id, name, sealed, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (server_id, name) DO UPDATE SET sealed = excluded.sealed, updated_at = excluded.updated_at")
            .bind(&server.id)
            .bind(name)
            .bind(sealed)
            .bind(at)
            .execute(&mut *tx)
            .await?;
        audit(
            &mut tx,
            &ws.slug,
            actor,
            "secret_set",
            &format!("{}/{name}", server.slug),
        )
        .await?;
        bump_version(&mut tx).await?;
        tx.commit().await?;
        Ok(at)
    }

    /// Returns whether there was such a secret.
    pub async fn delete_secret(
        &self,
        ws: &WorkspaceRow,
        server: &ServerRow,
        name: &str,
        actor: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM secrets WHERE server_id = $1 AND name = $2")
            .bind(&server.id)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            audit(
                &mut tx,
                &ws.slug,
                actor,
                "secret_delete",
                &format!("{}/{name}", server.slug),
            )
            .await?;
            bump_version(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    // ---- audit ----------------------------------------------------------------

    /// Events of a workspace since it was created (a reused slug starts clean), plus
    /// the publishes of the owner's packages (which belong to no workspace) — those of
    /// private packages only when the owner asks.
    pub async fn audit_events(
        &self,
        ws: &WorkspaceRow,
        asked_by_owner: bool,
        q: &AuditQuery,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        let (order, past, reach) = q.direction();
        let (key_ms, key_id) = q.start();
        sqlx::query_as(&format!(
            "SELECT * FROM audit_events WHERE ((workspace = $1 AND id >= COALESCE((SELECT MAX(id) \
             FROM audit_events WHERE workspace = $1 AND action = 'workspace_create'), '')) \
             OR (workspace = '' AND action IN ('publish', 'unpublish') AND target LIKE $6 \
                 AND ($7 = 0 OR NOT EXISTS (SELECT 1 FROM packages p JOIN users u ON u.id = p.owner_id \
                      WHERE p.visibility = 'private' AND (audit_events.target = '@' || u.username || '/' || p.name \
                      OR audit_events.target LIKE '@' || u.username || '/' || p.name || '@%'))))) \
             AND time >= $2 AND ($3 = '' OR actor = $3) AND ($4 = '' OR action = $4) \
             AND time {reach} $8 / 1000 \
             AND (time * 1000 {past} $8 OR (time * 1000 = $8 AND id {past} $9)) \
             ORDER BY time {order}, id {order} LIMIT $5",
        ))
        .bind(&ws.slug)
        .bind(q.since.unwrap_or(0))
        .bind(q.actor.clone().unwrap_or_default())
        .bind(q.action.clone().unwrap_or_default())
        .bind(q.limit)
        .bind(format!("@{}/%", ws.owner))
        // Private packages' publishes are the owner's business only.
        .bind(i64::from(!asked_by_owner))
        .bind(key_ms)
        .bind(key_id)
        .fetch_all(&self.pool)
        .await
    }

    // ---- what proxies serve ---------------------------------------------------

    pub async fn config_version(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&self.pool)
            .await
    }

    /// Every row a snapshot is built from, read in one transaction so it is consistent.
    pub async fn snapshot_rows(&self) -> Result<SnapshotRows, sqlx::Error> {
        let mut tx = self
            .pool
            .begin_with(engine::begin_snapshot(self.engine))
            .await?;
        let version = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let workspaces: Vec<(String, String, String, Option<String>)> =
            sqlx::query_as("SELECT id, slug, name, limits FROM workspaces ORDER BY slug")
                .fetch_all(&mut *tx)
                .await?;
        let servers = sqlx::query_as("SELECT * FROM servers ORDER BY workspace_id, slug")
            .fetch_all(&mut *tx)
            .await?;
        let secrets = sqlx::query_as("SELECT * FROM secrets ORDER BY server_id, name")
            .fetch_all(&mut *tx)
            .await?;
        let tokens =
            sqlx::query_as("SELECT * FROM workspace_tokens ORDER BY workspace_id, created_at")
                .fetch_all(&mut *tx)
                .await?;
        let overrides = sqlx::query_as(
            "SELECT server_id, tool, shape FROM tool_overrides ORDER BY server_id, tool",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SnapshotRows {
            version,
            workspaces,
            servers,
            secrets,
            tokens,
            overrides,
        })
    }
}

/// The rows of one consistent snapshot.
pub struct SnapshotRows {
    pub version: i64,
    /// (id, slug, name, limits)
    pub workspaces: Vec<(String, String, String, Option<String>)>,
    pub servers: Vec<ServerRow>,
    pub secrets: Vec<SecretRow>,
    pub tokens: Vec<TokenRow>,
    /// (server id, upstream tool name, `ToolOverride` JSON)
    pub overrides: Vec<(String, String, String)>,
}

/// A token about to be stored: only its hash is kept.
pub struct NewToken {
    pub id: String,
    pub name: String,
    pub sha256: String,
    pub expires_at: Option<i64>,
    /// User id of the creator.
    pub created_by: String,
    /// `TokenScope` JSON; `None`: every tool.
    pub scope: Option<String>,
}

async fn insert_token(
    tx: &mut Tx<'_>,
    workspace_id: &str,
    t: &NewToken,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO workspace_tokens (id, workspace_id, name, sha256, created_at, expires_at, created_by, scope) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&t.id)
        .bind(workspace_id)
        .bind(&t.name)
        .bind(&t.sha256)
        .bind(now())
        .bind(t.expires_at)
        .bind(&t.created_by)
        .bind(&t.scope)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn audit(
    tx: &mut Tx<'_>,
    workspace: &str,
    actor: &str,
    action: &str,
    target: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO audit_events (id, time, workspace, actor, action, target, outcome) VALUES ($1, $2, $3, $4, $5, $6, 'ok')")
        .bind(event_id())
        .bind(now())
        .bind(workspace)
        .bind(actor)
        .bind(action)
        .bind(target)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub(crate) async fn bump_version(tx: &mut Tx<'_>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE config_version SET version = version + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Event ids sort in creation order — a strictly increasing microsecond clock, then
/// randomness — so events list in the order they happened on any backend.
fn event_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let micros = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .map_or(now, |last| now.max(last + 1));
    format!("evt_{micros:016x}{}", &random_id("")[..8])
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{self, on_both_engines};

    on_both_engines! {
    /// Proxies reporting the same tokens at once, in opposite orders, to two
    /// control planes: every report is stored, none deadlocks.
    async fn token_use_reported_at_once_in_any_order_is_stored(engine: Engine) {
        let (_dir, one) = testing::fresh(engine).await;
        let other = testing::same_database(&one).await;
        let owner = one.insert_user("owner", "owner@example.com", false, "x", "test").await.unwrap();
        let token = |i: usize| NewToken {
            id: format!("tok_{i:02}"),
            name: format!("t{i}"),
            sha256: format!("{i:064x}"),
            expires_at: None,
            created_by: owner.id.clone(),
            scope: None,
        };
        one.insert_workspace("eng", "Eng", &owner.id, &token(0), "test").await.unwrap();
        let ws = one.visible_workspace(&owner.id, "eng").await.unwrap().unwrap();
        for i in 1..24 {
            one.create_token(&ws, &token(i), "test").await.unwrap();
        }
        for round in 0..20i64 {
            let forward: Vec<(String, i64)> =
                (0..24).map(|i| (format!("tok_{i:02}"), 1_000 + round)).collect();
            let backward: Vec<(String, i64)> = forward.iter().rev().cloned().collect();
            let (a, b) = tokio::join!(one.touch_tokens(&forward), other.touch_tokens(&backward));
            a.unwrap();
            b.unwrap();
        }
        let used: Vec<Option<i64>> = one
            .tokens(&ws.id)
            .await
            .unwrap()
            .iter()
            .map(|t| t.last_used_at)
            .collect();
        assert_eq!(used, vec![Some(1_019); 24]);
    }
    }
}
