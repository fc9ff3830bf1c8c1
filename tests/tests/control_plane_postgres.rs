//! The control-plane tests of `control_plane` (the same modules, one per concern),
//! with every control plane's store on PostgreSQL: a throwaway cluster this process
//! starts (`gatehouse_tests::postgres`), one database per control plane. Then what
//! only PostgreSQL allows: several control planes on one database (`replicas`), a
//! proxy failing over between them (`failover`), the whole scaled-out deployment
//! behind nginx while a control plane and a proxy die (`chaos`), `gatehouse migrate`
//! from SQLite, and the errors of a database it cannot use (`database_url`).

use gatehouse_tests::control_plane::StoreBackend;

/// The engine every control plane of this binary keeps its store on.
const STORE: StoreBackend = StoreBackend::Postgres;

#[path = "control_plane/all_in_one.rs"]
mod all_in_one;
#[path = "control_plane/audit_ingest.rs"]
mod audit_ingest;
#[path = "control_plane/authorisation.rs"]
mod authorisation;
#[path = "control_plane/bad_input.rs"]
mod bad_input;
#[path = "control_plane/chaos.rs"]
mod chaos;
#[path = "control_plane/database_url.rs"]
mod database_url;
#[path = "control_plane/failover.rs"]
mod failover;
#[path = "control_plane/fixture.rs"]
mod fixture;
#[path = "control_plane/hosted_npm.rs"]
mod hosted_npm;
#[path = "control_plane/hosted_stdio.rs"]
mod hosted_stdio;
#[path = "control_plane/install_probe.rs"]
mod install_probe;
#[path = "control_plane/lifecycle.rs"]
mod lifecycle;
#[path = "control_plane/limits.rs"]
mod limits;
#[path = "control_plane/logout.rs"]
mod logout;
#[path = "control_plane/migrate.rs"]
mod migrate;
#[path = "control_plane/replicas.rs"]
mod replicas;
#[path = "control_plane/resilience.rs"]
mod resilience;
#[path = "control_plane/scopes.rs"]
mod scopes;
#[path = "control_plane/secrets.rs"]
mod secrets;
#[path = "control_plane/server_changes.rs"]
mod server_changes;
