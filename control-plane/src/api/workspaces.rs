//! Workspaces, their tokens and their audit log.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use gatehouse_config::naming::{is_valid_slug, slugify};
use gatehouse_config::policy::CompiledScope;
use gatehouse_config::{Problem, TokenScope, TOKEN_PREFIX};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::request::{AuthUser, Body};
use crate::calls::listing::{merge, parse_cursor, AuditEntry};
use crate::crypto::{random_id, random_token};
use crate::state::{sha256_hex, App};
use crate::store::{now, AuditQuery, NewToken, TokenRow, WorkspaceRow};

/// The workspace if the user may see it; 404 otherwise, existing or not.
pub async fn visible(app: &App, user: &AuthUser, slug: &str) -> ApiResult<WorkspaceRow> {
    app.store
        .visible_workspace(&user.id, slug)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("workspace {slug:?} not found")))
}

fn workspace_json(w: &WorkspaceRow) -> Value {
    let limits: Option<Value> = w
        .limits
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    json!({"slug": w.slug, "name": w.name, "owner": w.owner, "servers": w.servers,
           "tokens": w.tokens, "created_at": w.created_at, "limits": limits})
}

fn token_json(t: &TokenRow) -> Value {
    let status = if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now()) {
        "expired"
    } else {
        "active"
    };
    let stored =
        |json: Option<&str>| -> Option<Value> { json.and_then(|j| serde_json::from_str(j).ok()) };
    json!({"id": t.id, "name": t.name, "created_at": t.created_at, "expires_at": t.expires_at,
           "last_used_at": t.last_used_at, "status": status, "limits": stored(t.limits.as_deref()),
           "scope": stored(t.scope.as_deref())})
}

fn mcp_json(app: &App, slug: &str, secret: &str) -> Value {
    let (url, _) = app.gateway_urls(slug);
    json!({"mcpServers": {slug: {"url": url, "headers": {"Authorization": format!("Bearer {secret}")}}}})
}

/// A fresh token: the secret text (shown once) and what is stored. A scope that
/// limits nothing is stored as none.
fn new_token(
    name: &str,
    expires_in: Option<i64>,
    scope: Option<&TokenScope>,
    created_by: &str,
) -> ApiResult<(String, NewToken)> {
    let name = name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest(
            "a token needs a name of 1 to 100 characters".into(),
        ));
    }
    if expires_in.is_some_and(|s| s <= 0) {
        return Err(ApiError::BadRequest(
            "expires_in must be a positive number of seconds".into(),
        ));
    }
    let scope = scope.filter(|s| !s.is_everything());
    if let Some(Err(e)) = scope.map(CompiledScope::compile) {
        return Err(ApiError::Invalid {
            message: "invalid token scope".into(),
            problems: vec![Problem {
                path: "scope.tools".into(),
                message: e.to_string(),
            }],
        });
    }
    let secret = random_token(TOKEN_PREFIX);
    let stored = NewToken {
        id: random_id("tok_"),
        name: name.to_string(),
        sha256: sha256_hex(&secret),
        expires_at: expires_in.map(|s| now() + s),
        created_by: created_by.to_string(),
        scope: scope
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| ApiError::Internal(e.into()))?,
    };
    Ok((secret, stored))
}

pub async fn list(State(app): State<Arc<App>>, user: AuthUser) -> ApiResult<Json<Value>> {
    let rows = app.store.visible_workspaces(&user.id).await?;
    Ok(Json(
        json!({"workspaces": rows.iter().map(workspace_json).collect::<Vec<_>>()}),
    ))
}

pub async fn show(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(workspace_json(&visible(&app, &user, &ws).await?)))
}

#[derive(Deserialize)]
pub struct NewWorkspace {
    pub name: String,
    pub slug: Option<String>,
}

pub async fn create(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Body(req): Body<NewWorkspace>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::BadRequest(
            "a workspace needs a name of 1 to 100 characters".into(),
        ));
    }
    let slug = match &req.slug {
        Some(s) => s.clone(),
        None => slugify(name).into_owned(),
    };
    if !is_valid_slug(&slug) {
        return Err(ApiError::BadRequest(format!(
            "workspace slug {slug:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$ (pass --slug)"
        )));
    }
    if app.store.workspace_slug_taken(&slug).await? {
        return Err(ApiError::Conflict(format!(
            "workspace {slug:?} already exists"
        )));
    }
    let (secret, token) = new_token("default", None, None, &user.id)?;
    app.store
        .insert_workspace(&slug, name, &user.id, &token, &user.username)
        .await
        .map_err(|e| match e {
            // Lost a race with another create of the same slug.
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::Conflict(format!("workspace {slug:?} already exists"))
            }
            e => e.into(),
        })?;
    app.publish().await?;
    let ws = visible(&app, &user, &slug).await?;
    let tokens = app.store.tokens(&ws.id).await?;
    let (gateway_url, sse_url) = app.gateway_urls(&slug);
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "workspace": workspace_json(&ws),
            "gateway_url": gateway_url,
            "sse_url": sse_url,
            "token": tokens.first().map(token_json),
            "secret": secret,
            "mcp_json": mcp_json(&app, &slug, &secret),
        })),
    ))
}

