//! A loopback HTTP forwarder that adds one header to every request it passes on: how a
//! client that sends no credentials of its own (the MCP conformance suite) reaches a
//! workspace with a bearer token, without the gateway growing an unauthenticated mode.
//! Replies, event streams included, are streamed back as they arrive. It keeps the
//! headers of every request it passed, so a test can see what reached the server.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use futures::TryStreamExt;
use tokio::task::JoinHandle;

/// Largest request body passed on.
const MAX_BODY: usize = 16 << 20;

/// Headers that describe one hop, not the message.
const HOP: [&str; 5] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
];

#[derive(Clone)]
struct Route {
    client: reqwest::Client,
    /// `http://host:port` of the server requests go to.
    base: String,
    header: (HeaderName, HeaderValue),
    seen: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
}

pub struct Forwarder {
    addr: SocketAddr,
    task: JoinHandle<()>,
    seen: Arc<Mutex<Vec<axum::http::HeaderMap>>>,
}

impl Forwarder {
    /// Listens on `127.0.0.1:<ephemeral>` and passes every request to the same path
    /// on `base` (`http://host:port`) with `name: value` added.
    pub async fn start(base: &str, name: &str, value: &str) -> anyhow::Result<Forwarder> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let route = Route {
            seen: seen.clone(),
            client: reqwest::Client::builder().no_proxy().build()?,
            base: base.trim_end_matches('/').to_string(),
            header: (
                HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            ),
        };
        let app = Router::new().fallback(pass).with_state(route);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Forwarder { addr, task, seen })
    }

    /// The headers of every request passed so far, in order (as the client sent them,
    /// before the added one).
    pub fn requests(&self) -> Vec<axum::http::HeaderMap> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The forwarder's URL for `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn pass(State(route): State<Route>, request: Request) -> Response {
    match forward(&route, request).await {
        Ok(response) => response,
        Err(e) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(Body::from(format!("forwarder: {e:#}")))
            .expect("a plain response"),
    }
}

async fn forward(route: &Route, request: Request) -> anyhow::Result<Response> {
    let (parts, body) = request.into_parts();
    route
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(parts.headers.clone());
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let body = axum::body::to_bytes(body, MAX_BODY).await?;
    let mut out = route
        .client
        .request(parts.method, format!("{}{path}", route.base))
        .body(body);
    for (name, value) in &parts.headers {
        if !HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    out = out.header(route.header.0.clone(), route.header.1.clone());
    let reply = out.send().await?;
    let mut response = Response::builder().status(reply.status());
    for (name, value) in reply.headers() {
        if !HOP.contains(&name.as_str()) {
            response = response.header(name, value);
        }
    }
    let stream = reply.bytes_stream().map_err(std::io::Error::other);
    Ok(response.body(Body::from_stream(stream))?)
}
