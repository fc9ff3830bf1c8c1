//! The processes under load besides the in-process upstream: the release
//! `gatehouse-proxy`, with a generated config or fed by a control plane, and nginx as
//! the reference proxy.

use std::ffi::OsString;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::{Rng, RngCore};
use serde_json::json;
use tokio::process::{Child, Command};

use crate::procstat;

/// The workspace every generated config serves.
pub const WORKSPACE: &str = "bench";

/// A free loopback port: bound, read, released. Another process could take it in
/// between; on an otherwise idle bench machine that does not happen.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Fails with how to build `bin` (`cargo build --release -p <package>`) or name it
/// (`<flag>`) if it is not there: before anything is started, not halfway through.
pub fn require_built(bin: &Path, package: &str, flag: &str) -> anyhow::Result<()> {
    if !bin.is_file() {
        bail!(
            "{} not found: build it first with cargo build --release -p {package} (or pass {flag})",
            bin.display()
        );
    }
    Ok(())
}

/// Spawns `command` with no stdin and stdout and stderr both in `log`, killed when the
/// returned child is dropped; `build_hint` ends the error when it cannot start.
pub fn spawn_logged(
    command: &mut Command,
    log: &Path,
    what: &str,
    build_hint: &str,
) -> anyhow::Result<(Child, u32)> {
    let child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log)?)
        .stderr(std::fs::File::options().append(true).open(log)?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {what}{build_hint}"))?;
    let pid = child.id().with_context(|| format!("{what} has no pid"))?;
    Ok((child, pid))
}

/// [`require_built`] for the two binaries a control-plane scenario starts.
pub fn require_proxy_and_control_plane(proxy: &Path, control_plane: &Path) -> anyhow::Result<()> {
    require_built(proxy, "gatehouse-proxy", "--proxy-bin")?;
    require_built(
        control_plane,
        "gatehouse-control-plane",
        "--control-plane-bin",
    )
}

/// A token in the product's format: `mwt_` + 43 base62 characters.
pub fn new_token() -> String {
    const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let body: String = (0..43)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect();
    format!("{}{body}", gatehouse_config::TOKEN_PREFIX)
}

