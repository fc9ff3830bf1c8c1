//! Ships audit events to the control plane, off the request path: events are
//! gathered into batches, POSTed to `/v1/proxy/audit`, and — when the control plane
//! cannot take them — written to a bounded spool on local disk, delivered oldest
//! first once it answers again. A batch whose fate is unknown (a timeout after the
//! control plane may have stored it) is spooled and sent again: delivery is
//! at-least-once, and the control plane drops repeats by event id.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gatehouse_config::audit::CallEvent;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::audit::record::{split, AuditQueue};
use crate::metrics::Metrics;
use crate::uplink::control_plane::{ControlPlane, ShipError};

/// Events per POST (the control plane takes up to 5,000).
const MAX_BATCH: usize = 1000;
/// How long the first event of a batch waits for company.
const LINGER: Duration = Duration::from_millis(100);
/// How often a spool waiting for a control plane that was down is retried, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const MIN_BACKOFF: Duration = Duration::from_millis(250);
/// After shutdown starts, requests still finishing keep recording events this long.
const SHUTDOWN_TAIL: Duration = Duration::from_secs(3);
/// The spool warns once it is this full.
const WARN_FRACTION: f64 = 0.8;

/// The background service that drains the audit queue.
pub struct AuditShipper {
    queue: Mutex<Option<AuditQueue>>,
    control_plane: ControlPlane,
    metrics: Arc<Metrics>,
    spool: Mutex<Option<Spool>>,
}

impl AuditShipper {
    pub fn new(
        queue: AuditQueue,
        control_plane: ControlPlane,
        metrics: Arc<Metrics>,
        spool: Spool,
    ) -> AuditShipper {
        metrics.audit_spool_limit.set(spool.limit as i64);
        metrics.audit_spool_bytes.set(spool.bytes as i64);
        AuditShipper {
            queue: Mutex::new(Some(queue)),
            control_plane,
            metrics,
            spool: Mutex::new(Some(spool)),
        }
    }
}

/// The shipper's working state, owned by its loop.
struct Run<'a> {
    cp: &'a ControlPlane,
    metrics: &'a Metrics,
    spool: Spool,
    /// When the control plane may be tried again (it failed last time).
    retry_at: Option<Instant>,
    backoff: Duration,
    warned_full: bool,
}

#[async_trait]
impl BackgroundService for AuditShipper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (Some(mut queue), Some(spool)) = (
            self.queue.lock().expect("queue").take(),
            self.spool.lock().expect("spool").take(),
        ) else {
            return;
        };
        let mut run = Run {
            cp: &self.control_plane,
            metrics: &self.metrics,
            spool,
            retry_at: None,
            backoff: MIN_BACKOFF,
            warned_full: false,
        };
        let mut tick = tokio::time::interval(MIN_BACKOFF);
        loop {
            run.drain_spool().await;
            tokio::select! {
                batch = queue.next_batch(MAX_BATCH) => {
                    let Some(mut batch) = batch else { return };
                    if batch.len() < MAX_BATCH {
                        tokio::time::sleep(LINGER).await;
                        batch.extend(queue.try_batch(MAX_BATCH - batch.len()));
                    }
                    // The journal segments stay until the events are delivered or
                    // spooled (or dropped, which is logged).
                    let (events, _holds) = split(batch);
                    run.ship_or_spool(events).await;
                }
                _ = tick.tick() => {}
                _ = shutdown.changed() => break,
            }
        }
        // Shutting down: one last try to deliver, then whatever still arrives from
        // requests finishing goes to the spool for the next start.
        let (rest, _holds) = split(queue.try_batch(usize::MAX));
        if !rest.is_empty() {
            run.ship_or_spool(rest).await;
        }
        let until = Instant::now() + SHUTDOWN_TAIL;
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let (rest, _holds) = split(queue.try_batch(usize::MAX));
            if !rest.is_empty() {
                run.spool(&rest);
            }
        }
    }
}

