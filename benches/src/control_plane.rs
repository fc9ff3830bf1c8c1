//! The control plane as a scenario needs it: the release `gatehouse serve` on a fresh
//! data dir (its store there, or a PostgreSQL database that replicas share with one
//! master key and proxy token: [`Replica`]), its bootstrap admin and proxy token (read
//! from that dir), the few API calls that give proxies a workspace to serve, and its
//! `/metrics`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::Method;
use serde_json::{json, Value};
use tokio::process::{Child, Command};

use crate::targets::{free_port, log_warnings, spawn_logged, wait_ready};

/// A running `gatehouse serve`.
pub struct ControlPlane {
    child: Child,
    pub pid: u32,
    pub addr: SocketAddr,
    /// What proxies present (`<data dir>/proxy.token`, or the one replicas share).
    pub proxy_token: String,
    /// The bootstrap admin's credential (`<data dir>/admin.credential`), when this
    /// control plane created the store's admin.
    admin_credential: Option<String>,
    pub log: PathBuf,
    http: reqwest::Client,
}

/// One of several control planes on one PostgreSQL database.
pub struct Replica<'a> {
    /// Names its data dir (`<dir>/<label>-data`) and log (`<dir>/<label>.log`).
    pub label: &'a str,
    /// `--database`.
    pub database: &'a str,
    /// `GATEHOUSE_MASTER_KEY` and `GATEHOUSE_PROXY_TOKEN`, the same for every replica.
    pub master_key: &'a str,
    pub proxy_token: &'a str,
}

impl ControlPlane {
    /// Starts `gatehouse serve` on a free port with a fresh data dir
    /// (`<dir>/control-plane-data`) holding its SQLite store, logging to
    /// `<dir>/control-plane.log`, and waits until `/healthz` answers.
    pub async fn start(binary: &Path, dir: &Path) -> anyhow::Result<ControlPlane> {
        Self::launch(binary, dir, "control-plane", None).await
    }

    /// Starts `replica` as [`start`](Self::start) does.
    pub async fn start_replica(
        binary: &Path,
        dir: &Path,
        replica: &Replica<'_>,
    ) -> anyhow::Result<ControlPlane> {
        Self::launch(binary, dir, replica.label, Some(replica)).await
    }

    async fn launch(
        binary: &Path,
        dir: &Path,
        label: &str,
        replica: Option<&Replica<'_>>,
    ) -> anyhow::Result<ControlPlane> {
        let data = dir.join(format!("{label}-data"));
        if data.exists() {
            std::fs::remove_dir_all(&data)
                .with_context(|| format!("removing the old {}", data.display()))?;
        }
        std::fs::create_dir_all(&data)?;
        let log = dir.join(format!("{label}.log"));
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(addr.to_string())
            .env("NO_COLOR", "1")
            // The proxy token and admin credential are the ones `serve` writes to
            // the data dir (or the replicas' own), not whatever this shell holds.
            .env_remove("GATEHOUSE_PROXY_TOKEN")
            .env_remove("GATEHOUSE_MASTER_KEY")
            .env_remove("GATEHOUSE_DATABASE_URL")
            .env_remove("GATEHOUSE_DATA_DIR");
        if let Some(replica) = replica {
            command
                .arg("--database")
                .arg(replica.database)
                .env("GATEHOUSE_MASTER_KEY", replica.master_key)
                .env("GATEHOUSE_PROXY_TOKEN", replica.proxy_token);
        }
        let (mut child, pid) = spawn_logged(
            &mut command,
            &log,
            &binary.display().to_string(),
            " (build it: cargo build --release -p gatehouse-control-plane)",
        )?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let health = format!("http://{addr}/healthz");
        wait_ready(
            "gatehouse serve",
            &mut child,
            &log,
            Duration::from_secs(30),
            || {
                let req = http.get(&health).timeout(Duration::from_secs(1)).send();
                async move { req.await.is_ok_and(|r| r.status() == 200) }
            },
        )
        .await?;
        let read = |name: &str| -> anyhow::Result<String> {
            let path = data.join(name);
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("gatehouse serve wrote no {}", path.display()))?
                .trim()
                .to_string())
        };
        let (proxy_token, admin_credential) = match replica {
            // Only the replica that created the store's admin writes its credential.
            Some(r) => (r.proxy_token.to_string(), read("admin.credential").ok()),
            None => (read("proxy.token")?, Some(read("admin.credential")?)),
        };
        Ok(ControlPlane {
            child,
            pid,
            addr,
            proxy_token,
            admin_credential,
            log,
            http,
        })
    }

    /// The API URL proxies and users are given.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Logs in as the bootstrap admin (`POST /v1/login`).
    pub async fn login_admin(&self) -> anyhow::Result<Admin<'_>> {
        let credential = self
            .admin_credential
            .as_deref()
            .context("this control plane did not create the admin: log in with the credential of the one that did")?;
        self.login_admin_with(credential).await
    }

    /// Logs in as the bootstrap admin with `credential` (written by another replica).
    pub async fn login_admin_with(&self, credential: &str) -> anyhow::Result<Admin<'_>> {
        let body = json!({"username": "admin", "credential": credential});
        let answer = self.call(Method::POST, "/v1/login", None, &body).await?;
        let jwt = answer
            .get("token")
            .and_then(Value::as_str)
            .with_context(|| format!("POST /v1/login answered no token: {answer}"))?;
        Ok(Admin {
            control_plane: self,
            jwt: jwt.to_string(),
        })
    }

    /// One API request with a JSON body; its JSON answer, or an error quoting it.
    async fn call(
        &self,
        method: Method,
        path: &str,
        jwt: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url()))
            .timeout(Duration::from_secs(10))
            .json(body);
        if let Some(jwt) = jwt {
            request = request.bearer_auth(jwt);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: not JSON: {text}"))
    }

    /// `/metrics`: Prometheus text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        crate::prometheus::scrape(&self.http, &format!("{}/metrics", self.url())).await
    }

    /// The version of the config snapshot it publishes to proxies.
    pub async fn config_version(&self) -> anyhow::Result<u64> {
        let text = self.metrics().await?;
        let version = crate::prometheus::sum(&text, "gatehouse_control_plane_config_version", &[])
            .context("control plane /metrics has no gatehouse_control_plane_config_version")?;
        Ok(version as u64)
    }

    /// WARN/ERROR lines of its log, grouped by message.
    pub fn warnings(&self) -> Vec<String> {
        log_warnings(&self.log)
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The bootstrap admin, logged in.
pub struct Admin<'a> {
    control_plane: &'a ControlPlane,
    jwt: String,
}

