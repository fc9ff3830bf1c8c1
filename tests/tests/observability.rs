//! What operators monitor: the Prometheus metrics of a control plane and a proxy fed
//! by it, scraped after real MCP traffic, against the metric contract the dashboard
//! and alert rules in deploy/ are written for (deploy/metrics.txt).
//!
//! Needs `promtool` (`scripts/prereqs.sh --tests` installs it); the test fails without it.

#[path = "observability/audit.rs"]
mod audit;
#[path = "observability/exposition.rs"]
mod exposition;
#[path = "observability/fixture.rs"]
mod fixture;
