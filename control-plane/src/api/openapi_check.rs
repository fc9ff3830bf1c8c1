//! Keeps `openapi.yaml` and the router in step: the documented (method, path) pairs
//! must be exactly the routes `router()` serves.

use std::collections::BTreeSet;

/// Every route of [`super::router`], as (method, path). Update with the router.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/metrics"),
    ("get", "/v1/openapi.yaml"),
    ("post", "/v1/login"),
    ("post", "/v1/logout"),
    ("get", "/v1/whoami"),
    ("post", "/v1/users"),
    ("get", "/v1/users"),
    ("get", "/v1/workspaces"),
    ("post", "/v1/workspaces"),
    ("get", "/v1/workspaces/{ws}"),
    ("delete", "/v1/workspaces/{ws}"),
    ("get", "/v1/workspaces/{ws}/tokens"),
    ("post", "/v1/workspaces/{ws}/tokens"),
    ("post", "/v1/workspaces/{ws}/tokens/revoke"),
    ("put", "/v1/workspaces/{ws}/tokens/{id}/limits"),
    ("get", "/v1/workspaces/{ws}/limits"),
    ("put", "/v1/workspaces/{ws}/limits"),
    ("get", "/v1/workspaces/{ws}/audit"),
    ("get", "/v1/workspaces/{ws}/analytics"),
    ("get", "/v1/workspaces/{ws}/servers"),
    ("post", "/v1/workspaces/{ws}/servers"),
    ("delete", "/v1/workspaces/{ws}/servers/{server}"),
    ("patch", "/v1/workspaces/{ws}/servers/{server}"),
    ("get", "/v1/workspaces/{ws}/servers/{server}/tools"),
    ("put", "/v1/workspaces/{ws}/servers/{server}/tools/{tool}"),
    ("put", "/v1/workspaces/{ws}/servers/{server}/secrets/{name}"),
    (
        "delete",
        "/v1/workspaces/{ws}/servers/{server}/secrets/{name}",
    ),
    ("get", "/v1/workspaces/{ws}/secrets"),
    ("get", "/v1/packages"),
    ("post", "/v1/packages"),
    ("get", "/v1/packages/mine"),
    ("get", "/v1/packages/{owner}/{name}"),
    ("delete", "/v1/packages/{owner}/{name}"),
    ("get", "/v1/packages/{owner}/{name}/versions"),
    ("post", "/v1/workspaces/{ws}/packages"),
    ("get", "/v1/team"),
    ("post", "/v1/team/invitations"),
    ("post", "/v1/team/accept"),
    ("delete", "/v1/team/members/{who}"),
    ("get", "/v1/proxies"),
    ("get", "/v1/proxy/watch"),
    ("post", "/v1/proxy/status"),
    ("post", "/v1/proxy/usage"),
    ("post", "/v1/proxy/audit"),
];

const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

const ROUTER_SOURCE: &str = include_str!("mod.rs");

fn expected() -> BTreeSet<(String, String)> {
    let set: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(set.len(), ROUTES.len(), "ROUTES lists a route twice");
    set
}

/// The (method, path) pairs `openapi.yaml` documents.
fn documented() -> BTreeSet<(String, String)> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml parses");
    assert_eq!(
        doc["openapi"].as_str(),
        Some("3.1.0"),
        "openapi.yaml must be OpenAPI 3.1.0"
    );
    let paths = doc["paths"].as_mapping().expect("openapi.yaml has paths");
    let mut out = BTreeSet::new();
    for (path, item) in paths {
        let path = path.as_str().expect("path keys are strings");
        let item = item.as_mapping().expect("path items are mappings");
        for key in item.keys() {
            let key = key.as_str().expect("path item keys are strings");
            if METHODS.contains(&key) {
                out.insert((key.to_string(), path.to_string()));
            }
        }
    }
    out
}

/// The (method, path) pairs read from the text of `router()` in mod.rs: each
/// `.route("path", get(..).post(..))` call, split on method-router calls.
fn routed_in_source() -> BTreeSet<(String, String)> {
    let start = ROUTER_SOURCE
        .find("pub fn router(")
        .expect("mod.rs defines router()");
    let body = &ROUTER_SOURCE[start..];
    let end = body
        .find(".with_state(")
        .expect("router() ends with with_state");
    let body = &body[..end];
    let mut out = BTreeSet::new();
    for call in body.split(".route(").skip(1) {
        let path = call
            .split('"')
            .nth(1)
            .expect("each .route( starts with a path literal");
        let rest = &call[call.find(',').expect("route has a handler")..];
        for method in METHODS {
            let needle = format!("{method}(");
            for (at, _) in rest.match_indices(&needle) {
                let before = rest[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                    out.insert((method.to_string(), path.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn openapi_documents_exactly_the_routes() {
    let expected = expected();
    let documented = documented();
    let missing: Vec<_> = expected.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "openapi.yaml and the router differ.\n  routed but not documented: {missing:?}\n  documented but not routed: {extra:?}"
    );
}

#[test]
fn openapi_routes_table_mirrors_the_router() {
    for (_, path) in ROUTES {
        assert!(
            ROUTER_SOURCE.contains(&format!("\"{path}\"")),
            "route {path:?} is not in api/mod.rs"
        );
    }
    let routed = routed_in_source();
    let expected = expected();
    let missing: Vec<_> = routed.difference(&expected).collect();
    let extra: Vec<_> = expected.difference(&routed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ROUTES and router() differ.\n  in router() but not ROUTES: {missing:?}\n  in ROUTES but not router(): {extra:?}"
    );
}
