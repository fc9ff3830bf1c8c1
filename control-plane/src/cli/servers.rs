//! `gatehouse mcp ...`, `gatehouse secrets ...` and `gatehouse proxies`: what a
//! workspace's gateway fronts (installed, listed, enabled or disabled, its tool
//! policy), the secrets its headers use, and who enforces it.

use serde_json::{json, Map, Value};

use super::api::decode;
use super::args::{parse_package_ref, McpCommand, Naming, SecretsCommand, ToolCommand, Transport};
use super::error::CliError;
use super::packages;
use super::prompt::ask_secret;
use super::render;
use super::resources::{
    McpServer, ProxyList, SecretList, ServerChanged, ServerInstalled, ServerList,
};
use super::session::Context;
use crate::dates::now_unix;

pub async fn mcp(ctx: &Context, command: McpCommand) -> Result<String, CliError> {
    match command {
        McpCommand::Install {
            url,
            command,
            args,
            env,
            name,
            workspace,
            headers,
            transport,
            naming,
            allow,
            deny,
            read_only,
            version,
            limits,
        } => {
            let url = match (url, command) {
                (Some(url), None) => {
                    if let Some(flag) = [(!args.is_empty(), "--arg"), (!env.is_empty(), "--env")]
                        .iter()
                        .find_map(|(given, flag)| given.then_some(*flag))
                    {
                        return Err(CliError::usage(format!(
                            "{flag} applies to a stdio server (--command), not to {url}"
                        )));
                    }
                    url
                }
                (None, Some(command)) => {
                    let refused = [
                        (!headers.is_empty(), "--header"),
                        (transport.is_some(), "--transport"),
                        (version.is_some(), "--version"),
                    ];
                    if let Some((_, flag)) = refused.iter().find(|(given, _)| *given) {
                        return Err(CliError::usage(format!(
                            "{flag} does not apply to a stdio server (--command); its secrets reach it as environment variables"
                        )));
                    }
                    let ws = ctx.workspace(workspace.workspace)?;
                    let mut body = hosted_body(
                        &command,
                        &args,
                        &env,
                        name,
                        naming,
                        Policy {
                            allow,
                            deny,
                            read_only,
                        },
                    )?;
                    if !limits.is_empty() {
                        body["limits"] = limits.json();
                    }
                    let answer = ctx
                        .client()?
                        .post(&["v1", "workspaces", &ws, "servers"], &body)
                        .await?;
                    let installed: ServerInstalled = decode(&answer, "mcp install")?;
                    return ctx.output(&answer, || Ok(render::server_installed(&installed, &ws)));
                }
                _ => {
                    return Err(CliError::usage(
                        "give a URL, a Hub package (@owner/name) or --command, one of them",
                    ))
                }
            };
            if url.starts_with('@') {
                let package = parse_package_ref(&url).map_err(CliError::usage)?;
                let url_only = [
                    (!headers.is_empty(), "--header"),
                    (transport.is_some(), "--transport"),
                    (naming.is_some(), "--naming"),
                    (!allow.is_empty(), "--allow"),
                    (!deny.is_empty(), "--deny"),
                    (read_only, "--read-only"),
                    (
                        !limits.is_empty(),
                        "a timeout or cap (set it after: gatehouse mcp limits)",
                    ),
                ];
                if let Some((_, flag)) = url_only.iter().find(|(given, _)| *given) {
                    return Err(CliError::usage(format!(
                        "{flag} applies to installs by URL; {url} is a Hub package, whose manifest defines how it is reached"
                    )));
                }
                return packages::install(ctx, package, workspace.workspace, version, name).await;
            }
            if version.is_some() {
                return Err(CliError::usage(
                    "--version applies to Hub packages (@owner/name), not to installs by URL",
                ));
            }
            let ws = ctx.workspace(workspace.workspace)?;
            let mut body = install_body(
                &url,
                name,
                &headers,
                transport,
                naming,
                Policy {
                    allow,
                    deny,
                    read_only,
                },
            )?;
            if !limits.is_empty() {
                body["limits"] = limits.json();
            }
            let answer = ctx
                .client()?
                .post(&["v1", "workspaces", &ws, "servers"], &body)
                .await?;
            let installed: ServerInstalled = decode(&answer, "mcp install")?;
            ctx.output(&answer, || Ok(render::server_installed(&installed, &ws)))
        }
        McpCommand::Remove { slug, workspace } => {
            let ws = ctx.workspace(workspace.workspace)?;
            let answer = ctx
                .client()?
                .delete(&["v1", "workspaces", &ws, "servers", &slug])
                .await?;
            let mut removed: McpServer = answer
                .get("server")
                .map(|s| decode(s, "mcp remove"))
                .transpose()?
                .unwrap_or_default();
            if removed.slug.is_empty() {
                removed.slug = slug;
            }
            ctx.output(&answer, || Ok(render::server_removed(&removed, &ws)))
        }
        McpCommand::List { workspace } => {
            let ws = ctx.workspace(workspace.workspace)?;
            let answer = ctx
                .client()?
                .get(&["v1", "workspaces", &ws, "servers"])
                .await?;
            let list: ServerList = decode(&answer, "mcp list")?;
            ctx.output(&answer, || Ok(render::server_table(&ws, &list.servers)))
        }
        McpCommand::Enable { slug, workspace } => {
            change(ctx, workspace.workspace, &slug, json!({"enabled": true})).await
        }
        McpCommand::Disable { slug, workspace } => {
            change(ctx, workspace.workspace, &slug, json!({"enabled": false})).await
        }
        McpCommand::Policy {
            slug,
            workspace,
            allow,
            deny,
            read_only,
            open,
        } => {
            let policy = policy_body(
                Policy {
                    allow,
                    deny,
                    read_only,
                },
                open,
            )?;
            change(ctx, workspace.workspace, &slug, json!({"policy": policy})).await
        }
        McpCommand::Command {
            slug,
            workspace,
            program,
            args,
        } => {
            let body = json!({"command": program, "args": args});
            change(ctx, workspace.workspace, &slug, body).await
        }
        McpCommand::Env {
            slug,
            vars,
            workspace,
        } => {
            let mut env = Map::new();
            for (name, value) in vars {
                if env.insert(name.clone(), json!(value)).is_some() {
                    return Err(CliError::usage(format!(
                        "{name} given twice: pass each variable once"
                    )));
                }
            }
            change(ctx, workspace.workspace, &slug, json!({"env": env})).await
        }
        McpCommand::Limits {
            slug,
            workspace,
            limits,
            defaults,
        } => {
            if limits.is_empty() && !defaults {
                return Err(CliError::usage(
                    "give the new limits (--connect-timeout-ms, --first-byte-timeout-ms, --call-timeout-ms, --max-call-ms, --max-in-flight, --max-queued), or --defaults",
                ));
            }
            change(
                ctx,
                workspace.workspace,
                &slug,
                json!({"limits": limits.json()}),
            )
            .await
        }
        McpCommand::Tool(ToolCommand::Set {
            workspace,
            server,
            tool,
            rename,
            description,
            extend_description,
            fix_arg,
            annotate,
            read_only,
            destructive,
            clear,
        }) => {
            let mut body = json!({});
            if let Some(name) = rename {
                body["name"] = json!(name);
            }
            if let Some(text) = description {
                body["description"] = json!(text);
            }
            if let Some(text) = extend_description {
                body["extend_description"] = json!(text);
            }
            let fixed = pairs(&fix_arg, "--fix-arg")?;
            if !fixed.is_empty() {
                body["fixed_arguments"] = Value::Object(fixed);
            }
            let mut annotations = pairs(&annotate, "--annotate")?;
            if read_only {
                annotations.insert("readOnlyHint".into(), json!(true));
            }
            if destructive {
                annotations.insert("destructiveHint".into(), json!(true));
                annotations.insert("readOnlyHint".into(), json!(false));
            }
            if !annotations.is_empty() {
                body["annotations"] = Value::Object(annotations);
            }
            if body == json!({}) && !clear {
                return Err(CliError::usage(
                    "give --rename, --description, --extend-description, --fix-arg, --annotate, --read-only or --destructive; or --clear",
                ));
            }
            let answer = ctx
                .client()?
                .put(
                    &[
                        "v1",
                        "workspaces",
                        &workspace,
                        "servers",
                        &server,
                        "tools",
                        &tool,
                    ],
                    &body,
                )
                .await?;
            ctx.output(&answer, || Ok(render::tool_override(&workspace, &answer)))
        }
        McpCommand::Naming {
            slug,
            naming,
            workspace,
        } => {
            let body = json!({"naming": naming.api_name()});
            change(ctx, workspace.workspace, &slug, body).await
        }
    }
}

