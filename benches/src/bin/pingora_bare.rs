//! `pingora-bare`: the cheapest reverse proxy Pingora can be, for the `data-plane`
//! scenario's "what does the Pingora hop cost by itself" row.
//!
//! It is built like `gatehouse-proxy` (Pingora 0.9, mimalloc, one single-threaded
//! runtime per worker, unbuffered client reads, pooled upstream connections) but does
//! nothing else: no routing, no auth, no body read, no rewriting. Every request goes to
//! one upstream as it came. Gatehouse's figures minus this one are what MCP-aware
//! routing costs; this one minus nginx's is what Pingora costs.
//!
//! `--own-client` keeps Pingora's downstream half but answers every request from
//! `request_filter` over a minimal pooled HTTP/1.1 client of its own (one write per
//! request, `Content-Length` replies only): what leaving Pingora's upstream half would
//! save. It is a measuring stick, not a proxy anyone should run.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use clap::Parser;
use http::header;
use pingora::http::ResponseHeader;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Where to listen, host:port.
    #[arg(long)]
    listen: String,
    /// The one upstream every request goes to, host:port (plain HTTP/1.1).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Answer from request_filter over our own pooled client instead of Pingora's
    /// proxy path.
    #[arg(long)]
    own_client: bool,
}

struct Bare {
    peer: HttpPeer,
    own: Option<OwnClient>,
}

/// Idle upstream connections, most recent last.
struct OwnClient {
    upstream: SocketAddr,
    idle: Mutex<Vec<TcpStream>>,
}

impl OwnClient {
    /// Sends the client's request upstream in one write and answers the client with
    /// the reply; `Err` leaves the client to Pingora's error page.
    async fn exchange(&self, session: &mut Session) -> Result<()> {
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_request_body().await? {
            body.extend_from_slice(&chunk);
        }
        let req = session.req_header();
        let mut wire = Vec::with_capacity(256 + body.len());
        wire.extend_from_slice(b"POST ");
        wire.extend_from_slice(req.uri.path().as_bytes());
        wire.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        wire.extend_from_slice(self.upstream.to_string().as_bytes());
        for (name, value) in req.headers.iter() {
            // Framing is recomputed: the body was read whole, de-chunked.
            if [
                header::HOST,
                header::CONTENT_LENGTH,
                header::TRANSFER_ENCODING,
                header::CONNECTION,
            ]
            .contains(name)
            {
                continue;
            }
            wire.extend_from_slice(b"\r\n");
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value.as_bytes());
        }
        wire.extend_from_slice(format!("\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes());
        wire.extend_from_slice(&body);
        let pooled = self.idle.lock().expect("pool lock").pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => {
                let c = TcpStream::connect(self.upstream)
                    .await
                    .or_err(ErrorType::ConnectError, "connecting upstream")?;
                c.set_nodelay(true).ok();
                c
            }
        };
        conn.write_all(&wire)
            .await
            .or_err(ErrorType::WriteError, "writing upstream")?;
        let mut buf = BytesMut::with_capacity(4096);
        let (status, content_type, session_id, head_len, body_len) = loop {
            if conn
                .read_buf(&mut buf)
                .await
                .or_err(ErrorType::ReadError, "reading upstream")?
                == 0
            {
                return Error::e_explain(ErrorType::ReadError, "upstream closed");
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            if let httparse::Status::Complete(n) = resp
                .parse(&buf)
                .or_err(ErrorType::InvalidHTTPHeader, "parsing upstream reply")?
            {
                let find = |h: &str| {
                    resp.headers
                        .iter()
                        .find(|x| x.name.eq_ignore_ascii_case(h))
                        .map(|x| x.value.to_vec())
                };
                let len = find("content-length")
                    .and_then(|v| std::str::from_utf8(&v).ok()?.trim().parse::<usize>().ok())
                    .or_err(ErrorType::InvalidHTTPHeader, "reply without Content-Length")?;
                // The session id an upstream hands out at `initialize` (the fast
                // upstream does) must reach the client, which sends it back.
                break (
                    resp.code.unwrap_or(502),
                    find("content-type"),
                    find("mcp-session-id"),
                    n,
                    len,
                );
            }
        };
        while buf.len() < head_len + body_len {
            if conn
                .read_buf(&mut buf)
                .await
                .or_err(ErrorType::ReadError, "reading upstream")?
                == 0
            {
                return Error::e_explain(ErrorType::ReadError, "upstream closed mid-body");
            }
        }
        self.idle.lock().expect("pool lock").push(conn);
        let reply = buf.freeze().slice(head_len..head_len + body_len);
        let mut head = ResponseHeader::build(status, Some(2))?;
        if let Some(ct) = content_type {
            head.insert_header(header::CONTENT_TYPE, ct)?;
        }
        if let Some(id) = session_id {
            head.insert_header("mcp-session-id", id)?;
        }
        head.insert_header(header::CONTENT_LENGTH, reply.len())?;
        session.write_response_header(Box::new(head), false).await?;
        session.write_response_body(Some(reply), true).await?;
        Ok(())
    }
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        match &self.own {
            Some(own) => own.exchange(session).await.map(|()| true),
            None => Ok(false),
        }
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(self.peer.clone()))
    }
}

fn main() {
    let args = Args::parse();
    let conf = ServerConf {
        threads: args.threads,
        work_stealing: false,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    // The timeouts gatehouse-proxy gives its peers (nginx has its own by default):
    // each read and write arms a timer, which is part of the price of a hop.
    let mut peer = HttpPeer::new(args.upstream, false, String::new());
    peer.options.connection_timeout = Some(Duration::from_secs(5));
    peer.options.read_timeout = Some(Duration::from_secs(60));
    peer.options.write_timeout = Some(Duration::from_secs(30));
    peer.options.idle_timeout = Some(Duration::from_secs(60));
    let own = args.own_client.then(|| OwnClient {
        upstream: args.upstream,
        idle: Mutex::new(Vec::new()),
    });
    let mut proxy = http_proxy_service(&server.configuration, Bare { peer, own });
    proxy.add_listener(
        ListenerConfig::tcp(args.listen)
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
    );
    server.add_service(proxy);
    server.run_forever()
}
