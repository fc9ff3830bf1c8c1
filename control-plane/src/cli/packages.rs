//! `gatehouse skill ...` and `gatehouse mcp install @owner/name`: the package
//! registry (publish, list, search, versions, unpublish) and installing a package
//! into a workspace. A refused install prints the seed's `✗ 403: ...`.

use std::path::Path;

use serde_json::{json, Value};

use super::api::decode;
use super::args::{PackageRef, PackageType, SkillCommand, Visibility};
use super::error::CliError;
use super::manifest;
use super::prompt::confirm;
use super::render;
use super::resources::{
    PackageInstalled, PackageList, PackagePublished, PackageUnpublished, VersionList,
};
use super::session::{pretty_json, Context};

pub async fn run(ctx: &Context, command: SkillCommand) -> Result<String, CliError> {
    match command {
        SkillCommand::Init { kind, name } => init(ctx.json, kind, name),
        SkillCommand::Publish {
            manifest,
            name,
            private,
        } => publish(ctx, &manifest, name, private).await,
        SkillCommand::List => list(ctx).await,
        SkillCommand::Search { text } => search(ctx, &text.join(" ")).await,
        SkillCommand::Versions { package } => versions(ctx, &package).await,
        SkillCommand::Install {
            package,
            workspace,
            version,
            name,
        } => install(ctx, package, workspace.workspace, version, name).await,
        SkillCommand::Unpublish {
            package,
            version,
            yes,
        } => unpublish(ctx, package, version, yes).await,
    }
}

/// `skill init`: local only, no login needed.
pub fn init(json: bool, kind: PackageType, name: Option<String>) -> Result<String, CliError> {
    let cwd = std::env::current_dir().ok();
    let name = name.unwrap_or_else(|| manifest::default_name(cwd.as_deref(), kind));
    let path = Path::new(manifest::DEFAULT_MANIFEST);
    let text = manifest::example(kind, &name);
    manifest::write_new(path, &text)?;
    if json {
        let manifest: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        return Ok(pretty_json(
            &json!({"path": manifest::DEFAULT_MANIFEST, "manifest": manifest}),
        ));
    }
    Ok(format!(
        "✓ Wrote {} ({} {name}).\nEdit it, then publish it: gatehouse skill publish [--private team | --private]\n",
        manifest::DEFAULT_MANIFEST,
        kind.api_name()
    ))
}

/// The publish request: the manifest as read, and who may install it.
fn publish_body(manifest: Value, visibility: Visibility) -> Value {
    json!({"manifest": manifest, "visibility": visibility.api_name()})
}

async fn publish(
    ctx: &Context,
    path: &Path,
    name: Option<String>,
    private: Option<Visibility>,
) -> Result<String, CliError> {
    if name.as_deref().is_some_and(|n| n.trim().is_empty()) {
        return Err(CliError::usage("--name must not be empty"));
    }
    let manifest = manifest::load(path, name.as_deref())?;
    let visibility = private.unwrap_or(Visibility::Public);
    let client = ctx.client()?;
    let answer = client
        .post(&["v1", "packages"], &publish_body(manifest, visibility))
        .await
        .map_err(|err| name_the_manifest(err, path))?;
    let published: PackagePublished = decode(&answer, "skill publish")?;
    ctx.output(&answer, || {
        Ok(render::package_published(&published.package))
    })
}

/// "invalid manifest" -> "invalid manifest gatehouse.json:" when problems follow.
fn name_the_manifest(err: CliError, path: &Path) -> CliError {
    match err {
        CliError::Api {
            status,
            code,
            message,
            problems,
        } if !problems.is_empty() => CliError::Api {
            status,
            code,
            message: format!("{message} ({}):", path.display()),
            problems,
        },
        other => other,
    }
}

async fn list(ctx: &Context) -> Result<String, CliError> {
    let answer = ctx.client()?.get(&["v1", "packages", "mine"]).await?;
    let list: PackageList = decode(&answer, "skill list")?;
    ctx.output(&answer, || Ok(render::package_table(&list.packages)))
}

async fn search(ctx: &Context, text: &str) -> Result<String, CliError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(CliError::usage("search text must not be empty"));
    }
    let answer = ctx
        .client()?
        .get_query(&["v1", "packages"], &[("q", text.to_owned())])
        .await?;
    let list: PackageList = decode(&answer, "skill search")?;
    ctx.output(&answer, || Ok(render::search_table(text, &list.packages)))
}

async fn versions(ctx: &Context, package: &PackageRef) -> Result<String, CliError> {
    let answer = ctx
        .client()?
        .get(&["v1", "packages", &package.owner, &package.name, "versions"])
        .await?;
    let list: VersionList = decode(&answer, "skill versions")?;
    ctx.output(&answer, || {
        Ok(render::version_table(&package.id(), &list.versions))
    })
}

