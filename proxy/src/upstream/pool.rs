//! The HTTP/1.1 client a routed call takes to a Streamable HTTP upstream: hyper's
//! connection-level client over connections pooled *per worker thread*.
//!
//! Each Pingora worker runs its own single-threaded runtime. A pool shared by every
//! thread (Pingora's own, or reqwest's) hands a connection whose driver task lives on
//! one runtime to a request on another: cross-thread wake-ups on every call, and with
//! Pingora's pool, connections that cannot be reused across its per-thread runtimes at
//! all. Here a thread only ever reuses the connections it opened, so a call never
//! leaves its thread and no lock is shared between threads.
//!
//! Requests go out in one write (header and body flattened, `TCP_NODELAY`). A
//! connection returns to its thread's pool once its reply was read to the end; one
//! idle for [`IDLE_FOR`] is closed by the thread's sweeper. A request is sent again on
//! a fresh connection only when the pooled one closed before a byte of it was written:
//! a call the server may have received is never repeated.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::runtime::Target;

/// How long an idle connection is kept (as Pingora's pool did). A server that closes
/// one sooner is noticed by hyper, and the connection is not handed out again.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream and worker thread.
const MAX_IDLE: usize = 64;

/// Why a request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

thread_local! {
    static IDLE: RefCell<HashMap<Target, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// A reply whose body, once read to its end, gives the connection back to the pool.
pub type Reply = http::Response<PooledBody>;

/// How long a request may take to reach its upstream and be answered.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Connecting, when no pooled connection is free.
    pub connect: Duration,
    /// The reply's head, from the send (connecting included).
    pub first_byte: Duration,
}

/// Sends `request` to `target` and waits (within `deadlines`) for the reply's head.
pub async fn send(
    target: &Target,
    request: http::Request<Full<Bytes>>,
    deadlines: Deadlines,
) -> Result<Reply, SendError> {
    tokio::time::timeout(
        deadlines.first_byte,
        send_now(target, request, deadlines.connect),
    )
    .await
    .map_err(|_| SendError::Timeout)?
}

async fn send_now(
    target: &Target,
    request: http::Request<Full<Bytes>>,
    connect_timeout: Duration,
) -> Result<Reply, SendError> {
    let request = match checkout(target).await {
        Some(mut sender) => match sender.try_send_request(request).await {
            Ok(reply) => return Ok(pooled(target, sender, reply)),
            // The pooled connection closed before any of the request was written:
            // the server never saw it, so it goes on a fresh connection.
            Err(mut e) => match e.take_message() {
                Some(request) => request,
                None => return Err(e.into_error().into()),
            },
        },
        None => request,
    };
    let mut sender = tokio::time::timeout(connect_timeout, connect(target))
        .await
        .map_err(|_| SendError::Connect("timed out".into()))??;
    let reply = sender.send_request(request).await?;
    Ok(pooled(target, sender, reply))
}

fn pooled(
    target: &Target,
    sender: SendRequest<Full<Bytes>>,
    reply: http::Response<Incoming>,
) -> Reply {
    reply.map(|body| PooledBody {
        body,
        giveback: Some((target.clone(), sender)),
    })
}

/// An idle connection of this thread that is still open, ready for a request.
async fn checkout(target: &Target) -> Option<SendRequest<Full<Bytes>>> {
    loop {
        let idle = IDLE.with(|pool| pool.borrow_mut().get_mut(target)?.pop())?;
        if idle.sender.is_closed() || idle.since.elapsed() > IDLE_FOR {
            continue;
        }
        let mut sender = idle.sender;
        // Ready at once unless the connection is closing; a closed one errs at once.
        if sender.ready().await.is_ok() {
            return Some(sender);
        }
    }
}

fn give_back(target: Target, sender: SendRequest<Full<Bytes>>) {
    if sender.is_closed() {
        return;
    }
    IDLE.with(|pool| {
        let mut pool = pool.borrow_mut();
        let idle = pool.entry(target).or_default();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    });
    start_sweeper();
}

/// Starts, once per worker thread, the task that closes this thread's connections
/// idle for longer than [`IDLE_FOR`] (dropping a sender ends its connection).
fn start_sweeper() {
    thread_local! {
        static SWEEPING: Cell<bool> = const { Cell::new(false) };
    }
    if SWEEPING.with(|s| s.replace(true)) {
        return;
    }
    tokio::spawn(async {
        loop {
            tokio::time::sleep(IDLE_FOR / 4).await;
            IDLE.with(|pool| {
                let mut pool = pool.borrow_mut();
                for idle in pool.values_mut() {
                    idle.retain(|i| i.since.elapsed() <= IDLE_FOR && !i.sender.is_closed());
                }
                pool.retain(|_, idle| !idle.is_empty());
            });
        }
    });
}

/// A new connection, TLS handshake included (bounded by the caller).
async fn connect(target: &Target) -> Result<SendRequest<Full<Bytes>>, SendError> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| SendError::Connect(e.to_string()))?;
    tcp.set_nodelay(true).ok();
    let mut builder = hyper::client::conn::http1::Builder::new();
    // Header and body flattened into one buffer: one write per request.
    builder.writev(false);
    match &target.tls_name {
        None => {
            let (sender, conn) = builder.handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(sender)
        }
        Some(name) => {
            let server_name = rustls::pki_types::ServerName::try_from(name.to_string())
                .map_err(|e| SendError::Connect(format!("bad TLS name {name:?}: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(server_name, tcp)
                .await
                .map_err(|e| SendError::Connect(format!("TLS: {e}")))?;
            let (sender, conn) = builder.handshake(TokioIo::new(tls)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok(sender)
        }
    }
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots =
                rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// A reply body that returns its connection to the pool when it ends.
pub struct PooledBody {
    body: Incoming,
    giveback: Option<(Target, SendRequest<Full<Bytes>>)>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            if let Some((target, sender)) = self.giveback.take() {
                give_back(target, sender);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback HTTP/1.1 server that answers each request with its connection's
    /// number, and closes each connection after `requests_per_connection` requests.
    async fn server(requests_per_connection: usize) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                let served = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = service_fn(move |_req| {
                        let count = served.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let mut reply =
                                http::Response::new(Full::new(Bytes::from(n.to_string())));
                            if count >= requests_per_connection {
                                reply
                                    .headers_mut()
                                    .insert(http::header::CONNECTION, "close".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(reply)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        (addr, connections)
    }

    async fn get(target: &Target) -> String {
        let request = http::Request::post("/mcp")
            .header(http::header::HOST, "upstream")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let deadlines = Deadlines {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(5),
        };
        let reply = send(target, request, deadlines).await.unwrap();
        let body = reply.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_is_reused_once_its_reply_was_read() {
        let (addr, connections) = server(usize::MAX).await;
        let target = Target {
            addr,
            tls_name: None,
        };
        for _ in 0..5 {
            assert_eq!(get(&target).await, "1");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_not_handed_out_again() {
        // The server closes every connection after one request: each call must find
        // that out and open a fresh one, without an error reaching the caller.
        let (addr, connections) = server(1).await;
        let target = Target {
            addr,
            tls_name: None,
        };
        for expected in 1..=3 {
            assert_eq!(get(&target).await, expected.to_string());
        }
        assert_eq!(connections.load(Ordering::SeqCst), 3);
    }
}
