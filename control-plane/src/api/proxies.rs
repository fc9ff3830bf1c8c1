//! Proxies: the snapshot watch stream they hold open, the versions they report, and
//! the list `gatehouse proxies` shows. What is known of each proxy is kept in
//! [`crate::proxies`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::WatchStream;

use super::error::ApiResult;
use super::request::{AuthProxy, AuthUser, Body};
use crate::state::App;

/// Marks a proxy disconnected when its watch stream is dropped.
struct StreamGuard {
    app: Arc<App>,
    id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.app
            .proxies
            .update(&self.id, None, |p| p.streams = p.streams.saturating_sub(1));
    }
}

#[derive(Deserialize)]
pub struct WatchParams {
    id: String,
    name: Option<String>,
}

/// The current snapshot at once, then every newer one as it is published, as SSE
/// events `snapshot` whose id is the version. Keep-alive comments every 15 s.
pub async fn watch(
    State(app): State<Arc<App>>,
    _proxy: AuthProxy,
    Query(params): Query<WatchParams>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    app.proxies
        .update(&params.id, params.name.as_deref(), |p| p.streams += 1);
    let guard = StreamGuard {
        app: app.clone(),
        id: params.id,
    };
    let stream = WatchStream::new(app.snapshots.subscribe())
        .filter(|p| futures::future::ready(p.version > 0))
        .map(move |p| {
            let _held = &guard;
            Ok(Event::default()
                .event("snapshot")
                .id(p.version.to_string())
                .data(p.json.as_str()))
        });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[derive(Deserialize)]
pub struct Status {
    id: String,
    name: Option<String>,
    version: i64,
}

pub async fn status(
    State(app): State<Arc<App>>,
    _proxy: AuthProxy,
    Body(s): Body<Status>,
) -> ApiResult<Json<Value>> {
    app.proxies.update(&s.id, s.name.as_deref(), |p| {
        p.version = p.version.max(s.version)
    });
    Ok(Json(
        json!({"config_version": app.snapshots.borrow().version}),
    ))
}

#[derive(Deserialize)]
pub struct Usage {
    tokens: Vec<TokenUse>,
}

#[derive(Deserialize)]
pub struct TokenUse {
    id: String,
    last_used: i64,
}

/// Proxies report when tokens were last used; LAST USED only moves forward.
pub async fn usage(
    State(app): State<Arc<App>>,
    _proxy: AuthProxy,
    Body(u): Body<Usage>,
) -> ApiResult<Json<Value>> {
    let uses: Vec<(String, i64)> = u.tokens.into_iter().map(|t| (t.id, t.last_used)).collect();
    let updated = app.store.touch_tokens(&uses).await?;
    Ok(Json(json!({"updated": updated})))
}

pub async fn list(State(app): State<Arc<App>>, _user: AuthUser) -> ApiResult<Json<Value>> {
    let current = app.snapshots.borrow().version;
    let list: Vec<Value> = app
        .proxies
        .list()
        .into_iter()
        .map(|(id, p)| {
            json!({"id": id, "name": p.name, "version": p.version, "config_version": current,
                   "lag": (current - p.version).max(0), "connected": p.streams > 0,
                   "last_seen": p.last_seen})
        })
        .collect();
    Ok(Json(json!({"proxies": list})))
}
