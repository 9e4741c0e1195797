//! The token cipher: XChaCha20-Poly1305 envelopes bound to their row and column.
//!
//! Envelope (base64, standard alphabet, in a TEXT column):
//! `version (1 byte = 1) ‖ key id (4 bytes) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`.
//! The key id is the first 4 bytes of SHA-256 of the key, so keys need no names and a rotation is
//! just "new key first, old keys listed for decryption". The AAD is the integration id and the
//! column name: a ciphertext copied to another row or column does not decrypt.
//!
//! Owns nothing but this format: no configuration parsing beyond decoding keys, no database.
//! Plaintext goes in and comes out only as `SecretString`; errors never contain key or token bytes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::{Zeroize, Zeroizing};

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// Which token column a ciphertext belongs to (part of the AAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    AccessToken,
    RefreshToken,
    /// A pending OAuth connection's PKCE verifier (`meetingd.oauth_states`).
    PkceVerifier,
}

impl Column {
    fn as_str(self) -> &'static str {
        match self {
            Column::AccessToken => "access_token",
            Column::RefreshToken => "refresh_token",
            Column::PkceVerifier => "pkce_verifier",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("an encryption key must be 32 bytes in base64 (generate one with `meetingd keys generate`): {0}")]
    BadKey(String),
    #[error("the stored value is not a meetingd ciphertext ({0})")]
    Malformed(&'static str),
    #[error("the stored value was encrypted with key {0}, which is not configured (add it to encryption.old_keys)")]
    UnknownKey(String),
    #[error("the stored value does not decrypt: it was altered, or belongs to another integration or column")]
    Tampered,
}

struct Key {
    id: [u8; KEY_ID_LEN],
    cipher: XChaCha20Poly1305,
}

impl Key {
    fn from_base64(encoded: &str) -> Result<Key, CryptoError> {
        let bytes = Zeroizing::new(
            STANDARD.decode(encoded.trim()).map_err(|e| CryptoError::BadKey(format!("not base64: {e}")))?,
        );
        if bytes.len() != 32 {
            return Err(CryptoError::BadKey(format!("decodes to {} bytes", bytes.len())));
        }
        let digest = Sha256::digest(&bytes[..]);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        let cipher =
            XChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey("wrong length".into()))?;
        Ok(Key { id, cipher })
    }
}

/// The current key (encrypts and decrypts) and older keys (decrypt only).
pub struct Keyring {
    current: Key,
    old: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &hex(&self.current.id))
            .field("old", &self.old.iter().map(|k| hex(&k.id)).collect::<Vec<_>>())
            .finish()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn aad(row: Uuid, column: Column) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + 1 + 13);
    aad.extend_from_slice(row.as_bytes());
    aad.push(b':');
    aad.extend_from_slice(column.as_str().as_bytes());
    aad
}

impl Keyring {
    /// Builds a keyring from base64 keys: the current one first, then keys kept for decryption.
    pub fn new(current: &SecretString, old: &[SecretString]) -> Result<Keyring, CryptoError> {
        Ok(Keyring {
            current: Key::from_base64(current.expose_secret())?,
            old: old.iter().map(|k| Key::from_base64(k.expose_secret())).collect::<Result<_, _>>()?,
        })
    }

    /// A new random key, base64.
    pub fn generate_key() -> SecretString {
        let mut key = XChaCha20Poly1305::generate_key(&mut OsRng);
        let encoded = SecretString::from(STANDARD.encode(key.as_slice()));
        key.as_mut_slice().zeroize();
        encoded
    }

    /// The current key's id, as shown in reports.
    pub fn current_key_id(&self) -> String {
        hex(&self.current.id)
    }

