//! Properties of the `tools/call` splice: for any body a client may send — any other
//! fields, in any order, with nested `name` keys, any spacing, the tool name in any
//! JSON spelling — finding the name and splicing another in changes the bytes of
//! that string literal and nothing else, and the result says the new name.

mod common;

use gatehouse_mcp::jsonrpc::{parse, splice_name, tool_name, Parsed};
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use serde_json::Value;

/// Any JSON value, a few levels deep, its objects sometimes holding `name` keys of
/// their own (which must never be taken for the tool name).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            hash_map(
                prop_oneof!["name".prop_map(String::from), "[a-z_]{1,8}"],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `text` as a JSON string literal, each character escaped as `\uXXXX` where
/// `escape` says so (any JSON writer may spell it so).
fn literal(text: &str, escape: &[bool]) -> String {
    let mut out = String::from("\"");
    for (i, c) in text.chars().enumerate() {
        let plain = serde_json::to_string(&c.to_string()).unwrap();
        let plain = &plain[1..plain.len() - 1];
        if escape.get(i).copied().unwrap_or(false) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push_str(plain);
        }
    }
    out.push('"');
    out
}

/// JSON whitespace, possibly none.
fn space() -> impl Strategy<Value = String> {
    "[ \t\r\n]{0,3}"
}

#[derive(Debug, Clone)]
struct Call {
    body: Vec<u8>,
    name: String,
}

fn call() -> impl Strategy<Value = Call> {
    (
        vec(("[a-z_]{1,10}".prop_filter("not name", |k| k != "name"), json_value()), 0..5),
        ".{0,40}",
        vec(any::<bool>(), 40),
        any::<usize>(),
        vec(space(), 12),
        prop_oneof![any::<i64>().prop_map(|i| i.to_string()), "\"[a-z0-9-]{0,8}\""],
    )
        .prop_map(|(others, name, escape, at, ws, id)| {
            let mut fields: Vec<String> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            for (key, value) in others {
                if seen.insert(key.clone()) {
                    fields.push(format!(
                        "{}{}:{}{}",
                        serde_json::to_string(&key).unwrap(),
                        ws[0],
                        ws[1],
                        value
                    ));
                }
            }
            let at = at % (fields.len() + 1);
            fields.insert(at, format!("\"name\"{}:{}{}", ws[2], ws[3], literal(&name, &escape)));
            let params = format!("{{{}{}{}}}", ws[4], fields.join(&format!(",{}", ws[5])), ws[6]);
            let body = format!(
                "{}{{\"jsonrpc\":\"2.0\",{}\"id\":{id},\"method\":\"tools/call\",{}\"params\":{}{}}}{}",
                ws[7], ws[8], ws[9], ws[10], params, ws[11]
            );
            Call {
                body: body.into_bytes(),
                name,
            }
        })
}

proptest! {
    #![proptest_config(common::cases(1024))]

    #[test]
    fn splice_changes_the_name_literal_and_no_other_byte(call in call(), new in ".{0,40}") {
        let body = &call.body;
        let Ok(Parsed::Request(msg)) = parse(body) else {
            return Err(TestCaseError::fail(format!("not a request: {}", String::from_utf8_lossy(body))));
        };
        let found = tool_name(body, msg.params.expect("params")).expect("a tool name");
        prop_assert_eq!(&found.name, &call.name);
        // The span is exactly a JSON string literal spelling the name.
        let spelled: String = serde_json::from_slice(&body[found.span.clone()]).unwrap();
        prop_assert_eq!(&spelled, &call.name);

        let out = splice_name(body, found.span.clone(), &new);
        let written = serde_json::to_string(&new).unwrap();
        let end = found.span.start + written.len();
        prop_assert_eq!(&out[..found.span.start], &body[..found.span.start]);
        prop_assert_eq!(&out[found.span.start..end], written.as_bytes());
        prop_assert_eq!(&out[end..], &body[found.span.end..]);

        // The result is the same message with only params.name changed.
        let Ok(Parsed::Request(again)) = parse(&out) else {
            return Err(TestCaseError::fail("the spliced body is not a request"));
        };
        let renamed = tool_name(&out, again.params.unwrap()).unwrap();
        prop_assert_eq!(renamed.name, new.as_str());
        let mut expected: Value = serde_json::from_slice(body).unwrap();
        expected["params"]["name"] = Value::String(new.clone());
        let got: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(got, expected);
    }
}
