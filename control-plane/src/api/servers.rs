//! MCP servers installed in a workspace, and their secrets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use gatehouse_config::naming::{is_valid_slug, is_valid_tool_name, slugify};
use gatehouse_config::policy::CompiledPolicy;
use gatehouse_config::template::HeaderTemplate;
use gatehouse_config::{ServerLimits, ToolOverride, ToolPolicy};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::request::{AuthUser, Body};
use super::workspaces::visible;
use crate::crypto::random_id;
use crate::probe;
use crate::runner::spec::check_command;
use crate::runner::STDIO;
use crate::state::{secret_binding, App};
use crate::store::{now, ServerRow, WorkspaceRow};

fn server_json(s: &ServerRow, secrets: &[String]) -> Value {
    let mut server = json!({
        "slug": s.slug, "url": s.url, "transport": s.transport,
        "headers": serde_json::from_str::<Value>(&s.headers).unwrap_or(Value::Null),
        "policy": serde_json::from_str::<Value>(&s.policy).unwrap_or(Value::Null),
        "enabled": s.enabled != 0, "secrets": secrets, "created_at": s.created_at,
        "package": s.package, "naming": s.naming,
    });
    if let Some(limits) = s
        .limits
        .as_deref()
        .and_then(|j| serde_json::from_str::<Value>(j).ok())
    {
        server["limits"] = limits;
    }
    if let Some(command) = &s.command {
        let parsed = |json: &Option<String>| {
            json.as_deref()
                .and_then(|j| serde_json::from_str::<Value>(j).ok())
        };
        server["command"] = json!(command);
        server["args"] = parsed(&s.args).unwrap_or_else(|| json!([]));
        server["env"] = parsed(&s.env).unwrap_or_else(|| json!({}));
    }
    server
}

/// Requested limits, checked, as stored: `None` for the defaults.
fn limits_json(limits: Option<&ServerLimits>) -> ApiResult<Option<String>> {
    let Some(limits) = limits.filter(|l| !l.is_default()) else {
        return Ok(None);
    };
    let problems: Vec<String> = limits
        .problems()
        .into_iter()
        .map(|(field, problem)| format!("limits.{field}: {problem}"))
        .collect();
    if !problems.is_empty() {
        return Err(ApiError::BadRequest(problems.join("; ")));
    }
    Ok(Some(
        serde_json::to_string(limits).map_err(anyhow::Error::from)?,
    ))
}

/// A requested naming, checked: `prefixed` or `bare`.
fn naming_of(naming: &str) -> ApiResult<&'static str> {
    match naming {
        "prefixed" => Ok("prefixed"),
        "bare" => Ok("bare"),
        other => Err(ApiError::BadRequest(format!(
            "naming {other:?} must be prefixed (<server>__<tool>) or bare (the server's own names)"
        ))),
    }
}

/// Refuses a second bare server in `ws` (`slug` is the one to become bare).
async fn only_bare(app: &App, ws: &WorkspaceRow, slug: &str) -> ApiResult<()> {
    match app.store.bare_server(&ws.id).await? {
        Some(bare) if bare != slug => Err(one_bare_conflict(ws, &bare)),
        _ => Ok(()),
    }
}

fn one_bare_conflict(ws: &WorkspaceRow, bare: &str) -> ApiError {
    ApiError::Conflict(format!(
        "MCP server {bare:?} already exposes its names bare in {:?}; a workspace has at most one bare server (set {bare:?} to prefixed first)",
        ws.slug
    ))
}

/// A write refused by the `servers_one_bare` index: another control plane made a
/// server bare between the check and the write.
fn bare_race(e: sqlx::Error, ws: &WorkspaceRow) -> ApiError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => ApiError::Conflict(format!(
            "another MCP server of {:?} became bare meanwhile; a workspace has at most one bare server",
            ws.slug
        )),
        _ => e.into(),
    }
}

async fn server_of(app: &App, ws: &WorkspaceRow, slug: &str) -> ApiResult<ServerRow> {
    app.store.server(&ws.id, slug).await?.ok_or_else(|| {
        ApiError::NotFound(format!("no MCP server {slug:?} in workspace {:?}", ws.slug))
    })
}

/// Secret names per server slug.
async fn secret_names(app: &App, ws: &WorkspaceRow) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (server, row) in app.store.secrets_of_workspace(&ws.id).await? {
        names.entry(server).or_default().push(row.name);
    }
    Ok(names)
}

