//! The admin listener: `/metrics` (the [`Metrics`](crate::metrics::Metrics)
//! exposition) and `/healthz` (ready once MCP clients can connect).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::shared::Shared;

/// The admin listener: `/metrics` and `/healthz`.
pub struct AdminApp {
    pub state: Arc<Shared>,
    pub client_listener: ClientListener,
}

/// Whether the client listener accepts connections yet. Pingora binds each service's
/// listeners on that service's own thread, so the admin listener can answer before
/// MCP clients can connect; `/healthz` says 503 until they can.
pub struct ClientListener {
    addr: String,
    up: AtomicBool,
}

impl ClientListener {
    pub fn new(addr: &str) -> ClientListener {
        ClientListener {
            addr: addr.to_owned(),
            up: AtomicBool::new(false),
        }
    }

    /// Connects once to find out, until the first success; a listener, once bound,
    /// stays bound for the life of the process.
    async fn accepts(&self) -> bool {
        if self.up.load(Ordering::Relaxed) {
            return true;
        }
        let connected = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tokio::net::TcpStream::connect(&self.addr),
        )
        .await
        .is_ok_and(|c| c.is_ok());
        if connected {
            self.up.store(true, Ordering::Relaxed);
        }
        connected
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path();
        let (status, content_type, body) = match path {
            "/metrics" => {
                // Gauges that are a function of the time of the scrape.
                let m = &self.state.metrics;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                m.config_age
                    .set((now - m.config_updated.get() as f64).max(0.0));
                m.audit_queue.set(self.state.audit.queued() as i64);
                (200, "text/plain; version=0.0.4; charset=utf-8", m.render())
            }
            "/healthz" => {
                let version = self.state.config.load().version;
                let (status, word) = if self.client_listener.accepts().await {
                    (200, "ok")
                } else {
                    (503, "starting")
                };
                (
                    status,
                    "application/json",
                    serde_json::to_vec(&serde_json::json!({
                        "status": word,
                        "config_version": version,
                    }))
                    .expect("json"),
                )
            }
            _ => (
                404,
                "application/json",
                br#"{"error":"not found"}"#.to_vec(),
            ),
        };
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, content_type)
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(body)
            .expect("valid response")
    }
}
