//! How long routed calls are kept: every call a proxy reports is a row, so without
//! a limit the store grows with traffic for ever. Admin events (`audit_events`:
//! installs, token changes, ...) are few and are kept.

use std::sync::Arc;
use std::time::Duration;

use crate::state::App;
use crate::store::leases::Lease;
use crate::store::now;

/// What `--call-retention-days` defaults to.
pub const DEFAULT_CALL_RETENTION_DAYS: u32 = 90;

/// How often the pruning runs after the first run at start.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the calls older than `days` now and then every hour, for as long as the
/// returned task runs. `days` 0 keeps every call: no task.
pub fn spawn(app: Arc<App>, days: u32) -> Option<tokio::task::JoinHandle<()>> {
    if days == 0 {
        return None;
    }
    let keep_ms = i64::from(days) * 86_400 * 1_000;
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            // Among control planes sharing a database, one prunes at a time; the
            // others skip their turn (the one pruning deletes what they would).
            let turn = match app.store.try_hold(Lease::PruneCalls).await {
                Ok(Some(turn)) => turn,
                Ok(None) => {
                    tracing::debug!("another control plane is pruning calls");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning old calls failed");
                    continue;
                }
            };
            let before_ms = now().saturating_mul(1_000).saturating_sub(keep_ms);
            let pruned = app.store.prune_call_events(before_ms).await;
            if let Err(e) = turn.release().await {
                tracing::warn!(error = %e, "releasing the pruning lease failed");
            }
            match pruned {
                Ok(0) => {}
                Ok(deleted) => {
                    app.metrics.call_events_pruned(deleted);
                    tracing::info!(deleted, days, "pruned calls older than the retention");
                }
                // Tried again at the next tick; nothing is lost by waiting.
                Err(e) => tracing::warn!(error = %e, "pruning old calls failed"),
            }
        }
    }))
}
