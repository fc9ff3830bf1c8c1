//! The compiled runtime config: what a snapshot becomes for the request path
//! ([`runtime`]: workspaces, servers, keys, limits), the token index ([`auth`]), and
//! the one current generation every request loads ([`current`]). Others read it through
//! [`current::CurrentConfig::load`] and the types of [`runtime`]; where a snapshot
//! comes from is `source`'s business, not this room's.

pub mod auth;
pub mod current;
pub mod runtime;
