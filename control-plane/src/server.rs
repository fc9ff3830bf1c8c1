//! Starting the control plane (`gatehouse serve`) and the all-in-one (`gatehouse up`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use serde_json::json;

use crate::outbound::AskServers;
use crate::runner::{Runner, RunnerOptions};
use crate::state::App;
use crate::store::Database;

/// Options of `gatehouse serve`: the control plane alone.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where the master key, proxy token and admin credential live, and the SQLite
    /// file unless `database` is elsewhere.
    pub data_dir: PathBuf,
    /// The store: `gatehouse.db` in `data_dir` by default, or PostgreSQL.
    pub database: Database,
    /// Admin API listen address.
    pub listen: SocketAddr,
    /// Base URL clients use to reach the gateway (printed in workspace URLs),
    /// e.g. `http://127.0.0.1:8080`.
    pub gateway_url: String,
    /// Days routed calls are kept (0: for ever).
    pub call_retention_days: u32,
    /// Which MCP servers the control plane connects to itself.
    pub ask_servers: AskServers,
    /// What every proxy enforces of its own: how many proxies share every rate
    /// budget and stream cap, its connection cap and client timeouts.
    pub proxy_limits: gatehouse_config::Limits,
    /// The runner of hosted stdio servers.
    pub runner: RunnerSettings,
}

/// Where the in-process runner listens and how it runs its processes.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Its listener (port 0: any free port).
    pub listen: SocketAddr,
    /// The URL proxies reach it at [default: `http://<the address it bound>`].
    pub url: Option<String>,
    /// How long a hosted server may take to answer `initialize`.
    pub start_timeout: std::time::Duration,
    /// Stop a hosted process no call used for this long; `None`: never.
    pub idle_stop: Option<std::time::Duration>,
}

/// Options of `gatehouse up`: control plane + one proxy child process.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub serve: ServeOptions,
    /// Proxy listen address for MCP clients.
    pub proxy_listen: SocketAddr,
    /// Proxy admin listener (/metrics, /healthz).
    pub proxy_admin_listen: SocketAddr,
    /// Also create the `demo` workspace with the built-in demo MCP server.
    pub demo: bool,
}

/// What [`start_api`] started.
struct Started {
    app: Arc<App>,
    boot: crate::state::Bootstrap,
    api_url: String,
    api: tokio::task::JoinHandle<()>,
    runner: Arc<Runner>,
}

impl Started {
    /// Stops the API and every hosted process.
    async fn stop(self) {
        self.api.abort();
        self.runner.stop_all().await;
    }
}

/// The API, the dashboard, the demo MCP server and nothing else, on one listener;
/// the runner of hosted stdio servers on another.
async fn start_api(opts: &ServeOptions) -> anyhow::Result<Started> {
    let runner_listener = tokio::net::TcpListener::bind(opts.runner.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--runner-listen)", opts.runner.listen))?;
    let runner_url = match &opts.runner.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", runner_listener.local_addr()?),
    };
    let (mut app, boot) = App::open(
        &opts.data_dir,
        &opts.database,
        opts.gateway_url.clone(),
        runner_url,
    )
    .await
    .with_context(|| format!("opening the store at {}", opts.database))?;
    app.ask_servers = opts.ask_servers;
    if opts.proxy_limits != app.proxy_limits {
        app.proxy_limits = opts.proxy_limits.clone();
        app.publish().await?;
    }
    let app = Arc::new(app);
    let runner = Runner::start(
        app.hosted.subscribe(),
        &app.runner.token,
        RunnerOptions {
            dir: opts.data_dir.join("runner"),
            start_timeout: opts.runner.start_timeout,
            idle_stop: opts.runner.idle_stop,
        },
        app.metrics.hosted.clone(),
    );
    let runner_router = crate::runner::http::router(runner.clone());
    let runner_listener = runner_listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(runner_listener, runner_router).await {
            tracing::error!(error = %e, "runner stopped");
        }
    });
    // Runs until the process ends, like the API.
    let _pruning = crate::calls::retention::spawn(app.clone(), opts.call_retention_days);
    follow_other_replicas(&app).await?;
    let router = crate::api::router(app.clone(), crate::dashboard::router(app.clone()))
        .nest_service(crate::demo::PATH, crate::demo::service());
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let api_url = format!("http://{}", listener.local_addr()?);
    // Without TCP_NODELAY, the demo server's event-stream replies (a priming event, then
    // the response in a second write) wait for a delayed ACK from the proxy's pooled
    // connection: 40 ms per call, measured through `gatehouse up --demo`.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "admin API stopped");
        }
    });
    Ok(Started {
        app,
        boot,
        api_url,
        api: task,
        runner,
    })
}

