//! The proxy's links off the request path: where config comes from — a file watched
//! for changes ([`file`]) or the control plane's config stream, with the token-use
//! report ([`control_plane`]) — and where finished calls go ([`audit_ship`]); the
//! control plane's replicas, which those links share and fail over between
//! ([`replicas`]). Each installs a snapshot through
//! [`crate::shared::Shared::install`] or reads the audit queue; nothing on the
//! request path calls into this room.

pub mod audit_ship;
pub mod control_plane;
pub mod file;
pub mod replicas;
