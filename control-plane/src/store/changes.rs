//! Config changes made by the other control planes of one PostgreSQL database. Every
//! version bump is announced on channel [`CHANNEL`] by a trigger (schema version 5);
//! [`Store::other_changes`] listens on its own connection and wakes its caller, who
//! republishes the snapshot to the proxies connected here. On SQLite, one control
//! plane owns the file and there is nothing to listen to.

use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::Notify;

use super::{Database, Store};

/// The channel the `config_version_changed` trigger notifies.
pub const CHANNEL: &str = "gatehouse_config";

/// How long to wait before listening again after the connection failed.
const RETRY: Duration = Duration::from_secs(1);

impl Store {
    /// Listens for config changes committed by any control plane on this database
    /// (this one included) and returns what is notified of them: several changes in a
    /// row may wake the caller once, and a lost connection wakes it too (changes may
    /// have been missed while it was down), so the caller should re-read the current
    /// state each time. `None` on SQLite. The listening runs until the process ends.
    pub async fn other_changes(&self) -> Result<Option<Arc<Notify>>, sqlx::Error> {
        let Database::Postgres(url) = &self.database else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        let changed = Arc::new(Notify::new());
        let wake = changed.clone();
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(_)) => {
                        // Drain what else arrived meanwhile: one wake for the lot.
                        while listener.next_buffered().is_some() {}
                        wake.notify_one();
                    }
                    // The connection was lost; the next call reconnects and listens
                    // again. What changed in between was not announced here.
                    Ok(None) => wake.notify_one(),
                    // Reconnecting failed: try again in a while, and have the caller
                    // re-read then too, in case the database is back by now.
                    Err(e) => {
                        tracing::warn!(error = %e, "listening for config changes failed; retrying");
                        tokio::time::sleep(RETRY).await;
                        wake.notify_one();
                    }
                }
            }
        });
        Ok(Some(changed))
    }
}
