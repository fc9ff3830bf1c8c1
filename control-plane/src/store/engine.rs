//! Which database engine holds the store, and the little that differs between them.
//!
//! The store's queries are written once, in SQL both engines accept, and run through
//! sqlx's `Any` driver: `$N` placeholders, `ON CONFLICT`, no `AUTOINCREMENT`, no
//! `RETURNING`. This room owns what cannot be shared: where a store lives
//! ([`Database`]: the embedded SQLite file by default, or a PostgreSQL URL), each
//! engine's migration files (column types: `BYTEA`, `BIGINT`, and byte-order
//! collation on PostgreSQL so text sorts as SQLite sorts it), how a write transaction
//! starts, and how a URL is shown without its password.

use std::path::{Path, PathBuf};

/// The engines a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The embedded default: one file, one machine.
    Sqlite,
    /// A PostgreSQL server, which several control planes may share.
    Postgres,
}

/// Where a store lives, as `gatehouse serve --database` (or `GATEHOUSE_DATABASE_URL`)
/// names it.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// `gatehouse.db` in this directory.
    Embedded(PathBuf),
    /// A `sqlite://` URL.
    SqliteUrl(String),
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

/// A `--database` value that names no engine the store runs on.
#[derive(Debug, thiserror::Error)]
#[error("unsupported database URL {shown:?}: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE or sqlite://PATH")]
pub struct UnsupportedDatabase {
    /// The URL as given, its password (if any) hidden.
    pub shown: String,
}

impl Database {
    /// The database a `--database` URL names; `None` means the embedded file in
    /// `data_dir`.
    pub fn from_url(url: Option<&str>, data_dir: &Path) -> Result<Database, UnsupportedDatabase> {
        let Some(url) = url.map(str::trim).filter(|u| !u.is_empty()) else {
            return Ok(Database::Embedded(data_dir.to_owned()));
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(url.to_owned()))
        } else if url.starts_with("sqlite:") {
            Ok(Database::SqliteUrl(url.to_owned()))
        } else {
            Err(UnsupportedDatabase { shown: redact(url) })
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Database::Embedded(_) | Database::SqliteUrl(_) => Engine::Sqlite,
            Database::Postgres(_) => Engine::Postgres,
        }
    }

    /// The URL sqlx connects to (secrets included: never print it).
    pub(crate) fn connect_url(&self) -> String {
        match self {
            Database::Embedded(dir) => {
                format!("sqlite://{}?mode=rwc", dir.join("gatehouse.db").display())
            }
            // A file named without options is created if missing, like the default.
            Database::SqliteUrl(url) if !url.contains('?') && url != "sqlite::memory:" => {
                format!("{url}?mode=rwc")
            }
            Database::SqliteUrl(url) | Database::Postgres(url) => url.clone(),
        }
    }
}

/// Shown in logs and errors: where the store is, never a password.
impl std::fmt::Display for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Database::Embedded(dir) => write!(f, "{}", dir.join("gatehouse.db").display()),
            Database::SqliteUrl(url) | Database::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({self})")
    }
}

/// `url` with its password (and any `password=` query parameter) replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            if parsed.query_pairs().any(|(k, _)| k == "password") {
                let pairs: Vec<(String, String)> = parsed
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if k == "password" { "***".into() } else { v };
                        (k.into_owned(), v.into_owned())
                    })
                    .collect();
                parsed.query_pairs_mut().clear().extend_pairs(pairs);
            }
            parsed.to_string()
        }
        // Not a URL: show only its scheme-like head, which cannot hold a password.
        Err(_) => url.split(['@', '/']).next().unwrap_or_default().to_owned(),
    }
}

/// `host:port/database` of a PostgreSQL URL, what a connection error names.
pub fn postgres_target(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("localhost"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => redact(url),
    }
}

/// Schema migrations of `engine`, applied in order, each once. Both lists have the
/// same versions, so a store moved between engines (`gatehouse migrate`) keeps its
/// schema version.
pub fn migrations(engine: Engine) -> &'static [(i64, &'static str)] {
    match engine {
        Engine::Sqlite => SQLITE_MIGRATIONS,
        Engine::Postgres => POSTGRES_MIGRATIONS,
    }
}

const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_initial.sql")),
    (
        2,
        include_str!("../../migrations/sqlite/0002_skills_teams.sql"),
    ),
    (
        3,
        include_str!("../../migrations/sqlite/0003_token_creator.sql"),
    ),
    (
        4,
        include_str!("../../migrations/sqlite/0004_call_events.sql"),
    ),
    (
        5,
        include_str!("../../migrations/sqlite/0005_config_notify.sql"),
    ),
    (
        6,
        include_str!("../../migrations/sqlite/0006_revoked_sessions.sql"),
    ),
    (
        7,
        include_str!("../../migrations/sqlite/0007_server_naming.sql"),
    ),
    (8, include_str!("../../migrations/sqlite/0008_limits.sql")),
    (
        9,
        include_str!("../../migrations/sqlite/0009_hosted_stdio.sql"),
    ),
    (
        10,
        include_str!("../../migrations/sqlite/0010_server_limits.sql"),
    ),
    (
        11,
        include_str!("../../migrations/sqlite/0011_token_scope.sql"),
    ),
    (
        12,
        include_str!("../../migrations/sqlite/0012_tool_overrides.sql"),
    ),
];

