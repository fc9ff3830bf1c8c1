//! Client transports: each turns HTTP into messages for the session room and replies
//! into HTTP. [`streamable`] is Streamable HTTP (POST, GET, DELETE), [`legacy`] the
//! legacy HTTP+SSE transport, [`stream`] the event streams both serve, [`forward`] the
//! one path a routed call takes to its upstream and back; [`request`] and [`respond`]
//! are what every transport reads and writes. A new transport goes beside these
//! without touching them.

pub mod forward;
pub mod legacy;
pub mod request;
pub mod respond;
pub mod stream;
pub mod streamable;
