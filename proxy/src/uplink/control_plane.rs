//! Config pushed by the control plane: a long-lived watch stream of versioned
//! snapshots (SSE events `snapshot`), installed as they arrive and acknowledged so the
//! control plane can show each proxy's version and lag. The last snapshot is kept on
//! disk encrypted (it holds secrets), so a proxy restarted while the control plane is
//! down serves what it served before. The control plane may be several replicas
//! ([`Replicas`]): the stream, the token-use report and audit batches go to the one in
//! use and move to the next when it fails.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use async_trait::async_trait;
use futures::StreamExt;
use gatehouse_config::audit::{AuditAck, CallEvent};
use gatehouse_config::Snapshot;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::shared::Shared;
use crate::uplink::replicas::{Replica, Replicas};
use gatehouse_mcp::sse::SseSplitter;

/// No event (not even a keep-alive, sent every 15 s) for this long means the stream
/// is dead.
const IDLE_LIMIT: Duration = Duration::from_secs(45);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a proxy reaches its control plane.
#[derive(Clone)]
pub struct ControlPlane {
    /// Its replicas' base URLs, and the one in use.
    pub replicas: Arc<Replicas>,
    pub token: String,
    pub proxy_id: String,
    pub proxy_name: String,
    pub state_dir: PathBuf,
    http: reqwest::Client,
    /// The version of the snapshot last saved to disk. Saves run on blocking threads
    /// in no set order: one at a time, and never an older snapshot over a newer one.
    saved: Arc<std::sync::Mutex<u64>>,
}

impl ControlPlane {
    pub fn new(
        replicas: Replicas,
        token: String,
        proxy_name: String,
        state_dir: PathBuf,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&state_dir)?;
        let id_file = state_dir.join("proxy.id");
        let proxy_id = match std::fs::read_to_string(&id_file) {
            Ok(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => {
                let mut bytes = [0u8; 8];
                rand::thread_rng().fill_bytes(&mut bytes);
                let id = format!("px_{}", hex::encode(bytes));
                std::fs::write(&id_file, &id)?;
                id
            }
        };
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(ControlPlane {
            replicas: Arc::new(replicas),
            token,
            proxy_id,
            proxy_name,
            state_dir,
            http,
            saved: Arc::new(std::sync::Mutex::new(0)),
        })
    }

    /// Opens the watch stream on `replica`.
    async fn connect(&self, replica: Replica<'_>) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .http
            .get(format!("{}/v1/proxy/watch", replica.url))
            .query(&[("id", &self.proxy_id), ("name", &self.proxy_name)])
            .bearer_auth(&self.token)
            .header(http::header::ACCEPT, "text/event-stream")
            .send()
            .await?;
        anyhow::ensure!(
            resp.status().is_success(),
            "control plane answered HTTP {} to the watch request",
            resp.status()
        );
        Ok(resp)
    }

