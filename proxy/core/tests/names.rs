//! Properties of tool naming: every tool of every server gets a name clients accept,
//! the same one every time, that starts with its server's prefix and that the
//! workspace's catalog routes back to exactly that server and tool, however long or
//! odd the upstream's own name is.

mod common;

use std::sync::Arc;

use gatehouse_config::naming::{
    exposed_name, is_valid_exposed_name, split_exposed, MAX_TOOL_NAME_LEN, SEPARATOR,
};
use gatehouse_config::policy::CompiledPolicy;
use gatehouse_config::ToolPolicy;
use gatehouse_mcp::catalog::{ServerTools, ToolCatalog};
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;
use serde_json::json;

/// A server slug: `^[a-z0-9][a-z0-9-]{0,31}$`.
fn slug() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,31}"
}

/// An upstream's tool name: anything, often plain, sometimes long or not ASCII.
fn tool() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_.-]{1,40}",
        "[A-Za-z0-9_.-]{40,120}",
        ".{1,80}",
        "[a-z ]{1,10}(/|:|é|💥)[a-z]{0,70}",
    ]
}

proptest! {
    #![proptest_config(common::cases(512))]

    #[test]
    fn every_exposed_name_is_valid_prefixed_and_stable(server in slug(), tool in tool()) {
        let name = exposed_name(&server, &tool);
        prop_assert!(is_valid_exposed_name(&name), "{name:?}");
        prop_assert!(name.len() <= MAX_TOOL_NAME_LEN);
        let prefix = format!("{server}{SEPARATOR}");
        prop_assert!(name.starts_with(&prefix), "{name:?}");
        prop_assert_eq!(split_exposed(&name).map(|(s, _)| s), Some(server.as_str()));
        prop_assert_eq!(&name, &exposed_name(&server, &tool));
        let plain = format!("{prefix}{tool}");
        if is_valid_exposed_name(&plain) {
            prop_assert_eq!(name, plain);
        }
    }

    #[test]
    fn the_catalog_routes_every_exposed_name_back_to_its_server_and_tool(
        servers in vec((slug(), btree_set(tool(), 1..12)), 1..4),
    ) {
        let open = CompiledPolicy::compile(&ToolPolicy::default()).unwrap();
        let none = std::collections::BTreeMap::new();
        let mut seen = std::collections::BTreeSet::new();
        let servers: Vec<_> = servers.into_iter().filter(|(s, _)| seen.insert(s.clone())).collect();
        let parts: Vec<ServerTools> = servers
            .iter()
            .map(|(server, tools)| ServerTools {
                server,
                bare: false,
                policy: &open,
                overrides: &none,
                tools: Some(Arc::new(
                    tools.iter().map(|t| json!({"name": t, "inputSchema": {"type": "object"}})).collect(),
                )),
            })
            .collect();
        let catalog = ToolCatalog::build(1, &parts);
        let listed: serde_json::Value = serde_json::from_slice(&catalog.rendered).unwrap();
        let listed: Vec<&str> = listed["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let total: usize = servers.iter().map(|(_, t)| t.len()).sum();
        prop_assert_eq!(listed.len() + catalog.collisions.len(), total);
        prop_assert_eq!(catalog.len(), listed.len());
        for (server, tools) in &servers {
            for tool in tools {
                let name = exposed_name(server, tool);
                let route = catalog.route(&name).expect("every exposed name routes");
                let collided = catalog
                    .collisions
                    .iter()
                    .any(|c| &c.server == server && &c.tool == tool);
                if collided {
                    // Left out, and the name it would have had leads to the tool
                    // that has it, never to nowhere.
                    prop_assert!(route.upstream_name != *tool || route.server != *server);
                } else {
                    prop_assert_eq!(&route.server, server);
                    prop_assert_eq!(&route.upstream_name, tool);
                    prop_assert!(listed.contains(&name.as_str()));
                }
            }
        }
    }
}