impl Admin<'_> {
    /// The login session, for requests of a scenario's own.
    pub fn jwt(&self) -> &str {
        &self.jwt
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.control_plane
            .call(Method::POST, path, Some(&self.jwt), &body)
            .await
    }

    /// `POST /v1/workspaces`.
    pub async fn create_workspace(&self, slug: &str, name: &str) -> anyhow::Result<()> {
        self.post("/v1/workspaces", json!({"name": name, "slug": slug}))
            .await?;
        Ok(())
    }

    /// `POST /v1/workspaces/{ws}/servers`: the MCP server at `url`, as `slug`.
    pub async fn install_server(&self, ws: &str, slug: &str, url: &str) -> anyhow::Result<()> {
        self.post(
            &format!("/v1/workspaces/{ws}/servers"),
            json!({"url": url, "slug": slug}),
        )
        .await?;
        Ok(())
    }

    /// `POST /v1/workspaces/{ws}/servers`: the stdio server `command` (no arguments),
    /// hosted by the control plane's runner, as `slug`.
    pub async fn install_stdio(&self, ws: &str, slug: &str, command: &str) -> anyhow::Result<()> {
        self.post(
            &format!("/v1/workspaces/{ws}/servers"),
            json!({"command": command, "slug": slug}),
        )
        .await?;
        Ok(())
    }

    /// `POST /v1/workspaces/{ws}/tokens`: a new token's secret, shown this once.
    pub async fn create_token(&self, ws: &str, name: &str) -> anyhow::Result<String> {
        let answer = self
            .post(
                &format!("/v1/workspaces/{ws}/tokens"),
                json!({"name": name}),
            )
            .await?;
        answer
            .get("secret")
            .and_then(Value::as_str)
            .map(str::to_string)
            .with_context(|| format!("token creation answered no secret: {answer}"))
    }

    /// `POST /v1/workspaces/{ws}/tokens/revoke`: revokes the active token `name`; the
    /// control plane has published the config without it when this returns.
    pub async fn revoke_token(&self, ws: &str, name: &str) -> anyhow::Result<()> {
        self.post(
            &format!("/v1/workspaces/{ws}/tokens/revoke"),
            json!({"name": name}),
        )
        .await?;
        Ok(())
    }
}
