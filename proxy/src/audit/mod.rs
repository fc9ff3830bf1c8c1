//! The audit trail of routed calls: a record opened per call and closed with its
//! outcome ([`record`]), and the shipper that delivers finished calls to the control
//! plane, spooling them to disk while it is away ([`ship`]).

pub mod record;
pub mod ship;
