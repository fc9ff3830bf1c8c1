//! The client-facing `Mcp-Session-Id`: an AES-256-GCM sealed envelope of everything a
//! replica needs to continue a session — workspace, token, the client's negotiated
//! version and init parameters, and each upstream's session id and version. Any proxy
//! holding the key serves any session; nothing is stored per session.
//!
//! Wire form: base64url( key-fingerprint[4] | nonce[12] | ciphertext+tag ). The
//! fingerprint picks the key without trial decryption, so rotation costs nothing; it is
//! also authenticated as associated data. Every request opens one, so the base64 is
//! SIMD (`base64-simd`): the scalar engine took a third of seal+open.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use gatehouse_config::SessionKey;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use sha2::{Digest, Sha256};

const FORMAT: u8 = 1;
const FP_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// Where the plaintext (then ciphertext) starts in the wire bytes.
const BODY: usize = FP_LEN + NONCE_LEN;

/// What one client session is, sealed into its session id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnvelope {
    /// Random id of this client session (keys per-replica caches).
    pub sid: [u8; 16],
    pub issued_at: u64,
    pub workspace: String,
    pub token_id: String,
    /// Protocol version negotiated with the client.
    pub client_version: String,
    /// The client's `{"capabilities":..,"clientInfo":..}`, replayed when the gateway
    /// opens an upstream session later (a server added by a config change).
    pub client_init: String,
    pub upstreams: Vec<UpstreamSession>,
}

/// The gateway's session with one upstream, opened during `initialize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSession {
    pub server: String,
    pub session_id: Option<String>,
    pub protocol_version: String,
}

impl SessionEnvelope {
    pub fn upstream(&self, server: &str) -> Option<&UpstreamSession> {
        self.upstreams.iter().find(|u| u.server == server)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("session id is not base64url")]
    Encoding,
    #[error("session id was sealed with a key this proxy does not have")]
    UnknownKey,
    #[error("session id failed authentication")]
    Forged,
    #[error("session envelope is malformed")]
    Malformed,
}

/// The configured keys, ready to use: no derivation per request. AES-256-GCM comes
/// from `ring` (already linked for TLS): its AES-NI/VAES code seals and opens an
/// envelope several times faster than a portable implementation.
pub struct SessionKeys {
    keys: Vec<([u8; FP_LEN], LessSafeKey)>,
}

