//! Hot reload of a file-based config: the file is re-read when its contents change
//! (checked every 250 ms, so editors that replace the file by rename work) or on SIGHUP.
//! A bad file is reported and the running config stays in force.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::shared::Shared;

const POLL: Duration = Duration::from_millis(250);

pub struct ConfigWatch {
    pub path: PathBuf,
    pub state: Arc<Shared>,
    /// The bytes the running config was loaded from.
    pub loaded: Vec<u8>,
}

#[async_trait]
impl BackgroundService for ConfigWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; relying on file polling");
                None
            }
        };
        let mut loaded = self.loaded.clone();
        let mut ticker = tokio::time::interval(POLL);
        loop {
            let forced = tokio::select! {
                _ = ticker.tick() => false,
                Some(()) = async { match hangup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
                _ = shutdown.changed() => return,
            };
            let Ok(bytes) = tokio::fs::read(&self.path).await else {
                continue;
            };
            if bytes == loaded && !forced {
                continue;
            }
            let state = self.state.clone();
            let path = self.path.clone();
            let text = bytes.clone();
            // Compiling resolves upstream host names: keep it off the async workers.
            let outcome = tokio::task::spawn_blocking(move || {
                let text = String::from_utf8(text)
                    .map_err(|_| anyhow::anyhow!("{}: not UTF-8", path.display()))?;
                let snapshot = gatehouse_config::parse(
                    &text,
                    gatehouse_config::Format::from_path(&path),
                    &path,
                )?;
                state.install(&snapshot)?;
                anyhow::Ok(snapshot.version)
            })
            .await;
            loaded = bytes;
            match outcome {
                Ok(Ok(version)) => {
                    self.state
                        .metrics
                        .config_reloads
                        .with_label_values(&["ok"])
                        .inc();
                    tracing::info!(version, path = %self.path.display(), "config reloaded");
                }
                Ok(Err(e)) => {
                    self.state
                        .metrics
                        .config_reloads
                        .with_label_values(&["invalid"])
                        .inc();
                    tracing::error!("config not reloaded, keeping the running one: {e:#}");
                }
                Err(e) => tracing::error!(error = %e, "config reload task failed"),
            }
        }
    }
}
