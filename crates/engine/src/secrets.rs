//! Encryption at rest for secrets the gateway must be able to read back (OAuth
//! refresh and access tokens): XChaCha20-Poly1305 with a 256-bit key that is
//! either given in `CALGATE_SECRET_KEY` (64 hex digits) or kept in
//! `<data_dir>/secret.key`, created with mode 0600 on first start.
//!
//! Passwords and API keys are not here: those are only ever verified, so they
//! are argon2-hashed (see the server's `auth` module).

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};

/// Environment variable that overrides the key file.
pub const KEY_ENV: &str = "CALGATE_SECRET_KEY";
const KEY_FILE: &str = "secret.key";
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{KEY_ENV} must be 64 hexadecimal digits (a 256-bit key)")]
    BadEnvKey,
    #[error("{path}: {message}")]
    KeyFile { path: String, message: String },
    #[error("a stored secret does not decrypt with this key (was the key changed?)")]
    Undecryptable,
}

/// Seals and opens secrets with the gateway's key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

impl SecretBox {
    /// The key from the environment, else from the data directory (made on first use).
    pub fn open(data_dir: &Path) -> Result<SecretBox, SecretError> {
        let key = match std::env::var(KEY_ENV) {
            Ok(hex_key) => decode_key(hex_key.trim()).ok_or(SecretError::BadEnvKey)?,
            Err(_) => key_file(&data_dir.join(KEY_FILE))?,
        };
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// `nonce || ciphertext+tag`.
    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plain)
            // Encryption fails only for plaintexts beyond 256 GiB.
            .expect("secret small enough to encrypt");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open_sealed(&self, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN {
            return Err(SecretError::Undecryptable);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(XNonce::from_slice(nonce), body)
            .map_err(|_| SecretError::Undecryptable)
    }
}

fn decode_key(text: &str) -> Option<[u8; 32]> {
    hex::decode(text).ok()?.try_into().ok()
}

fn key_file(path: &Path) -> Result<[u8; 32], SecretError> {
    let err = |message: String| SecretError::KeyFile {
        path: path.display().to_string(),
        message,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => decode_key(text.trim()).ok_or_else(|| err("not a 64-hex-digit key".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            rand::fill(&mut key);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            write_private(path, hex::encode(key).as_bytes()).map_err(|e| err(e.to_string()))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// Creates the file readable by its owner only (0600), failing if it exists.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretBox::open(dir.path()).unwrap();
        let sealed = a.seal(b"refresh-token");
        assert_ne!(&sealed[NONCE_LEN..], b"refresh-token");
        let b = SecretBox::open(dir.path()).unwrap();
        assert_eq!(b.open_sealed(&sealed).unwrap(), b"refresh-token");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let other = SecretBox::open(tempfile::tempdir().unwrap().path()).unwrap();
        assert!(other.open_sealed(&sealed).is_err());
    }
}
