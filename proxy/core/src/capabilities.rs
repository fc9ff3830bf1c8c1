//! The capabilities the gateway announces to a client: what it can route, given what
//! its upstreams said they can do at `initialize`.

use serde_json::{json, Value};

/// What the gateway can route, given what its upstreams offer: tools always (the
/// gateway itself announces changes to them), the rest when some upstream has it.
pub fn merged_capabilities(upstreams: &[Value]) -> Value {
    let any = |key: &str| upstreams.iter().any(|c| c.get(key).is_some());
    let mut out = json!({"tools": {"listChanged": true}});
    if any("prompts") {
        out["prompts"] = json!({"listChanged": true});
    }
    if any("resources") {
        out["resources"] = json!({"listChanged": true});
        let subscribe = upstreams
            .iter()
            .any(|c| c.pointer("/resources/subscribe") == Some(&Value::Bool(true)));
        if subscribe {
            out["resources"]["subscribe"] = Value::Bool(true);
        }
    }
    if any("completions") {
        out["completions"] = json!({});
    }
    if any("logging") {
        out["logging"] = json!({});
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_the_union_of_the_upstreams() {
        let merged = merged_capabilities(&[
            json!({"tools": {}}),
            json!({"prompts": {}, "resources": {"subscribe": true}, "logging": {}}),
            json!({"completions": {}}),
        ]);
        assert_eq!(
            merged,
            json!({
                "tools": {"listChanged": true},
                "prompts": {"listChanged": true},
                "resources": {"listChanged": true, "subscribe": true},
                "completions": {},
                "logging": {},
            })
        );
        assert_eq!(
            merged_capabilities(&[]),
            json!({"tools": {"listChanged": true}})
        );
    }
}
