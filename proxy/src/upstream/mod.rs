//! Upstream connectors: how the gateway reaches an upstream MCP server. [`upstreams`]
//! is the room's front door — one set of operations over every transport, and the one
//! layer that decides session reuse, measures latency and counts errors; [`http`] and
//! [`sse`] are the transports behind it (a skill, run by the gateway itself, is
//! `crate::skill`), [`pool`] the per-thread HTTP/1.1
//! client routed calls take, [`breaker`] the circuit breaker of each upstream,
//! [`gate`] its cap on calls in flight,
//! [`error`] what can go wrong. Nothing here knows about
//! client transports, catalogs or Pingora's phases.

pub mod breaker;
pub mod error;
pub mod gate;
pub mod http;
pub mod pool;
pub mod sse;
pub mod upstreams;