pub async fn list(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let names = secret_names(&app, &ws).await?;
    let servers: Vec<Value> = app
        .store
        .servers(&ws.id)
        .await?
        .iter()
        .map(|s| server_json(s, names.get(&s.slug).map_or(&[][..], Vec::as_slice)))
        .collect();
    Ok(Json(json!({"servers": servers})))
}

#[derive(Deserialize)]
pub struct Install {
    /// An MCP server reached over HTTP; or `command` (a hosted stdio server).
    #[serde(default)]
    pub url: Option<String>,
    /// A stdio server Gatehouse runs itself: the program...
    #[serde(default)]
    pub command: Option<String>,
    /// ... its arguments ...
    #[serde(default)]
    pub args: Vec<String>,
    /// ... and plain environment values (secrets are set apart, after install).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub slug: Option<String>,
    #[serde(default)]
    pub transport: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub policy: ToolPolicy,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `prefixed` (default) or `bare`.
    #[serde(default)]
    pub naming: Option<String>,
    /// Its timeouts and cap on calls in flight; the defaults where absent.
    #[serde(default)]
    pub limits: Option<ServerLimits>,
}

fn yes() -> bool {
    true
}

pub async fn install(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
    Body(req): Body<Install>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let ws = visible(&app, &user, &ws).await?;
    let req_url = match (&req.url, &req.command) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(
                "give url (a server reached over HTTP) or command (a stdio server Gatehouse runs), not both".into(),
            ))
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "give url (a server reached over HTTP) or command (a stdio server Gatehouse runs)".into(),
            ))
        }
        (None, Some(command)) => return install_hosted(app, user, ws, command.clone(), req).await,
        (Some(url), None) => url.clone(),
    };
    if !req.args.is_empty() || !req.env.is_empty() {
        return Err(ApiError::BadRequest(
            "args and env apply to stdio servers (command), not to servers reached by url".into(),
        ));
    }
    let url = url::Url::parse(&req_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("{req_url:?} is not an http:// or https:// URL"))
        })?;
    let slug = match &req.slug {
        Some(s) => s.clone(),
        None => slugify(url.host_str().unwrap_or("server")).into_owned(),
    };
    if !is_valid_slug(&slug) {
        return Err(ApiError::BadRequest(format!(
            "server slug {slug:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$ (no `_`: tools are named <server>__<tool>); pass --name"
        )));
    }
    if let Some(transport) = &req.transport {
        if !matches!(transport.as_str(), "streamable_http" | "sse") {
            return Err(ApiError::BadRequest(format!(
                "transport {transport:?} must be streamable_http or sse"
            )));
        }
    }
    let mut needed = BTreeSet::new();
    for (name, template) in &req.headers {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ApiError::BadRequest(format!("{name:?} is not a valid header name")))?;
        let parsed = HeaderTemplate::parse(template)
            .map_err(|e| ApiError::BadRequest(format!("header {name}: {e}")))?;
        needed.extend(parsed.secret_names().map(str::to_string));
    }
    CompiledPolicy::compile(&req.policy)
        .map_err(|e| ApiError::BadRequest(format!("policy: {e}")))?;
    let naming = naming_of(req.naming.as_deref().unwrap_or("prefixed"))?;
    if naming == "bare" {
        only_bare(&app, &ws, &slug).await?;
    }
    if app.store.server(&ws.id, &slug).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "MCP server {slug:?} is already installed in {:?} (pass --name to install it again under another slug)",
            ws.slug
        )));
    }
    // No transport given: ask the server (see `probe`). One that cannot be reached
    // is still installed, as Streamable HTTP, and the answer says why.
    let (transport, probed) = match req.transport {
        Some(transport) => (transport, Value::Null),
        None => {
            let headers: Vec<(String, String)> = req.headers.clone().into_iter().collect();
            let found = match app.ask_servers.client(&req_url) {
                Ok(client) => probe::probe(&client, &req_url, &headers)
                    .await
                    .map_err(|e| e.to_string()),
                Err(refused) => Err(refused.to_string()),
            };
            match found {
                Ok(found) => (found.transport.to_string(), json!({"found": found})),
                Err(e) => ("streamable_http".to_string(), json!({"error": e})),
            }
        }
    };
    let row = ServerRow {
        id: random_id("srv_"),
        workspace_id: ws.id.clone(),
        slug,
        url: req_url.clone(),
        transport,
        headers: serde_json::to_string(&req.headers).map_err(anyhow::Error::from)?,
        policy: serde_json::to_string(&req.policy).map_err(anyhow::Error::from)?,
        enabled: i64::from(req.enabled),
        created_at: now(),
        package: None,
        installed_by: Some(user.id.clone()),
        tools: None,
        naming: naming.into(),
        command: None,
        args: None,
        env: None,
        limits: limits_json(req.limits.as_ref())?,
    };
    app.store
        .insert_server(&ws, &row, &user.username)
        .await
        .map_err(|e| bare_race(e, &ws))?;
    app.publish().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "server": server_json(&row, &[]),
            "missing_secrets": needed,
            "probe": probed,
        })),
    ))
}

