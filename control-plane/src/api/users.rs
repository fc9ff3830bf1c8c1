//! Login, whoami and user administration.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use gatehouse_config::naming::is_valid_slug;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::request::{AuthUser, Body};
use crate::crypto::random_token;
use crate::state::{sha256_hex, App};
use crate::store::UserRow;

#[derive(Deserialize)]
pub struct Login {
    pub username: String,
    pub credential: String,
}

fn user_json(u: &UserRow) -> Value {
    json!({"username": u.username, "email": u.email, "admin": u.admin != 0})
}

pub async fn login(State(app): State<Arc<App>>, Body(req): Body<Login>) -> ApiResult<Json<Value>> {
    let refused = || ApiError::Unauthorized("unknown user or wrong credential".into());
    let user = app
        .store
        .user_by_name(&req.username)
        .await?
        .ok_or_else(refused)?;
    let given = sha256_hex(&req.credential);
    use subtle::ConstantTimeEq;
    if !bool::from(given.as_bytes().ct_eq(user.credential_sha256.as_bytes())) {
        return Err(refused());
    }
    let (token, expires_at) = app.sessions.issue(&user);
    Ok(Json(
        json!({"token": token, "expires_at": expires_at, "user": user_json(&user)}),
    ))
}

/// Signs the caller's session out on every control plane of the database: the JWT
/// it was called with is refused from now on (`gatehouse logout`).
pub async fn logout(
    State(app): State<Arc<App>>,
    _user: AuthUser,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<Value>> {
    if let Some(token) = super::request::bearer_of(&headers) {
        app.sign_out(token).await?;
    }
    Ok(Json(json!({"logged_out": true})))
}

pub async fn whoami(State(app): State<Arc<App>>, user: AuthUser) -> ApiResult<Json<Value>> {
    let row = app
        .store
        .user_by_id(&user.id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("user no longer exists".into()))?;
    Ok(Json(user_json(&row)))
}

#[derive(Deserialize)]
pub struct NewUser {
    username: String,
    email: String,
    #[serde(default)]
    admin: bool,
}

pub async fn create(
    State(app): State<Arc<App>>,
    actor: AuthUser,
    Body(req): Body<NewUser>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !actor.admin {
        return Err(ApiError::Forbidden("only an admin can create users".into()));
    }
    if !is_valid_slug(&req.username) {
        return Err(ApiError::BadRequest(format!(
            "username {:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$ (it is the user's namespace, @{})",
            req.username, req.username
        )));
    }
    if !req.email.contains('@') {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not an email address",
            req.email
        )));
    }
    if app.store.user_by_name(&req.username).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "user {:?} already exists",
            req.username
        )));
    }
    let credential = random_token("ghu_");
    let user = app
        .store
        .insert_user(
            &req.username,
            &req.email,
            req.admin,
            &sha256_hex(&credential),
            &actor.username,
        )
        .await
        .map_err(|e| match e {
            // Lost a race with another create of the same username.
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::Conflict(format!("user {:?} already exists", req.username))
            }
            e => e.into(),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"user": user_json(&user), "credential": credential})),
    ))
}

pub async fn list(State(app): State<Arc<App>>, actor: AuthUser) -> ApiResult<Json<Value>> {
    if !actor.admin {
        return Err(ApiError::Forbidden("only an admin can list users".into()));
    }
    let users = app.store.users().await?;
    Ok(Json(
        json!({"users": users.iter().map(user_json).collect::<Vec<_>>()}),
    ))
}
