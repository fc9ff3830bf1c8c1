//! Any upstream event stream, cut anywhere: splitting never panics, gives the same
//! blocks as the uncut stream, and loses no byte.
#![no_main]

use gatehouse_mcp::sse::SseSplitter;
use libfuzzer_sys::fuzz_target;

fn split(stream: &[u8], step: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
    let mut splitter = SseSplitter::default();
    let mut blocks = Vec::new();
    for chunk in stream.chunks(step.max(1)) {
        splitter.push(chunk);
        while let Some((raw, _)) = splitter.next_block() {
            blocks.push(raw.to_vec());
        }
    }
    (blocks, splitter.take_rest().to_vec())
}

fuzz_target!(|data: &[u8]| {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let whole = split(stream, stream.len());
    assert_eq!(split(stream, step as usize), whole);
    let joined: Vec<u8> = whole.0.concat().into_iter().chain(whole.1).collect();
    assert_eq!(joined, stream);
});
