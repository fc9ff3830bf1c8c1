//! The admin API under `/v1`: JSON in, JSON out, typed errors that become
//! `{"error": {"code", "message"}}` with the matching status (`error`). Users
//! authenticate with a JWT from `/v1/login`; proxies with the proxy token
//! (`request`). This file owns the router: which handler serves which route.

pub(crate) mod calls;
pub(crate) mod error;
pub(crate) mod limits;
mod metrics;
#[cfg(test)]
mod openapi_check;
pub(crate) mod packages;
pub(crate) mod proxies;
pub(crate) mod request;
pub(crate) mod servers;
pub(crate) mod teams;
pub(crate) mod users;
pub(crate) mod workspaces;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;

use crate::calls::batch::MAX_BATCH_BYTES;
use crate::state::App;

/// The API's routes and `other` (the dashboard's, which this module does not know),
/// all counted by the same request metrics, unmatched requests included.
pub fn router(app: Arc<App>, other: Router) -> Router {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/openapi.yaml", get(openapi))
        .route("/v1/login", post(users::login))
        .route("/v1/logout", post(users::logout))
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
        .route(
            "/v1/workspaces/{ws}/limits",
            get(limits::show).put(limits::set),
        )
        .route(
            "/v1/workspaces/{ws}/tokens/{id}/limits",
            put(limits::set_token),
        )
        .route("/v1/workspaces/{ws}/audit", get(workspaces::audit))
        .route("/v1/workspaces/{ws}/analytics", get(calls::analytics))
        .route(
            "/v1/workspaces/{ws}/servers",
            get(servers::list).post(servers::install),
        )
        .route(
            "/v1/workspaces/{ws}/servers/{server}",
            delete(servers::remove).patch(servers::update),
        )
        .route(
            "/v1/workspaces/{ws}/servers/{server}/tools",
            get(servers::tool_overrides),
        )
        .route(
            "/v1/workspaces/{ws}/servers/{server}/tools/{tool}",
            put(servers::set_tool_override),
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
        .merge(other)
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
