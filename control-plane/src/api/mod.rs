//! The admin API under `/v1`: JSON in, JSON out, typed errors that become
//! `{"error": {"code", "message"}}` with the matching status. Users authenticate with
//! a JWT from `/v1/login`; proxies with the proxy token.

mod calls;
mod metrics;
#[cfg(test)]
mod openapi_check;
mod packages;
mod proxies;
mod servers;
mod teams;
mod users;
mod workspaces;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::calls::batch::MAX_BATCH_BYTES;
use crate::state::{App, CredentialError};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/openapi.yaml", get(openapi))
        .route("/v1/login", post(users::login))
        .route("/v1/whoami", get(users::whoami))
        .route("/v1/users", post(users::create).get(users::list))
        .route(
            "/v1/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route(
            "/v1/workspaces/{ws}",
            get(workspaces::show).delete(workspaces::remove),
        )
        .route(
            "/v1/workspaces/{ws}/tokens",
            get(workspaces::tokens).post(workspaces::create_token),
        )
        .route(
            "/v1/workspaces/{ws}/tokens/revoke",
            post(workspaces::revoke_token),
        )
        .route("/v1/workspaces/{ws}/audit", get(workspaces::audit))
        .route("/v1/workspaces/{ws}/analytics", get(calls::analytics))
        .route(
            "/v1/workspaces/{ws}/servers",
            get(servers::list).post(servers::install),
        )
        .route(
            "/v1/workspaces/{ws}/servers/{server}",
            delete(servers::remove),
        )
        .route(
            "/v1/workspaces/{ws}/servers/{server}/secrets/{name}",
            put(servers::set_secret).delete(servers::delete_secret),
        )
        .route("/v1/workspaces/{ws}/secrets", get(servers::secrets))
        .route(
            "/v1/packages",
            get(packages::search).post(packages::publish),
        )
        .route("/v1/packages/mine", get(packages::mine))
        .route(
            "/v1/packages/{owner}/{name}",
            get(packages::show).delete(packages::unpublish),
        )
        .route(
            "/v1/packages/{owner}/{name}/versions",
            get(packages::versions),
        )
        .route("/v1/workspaces/{ws}/packages", post(packages::install))
        .route("/v1/team", get(teams::list))
        .route("/v1/team/invitations", post(teams::invite))
        .route("/v1/team/accept", post(teams::accept))
        .route("/v1/team/members/{who}", delete(teams::remove))
        .route("/v1/proxies", get(proxies::list))
        .route("/v1/proxy/watch", get(proxies::watch))
        .route("/v1/proxy/status", post(proxies::status))
        .route("/v1/proxy/usage", post(proxies::usage))
        .route(
            "/v1/proxy/audit",
            post(calls::ingest).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)),
        )
        .with_state(app.clone())
        // Outside the routes, so it sees unmatched requests too; `Router::layer` still
        // runs it after routing, which is what puts `MatchedPath` in reach.
        .layer(axum::middleware::from_fn_with_state(app, metrics::track))
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        include_str!("../../openapi.yaml"),
    )
}

/// Every way an API call can fail.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A request body over a size or count limit.
    #[error("{0}")]
    TooLarge(String),
    /// A request body that parsed but is wrong in named places.
    #[error("{message}")]
    Invalid {
        message: String,
        problems: Vec<gatehouse_config::Problem>,
    },
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    pub fn invalid_manifest(problems: Vec<gatehouse_config::Problem>) -> ApiError {
        ApiError::Invalid {
            message: "invalid manifest".into(),
            problems,
        }
    }
}

impl From<CredentialError> for ApiError {
    fn from(e: CredentialError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::Invalid { problems, .. } => {
                let problems: Vec<_> = problems
                    .iter()
                    .map(|p| json!({"path": p.path, "message": p.message}))
                    .collect();
                let body = json!({"error": {"code": "invalid_request", "message": self.to_string(), "problems": problems}});
                return (StatusCode::BAD_REQUEST, Json(body)).into_response();
            }
            ApiError::Internal(e) => {
                tracing::error!("internal error: {e:#}");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        let body = Json(json!({"error": {"code": code, "message": self.to_string()}}));
        (status, body).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

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
        let claims = app.sessions.verify(token)?;
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
    let value = parts
        .headers
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
