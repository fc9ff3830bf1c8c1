//! Keys and random credentials: the master key that seals secrets at rest, and the
//! generators of tokens and ids.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};

/// Seals values at rest (secrets, session keys, the JWT key) with AES-256-GCM. The
/// associated data binds a sealed value to where it is stored, so a ciphertext copied
/// to another row does not open.
pub struct MasterKey {
    cipher: Aes256Gcm,
}

impl MasterKey {
    /// From `GATEHOUSE_MASTER_KEY` (base64 of 32 bytes) if set, else the file
    /// `master.key` in the data dir, created (mode 0600) on first start.
    pub fn load_or_create(data_dir: &Path) -> anyhow::Result<MasterKey> {
        if let Ok(text) = std::env::var("GATEHOUSE_MASTER_KEY") {
            return Self::from_base64(text.trim())
                .map_err(|e| anyhow::anyhow!("GATEHOUSE_MASTER_KEY: {e}"));
        }
        let path = data_dir.join("master.key");
        if path.exists() {
            let text = std::fs::read_to_string(&path)?;
            return Self::from_base64(text.trim())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()));
        }
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        write_private(&path, STANDARD.encode(key).as_bytes())?;
        Ok(MasterKey {
            cipher: Aes256Gcm::new_from_slice(&key).expect("32 bytes"),
        })
    }

    fn from_base64(text: &str) -> anyhow::Result<MasterKey> {
        let bytes = STANDARD.decode(text)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes)
            .map_err(|_| anyhow::anyhow!("must be 32 bytes, base64"))?;
        Ok(MasterKey { cipher })
    }

    pub fn seal(&self, plain: &[u8], bound_to: &str) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: plain,
                        aad: bound_to.as_bytes(),
                    },
                )
                .expect("sealing a small value cannot fail"),
        );
        out
    }

    pub fn open(&self, sealed: &[u8], bound_to: &str) -> anyhow::Result<Vec<u8>> {
        anyhow::ensure!(sealed.len() > 12, "sealed value is truncated");
        let (nonce, body) = sealed.split_at(12);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: bound_to.as_bytes(),
                },
            )
            .map_err(|_| {
                anyhow::anyhow!("sealed value for {bound_to} does not open with this master key")
            })
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)
}

/// `prefix` + 43 base62 characters (~256 bits).
pub fn random_token(prefix: &str) -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

/// A short random id for rows.
pub fn random_id(prefix: &str) -> String {
    let mut bytes = [0u8; 10];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// 32 random bytes, base64: a session key or signing key.
pub fn random_key() -> String {
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    STANDARD.encode(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_where_they_were_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal(b"ghp_secret", "srv_1/GITHUB_TOKEN");
        assert!(!sealed.windows(10).any(|w| w == b"ghp_secret"));
        assert_eq!(
            key.open(&sealed, "srv_1/GITHUB_TOKEN").unwrap(),
            b"ghp_secret"
        );
        assert!(key.open(&sealed, "srv_2/GITHUB_TOKEN").is_err());
        // The same data dir gives the same key back.
        let again = MasterKey::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.open(&sealed, "srv_1/GITHUB_TOKEN").unwrap(),
            b"ghp_secret"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = random_token("mwt_");
        assert_eq!(t.len(), 47);
        assert!(t[4..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(t, random_token("mwt_"));
    }
}
