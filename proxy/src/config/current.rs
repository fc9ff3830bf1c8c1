//! The config generation in force: the compiled [`Runtime`], swapped atomically when a
//! new snapshot is installed, loaded lock-free once per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use gatehouse_config::Snapshot;

use crate::config::auth::TokenUsage;
use crate::config::runtime::Runtime;
use crate::limits::Schedules;

pub struct CurrentConfig {
    runtime: ArcSwap<Runtime>,
    generation: AtomicU64,
    /// When each token was last used here, reported to the control plane; kept
    /// across generations.
    pub usage: TokenUsage,
    /// Where every rate budget and stream cap stands; kept across generations.
    pub schedules: Schedules,
}

impl CurrentConfig {
    /// Compiles the first snapshot (generation 1).
    pub fn new(snapshot: &Snapshot) -> anyhow::Result<CurrentConfig> {
        let usage = TokenUsage::default();
        let schedules = Schedules::default();
        let runtime = Runtime::compile_with(snapshot, 1, &usage, &schedules)?;
        Ok(CurrentConfig {
            runtime: ArcSwap::from_pointee(runtime),
            generation: AtomicU64::new(1),
            usage,
            schedules,
        })
    }

    /// The runtime for one request: load once, use throughout.
    pub fn load(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Compiles a snapshot as the next generation, without installing it yet.
    pub fn compile(&self, snapshot: &Snapshot) -> anyhow::Result<Runtime> {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let runtime = Runtime::compile_with(snapshot, generation, &self.usage, &self.schedules)?;
        self.schedules.retain(snapshot);
        let configured: std::collections::HashSet<&str> = snapshot
            .workspaces
            .iter()
            .flat_map(|w| w.tokens.iter().map(|t| t.id.as_str()))
            .collect();
        self.usage.retain(|id| configured.contains(id));
        Ok(runtime)
    }

    /// Puts a compiled runtime in force; requests in flight keep the one they loaded.
    pub fn install(&self, runtime: Arc<Runtime>) {
        self.runtime.store(runtime);
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
