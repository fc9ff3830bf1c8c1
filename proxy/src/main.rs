//! `gatehouse-proxy --config FILE`: the data plane on its own, serving a config file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gatehouse_config::{Secret, SessionKey, Snapshot};
use gatehouse_proxy::admin::{AdminApp, ClientListener};
use gatehouse_proxy::audit::journal::Journal;
use gatehouse_proxy::audit::record::AuditSink;
use gatehouse_proxy::connections::Connections;
use gatehouse_proxy::gateway::Gateway;
use gatehouse_proxy::shared::Shared;
use gatehouse_proxy::uplink::audit_ship::{AuditShipper, Spool};
use gatehouse_proxy::uplink::control_plane::{ConfigStream, ControlPlane, UsageReport};
use gatehouse_proxy::uplink::file::ConfigWatch;
use gatehouse_proxy::uplink::replicas::Replicas;
use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
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
    /// and on SIGHUP. Use this or --control-plane.
    #[arg(long, env = "GATEHOUSE_CONFIG", conflicts_with = "control_plane")]
    config: Option<PathBuf>,
    /// Control plane URL to receive config from (e.g. http://127.0.0.1:7070). Several
    /// replicas: a comma-separated list (http://cp-a:7070,http://cp-b:7070), used in
    /// order; the proxy moves to the next one when the one in use fails.
    #[arg(
        long,
        env = "GATEHOUSE_CONTROL_PLANE",
        requires = "proxy_token",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    control_plane: Vec<String>,
    /// Credential this proxy presents to the control plane.
    #[arg(long, env = "GATEHOUSE_PROXY_TOKEN", hide_env_values = true)]
    proxy_token: Option<String>,
    /// Name shown by `gatehouse proxies`.
    #[arg(long, env = "GATEHOUSE_PROXY_NAME", default_value = "proxy")]
    proxy_name: String,
    /// Where a control-plane-fed proxy keeps its id and its (encrypted) last snapshot.
    #[arg(
        long,
        env = "GATEHOUSE_STATE_DIR",
        default_value = "gatehouse-proxy-state"
    )]
    state_dir: PathBuf,
    /// Address MCP clients connect to.
    #[arg(long, default_value = "127.0.0.1:8080", env = "GATEHOUSE_LISTEN")]
    listen: String,
    /// Address of the admin listener (/metrics, /healthz).
    #[arg(long, default_value = "127.0.0.1:9090", env = "GATEHOUSE_ADMIN_LISTEN")]
    admin_listen: String,
    /// Largest size of the on-disk spool that holds audit events while the control
    /// plane is unreachable (in `--state-dir`); past it events are dropped and counted.
    #[arg(
        long,
        env = "GATEHOUSE_AUDIT_SPOOL_MAX_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    audit_spool_max_bytes: u64,
    /// Do not record routed calls at all (for measuring what auditing costs; the
    /// control plane then never learns of this proxy's calls).
    #[arg(long, env = "GATEHOUSE_NO_AUDIT")]
    no_audit: bool,
    /// Worker threads (default: one per core).
    #[arg(long, env = "GATEHOUSE_THREADS")]
    threads: Option<usize>,
}

/// Where the config comes from, and the background service that keeps it current.
enum Source {
    File { path: PathBuf, loaded: Vec<u8> },
    ControlPlane(ControlPlane),
}

/// Read buffer of each client connection: none. Pingora's default is a 64 KiB buffer,
/// zeroed at accept, which a client holding a GET stream open keeps for as long as the
/// stream lives (3,000 open streams: proxy RSS per stream 127 KiB with 64 KiB, 71 with
/// 8 KiB, and 8 KiB less again with none). Pingora reads request headers and bodies
/// into buffers of its own, so the extra layer only copied; tools/call throughput did
/// not change within noise.
const CLIENT_READ_BUFFER: usize = 0;

