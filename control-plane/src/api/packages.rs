//! The skills registry and Hub: publishing packages, finding them, and installing
//! them into workspaces — with visibility enforced on every path.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::request::{AuthUser, Body};
use super::workspaces::visible;
use crate::crypto::random_id;
use crate::manifest::Manifest;
use crate::state::App;
use crate::store::packages::{PackageRow, Publication, PublishError, VersionRow};
use crate::store::{now, ServerRow};

/// `@owner/name` -> (owner, name).
pub fn parse_reference(text: &str) -> Option<(&str, &str)> {
    let (owner, name) = text.strip_prefix('@')?.split_once('/')?;
    (!owner.is_empty() && !name.is_empty()).then_some((owner, name))
}

fn not_found(owner: &str, name: &str) -> ApiError {
    ApiError::NotFound(format!("package @{owner}/{name} not found"))
}

/// Newest first.
fn sorted(mut versions: Vec<VersionRow>) -> Vec<VersionRow> {
    versions.sort_by(|a, b| {
        let parse = |v: &str| semver::Version::parse(v).ok();
        parse(&b.version).cmp(&parse(&a.version))
    });
    versions
}

fn package_json(p: &PackageRow, latest: Option<&VersionRow>) -> Value {
    let manifest: Option<Manifest> = latest.and_then(|v| serde_json::from_str(&v.manifest).ok());
    json!({
        "package": format!("@{}/{}", p.owner, p.name), "owner": p.owner, "name": p.name,
        "type": p.kind, "version": latest.map(|v| v.version.clone()), "visibility": p.visibility,
        "description": p.description, "category": p.category,
        "tags": serde_json::from_str::<Value>(&p.tags).unwrap_or(Value::Array(vec![])),
        "secrets": manifest.map(|m| m.secrets).unwrap_or_default()
            .iter().map(|s| json!({"name": s.name, "description": s.description})).collect::<Vec<_>>(),
        "updated_at": p.updated_at,
    })
}

/// Whether `user` may see `p`, and whether that rests on team membership.
enum Access {
    Visible {
        via_team: bool,
    },
    /// A team package of someone whose team the user is not in.
    NotMember,
    Invisible,
}

async fn access(app: &App, user: &AuthUser, p: &PackageRow) -> ApiResult<Access> {
    if p.owner_id == user.id || p.visibility == "public" {
        return Ok(Access::Visible { via_team: false });
    }
    if p.visibility == "team" {
        return Ok(if app.store.is_team_member(&p.owner_id, &user.id).await? {
            Access::Visible { via_team: true }
        } else {
            Access::NotMember
        });
    }
    Ok(Access::Invisible)
}

/// A package the user may see, else the same 404 as a missing one.
async fn visible_package(
    app: &App,
    user: &AuthUser,
    owner: &str,
    name: &str,
) -> ApiResult<(PackageRow, Vec<VersionRow>)> {
    let owner = owner.trim_start_matches('@');
    let package = app
        .store
        .package(owner, name)
        .await?
        .ok_or_else(|| not_found(owner, name))?;
    if !matches!(access(app, user, &package).await?, Access::Visible { .. }) {
        return Err(not_found(owner, name));
    }
    let versions = sorted(app.store.versions(&package.id).await?);
    if versions.is_empty() {
        return Err(not_found(owner, name));
    }
    Ok((package, versions))
}

#[derive(Deserialize)]
pub struct PublishRequest {
    pub manifest: Value,
    #[serde(default = "public")]
    pub visibility: String,
}

fn public() -> String {
    "public".into()
}

