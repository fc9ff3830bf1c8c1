//! The audit trail of routed calls: a record opened per call and closed with its
//! outcome, handed to a sink the request never waits on ([`record`]), which appends
//! it to a local journal first so a killed proxy loses none ([`journal`]). The
//! shipper that delivers finished calls to the control plane is `uplink::audit_ship`.

pub mod journal;
pub mod record;