/// `PATCH` one server with `body` and say what it is now.
/// `NAME=VALUE` flags as a JSON object; a VALUE that is not JSON is a string.
fn pairs(flags: &[String], flag: &str) -> Result<Map<String, Value>, CliError> {
    let mut out = Map::new();
    for pair in flags {
        let Some((name, value)) = pair.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            return Err(CliError::usage(format!(
                "{flag} takes NAME=VALUE, not {pair:?}"
            )));
        };
        let value = serde_json::from_str(value).unwrap_or_else(|_| json!(value));
        out.insert(name.to_owned(), value);
    }
    Ok(out)
}

async fn change(
    ctx: &Context,
    workspace: Option<String>,
    slug: &str,
    body: Value,
) -> Result<String, CliError> {
    let ws = ctx.workspace(workspace)?;
    let answer = ctx
        .client()?
        .patch(&["v1", "workspaces", &ws, "servers", slug], &body)
        .await?;
    let changed: ServerChanged = decode(&answer, "mcp change")?;
    ctx.output(&answer, || Ok(render::server_changed(&changed.server, &ws)))
}

/// The whole new policy: `PATCH` replaces it, so a policy verb without any rule would
/// silently open every tool; that takes `--open`.
fn policy_body(policy: Policy, open: bool) -> Result<Value, CliError> {
    if !open && policy.allow.is_empty() && policy.deny.is_empty() && !policy.read_only {
        return Err(CliError::usage(
            "give the new policy: --allow GLOB, --deny GLOB and/or --read-only; or --open to expose every tool",
        ));
    }
    Ok(json!({
        "allow": policy.allow,
        "deny": policy.deny,
        "read_only": policy.read_only,
    }))
}

