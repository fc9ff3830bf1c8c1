//! Hub and Skills: search the public packages, see your own and your teams' (which
//! never appear in public search), a package's versions, install one into a
//! workspace (from here, or by name from the workspace's own page), and publish a
//! new version from a pasted (or loaded) manifest.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::{Form, Json};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

use super::session::{csrf_field, page, Session};
use super::shell::{PageError, PageResult, PATH};
use crate::api::error::ApiError;
use crate::api::packages::{self, InstallRequest, PublishRequest, SearchParams};
use crate::api::request::Body;
use crate::api::workspaces;
use crate::dates::format_minute;
use crate::state::App;

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

fn list(v: &Value, key: &str) -> Vec<Value> {
    v[key].as_array().cloned().unwrap_or_default()
}

/// The form that installs `package` into one of `workspaces`.
fn install_form(session: &Session, package: &str, workspaces: &[Value]) -> Markup {
    let id = package.replace(['@', '/'], "-");
    html! {
        @if workspaces.is_empty() {
            span.hint { "Create a workspace to install into." }
        } @else {
            form.install method="post" action={ (PATH) "/hub/install" } {
                (csrf_field(session))
                input type="hidden" name="package" value=(package);
                label.sr for={ "ws" (id) } { "Workspace for " (package) }
                select id={ "ws" (id) } name="workspace" {
                    @for w in workspaces { option value=(text(w, "slug")) { (text(w, "slug")) } }
                }
                button type="submit" aria-label={ "Install " (package) } { "Install" }
            }
        }
    }
}

fn packages_table(session: &Session, packages: &[Value], workspaces: &[Value]) -> Markup {
    html! {
        div.scroll { table.packages {
            thead { tr { th scope="col" { "Package" } th scope="col" { "Type" } th scope="col" { "Version" } th scope="col" { "Visibility" } th scope="col" { "Description" } th scope="col" { "Install into" } } }
            tbody { @for p in packages {
                tr {
                    td { a href={ (PATH) "/hub/" (text(p, "owner")) "/" (text(p, "name")) } { code { (text(p, "package")) } } }
                    td { (text(p, "type")) }
                    td { (text(p, "version")) }
                    td { (text(p, "visibility")) }
                    td { (text(p, "description")) }
                    td { (install_form(session, text(p, "package"), workspaces)) }
                }
            } }
        } }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Search {
    q: String,
}

pub async fn show(
    State(app): State<Arc<App>>,
    session: Session,
    Query(search): Query<Search>,
) -> PageResult<Markup> {
    let user = session.user.clone();
    let Json(found) = packages::search(
        State(app.clone()),
        user.clone(),
        Query(SearchParams {
            q: search.q.clone(),
        }),
    )
    .await?;
    let Json(mine) = packages::mine(State(app.clone()), user.clone()).await?;
    let Json(spaces) = workspaces::list(State(app), user).await?;
    let spaces = list(&spaces, "workspaces");
    let found = list(&found, "packages");
    let mine = list(&mine, "packages");
    let body = html! {
        h1 { "Hub and skills" }
        form.filters method="get" action={ (PATH) "/hub" } role="search" {
            div.field {
                label for="hub-q" { "Search public packages" }
                input #hub-q name="q" type="search" value=(search.q) placeholder="github, crm…";
            }
            button type="submit" { "Search" }
        }
        section aria-labelledby="public" {
            h2 #public { "Public packages" }
            @if found.is_empty() { p { "Nothing matches." } }
            @else { (packages_table(&session, &found, &spaces)) }
        }
        section aria-labelledby="mine" {
            h2 #mine { "Yours and your teams'" }
            @if mine.is_empty() { p { "None yet." } }
            @else { (packages_table(&session, &mine, &spaces)) }
        }
        section aria-labelledby="publish" {
            h2 #publish { "Publish a package or a new version" }
            form method="post" action={ (PATH) "/hub/publish" } {
                (csrf_field(&session))
                label for="pub-file" { "Load a gatehouse.json (optional)" }
                input #pub-file type="file" accept=".json,application/json" data-into="pub-manifest";
                label for="pub-manifest" { "Manifest (JSON; " code { "gatehouse skill init" } " writes an example)" }
                textarea #pub-manifest name="manifest" rows="14" required spellcheck="false" {}
                label for="pub-visibility" { "Visibility" }
                select #pub-visibility name="visibility" {
                    option value="public" { "public: anyone, listed in search" }
                    option value="team" { "team: your team members only" }
                    option value="private" { "private: only you" }
                }
                button type="submit" { "Publish" }
            }
        }
    };
    Ok(page(&session, "Hub", body))
}

pub async fn package(
    State(app): State<Arc<App>>,
    session: Session,
    Path((owner, name)): Path<(String, String)>,
) -> PageResult<Markup> {
    let user = session.user.clone();
    let reference = Path((owner, name));
    let Json(package) =
        packages::show(State(app.clone()), user.clone(), Path(reference.0.clone())).await?;
    let Json(versions) = packages::versions(State(app.clone()), user.clone(), reference).await?;
    let Json(spaces) = workspaces::list(State(app), user).await?;
    let spaces = list(&spaces, "workspaces");
    let full = text(&package, "package");
    let body = html! {
        h1 { code { (full) } }
        p { (text(&package, "description")) }
        p.hint { (text(&package, "type")) " · " (text(&package, "visibility")) " · " (text(&package, "category")) }
        @let secrets = list(&package, "secrets");
        @if !secrets.is_empty() {
            h2 { "Secrets it needs" }
            ul { @for s in &secrets { li { code { (text(s, "name")) } " — " (text(s, "description")) } } }
        }
        h2 { "Install" }
        (install_form(&session, full, &spaces))
        h2 { "Versions" }
        div.scroll { table.versions {
            thead { tr { th scope="col" { "Version" } th scope="col" { "Published" } } }
            tbody { @for v in list(&versions, "versions") {
                tr { td { (text(&v, "version")) } td { (v["published_at"].as_i64().map(format_minute).unwrap_or_default()) } }
            } }
        } }
    };
    Ok(page(&session, full, body))
}

#[derive(Deserialize)]
pub struct InstallForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    workspace: String,
}

