//! The life of one hosted server ([`Slot`]): started on first use, shared while it
//! runs, started again after a crash with a growing delay, replaced when its
//! configuration changes, stopped when removed or idle.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::calls::Notices;
use super::metrics::HostedMetrics;
use super::process::{HostedError, HostedProcess};
use super::spec::Hosted;

/// First delay before starting a server again after it crashed; it doubles with
/// each crash in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A process that ran this long before crashing starts the count of crashes anew.
const STABLE_AFTER: Duration = Duration::from_secs(60);

pub struct Slot {
    /// Its configuration now; a change replaces the process.
    hosted: Mutex<Arc<Hosted>>,
    dir: PathBuf,
    /// What its processes say outside any call, for GET streams.
    notices: Notices,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    process: Option<Arc<HostedProcess>>,
    /// Crashes in a row (failed starts included).
    crashes: u32,
    last_crash: Option<Instant>,
}

impl Slot {
    pub fn new(hosted: Arc<Hosted>, dir: PathBuf) -> Slot {
        Slot {
            hosted: Mutex::new(hosted),
            dir,
            notices: tokio::sync::broadcast::channel(64).0,
            state: Default::default(),
        }
    }

    pub fn hosted(&self) -> Arc<Hosted> {
        self.hosted.lock().expect("hosted").clone()
    }

    /// The running process, started (and initialized) first if there is none.
    /// Concurrent callers wait for the same start.
    pub async fn process(
        &self,
        start_timeout: Duration,
        metrics: &HostedMetrics,
    ) -> Result<Arc<HostedProcess>, HostedError> {
        let mut state = self.state.lock().await;
        let mut after_crash = state.crashes > 0;
        if let Some(process) = &state.process {
            match process.ended() {
                None => {
                    // In use from now: the idle reaper leaves it alone.
                    process.touch();
                    return Ok(process.clone());
                }
                Some(end) if !end.stopped => {
                    if end.at.duration_since(process.started()) >= STABLE_AFTER {
                        state.crashes = 0;
                    }
                    state.crashes += 1;
                    state.last_crash = Some(end.at);
                    after_crash = true;
                }
                Some(_) => {}
            }
            state.process = None;
        }
        if let (Some(at), crashes) = (state.last_crash, state.crashes) {
            if crashes > 0 {
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << (crashes - 1).min(16))
                    .min(MAX_BACKOFF);
                let wait = (at + backoff).saturating_duration_since(Instant::now());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let hosted = self.hosted();
        let notices = self.notices.clone();
        match HostedProcess::start(&hosted, notices, &self.dir, start_timeout, metrics).await {
            Ok(process) => {
                if after_crash {
                    metrics.restarted(&hosted.spec.key.server);
                }
                state.process = Some(process.clone());
                Ok(process)
            }
            Err(e) => {
                metrics.failed_start(&hosted.spec.key.server);
                state.crashes += 1;
                state.last_crash = Some(Instant::now());
                tracing::warn!(server = %hosted.spec.key, error = %e, "hosted server did not start");
                Err(e)
            }
        }
    }

    /// What its processes say outside any call, from now on.
    pub fn notices(&self) -> tokio::sync::broadcast::Receiver<serde_json::Value> {
        self.notices.subscribe()
    }

    /// The running process, if there is one; starts nothing.
    pub fn running(&self) -> Option<Arc<HostedProcess>> {
        let state = self.state.try_lock().ok()?;
        state
            .process
            .as_ref()
            .filter(|p| p.ended().is_none())
            .cloned()
    }

    /// Stops the process (if any) and forgets its crashes.
    pub async fn stop(&self, why: &str) {
        let mut state = self.state.lock().await;
        if let Some(process) = state.process.take() {
            if process.ended().is_none() {
                tracing::info!(server = %self.hosted().spec.key, pid = process.pid(), "stopping hosted server: {why}");
                process.stop().await;
            }
        }
        state.crashes = 0;
        state.last_crash = None;
    }

    /// Takes `hosted` as its configuration; the process started with the old one
    /// is stopped (the next call starts the new one).
    pub async fn reconfigure(&self, hosted: Arc<Hosted>) {
        *self.hosted.lock().expect("hosted") = hosted;
        self.stop("its configuration changed").await;
    }

    /// Stops the process if no call is in flight and none came for `idle`.
    pub async fn stop_if_idle(&self, idle: Duration) {
        let Some(process) = self.running() else {
            return;
        };
        if process.in_flight() == 0 && process.idle_for() >= idle {
            self.stop("idle").await;
        }
    }
}
