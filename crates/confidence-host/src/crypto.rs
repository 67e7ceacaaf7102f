//! The CDN's cryptography (docs/state-cdn.md): the state URL's path is the SHA-256 of the
//! client secret, and an encrypted state is AES-256-GCM `nonce ‖ ciphertext ‖ tag` with no
//! associated data. Also installs the process-wide TLS crypto provider HTTP clients need.

use std::fmt;
use std::str::FromStr;
use std::sync::Once;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sha2::{Digest, Sha256};

/// Bytes of the AES-GCM nonce at the start of an encrypted body.
pub const NONCE_LEN: usize = 12;
/// Bytes of the GCM tag at the end of an encrypted body.
pub const TAG_LEN: usize = 16;
/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;

/// What can go wrong with a key or an encrypted state. Messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The key is not 64 characters long.
    #[error("encryption key must be {expected} hexadecimal characters (32 bytes), got {found} characters")]
    KeyLength { expected: usize, found: usize },
    /// The key has a character outside `0-9a-fA-F`.
    #[error("encryption key must be hexadecimal; found a non-hex character at position {position}")]
    KeyNotHex { position: usize },
    /// The body cannot even hold a nonce and a tag.
    #[error("encrypted state too short: {len} bytes, need at least {min}", min = NONCE_LEN + TAG_LEN)]
    TooShort { len: usize },
    /// Wrong key, or the body was altered or cut (the GCM tag does not match).
    #[error("cannot decrypt state: authentication tag mismatch (wrong encryption key or corrupted body)")]
    TagMismatch,
}

/// The path under the CDN base for `secret`: lowercase hex SHA-256 of its UTF-8 bytes, plus
/// `.enc` when the state is fetched encrypted. The secret is used verbatim (no trimming).
pub fn state_path(secret: &str, encrypted: bool) -> String {
    let mut path = hex::encode(Sha256::digest(secret.as_bytes()));
    if encrypted {
        path.push_str(".enc");
    }
    path
}

/// An AES-256 key for the CDN state. `Debug` never shows the key, so configs holding one can
/// be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct StateKey([u8; KEY_LEN]);

impl StateKey {
    /// Parses the 64-hex-character form shown in Confidence's admin UI (either case, no
    /// surrounding whitespace).
    pub fn from_hex(hex_key: &str) -> Result<Self, CryptoError> {
        if let Some(position) = hex_key.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(CryptoError::KeyNotHex { position });
        }
        if hex_key.len() != KEY_LEN * 2 {
            return Err(CryptoError::KeyLength { expected: KEY_LEN * 2, found: hex_key.len() });
        }
        let mut key = [0u8; KEY_LEN];
        // Every character was checked above and the length is right, so this cannot fail; map
        // the error anyway rather than panic.
        hex::decode_to_slice(hex_key, &mut key).map_err(|_| CryptoError::KeyNotHex { position: 0 })?;
        Ok(StateKey(key))
    }

    /// A key from raw bytes.
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        StateKey(key)
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&self.0))
    }
}

impl FromStr for StateKey {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StateKey::from_hex(s)
    }
}

impl fmt::Debug for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateKey(<redacted>)")
    }
}

/// Decrypts a CDN body `nonce (12) ‖ ciphertext ‖ tag (16)` into the serialized
/// `ClientResolverState`.
pub fn decrypt_state(key: &StateKey, body: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if body.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::TooShort { len: body.len() });
    }
    let (nonce, ciphertext_and_tag) = body.split_at(NONCE_LEN);
    key.cipher().decrypt(Nonce::from_slice(nonce), ciphertext_and_tag).map_err(|_| CryptoError::TagMismatch)
}

/// The inverse of [`decrypt_state`], for tests and the fake CDN.
///
/// # Panics
/// Only if `plaintext` exceeds AES-GCM's limit of about 64 GiB.
pub fn encrypt_state(key: &StateKey, nonce: [u8; NONCE_LEN], plaintext: &[u8]) -> Vec<u8> {
    let sealed = key
        .cipher()
        .encrypt(Nonce::from_slice(&nonce), plaintext)
        .unwrap_or_else(|_| panic!("AES-GCM refuses a {}-byte plaintext", plaintext.len()));
    let mut body = Vec::with_capacity(NONCE_LEN + sealed.len());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&sealed);
    body
}

/// Installs rustls' ring provider as the process default, once. The HTTP client is built
/// without a built-in provider (no aws-lc C build), so call this before building any
/// `reqwest::Client`. Harmless when another provider was installed first.
pub fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "342b666ceb14fb94ed1d7da0a85acb529ca2a244c3193c6b02251044a454f4a2";

    #[test]
    fn state_path_matches_the_spec_example() {
        let digest = "4f16fdeb84f9ef7b2b0127ed4b2c255dd82e2ac7b56c441c9c9fce8991a76207";
        assert_eq!(state_path("my-client-secret", false), digest);
        assert_eq!(state_path("my-client-secret", true), format!("{digest}.enc"));
    }

    #[test]
    fn key_parsing_reports_clear_errors() {
        assert!(StateKey::from_hex(KEY_HEX).is_ok());
        assert!(StateKey::from_hex(&KEY_HEX.to_uppercase()).is_ok());
        assert_eq!(StateKey::from_hex(&KEY_HEX[..62]), Err(CryptoError::KeyLength { expected: 64, found: 62 }));
        let bad = format!("{}zz", &KEY_HEX[..62]);
        assert_eq!(StateKey::from_hex(&bad), Err(CryptoError::KeyNotHex { position: 62 }));
        assert_eq!(StateKey::from_hex(""), Err(CryptoError::KeyLength { expected: 64, found: 0 }));
        let with_newline = format!("{KEY_HEX}\n");
        assert!(matches!(StateKey::from_hex(&with_newline), Err(CryptoError::KeyNotHex { position: 64 })));
    }

    #[test]
    fn debug_and_errors_never_show_the_key() {
        let key = StateKey::from_hex(KEY_HEX).unwrap();
        let shown = format!("{key:?}");
        assert!(!shown.contains("342b"), "{shown}");
        let err = StateKey::from_hex(&KEY_HEX[..63]).unwrap_err().to_string();
        assert!(!err.contains("342b"), "{err}");
    }

    #[test]
    fn round_trip_and_failures() {
        let key = StateKey::from_hex(KEY_HEX).unwrap();
        let body = encrypt_state(&key, [7; 12], b"hello state");
        assert_eq!(body.len(), 12 + 11 + 16);
        assert_eq!(&body[..12], &[7; 12]);
        assert_eq!(decrypt_state(&key, &body).unwrap(), b"hello state");

        let other = StateKey::from_bytes([1; 32]);
        assert_eq!(decrypt_state(&other, &body), Err(CryptoError::TagMismatch));
        let mut flipped = body.clone();
        flipped[15] ^= 1;
        assert_eq!(decrypt_state(&key, &flipped), Err(CryptoError::TagMismatch));
        assert_eq!(decrypt_state(&key, &body[..27]), Err(CryptoError::TooShort { len: 27 }));
        assert!(decrypt_state(&key, &body[..27]).unwrap_err().to_string().contains("encrypted state too short"));
        // An empty plaintext is the smallest valid body.
        assert_eq!(decrypt_state(&key, &encrypt_state(&key, [0; 12], b"")).unwrap(), b"");
    }
}
