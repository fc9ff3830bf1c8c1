//! Any config file a proxy is pointed at (first byte: 0 for JSON, else YAML): reading
//! and validating it never panics, and a JSON config that loads writes back to one
//! that loads the same.
#![no_main]

use std::path::Path;

use gatehouse_config::{parse, Format};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let format = if first == 0 { Format::Json } else { Format::Yaml };
    let Ok(snapshot) = parse(text, format, Path::new("fuzz.yaml")) else {
        return;
    };
    if format == Format::Json {
        let written = serde_json::to_string(&snapshot).unwrap();
        let again = parse(&written, Format::Json, Path::new("fuzz.json"))
            .expect("a config that loaded, written back, loads");
        assert_eq!(again, snapshot);
    }
});
