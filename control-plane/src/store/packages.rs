//! Packages (`@owner/name`) and their published versions.

use super::{audit, bump_version, now, Store};
use crate::crypto::random_id;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PackageRow {
    pub id: String,
    pub owner_id: String,
    pub owner: String,
    pub name: String,
    pub kind: String,
    pub visibility: String,
    pub description: String,
    pub category: String,
    /// JSON array of strings.
    pub tags: String,
    pub high_water: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub version: String,
    pub manifest: String,
    pub published_at: i64,
}

const PACKAGE_COLUMNS: &str =
    "p.id, p.owner_id, u.username AS owner, p.name, p.kind, p.visibility, \
     p.description, p.category, p.tags, p.high_water, p.created_at, p.updated_at";

/// Why [`Store::publish`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The version is not above the highest ever published (`high_water`).
    #[error("the version is not newer than {high_water}, the highest version ever published")]
    NotNewer { high_water: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What a publish writes.
pub struct Publication<'a> {
    pub owner_id: &'a str,
    pub name: &'a str,
    pub kind: &'a str,
    pub visibility: &'a str,
    pub description: &'a str,
    pub category: &'a str,
    pub tags: &'a str,
    pub version: &'a str,
    pub manifest: &'a str,
}

impl Store {
    pub async fn package(
        &self,
        owner: &str,
        name: &str,
    ) -> Result<Option<PackageRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages p JOIN users u ON u.id = p.owner_id \
             WHERE u.username = $1 AND p.name = $2"
        ))
        .bind(owner)
        .bind(name)
        .fetch_optional(&self.pool)
        .await
    }

    /// Public packages with at least one version whose name, description or tags
    /// contain `text` (case-insensitive).
    pub async fn search_packages(&self, text: &str) -> Result<Vec<PackageRow>, sqlx::Error> {
        let like = format!("%{}%", text.to_lowercase().replace(['%', '_'], ""));
        sqlx::query_as(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages p JOIN users u ON u.id = p.owner_id \
             WHERE p.visibility = 'public' \
             AND EXISTS (SELECT 1 FROM package_versions v WHERE v.package_id = p.id) \
             AND (LOWER(p.name) LIKE $1 OR LOWER(p.description) LIKE $1 OR LOWER(p.tags) LIKE $1 \
                  OR LOWER(u.username) LIKE $1) \
             ORDER BY u.username, p.name LIMIT 200"
        ))
        .bind(like)
        .fetch_all(&self.pool)
        .await
    }

    /// The user's own packages and those of every team they are an active member of.
    pub async fn packages_for(&self, user_id: &str) -> Result<Vec<PackageRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {PACKAGE_COLUMNS} FROM packages p JOIN users u ON u.id = p.owner_id \
             WHERE EXISTS (SELECT 1 FROM package_versions v WHERE v.package_id = p.id) AND \
             (p.owner_id = $1 OR (p.visibility IN ('public', 'team') AND EXISTS \
              (SELECT 1 FROM team_members t WHERE t.owner_id = p.owner_id AND t.member_id = $1 AND t.status = 'active'))) \
             ORDER BY u.username, p.name"
        ))
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn versions(&self, package_id: &str) -> Result<Vec<VersionRow>, sqlx::Error> {
        sqlx::query_as(
            "SELECT version, manifest, published_at FROM package_versions WHERE package_id = $1",
        )
        .bind(package_id)
        .fetch_all(&self.pool)
        .await
    }

    /// Records a new version, creating the package on its first publish. The version
    /// must be above the package's high-water mark, checked in the transaction that
    /// raises it: of two publishes of one version at once (on two control planes),
    /// exactly one is stored and the other gets [`PublishError::NotNewer`].
    pub async fn publish(&self, p: &Publication<'_>, actor: &str) -> Result<(), PublishError> {
        let at = now();
        let mut tx = self.begin().await?;
        // The package row, created empty if it is new; a concurrent first publish
        // waits here for the other's commit and then finds its row.
        sqlx::query(
            "INSERT INTO packages (id, owner_id, name, kind, visibility, description, category, \
             tags, high_water, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, '', $9, $9) \
             ON CONFLICT (owner_id, name) DO NOTHING",
        )
        .bind(random_id("pkg_"))
        .bind(p.owner_id)
        .bind(p.name)
        .bind(p.kind)
        .bind(p.visibility)
        .bind(p.description)
        .bind(p.category)
        .bind(p.tags)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        // Locks the row (PostgreSQL; SQLite's write transaction holds the whole file)
        // so the high-water mark read next is the latest committed one.
        sqlx::query(
            "UPDATE packages SET updated_at = updated_at WHERE owner_id = $1 AND name = $2",
        )
        .bind(p.owner_id)
        .bind(p.name)
        .execute(&mut *tx)
        .await?;
        let (id, high_water): (String, String) =
            sqlx::query_as("SELECT id, high_water FROM packages WHERE owner_id = $1 AND name = $2")
                .bind(p.owner_id)
                .bind(p.name)
                .fetch_one(&mut *tx)
                .await?;
        if let (Ok(high), Ok(new)) = (
            semver::Version::parse(&high_water),
            semver::Version::parse(p.version),
        ) {
            if new <= high {
                return Err(PublishError::NotNewer { high_water });
            }
        }
        sqlx::query(
            "UPDATE packages SET kind = $1, visibility = $2, description = $3, category = $4, \
             tags = $5, high_water = $6, updated_at = $7 WHERE id = $8",
        )
        .bind(p.kind)
        .bind(p.visibility)
        .bind(p.description)
        .bind(p.category)
        .bind(p.tags)
        .bind(p.version)
        .bind(at)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO package_versions (package_id, version, manifest, published_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&id)
        .bind(p.version)
        .bind(p.manifest)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        audit(
            &mut tx,
            "",
            actor,
            "publish",
            &format!("@{actor}/{}@{}", p.name, p.version),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes one version, or all of them. Installed copies keep working (they hold
    /// their own definition); the version number is never reused.
    pub async fn unpublish(
        &self,
        package: &PackageRow,
        version: Option<&str>,
        actor: &str,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        let removed = match version {
            Some(v) => {
                sqlx::query("DELETE FROM package_versions WHERE package_id = $1 AND version = $2")
                    .bind(&package.id)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            }
            None => sqlx::query("DELETE FROM package_versions WHERE package_id = $1")
                .bind(&package.id)
                .execute(&mut *tx)
                .await?
                .rows_affected(),
        };
        if removed > 0 {
            let target = match version {
                Some(v) => format!("@{}/{}@{v}", package.owner, package.name),
                None => format!("@{}/{}", package.owner, package.name),
            };
            audit(&mut tx, "", actor, "unpublish", &target).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// Removes servers installed from `owner`'s non-public packages in workspaces owned
    /// by `member` — what a member loses when removed from the team. Returns how many.
    pub async fn uninstall_team_packages(
        &self,
        owner: &str,
        member_id: &str,
        actor: &str,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT s.id, w.slug, s.package FROM servers s JOIN workspaces w ON w.id = s.workspace_id \
             WHERE w.owner_id = $1 AND s.package LIKE $2 AND EXISTS (SELECT 1 FROM packages p \
             JOIN users u ON u.id = p.owner_id WHERE u.username = $3 AND p.visibility <> 'public' \
             AND s.package LIKE '@' || u.username || '/' || p.name || '@%')",
        )
        .bind(member_id)
        .bind(format!("@{owner}/%"))
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        for (server_id, ws_slug, package) in &rows {
            sqlx::query("DELETE FROM tool_overrides WHERE server_id = $1")
                .bind(server_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM secrets WHERE server_id = $1")
                .bind(server_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM servers WHERE id = $1")
                .bind(server_id)
                .execute(&mut *tx)
                .await?;
            audit(&mut tx, ws_slug, actor, "remove", package).await?;
        }
        if !rows.is_empty() {
            bump_version(&mut tx).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}