struct Policy {
    allow: Vec<String>,
    deny: Vec<String>,
    read_only: bool,
}

/// The install request of a stdio server the runner hosts.
fn hosted_body(
    command: &str,
    args: &[String],
    env: &[(String, String)],
    slug: Option<String>,
    naming: Option<Naming>,
    policy: Policy,
) -> Result<Value, CliError> {
    let mut vars = Map::new();
    for (name, value) in env {
        if vars.insert(name.clone(), json!(value)).is_some() {
            return Err(CliError::usage(format!(
                "--env {name} given twice: pass each variable once"
            )));
        }
    }
    let mut body = json!({"command": command, "args": args, "env": vars});
    if let Some(slug) = slug {
        body["slug"] = json!(slug);
    }
    if let Some(naming) = naming {
        body["naming"] = json!(naming.api_name());
    }
    if !policy.allow.is_empty() || !policy.deny.is_empty() || policy.read_only {
        body["policy"] = json!({
            "allow": policy.allow,
            "deny": policy.deny,
            "read_only": policy.read_only,
        });
    }
    Ok(body)
}

/// The install request; only what was given is sent, so the control plane's
/// defaults (slug from the URL, transport, open policy) apply to the rest.
fn install_body(
    url: &str,
    slug: Option<String>,
    headers: &[(String, String)],
    transport: Option<Transport>,
    naming: Option<Naming>,
    policy: Policy,
) -> Result<Value, CliError> {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(CliError::usage(format!(
            "invalid MCP server URL {url:?}: expected http://... or https://..., or a Hub package @owner/name"
        )));
    }
    let mut body = json!({"url": url});
    if let Some(slug) = slug {
        body["slug"] = json!(slug);
    }
    if let Some(transport) = transport {
        body["transport"] = json!(transport.api_name());
    }
    if let Some(naming) = naming {
        body["naming"] = json!(naming.api_name());
    }
    if !headers.is_empty() {
        let mut map = Map::new();
        for (name, value) in headers {
            if map.insert(name.clone(), json!(value)).is_some() {
                return Err(CliError::usage(format!(
                    "header {name:?} given twice: pass each header once"
                )));
            }
        }
        body["headers"] = Value::Object(map);
    }
    if !policy.allow.is_empty() || !policy.deny.is_empty() || policy.read_only {
        body["policy"] = json!({
            "allow": policy.allow,
            "deny": policy.deny,
            "read_only": policy.read_only,
        });
    }
    Ok(body)
}

