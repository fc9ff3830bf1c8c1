//! Properties of the sealed session id and the gateway's other sealed ids: what is
//! sealed opens to exactly itself, with any of the configured keys; and flipping any
//! single bit of a sealed id — of its bytes, or of a character of its text — makes
//! it refused, never opened to something else.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use gatehouse_config::{Secret, SessionKey};
use gatehouse_mcp::envelope::{SessionEnvelope, SessionKeys, UpstreamSession};
use gatehouse_mcp::relay::{open_id, Relay, RELAY_ID_PREFIX};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

fn keys_of(raw: &[[u8; 32]]) -> SessionKeys {
    let config: Vec<SessionKey> = raw
        .iter()
        .enumerate()
        .map(|(i, key)| SessionKey {
            id: format!("k{i}"),
            key: Secret::new(STANDARD.encode(key)),
        })
        .collect();
    SessionKeys::from_config(&config).unwrap()
}

fn envelope() -> impl Strategy<Value = SessionEnvelope> {
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        ".{0,40}",
        ".{0,40}",
        ".{0,20}",
        ".{0,300}",
        vec(
            ("[a-z0-9][a-z0-9-]{0,31}", option::of(".{0,80}"), ".{0,20}"),
            0..6,
        ),
    )
        .prop_map(
            |(sid, issued_at, workspace, token_id, client_version, client_init, ups)| {
                SessionEnvelope {
                    sid,
                    issued_at,
                    workspace,
                    token_id,
                    client_version,
                    client_init,
                    upstreams: ups
                        .into_iter()
                        .map(|(server, session_id, protocol_version)| UpstreamSession {
                            server,
                            session_id,
                            protocol_version,
                        })
                        .collect(),
                }
            },
        )
}

proptest! {
    #![proptest_config(common::cases(256))]

    #[test]
    fn an_envelope_opens_to_itself_with_any_configured_key(
        e in envelope(),
        current in any::<[u8; 32]>(),
        older in any::<[u8; 32]>(),
    ) {
        let sealer = keys_of(&[older]);
        let rotated = keys_of(&[current, older]);
        let text = rotated.seal(&e);
        prop_assert_eq!(rotated.open(&text), Ok(e.clone()));
        // Sealed with the older key before a rotation: still opens after it.
        prop_assert_eq!(rotated.open(&sealer.seal(&e)), Ok(e));
    }

    #[test]
    fn any_single_bit_flip_of_the_sealed_bytes_is_refused(
        e in envelope(),
        key in any::<[u8; 32]>(),
        bit in any::<prop::sample::Index>(),
    ) {
        let keys = keys_of(&[key]);
        let mut wire = URL_SAFE_NO_PAD.decode(keys.seal(&e)).unwrap();
        let bit = bit.index(wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        let flipped = URL_SAFE_NO_PAD.encode(&wire);
        prop_assert!(keys.open(&flipped).is_err(), "bit {bit} of {} flipped and opened", wire.len() * 8);
    }

    #[test]
    fn any_single_bit_flip_of_the_text_is_refused(
        e in envelope(),
        key in any::<[u8; 32]>(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..7,
    ) {
        let keys = keys_of(&[key]);
        let text = keys.seal(&e);
        let mut bytes = text.clone().into_bytes();
        let at = at.index(bytes.len());
        bytes[at] ^= 1 << bit;
        // Still ASCII, so still a string; whatever it now says, it must not open.
        let flipped = String::from_utf8(bytes).unwrap();
        prop_assert!(
            keys.open(&flipped).is_err(),
            "{text:?} with bit {bit} of character {at} flipped ({flipped:?}) opened"
        );
    }

    #[test]
    fn a_relayed_request_id_opens_to_its_server_and_id_in_its_session_only(
        key in any::<[u8; 32]>(),
        sid in any::<[u8; 16]>(),
        other in any::<[u8; 16]>(),
        server in "[a-z0-9][a-z0-9-]{0,31}",
        original in prop_oneof![any::<i64>().prop_map(|i| i.to_string()), "\".{0,40}\""],
        bit in any::<prop::sample::Index>(),
    ) {
        let keys = keys_of(&[key]);
        let relay = Relay { keys: &keys, sid, server: &server, bare: false, complete_results: false };
        let id = relay.seal_id(&original);
        prop_assert!(id.starts_with(RELAY_ID_PREFIX));
        let target = open_id(&keys, sid, &id).expect("opens in its session");
        prop_assert_eq!(&target.server, &server);
        prop_assert_eq!(&target.original_id, &original);
        if other != sid {
            prop_assert_eq!(open_id(&keys, other, &id), None);
        }
        let mut wire = URL_SAFE_NO_PAD.decode(&id[RELAY_ID_PREFIX.len()..]).unwrap();
        let bit = bit.index(wire.len() * 8);
        wire[bit / 8] ^= 1 << (bit % 8);
        let flipped = format!("{RELAY_ID_PREFIX}{}", URL_SAFE_NO_PAD.encode(&wire));
        prop_assert_eq!(open_id(&keys, sid, &flipped), None);
    }
}
