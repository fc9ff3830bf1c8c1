//! The data plane as a user sees it: real upstream MCP servers, a real
//! `gatehouse-proxy` process, and real clients (rmcp for ordinary flows, raw HTTP for
//! protocol details). Each test starts its own proxy on free ports.
//!
//! One test binary, one module per concern; the shared gateway set-up is in `fixture`.

#[path = "data_plane/access.rs"]
mod access;
#[path = "data_plane/failures.rs"]
mod failures;
#[path = "data_plane/faults.rs"]
mod faults;
#[path = "data_plane/fixture.rs"]
mod fixture;
#[path = "data_plane/framing.rs"]
mod framing;
#[path = "data_plane/legacy.rs"]
mod legacy;
#[path = "data_plane/naming.rs"]
mod naming;
#[path = "data_plane/operations.rs"]
mod operations;
#[path = "data_plane/requests.rs"]
mod requests;
#[path = "data_plane/sessions.rs"]
mod sessions;
#[path = "data_plane/stateless.rs"]
mod stateless;
#[path = "data_plane/streams.rs"]
mod streams;
#[path = "data_plane/surface.rs"]
mod surface;
#[path = "data_plane/tools.rs"]
mod tools;