pub async fn publish(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Body(req): Body<PublishRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !matches!(req.visibility.as_str(), "public" | "team" | "private") {
        return Err(ApiError::BadRequest(format!(
            "visibility {:?} must be public, team or private",
            req.visibility
        )));
    }
    let manifest = Manifest::parse(req.manifest).map_err(ApiError::invalid_manifest)?;
    let version = semver::Version::parse(&manifest.version).expect("validated");
    if let Some(existing) = app.store.package(&user.username, &manifest.name).await? {
        let high = semver::Version::parse(&existing.high_water).ok();
        if high.as_ref().is_some_and(|h| &version <= h) {
            return Err(ApiError::Conflict(format!(
                "@{}/{} {} is not newer than {}, the highest version ever published: versions must increase",
                user.username, manifest.name, manifest.version, existing.high_water
            )));
        }
    }
    let manifest_json = serde_json::to_string(&manifest).map_err(anyhow::Error::from)?;
    let tags = serde_json::to_string(&manifest.tags).map_err(anyhow::Error::from)?;
    app.store
        .publish(
            &Publication {
                owner_id: &user.id,
                name: &manifest.name,
                kind: &manifest.kind,
                visibility: &req.visibility,
                description: &manifest.description,
                category: &manifest.category,
                tags: &tags,
                version: &manifest.version,
                manifest: &manifest_json,
            },
            &user.username,
        )
        .await
        .map_err(|e| match e {
            // Another publish of this version (or a higher one) came first.
            PublishError::NotNewer { high_water } => ApiError::Conflict(format!(
                "@{}/{} {} is not newer than {high_water}, the highest version ever published: versions must increase",
                user.username, manifest.name, manifest.version
            )),
            PublishError::Database(e) => e.into(),
        })?;
    let package = app
        .store
        .package(&user.username, &manifest.name)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("package vanished after publish")))?;
    let versions = sorted(app.store.versions(&package.id).await?);
    Ok((
        StatusCode::CREATED,
        Json(json!({"package": package_json(&package, versions.first())})),
    ))
}

#[derive(Deserialize)]
pub struct SearchParams {
    #[serde(default)]
    pub q: String,
}

/// Public packages only, whoever asks.
pub async fn search(
    State(app): State<Arc<App>>,
    _user: AuthUser,
    Query(params): Query<SearchParams>,
) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for p in app.store.search_packages(params.q.trim()).await? {
        let versions = sorted(app.store.versions(&p.id).await?);
        out.push(package_json(&p, versions.first()));
    }
    Ok(Json(json!({"packages": out})))
}

/// The caller's own packages and their teams' (`skill list`).
pub async fn mine(State(app): State<Arc<App>>, user: AuthUser) -> ApiResult<Json<Value>> {
    let mut out = Vec::new();
    for p in app.store.packages_for(&user.id).await? {
        let versions = sorted(app.store.versions(&p.id).await?);
        out.push(package_json(&p, versions.first()));
    }
    Ok(Json(json!({"packages": out})))
}

pub async fn show(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (package, versions) = visible_package(&app, &user, &owner, &name).await?;
    Ok(Json(package_json(&package, versions.first())))
}

