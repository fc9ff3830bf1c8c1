//! What every request of one proxy process shares, as one aggregate of the rooms that
//! own it: the config in force, the upstream connectors, the tool catalogs, the
//! metrics and the audit sink. It has no logic of its own beyond installing a new
//! snapshot across the rooms it concerns; transports take the pieces they need.

use std::sync::Arc;

use gatehouse_config::Snapshot;
use gatehouse_mcp::envelope::SessionEnvelope;

use crate::audit::record::AuditSink;
use crate::config::current::{unix_now, CurrentConfig};
use crate::config::runtime::{Runtime, WorkspaceRt};
use crate::metrics::Metrics;
use crate::session::tools::Catalogs;
use crate::upstream::upstreams::Upstreams;

pub struct Shared {
    pub config: CurrentConfig,
    pub upstreams: Upstreams,
    pub catalogs: Catalogs,
    pub metrics: Arc<Metrics>,
    /// Where finished calls are recorded (see [`crate::audit`]).
    pub audit: AuditSink,
}

impl Shared {
    pub fn new(snapshot: &Snapshot) -> anyhow::Result<Shared> {
        Self::with_audit(snapshot, AuditSink::disabled())
    }

    /// A process whose finished calls go to `audit`.
    pub fn with_audit(snapshot: &Snapshot, audit: AuditSink) -> anyhow::Result<Shared> {
        let config = CurrentConfig::new(snapshot)?;
        let metrics = Arc::new(Metrics::new());
        metrics.config_version.set(snapshot.version as i64);
        metrics.config_updated.set(unix_now() as i64);
        Ok(Shared {
            config,
            upstreams: Upstreams::new(metrics.clone()),
            catalogs: Catalogs::new(metrics.tool_name_collisions.clone()),
            metrics,
            audit,
        })
    }

    /// Compiles and installs a new snapshot. Requests in flight keep the runtime they
    /// loaded; cached lists of servers whose config did not change survive.
    pub fn install(&self, snapshot: &Snapshot) -> anyhow::Result<()> {
        let runtime = Arc::new(self.config.compile(snapshot)?);
        self.catalogs.retain_for(&runtime);
        self.upstreams.retain_for(&runtime);
        self.config.install(runtime);
        self.metrics.config_version.set(snapshot.version as i64);
        self.metrics.config_updated.set(unix_now() as i64);
        Ok(())
    }

    /// Starts building the workspace's catalog in the background when it is not
    /// fresh, with a session just initialized: a client lists tools right after
    /// `initialize`, and the upstream fan-out then runs during its
    /// `notifications/initialized` round trip instead of after it.
    pub fn prefetch_catalog(
        self: &Arc<Self>,
        rt: Arc<Runtime>,
        ws: Arc<WorkspaceRt>,
        env: SessionEnvelope,
    ) {
        if self.catalogs.fresh(&rt, &ws).is_some() {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            // Failures are logged and counted by the catalog build itself; the
            // client's own tools/list tries again.
            let _ = shared
                .catalogs
                .catalog(&shared.upstreams, &rt, &ws, &env)
                .await;
        });
    }
}
