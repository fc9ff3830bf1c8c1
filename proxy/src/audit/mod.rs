//! The audit trail of routed calls: a record opened per call and closed with its
//! outcome, handed to a sink the request never waits on ([`record`]). The shipper that
//! delivers finished calls to the control plane is `uplink::audit_ship`.

pub mod record;
