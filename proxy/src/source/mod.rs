//! Where config comes from: a file watched for changes ([`file`]), or the control
//! plane's config stream, with the token-use report and the client the audit shipper
//! delivers through ([`control_plane`]). Each installs a snapshot through
//! [`crate::shared::Shared::install`].

pub mod control_plane;
pub mod file;
