//! Teams: the people a user invited. An invitation is a row with a hashed join code;
//! accepting it binds the row to the invitee's account.

use super::{audit, bump_version, now, Store};
use crate::crypto::random_id;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TeamMemberRow {
    pub id: String,
    pub owner_id: String,
    pub email: String,
    pub member_id: Option<String>,
    pub username: Option<String>,
    pub status: String,
    pub code_sha256: String,
    pub invited_at: i64,
    pub expires_at: i64,
    pub joined_at: Option<i64>,
}

const MEMBER_COLUMNS: &str = "t.id, t.owner_id, t.email, t.member_id, u.username, t.status, \
     t.code_sha256, t.invited_at, t.expires_at, t.joined_at";

impl Store {
    pub async fn team(&self, owner_id: &str) -> Result<Vec<TeamMemberRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MEMBER_COLUMNS} FROM team_members t LEFT JOIN users u ON u.id = t.member_id \
             WHERE t.owner_id = $1 ORDER BY t.invited_at, t.email"
        ))
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await
    }

    pub async fn invitation_by_code(
        &self,
        code_sha256: &str,
    ) -> Result<Option<TeamMemberRow>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {MEMBER_COLUMNS} FROM team_members t LEFT JOIN users u ON u.id = t.member_id \
             WHERE t.code_sha256 = $1"
        ))
        .bind(code_sha256)
        .fetch_optional(&self.pool)
        .await
    }

    /// Whether `user_id` is an active member of `owner_id`'s team.
    pub async fn is_team_member(&self, owner_id: &str, user_id: &str) -> Result<bool, sqlx::Error> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM team_members WHERE owner_id = $1 AND member_id = $2 AND status = 'active'",
        )
        .bind(owner_id)
        .bind(user_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Creates (or renews, for a still-pending one) an invitation.
    pub async fn invite(
        &self,
        owner_id: &str,
        email: &str,
        code_sha256: &str,
        expires_at: i64,
        actor: &str,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "DELETE FROM team_members WHERE owner_id = $1 AND email = $2 AND status = 'pending'",
        )
        .bind(owner_id)
        .bind(email)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO team_members (id, owner_id, email, status, code_sha256, invited_at, expires_at) \
             VALUES ($1, $2, $3, 'pending', $4, $5, $6)",
        )
        .bind(random_id("tm_"))
        .bind(owner_id)
        .bind(email)
        .bind(code_sha256)
        .bind(now())
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        audit(&mut tx, "", actor, "team_invite", email).await?;
        tx.commit().await
    }

    /// Binds a pending invitation to `member_id`. Returns false, changing nothing,
    /// when it is no longer pending: of two accepts at once (on two control planes)
    /// exactly one binds it.
    pub async fn accept_invitation(
        &self,
        id: &str,
        member_id: &str,
        actor: &str,
    ) -> Result<bool, sqlx::Error> {
        let mut tx = self.begin().await?;
        let accepted = sqlx::query(
            "UPDATE team_members SET member_id = $1, status = 'active', joined_at = $2 \
             WHERE id = $3 AND status = 'pending'",
        )
        .bind(member_id)
        .bind(now())
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !accepted {
            return Ok(false);
        }
        audit(&mut tx, "", actor, "team_join", id).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Removes a member; the tokens they created in the owner's workspaces are
    /// revoked in the same transaction. Returns how many were.
    pub async fn remove_team_member(
        &self,
        row: &TeamMemberRow,
        actor: &str,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM team_members WHERE id = $1")
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
        audit(&mut tx, "", actor, "team_remove", &row.email).await?;
        let mut revoked = 0;
        if let Some(member) = &row.member_id {
            let tokens: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT t.id, t.name, w.slug FROM workspace_tokens t JOIN workspaces w ON w.id = t.workspace_id \
                 WHERE t.created_by = $1 AND w.owner_id = $2 AND t.revoked_at IS NULL",
            )
            .bind(member)
            .bind(&row.owner_id)
            .fetch_all(&mut *tx)
            .await?;
            for (id, name, ws) in &tokens {
                sqlx::query("UPDATE workspace_tokens SET revoked_at = $1 WHERE id = $2")
                    .bind(now())
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                audit(&mut tx, ws, actor, "token_revoke", name).await?;
            }
            if !tokens.is_empty() {
                bump_version(&mut tx).await?;
            }
            revoked = tokens.len() as u64;
        }
        tx.commit().await?;
        Ok(revoked)
    }
}
