//! `pingora-bare`: the cheapest reverse proxy Pingora can be, for the `data-plane`
//! scenario's "what does the Pingora hop cost by itself" row.
//!
//! It is built like `gatehouse-proxy` (Pingora 0.9, mimalloc, one single-threaded
//! runtime per worker, unbuffered client reads, pooled upstream connections) but does
//! nothing else: no routing, no auth, no body read, no rewriting. Every request goes to
//! one upstream as it came. Gatehouse's figures minus this one are what MCP-aware
//! routing costs; this one minus nginx's is what Pingora costs.

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use clap::Parser;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

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
}

struct Bare {
    peer: HttpPeer,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

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
    let mut proxy = http_proxy_service(&server.configuration, Bare { peer });
    proxy.add_listener(
        ListenerConfig::tcp(args.listen)
            .l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE)),
    );
    server.add_service(proxy);
    server.run_forever()
}