pub async fn versions(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((owner, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (_, versions) = visible_package(&app, &user, &owner, &name).await?;
    let list: Vec<Value> = versions
        .iter()
        .map(|v| json!({"version": v.version, "published_at": v.published_at}))
        .collect();
    Ok(Json(json!({"versions": list})))
}

#[derive(Deserialize)]
pub struct UnpublishParams {
    version: Option<String>,
}

pub async fn unpublish(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path((owner, name)): Path<(String, String)>,
    Query(params): Query<UnpublishParams>,
) -> ApiResult<Json<Value>> {
    let (package, _) = visible_package(&app, &user, &owner, &name).await?;
    if package.owner_id != user.id {
        return Err(ApiError::Forbidden(format!(
            "only @{} can unpublish @{}/{}",
            package.owner, package.owner, package.name
        )));
    }
    let removed = app
        .store
        .unpublish(&package, params.version.as_deref(), &user.username)
        .await?;
    if removed == 0 {
        return Err(ApiError::NotFound(format!(
            "@{}/{} has no version {}",
            package.owner,
            package.name,
            params.version.unwrap_or_default()
        )));
    }
    Ok(Json(
        json!({"package": format!("@{}/{}", package.owner, package.name), "removed_versions": removed}),
    ))
}

#[derive(Deserialize)]
pub struct InstallRequest {
    pub package: String,
    pub version: Option<String>,
    pub slug: Option<String>,
}

/// Installs a package into a workspace: an mcp-server package becomes a server, a
/// skill becomes a server whose tools the gateway runs itself.
pub async fn install(
    State(app): State<Arc<App>>,
    user: AuthUser,
    Path(ws): Path<String>,
    Body(req): Body<InstallRequest>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let ws = visible(&app, &user, &ws).await?;
    let (owner, name) = parse_reference(&req.package).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "{:?} is not a package reference like @owner/name",
            req.package
        ))
    })?;
    let package = app
        .store
        .package(owner, name)
        .await?
        .ok_or_else(|| not_found(owner, name))?;
    let via_team = match access(&app, &user, &package).await? {
        Access::Visible { via_team } => via_team,
        // Installing by exact name is where the seeds answer 403 for team packages.
        Access::NotMember => {
            return Err(ApiError::Forbidden(format!(
                "You are not a member of @{owner}"
            )))
        }
        Access::Invisible => return Err(not_found(owner, name)),
    };
    let versions = sorted(app.store.versions(&package.id).await?);
    let chosen = match &req.version {
        Some(v) => versions
            .iter()
            .find(|r| &r.version == v)
            .ok_or_else(|| ApiError::NotFound(format!("@{owner}/{name} has no version {v}")))?,
        None => versions.first().ok_or_else(|| not_found(owner, name))?,
    };
    let manifest: Manifest = serde_json::from_str(&chosen.manifest).map_err(anyhow::Error::from)?;
    let slug = req.slug.clone().unwrap_or_else(|| manifest.name.clone());
    if !gatehouse_config::naming::is_valid_slug(&slug) {
        return Err(ApiError::BadRequest(format!(
            "server slug {slug:?} must match ^[a-z0-9][a-z0-9-]{{0,31}}$"
        )));
    }
    if app.store.server(&ws.id, &slug).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "{slug:?} is already installed in {:?} (pass --name to install it under another slug)",
            ws.slug
        )));
    }
    let reference = format!("@{owner}/{name}@{}", chosen.version);
    let hosted = manifest.server.as_ref().and_then(|s| s.command.as_ref());
    if hosted.is_some() && !user.admin {
        return Err(ApiError::Forbidden(format!(
            "only an admin may install @{owner}/{name}: it is a stdio server, whose command Gatehouse runs on the control plane's machine, as the control plane's user"
        )));
    }
    let (url, transport, headers, tools) = match (&manifest.server, manifest.kind.as_str()) {
        (Some(_), "mcp-server") if hosted.is_some() => (
            String::new(),
            crate::runner::STDIO.to_string(),
            "{}".to_string(),
            None,
        ),
        (Some(server), "mcp-server") => (
            server.url.clone(),
            server.transport.clone(),
            serde_json::to_string(&server.headers).map_err(anyhow::Error::from)?,
            None,
        ),
        _ => (
            String::new(),
            "skill".to_string(),
            "{}".to_string(),
            Some(serde_json::to_string(&manifest.tools).map_err(anyhow::Error::from)?),
        ),
    };
    let row = ServerRow {
        id: random_id("srv_"),
        workspace_id: ws.id.clone(),
        slug,
        url,
        transport,
        headers,
        policy: serde_json::to_string(&gatehouse_config::ToolPolicy::default())
            .map_err(anyhow::Error::from)?,
        enabled: 1,
        created_at: now(),
        package: Some(reference),
        installed_by: Some(user.id.clone()),
        tools,
        naming: "prefixed".into(),
        command: hosted.cloned(),
        args: match (&manifest.server, hosted) {
            (Some(server), Some(_)) => {
                Some(serde_json::to_string(&server.args).map_err(anyhow::Error::from)?)
            }
            _ => None,
        },
        env: match (&manifest.server, hosted) {
            (Some(server), Some(_)) => {
                Some(serde_json::to_string(&server.env).map_err(anyhow::Error::from)?)
            }
            _ => None,
        },
        limits: None,
    };
    app.store.insert_server(&ws, &row, &user.username).await?;
    app.publish().await?;
    let missing: Vec<Value> = manifest
        .secrets
        .iter()
        .map(|s| json!({"name": s.name, "description": s.description}))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "server": {"slug": row.slug, "url": row.url, "transport": row.transport, "enabled": true,
                       "package": row.package, "created_at": row.created_at},
            "package": format!("@{owner}/{name}"),
            "version": chosen.version,
            "missing_secrets": missing,
            "membership_verified": via_team,
        })),
    ))
}
