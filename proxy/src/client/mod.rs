//! Client transports: each turns HTTP into messages for the session room and replies
//! into HTTP. [`post`] reads a POST and picks its era's transport: [`streamable`] is
//! Streamable HTTP of the session era (POST, GET, DELETE), [`stateless`] that of the
//! stateless 2026-07-28 era; [`legacy`] is the legacy HTTP+SSE transport, [`stream`] the event streams both serve, [`forward`] the
//! one path a routed call takes to its upstream and back; [`request`] and [`respond`]
//! are what every transport reads and writes. A new transport goes beside these
//! without touching them.

pub mod forward;
pub mod legacy;
pub mod post;
pub mod request;
pub mod respond;
pub mod stateless;
pub mod stream;
pub mod streamable;