    /// The first snapshot a replica sends, asking each in turn (each within
    /// `timeout`); the first that answers is used from then on.
    pub async fn fetch_once(&self, timeout: Duration) -> anyhow::Result<Snapshot> {
        let mut failures = Vec::new();
        for index in 0..self.replicas.len() {
            let replica = self.replicas.at(index);
            let work = async {
                let resp = self.connect(replica).await?;
                let mut events = Box::pin(snapshots(resp));
                events
                    .next()
                    .await
                    .ok_or_else(|| anyhow::anyhow!("watch stream ended before a snapshot"))?
            };
            let outcome = tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| anyhow::anyhow!("no snapshot within {timeout:?}"))
                .and_then(|fetched| fetched);
            match outcome {
                Ok(snapshot) => {
                    self.replicas.answered(replica);
                    return Ok(snapshot);
                }
                Err(e) => failures.push(format!("{}: {e:#}", replica.url)),
            }
        }
        anyhow::bail!("{}", failures.join("; "))
    }

    /// Sends with `send` to the replica in use and, while a replica cannot take it,
    /// to the next, each replica once; the last failure when none took it. A
    /// [`ShipError::Rejected`] is final: another replica would reject it too.
    async fn on_any_replica<'s, T, F, Fut>(&'s self, mut send: F) -> Result<T, ShipError>
    where
        F: FnMut(&'s str) -> Fut,
        Fut: Future<Output = Result<T, ShipError>>,
    {
        let mut replica = self.replicas.in_use();
        let mut tried = 0;
        loop {
            match send(replica.url).await {
                Err(ShipError::Unreachable(why)) => {
                    tried += 1;
                    if tried >= self.replicas.len() {
                        return Err(ShipError::Unreachable(why));
                    }
                    replica = self.replicas.failed(replica, &why);
                }
                done => return done,
            }
        }
    }

    /// Tells `url`, the replica whose stream delivered `version`, that it is applied
    /// (its registry of proxies is the one that shows this proxy connected).
    async fn acknowledge(&self, url: &str, version: u64) {
        let result = self
            .http
            .post(format!("{url}/v1/proxy/status"))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"id": self.proxy_id, "name": self.proxy_name, "version": version}))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e.without_url(), "could not report the applied config version");
        }
    }

    /// POSTs audit events to a replica that takes them; `Ok` once one stored them
    /// (or had them: a batch sent again, here or to another replica, is stored once).
    pub async fn ship_audit(&self, events: &[CallEvent]) -> Result<(), ShipError> {
        self.on_any_replica(|url| self.ship_audit_to(url, events))
            .await
    }

    async fn ship_audit_to(&self, url: &str, events: &[CallEvent]) -> Result<(), ShipError> {
        /// [`gatehouse_config::audit::AuditBatch`], borrowed.
        #[derive(serde::Serialize)]
        struct Batch<'a> {
            proxy_id: &'a str,
            events: &'a [CallEvent],
        }
        let resp = self
            .http
            .post(format!("{url}/v1/proxy/audit"))
            .bearer_auth(&self.token)
            .json(&Batch {
                proxy_id: &self.proxy_id,
                events,
            })
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| ShipError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            let why = format!(
                "HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            );
            // A batch the control plane finds malformed stays malformed; anything
            // else (overload, auth being rotated, a restart) is worth retrying.
            let permanent =
                status.is_client_error() && !matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429);
            return Err(if permanent {
                ShipError::Rejected(why)
            } else {
                ShipError::Unreachable(why)
            });
        }
        resp.json::<AuditAck>().await.map_err(|e| {
            ShipError::Unreachable(format!("unexpected answer: {}", e.without_url()))
        })?;
        Ok(())
    }

    fn cache_path(&self) -> PathBuf {
        self.state_dir.join("snapshot.enc")
    }

    /// The disk copy is sealed with a key derived from the proxy token, which is
    /// never stored next to it.
    fn cache_cipher(&self) -> Aes256Gcm {
        let key = Sha256::digest(format!("gatehouse proxy snapshot cache\0{}", self.token));
        Aes256Gcm::new_from_slice(&key).expect("32 bytes")
    }

    /// Seals and writes snapshot `version` (its JSON) unless a newer one was saved.
    /// Blocking: call it off the async workers.
    pub fn save_cache(&self, version: u64, snapshot_json: &[u8]) -> anyhow::Result<()> {
        let mut saved = self
            .saved
            .lock()
            .map_err(|_| anyhow::anyhow!("an earlier snapshot save panicked"))?;
        if version < *saved {
            return Ok(());
        }
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cache_cipher()
            .encrypt(Nonce::from_slice(&nonce), snapshot_json)
            .map_err(|_| anyhow::anyhow!("sealing the snapshot cache failed"))?;
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        write_atomically(&self.cache_path(), &bytes)?;
        *saved = version;
        Ok(())
    }

    pub fn load_cache(&self) -> anyhow::Result<Snapshot> {
        let path = self.cache_path();
        let bytes = std::fs::read(&path)?;
        anyhow::ensure!(bytes.len() > 12, "{} is truncated", path.display());
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .cache_cipher()
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| {
                anyhow::anyhow!("{} does not open with this proxy token", path.display())
            })?;
        Ok(gatehouse_config::parse(
            std::str::from_utf8(&plain)?,
            gatehouse_config::Format::Json,
            &path,
        )?)
    }
}

/// Why audit events were not delivered.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// Worth trying again later: the events wait in the spool.
    #[error("the control plane did not take the audit events: {0}")]
    Unreachable(String),
    /// The control plane refused the batch itself: sending it again cannot help.
    #[error("the control plane rejected the audit batch: {0}")]
    Rejected(String),
}

/// Parsed, validated snapshots from a watch response.
fn snapshots(resp: reqwest::Response) -> impl futures::Stream<Item = anyhow::Result<Snapshot>> {
    let body = resp.bytes_stream();
    futures::stream::unfold(
        (body, SseSplitter::default()),
        |(mut body, mut splitter)| async move {
            loop {
                if let Some(event) = splitter.next_event() {
                    if event.event.as_deref() != Some("snapshot") {
                        continue;
                    }
                    let parsed = gatehouse_config::parse(
                        &event.data,
                        gatehouse_config::Format::Json,
                        Path::new("control-plane snapshot"),
                    )
                    .map_err(anyhow::Error::from);
                    return Some((parsed, (body, splitter)));
                }
                match tokio::time::timeout(IDLE_LIMIT, body.next()).await {
                    Ok(Some(Ok(chunk))) => splitter.push(&chunk),
                    Ok(Some(Err(e))) => {
                        return Some((
                            Err(anyhow::anyhow!("watch stream broke: {}", e.without_url())),
                            (body, splitter),
                        ))
                    }
                    Ok(None) => return None,
                    Err(_) => {
                        return Some((
                            Err(anyhow::anyhow!("watch stream idle for {IDLE_LIMIT:?}")),
                            (body, splitter),
                        ))
                    }
                }
            }
        },
    )
}

fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// How often token use is reported (LAST USED needs minute accuracy).
const USAGE_EVERY: Duration = Duration::from_secs(5);

/// Reports which tokens were used, and when, so `workspace token list` can show
/// LAST USED. Only changes are sent; a failed report is retried with the next one.
pub struct UsageReport {
    pub control_plane: ControlPlane,
    pub state: Arc<Shared>,
}

