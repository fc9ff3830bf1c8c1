//! Any request body: reading it never panics, and splicing a found tool name keeps
//! every byte outside the name's literal.
#![no_main]

use gatehouse_mcp::jsonrpc::{parse, splice_name, tool_name, Parsed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok(Parsed::Request(msg)) = parse(body) else {
        return;
    };
    let Some(params) = msg.params else { return };
    let Some(found) = tool_name(body, params) else {
        return;
    };
    let out = splice_name(body, found.span.clone(), "renamed");
    let literal = b"\"renamed\"";
    assert_eq!(&out[..found.span.start], &body[..found.span.start]);
    assert_eq!(
        &out[found.span.start..found.span.start + literal.len()],
        literal
    );
    assert_eq!(
        &out[found.span.start + literal.len()..],
        &body[found.span.end..]
    );
});