pub async fn secrets(ctx: &Context, command: SecretsCommand) -> Result<String, CliError> {
    match command {
        SecretsCommand::Set {
            server,
            name,
            value,
            workspace,
        } => {
            let ws = ctx.workspace(workspace.workspace)?;
            check_secret_name(&name)?;
            let value = match value {
                Some(value) => value,
                None => ask_secret(&format!("Value for {name}: "))?,
            };
            if value.is_empty() {
                return Err(CliError::usage(format!(
                    "secret {name} must not be empty (to remove it: gatehouse secrets delete {server} {name})"
                )));
            }
            let answer = ctx
                .client()?
                .put(
                    &[
                        "v1",
                        "workspaces",
                        &ws,
                        "servers",
                        &server,
                        "secrets",
                        &name,
                    ],
                    &json!({"value": value}),
                )
                .await?;
            ctx.output(&answer, || Ok(render::secret_set(&server, &name, &ws)))
        }
        SecretsCommand::List { workspace } => {
            let ws = ctx.workspace(workspace.workspace)?;
            let answer = ctx
                .client()?
                .get(&["v1", "workspaces", &ws, "secrets"])
                .await?;
            let list: SecretList = decode(&answer, "secrets list")?;
            ctx.output(&answer, || Ok(render::secret_table(&ws, &list.secrets)))
        }
        SecretsCommand::Delete {
            server,
            name,
            workspace,
        } => {
            let ws = ctx.workspace(workspace.workspace)?;
            check_secret_name(&name)?;
            let answer = ctx
                .client()?
                .delete(&[
                    "v1",
                    "workspaces",
                    &ws,
                    "servers",
                    &server,
                    "secrets",
                    &name,
                ])
                .await?;
            ctx.output(&answer, || Ok(render::secret_deleted(&server, &name, &ws)))
        }
    }
}

/// Secret names appear in header templates as `{{secrets.NAME}}`; reject what
/// could never be referenced there before it reaches the server.
fn check_secret_name(name: &str) -> Result<(), CliError> {
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "invalid secret name {name:?}: use letters, digits and '_', e.g. GITHUB_TOKEN"
        )))
    }
}

pub async fn proxies(ctx: &Context) -> Result<String, CliError> {
    let answer = ctx.client()?.get(&["v1", "proxies"]).await?;
    let list: ProxyList = decode(&answer, "proxies")?;
    ctx.output(&answer, || {
        Ok(render::proxy_table(&list.proxies, now_unix()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open() -> Policy {
        Policy {
            allow: vec![],
            deny: vec![],
            read_only: false,
        }
    }

    #[test]
    fn install_sends_only_what_was_given() {
        assert_eq!(
            install_body("http://u/mcp", None, &[], None, None, open()).unwrap(),
            json!({"url": "http://u/mcp"})
        );
        let body = install_body(
            "https://u/sse",
            Some("github-mcp".into()),
            &[(
                "Authorization".into(),
                "Bearer {{secrets.GITHUB_TOKEN}}".into(),
            )],
            Some(Transport::Sse),
            Some(Naming::Bare),
            Policy {
                allow: vec!["list_*".into()],
                deny: vec![],
                read_only: true,
            },
        )
        .unwrap();
        assert_eq!(
            body,
            json!({
                "url": "https://u/sse",
                "slug": "github-mcp",
                "transport": "sse",
                "naming": "bare",
                "headers": {"Authorization": "Bearer {{secrets.GITHUB_TOKEN}}"},
                "policy": {"allow": ["list_*"], "deny": [], "read_only": true},
            })
        );
    }

    #[test]
    fn install_rejects_bad_urls_and_duplicate_headers() {
        let bare = install_body("github.com", None, &[], None, None, open()).unwrap_err();
        assert!(bare.to_string().contains("@owner/name"), "{bare}");
        let twice = [
            ("A".to_owned(), "1".to_owned()),
            ("A".to_owned(), "2".to_owned()),
        ];
        assert!(install_body("http://u", None, &twice, None, None, open()).is_err());
    }

    #[test]
    fn a_policy_change_names_its_rules_or_says_open() {
        let none = policy_body(open(), false).unwrap_err();
        assert!(none.to_string().contains("--open"), "{none}");
        assert_eq!(
            policy_body(open(), true).unwrap(),
            json!({"allow": [], "deny": [], "read_only": false})
        );
        let read_only = Policy {
            read_only: true,
            ..open()
        };
        assert_eq!(
            policy_body(read_only, false).unwrap(),
            json!({"allow": [], "deny": [], "read_only": true})
        );
    }

    #[test]
    fn secret_names_must_be_referencable() {
        assert!(check_secret_name("GITHUB_TOKEN").is_ok());
        assert!(check_secret_name("api_key2").is_ok());
        assert!(check_secret_name("api.key-2").is_err());
        assert!(check_secret_name("").is_err());
        assert!(check_secret_name("A B").is_err());
        assert!(check_secret_name("{{x}}").is_err());
    }
}