    pub fn encrypt(&self, plaintext: &SecretString, row: Uuid, column: Column) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = aad(row, column);
        let ciphertext = self
            .current
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.expose_secret().as_bytes(), aad: &aad })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory input");
        let mut envelope = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        envelope.push(VERSION);
        envelope.extend_from_slice(&self.current.id);
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&ciphertext);
        STANDARD.encode(envelope)
    }

    pub fn decrypt(&self, stored: &str, row: Uuid, column: Column) -> Result<SecretString, CryptoError> {
        let envelope = STANDARD.decode(stored.trim()).map_err(|_| CryptoError::Malformed("not base64"))?;
        if envelope.len() < HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("too short"));
        }
        if envelope[0] != VERSION {
            return Err(CryptoError::Malformed("unknown envelope version"));
        }
        let key_id = &envelope[1..1 + KEY_ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(hex(key_id)))?;
        let nonce = XNonce::from_slice(&envelope[1 + KEY_ID_LEN..HEADER_LEN]);
        let aad = aad(row, column);
        let plaintext = Zeroizing::new(
            key.cipher
                .decrypt(nonce, Payload { msg: &envelope[HEADER_LEN..], aad: &aad })
                .map_err(|_| CryptoError::Tampered)?,
        );
        let text = std::str::from_utf8(&plaintext).map_err(|_| CryptoError::Malformed("plaintext is not UTF-8"))?;
        Ok(SecretString::from(text.to_string()))
    }

    /// Whether `stored` is already encrypted with the current key (rotation skips it).
    pub fn is_current(&self, stored: &str) -> bool {
        STANDARD
            .decode(stored.trim())
            .ok()
            .is_some_and(|e| e.len() > HEADER_LEN && e[0] == VERSION && e[1..1 + KEY_ID_LEN] == self.current.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> Keyring {
        Keyring::new(&Keyring::generate_key(), &[]).unwrap()
    }

    #[test]
    fn round_trip_and_binding() {
        let k = ring();
        let row = Uuid::new_v4();
        let secret = SecretString::from("ya29.a0-token");
        let sealed = k.encrypt(&secret, row, Column::AccessToken);
        assert!(!sealed.contains("ya29"));
        assert_eq!(k.decrypt(&sealed, row, Column::AccessToken).unwrap().expose_secret(), "ya29.a0-token");
        assert_eq!(k.decrypt(&sealed, Uuid::new_v4(), Column::AccessToken).unwrap_err(), CryptoError::Tampered);
        assert_eq!(k.decrypt(&sealed, row, Column::RefreshToken).unwrap_err(), CryptoError::Tampered);
        assert_ne!(sealed, k.encrypt(&secret, row, Column::AccessToken), "fresh nonce each time");
    }

    #[test]
    fn wrong_or_rotated_keys() {
        let old_key = Keyring::generate_key();
        let old = Keyring::new(&old_key, &[]).unwrap();
        let row = Uuid::new_v4();
        let sealed = old.encrypt(&SecretString::from("r"), row, Column::RefreshToken);
        let other = ring();
        assert!(matches!(other.decrypt(&sealed, row, Column::RefreshToken), Err(CryptoError::UnknownKey(_))));
        let rotated = Keyring::new(&Keyring::generate_key(), &[old_key]).unwrap();
        assert_eq!(rotated.decrypt(&sealed, row, Column::RefreshToken).unwrap().expose_secret(), "r");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.encrypt(&SecretString::from("r"), row, Column::RefreshToken)));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let k = ring();
        let row = Uuid::new_v4();
        for junk in ["", "plaintext-token", "AAAA", &STANDARD.encode([1u8; 44]), &STANDARD.encode([2u8; 60])] {
            assert!(k.decrypt(junk, row, Column::AccessToken).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(matches!(Keyring::new(&SecretString::from("short"), &[]), Err(CryptoError::BadKey(_))));
        let sixteen = STANDARD.encode([7u8; 16]);
        let err = Keyring::new(&SecretString::from(sixteen), &[]).unwrap_err();
        assert_eq!(err, CryptoError::BadKey("decodes to 16 bytes".into()));
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips(text in ".{0,300}") {
            let k = ring();
            let row = Uuid::new_v4();
            let sealed = k.encrypt(&SecretString::from(text.clone()), row, Column::AccessToken);
            let opened = k.decrypt(&sealed, row, Column::AccessToken).unwrap();
            prop_assert_eq!(opened.expose_secret(), text.as_str());
        }

        #[test]
        fn any_flipped_bit_is_detected(text in ".{1,64}", bit in 0usize..10_000) {
            let k = ring();
            let row = Uuid::new_v4();
            let sealed = k.encrypt(&SecretString::from(text), row, Column::AccessToken);
            let mut raw = STANDARD.decode(&sealed).unwrap();
            let bit = bit % (raw.len() * 8);
            raw[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(k.decrypt(&STANDARD.encode(raw), row, Column::AccessToken).is_err());
        }
    }
}
