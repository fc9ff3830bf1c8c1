//! `gatehouse workspace ...`: workspaces, their tokens and their audit log
//! (`analytics` is in [`super::analytics`]).

use serde_json::{json, Value};

use super::api::decode;
use super::args::{RateFlags, TokenCommand, WorkspaceCommand};
use super::error::CliError;
use super::prompt::confirm;
use super::render;
use super::resources::{
    AuditLog, TokenCreated, TokenList, Workspace, WorkspaceCreated, WorkspaceList,
};
use super::session::Context;
use crate::dates::{now_unix, Since};

pub async fn run(ctx: &mut Context, command: WorkspaceCommand) -> Result<String, CliError> {
    match command {
        WorkspaceCommand::Create { name, slug } => create(ctx, name, slug).await,
        WorkspaceCommand::List => list(ctx).await,
        WorkspaceCommand::Use { slug } => use_workspace(ctx, slug).await,
        WorkspaceCommand::Delete { slug, yes } => delete(ctx, slug, yes).await,
        WorkspaceCommand::Token(command) => token(ctx, command).await,
        WorkspaceCommand::Limits {
            workspace,
            workspace_rate,
            token_rps,
            token_burst,
            token_calls_per_minute,
            token_sessions_per_minute,
            streams_per_token,
            clear,
        } => {
            let flags = super::limits::WorkspaceFlags {
                workspace: workspace_rate,
                per_token: RateFlags {
                    rps: token_rps,
                    burst: token_burst,
                    calls_per_minute: token_calls_per_minute,
                    sessions_per_minute: token_sessions_per_minute,
                },
                streams_per_token,
                clear,
            };
            super::limits::workspace(ctx, workspace, flags).await
        }
        WorkspaceCommand::Audit {
            workspace,
            since,
            user,
            action,
            after,
        } => {
            let filter = AuditFilter {
                since,
                user,
                action,
                after,
            };
            audit(ctx, workspace, filter).await
        }
        WorkspaceCommand::Analytics { workspace, since } => {
            super::analytics::run(ctx, workspace, since).await
        }
    }
}

async fn create(ctx: &mut Context, name: String, slug: Option<String>) -> Result<String, CliError> {
    if name.trim().is_empty() {
        return Err(CliError::usage("workspace name must not be empty"));
    }
    let mut body = json!({"name": name});
    if let Some(slug) = slug {
        body["slug"] = json!(slug);
    }
    let answer = ctx.client()?.post(&["v1", "workspaces"], &body).await?;
    let created: WorkspaceCreated = decode(&answer, "workspace create")?;

    let made_active = ctx.config.active_workspace.is_none();
    if made_active {
        ctx.config.active_workspace = Some(created.workspace.slug.clone());
        ctx.save_or_warn();
    }
    ctx.output(&answer, || {
        Ok(render::workspace_created(&created, made_active))
    })
}

async fn list(ctx: &Context) -> Result<String, CliError> {
    let answer = ctx.client()?.get(&["v1", "workspaces"]).await?;
    let list: WorkspaceList = decode(&answer, "workspace list")?;
    let active = ctx.config.active_workspace.as_deref();
    ctx.output(&answer, || {
        Ok(render::workspace_table(&list.workspaces, active))
    })
}

/// Checks the workspace exists (and is visible to this user) before making it the default.
async fn use_workspace(ctx: &mut Context, slug: String) -> Result<String, CliError> {
    let answer = ctx.client()?.get(&["v1", "workspaces", &slug]).await?;
    let workspace: Workspace = decode(&answer, "workspace get")?;
    let slug = if workspace.slug.is_empty() {
        slug
    } else {
        workspace.slug
    };
    ctx.config.active_workspace = Some(slug.clone());
    ctx.save()?;
    ctx.output(&answer, || Ok(render::workspace_active(&slug)))
}

async fn delete(ctx: &mut Context, slug: String, yes: bool) -> Result<String, CliError> {
    let client = ctx.client()?;
    if !yes {
        // Read first so the prompt can say what will be lost (and a typo 404s here).
        let answer = client.get(&["v1", "workspaces", &slug]).await?;
        let workspace: Workspace = decode(&answer, "workspace get")?;
        let workspace = Workspace {
            slug: slug.clone(),
            ..workspace
        };
        confirm(&render::delete_warning(&workspace), || {
            CliError::usage(format!(
                "refusing to delete workspace {slug} without confirmation: stdin is not a terminal; pass --yes"
            ))
        })?;
    }
    let answer = client.delete(&["v1", "workspaces", &slug]).await?;
    if ctx.config.active_workspace.as_deref() == Some(slug.as_str()) {
        ctx.config.active_workspace = None;
        ctx.save_or_warn();
    }
    ctx.output(&answer, || Ok("Workspace deleted.\n".to_owned()))
}

