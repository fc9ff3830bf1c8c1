//! The deployment most control-plane tests start from — `gatehouse serve`, one
//! `gatehouse-proxy` fed by it, the bootstrap admin's CLI logged in — and the helpers
//! that read what its users see.

use std::cell::Cell;

use reqwest::Method;
use serde_json::Value;

use crate::control_plane::{Cli, ControlPlane, GatewayProxy, StoreBackend};
use crate::{wait_until, TempDir, STEP_TIMEOUT};

/// What `gatehouse proxies` calls the proxy of a [`Deployment`].
pub const PROXY_NAME: &str = "edge-1";

pub struct Deployment {
    pub cp: ControlPlane,
    pub proxy: GatewayProxy,
    /// The bootstrap admin's CLI, logged in.
    pub admin: Cli,
    /// The proxy's `--state-dir`.
    pub state: TempDir,
}

impl Deployment {
    pub async fn start() -> anyhow::Result<Deployment> {
        Self::start_on(StoreBackend::Sqlite).await
    }

    /// [`start`](Self::start) with the store on `backend`.
    pub async fn start_on(backend: StoreBackend) -> anyhow::Result<Deployment> {
        let cp = ControlPlane::start_on(backend).await?;
        let state = TempDir::new("gw-state")?;
        let proxy = GatewayProxy::start_named(
            &cp.api_url(),
            cp.proxy_token(),
            state.path(),
            cp.gateway_ports(),
            PROXY_NAME,
        )
        .await?;
        let admin = Cli::new("admin")?;
        let out = admin
            .login(&cp.api_url(), "admin", cp.admin_credential())
            .await?;
        anyhow::ensure!(
            out == format!("Logged in as admin at {}.\n", cp.api_url()),
            "unexpected login answer: {out:?}"
        );
        Ok(Deployment {
            cp,
            proxy,
            admin,
            state,
        })
    }

    /// Waits until the control plane lists the proxy as connected with lag 0 and the
    /// proxy's `/healthz` reports that version; returns it.
    pub async fn synced(&self) -> anyhow::Result<u64> {
        synced(&self.cp, &self.admin, &self.proxy).await
    }
}

/// See [`Deployment::synced`].
pub async fn synced(cp: &ControlPlane, admin: &Cli, proxy: &GatewayProxy) -> anyhow::Result<u64> {
    let token = admin.session_token()?;
    let version = Cell::new(0);
    wait_until(
        &format!(
            "the control plane lists proxy {:?} connected with lag 0",
            proxy.name()
        ),
        STEP_TIMEOUT,
        || async {
            let Ok(answer) = cp
                .request(Method::GET, "/v1/proxies", Some(&token), None)
                .await
            else {
                return false;
            };
            let Some(entry) = proxy_entry(&answer.json().unwrap_or_default(), proxy.name()) else {
                return false;
            };
            let current = entry["config_version"].as_u64().unwrap_or(u64::MAX);
            let caught_up = entry["connected"] == true
                && entry["lag"] == 0
                && entry["version"].as_u64() == Some(current);
            version.set(current);
            caught_up
                && proxy
                    .config_version()
                    .await
                    .is_ok_and(|served| served == current)
        },
    )
    .await?;
    Ok(version.get())
}

/// The entry named `name` in a `/v1/proxies` (or `gatehouse --json proxies`) answer.
pub fn proxy_entry(answer: &Value, name: &str) -> Option<Value> {
    answer["proxies"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
}

/// The `mwt_...` token of a "Token: mwt_... (shown once — save this)" line.
pub fn token_in(stdout: &str) -> anyhow::Result<String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("Token: "))
        .ok_or_else(|| anyhow::anyhow!("no `Token:` line in:\n{stdout}"))?;
    anyhow::ensure!(
        line.ends_with(" (shown once — save this)"),
        "the token line does not say it is shown once: {line:?}"
    );
    let token = line
        .trim_start_matches("Token: ")
        .split(' ')
        .next()
        .unwrap_or_default();
    anyhow::ensure!(
        token.starts_with("mwt_") && token.len() >= 4 + 43,
        "not an mwt_ token of 32+ random bytes: {token:?}"
    );
    Ok(token.to_owned())
}
