//! What the API reads from every request besides its path and query: a JSON body
//! whose rejection is an [`ApiError`] ([`Body`]), and who sends it, a user by bearer
//! JWT ([`AuthUser`]) or a proxy by the proxy token ([`AuthProxy`]).

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use crate::state::{sha256_hex, App};

/// A JSON request body whose rejection is an [`ApiError`].
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(
                ApiError::TooLarge(format!("request body too large: {}", rejection.body_text())),
            ),
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// The user a request acts as, from its bearer JWT.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: String,
    pub username: String,
    pub admin: bool,
}

impl FromRequestParts<Arc<App>> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts)
            .ok_or_else(|| ApiError::Unauthorized("not logged in: run `gatehouse login`".into()))?;
        AuthUser::of_session(app, token).await
    }
}

impl AuthUser {
    /// The user a session JWT (from `/v1/login`) belongs to, whichever way it came:
    /// a bearer header here, the dashboard's session cookie there.
    pub async fn of_session(app: &App, token: &str) -> Result<AuthUser, ApiError> {
        let claims = app.sessions.verify(token)?;
        // Signed out on this or another control plane of the database.
        if app.store.session_revoked(&sha256_hex(token)).await? {
            return Err(ApiError::Unauthorized(
                "this session was signed out: run `gatehouse login`".into(),
            ));
        }
        let user = app.store.user_by_id(&claims.sub).await?.ok_or_else(|| {
            ApiError::Unauthorized("user no longer exists: run `gatehouse login`".into())
        })?;
        Ok(AuthUser {
            id: user.id,
            username: user.username,
            admin: user.admin != 0,
        })
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    bearer_of(&parts.headers)
}

/// The token of an `Authorization: Bearer ...` header.
pub fn bearer_of(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A proxy, authenticated by the proxy token.
pub struct AuthProxy;

impl FromRequestParts<Arc<App>> for AuthProxy {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::Unauthorized("proxy token required".into()))?;
        if app.proxy_token_matches(token) {
            Ok(AuthProxy)
        } else {
            Err(ApiError::Unauthorized("invalid proxy token".into()))
        }
    }
}