impl SessionKeys {
    pub fn from_config(keys: &[SessionKey]) -> anyhow::Result<SessionKeys> {
        let keys = keys
            .iter()
            .map(|k| {
                let bytes = STANDARD
                    .decode(k.key.expose())
                    .map_err(|_| anyhow::anyhow!("session key {}: not base64", k.id))?;
                let key = UnboundKey::new(&AES_256_GCM, &bytes)
                    .map_err(|_| anyhow::anyhow!("session key {}: must be 32 bytes", k.id))?;
                let digest = Sha256::digest(&bytes);
                Ok((
                    digest[..FP_LEN].try_into().expect("4 bytes"),
                    LessSafeKey::new(key),
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        anyhow::ensure!(!keys.is_empty(), "no session keys configured");
        Ok(SessionKeys { keys })
    }

    /// Seals with the first (current) key.
    pub fn seal(&self, envelope: &SessionEnvelope) -> String {
        self.seal_with(encoded_len(envelope), |out| encode(envelope, out))
    }

    pub fn open(&self, text: &str) -> Result<SessionEnvelope, EnvelopeError> {
        let mut wire = Vec::new();
        decode(self.open_in_place(text, &mut wire)?).ok_or(EnvelopeError::Malformed)
    }

    /// Seals any short plaintext the same way as an envelope (first key, fresh nonce,
    /// base64url): the gateway's own opaque tokens, such as the ids it gives
    /// server-to-client requests, use it so a client can neither read nor forge them.
    pub fn seal_bytes(&self, plain: &[u8]) -> String {
        self.seal_with(plain.len(), |out| out.extend_from_slice(plain))
    }

    /// Opens what [`seal_bytes`](Self::seal_bytes) produced with any configured key.
    pub fn open_bytes(&self, text: &str) -> Result<Vec<u8>, EnvelopeError> {
        let mut wire = Vec::new();
        let len = self.open_in_place(text, &mut wire)?.len();
        wire.truncate(BODY + len);
        wire.drain(..BODY);
        Ok(wire)
    }

    /// Writes key fingerprint, nonce and the plaintext `write` appends (about
    /// `plain_len` bytes) into one buffer, encrypts the plaintext where it lies and
    /// appends the tag: one allocation before the base64 text.
    fn seal_with(&self, plain_len: usize, write: impl FnOnce(&mut Vec<u8>)) -> String {
        let (fp, key) = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut wire = Vec::with_capacity(BODY + plain_len + TAG_LEN);
        wire.extend_from_slice(fp);
        wire.extend_from_slice(&nonce);
        write(&mut wire);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(fp),
                &mut wire[BODY..],
            )
            .expect("AES-GCM sealing of a small buffer cannot fail");
        wire.extend_from_slice(tag.as_ref());
        base64_simd::URL_SAFE_NO_PAD.encode_to_string(wire)
    }

    /// Decodes `text` into `wire` and decrypts it there with the key its fingerprint
    /// names; the plaintext, which starts at `wire[BODY..]`.
    fn open_in_place<'w>(
        &self,
        text: &str,
        wire: &'w mut Vec<u8>,
    ) -> Result<&'w [u8], EnvelopeError> {
        base64_simd::URL_SAFE_NO_PAD
            .decode_append(text, wire)
            .map_err(|_| EnvelopeError::Encoding)?;
        if wire.len() < BODY + TAG_LEN {
            return Err(EnvelopeError::Malformed);
        }
        let (head, sealed) = wire.split_at_mut(BODY);
        let (fp, nonce) = head.split_at(FP_LEN);
        let key = self
            .keys
            .iter()
            .find(|(k, _)| k == fp)
            .map(|(_, key)| key)
            .ok_or(EnvelopeError::UnknownKey)?;
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| EnvelopeError::Malformed)?;
        key.open_in_place(nonce, Aad::from(fp), sealed)
            .map(|plain| &*plain)
            .map_err(|_| EnvelopeError::Forged)
    }
}

/// The exact length [`encode`] writes.
fn encoded_len(e: &SessionEnvelope) -> usize {
    let s = |s: &str| 2 + s.len();
    1 + 16
        + 8
        + s(&e.workspace)
        + s(&e.token_id)
        + s(&e.client_version)
        + s(&e.client_init)
        + 1
        + e.upstreams
            .iter()
            .map(|u| {
                s(&u.server) + 1 + u.session_id.as_deref().map_or(0, s) + s(&u.protocol_version)
            })
            .sum::<usize>()
}

/// Appends the envelope's plaintext form to `out`.
fn encode(e: &SessionEnvelope, out: &mut Vec<u8>) {
    out.push(FORMAT);
    out.extend_from_slice(&e.sid);
    out.extend_from_slice(&e.issued_at.to_le_bytes());
    put_str(out, &e.workspace);
    put_str(out, &e.token_id);
    put_str(out, &e.client_version);
    put_str(out, &e.client_init);
    out.push(u8::try_from(e.upstreams.len()).expect("at most 255 servers per workspace"));
    for u in &e.upstreams {
        put_str(out, &u.server);
        match &u.session_id {
            Some(id) => {
                out.push(1);
                put_str(out, id);
            }
            None => out.push(0),
        }
        put_str(out, &u.protocol_version);
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).expect("envelope strings are short");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn string(&mut self) -> Option<String> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        std::str::from_utf8(self.take(len)?).ok().map(str::to_owned)
    }
}

