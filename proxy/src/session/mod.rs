//! What the gateway does with each MCP message of a client session, whatever client
//! transport carried it: `initialize` ([`initialize`]), requests, notifications and
//! responses ([`dispatch`]), the merged tool catalog ([`tools`]) and the paged lists of
//! prompts and resources ([`lists`]). It asks upstreams through the connectors room
//! and answers with a [`dispatch::Reply`] each transport delivers its own way; it never
//! writes to a client.

pub mod dispatch;
pub mod failure;
pub mod initialize;
pub mod lists;
pub mod tools;