impl UsageReport {
    async fn send(&self) -> Result<(), ShipError> {
        let used = self.state.config.usage.unreported();
        if used.is_empty() {
            return Ok(());
        }
        let tokens: Vec<serde_json::Value> = used
            .iter()
            .map(|(id, at)| serde_json::json!({"id": id, "last_used": at}))
            .collect();
        let body = &serde_json::json!({"tokens": tokens});
        let cp = &self.control_plane;
        cp.on_any_replica(|url| async move {
            let resp = cp
                .http
                .post(format!("{url}/v1/proxy/usage"))
                .bearer_auth(&cp.token)
                .json(body)
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .map_err(|e| ShipError::Unreachable(e.without_url().to_string()))?;
            match resp.status() {
                ok if ok.is_success() => Ok(()),
                status => Err(ShipError::Unreachable(format!("HTTP {status}"))),
            }
        })
        .await?;
        self.state.config.usage.reported(&used);
        Ok(())
    }
}

#[async_trait]
impl BackgroundService for UsageReport {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut ticker = tokio::time::interval(USAGE_EVERY);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => {
                    let _ = self.send().await;
                    return;
                }
            }
            if let Err(e) = self.send().await {
                tracing::debug!("token use not reported yet: {e}");
            }
        }
    }
}

/// The background service that keeps the proxy's config in step with the control plane.
pub struct ConfigStream {
    pub control_plane: ControlPlane,
    pub state: Arc<Shared>,
}

impl ConfigStream {
    async fn follow(
        &self,
        replica: Replica<'_>,
        shutdown: &mut ShutdownWatch,
    ) -> anyhow::Result<()> {
        let resp = self.control_plane.connect(replica).await?;
        tracing::info!(url = replica.url, "watching the control plane for config");
        let mut events = Box::pin(snapshots(resp));
        loop {
            let next = tokio::select! {
                next = events.next() => next,
                _ = shutdown.changed() => return Ok(()),
            };
            let snapshot = match next {
                Some(Ok(s)) => s,
                Some(Err(e)) => return Err(e),
                None => anyhow::bail!("the control plane closed the watch stream"),
            };
            let version = snapshot.version;
            if version != self.state.config.load().version {
                let state = self.state.clone();
                let to_install = snapshot.clone();
                // Compiling resolves upstream host names: keep it off the async workers.
                tokio::task::spawn_blocking(move || state.install(&to_install)).await??;
                self.state
                    .metrics
                    .config_reloads
                    .with_label_values(&["ok"])
                    .inc();
                tracing::info!(version, "config snapshot applied");
                let cp = self.control_plane.clone();
                let json = serde_json::to_vec(&snapshot)?;
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = cp.save_cache(version, &json) {
                        tracing::warn!("could not save the snapshot cache: {e:#}");
                    }
                });
            }
            self.control_plane.acknowledge(replica.url, version).await;
        }
    }
}

#[async_trait]
impl BackgroundService for ConfigStream {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let replicas = &self.control_plane.replicas;
        let mut backoff = Duration::from_millis(100);
        // Failures since the stream last held for a while: a replica not yet tried
        // in this round is tried at once, a round that found none waits.
        let mut failures = 0;
        loop {
            let replica = replicas.in_use();
            let started = std::time::Instant::now();
            let why = match self.follow(replica, &mut shutdown).await {
                Ok(()) => return,
                Err(e) => format!("{e:#}"),
            };
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
                failures = 0;
            }
            failures += 1;
            let next = replicas.failed(replica, &why);
            if failures % replicas.len() != 0 {
                tracing::warn!(
                    "control plane watch: {why}; serving the last config and trying {} now",
                    next.url
                );
                continue;
            }
            tracing::warn!(
                "control plane watch: {why}; serving the last config and retrying in {backoff:?}"
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::{Secret, SessionKey};

    fn snapshot(version: u64) -> Vec<u8> {
        let snapshot = Snapshot {
            version,
            session_keys: vec![SessionKey {
                id: "k1".into(),
                key: Secret::new("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".to_string()),
            }],
            ..Snapshot::default()
        };
        serde_json::to_vec(&snapshot).unwrap()
    }

    #[test]
    fn snapshots_saved_at_once_all_succeed_and_the_newest_stays() {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-cache-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let replicas = Replicas::new(["http://cp:7070".to_string()]).unwrap();
        let cp = ControlPlane::new(replicas, "gpx_t".into(), "edge".into(), dir.clone()).unwrap();
        let saves: Vec<_> = (1..=16)
            .map(|v| {
                let cp = cp.clone();
                std::thread::spawn(move || cp.save_cache(v, &snapshot(v)))
            })
            .collect();
        for save in saves {
            save.join().unwrap().unwrap();
        }
        assert_eq!(cp.load_cache().unwrap().version, 16);
        // A late save of an older snapshot does not replace it.
        cp.save_cache(3, &snapshot(3)).unwrap();
        assert_eq!(cp.load_cache().unwrap().version, 16);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
