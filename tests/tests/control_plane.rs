//! The control plane as a user sees it: `gatehouse serve`, a `gatehouse-proxy` that
//! takes its config from it, the `gatehouse` CLI, real upstream MCP servers and real
//! MCP clients, each test with its own processes on free ports.
//!
//! One module per concern; the shared set-up is in `fixture`. Every control plane
//! here keeps its store in the embedded SQLite default; `control_plane_postgres`
//! runs the same modules with the store on PostgreSQL.

use gatehouse_tests::control_plane::StoreBackend;

/// The engine every control plane of this binary keeps its store on.
const STORE: StoreBackend = StoreBackend::Sqlite;

#[path = "control_plane/all_in_one.rs"]
mod all_in_one;
#[path = "control_plane/audit_ingest.rs"]
mod audit_ingest;
#[path = "control_plane/authorisation.rs"]
mod authorisation;
#[path = "control_plane/bad_input.rs"]
mod bad_input;
#[path = "control_plane/fixture.rs"]
mod fixture;
#[path = "control_plane/hosted_npm.rs"]
mod hosted_npm;
#[path = "control_plane/hosted_stdio.rs"]
mod hosted_stdio;
#[path = "control_plane/install_probe.rs"]
mod install_probe;
#[path = "control_plane/leak_sweep.rs"]
mod leak_sweep;
#[path = "control_plane/lifecycle.rs"]
mod lifecycle;
#[path = "control_plane/limits.rs"]
mod limits;
#[path = "control_plane/logout.rs"]
mod logout;
#[path = "control_plane/resilience.rs"]
mod resilience;
#[path = "control_plane/scopes.rs"]
mod scopes;
#[path = "control_plane/secrets.rs"]
mod secrets;
#[path = "control_plane/server_changes.rs"]
mod server_changes;
