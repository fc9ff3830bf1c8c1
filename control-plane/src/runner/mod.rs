//! The runner: Gatehouse hosts stdio MCP servers (`npx ...`, `uvx ...`, a binary)
//! itself and exposes each one as an internal Streamable HTTP endpoint,
//! `<runner URL>/run/<workspace>/<server>`, which accepts only the runner token as
//! a bearer. The control plane puts that URL and token (as an `Authorization`
//! header) in the config it pushes for a stdio server, so proxies reach a hosted
//! server like any other HTTP upstream and need nothing of their own for it.
//!
//! `gatehouse serve` and `gatehouse up` run the runner in-process on its own
//! listener (`--runner-listen`, loopback by default). It learns what to host from the
//! control plane's publications ([`spec::HostedSet`], rebuilt from the store with each
//! config): one process per (workspace, server), started on first use, shared by
//! every gateway session ([`process`], its calls in [`calls`]), started again with a growing delay after a
//! crash, stopped when the server is removed, disabled or its workspace deleted,
//! replaced when its command, environment or secrets change, stopped when idle
//! ([`slot`]). The HTTP side is in [`http`], the counters in [`metrics`].
//!
//! Isolation: a hosted process gets a minimal environment (`PATH`, `HOME` = its own
//! directory `<data dir>/runner/<workspace>/<server>`, which is also its working
//! directory, its `env` values and its secrets — never on its command line, never
//! logged), its own process group (stopped as a whole), no core dumps and at most
//! 4096 open files. That is all: it runs as the control plane's user, with its
//! file-system view, network and memory. Hosted servers are trusted code; install
//! only what you would run on that machine yourself.

pub mod calls;
pub mod http;
pub mod metrics;
pub mod process;
pub mod slot;
pub mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub use metrics::HostedMetrics;
pub use spec::{Hosted, HostedKey, HostedSet, HostedSpec, STDIO};

use slot::Slot;

/// Where proxies reach the runner, and the bearer it accepts.
#[derive(Clone)]
pub struct RunnerLink {
    /// e.g. `http://127.0.0.1:41234`.
    pub url: String,
    pub token: String,
}

impl RunnerLink {
    /// The endpoint of one hosted server.
    pub fn endpoint(&self, key: &HostedKey) -> String {
        format!(
            "{}/run/{}/{}",
            self.url.trim_end_matches('/'),
            key.workspace,
            key.server
        )
    }
}

impl std::fmt::Debug for RunnerLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerLink")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How the runner runs its processes.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Each server's directory is `<dir>/<workspace>/<server>`.
    pub dir: PathBuf,
    /// How long a process may take to answer `initialize` (`npx` may download the
    /// package first).
    pub start_timeout: Duration,
    /// Stop a process no call used for this long; `None`: never.
    pub idle_stop: Option<Duration>,
}

pub struct Runner {
    hosted: watch::Receiver<Arc<HostedSet>>,
    slots: Mutex<HashMap<HostedKey, Arc<Slot>>>,
    options: RunnerOptions,
    token_sha256: [u8; 32],
    metrics: HostedMetrics,
}

impl Runner {
    /// A runner hosting what `hosted` says, accepting `token`; its lifecycle tasks
    /// (reconciling with each publication, stopping idle processes) run until the
    /// process ends.
    pub fn start(
        hosted: watch::Receiver<Arc<HostedSet>>,
        token: &str,
        options: RunnerOptions,
        metrics: HostedMetrics,
    ) -> Arc<Runner> {
        let runner = Arc::new(Runner {
            hosted,
            slots: Mutex::new(HashMap::new()),
            options,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
            metrics,
        });
        tokio::spawn(follow_publications(runner.clone()));
        if let Some(idle) = runner.options.idle_stop {
            tokio::spawn(stop_idle(runner.clone(), idle));
        }
        runner
    }

    pub fn token_matches(&self, token: &str) -> bool {
        use subtle::ConstantTimeEq;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        hash.ct_eq(&self.token_sha256).into()
    }

