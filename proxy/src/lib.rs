//! Gatehouse data plane: a Pingora proxy that puts every MCP server of a workspace
//! behind one URL, `/ws/<slug>`. The protocol core (JSON-RPC, naming, catalog,
//! envelope, relay rewriting) is the `gatehouse-mcp` crate; this crate is the rooms
//! around it, each importing only those listed after it:
//!
//! - [`gateway`]: the Pingora phases, auth -> route -> dispatch -> forward -> log;
//! - [`client`]: client transports (Streamable HTTP, legacy SSE) and the forwarding path;
//! - [`uplink`], [`admin`]: config in, audit and token use out; `/metrics`, `/healthz`;
//! - [`shared`]: the aggregate of the rooms every request shares;
//! - [`session`]: what the gateway does with each message of a client session;
//! - [`audit`]: records of routed calls and their shipping;
//! - [`upstream`]: connectors to upstream MCP servers, and the one layer around them;
//! - [`config`]: the compiled runtime config and token index;
//! - [`skill`]: skills, HTTP tools the gateway runs itself;
//! - [`limits`]: the rate budgets and stream caps of tokens and workspaces;
//! - [`live`], [`metrics`]: per-replica session facts; the metric families.
//!
//! `proxy/README.md` maps a `tools/call` through these files.

pub mod admin;
pub mod audit;
pub mod client;
pub mod config;
pub mod connections;
pub mod gateway;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod session;
pub mod shared;
pub mod skill;
pub mod uplink;
pub mod upstream;
