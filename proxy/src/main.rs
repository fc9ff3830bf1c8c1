//! `gatehouse-proxy --config FILE`: the data plane on its own, serving a config file.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use gatehouse_proxy::gateway::Gateway;
use gatehouse_proxy::metrics::AdminApp;
use gatehouse_proxy::reload::ConfigWatch;
use gatehouse_proxy::state::GatewayState;
use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::ServerConf;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;

#[derive(Parser, Debug)]
#[command(
    name = "gatehouse-proxy",
    version,
    about = "Gatehouse MCP gateway data plane"
)]
struct Args {
    /// Config snapshot file (YAML, or JSON when it ends in .json). Reloaded on change
    /// and on SIGHUP.
    #[arg(long, env = "GATEHOUSE_CONFIG")]
    config: PathBuf,
    /// Address MCP clients connect to.
    #[arg(long, default_value = "127.0.0.1:8080", env = "GATEHOUSE_LISTEN")]
    listen: String,
    /// Address of the admin listener (/metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:9090", env = "GATEHOUSE_ADMIN_LISTEN")]
    admin_listen: String,
    /// Worker threads (default: one per core).
    #[arg(long, env = "GATEHOUSE_THREADS")]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();

    let loaded = std::fs::read(&args.config)
        .with_context(|| format!("{}: cannot read", args.config.display()))?;
    let text = String::from_utf8(loaded.clone())
        .with_context(|| format!("{}: not UTF-8", args.config.display()))?;
    let snapshot = gatehouse_config::parse(
        &text,
        gatehouse_config::Format::from_path(&args.config),
        &args.config,
    )?;
    let state = Arc::new(GatewayState::new(&snapshot)?);

    let conf = ServerConf {
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        Gateway {
            state: state.clone(),
        },
        "gatehouse",
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);

    let mut admin = Service::new(
        "gatehouse admin".to_string(),
        HttpServer::new_app(AdminApp {
            state: state.clone(),
        }),
    );
    admin.add_tcp(&args.admin_listen);
    server.add_service(admin);

    server.add_service(background_service(
        "config watch",
        ConfigWatch {
            path: args.config.clone(),
            state,
            loaded,
        },
    ));
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, version = snapshot.version, "gatehouse-proxy starting");
    server.run_forever()
}