    pub fn start_timeout(&self) -> Duration {
        self.options.start_timeout
    }

    pub fn metrics(&self) -> &HostedMetrics {
        &self.metrics
    }

    /// The slot of a server the control plane says to host; `None` for any other
    /// (a disabled one included).
    fn slot(&self, key: &HostedKey) -> Option<Arc<Slot>> {
        let hosted = self
            .hosted
            .borrow()
            .get(key)
            .filter(|h| h.enabled)
            .cloned()?;
        let mut slots = self.slots.lock().expect("slots");
        let slot = slots
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Slot::new(hosted, self.server_dir(key))));
        Some(slot.clone())
    }

    fn server_dir(&self, key: &HostedKey) -> PathBuf {
        self.options.dir.join(&key.workspace).join(&key.server)
    }

    /// Stops every process (the control plane is stopping).
    pub async fn stop_all(&self) {
        let slots: Vec<Arc<Slot>> = self
            .slots
            .lock()
            .expect("slots")
            .drain()
            .map(|(_, s)| s)
            .collect();
        futures::future::join_all(
            slots
                .iter()
                .map(|s| s.stop("the control plane is stopping")),
        )
        .await;
    }

    /// Brings the slots in line with what is hosted now: removed servers are
    /// stopped and their directories deleted, disabled ones stopped, changed ones
    /// replaced.
    async fn reconcile(&self) {
        let hosted = self.hosted.borrow().clone();
        for key in hosted.iter().filter(|(_, h)| !h.enabled).map(|(k, _)| k) {
            let slot = self.slots.lock().expect("slots").remove(key);
            if let Some(slot) = slot {
                slot.stop("it was disabled").await;
            }
        }
        // Directories of servers that are gone, whether or not they ran here.
        if let Ok(workspaces) = std::fs::read_dir(&self.options.dir) {
            for workspace in workspaces.flatten() {
                let Ok(servers) = std::fs::read_dir(workspace.path()) else {
                    continue;
                };
                for server in servers.flatten() {
                    let key = HostedKey {
                        workspace: workspace.file_name().to_string_lossy().into_owned(),
                        server: server.file_name().to_string_lossy().into_owned(),
                    };
                    if !hosted.contains_key(&key)
                        && !self.slots.lock().expect("slots").contains_key(&key)
                    {
                        let _ = std::fs::remove_dir_all(server.path());
                    }
                }
            }
        }
        let (removed, kept): (Vec<_>, Vec<_>) = {
            let mut slots = self.slots.lock().expect("slots");
            let removed: Vec<(HostedKey, Arc<Slot>)> = slots
                .keys()
                .filter(|k| !hosted.contains_key(*k))
                .cloned()
                .collect::<Vec<_>>()
                .into_iter()
                .filter_map(|k| slots.remove(&k).map(|s| (k, s)))
                .collect();
            let kept: Vec<(Arc<Slot>, Arc<Hosted>)> = slots
                .iter()
                .filter_map(|(k, s)| {
                    let now = hosted.get(k)?;
                    (*s.hosted() != **now).then(|| (s.clone(), now.clone()))
                })
                .collect();
            (removed, kept)
        };
        for (key, slot) in removed {
            slot.stop("it was removed").await;
            let _ = std::fs::remove_dir_all(self.server_dir(&key));
        }
        for (slot, hosted) in kept {
            slot.reconfigure(hosted).await;
        }
    }
}

async fn follow_publications(runner: Arc<Runner>) {
    let mut hosted = runner.hosted.clone();
    while hosted.changed().await.is_ok() {
        runner.reconcile().await;
    }
}

async fn stop_idle(runner: Arc<Runner>, idle: Duration) {
    let every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(10));
    loop {
        tokio::time::sleep(every).await;
        let slots: Vec<Arc<Slot>> = runner
            .slots
            .lock()
            .expect("slots")
            .values()
            .cloned()
            .collect();
        for slot in slots {
            slot.stop_if_idle(idle).await;
        }
    }
}