/// Installs a stdio server the runner hosts: nothing is started until a client
/// uses it (the runner starts it then, with the secrets set by then).
async fn install_hosted(
    app: Arc<App>,
    user: AuthUser,
    ws: WorkspaceRow,
    command: String,
    req: Install,
) -> ApiResult<(StatusCode, Json<Value>)> {
    // Its command runs on the control plane's machine as the control plane's user,
    // which can read the master key and the store: only those trusted with them
    // may choose it.
    if !user.admin {
        return Err(ApiError::Forbidden(
            "only an admin may install a stdio server: Gatehouse runs its command on the control plane's machine, as the control plane's user".into(),
        ));
    }
    if !req.headers.is_empty() {
        return Err(ApiError::BadRequest(
            "headers apply to servers reached by url; a stdio server gets its secrets as environment variables".into(),
        ));
    }
    if let Some(transport) = req.transport.as_deref().filter(|t| *t != STDIO) {
        return Err(ApiError::BadRequest(format!(
            "transport {transport:?} does not go with command: a command is a stdio server"
        )));
    }
    check_command(&command, &req.args, &req.env)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let slug = match &req.slug {
        Some(s) => s.clone(),
        None => slugify(
            std::path::Path::new(&command)
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("server"),
        )
        .into_owned(),
    };
    if !is_valid_slug(&slug) {
        return Err(ApiError::BadRequest(format!(
            "server slug {slug:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$ (no `_`: tools are named <server>__<tool>); pass --name"
        )));
    }
    CompiledPolicy::compile(&req.policy)
        .map_err(|e| ApiError::BadRequest(format!("policy: {e}")))?;
    let naming = naming_of(req.naming.as_deref().unwrap_or("prefixed"))?;
    if naming == "bare" {
        only_bare(&app, &ws, &slug).await?;
    }
    if app.store.server(&ws.id, &slug).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "MCP server {slug:?} is already installed in {:?} (pass --name to install it again under another slug)",
            ws.slug
        )));
    }
    let args = serde_json::to_string(&req.args).map_err(anyhow::Error::from)?;
    let env = serde_json::to_string(&req.env).map_err(anyhow::Error::from)?;
    let row = ServerRow {
        id: random_id("srv_"),
        workspace_id: ws.id.clone(),
        slug,
        url: String::new(),
        transport: STDIO.into(),
        headers: "{}".into(),
        policy: serde_json::to_string(&req.policy).map_err(anyhow::Error::from)?,
        enabled: i64::from(req.enabled),
        created_at: now(),
        package: None,
        installed_by: Some(user.id.clone()),
        tools: None,
        naming: naming.into(),
        command: Some(command),
        args: Some(args),
        env: Some(env),
        limits: limits_json(req.limits.as_ref())?,
    };
    app.store
        .insert_server(&ws, &row, &user.username)
        .await
        .map_err(|e| bare_race(e, &ws))?;
    app.publish().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "server": server_json(&row, &[]),
            "missing_secrets": Vec::<String>::new(),
            "probe": Value::Null,
        })),
    ))
}

