//! Routed MCP calls as proxies report them (`tools/call`, `prompts/get`,
//! `resources/read`): checking a reported batch before any of it is stored
//! ([`batch`]), listing calls next to the admin events of a workspace's audit log
//! ([`listing`]), and the per-server, per-tool and per-token figures computed from
//! them ([`analytics`]), and how long they are kept ([`retention`]). The SQL lives
//! in `store::calls`; the HTTP handlers in `api::calls`.

pub mod analytics;
pub mod batch;
pub mod listing;
pub mod retention;
