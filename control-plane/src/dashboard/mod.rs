//! The admin dashboard under `/dashboard`: server-rendered HTML pages (maud templates,
//! escaped at compile time) on the admin API's own listener, for people who would
//! rather click than type `gatehouse ...`. It owns sign-in with a session cookie and
//! CSRF tokens (`session`, `sign_in`), the page shell and error pages (`shell`), the
//! change stream live pages listen to (`live`), and one module per page family. It
//! owns no business rules and no authorisation: every read and every change calls the
//! very handler of `crate::api` that serves the same thing to the CLI, as the
//! signed-in user, so a page shows exactly what the API would answer that user and
//! refuses what the API refuses. The one page with no API twin, a workspace's tools,
//! first passes the API's own `workspaces::visible` check. Its two assets (a style
//! sheet, and a small script for copy buttons, live pages and loading a manifest file)
//! are compiled into the binary.

mod analytics;
mod audit;
mod hub;
mod live;
mod proxies;
mod session;
mod shell;
mod sign_in;
mod team;
mod tools;
mod workspace;
mod workspaces;

use std::sync::Arc;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::state::App;

pub use shell::PATH;

pub fn router(app: Arc<App>) -> Router {
    let pages = Router::new()
        .route("/", get(workspaces::home))
        .route("/login", get(sign_in::login_page).post(sign_in::login))
        .route("/logout", post(sign_in::logout))
        .route(
            "/workspaces",
            get(workspaces::list).post(workspaces::create),
        )
        .route("/workspaces/{ws}", get(workspace::show))
        .route(
            "/workspaces/{ws}/delete",
            get(workspaces::confirm_delete).post(workspaces::delete),
        )
        .route("/workspaces/{ws}/servers", post(workspace::install))
        .route("/workspaces/{ws}/packages", post(hub::install_into))
        .route(
            "/workspaces/{ws}/servers/{server}/remove",
            post(workspace::remove_server),
        )
        .route(
            "/workspaces/{ws}/servers/{server}/enabled",
            post(workspace::set_enabled),
        )
        .route(
            "/workspaces/{ws}/servers/{server}/policy",
            post(workspace::set_policy),
        )
        .route("/workspaces/{ws}/secrets", post(workspace::set_secret))
        .route("/workspaces/{ws}/tokens", post(workspace::create_token))
        .route(
            "/workspaces/{ws}/tokens/revoke",
            post(workspace::revoke_token),
        )
        .route("/workspaces/{ws}/tools", get(tools::show))
        .route("/workspaces/{ws}/audit", get(audit::show))
        .route("/workspaces/{ws}/analytics", get(analytics::show))
        .route("/live", get(live::changes))
        .route("/hub", get(hub::show))
        .route("/hub/install", post(hub::install))
        .route("/hub/publish", post(hub::publish))
        .route("/hub/{owner}/{name}", get(hub::package))
        .route("/team", get(team::show))
        .route("/team/invite", post(team::invite))
        .route("/team/accept", post(team::accept))
        .route("/team/remove", post(team::remove))
        .route("/proxies", get(proxies::show))
        .route("/assets/dashboard.css", get(stylesheet))
        .route("/assets/dashboard.js", get(script))
        .fallback(shell::not_found)
        .layer(axum::middleware::map_response(protective_headers))
        .with_state(app);
    // `nest` serves `/dashboard` itself; the trailing-slash spelling goes to the same place.
    Router::new()
        .route(
            "/dashboard/",
            get(|| async { axum::response::Redirect::to(PATH) }),
        )
        .nest(PATH, pages)
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("assets/dashboard.css"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("assets/dashboard.js"),
    )
}

/// Every dashboard answer: no inline script or style runs (the pages have none, so an
/// injected one would not either), no framing, no referrer leaving with a URL, and
/// pages (which may hold a token shown once) are never cached.
async fn protective_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let is_html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if is_html {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
