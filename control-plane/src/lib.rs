//! Gatehouse control plane: owns all state (users, workspaces, workspace tokens, MCP
//! servers, secrets, audit, the routed calls proxies report) in its store (embedded
//! SQLite by default, or PostgreSQL, which several control planes share), serves the
//! admin API under `/v1`, the admin dashboard under `/dashboard` ([`dashboard`]) and
//! its own Prometheus metrics at `/metrics`, and pushes versioned config snapshots to
//! every connected proxy. Its [`runner`] hosts stdio MCP servers and serves each as
//! an internal Streamable HTTP endpoint proxies reach like any other upstream. The
//! `gatehouse` CLI ([`cli`]) is its client.

pub mod api;
pub mod calls;
pub mod catalog;
pub mod cli;
pub mod cli_config;
pub mod crypto;
pub mod dashboard;
pub mod dates;
pub mod demo;
pub mod hub;
pub mod manifest;
pub mod metrics;
pub mod outbound;
pub mod probe;
pub mod proxies;
pub mod runner;
pub mod server;
pub mod state;
pub mod store;
pub mod wording;
