//! `GET /metrics` and the middleware that counts every API request by its route
//! template.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::App;

/// The Prometheus text exposition. Unauthenticated, like the proxy's: it carries no
/// workspace, token or user names.
pub async fn scrape(State(app): State<Arc<App>>) -> impl IntoResponse {
    let version = app.snapshots.borrow().version;
    let proxies = app.proxies.gauges(version);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(version, &proxies),
    )
}

/// Counts and times each request under its route template: the raw path would
/// put workspace slugs (and anything a caller makes up) into label values.
/// Streams (the proxies' watch) are timed to their first byte, not their end.
pub async fn track(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    app.metrics.api_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
