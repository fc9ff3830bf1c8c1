//! Upstreams that speak the legacy HTTP+SSE transport (MCP 2024-11-05).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use tokio::sync::mpsc;

use crate::envelope::SessionEnvelope;
use crate::runtime::{Runtime, ServerRt};
use crate::state::GatewayState;
use crate::upstream::{Initialized, UpstreamError};

/// One open legacy SSE session with an upstream.
pub struct LegacyUpstream {}

impl LegacyUpstream {
    pub async fn call(
        &self,
        _method: &str,
        _params: Value,
        _timeout: Duration,
    ) -> Result<Value, UpstreamError> {
        Err(UpstreamError::Unusable(
            "legacy SSE is not available".into(),
        ))
    }

    pub async fn send(&self, _body: Bytes, _timeout: Duration) -> Result<(), UpstreamError> {
        Err(UpstreamError::Unusable(
            "legacy SSE is not available".into(),
        ))
    }
}

impl GatewayState {
    /// Closes every legacy upstream session of a client session (on DELETE).
    pub fn close_legacy_upstreams(&self, _sid: [u8; 16]) {}

    /// Opens a legacy SSE session with `server` for a new client session.
    pub async fn open_legacy_upstream(
        &self,
        _env: &SessionEnvelope,
        _server: &ServerRt,
        _timeout: Duration,
    ) -> Result<Initialized, UpstreamError> {
        Err(UpstreamError::Unusable(
            "legacy SSE is not available".into(),
        ))
    }

    /// The legacy SSE session of `server` in this client session on this replica.
    pub async fn legacy_upstream(
        &self,
        _env: &SessionEnvelope,
        _server: &ServerRt,
    ) -> Result<Arc<LegacyUpstream>, UpstreamError> {
        Err(UpstreamError::Unusable(
            "legacy SSE is not available".into(),
        ))
    }
}

/// Relays what a legacy upstream says on its own (not in answer to a request) into a
/// client stream.
pub async fn relay_unsolicited(
    _state: Arc<GatewayState>,
    _rt: Arc<Runtime>,
    _env: Arc<SessionEnvelope>,
    _server: Arc<ServerRt>,
    _merged: mpsc::Sender<String>,
) {
}
