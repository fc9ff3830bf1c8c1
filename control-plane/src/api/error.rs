//! The API's errors: every way a call can fail ([`ApiError`]), and how each becomes
//! `{"error": {"code", "message"}}` with the matching status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::CredentialError;

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
