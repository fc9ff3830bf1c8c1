//! What the property tests share: how many cases each runs.

use proptest::test_runner::Config;

/// `cases` cases, unless `PROPTEST_CASES` asks for another number (a longer hunt:
/// `PROPTEST_CASES=100000 cargo test -p gatehouse-mcp --tests`).
pub fn cases(cases: u32) -> Config {
    let mut config = Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}