/// A [`wait_ready`] probe: something accepts TCP connections on `addr`.
pub fn accepts(addr: SocketAddr) -> impl FnMut() -> std::future::Ready<bool> {
    move || {
        std::future::ready(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
    }
}

/// Waits until `probe` succeeds or `child` exits or the deadline passes.
pub async fn wait_ready<F, Fut>(
    what: &str,
    child: &mut Child,
    log: &Path,
    timeout: Duration,
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if probe().await {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "{what} exited during start-up ({status}); log {}:\n{}",
                log.display(),
                tail(log, 20)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{what} not ready after {timeout:?}; log {}:\n{}",
                log.display(),
                tail(log, 20)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// WARN/ERROR lines and panics of the tracing log at `path`, grouped by message
/// (digits aside) as "<count>x <first such message>".
pub fn log_warnings(path: &Path) -> Vec<String> {
    summarize_warnings(&std::fs::read_to_string(path).unwrap_or_default())
}

/// WARN/ERROR lines and panics of a tracing log, grouped by message (digits aside) as
/// "<count>x <first such message>".
fn summarize_warnings(text: &str) -> Vec<String> {
    let mut groups: Vec<(String, usize, String)> = Vec::new();
    for line in text.lines().map(strip_ansi) {
        // "<timestamp> <LEVEL, padded> <target>: <message>"
        let after_time = line
            .trim_start()
            .split_once(' ')
            .map_or("", |(_, rest)| rest.trim_start());
        let (level, rest) = after_time.split_once(' ').unwrap_or((after_time, ""));
        if !matches!(level, "WARN" | "ERROR") && !line.contains("panicked") {
            continue;
        }
        let message = format!("{level} {}", rest.trim_start());
        // Numbers (ports, counts, times) differ between otherwise identical lines.
        let mut key = String::with_capacity(message.len());
        for c in message.chars() {
            if !c.is_ascii_digit() {
                key.push(c);
            } else if !key.ends_with('#') {
                key.push('#');
            }
        }
        match groups.iter_mut().find(|(k, _, _)| *k == key) {
            Some(group) => group.1 += 1,
            None => groups.push((key, 1, message)),
        }
    }
    groups
        .into_iter()
        .map(|(_, n, message)| {
            let hint = if message.contains("Downstream ConnectionClosed") {
                " [expected when wrk ends a run with requests in flight: at most one per connection per run]"
            } else {
                ""
            };
            format!("{n}x {message}{hint}")
        })
        .collect()
}

/// `line` without ANSI colour sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A running `gatehouse-proxy`.
pub struct GatehouseProxy {
    child: Child,
    pub pid: u32,
    pub listen: SocketAddr,
    /// The admin listener: `/healthz` and `/metrics`.
    pub admin: SocketAddr,
    /// The workspace token clients present.
    pub token: String,
    pub log: PathBuf,
}

/// What a proxy fed by a control plane is started with.
pub struct ControlPlaneFeed<'a> {
    /// The control plane's API URL.
    pub url: &'a str,
    pub proxy_token: &'a str,
    /// Record and ship an audit event per routed call (off: `--no-audit`).
    pub audit: bool,
}

impl GatehouseProxy {
    /// Writes a config with one server per upstream URL (`s0`, `s1`, ...) and starts
    /// the proxy with `threads` worker threads; returns once `/healthz` answers 200.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        label: &str,
        upstreams: &[String],
        threads: usize,
    ) -> anyhow::Result<GatehouseProxy> {
        let token = new_token();
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        let servers: Vec<_> = upstreams
            .iter()
            .enumerate()
            .map(|(i, url)| json!({"slug": format!("s{i}"), "url": url}))
            .collect();
        let config = json!({
            "version": 1,
            "session_keys": [{"id": "k1", "key": STANDARD.encode(key)}],
            "workspaces": [{
                "slug": WORKSPACE,
                "name": "Bench",
                "servers": servers,
                "tokens": [{
                    "id": "t1",
                    "name": "bench",
                    "sha256": gatehouse_config::hash_token_hex(&token)
                }]
            }]
        });
        Self::start_configured(binary, dir, label, config, token, threads).await
    }

    /// Writes `config` to `<dir>/<label>.json` and starts the proxy on it; `token` is
    /// the workspace token clients present ([`GatehouseProxy::token`]).
    pub async fn start_configured(
        binary: &Path,
        dir: &Path,
        label: &str,
        config: serde_json::Value,
        token: String,
        threads: usize,
    ) -> anyhow::Result<GatehouseProxy> {
        let config_path = dir.join(format!("{label}.json"));
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let source = vec!["--config".into(), config_path.into_os_string()];
        Self::launch(binary, dir, label, source, threads, token).await
    }

    /// Starts a proxy named `label` that takes its config from a control plane, with
    /// a fresh state dir (`<dir>/<label>-state`): a proxy the control plane has not
    /// seen before. `token` is the workspace token the control plane issued. Returns
    /// once `/healthz` answers, which it does before the first config arrives: wait
    /// for [`config_version`](Self::config_version) before loading it.
    pub async fn start_fed(
        binary: &Path,
        dir: &Path,
        label: &str,
        feed: &ControlPlaneFeed<'_>,
        token: String,
        threads: usize,
    ) -> anyhow::Result<GatehouseProxy> {
        let state = dir.join(format!("{label}-state"));
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .with_context(|| format!("removing the old {}", state.display()))?;
        }
        let mut source: Vec<OsString> = vec![
            "--control-plane".into(),
            feed.url.into(),
            "--proxy-token".into(),
            feed.proxy_token.into(),
            "--state-dir".into(),
            state.into_os_string(),
            "--proxy-name".into(),
            label.into(),
        ];
        if !feed.audit {
            source.push("--no-audit".into());
        }
        Self::launch(binary, dir, label, source, threads, token).await
    }

    /// Starts the proxy with `source` (where its config comes from) on free ports,
    /// logging to `<dir>/<label>.log`, and waits until `/healthz` answers and the
    /// client listener accepts connections: Pingora starts its services one by one,
    /// so the admin listener may answer before the other is bound.
    async fn launch(
        binary: &Path,
        dir: &Path,
        label: &str,
        source: Vec<OsString>,
        threads: usize,
        token: String,
    ) -> anyhow::Result<GatehouseProxy> {
        let log = dir.join(format!("{label}.log"));
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let admin: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let (mut child, pid) = spawn_logged(
            Command::new(binary)
                .args(source)
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--admin-listen")
                .arg(admin.to_string())
                .arg("--threads")
                .arg(threads.to_string())
                .env("NO_COLOR", "1")
                // Only the arguments above decide what the proxy does.
                .env_remove("GATEHOUSE_CONFIG")
                .env_remove("GATEHOUSE_CONTROL_PLANE")
                .env_remove("GATEHOUSE_PROXY_TOKEN")
                .env_remove("GATEHOUSE_NO_AUDIT"),
            &log,
            &binary.display().to_string(),
            " (build it: cargo build --release -p gatehouse-proxy)",
        )?;
        let health = format!("http://{admin}/healthz");
        let http = reqwest::Client::new();
        wait_ready(
            "gatehouse-proxy",
            &mut child,
            &log,
            Duration::from_secs(15),
            || {
                let req = http.get(&health).timeout(Duration::from_secs(1)).send();
                async move {
                    req.await.is_ok_and(|r| r.status() == 200)
                        && TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
                }
            },
        )
        .await?;
        Ok(GatehouseProxy {
            child,
            pid,
            listen,
            admin,
            token,
            log,
        })
    }

    /// The workspace URL clients use.
    pub fn url(&self) -> String {
        format!("http://{}/ws/{WORKSPACE}", self.listen)
    }

    /// The config version the proxy serves (`/healthz`; 0 before it has one).
    pub async fn config_version(&self, http: &reqwest::Client) -> anyhow::Result<u64> {
        let url = format!("http://{}/healthz", self.admin);
        let health: serde_json::Value = http
            .get(&url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .with_context(|| format!("GET {url}"))?
            .json()
            .await
            .with_context(|| format!("GET {url}: not JSON"))?;
        health
            .get("config_version")
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("GET {url}: no config_version in {health}"))
    }

    /// Waits until the proxy serves config `version` (or a later one) from its control
    /// plane, `timeout` at most: a fed proxy answers `/healthz` before its first config.
    pub async fn wait_for_config(
        &self,
        http: &reqwest::Client,
        version: u64,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let serving = self.config_version(http).await?;
            if serving >= version {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "still serves config version {serving} after {timeout:?}, not the control plane's {version}; log {}:\n{}",
                    self.log.display(),
                    tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin listener's Prometheus text.
    pub async fn metrics(&self, http: &reqwest::Client) -> anyhow::Result<String> {
        crate::prometheus::scrape(http, &format!("http://{}/metrics", self.admin)).await
    }

    /// Log lines at WARN or ERROR (and panics), the signs of trouble a load run may
    /// leave: grouped by message, digits aside, as "<count>x <first such line>".
    pub fn warnings(&self) -> Vec<String> {
        log_warnings(&self.log)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// A running nginx: one worker process in front of one upstream.
pub struct Nginx {
    child: Child,
    pub master: u32,
    pub listen: SocketAddr,
    pub log: PathBuf,
}

impl Nginx {
    /// Finds the nginx binary: `$PATH`, then the sbin directories Debian uses.
    pub fn find() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
            .map(|d| d.join("nginx"))
            .find(|p| p.is_file())
    }

    pub async fn start(binary: &Path, dir: &Path, upstream: SocketAddr) -> anyhow::Result<Nginx> {
        let prefix = dir.join("nginx");
        for sub in ["", "logs", "tmp"] {
            std::fs::create_dir_all(prefix.join(sub))?;
        }
        let prefix = prefix.canonicalize()?;
        let port = free_port()?;
        let listen: SocketAddr = ([127, 0, 0, 1], port).into();
        let p = prefix.display();
        // keepalive_requests is raised on both sides: nginx's default (1000) would close
        // every wrk and upstream connection after 1000 requests, which gatehouse never
        // does, and would make nginx look worse than it is.
        let conf = format!(
            r#"# generated by gatehouse-bench
worker_processes 1;
pid {p}/nginx.pid;
error_log {p}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {p}/tmp/client_body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    keepalive_requests 1000000;
    upstream mcp_upstream {{
        server {upstream};
        keepalive 32;
        keepalive_requests 1000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://mcp_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host "{upstream}";
            proxy_buffering off;
        }}
    }}
}}
"#
        );
        let conf_path = prefix.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let log = prefix.join("logs").join("stderr.log");
        let (mut child, master) = spawn_logged(
            Command::new(binary)
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(&prefix)
                .arg("-g")
                .arg("daemon off;"),
            &log,
            &binary.display().to_string(),
            "",
        )?;
        wait_ready(
            "nginx",
            &mut child,
            &log,
            Duration::from_secs(10),
            accepts(listen),
        )
        .await?;
        Ok(Nginx {
            child,
            master,
            listen,
            log,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.listen)
    }

    /// The master and its workers: the processes whose CPU time nginx costs.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.master];
        pids.extend(procstat::children_of(self.master));
        pids
    }

    /// Fast shutdown (SIGTERM): the master stops its workers, then exits. Killed
    /// outright, with its workers, if it has not exited within five seconds.
    pub async fn stop(mut self) {
        let workers = procstat::children_of(self.master);
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.master.to_string())
            .status();
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
            for pid in workers {
                let _ = std::process::Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .status();
            }
        }
    }

    /// `nginx -v`, for the report.
    pub async fn version(binary: &Path) -> Option<String> {
        let out = Command::new(binary).arg("-v").output().await.ok()?;
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        text.lines().next().map(|l| l.trim().to_string())
    }
}

