//! Prometheus metrics of the data plane (served by [`crate::admin`]).
//! Labels are workspace and server slugs from the config (bounded), MCP method names
//! from a fixed list, and outcome words; never tokens, secrets or session ids.

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub upstream_seconds: HistogramVec,
    pub upstream_errors: IntCounterVec,
    pub circuit_opened: IntCounterVec,
    pub retries: IntCounterVec,
    pub circuit_open: IntGaugeVec,
    pub auth_failures: IntCounterVec,
    pub limited: IntCounterVec,
    pub sessions_opened: IntCounter,
    pub sessions_closed: IntCounter,
    pub sessions_active: IntGauge,
    pub open_connections: IntGauge,
    pub connections_refused: IntCounter,
    pub config_version: IntGauge,
    pub config_reloads: IntCounterVec,
    pub config_updated: IntGauge,
    pub config_age: Gauge,
    pub tool_calls: IntCounterVec,
    pub open_streams: IntGaugeVec,
    pub tool_name_collisions: IntGaugeVec,
    pub audit_shipped: IntCounter,
    pub audit_spooled: IntCounter,
    pub audit_dropped: IntCounter,
    pub audit_spool_bytes: IntGauge,
    pub audit_spool_limit: IntGauge,
    pub audit_queue: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let config_age = Gauge::new(
            "gatehouse_config_age_seconds",
            "Seconds since the served config snapshot was installed",
        )
        .expect("valid metric");
        registry
            .register(Box::new(config_age.clone()))
            .expect("unique metric");
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "gatehouse_upstream_request_duration_seconds",
                "Time from sending a request to an upstream MCP server until its response headers arrived",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["workspace", "server"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(upstream_seconds.clone()))
            .expect("unique metric");
        Metrics {
            requests: counter_vec(
                "gatehouse_requests_total",
                "Client requests by workspace, transport, MCP method and outcome",
                &["workspace", "transport", "method", "outcome"],
            ),
            upstream_errors: counter_vec(
                "gatehouse_upstream_errors_total",
                "Failed requests to upstream MCP servers by kind",
                &["workspace", "server", "kind"],
            ),
            circuit_opened: counter_vec(
                "gatehouse_upstream_circuit_opened_total",
                "Times an upstream's circuit breaker opened after consecutive failures",
                &["workspace", "server"],
            ),
            retries: counter_vec(
                "gatehouse_upstream_retries_total",
                "tools/call sent again after the upstream refused it (a connection that failed, HTTP 502/503/504); only tools annotated read-only or idempotent",
                &["workspace", "server"],
            ),
            circuit_open: gauge_vec(
                "gatehouse_upstream_circuit_open",
                "1 while an upstream's circuit breaker is open (requests to it fail at once), else 0",
                &["workspace", "server"],
            ),
            auth_failures: counter_vec(
                "gatehouse_auth_failures_total",
                "Requests refused for authentication, by reason",
                &["reason"],
            ),
            limited: counter_vec(
                "gatehouse_limited_requests_total",
                "Requests refused over a rate budget or stream cap, by workspace and the budget exceeded",
                &["workspace", "reason"],
            ),
            sessions_opened: counter(
                "gatehouse_sessions_opened_total",
                "Client sessions initialized on this proxy",
            ),
            sessions_closed: counter(
                "gatehouse_sessions_closed_total",
                "Client sessions ended with DELETE on this proxy",
            ),
            sessions_active: gauge(
                "gatehouse_sessions_active",
                "Sessions initialized on this proxy and not yet deleted (sessions are stateless: clients that vanish are not subtracted)",
            ),
            open_connections: gauge(
                "gatehouse_open_connections",
                "Client connections this proxy holds open (idle kept-alive ones included)",
            ),
            connections_refused: counter(
                "gatehouse_connections_refused_total",
                "Client connections refused at once because limits.max_connections were open",
            ),
            config_version: gauge(
                "gatehouse_config_version",
                "Version of the config snapshot being served",
            ),
            config_reloads: counter_vec(
                "gatehouse_config_reloads_total",
                "Config reload attempts by outcome",
                &["outcome"],
            ),
            config_updated: gauge(
                "gatehouse_config_last_update_timestamp_seconds",
                "Unix time the served config snapshot was installed",
            ),
            tool_calls: counter_vec(
                "gatehouse_tool_calls_total",
                "tools/call requests by workspace, server, tool and outcome (ok, tool_error, protocol_error, upstream_unavailable); calls the gateway refused count under server and tool \"-\", tools past the first 500 under \"other\"",
                &["workspace", "server", "tool", "outcome"],
            ),
            open_streams: gauge_vec(
                "gatehouse_open_streams",
                "Server-to-client event streams open to clients, by transport",
                &["transport"],
            ),
            tool_name_collisions: gauge_vec(
                "gatehouse_tool_name_collisions",
                "Tools left out of a workspace's tool list because another tool already has their exposed name (a bare server's tool named like a prefixed one)",
                &["workspace"],
            ),
            audit_shipped: counter(
                "gatehouse_audit_events_shipped_total",
                "Audit events the control plane acknowledged",
            ),
            audit_spooled: counter(
                "gatehouse_audit_events_spooled_total",
                "Audit events written to the local spool because the control plane could not take them",
            ),
            audit_dropped: counter(
                "gatehouse_audit_events_dropped_total",
                "Audit events lost: the spool was full or unwritable (must stay 0)",
            ),
            audit_spool_bytes: gauge(
                "gatehouse_audit_spool_bytes",
                "Bytes of audit events waiting in the local spool",
            ),
            audit_spool_limit: gauge(
                "gatehouse_audit_spool_limit_bytes",
                "Size the audit spool may reach before events are dropped",
            ),
            audit_queue: gauge(
                "gatehouse_audit_queue_events",
                "Audit events recorded and not yet taken by the shipper",
            ),
            config_age,
            upstream_seconds,
            registry,
        }
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        out
    }
}