pub async fn install(
    State(app): State<Arc<App>>,
    session: Session,
    Form(form): Form<InstallForm>,
) -> PageResult<Markup> {
    session.check_csrf(&form.csrf)?;
    let request = InstallRequest {
        package: form.package,
        version: None,
        slug: None,
    };
    install_package(app, session, form.workspace, request).await
}

/// The workspace page's "Install from the Hub or a skill" form: a package by name,
/// optionally a version and a server name.
pub fn workspace_install_form(session: &Session, here: &str, packages: &[Value]) -> Markup {
    html! {
        h3 { "Install from the Hub or a skill" }
        form method="post" action={ (here) "/packages" } {
            (csrf_field(session))
            label for="pkg-ref" { "Package (" code { "@owner/name" } ")" }
            input #pkg-ref name="package" required list="pkg-known" pattern="@[^/ ]+/[^/ ]+" placeholder="@gatehouse/github";
            datalist #pkg-known {
                @for p in packages { option value=(text(p, "package")) { (text(p, "description")) } }
            }
            label for="pkg-version" { "Version (optional; the latest by default)" }
            input #pkg-version name="version" placeholder="1.0.0";
            label for="pkg-slug" { "Name (optional; tools are named <name>__<tool>)" }
            input #pkg-slug name="slug" pattern="[a-z0-9][a-z0-9-]{0,31}" placeholder="github";
            p.hint { a href={ (PATH) "/hub" } { "Browse the Hub" } " for public packages, yours and your teams'." }
            button type="submit" { "Install package" }
        }
    }
}

/// The packages the user may install, public ones and their own and their teams',
/// for the workspace page's suggestions.
pub async fn installable(app: &Arc<App>, session: &Session) -> PageResult<Vec<Value>> {
    let user = session.user.clone();
    let Json(public) = packages::search(
        State(app.clone()),
        user.clone(),
        Query(SearchParams { q: String::new() }),
    )
    .await?;
    let Json(mine) = packages::mine(State(app.clone()), user).await?;
    let mut all = list(&mine, "packages");
    all.extend(list(&public, "packages"));
    let mut seen = std::collections::HashSet::new();
    all.retain(|p| seen.insert(text(p, "package").to_owned()));
    Ok(all)
}

#[derive(Deserialize)]
pub struct WorkspaceInstallForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    package: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    slug: String,
}

/// `POST /dashboard/workspaces/{ws}/packages`: the workspace page's shortcut, the
/// same install as the Hub's (and `gatehouse mcp install @owner/name`).
pub async fn install_into(
    State(app): State<Arc<App>>,
    session: Session,
    Path(ws): Path<String>,
    Form(form): Form<WorkspaceInstallForm>,
) -> PageResult<Markup> {
    session.check_csrf(&form.csrf)?;
    let nonempty = |s: String| Some(s.trim().to_owned()).filter(|s| !s.is_empty());
    let request = InstallRequest {
        package: form.package.trim().to_owned(),
        version: nonempty(form.version),
        slug: nonempty(form.slug),
    };
    install_package(app, session, ws, request).await
}

/// Installs through the API's handler and says what happened and which secrets to set.
async fn install_package(
    app: Arc<App>,
    session: Session,
    ws: String,
    request: InstallRequest,
) -> PageResult<Markup> {
    let (_, Json(installed)) = packages::install(
        State(app),
        session.user.clone(),
        Path(ws.clone()),
        Body(request),
    )
    .await?;
    let slug = text(&installed["server"], "slug");
    let secrets = list(&installed, "missing_secrets");
    let ws = &ws;
    let body = html! {
        h1 { "Installed." }
        p { code { (text(&installed, "package")) } " " (text(&installed, "version")) " is installed in " code { (ws) } " as " code { (slug) } "; its tools are named " code { (slug) "__<tool>" } "." }
        @if !secrets.is_empty() {
            p { "Set its secrets on the workspace page:" }
            ul { @for s in &secrets { li { code { (text(s, "name")) } " — " (text(s, "description")) } } }
        }
        p { a.button href={ (PATH) "/workspaces/" (ws) } { "Open " (ws) } }
    };
    Ok(page(&session, "Installed", body))
}

#[derive(Deserialize)]
pub struct PublishForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    manifest: String,
    #[serde(default)]
    visibility: String,
}

pub async fn publish(
    State(app): State<Arc<App>>,
    session: Session,
    Form(form): Form<PublishForm>,
) -> PageResult<Markup> {
    session.check_csrf(&form.csrf)?;
    let manifest: Value = serde_json::from_str(&form.manifest).map_err(|e| {
        PageError::Api(ApiError::BadRequest(format!(
            "the manifest is not JSON: {e}"
        )))
    })?;
    let (_, Json(published)) = packages::publish(
        State(app),
        session.user.clone(),
        Body(PublishRequest {
            manifest,
            visibility: form.visibility,
        }),
    )
    .await?;
    let p = &published["package"];
    let body = html! {
        h1 { "Published." }
        p { code { (text(p, "package")) } " " (text(p, "version")) " is published (" (text(p, "visibility")) ")." }
        p { a.button href={ (PATH) "/hub/" (text(p, "owner")) "/" (text(p, "name")) } { "See its versions" } }
    };
    Ok(page(&session, "Published", body))
}