/// A running `pingora-bare` (benches/src/bin/pingora_bare.rs): Pingora as a dumb hop
/// in front of one upstream, built like gatehouse-proxy but doing nothing else.
pub struct PingoraBare {
    child: Child,
    pub pid: u32,
    pub listen: SocketAddr,
    pub log: PathBuf,
}

impl PingoraBare {
    /// Starts it with `threads` workers, logging to `<dir>/<label>.log`, with
    /// `--own-client` if asked; returns once it accepts connections.
    pub async fn start(
        binary: &Path,
        dir: &Path,
        label: &str,
        upstream: SocketAddr,
        threads: usize,
        own_client: bool,
    ) -> anyhow::Result<PingoraBare> {
        let listen: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = dir.join(format!("{label}.log"));
        let mut command = Command::new(binary);
        command
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--upstream")
            .arg(upstream.to_string())
            .arg("--threads")
            .arg(threads.to_string());
        if own_client {
            command.arg("--own-client");
        }
        let (mut child, pid) = spawn_logged(
            &mut command,
            &log,
            &binary.display().to_string(),
            " (build it with cargo build --release -p gatehouse-bench)",
        )?;
        wait_ready(
            label,
            &mut child,
            &log,
            Duration::from_secs(10),
            accepts(listen),
        )
        .await?;
        Ok(PingoraBare {
            child,
            pid,
            listen,
            log,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.listen)
    }

    pub fn warnings(&self) -> Vec<String> {
        log_warnings(&self.log)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_warnings_by_message() {
        let log = "2026-01-01T00:00:00Z  INFO gatehouse_proxy: starting\n\
                   2026-01-01T00:00:01Z ERROR pingora_core::connectors: failed to acquire reusable stream\n\
                   2026-01-01T00:00:02Z ERROR pingora_core::connectors: failed to acquire reusable stream\n\
                   2026-01-01T00:00:03Z  WARN gatehouse_proxy: upstream s1 took 12 ms\n\
                   2026-01-01T00:00:04Z  WARN gatehouse_proxy: upstream s1 took 7 ms\n";
        assert_eq!(
            summarize_warnings(log),
            vec![
                "2x ERROR pingora_core::connectors: failed to acquire reusable stream".to_string(),
                "2x WARN gatehouse_proxy: upstream s1 took 12 ms".to_string(),
            ]
        );
    }

    #[test]
    fn strips_colour_codes() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m x: y"),
            "2026-01-01T00:00:00Z ERROR x: y"
        );
    }
}
