//! Gatehouse's MCP protocol core: what the gateway knows about MCP messages, with no
//! I/O, no Pingora and no runtime. Pure functions and types, unit-tested here and
//! micro-benchmarked in `benches/`; the proxy's transports and connectors build on it,
//! and nothing in it knows about them.
//!
//! - [`jsonrpc`]: borrow `method`/`id`/`params` from a body, splice a tool name, render
//!   responses around pre-rendered results;
//! - [`versions`]: the protocol versions spoken, and negotiation;
//! - [`modern`]: the stateless 2026-07-28 era: its `_meta`, mirror headers, errors
//!   and result fields;
//! - [`catalog`]: a workspace's merged tool list and the routes `tools/call` takes;
//! - [`capabilities`]: what the gateway announces, merged from its upstreams';
//! - [`cursor`], [`uris`]: the gateway's list cursors and `gatehouse://` resource URIs;
//! - [`envelope`]: the sealed client session id;
//! - [`sse`], [`relay`]: event streams split, and upstream messages rewritten for the
//!   client;
//! - [`reply`]: how a call ended, read from its reply as it passes;
//! - [`rate`]: rate budgets (GCRA), one atomic each;
//! - [`outcome`]: the closed sets of words requests are counted by.

pub mod capabilities;
pub mod catalog;
pub mod cursor;
pub mod envelope;
pub mod jsonrpc;
pub mod modern;
pub mod outcome;
pub mod rate;
pub mod relay;
pub mod reply;
pub mod sse;
pub mod uris;
pub mod versions;
