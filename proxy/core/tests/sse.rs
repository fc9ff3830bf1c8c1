//! Properties of event-stream splitting: however the network cuts a stream into
//! chunks, the splitter returns the same blocks, and the blocks plus what is left
//! over are the stream, byte for byte.

mod common;

use gatehouse_mcp::sse::SseSplitter;
use proptest::collection::vec;
use proptest::prelude::*;

/// A stream of event-ish lines: fields, comments, blank lines, either line ending.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![
            "data: [ -~]{0,20}",
            "id: [a-z0-9]{0,6}",
            "event: [a-z]{0,8}",
            ": [ -~]{0,10}",
            Just(String::new()),
            "[ -~]{0,10}",
        ]
        .prop_flat_map(|line| {
            prop_oneof![Just("\n"), Just("\r\n")].prop_map(move |end| format!("{line}{end}"))
        }),
        0..30,
    )
    .prop_map(|lines| lines.concat().into_bytes())
}

fn split(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut splitter = SseSplitter::default();
    let mut blocks = Vec::new();
    let mut start = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    ends.push(stream.len());
    ends.sort_unstable();
    for end in ends {
        splitter.push(&stream[start..end]);
        start = end;
        while let Some((raw, _)) = splitter.next_block() {
            blocks.push(raw.to_vec());
        }
    }
    (blocks, splitter.take_rest().to_vec())
}

proptest! {
    #![proptest_config(common::cases(1024))]

    #[test]
    fn chunking_never_changes_the_blocks_and_no_byte_is_lost(
        stream in stream(),
        cuts in vec(any::<usize>(), 0..12),
    ) {
        let (whole, rest) = split(&stream, &[]);
        let (chunked, chunked_rest) = split(&stream, &cuts);
        prop_assert_eq!(&chunked, &whole);
        prop_assert_eq!(&chunked_rest, &rest);
        let joined: Vec<u8> = whole.concat().into_iter().chain(rest).collect();
        prop_assert_eq!(joined, stream);
    }
}
