//! Any session id or relayed request id a client sends: opening it never panics,
//! and nothing but what the gateway sealed opens.
#![no_main]

use base64::Engine;
use gatehouse_config::{Secret, SessionKey};
use gatehouse_mcp::envelope::SessionKeys;
use gatehouse_mcp::relay::open_id;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let keys = SessionKeys::from_config(&[SessionKey {
        id: "k1".into(),
        key: Secret::new(base64::engine::general_purpose::STANDARD.encode([7u8; 32])),
    }])
    .unwrap();
    assert!(keys.open(text).is_err(), "a forged session id opened");
    assert!(keys.open_bytes(text).is_err());
    assert!(open_id(&keys, [0; 16], text).is_none());
});