/// On a database other control planes share: republishes to this one's proxies
/// whatever any of them changes, as soon as it is committed. Runs until the process
/// ends.
async fn follow_other_replicas(app: &Arc<App>) -> anyhow::Result<()> {
    let Some(changed) = app
        .store
        .other_changes()
        .await
        .context("listening for config changes on the database")?
    else {
        return Ok(());
    };
    let app = app.clone();
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            if let Err(e) = app.publish().await {
                tracing::warn!(error = %format!("{e:#}"), "republishing after a change on the database failed");
            }
        }
    });
    Ok(())
}

/// Runs the control plane until Ctrl-C.
pub async fn serve(opts: ServeOptions) -> anyhow::Result<()> {
    let stop = stop_signal()?;
    let started = start_api(&opts).await?;
    let (boot, api_url) = (&started.boot, &started.api_url);
    println!("Gatehouse control plane: {api_url}  (OpenAPI: {api_url}/v1/openapi.yaml)");
    println!("Dashboard: {api_url}{}", crate::dashboard::PATH);
    println!("Runner of hosted stdio servers: {}", started.app.runner.url);
    if let Some(credential) = &boot.admin_credential {
        println!(
            "Bootstrap admin created: gatehouse login --api {api_url} --username admin --credential {credential}\n(also saved in {})",
            opts.data_dir.join("admin.credential").display()
        );
    }
    match &boot.proxy_token_file {
        Some(file) => println!(
            "Proxy token for gatehouse-proxy --control-plane {api_url}: {}",
            file.display()
        ),
        None => println!(
            "Proxy token for gatehouse-proxy --control-plane {api_url}: the one in GATEHOUSE_PROXY_TOKEN"
        ),
    }
    // SIGTERM too: in a container `serve` is process 1, which has no default action
    // for it, so without a handler `docker stop` and Kubernetes wait out their grace
    // period and kill it.
    stop.await;
    started.stop().await;
    Ok(())
}

/// Runs control plane + proxy until Ctrl-C, logging the CLI in as the bootstrap admin.
pub async fn up(opts: UpOptions) -> anyhow::Result<()> {
    let stop = stop_signal()?;
    let started = start_api(&opts.serve).await?;
    let (app, boot, api_url) = (&started.app, &started.boot, &started.api_url);
    let (token, _) = app.sessions.issue(&boot.admin);
    crate::cli_config::save_login(api_url, &token, &boot.admin.username)?;

    let demo = if opts.demo {
        Some(ensure_demo(app, &boot.admin, api_url).await?)
    } else {
        None
    };

    let proxy_bin = sibling_binary("gatehouse-proxy")?;
    let state_dir = opts.serve.data_dir.join("proxy");
    let mut proxy = tokio::process::Command::new(&proxy_bin)
        .arg("--control-plane")
        .arg(api_url)
        .arg("--listen")
        .arg(opts.proxy_listen.to_string())
        .arg("--admin-listen")
        .arg(opts.proxy_admin_listen.to_string())
        .arg("--state-dir")
        .arg(&state_dir)
        .arg("--proxy-name")
        .arg("local")
        .env("GATEHOUSE_PROXY_TOKEN", &boot.proxy_token)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", proxy_bin.display()))?;
    let version = app.snapshots.borrow().version;
    if let Err(e) = proxy_serving(&mut proxy, opts.proxy_admin_listen, version).await {
        stop_child(&mut proxy).await;
        started.stop().await;
        return Err(e);
    }

    println!("Gatehouse is up.");
    println!("  Admin API:   {api_url}  (OpenAPI: {api_url}/v1/openapi.yaml)");
    println!("  Dashboard:   {api_url}{}", crate::dashboard::PATH);
    println!(
        "  Gateway:     {}/ws/<workspace>",
        opts.serve.gateway_url.trim_end_matches('/')
    );
    println!("  Metrics:     http://{}/metrics", opts.proxy_admin_listen);
    println!(
        "  Runner:      {}  (hosted stdio servers; proxies only)",
        app.runner.url
    );
    println!(
        "  CLI logged in as {} (try: gatehouse workspace list)",
        boot.admin.username
    );
    if let Some(credential) = &boot.admin_credential {
        println!(
            "  Admin credential (saved in {}): {credential}",
            opts.serve.data_dir.join("admin.credential").display()
        );
    }
    if let Some((secret, mcp_json)) = demo {
        println!("\nDemo workspace ready (echo, add, current_time).");
        println!("Token: {secret} (shown once — save this)");
        println!("{}", serde_json::to_string_pretty(&mcp_json)?);
    }
    println!("\nCtrl-C stops everything.");

    let outcome = tokio::select! {
        () = stop => Ok(()),
        status = proxy.wait() => Err(anyhow::anyhow!("the proxy exited: {}", status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))),
    };
    stop_child(&mut proxy).await;
    started.stop().await;
    outcome
}

