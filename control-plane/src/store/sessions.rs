//! Signed-out sessions. A login is a JWT that is valid on its own until it expires, so
//! signing out (the dashboard's button, `POST /v1/logout`) records the SHA-256 of its
//! text here; every control plane on the same database checks this table when it
//! authenticates a session, so the sign-out holds on all of them at once. A row is
//! kept until its JWT would have expired anyway, then deleted.

use super::{now, Store};

impl Store {
    /// Refuses the session whose JWT hashes to `sha256` from now on (it would have
    /// expired at `expires_at`, unix seconds). Signing out twice is no error. Rows of
    /// sessions that have expired since go at the same time.
    pub async fn revoke_session(&self, sha256: &str, expires_at: i64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO revoked_sessions (sha256, expires_at) VALUES ($1, $2) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        sqlx::query("DELETE FROM revoked_sessions WHERE expires_at < $1")
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether the session whose JWT hashes to `sha256` was signed out.
    pub async fn session_revoked(&self, sha256: &str) -> Result<bool, sqlx::Error> {
        let found: Option<i64> =
            sqlx::query_scalar("SELECT expires_at FROM revoked_sessions WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(&self.pool)
                .await?;
        Ok(found.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{fresh, on_both_engines, same_database};
    use crate::store::Engine;

    on_both_engines! {
    /// What one control plane signs out, another on the same database refuses.
    async fn a_sign_out_holds_on_every_store_of_the_database(engine: Engine) {
        let (_dir, one) = fresh(engine).await;
        let other = same_database(&one).await;
        let later = now() + 3_600;
        assert!(!other.session_revoked("aa").await.unwrap());
        one.revoke_session("aa", later).await.unwrap();
        one.revoke_session("aa", later).await.unwrap();
        assert!(other.session_revoked("aa").await.unwrap());
        assert!(!other.session_revoked("bb").await.unwrap());
        // A row whose JWT has expired does not stay.
        other.revoke_session("old", now() - 1).await.unwrap();
        one.revoke_session("bb", later).await.unwrap();
        assert!(!one.session_revoked("old").await.unwrap());
        assert!(one.session_revoked("aa").await.unwrap());
    }
    }
}
