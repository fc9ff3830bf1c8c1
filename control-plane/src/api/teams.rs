//! Teams: a user's namespace (`@acme`) and the people they invited into it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::request::{AuthUser, Body};
use crate::crypto::random_token;
use crate::state::{sha256_hex, App};
use crate::store::now;
use crate::store::teams::TeamMemberRow;

/// How long an invitation can be accepted.
pub const INVITATION_TTL_SECS: i64 = 7 * 86_400;

fn member_json(m: &TeamMemberRow) -> Value {
    json!({"email": m.email, "username": m.username, "status": m.status,
           "invited_at": m.invited_at, "joined_at": m.joined_at, "expires_at": m.expires_at})
}

#[derive(Deserialize)]
pub struct Invite {
    pub email: String,
}

pub async fn invite(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Body(req): Body<Invite>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let email = req.email.trim().to_lowercase();
    let valid = email
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
        && !email.contains(char::is_whitespace);
    if !valid {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not an email address",
            req.email
        )));
    }
    let team = app.store.team(&user.id).await?;
    if team
        .iter()
        .any(|m| m.email == email && m.status == "active")
    {
        return Err(ApiError::Conflict(format!(
            "{email} is already a member of @{}",
            user.username
        )));
    }
    let code = random_token("inv_");
    let expires_at = now() + INVITATION_TTL_SECS;
    app.store
        .invite(
            &user.id,
            &email,
            &sha256_hex(&code),
            expires_at,
            &user.username,
        )
        .await?;
    let row = app
        .store
        .team(&user.id)
        .await?
        .into_iter()
        .find(|m| m.email == email)
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("invitation vanished")))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "invitation": member_json(&row),
            "code": code,
            "join_command": format!("gatehouse team accept {code}"),
            // No SMTP transport is configured in this build: the code is handed over by hand.
            "emailed": false,
        })),
    ))
}

pub async fn list(State(app): State<Arc<App>>, user: AuthUser) -> ApiResult<Json<Value>> {
    let members = app.store.team(&user.id).await?;
    Ok(Json(
        json!({"owner": user.username, "members": members.iter().map(member_json).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
pub struct Accept {
    pub code: String,
}

pub async fn accept(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Body(req): Body<Accept>,
) -> ApiResult<Json<Value>> {
    let invalid = || ApiError::NotFound("no such invitation: check the code".into());
    let row = app
        .store
        .invitation_by_code(&sha256_hex(req.code.trim()))
        .await?
        .ok_or_else(invalid)?;
    let owner = app
        .store
        .user_by_id(&row.owner_id)
        .await?
        .ok_or_else(invalid)?;
    if row.status != "pending" {
        return Err(ApiError::Conflict(
            "this invitation was already used".into(),
        ));
    }
    if row.expires_at <= now() {
        return Err(ApiError::BadRequest(format!(
            "this invitation expired: ask @{} for a new one",
            owner.username
        )));
    }
    let me = app.store.user_by_id(&user.id).await?.ok_or_else(invalid)?;
    if !me.email.eq_ignore_ascii_case(&row.email) {
        return Err(ApiError::Forbidden(format!(
            "this invitation is for {}, and you are signed in as {} <{}>",
            row.email, me.username, me.email
        )));
    }
    if owner.id == me.id {
        return Err(ApiError::BadRequest("you cannot join your own team".into()));
    }
    if !app
        .store
        .accept_invitation(&row.id, &me.id, &me.username)
        .await?
    {
        // Accepted (or withdrawn) since it was read, by another request.
        return Err(ApiError::Conflict(
            "this invitation was already used".into(),
        ));
    }
    Ok(Json(json!({"owner": owner.username})))
}

/// Removes a member (by email or username). They lose access to the owner's
/// workspaces and team packages; installs of the owner's non-public packages in
/// workspaces they own are removed too — a removed member keeps nothing internal.
pub async fn remove(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(who): Path<String>,
) -> ApiResult<Json<Value>> {
    let who = who.trim().to_lowercase();
    let row = app
        .store
        .team(&user.id)
        .await?
        .into_iter()
        .find(|m| m.email == who || m.username.as_deref() == Some(who.as_str()))
        .ok_or_else(|| ApiError::NotFound(format!("{who} is not in @{}'s team", user.username)))?;
    let revoked_tokens = app.store.remove_team_member(&row, &user.username).await?;
    let uninstalled = match &row.member_id {
        Some(member) => {
            app.store
                .uninstall_team_packages(&user.username, member, &user.username)
                .await?
        }
        None => 0,
    };
    app.publish().await?;
    Ok(Json(
        json!({"owner": user.username, "removed": row.email, "uninstalled": uninstalled,
               "revoked_tokens": revoked_tokens}),
    ))
}