impl Run<'_> {
    fn control_plane_resting(&self) -> bool {
        self.retry_at.is_some_and(|at| Instant::now() < at)
    }

    fn failed(&mut self, why: &ShipError) {
        if self.retry_at.is_none() {
            tracing::warn!(
                "{why}; spooling audit events to {}",
                self.spool.dir.display()
            );
        }
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn succeeded(&mut self) {
        if self.retry_at.take().is_some() {
            tracing::info!("the control plane takes audit events again");
        }
        self.backoff = MIN_BACKOFF;
    }

    /// Sends `batch` unless older events wait in the spool (they go first) or the
    /// control plane is resting; spools it otherwise.
    async fn ship_or_spool(&mut self, batch: Vec<CallEvent>) {
        if self.spool.is_empty() && !self.control_plane_resting() {
            match self.cp.ship_audit(&batch).await {
                Ok(()) => {
                    self.succeeded();
                    self.metrics.audit_shipped.inc_by(batch.len() as u64);
                    return;
                }
                Err(e @ ShipError::Rejected(_)) => return self.rejected(batch.len(), &e),
                Err(e) => self.failed(&e),
            }
        }
        self.spool(&batch);
    }

    fn rejected(&mut self, events: usize, why: &ShipError) {
        self.metrics.audit_dropped.inc_by(events as u64);
        tracing::error!(events, "audit events LOST: {why}");
    }

    fn spool(&mut self, batch: &[CallEvent]) {
        let metrics = &self.metrics;
        match self.spool.append(batch) {
            Ok(()) => metrics.audit_spooled.inc_by(batch.len() as u64),
            Err(e) => {
                metrics.audit_dropped.inc_by(batch.len() as u64);
                tracing::error!(
                    events = batch.len(),
                    "audit events LOST: {e:#} (spool {} of {} bytes)",
                    self.spool.bytes,
                    self.spool.limit
                );
            }
        }
        metrics.audit_spool_bytes.set(self.spool.bytes as i64);
        let full = self.spool.bytes as f64 >= self.spool.limit as f64 * WARN_FRACTION;
        if full && !self.warned_full {
            tracing::warn!(
                "the audit spool holds {} of its {} bytes; events are dropped when it is full",
                self.spool.bytes,
                self.spool.limit
            );
        }
        self.warned_full = full;
    }

    /// Delivers spooled files, oldest first, while the control plane takes them.
    async fn drain_spool(&mut self) {
        while !self.spool.is_empty() && !self.control_plane_resting() {
            let Some(path) = self.spool.oldest() else {
                return;
            };
            let (events, bad) = match Spool::read(&path) {
                Ok(read) => read,
                Err(e) => {
                    tracing::error!("unreadable audit spool file {}: {e:#}", path.display());
                    (Vec::new(), 0)
                }
            };
            if bad > 0 {
                self.metrics.audit_dropped.inc_by(bad as u64);
                tracing::error!(
                    lines = bad,
                    "audit spool file {} has lines that are not events",
                    path.display()
                );
            }
            let mut shipped = 0;
            for chunk in events.chunks(MAX_BATCH) {
                match self.cp.ship_audit(chunk).await {
                    Ok(()) => shipped += chunk.len(),
                    Err(e @ ShipError::Rejected(_)) => self.rejected(chunk.len(), &e),
                    Err(e) => {
                        // Chunks already sent go again with the file (and are
                        // counted then): the control plane ignores the repeats.
                        self.failed(&e);
                        return;
                    }
                }
            }
            self.succeeded();
            self.metrics.audit_shipped.inc_by(shipped as u64);
            self.spool.remove(&path);
            self.metrics.audit_spool_bytes.set(self.spool.bytes as i64);
        }
    }
}

/// Audit events waiting on local disk: one file per batch, JSON lines, named so
/// they sort oldest first. Files are written whole (temp file, fsync, rename), so a
/// crash leaves complete files or none.
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    bytes: u64,
    files: usize,
    seq: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({needed} more bytes would pass its limit of {limit})")]
    Full { needed: u64, limit: u64 },
    #[error("writing the spool failed: {0}")]
    Io(#[from] std::io::Error),
}