/// `--version V` and `@owner/name@V` must agree when both are given.
fn requested_version(
    package: &PackageRef,
    flag: Option<String>,
) -> Result<Option<String>, CliError> {
    match (package.version.clone(), flag) {
        (Some(inline), Some(flag)) if inline != flag => Err(CliError::usage(format!(
            "two versions asked for: {package} and --version {flag}; give one"
        ))),
        (inline, flag) => Ok(flag.or(inline)),
    }
}

/// The install request: only what was given, so the control plane picks the
/// latest version and the package's name as the slug otherwise.
fn install_body(package: &PackageRef, version: Option<String>, slug: Option<String>) -> Value {
    let mut body = json!({"package": package.id()});
    if let Some(version) = version {
        body["version"] = json!(version);
    }
    if let Some(slug) = slug {
        body["slug"] = json!(slug);
    }
    body
}

/// `skill install` and `mcp install @owner/name`.
pub async fn install(
    ctx: &Context,
    package: PackageRef,
    workspace: Option<String>,
    version: Option<String>,
    slug: Option<String>,
) -> Result<String, CliError> {
    let ws = ctx.workspace(workspace)?;
    let version = requested_version(&package, version)?;
    let body = install_body(&package, version, slug);
    let answer = ctx
        .client()?
        .post(&["v1", "workspaces", &ws, "packages"], &body)
        .await
        .map_err(CliError::into_refusal)?;
    let installed: PackageInstalled = decode(&answer, "skill install")?;
    ctx.output(&answer, || {
        Ok(render::package_installed(&installed, &package.id(), &ws))
    })
}

async fn unpublish(
    ctx: &Context,
    package: PackageRef,
    version: Option<String>,
    yes: bool,
) -> Result<String, CliError> {
    let version = requested_version(&package, version)?;
    let id = package.id();
    let client = ctx.client()?;
    if !yes {
        confirm(&render::unpublish_warning(&id, version.as_deref()), || {
            CliError::usage(format!(
                "refusing to unpublish {id} without confirmation: stdin is not a terminal; pass --yes"
            ))
        })?;
    }
    let query: Vec<(&str, String)> = version.iter().map(|v| ("version", v.clone())).collect();
    let answer = client
        .delete_query(&["v1", "packages", &package.owner, &package.name], &query)
        .await?;
    let unpublished: PackageUnpublished = decode(&answer, "skill unpublish")?;
    ctx.output(&answer, || {
        Ok(render::package_unpublished(
            &id,
            version.as_deref(),
            unpublished.removed_versions,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::parse_package_ref;

    fn pkg(text: &str) -> PackageRef {
        parse_package_ref(text).unwrap()
    }

    #[test]
    fn publish_sends_the_manifest_and_visibility() {
        let manifest = json!({"name": "crm", "version": "1.2.0"});
        assert_eq!(
            publish_body(manifest.clone(), Visibility::Team),
            json!({"manifest": manifest, "visibility": "team"})
        );
        assert_eq!(
            publish_body(json!({}), Visibility::Public)["visibility"],
            "public"
        );
        assert_eq!(
            publish_body(json!({}), Visibility::Private)["visibility"],
            "private"
        );
    }

    #[test]
    fn manifest_problems_name_the_file() {
        let err = CliError::Api {
            status: 400,
            code: "invalid_request".into(),
            message: "invalid manifest".into(),
            problems: vec!["version: must be semver".into()],
        };
        assert_eq!(
            name_the_manifest(err, Path::new("gatehouse.json")).report(),
            "error: invalid manifest (gatehouse.json):\n  - version: must be semver"
        );
        let conflict = CliError::Api {
            status: 409,
            code: "conflict".into(),
            message: "@acme/crm@1.0.0 is already published".into(),
            problems: vec![],
        };
        assert_eq!(
            name_the_manifest(conflict, Path::new("x")).report(),
            "error: @acme/crm@1.0.0 is already published"
        );
    }

    #[test]
    fn install_sends_only_what_was_given() {
        assert_eq!(
            install_body(&pkg("@acme/crm"), None, None),
            json!({"package": "@acme/crm"})
        );
        assert_eq!(
            install_body(&pkg("acme/crm"), Some("1.2.0".into()), Some("crm2".into())),
            json!({"package": "@acme/crm", "version": "1.2.0", "slug": "crm2"})
        );
    }

    #[test]
    fn versions_inline_and_flag_must_agree() {
        assert_eq!(
            requested_version(&pkg("@acme/crm@1.0.0"), None).unwrap(),
            Some("1.0.0".into())
        );
        assert_eq!(
            requested_version(&pkg("@acme/crm"), Some("2.0.0".into())).unwrap(),
            Some("2.0.0".into())
        );
        assert_eq!(
            requested_version(&pkg("@acme/crm@1.0.0"), Some("1.0.0".into())).unwrap(),
            Some("1.0.0".into())
        );
        assert!(requested_version(&pkg("@acme/crm@1.0.0"), Some("2.0.0".into())).is_err());
        assert_eq!(requested_version(&pkg("@acme/crm"), None).unwrap(), None);
    }
}