async fn token(ctx: &Context, command: TokenCommand) -> Result<String, CliError> {
    match command {
        TokenCommand::Create {
            workspace,
            name,
            expires_in,
            tools,
            read_only,
        } => {
            let ws = ctx.workspace(workspace)?;
            if name.trim().is_empty() {
                return Err(CliError::usage("token name must not be empty"));
            }
            let mut body = json!({"name": name});
            if let Some(secs) = expires_in {
                body["expires_in"] = json!(secs);
            }
            if !tools.is_empty() || read_only {
                body["scope"] = json!({"tools": tools, "read_only": read_only});
            }
            let answer = ctx
                .client()?
                .post(&["v1", "workspaces", &ws, "tokens"], &body)
                .await?;
            let created: TokenCreated = decode(&answer, "token create")?;
            ctx.output(&answer, || Ok(render::token_created(&created)))
        }
        TokenCommand::List { workspace } => {
            let ws = ctx.workspace(workspace)?;
            let answer = ctx
                .client()?
                .get(&["v1", "workspaces", &ws, "tokens"])
                .await?;
            let list: TokenList = decode(&answer, "token list")?;
            ctx.output(&answer, || Ok(render::token_table(&ws, &list.tokens)))
        }
        TokenCommand::Revoke {
            workspace,
            name,
            id,
        } => {
            let ws = ctx.workspace(workspace)?;
            let body = revoke_body(name, id);
            let answer = ctx
                .client()?
                .post(&["v1", "workspaces", &ws, "tokens", "revoke"], &body)
                .await?;
            let revoked: Value = answer.get("token").cloned().unwrap_or(Value::Null);
            let revoked = decode(&revoked, "token revoke")?;
            ctx.output(&answer, || Ok(render::token_revoked(&revoked)))
        }
        TokenCommand::Limits {
            workspace,
            name,
            id,
            rate,
            clear,
        } => super::limits::token(ctx, workspace, name, id, rate, clear).await,
    }
}

fn revoke_body(name: Option<String>, id: Option<String>) -> Value {
    match (name, id) {
        (_, Some(id)) => json!({"id": id}),
        (Some(name), None) => json!({"name": name}),
        (None, None) => json!({}),
    }
}

/// What `workspace audit` asks for.
#[derive(Default)]
struct AuditFilter {
    since: Option<Since>,
    user: Option<String>,
    action: Option<String>,
    /// Where the previous page ended.
    after: Option<String>,
}

/// The audit query string: only the filters that were given.
fn audit_query(filter: AuditFilter, now: i64) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(since) = filter.since {
        query.push(("since", since.resolve(now).to_string()));
    }
    if let Some(user) = filter.user {
        query.push(("user", user));
    }
    if let Some(action) = filter.action {
        query.push(("action", action));
    }
    if let Some(after) = filter.after {
        query.push(("cursor", after));
    }
    query
}

async fn audit(
    ctx: &Context,
    workspace: Option<String>,
    filter: AuditFilter,
) -> Result<String, CliError> {
    let ws = ctx.workspace(workspace)?;
    let query = audit_query(filter, now_unix());
    let answer = ctx
        .client()?
        .get_query(&["v1", "workspaces", &ws, "audit"], &query)
        .await?;
    let log: AuditLog = decode(&answer, "workspace audit")?;
    ctx.output(&answer, || {
        let mut text = render::audit_table(&ws, &log.events);
        if let Some(next) = &log.next_cursor {
            text +=
                &format!("More events: run it again with --after {next} (and the same filters).\n");
        }
        Ok(text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoke_sends_the_selector_given() {
        assert_eq!(
            revoke_body(Some("Alice Cursor".into()), None),
            json!({"name": "Alice Cursor"})
        );
        assert_eq!(revoke_body(None, Some("7".into())), json!({"id": "7"}));
    }

    #[test]
    fn audit_query_resolves_since_against_now() {
        let filter = AuditFilter {
            since: Some(Since::Ago(3_600)),
            user: Some("alice".into()),
            action: Some("tool_call".into()),
            after: Some("6400000.ce_1".into()),
        };
        assert_eq!(
            audit_query(filter, 10_000),
            vec![
                ("since", "6400".to_owned()),
                ("user", "alice".to_owned()),
                ("action", "tool_call".to_owned()),
                ("cursor", "6400000.ce_1".to_owned()),
            ]
        );
        assert!(audit_query(AuditFilter::default(), 10_000).is_empty());
    }
}