impl Spool {
    /// Opens (creating) the spool in `dir`, counting what an earlier run left there.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            limit,
            bytes: 0,
            files: 0,
            seq: 0,
        };
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("jsonl") => {
                    spool.bytes += std::fs::metadata(&path)?.len();
                    spool.files += 1;
                }
                // A write cut short by a crash: never renamed, never counted.
                Some("tmp") => {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        if spool.files > 0 {
            tracing::info!(
                files = spool.files,
                bytes = spool.bytes,
                "audit events from an earlier run wait in the spool"
            );
        }
        Ok(spool)
    }

    pub fn is_empty(&self) -> bool {
        self.files == 0
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn append(&mut self, events: &[CallEvent]) -> Result<(), SpoolError> {
        let mut text = Vec::with_capacity(events.len() * 320);
        for e in events {
            serde_json::to_writer(&mut text, e).expect("events serialise");
            text.push(b'\n');
        }
        let needed = text.len() as u64;
        if self.bytes + needed > self.limit {
            return Err(SpoolError::Full {
                needed,
                limit: self.limit,
            });
        }
        self.seq += 1;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let name = format!("{millis:016}-{:08}-{:06}", std::process::id(), self.seq);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&tmp, self.dir.join(format!("{name}.jsonl")))?;
        self.bytes += needed;
        self.files += 1;
        Ok(())
    }

    fn oldest(&self) -> Option<PathBuf> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        names.sort();
        names.into_iter().next()
    }

    /// The events of a spool file, and how many lines were not events.
    fn read(path: &Path) -> std::io::Result<(Vec<CallEvent>, usize)> {
        let text = std::fs::read(path)?;
        let mut events = Vec::new();
        let mut bad = 0;
        for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice(line) {
                Ok(e) => events.push(e),
                Err(_) => bad += 1,
            }
        }
        Ok((events, bad))
    }

    fn remove(&mut self, path: &Path) {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.bytes = self.bytes.saturating_sub(len);
                self.files = self.files.saturating_sub(1);
            }
            Err(e) => {
                tracing::error!("cannot remove delivered audit spool file {}: {e} (its events will be sent again)", path.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::audit::{CallAction, CallOutcome};

    fn event(n: u32) -> CallEvent {
        CallEvent {
            id: format!("ce_{n:032}"),
            time_ms: 1_700_000_000_000 + i64::from(n),
            workspace: "eng".into(),
            token_id: "tok".into(),
            token_name: "Alice".into(),
            action: CallAction::ToolCall,
            server: "github".into(),
            target: "github__create_issue".into(),
            outcome: CallOutcome::Ok,
            latency_us: 10,
            request_id: n.to_string(),
            transport: "streamable_http".into(),
        }
    }

    fn temp_dir(label: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-spool-{label}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn spooled_batches_come_back_oldest_first_and_survive_a_reopen() {
        let dir = temp_dir("order");
        let mut spool = Spool::open(&dir, 1 << 20).unwrap();
        assert!(spool.is_empty());
        spool.append(&[event(1), event(2)]).unwrap();
        spool.append(&[event(3)]).unwrap();
        std::fs::write(dir.join("half-written.tmp"), b"{").unwrap();

        let mut reopened = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(reopened.bytes(), spool.bytes());
        assert!(!dir.join("half-written.tmp").exists());
        let first = reopened.oldest().unwrap();
        let (events, bad) = Spool::read(&first).unwrap();
        assert_eq!((events, bad), (vec![event(1), event(2)], 0));
        reopened.remove(&first);
        let (events, _) = Spool::read(&reopened.oldest().unwrap()).unwrap();
        assert_eq!(events, vec![event(3)]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_spool_refuses_instead_of_growing() {
        let dir = temp_dir("full");
        let mut spool = Spool::open(&dir, 600).unwrap();
        spool.append(&[event(1)]).unwrap();
        let err = spool.append(&[event(2), event(3)]).unwrap_err();
        assert!(matches!(err, SpoolError::Full { .. }), "{err}");
        assert!(spool.bytes() <= 600);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
