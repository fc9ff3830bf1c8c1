//! `gatehouse workspace limits` and `gatehouse workspace token limits`: show a
//! workspace's or a token's rate limits, or change the ones given as flags (the rest
//! stay as they are).

use serde_json::{json, Map, Value};

use super::args::RateFlags;
use super::error::CliError;
use super::session::Context;

/// The flags of `workspace limits`.
pub struct WorkspaceFlags {
    pub workspace: RateFlags,
    pub per_token: RateFlags,
    pub streams_per_token: Option<u32>,
    pub clear: bool,
}

impl WorkspaceFlags {
    fn any(&self) -> bool {
        self.workspace != RateFlags::default()
            || self.per_token != RateFlags::default()
            || self.streams_per_token.is_some()
            || self.clear
    }
}

pub async fn workspace(
    ctx: &Context,
    workspace: Option<String>,
    flags: WorkspaceFlags,
) -> Result<String, CliError> {
    let ws = ctx.workspace(workspace)?;
    let client = ctx.client()?;
    let path = ["v1", "workspaces", ws.as_str(), "limits"];
    let current = client.get(&path).await?;
    if !flags.any() {
        return ctx.output(&current, || Ok(render_workspace(&ws, &current)));
    }
    let mut limits = if flags.clear {
        json!({})
    } else {
        current.get("limits").cloned().unwrap_or_else(|| json!({}))
    };
    merge_rate(&mut limits, "workspace", &flags.workspace);
    merge_rate(&mut limits, "per_token", &flags.per_token);
    if let Some(n) = flags.streams_per_token {
        limits["streams_per_token"] = json!(n);
    }
    let answer = client.put(&path, &limits).await?;
    ctx.output(&answer, || Ok(render_workspace(&ws, &answer)))
}

pub async fn token(
    ctx: &Context,
    workspace: Option<String>,
    name: Option<String>,
    id: Option<String>,
    rate: RateFlags,
    clear: bool,
) -> Result<String, CliError> {
    let ws = ctx.workspace(workspace)?;
    let client = ctx.client()?;
    let list = client.get(&["v1", "workspaces", &ws, "tokens"]).await?;
    let tokens = list["tokens"].as_array().cloned().unwrap_or_default();
    let matches: Vec<&Value> = tokens
        .iter()
        .filter(|t| match (&id, &name) {
            (Some(id), _) => t["id"] == json!(id),
            (None, Some(name)) => t["name"] == json!(name) && t["status"] == "active",
            (None, None) => false,
        })
        .collect();
    let token = match matches.as_slice() {
        [one] => *one,
        [] => {
            let what = id.or(name).unwrap_or_default();
            return Err(CliError::usage(format!(
                "no active token {what:?} in workspace {ws}"
            )));
        }
        _ => {
            return Err(CliError::usage(format!(
                "{} active tokens are named {:?}: give --id",
                matches.len(),
                name.unwrap_or_default()
            )))
        }
    };
    let token_id = token["id"].as_str().unwrap_or_default().to_string();
    let token_name = token["name"].as_str().unwrap_or_default().to_string();
    if rate == RateFlags::default() && !clear {
        let shown =
            json!({"token": {"id": token_id, "name": token_name, "limits": token["limits"]}});
        return ctx.output(&shown, || Ok(render_token(&shown)));
    }
    let mut limits = if clear {
        json!({})
    } else {
        match &token["limits"] {
            Value::Object(o) => Value::Object(o.clone()),
            _ => json!({}),
        }
    };
    set_rate(&mut limits, &rate);
    let answer = client
        .put(
            &["v1", "workspaces", &ws, "tokens", &token_id, "limits"],
            &limits,
        )
        .await?;
    ctx.output(&answer, || Ok(render_token(&answer)))
}

/// Sets the given flags of a rate in `limits[key]`.
fn merge_rate(limits: &mut Value, key: &str, flags: &RateFlags) {
    if *flags == RateFlags::default() {
        return;
    }
    let entry = limits
        .as_object_mut()
        .expect("limits are an object")
        .entry(key)
        .or_insert_with(|| Value::Object(Map::new()));
    set_rate(entry, flags);
}

fn set_rate(rate: &mut Value, flags: &RateFlags) {
    if let Some(rps) = flags.rps {
        rate["requests_per_second"] = json!(rps);
    }
    if let Some(burst) = flags.burst {
        rate["burst"] = json!(burst);
    }
    if let Some(n) = flags.calls_per_minute {
        rate["tool_calls_per_minute"] = json!(n);
    }
    if let Some(n) = flags.sessions_per_minute {
        rate["sessions_per_minute"] = json!(n);
    }
}

/// One rate as a line: `5 req/s (burst 10), 60 tool calls/min`, or `no limit`.
fn rate_line(rate: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(rps) = rate["requests_per_second"].as_f64() {
        let burst = rate["burst"]
            .as_u64()
            .map_or_else(|| "one second's worth".to_string(), |b| b.to_string());
        parts.push(format!("{rps} req/s (burst {burst})"));
    }
    if let Some(n) = rate["tool_calls_per_minute"].as_u64() {
        parts.push(format!("{n} tool calls/min"));
    }
    if let Some(n) = rate["sessions_per_minute"].as_u64() {
        parts.push(format!("{n} new sessions/min"));
    }
    if parts.is_empty() {
        "no limit".into()
    } else {
        parts.join(", ")
    }
}

fn render_workspace(ws: &str, answer: &Value) -> String {
    let limits = &answer["limits"];
    let streams = limits["streams_per_token"]
        .as_u64()
        .map_or_else(|| "no cap".to_string(), |n| n.to_string());
    let share = answer["proxy_share"].as_u64().unwrap_or(1);
    format!(
        "Limits of {ws}:\n  workspace:          {}\n  each token:         {}\n  streams per token:  {streams}\nEach proxy enforces 1/{share} of every budget (gatehouse serve --proxy-share).\n",
        rate_line(&limits["workspace"]),
        rate_line(&limits["per_token"]),
    )
}

fn render_token(answer: &Value) -> String {
    let token = &answer["token"];
    let name = token["name"].as_str().unwrap_or_default();
    match &token["limits"] {
        Value::Object(_) => format!(
            "Token {name:?}: {} (the workspace's per-token limits fill in the rest).\n",
            rate_line(&token["limits"])
        ),
        _ => format!("Token {name:?} has the workspace's per-token limits.\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_merge_into_what_is_set() {
        let mut limits =
            json!({"workspace": {"requests_per_second": 10.0}, "streams_per_token": 3});
        merge_rate(
            &mut limits,
            "workspace",
            &RateFlags {
                calls_per_minute: Some(60),
                ..RateFlags::default()
            },
        );
        merge_rate(
            &mut limits,
            "per_token",
            &RateFlags {
                rps: Some(2.0),
                burst: Some(4),
                ..RateFlags::default()
            },
        );
        assert_eq!(
            limits,
            json!({
                "workspace": {"requests_per_second": 10.0, "tool_calls_per_minute": 60},
                "per_token": {"requests_per_second": 2.0, "burst": 4},
                "streams_per_token": 3
            })
        );
        assert_eq!(rate_line(&limits["per_token"]), "2 req/s (burst 4)");
        assert_eq!(rate_line(&json!(null)), "no limit");
    }
}
