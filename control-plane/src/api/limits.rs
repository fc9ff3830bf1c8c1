//! Rate budgets: a workspace's limits (the whole workspace, each token, open streams
//! per token) and a token's own. Stored as the JSON the proxies' config carries, and
//! pushed like every other change; proxies enforce them (`proxy::limits`).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use gatehouse_config::{Problem, RateLimit, WorkspaceLimits};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::request::{AuthUser, Body};
use super::workspaces::visible;
use crate::state::App;

/// What a workspace allows, and how many proxies share it.
pub async fn show(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let limits: WorkspaceLimits = parse(ws.limits.as_deref())?;
    Ok(Json(
        json!({"limits": limits, "proxy_share": app.proxy_limits.proxy_share}),
    ))
}

/// Replaces a workspace's limits; `{}` removes them all.
pub async fn set(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
    Body(limits): Body<WorkspaceLimits>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let problems: Vec<Problem> = limits
        .problems()
        .into_iter()
        .map(|(path, message)| Problem { path, message })
        .collect();
    checked(problems)?;
    let stored = (!limits.is_unlimited())
        .then(|| serde_json::to_string(&limits))
        .transpose()
        .map_err(|e| ApiError::Internal(e.into()))?;
    app.store
        .set_workspace_limits(&ws, stored.as_deref(), &user.username)
        .await?;
    app.publish().await?;
    Ok(Json(
        json!({"limits": limits, "proxy_share": app.proxy_limits.proxy_share}),
    ))
}

/// Replaces a token's own budget; `{}` gives it the workspace's `per_token` again.
pub async fn set_token(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((ws, id)): Path<(String, String)>,
    Body(limits): Body<RateLimit>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let token = app
        .store
        .tokens(&ws.id)
        .await?
        .into_iter()
        .find(|t| t.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no token {id:?} in {:?}", ws.slug)))?;
    let problems: Vec<Problem> = limits
        .problems()
        .into_iter()
        .map(|(field, message)| Problem {
            path: field.into(),
            message,
        })
        .collect();
    checked(problems)?;
    let own = !limits.is_unlimited() || limits.burst.is_some();
    let stored = own
        .then(|| serde_json::to_string(&limits))
        .transpose()
        .map_err(|e| ApiError::Internal(e.into()))?;
    app.store
        .set_token_limits(&ws, &token, stored.as_deref(), &user.username)
        .await?;
    app.publish().await?;
    Ok(Json(
        json!({"token": {"id": token.id, "name": token.name, "limits": own.then_some(limits)}}),
    ))
}

/// Stored limits JSON, or none.
pub fn parse<T: serde::de::DeserializeOwned + Default>(json: Option<&str>) -> ApiResult<T> {
    json.map_or_else(
        || Ok(T::default()),
        |j| serde_json::from_str(j).map_err(|e| ApiError::Internal(e.into())),
    )
}

fn checked(problems: Vec<Problem>) -> ApiResult<()> {
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::Invalid {
        message: "invalid limits".into(),
        problems,
    })
}
