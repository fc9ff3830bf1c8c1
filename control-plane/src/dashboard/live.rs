//! The change stream live pages listen to: one server-sent event `changed` each time
//! the control plane publishes a new configuration (a token created or revoked, a
//! server installed or removed, a secret set, a member removed), wherever the change
//! came from. An event carries only the new config version, which the API already
//! shows every user; the page then fetches itself again, so what it shows is still
//! decided by the same handlers and the same authorisation.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::WatchStream;

use super::session::Session;
use crate::state::App;

pub async fn changes(
    State(app): State<Arc<App>>,
    _session: Session,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // A new receiver has seen the current version: only later ones are changes.
    let stream = WatchStream::from_changes(app.snapshots.subscribe()).map(|published| {
        Ok(Event::default()
            .event("changed")
            .data(published.version.to_string()))
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