pub async fn remove(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((ws, server)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let row = server_of(&app, &ws, &server).await?;
    app.store.delete_server(&ws, &row, &user.username).await?;
    app.publish().await?;
    Ok(Json(json!({"server": server_json(&row, &[])})))
}

/// What `PATCH` may change; what is absent stays as it is.
#[derive(Deserialize)]
pub struct ServerChange {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub policy: Option<ToolPolicy>,
    /// `prefixed` or `bare`.
    #[serde(default)]
    pub naming: Option<String>,
    /// Replaces its timeouts and cap on calls in flight; `{}`: the defaults.
    #[serde(default)]
    pub limits: Option<ServerLimits>,
    /// A stdio server's program, arguments and plain environment (each replaces
    /// what it had; admins only).
    #[serde(default)]
    pub command: Option<String>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

/// Enables or disables a server, or replaces its tool policy (`PATCH`).
pub async fn update(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((ws, server)): Path<(String, String)>,
    Body(req): Body<ServerChange>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let mut row = server_of(&app, &ws, &server).await?;
    let runs = req.command.is_some() || req.args.is_some() || req.env.is_some();
    if req.enabled.is_none()
        && req.policy.is_none()
        && req.naming.is_none()
        && req.limits.is_none()
        && !runs
    {
        return Err(ApiError::BadRequest(
            "nothing to change: give enabled, policy, naming, limits, or a stdio server's command, args or env".into(),
        ));
    }
    let limits = req
        .limits
        .as_ref()
        .map(|l| limits_json(Some(l)))
        .transpose()?;
    let command_line = if runs {
        Some(changed_command_line(&user, &row, &req)?)
    } else {
        None
    };
    let naming = req.naming.as_deref().map(naming_of).transpose()?;
    if naming == Some("bare") {
        only_bare(&app, &ws, &row.slug).await?;
    }
    let policy = match &req.policy {
        Some(policy) => {
            CompiledPolicy::compile(policy)
                .map_err(|e| ApiError::BadRequest(format!("policy: {e}")))?;
            Some(serde_json::to_string(policy).map_err(anyhow::Error::from)?)
        }
        None => None,
    };
    let mut changed = false;
    if let Some(enabled) = req.enabled.filter(|e| (row.enabled != 0) != *e) {
        app.store
            .set_server_enabled(&ws, &row, enabled, &user.username)
            .await?;
        row.enabled = i64::from(enabled);
        changed = true;
    }
    if let Some(policy) = policy.filter(|p| *p != row.policy) {
        app.store
            .set_server_policy(&ws, &row, &policy, &user.username)
            .await?;
        row.policy = policy;
        changed = true;
    }
    if let Some(naming) = naming.filter(|n| *n != row.naming) {
        app.store
            .set_server_naming(&ws, &row, naming, &user.username)
            .await
            .map_err(|e| bare_race(e, &ws))?;
        row.naming = naming.into();
        changed = true;
    }
    if let Some(limits) = limits.filter(|l| *l != row.limits) {
        app.store
            .set_server_limits(&ws, &row, limits.as_deref(), &user.username)
            .await?;
        row.limits = limits;
        changed = true;
    }
    if let Some((command, args, env)) = command_line.filter(|(command, args, env)| {
        Some(command) != row.command.as_ref()
            || Some(args) != row.args.as_ref()
            || Some(env) != row.env.as_ref()
    }) {
        row.command = Some(command);
        row.args = Some(args);
        row.env = Some(env);
        app.store
            .set_server_command(&ws, &row, &user.username)
            .await?;
        changed = true;
    }
    if changed {
        app.publish().await?;
    }
    let names = secret_names(&app, &ws).await?;
    let secrets = names.get(&row.slug).map_or(&[][..], Vec::as_slice);
    Ok(Json(json!({"server": server_json(&row, secrets)})))
}

/// A stdio server's new command, args and env as stored (JSON), what the change
/// leaves out kept; refused for other servers and for non-admins.
fn changed_command_line(
    user: &AuthUser,
    row: &ServerRow,
    req: &ServerChange,
) -> ApiResult<(String, String, String)> {
    if row.transport != STDIO {
        return Err(ApiError::BadRequest(format!(
            "command, args and env apply to stdio servers; {:?} is reached by url",
            row.slug
        )));
    }
    if !user.admin {
        return Err(ApiError::Forbidden(
            "only an admin may change what a stdio server runs: Gatehouse runs it on the control plane's machine, as the control plane's user".into(),
        ));
    }
    let command = req
        .command
        .clone()
        .or_else(|| row.command.clone())
        .unwrap_or_default();
    let args: Vec<String> = match &req.args {
        Some(args) => args.clone(),
        None => stored(&row.args)?,
    };
    let env: BTreeMap<String, String> = match &req.env {
        Some(env) => env.clone(),
        None => stored(&row.env)?,
    };
    check_command(&command, &args, &env).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((
        command,
        serde_json::to_string(&args).map_err(anyhow::Error::from)?,
        serde_json::to_string(&env).map_err(anyhow::Error::from)?,
    ))
}

/// A JSON column as its value; absent is empty.
fn stored<T: serde::de::DeserializeOwned + Default>(json: &Option<String>) -> ApiResult<T> {
    match json {
        Some(json) => Ok(serde_json::from_str(json).map_err(anyhow::Error::from)?),
        None => Ok(T::default()),
    }
}

#[derive(Deserialize)]
pub struct SecretValue {
    pub value: String,
}

pub async fn set_secret(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((ws, server, name)): Path<(String, String, String)>,
    Body(req): Body<SecretValue>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let row = server_of(&app, &ws, &server).await?;
    // A stdio server's secrets become its environment (LD_PRELOAD, NODE_OPTIONS, ...),
    // which decides what it runs: the same trust as choosing its command.
    if row.transport == STDIO && !user.admin {
        return Err(ApiError::Forbidden(format!(
            "only an admin may set the secrets of {:?}: they become the environment of a command Gatehouse runs on the control plane's machine",
            row.slug
        )));
    }
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(ApiError::BadRequest(format!(
            "secret name {name:?} must match [A-Za-z0-9_]+"
        )));
    }
    if req.value.is_empty() {
        return Err(ApiError::BadRequest(
            "a secret value must not be empty".into(),
        ));
    }
    if http::HeaderValue::from_str(&req.value).is_err() {
        return Err(ApiError::BadRequest(
            "a secret value must be usable in an HTTP header (visible ASCII, no line breaks)"
                .into(),
        ));
    }
    let sealed = app
        .master
        .seal(req.value.as_bytes(), &secret_binding(&row.id, &name));
    let updated_at = app
        .store
        .put_secret(&ws, &row, &name, sealed, &user.username)
        .await?;
    app.publish().await?;
    Ok(Json(
        json!({"server": row.slug, "name": name, "updated_at": updated_at}),
    ))
}

pub async fn delete_secret(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((ws, server, name)): Path<(String, String, String)>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let row = server_of(&app, &ws, &server).await?;
    if !app
        .store
        .delete_secret(&ws, &row, &name, &user.username)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "no secret {name:?} for {:?}",
            row.slug
        )));
    }
    app.publish().await?;
    Ok(Json(json!({"server": row.slug, "name": name})))
}

