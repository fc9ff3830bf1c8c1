//! The Hub's starter catalog: connection definitions of well-known MCP servers,
//! shipped as data (`hub/catalog.json`) and published as `@gatehouse/<name>` public
//! packages. Loaded at every start; a version already published is skipped, so a
//! newer catalog adds its new versions and nothing else.

use serde::Deserialize;

use crate::manifest::Manifest;
use crate::store::packages::Publication;
use crate::store::Store;

/// The namespace the catalog is published under.
pub const HUB_OWNER: &str = "gatehouse";

const CATALOG: &str = include_str!("../hub/catalog.json");

#[derive(Deserialize)]
struct Catalog {
    packages: Vec<serde_json::Value>,
}

/// The catalog's manifests, each validated.
pub fn manifests() -> anyhow::Result<Vec<Manifest>> {
    let catalog: Catalog = serde_json::from_str(CATALOG)?;
    catalog
        .packages
        .into_iter()
        .map(|value| Manifest::parse(value).map_err(|p| anyhow::anyhow!("hub catalog: {p:?}")))
        .collect()
}

/// Publishes the catalog's versions that `store` does not have yet, creating the Hub's
/// owner on first start.
pub async fn load_catalog(store: &Store) -> anyhow::Result<()> {
    let owner = match store.user_by_name(HUB_OWNER).await? {
        Some(u) => u,
        // The Hub's user cannot log in: no credential hashes to "!".
        None => {
            store
                .insert_user(HUB_OWNER, "hub@gatehouse.invalid", false, "!", "gatehouse")
                .await?
        }
    };
    for manifest in manifests()? {
        if let Some(existing) = store.package(HUB_OWNER, &manifest.name).await? {
            let have = semver::Version::parse(&existing.high_water).ok();
            let new = semver::Version::parse(&manifest.version).ok();
            if new <= have {
                continue;
            }
        }
        let tags = serde_json::to_string(&manifest.tags)?;
        store
            .publish(
                &Publication {
                    owner_id: &owner.id,
                    name: &manifest.name,
                    kind: &manifest.kind,
                    visibility: "public",
                    description: &manifest.description,
                    category: &manifest.category,
                    tags: &tags,
                    version: &manifest.version,
                    manifest: &serde_json::to_string(&manifest)?,
                },
                HUB_OWNER,
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_catalog_is_valid() {
        let manifests = super::manifests().unwrap();
        assert!(manifests.len() >= 8);
        assert!(manifests.iter().all(|m| m.kind == "mcp-server"));
    }
}
