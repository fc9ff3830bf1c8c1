//! The deployment to observe is the harness's [`Deployment`] (a control plane, one
//! proxy fed by it, the admin's CLI logged in); this adds the traffic that makes both
//! processes report on what they did.

use gatehouse_tests::{within, CallOutcome, McpClient, STEP_TIMEOUT};
use rmcp::model::CallToolRequestParams;
use serde_json::Map;

pub use gatehouse_tests::deployment::{token_in, Deployment};

/// Calls `tool` with `{}` as arguments through `client`, however it ends.
pub async fn call(client: &McpClient, tool: &str) -> anyhow::Result<CallOutcome> {
    let outcome = within(
        &format!("tools/call {tool}"),
        STEP_TIMEOUT,
        client
            .peer()
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(Map::new())),
    )
    .await?;
    Ok(CallOutcome::from(outcome))
}