/// mimalloc: the request path allocates and frees many small buffers.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    exit_when_a_listener_cannot_bind();
    let args = Args::parse();

    let (snapshot, source) = initial_config(&args)?;
    // Routed calls are audited when there is a control plane to ship them to.
    let (state, audit_queue) = match &source {
        Source::ControlPlane(_) if !args.no_audit => {
            // Before the spool opens: it takes over what a killed run left.
            let dir = args.state_dir.join("audit-journal");
            let journal = Journal::open(&dir, &args.state_dir.join("audit-spool"))
                .with_context(|| format!("{}: cannot open the audit journal", dir.display()))?;
            let (sink, queue) = AuditSink::channel(Some(Arc::new(journal)));
            (Shared::with_audit(&snapshot, sink)?, Some(queue))
        }
        _ => (Shared::new(&snapshot)?, None),
    };
    let state = Arc::new(state);

    let conf = ServerConf {
        threads: args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        // One single-threaded runtime per worker thread: no cross-thread wake-ups
        // on the request path (measured: see benches/README.md).
        work_stealing: false,
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(5),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();

    let mut proxy = Service::new(
        "gatehouse".to_string(),
        Connections::new(Gateway::new(state.clone()), state.clone()),
    );
    proxy.add_listener(
        ListenerConfig::tcp(args.listen.clone()).l4_buffer(L4BufferSettings::new(
            CLIENT_READ_BUFFER,
            DEFAULT_L4_WRITE_BUFFER_SIZE,
        )),
    );
    server.add_service(proxy);

    let mut admin = Service::new(
        "gatehouse admin".to_string(),
        HttpServer::new_app(AdminApp {
            state: state.clone(),
            client_listener: ClientListener::new(&args.listen),
        }),
    );
    admin.add_tcp(&args.admin_listen);
    server.add_service(admin);

    match source {
        Source::File { path, loaded } => server.add_service(background_service(
            "config watch",
            ConfigWatch {
                path,
                state,
                loaded,
            },
        )),
        Source::ControlPlane(control_plane) => {
            if let Some(queue) = audit_queue {
                let dir = args.state_dir.join("audit-spool");
                let spool = Spool::open(&dir, args.audit_spool_max_bytes)
                    .with_context(|| format!("{}: cannot open the audit spool", dir.display()))?;
                server.add_service(background_service(
                    "audit shipper",
                    AuditShipper::new(queue, control_plane.clone(), state.metrics.clone(), spool),
                ));
            }
            server.add_service(background_service(
                "token use report",
                UsageReport {
                    control_plane: control_plane.clone(),
                    state: state.clone(),
                },
            ));
            server.add_service(background_service(
                "control plane watch",
                ConfigStream {
                    control_plane,
                    state,
                },
            ))
        }
    };
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, "gatehouse-proxy starting");
    server.run_forever()
}

/// Pingora retries a bind that finds its address in use for 30 s (room for a process
/// being replaced to let go of it), then panics in that service's thread, and the
/// process lived on without the listener: up for a supervisor, serving nothing. Exit
/// instead, so the failure is seen. Any other panic keeps Pingora's handling.
fn exit_when_a_listener_cannot_bind() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // pingora-core 0.9 services/listening.rs: `.expect("Failed to build listeners")`.
        if message.starts_with("Failed to build listeners") {
            tracing::error!("a listener could not be bound; gatehouse-proxy exits");
            std::process::exit(1);
        }
    }));
}

/// The config to start with: the file, or the control plane's current snapshot, or
/// (control plane unreachable) the last one saved to disk, or (first start with the
/// control plane down) an empty config that refuses every token until it arrives.
fn initial_config(args: &Args) -> anyhow::Result<(Snapshot, Source)> {
    if let Some(path) = &args.config {
        let loaded =
            std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let text = String::from_utf8(loaded.clone())
            .with_context(|| format!("{}: not UTF-8", path.display()))?;
        let snapshot =
            gatehouse_config::parse(&text, gatehouse_config::Format::from_path(path), path)?;
        let source = Source::File {
            path: path.clone(),
            loaded,
        };
        return Ok((snapshot, source));
    }
    let (false, Some(token)) = (args.control_plane.is_empty(), &args.proxy_token) else {
        anyhow::bail!("give --config FILE or --control-plane URL with --proxy-token (or GATEHOUSE_PROXY_TOKEN)");
    };
    let replicas = Replicas::new(args.control_plane.iter().cloned())
        .context("--control-plane (GATEHOUSE_CONTROL_PLANE)")?;
    let cp = ControlPlane::new(
        replicas,
        token.clone(),
        args.proxy_name.clone(),
        args.state_dir.clone(),
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snapshot = match runtime.block_on(cp.fetch_once(Duration::from_secs(5))) {
        Ok(snapshot) => {
            if let Err(e) = cp.save_cache(snapshot.version, &serde_json::to_vec(&snapshot)?) {
                tracing::warn!("could not save the snapshot cache: {e:#}");
            }
            snapshot
        }
        Err(e) => {
            match cp.load_cache() {
                Ok(snapshot) => {
                    tracing::warn!(version = snapshot.version, "control plane unreachable ({e:#}); serving the last snapshot saved on disk");
                    snapshot
                }
                Err(cache) => {
                    tracing::warn!("control plane unreachable ({e:#}) and no usable snapshot on disk ({cache:#}); refusing every token until config arrives");
                    Snapshot {
                        session_keys: vec![SessionKey {
                            id: "ephemeral".into(),
                            key: Secret::new(random_key()),
                        }],
                        ..Snapshot::default()
                    }
                }
            }
        }
    };
    Ok((snapshot, Source::ControlPlane(cp)))
}

fn random_key() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    base64::engine::general_purpose::STANDARD.encode(key)
}
