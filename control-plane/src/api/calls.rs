//! Routed calls: proxies post them in batches (`POST /v1/proxy/audit`), users read
//! what they add up to (`GET /v1/workspaces/{ws}/analytics`). The audit listing
//! that shows them one by one is `workspaces::audit`.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::Json;
use gatehouse_config::audit::{AuditAck, AuditBatch};
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::request::{AuthProxy, AuthUser, Body};
use super::workspaces::visible;
use crate::calls::analytics::{Analytics, AnalyticsReport};
use crate::calls::batch::{validate, BatchError};
use crate::metrics::BatchOutcome;
use crate::state::App;
use crate::store::now;

/// The window analytics covers when the caller names none.
const DEFAULT_ANALYTICS_WINDOW_SECS: i64 = 24 * 3600;

impl From<BatchError> for ApiError {
    fn from(e: BatchError) -> Self {
        let message = e.to_string();
        match e {
            BatchError::TooManyEvents { .. } => ApiError::TooLarge(message),
            BatchError::Invalid { problems } => ApiError::Invalid { message, problems },
        }
    }
}

/// Stores a batch all or nothing and acknowledges it; a resent batch is answered
/// with its events counted as duplicates, which is how a proxy knows it may forget
/// them. The body is taken as a `Result` so that an unparseable batch is counted as
/// rejected like any other refused one.
pub async fn ingest(
    State(app): State<Arc<App>>,
    _proxy: AuthProxy,
    body: Result<Body<AuditBatch>, ApiError>,
) -> ApiResult<Json<AuditAck>> {
    let answer = store_batch(&app, body).await;
    app.metrics.audit_batch(match &answer {
        Ok(_) => BatchOutcome::Ok,
        Err(ApiError::Internal(_)) => BatchOutcome::Error,
        Err(_) => BatchOutcome::Rejected,
    });
    answer.map(Json)
}

async fn store_batch(app: &App, body: Result<Body<AuditBatch>, ApiError>) -> ApiResult<AuditAck> {
    let Body(batch) = body?;
    validate(&batch)?;
    let stored = app
        .store
        .insert_call_events(&batch.proxy_id, &batch.events)
        .await?;
    let duplicates = (batch.events.len() as u64).saturating_sub(stored);
    app.metrics.audit_events(stored, duplicates);
    Ok(AuditAck { stored, duplicates })
}

#[derive(Deserialize)]
pub struct AnalyticsParams {
    pub since: Option<i64>,
}

#[derive(Serialize)]
pub struct AnalyticsAnswer {
    workspace: String,
    /// Unix seconds: the start of the window.
    since: i64,
    #[serde(flatten)]
    report: AnalyticsReport,
}

/// Totals, per server, per tool and per token, over the calls since `since` (default:
/// the last 24 hours) and since the workspace was created. Visible to whoever may
/// read the workspace's audit log.
pub async fn analytics(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
    Query(q): Query<AnalyticsParams>,
) -> ApiResult<Json<AnalyticsAnswer>> {
    let ws = visible(&app, &user, &ws).await?;
    let since = q
        .since
        .unwrap_or_else(|| now() - DEFAULT_ANALYTICS_WINDOW_SECS);
    let report = Analytics::of_workspace(&app.store, &ws, since)
        .await?
        .report();
    Ok(Json(AnalyticsAnswer {
        workspace: ws.slug,
        since,
        report,
    }))
}