fn decode(bytes: &[u8]) -> Option<SessionEnvelope> {
    let mut r = Reader(bytes);
    if r.byte()? != FORMAT {
        return None;
    }
    let sid = r.take(16)?.try_into().ok()?;
    let issued_at = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
    let workspace = r.string()?;
    let token_id = r.string()?;
    let client_version = r.string()?;
    let client_init = r.string()?;
    let n = r.byte()?;
    let mut upstreams = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let server = r.string()?;
        let session_id = match r.byte()? {
            0 => None,
            1 => Some(r.string()?),
            _ => return None,
        };
        upstreams.push(UpstreamSession {
            server,
            session_id,
            protocol_version: r.string()?,
        });
    }
    r.0.is_empty().then_some(SessionEnvelope {
        sid,
        issued_at,
        workspace,
        token_id,
        client_version,
        client_init,
        upstreams,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_config::Secret;

    fn keys(ids_and_bytes: &[(&str, u8)]) -> SessionKeys {
        let cfg: Vec<SessionKey> = ids_and_bytes
            .iter()
            .map(|(id, b)| SessionKey {
                id: id.to_string(),
                key: Secret::new(STANDARD.encode([*b; 32])),
            })
            .collect();
        SessionKeys::from_config(&cfg).unwrap()
    }

    pub(crate) fn sample() -> SessionEnvelope {
        SessionEnvelope {
            sid: [7; 16],
            issued_at: 1_700_000_000,
            workspace: "engineering".into(),
            token_id: "tok_alice".into(),
            client_version: "2025-06-18".into(),
            client_init: r#"{"capabilities":{},"clientInfo":{"name":"c","version":"1"}}"#.into(),
            upstreams: vec![
                UpstreamSession {
                    server: "github".into(),
                    session_id: Some("0f8fad5b-d9cb-469f-a165-70867728950e".into()),
                    protocol_version: "2025-06-18".into(),
                },
                UpstreamSession {
                    server: "stateless".into(),
                    session_id: None,
                    protocol_version: "2025-03-26".into(),
                },
            ],
        }
    }

    #[test]
    fn seal_open_round_trip_and_visible_ascii() {
        let k = keys(&[("k1", 1)]);
        let text = k.seal(&sample());
        assert!(text.bytes().all(|b| (0x21..=0x7e).contains(&b)));
        assert_eq!(k.open(&text).unwrap(), sample());
        // Fresh nonce every time.
        assert_ne!(text, k.seal(&sample()));
    }

    #[test]
    fn tampering_and_foreign_keys_are_refused() {
        let k = keys(&[("k1", 1)]);
        let text = k.seal(&sample());
        let mut bytes = text.into_bytes();
        let i = bytes.len() / 2;
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).unwrap();
        assert_eq!(k.open(&tampered), Err(EnvelopeError::Forged));
        assert_eq!(k.open("not base64 !"), Err(EnvelopeError::Encoding));
        assert_eq!(k.open("AAAA"), Err(EnvelopeError::Malformed));
        let other = keys(&[("k2", 2)]);
        assert_eq!(
            other.open(&k.seal(&sample())),
            Err(EnvelopeError::UnknownKey)
        );
    }

    /// Sealed by the aes-gcm crate before the switch to ring: proxies of either kind
    /// must keep serving each other's sessions during a rolling upgrade.
    #[test]
    fn sessions_sealed_before_the_ring_switch_still_open() {
        const SEALED: &str = "cs1uhDZS8-vYCqcQZw1Sdgn7TbiqDg8Q8sGPtEmj9gI-OdMAET7Oj8UgbqDaRnnYKgnIKaKo9vrP6rduai7XE2beoFxKWPaYSMvnm6UjV_f-S0eSOV78ryEr-9RY8EMxJ6iM9qFTeEQhqifd6fyI1KQyNbDue7ougsRF_lmcJimzhDDB4hOraDalYv74cyuBn18hDaz3q_8oNNRj_l9FIl_363GEw-ajbQDv1H-yJLjv81qHSHZj1DI1-kAMr0NSxYJyjzjqv6y5aCAFRrvLRVVbLqXKFnwzO53wgx_lV8z1YoqZ2dnx1W5lcjPyMA";
        assert_eq!(keys(&[("k1", 1)]).open(SEALED).unwrap(), sample());
    }

    #[test]
    fn sealed_bytes_round_trip_and_encoded_len_is_exact() {
        let k = keys(&[("k1", 1)]);
        assert_eq!(
            k.open_bytes(&k.seal_bytes(b"relay 42")).unwrap(),
            b"relay 42"
        );
        let mut out = Vec::new();
        encode(&sample(), &mut out);
        assert_eq!(out.len(), encoded_len(&sample()));
    }

    #[test]
    fn rotation_opens_sessions_sealed_with_an_older_key() {
        let old = keys(&[("k1", 1)]);
        let rotated = keys(&[("k2", 2), ("k1", 1)]);
        let text = old.seal(&sample());
        assert_eq!(rotated.open(&text).unwrap(), sample());
    }
}