pub async fn remove(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    if ws.owner != user.username {
        return Err(ApiError::Forbidden(format!(
            "only the owner of {:?} can delete it",
            ws.slug
        )));
    }
    let (tokens, servers, secrets) = app.store.delete_workspace(&ws, &user.username).await?;
    app.publish().await?;
    Ok(Json(
        json!({"revoked_tokens": tokens, "removed_servers": servers, "deleted_secrets": secrets}),
    ))
}

pub async fn tokens(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let rows = app.store.tokens(&ws.id).await?;
    Ok(Json(
        json!({"tokens": rows.iter().map(token_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
pub struct NewTokenRequest {
    pub name: String,
    pub expires_in: Option<i64>,
    /// The tools it may see and call; every tool when absent.
    pub scope: Option<TokenScope>,
}

pub async fn create_token(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
    Body(req): Body<NewTokenRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let ws = visible(&app, &user, &ws).await?;
    let (secret, token) = new_token(&req.name, req.expires_in, req.scope.as_ref(), &user.id)?;
    app.store
        .create_token(&ws, &token, &user.username)
        .await
        .map_err(|e| match e {
            // The workspace was deleted since it was read, by another request.
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                ApiError::NotFound(format!("workspace {:?} not found", ws.slug))
            }
            e => e.into(),
        })?;
    app.publish().await?;
    let row = app
        .store
        .tokens(&ws.id)
        .await?
        .into_iter()
        .find(|t| t.id == token.id)
        // Deleted with its workspace, by another request, since it was created.
        .ok_or_else(|| ApiError::NotFound(format!("workspace {:?} not found", ws.slug)))?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"token": token_json(&row), "secret": secret, "mcp_json": mcp_json(&app, &ws.slug, &secret)}),
        ),
    ))
}

#[derive(Deserialize)]
pub struct Revoke {
    pub name: Option<String>,
    pub id: Option<String>,
}

pub async fn revoke_token(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
    Body(req): Body<Revoke>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let rows = app.store.tokens(&ws.id).await?;
    let matches: Vec<&TokenRow> = match (&req.id, &req.name) {
        (Some(id), _) => rows.iter().filter(|t| &t.id == id).collect(),
        (None, Some(name)) => rows
            .iter()
            .filter(|t| &t.name == name && t.revoked_at.is_none())
            .collect(),
        (None, None) => return Err(ApiError::BadRequest("give the token's name or id".into())),
    };
    let token = match matches.as_slice() {
        [one] => *one,
        [] => {
            let what = req.id.or(req.name).unwrap_or_default();
            return Err(ApiError::NotFound(format!(
                "no active token {what:?} in {:?}",
                ws.slug
            )));
        }
        _ => {
            return Err(ApiError::Conflict(format!(
                "{} active tokens are named {:?}: revoke by id",
                matches.len(),
                req.name.unwrap_or_default()
            )))
        }
    };
    let revoked = match app.store.revoke_token(&ws, token, &user.username).await? {
        Some(revoked) => {
            app.publish().await?;
            revoked
        }
        // Revoking a revoked token (by id) changes nothing.
        None if token.revoked_at.is_some() => token.clone(),
        // Revoked (or its workspace deleted) since it was read, by another request.
        None => {
            let what = req.id.or(req.name).unwrap_or_default();
            return Err(ApiError::NotFound(format!(
                "no active token {what:?} in {:?}",
                ws.slug
            )));
        }
    };
    Ok(Json(json!({"token": token_json(&revoked)})))
}

/// The most audit entries one request returns; the rest are reached page by page.
pub const MAX_AUDIT_PAGE: i64 = 10_000;

#[derive(Deserialize, Default)]
pub struct AuditParams {
    pub since: Option<i64>,
    pub user: Option<String>,
    pub action: Option<String>,
    pub limit: Option<i64>,
    /// `asc` (oldest first, the default) or `desc` (newest first).
    pub order: Option<String>,
    /// The `next_cursor` of the previous page: this page starts after it.
    pub cursor: Option<String>,
}

/// Admin events and routed calls, merged oldest first (or newest first), at most
/// `limit` of them; `next_cursor`, when the page is full, continues the walk, so
/// every entry is reached however many there are.
pub async fn audit(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
    Query(q): Query<AuditParams>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let newest_first = match q.order.as_deref() {
        None | Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "order {other:?}: expected \"asc\" or \"desc\""
            )))
        }
    };
    let after = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(text) => Some(parse_cursor(text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "cursor {text:?} is not one this API gave (use the last page's next_cursor)"
            ))
        })?),
    };
    let query = AuditQuery {
        since: q.since,
        actor: q.user,
        action: q.action,
        limit: q.limit.unwrap_or(1000).clamp(1, MAX_AUDIT_PAGE),
        newest_first,
        after,
    };
    let admin = app
        .store
        .audit_events(&ws, ws.owner == user.username, &query)
        .await?;
    let calls = app.store.call_events(&ws, &query).await?;
    let entries = merge(admin, calls, query.limit as usize, newest_first);
    let next_cursor = (entries.len() as i64 == query.limit)
        .then(|| entries.last().map(AuditEntry::cursor))
        .flatten();
    let events: Vec<Value> = entries.iter().map(AuditEntry::to_json).collect();
    Ok(Json(json!({"events": events, "next_cursor": next_cursor})))
}
