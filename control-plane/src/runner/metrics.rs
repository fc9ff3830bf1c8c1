//! What the runner counts on the control plane's `/metrics`: processes running, and
//! restarts and crashes by server slug (the one tenant-chosen label the control
//! plane exposes; never a workspace, a command or an argument).

use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

#[derive(Clone)]
pub struct HostedMetrics {
    running: IntGauge,
    restarts: IntCounterVec,
    crashes: IntCounterVec,
}

impl HostedMetrics {
    pub fn register(registry: &Registry) -> HostedMetrics {
        let running = IntGauge::new(
            "gatehouse_control_plane_hosted_processes",
            "Hosted stdio server processes running now",
        )
        .expect("valid metric");
        let restarts = IntCounterVec::new(
            Opts::new(
                "gatehouse_control_plane_hosted_restarts_total",
                "Hosted stdio servers started again after they crashed, by server slug",
            ),
            &["server"],
        )
        .expect("valid metric");
        let crashes = IntCounterVec::new(
            Opts::new(
                "gatehouse_control_plane_hosted_crashes_total",
                "Hosted stdio server processes that exited without being asked to (or failed to start), by server slug",
            ),
            &["server"],
        )
        .expect("valid metric");
        for c in [
            Box::new(running.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(restarts.clone()),
            Box::new(crashes.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        HostedMetrics {
            running,
            restarts,
            crashes,
        }
    }

    pub(super) fn started(&self) {
        self.running.inc();
    }

    pub(super) fn ended(&self, server: &str, stopped: bool) {
        self.running.dec();
        if !stopped {
            self.crashes.with_label_values(&[server]).inc();
        }
    }

    /// A start that failed (no initialize answer, garbage on stdout): a crash too.
    pub(super) fn failed_start(&self, server: &str) {
        self.crashes.with_label_values(&[server]).inc();
    }

    pub(super) fn restarted(&self, server: &str) {
        self.restarts.with_label_values(&[server]).inc();
    }
}
