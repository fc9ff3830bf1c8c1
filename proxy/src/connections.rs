//! The client connections one proxy holds: each is counted from its accept to its
//! close (every request it carries, and the waits for the next, inside), and past
//! `limits.max_connections` a new one is answered `503` with a JSON-RPC error and
//! closed at once, so a flood of connections cannot take every descriptor and all
//! the memory from the clients already served. Wraps the HTTP application
//! ([`crate::gateway::Gateway`]) as Pingora's per-connection [`ServerApp`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncWriteExt;

use crate::shared::Shared;

/// How long a refused connection may take to take its answer.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// `app`, behind a cap on the connections it holds at once.
pub struct Connections<A> {
    app: Arc<A>,
    shared: Arc<Shared>,
    open: AtomicU32,
}

impl<A> Connections<A> {
    pub fn new(app: A, shared: Arc<Shared>) -> Connections<A> {
        Connections {
            app: Arc::new(app),
            shared,
            open: AtomicU32::new(0),
        }
    }
}

/// One open connection's place; given back however the connection ends.
struct Open<'a, A>(&'a Connections<A>);

impl<A> Drop for Open<'_, A> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.shared.metrics.open_connections.dec();
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Connections<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let max = self.shared.config.load().limits.max_connections;
        let admitted = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.shared.metrics.connections_refused.inc();
            refuse(stream, max).await;
            return None;
        }
        self.shared.metrics.open_connections.inc();
        let _open = Open(self);
        // The connection's requests one after another, as Pingora would run them,
        // so that it holds its place until it closes.
        let mut next = self.app.process_new(stream, shutdown).await;
        while let Some(stream) = next {
            next = self.app.process_new(stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        self.app.cleanup().await;
    }
}

/// Answers a connection over the cap, without reading its request, and closes it.
async fn refuse(mut stream: Stream, max: u32) {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":null,"error":{{"code":-32000,"message":"Gateway busy: {max} client connections are open, the most it holds; retry shortly"}}}}"#
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
         Retry-After: 1\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE, async {
        stream.write_all(answer.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}