/// How long `gatehouse up` waits for its proxy: Pingora retries an address in use for
/// 30 s before the proxy gives up and exits.
const PROXY_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(45);

/// Waits until the proxy's `/healthz` says it serves config `version` or newer (it
/// answers 200 only once MCP clients can connect), so everything printed after it
/// works at once. Fails if the proxy exits first or is not ready in time.
async fn proxy_serving(
    proxy: &mut tokio::process::Child,
    admin: SocketAddr,
    version: i64,
) -> anyhow::Result<()> {
    let url = format!("http://{admin}/healthz");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(2))
        .build()?;
    let deadline = tokio::time::Instant::now() + PROXY_READY_TIMEOUT;
    loop {
        if let Some(status) = proxy.try_wait()? {
            anyhow::bail!("the proxy exited before it was ready ({status}); its log is above");
        }
        if let Ok(answer) = http.get(&url).send().await {
            if answer.status() == 200 {
                let health: serde_json::Value = answer.json().await.unwrap_or_default();
                if health["config_version"].as_i64().unwrap_or(-1) >= version {
                    return Ok(());
                }
            }
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the proxy was not serving config version {version} at {url} within {PROXY_READY_TIMEOUT:?}; its log is above"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Creates the `demo` workspace (once) with the built-in server, and a fresh token.
async fn ensure_demo(
    app: &Arc<App>,
    admin: &crate::store::UserRow,
    api_url: &str,
) -> anyhow::Result<(String, serde_json::Value)> {
    use crate::store::NewToken;
    let token_secret = crate::crypto::random_token(gatehouse_config::TOKEN_PREFIX);
    let token = NewToken {
        id: crate::crypto::random_id("tok_"),
        name: format!("demo {}", crate::store::now()),
        sha256: crate::state::sha256_hex(&token_secret),
        expires_at: None,
        created_by: admin.id.clone(),
        scope: None,
    };
    let ws = match app.store.visible_workspace(&admin.id, "demo").await? {
        Some(ws) => {
            app.store.create_token(&ws, &token, &admin.username).await?;
            ws
        }
        None => {
            anyhow::ensure!(
                !app.store.workspace_slug_taken("demo").await?,
                "a workspace named demo exists and belongs to someone else"
            );
            app.store
                .insert_workspace("demo", "Demo", &admin.id, &token, &admin.username)
                .await?;
            app.store
                .visible_workspace(&admin.id, "demo")
                .await?
                .context("demo workspace vanished")?
        }
    };
    if app.store.server(&ws.id, "demo").await?.is_none() {
        let server = crate::store::ServerRow {
            id: crate::crypto::random_id("srv_"),
            workspace_id: ws.id.clone(),
            slug: "demo".into(),
            url: format!("{api_url}{}", crate::demo::PATH),
            transport: "streamable_http".into(),
            headers: "{}".into(),
            policy: serde_json::to_string(&gatehouse_config::ToolPolicy::default())?,
            enabled: 1,
            created_at: crate::store::now(),
            package: None,
            installed_by: Some(admin.id.clone()),
            tools: None,
            naming: "prefixed".into(),
            command: None,
            args: None,
            env: None,
            limits: None,
        };
        app.store
            .insert_server(&ws, &server, &admin.username)
            .await?;
    }
    app.publish().await?;
    let (url, _) = app.gateway_urls("demo");
    let mcp_json = json!({"mcpServers": {"demo": {"url": url, "headers": {"Authorization": format!("Bearer {token_secret}")}}}});
    Ok((token_secret, mcp_json))
}

/// Ctrl-C, SIGTERM or SIGHUP: any of them stops `serve`, and the all-in-one with
/// its proxy. The handlers are in place from this call on, so it is made before the
/// API listens: a signal sent to a process that just answered would kill it instead.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
    })
}

/// A binary installed next to this one (`cargo build` puts them side by side).
fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found next to {}: build it with `cargo build --release -p gatehouse-proxy`",
        path.display(),
        exe.display()
    );
    Ok(path)
}

/// SIGTERM, then SIGKILL after 5 s.
async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        if tokio::time::timeout(std::time::Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}