const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        include_str!("../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        include_str!("../../migrations/postgres/0002_skills_teams.sql"),
    ),
    (
        3,
        include_str!("../../migrations/postgres/0003_token_creator.sql"),
    ),
    (
        4,
        include_str!("../../migrations/postgres/0004_call_events.sql"),
    ),
    (
        5,
        include_str!("../../migrations/postgres/0005_config_notify.sql"),
    ),
    (
        6,
        include_str!("../../migrations/postgres/0006_revoked_sessions.sql"),
    ),
    (
        7,
        include_str!("../../migrations/postgres/0007_server_naming.sql"),
    ),
    (8, include_str!("../../migrations/postgres/0008_limits.sql")),
    (
        9,
        include_str!("../../migrations/postgres/0009_hosted_stdio.sql"),
    ),
    (
        10,
        include_str!("../../migrations/postgres/0010_server_limits.sql"),
    ),
    (
        11,
        include_str!("../../migrations/postgres/0011_token_scope.sql"),
    ),
    (
        12,
        include_str!("../../migrations/postgres/0012_tool_overrides.sql"),
    ),
];

/// How a write transaction starts. SQLite takes its write lock at BEGIN (IMMEDIATE),
/// waiting out the busy timeout if another writer holds it: a deferred transaction
/// that reads and then writes fails at once with "database is locked" when another
/// connection committed in between (an audit batch hit that while the call pruning
/// deleted rows). PostgreSQL locks rows as they are written; read committed is
/// enough because every read-then-write either re-checks under a unique constraint
/// or updates a row in place (the config version).
pub fn begin_write(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "BEGIN IMMEDIATE",
        Engine::Postgres => "BEGIN",
    }
}

/// How a transaction that reads several tables as one snapshot starts. On SQLite the
/// write lock gives that; PostgreSQL's read committed would let each statement see
/// a different moment, so it reads at one (repeatable read, read only).
pub fn begin_snapshot(engine: Engine) -> &'static str {
    match engine {
        Engine::Sqlite => "BEGIN IMMEDIATE",
        Engine::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    }
}

/// The statement that serialises migrations of one database among control planes
/// starting together (a transaction-scoped advisory lock), if the engine needs one:
/// SQLite's `BEGIN IMMEDIATE` already does.
pub fn migration_lock(engine: Engine) -> Option<&'static str> {
    match engine {
        Engine::Sqlite => None,
        // The lock function returns `void`, which the `Any` driver cannot decode:
        // count the one row instead.
        Engine::Postgres => {
            Some("SELECT COUNT(*) FROM (SELECT pg_advisory_xact_lock(7406150531)) AS migrating")
        }
    }
}

/// One parameter of a statement with many: `?` on SQLite, `$n` on PostgreSQL.
///
/// SQLite gets anonymous parameters: sqlx binds each parameter by asking SQLite for its
/// name, and SQLite finds a name by walking the list of all of them — quadratic in a
/// statement of a thousand named parameters, and the largest cost of storing an audit
/// batch when measured (`gatehouse-bench audit`). PostgreSQL has only `$n`.
pub fn push_param(engine: Engine, sql: &mut String, n: usize) {
    match engine {
        Engine::Sqlite => sql.push('?'),
        Engine::Postgres => {
            sql.push('$');
            sql.push_str(&n.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_engine_and_never_show_a_password() {
        let dir = Path::new("/var/lib/gatehouse");
        assert_eq!(
            Database::from_url(None, dir).unwrap(),
            Database::Embedded(dir.to_owned())
        );
        assert_eq!(
            Database::from_url(Some("  "), dir).unwrap().engine(),
            Engine::Sqlite
        );
        let pg = Database::from_url(Some("postgres://gh:s3cret@db.internal:6432/gatehouse"), dir)
            .unwrap();
        assert_eq!(pg.engine(), Engine::Postgres);
        assert_eq!(
            pg.to_string(),
            "postgres://gh:***@db.internal:6432/gatehouse"
        );
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert_eq!(
            postgres_target("postgresql://gh:s3cret@db.internal/gatehouse"),
            "db.internal:5432/gatehouse"
        );
        assert_eq!(
            redact("postgres://gh@h/db?sslmode=require&password=s3cret"),
            "postgres://gh@h/db?sslmode=require&password=***"
        );
        let file = Database::from_url(Some("sqlite:///srv/gh.db"), dir).unwrap();
        assert_eq!(file.engine(), Engine::Sqlite);
        assert_eq!(file.connect_url(), "sqlite:///srv/gh.db?mode=rwc");
        let read_only = Database::SqliteUrl("sqlite:///srv/gh.db?mode=ro".into());
        assert_eq!(read_only.connect_url(), "sqlite:///srv/gh.db?mode=ro");
        let err = Database::from_url(Some("mysql://root:s3cret@h/db"), dir).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("mysql://root:***@h/db"), "{err}");
    }

    #[test]
    fn both_engines_have_the_same_schema_versions() {
        let versions = |e| migrations(e).iter().map(|(v, _)| *v).collect::<Vec<_>>();
        assert_eq!(versions(Engine::Sqlite), versions(Engine::Postgres));
    }

    #[test]
    fn many_parameters_are_anonymous_on_sqlite_and_numbered_on_postgres() {
        let mut sqlite = String::new();
        let mut postgres = String::new();
        for n in 1..=3 {
            push_param(Engine::Sqlite, &mut sqlite, n);
            push_param(Engine::Postgres, &mut postgres, n);
        }
        assert_eq!(sqlite, "???");
        assert_eq!(postgres, "$1$2$3");
    }
}
