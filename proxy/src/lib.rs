//! Gatehouse data plane: a Pingora proxy that puts every MCP server of a workspace
//! behind one URL, `/ws/<slug>`.
//!
//! It owns the request path — token auth ([`auth`]), the stateless session envelope
//! ([`envelope`]), JSON-RPC reading and splicing ([`jsonrpc`]), tool catalogs
//! ([`catalog`]), the Pingora phases ([`gateway`], [`handlers`]) and requests to
//! upstreams on its own behalf ([`upstream`]) — plus the compiled config it serves
//! ([`runtime`], [`state`], [`reload`]) and its metrics ([`metrics`]).

pub mod audit;
pub mod audit_ship;
pub mod auth;
pub mod catalog;
pub mod cursor;
pub mod dispatch;
pub mod envelope;
pub mod exchange;
pub mod gateway;
pub mod handlers;
pub mod jsonrpc;
pub mod legacy;
pub mod live;
pub mod merged;
pub mod metrics;
pub mod protocol;
pub mod push;
pub mod relay;
pub mod reload;
pub mod respond;
pub mod runtime;
pub mod skill;
pub mod sse;
pub mod state;
pub mod stream;
pub mod upstream;
pub mod upstream_sse;
pub mod uris;
