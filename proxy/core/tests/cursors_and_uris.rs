//! Properties of the two opaque strings the gateway hands clients and reads back:
//! a list cursor decodes to exactly the cursor encoded (and any other text to an
//! error, never a panic), and a resource URI of any server maps back to exactly the
//! server and the upstream's URI, character for character.

mod common;

use gatehouse_mcp::cursor::ListCursor;
use gatehouse_mcp::uris::{expose, route, PREFIX};
use proptest::option;
use proptest::prelude::*;

fn slug() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9-]{0,31}"
}

proptest! {
    #![proptest_config(common::cases(1024))]

    #[test]
    fn a_cursor_decodes_to_the_cursor_encoded(
        server in ".{0,40}",
        upstream in option::of(".{0,200}"),
    ) {
        let cursor = ListCursor { server, upstream };
        let text = cursor.encode();
        prop_assert!(
            text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{text}"
        );
        prop_assert_eq!(ListCursor::decode(&text), Ok(cursor));
    }

    #[test]
    fn any_text_decodes_to_a_cursor_or_an_error(text in ".{0,120}") {
        if let Ok(cursor) = ListCursor::decode(&text) {
            // Only what some cursor encodes to (or a JSON spelling of one).
            prop_assert_eq!(ListCursor::decode(&cursor.encode()), Ok(cursor));
        }
    }

    #[test]
    fn an_exposed_uri_routes_back_to_its_server_and_uri(server in slug(), uri in ".{1,200}") {
        let exposed = expose(&server, &uri);
        prop_assert!(exposed.starts_with(PREFIX));
        prop_assert_eq!(route(&exposed), Some((server.as_str(), uri.as_str())));
    }

    #[test]
    fn routing_is_the_inverse_of_exposing_on_its_whole_domain(text in "(gatehouse://)?.{0,80}") {
        match route(&text) {
            Some((server, uri)) => prop_assert_eq!(expose(server, uri), text),
            None => prop_assert!(
                !text.starts_with(PREFIX)
                    || !text[PREFIX.len()..].contains('/')
                    || text[PREFIX.len()..].starts_with('/')
                    || text.ends_with('/') && text[PREFIX.len()..].matches('/').count() == 1
            ),
        }
    }
}
