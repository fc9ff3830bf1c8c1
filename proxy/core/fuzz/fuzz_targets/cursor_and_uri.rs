//! Any list cursor or resource URI a client sends: decoding and routing never panic,
//! and what they accept maps back to the same text's meaning.
#![no_main]

use gatehouse_mcp::cursor::ListCursor;
use gatehouse_mcp::uris::{expose, route};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(cursor) = ListCursor::decode(text) {
        assert_eq!(ListCursor::decode(&cursor.encode()), Ok(cursor));
    }
    if let Some((server, uri)) = route(text) {
        assert_eq!(expose(server, uri), text);
    }
});
