//! The server's secret key file (`DATA/secret.key`, mode 0600, created on
//! first start): the key that signs access tokens and the AEAD key that
//! encrypts secrets at rest (TOTP seeds, channel passwords, API keys,
//! sensitive incident details).
//!
//! Architecture Invariant: key material and the secrets it protects never
//! reach a log line or an API answer.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::Error;

const KEY_BYTES: usize = 64;
const NONCE: usize = 24;

pub struct Keys {
    jwt: [u8; 32],
    aead: XChaCha20Poly1305,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system's random source failed");
    b
}

/// Lower-case hex of bytes.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Write a file whole: beside it first, then renamed over it, so a reader
/// (detection, the plugin watcher) never sees half of it.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

impl Keys {
    /// Load the key file, creating it (0600) when there is none. A file
    /// others may read, or of the wrong size, is refused.
    pub fn load_or_create(path: &Path) -> Result<Keys, Error> {
        let bad = |msg: String| Error::Key { path: path.display().to_string(), msg };
        if !path.exists() {
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d)?;
            }
            let key: [u8; KEY_BYTES] = random();
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
            f.write_all(&key)?;
            f.sync_all()?;
            tracing::info!(file = %path.display(), "created the server key file");
        }
        let meta = std::fs::metadata(path)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(bad(format!("mode {mode:o} lets others read it; chmod 600 it")));
        }
        let bytes = std::fs::read(path)?;
        if bytes.len() != KEY_BYTES {
            return Err(bad(format!("{} bytes, expected {KEY_BYTES}", bytes.len())));
        }
        Ok(Keys::from_bytes(&bytes))
    }

    fn from_bytes(b: &[u8]) -> Keys {
        let mut jwt = [0u8; 32];
        jwt.copy_from_slice(&b[..32]);
        let aead = XChaCha20Poly1305::new_from_slice(&b[32..64]).expect("32-byte key");
        Keys { jwt, aead }
    }

    pub fn jwt_key(&self) -> &[u8] {
        &self.jwt
    }

    /// Encrypt `plain`; `context` (e.g. `"totp:alice"`) binds the ciphertext
    /// to its place, so one row's secret cannot be pasted into another.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE] = random();
        let mut out = nonce.to_vec();
        let ct = self
            .aead
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plain, aad: context.as_bytes() })
            .expect("encryption of an in-memory buffer");
        out.extend_from_slice(&ct);
        out
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, Error> {
        if sealed.len() < NONCE {
            return Err(Error::Invalid("sealed secret too short".into()));
        }
        let (nonce, ct) = sealed.split_at(NONCE);
        self.aead
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: context.as_bytes() })
            .map_err(|_| Error::Invalid("a secret failed to decrypt (wrong key file, or tampered)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_secrets_round_trip_bound_to_their_context() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("secret.key");
        let k = Keys::load_or_create(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let s = k.seal("totp:alice", b"hunter2");
        assert!(!s.windows(7).any(|w| w == b"hunter2"));
        // The same file gives the same keys.
        let k2 = Keys::load_or_create(&p).unwrap();
        assert_eq!(k2.open("totp:alice", &s).unwrap(), b"hunter2");
        assert!(k2.open("totp:bob", &s).is_err());
        let mut t = s.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(k2.open("totp:alice", &t).is_err());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keys::load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
    }
}
