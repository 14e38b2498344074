//! The optional backup key: an HMAC-SHA-256 that only its holder can compute.
//!
//! The SHA-256 line of a backup detects damage (a cut, a flipped bit) but not an edit: anyone
//! who can write the file can recompute it. With a key configured, every backup also carries
//! `-- hmac-sha256: ...` over the same bytes, and verify, list, rotation and restore accept
//! only files whose HMAC matches, so someone who can write the backup folder but does not hold
//! the key cannot make a file that job_manager will restore or count as a backup.
//!
//! The key comes from `$JOB_MANAGER_BACKUP_KEY_FILE` (a file holding it, for Docker or
//! Kubernetes secrets) or `$JOB_MANAGER_BACKUP_KEY`; it is never logged or shown.

use hmac::{KeyInit, Mac};

use crate::errors::{Error, Result};

pub type HmacSha256 = hmac::Hmac<sha2::Sha256>;

pub const KEY_ENV: &str = "JOB_MANAGER_BACKUP_KEY";
pub const KEY_FILE_ENV: &str = "JOB_MANAGER_BACKUP_KEY_FILE";
/// The shortest key accepted: 16 bytes (128 bits).
pub const MIN_KEY_LEN: usize = 16;

/// A backup key. `Debug` never shows it.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(***)")
    }
}

impl Key {
    pub fn new(bytes: &[u8], source: &str) -> Result<Self> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(Error::Configuration(format!(
                "the backup key from {source} is {} bytes long; use at least {MIN_KEY_LEN} random \
                 bytes (for example the output of `openssl rand -hex 32`)",
                bytes.len()
            )));
        }
        Ok(Key(bytes.to_vec()))
    }

    /// The key configured in the environment, if any.
    pub fn from_env() -> Result<Option<Self>> {
        if let Some(path) = std::env::var_os(KEY_FILE_ENV).filter(|p| !p.is_empty()) {
            let text = std::fs::read(&path).map_err(|e| {
                Error::Configuration(format!(
                    "cannot read the backup key file named by {KEY_FILE_ENV} ({}): {e}",
                    std::path::Path::new(&path).display()
                ))
            })?;
            let trimmed = text.trim_ascii();
            return Key::new(trimmed, KEY_FILE_ENV).map(Some);
        }
        match std::env::var_os(KEY_ENV) {
            Some(v) if !v.is_empty() => {
                Key::new(v.as_encoded_bytes().trim_ascii(), KEY_ENV).map(Some)
            }
            _ => Ok(None),
        }
    }

    pub fn mac(&self) -> HmacSha256 {
        <HmacSha256 as KeyInit>::new_from_slice(&self.0).expect("HMAC takes a key of any length")
    }
}

/// Checks `mac` against the hex digest of a file, in constant time.
pub fn matches(mac: HmacSha256, hex_digest: &str) -> bool {
    hex::decode(hex_digest).is_ok_and(|tag| mac.verify_slice(&tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_refused_and_keys_are_never_shown() {
        assert!(matches!(
            Key::new(b"short", "test"),
            Err(Error::Configuration(_))
        ));
        let k = Key::new(b"0123456789abcdef0123", "test").unwrap();
        assert_eq!(format!("{k:?}"), "Key(***)");
    }

    #[test]
    fn hmac_matches_only_its_own_digest() {
        let k = Key::new(b"0123456789abcdef0123", "test").unwrap();
        let mut m = k.mac();
        m.update(b"data");
        let digest = hex::encode(m.finalize().into_bytes());
        let mut again = k.mac();
        again.update(b"data");
        assert!(matches(again, &digest));
        let mut other = k.mac();
        other.update(b"date");
        assert!(!matches(other, &digest));
        assert!(!matches(k.mac(), "zz"));
    }
}