pub async fn secrets(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let list: Vec<Value> = app
        .store
        .secrets_of_workspace(&ws.id)
        .await?
        .iter()
        .map(|(server, row)| json!({"server": server, "name": row.name, "updated_at": row.updated_at}))
        .collect();
    Ok(Json(json!({"secrets": list})))
}

/// Sets how one of a server's tools is shaped for clients (`PUT`); an override that
/// changes nothing (`{}`) removes it, and the tool is shown as the server has it.
pub async fn set_tool_override(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((ws, server, tool)): Path<(String, String, String)>,
    Body(shape): Body<ToolOverride>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let row = server_of(&app, &ws, &server).await?;
    if tool.is_empty() || tool.len() > 128 {
        return Err(ApiError::BadRequest(
            "a tool name has 1 to 128 characters".into(),
        ));
    }
    if let Some(name) = shape.name.as_deref() {
        if !is_valid_tool_name(name) {
            return Err(ApiError::BadRequest(format!(
                "name {name:?} must be 1 to 128 of A-Z a-z 0-9 _ - . (a tool name)"
            )));
        }
    }
    let stored = (shape != ToolOverride::default())
        .then(|| serde_json::to_string(&shape))
        .transpose()
        .map_err(anyhow::Error::from)?;
    app.store
        .set_tool_override(&ws, &row, &tool, stored.as_deref(), &user.username)
        .await?;
    app.publish().await?;
    Ok(Json(json!({
        "server": row.slug,
        "tool": tool,
        "override": stored.is_some().then_some(shape),
    })))
}

/// The tool overrides of a server, by upstream tool name.
pub async fn tool_overrides(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((ws, server)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let ws = visible(&app, &user, &ws).await?;
    let row = server_of(&app, &ws, &server).await?;
    let mut overrides = serde_json::Map::new();
    for (tool, shape) in app.store.tool_overrides(&row.id).await? {
        overrides.insert(
            tool,
            serde_json::from_str(&shape).map_err(anyhow::Error::from)?,
        );
    }
    Ok(Json(json!({"server": row.slug, "overrides": overrides})))
}
