//! The token cipher: XChaCha20-Poly1305 envelopes bound to what they belong to.
//!
//! Envelope (base64, standard alphabet, in a TEXT column):
//! `version (1 byte = 2) ‖ key id (4 bytes) ‖ nonce (24 bytes) ‖ ciphertext ‖ tag (16 bytes)`.
//! The key id is the first 4 bytes of SHA-256 of the key, so keys need no names and a rotation is
//! just "new key first, old keys listed for decryption". The AAD is the envelope's header, the row
//! id and the column name and, for an integration's tokens, the user and platform the row belongs
//! to ([`Owner`]): a ciphertext copied to another row or column, or a row moved to another user or
//! platform, does not decrypt.
//!
//! Version 1 envelopes (written before tokens were bound to their owner; AAD = row id and column)
//! are opened only by [`Keyring::decrypt_legacy`], which the upgrade pass (`admin.rs`) uses to
//! re-encrypt them; [`Keyring::decrypt`] refuses them for tokens.
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

/// Bound to row and column only: opened by the upgrade pass alone.
const LEGACY_VERSION: u8 = 1;
/// Bound to header, row, column and (tokens) owner.
const VERSION: u8 = 2;
const KEY_ID_LEN: usize = 4;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

/// Whom an integration's tokens belong to: the row's `user_id` and `platform` as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner<'a> {
    pub user_id: Uuid,
    pub platform: &'a str,
}

/// Which secret a ciphertext holds (part of the AAD); a token names its [`Owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column<'a> {
    AccessToken(Owner<'a>),
    RefreshToken(Owner<'a>),
    /// A pending OAuth connection's PKCE verifier (`meetingd.oauth_states`).
    PkceVerifier,
    /// The mark meetingd puts on a meeting at a platform that chooses its ids (Zoom's agenda):
    /// the booking and generation it was made for, sealed with the nil row id.
    MeetingMark,
}

impl<'a> Column<'a> {
    fn as_str(self) -> &'static str {
        match self {
            Column::AccessToken(_) => "access_token",
            Column::RefreshToken(_) => "refresh_token",
            Column::PkceVerifier => "pkce_verifier",
            Column::MeetingMark => "meeting_mark",
        }
    }

    fn owner(self) -> Option<Owner<'a>> {
        match self {
            Column::AccessToken(owner) | Column::RefreshToken(owner) => Some(owner),
            Column::PkceVerifier | Column::MeetingMark => None,
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
    #[error(
        "the stored value does not decrypt: it was altered, or belongs to another integration, user, platform or column"
    )]
    Tampered,
    #[error(
        "the stored value is an old-format envelope (bound to its row alone), refused: meetingd re-encrypts those at start-up and in `meetingd migrate` until none is left"
    )]
    Legacy,
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

/// Version 1: row id, ':', column name.
fn legacy_aad(row: Uuid, column: Column) -> Vec<u8> {
    let mut aad = Vec::with_capacity(16 + 1 + 13);
    aad.extend_from_slice(row.as_bytes());
    aad.push(b':');
    aad.extend_from_slice(column.as_str().as_bytes());
    aad
}

/// Version 2: the header (version and key id), the row id, the column name and, for a token,
/// its owner; variable-length fields carry their length, so no two bindings share an encoding.
fn aad(header: &[u8], row: Uuid, column: Column) -> Vec<u8> {
    let name = column.as_str().as_bytes();
    let mut aad = Vec::with_capacity(header.len() + 16 + 1 + name.len() + 1 + 16 + 4 + 16);
    aad.extend_from_slice(header);
    aad.extend_from_slice(row.as_bytes());
    aad.push(name.len() as u8);
    aad.extend_from_slice(name);
    match column.owner() {
        None => aad.push(0),
        Some(owner) => {
            aad.push(1);
            aad.extend_from_slice(owner.user_id.as_bytes());
            aad.extend_from_slice(&(owner.platform.len() as u32).to_be_bytes());
            aad.extend_from_slice(owner.platform.as_bytes());
        }
    }
    aad
}

/// A stored value taken apart; every length checked before slicing.
struct Envelope {
    bytes: Vec<u8>,
}

impl Envelope {
    fn parse(stored: &str) -> Result<Envelope, CryptoError> {
        let bytes = STANDARD.decode(stored.trim()).map_err(|_| CryptoError::Malformed("not base64"))?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("too short"));
        }
        if !matches!(bytes[0], LEGACY_VERSION | VERSION) {
            return Err(CryptoError::Malformed("unknown envelope version"));
        }
        Ok(Envelope { bytes })
    }

    fn version(&self) -> u8 {
        self.bytes[0]
    }

    fn key_id(&self) -> &[u8] {
        &self.bytes[1..1 + KEY_ID_LEN]
    }

    fn header(&self) -> &[u8] {
        &self.bytes[..1 + KEY_ID_LEN]
    }

    fn nonce(&self) -> &XNonce {
        XNonce::from_slice(&self.bytes[1 + KEY_ID_LEN..HEADER_LEN])
    }

    fn sealed(&self) -> &[u8] {
        &self.bytes[HEADER_LEN..]
    }
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

    /// Seals `plaintext` for `row` and `column` (a token's column names its owner) with the current key.
    pub fn encrypt(&self, plaintext: &SecretString, row: Uuid, column: Column) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut envelope = Vec::with_capacity(HEADER_LEN + plaintext.expose_secret().len() + TAG_LEN);
        envelope.push(VERSION);
        envelope.extend_from_slice(&self.current.id);
        let aad = aad(&envelope, row, column);
        let ciphertext = self
            .current
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.expose_secret().as_bytes(), aad: &aad })
            .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory input");
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&ciphertext);
        STANDARD.encode(envelope)
    }

    /// Opens a value sealed by [`Keyring::encrypt`] for exactly this row and column (and owner).
    /// An old-format envelope is [`CryptoError::Legacy`] for a token; a PKCE verifier of a
    /// connection begun before the upgrade (they live ten minutes) still opens.
    pub fn decrypt(&self, stored: &str, row: Uuid, column: Column) -> Result<SecretString, CryptoError> {
        let envelope = Envelope::parse(stored)?;
        match (envelope.version(), column) {
            (VERSION, _) => self.open(&envelope, &aad(envelope.header(), row, column)),
            (_, Column::PkceVerifier) => self.open(&envelope, &legacy_aad(row, column)),
            _ => Err(CryptoError::Legacy),
        }
    }

    /// Opens an old-format (version 1) envelope, bound to `row` and the column's name alone. Only
    /// the upgrade pass calls this, to re-encrypt it bound to its owner as well.
    pub fn decrypt_legacy(&self, stored: &str, row: Uuid, column: Column) -> Result<SecretString, CryptoError> {
        let envelope = Envelope::parse(stored)?;
        if envelope.version() != LEGACY_VERSION {
            return Err(CryptoError::Malformed("not an old-format envelope"));
        }
        self.open(&envelope, &legacy_aad(row, column))
    }

    fn open(&self, envelope: &Envelope, aad: &[u8]) -> Result<SecretString, CryptoError> {
        let key_id = envelope.key_id();
        let key = std::iter::once(&self.current)
            .chain(&self.old)
            .find(|k| k.id == key_id)
            .ok_or_else(|| CryptoError::UnknownKey(hex(key_id)))?;
        let plaintext = Zeroizing::new(
            key.cipher
                .decrypt(envelope.nonce(), Payload { msg: envelope.sealed(), aad })
                .map_err(|_| CryptoError::Tampered)?,
        );
        let text = std::str::from_utf8(&plaintext).map_err(|_| CryptoError::Malformed("plaintext is not UTF-8"))?;
        Ok(SecretString::from(text.to_string()))
    }

    /// Whether `stored` is already in the current format with the current key (rotation skips it).
    pub fn is_current(&self, stored: &str) -> bool {
        Envelope::parse(stored).is_ok_and(|e| e.version() == VERSION && e.key_id() == self.current.id)
    }

    /// Whether `stored` is an old-format (version 1) envelope, which the upgrade pass re-encrypts.
    pub fn is_legacy(stored: &str) -> bool {
        Envelope::parse(stored).is_ok_and(|e| e.version() == LEGACY_VERSION)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> Keyring {
        Keyring::new(&Keyring::generate_key(), &[]).unwrap()
    }

    fn owner(platform: &str) -> Owner<'_> {
        Owner { user_id: Uuid::from_u128(7), platform }
    }

    /// What meetingd wrote before tokens were bound to their owner: version 1, AAD = row ‖ ':' ‖ column.
    fn seal_legacy(k: &Keyring, plaintext: &str, row: Uuid, column: Column) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = k
            .current
            .cipher
            .encrypt(&nonce, Payload { msg: plaintext.as_bytes(), aad: &legacy_aad(row, column) })
            .unwrap();
        let mut envelope = vec![LEGACY_VERSION];
        envelope.extend_from_slice(&k.current.id);
        envelope.extend_from_slice(&nonce);
        envelope.extend_from_slice(&sealed);
        STANDARD.encode(envelope)
    }

    #[test]
    fn round_trip_and_binding() {
        let k = ring();
        let row = Uuid::new_v4();
        let secret = SecretString::from("ya29.a0-token");
        let google = Column::AccessToken(owner("google_meet"));
        let sealed = k.encrypt(&secret, row, google);
        assert!(!sealed.contains("ya29"));
        assert_eq!(k.decrypt(&sealed, row, google).unwrap().expose_secret(), "ya29.a0-token");
        assert_eq!(k.decrypt(&sealed, Uuid::new_v4(), google).unwrap_err(), CryptoError::Tampered);
        assert_eq!(
            k.decrypt(&sealed, row, Column::RefreshToken(owner("google_meet"))).unwrap_err(),
            CryptoError::Tampered
        );
        assert_eq!(k.decrypt(&sealed, row, Column::PkceVerifier).unwrap_err(), CryptoError::Tampered);
        assert_ne!(sealed, k.encrypt(&secret, row, google), "fresh nonce each time");
    }

    #[test]
    fn a_token_moved_to_another_user_or_platform_does_not_decrypt() {
        let k = ring();
        let row = Uuid::new_v4();
        let sealed = k.encrypt(&SecretString::from("1//refresh"), row, Column::RefreshToken(owner("google_meet")));
        let other_user = Owner { user_id: Uuid::from_u128(8), platform: "google_meet" };
        assert_eq!(k.decrypt(&sealed, row, Column::RefreshToken(other_user)).unwrap_err(), CryptoError::Tampered);
        assert_eq!(k.decrypt(&sealed, row, Column::RefreshToken(owner("zoom"))).unwrap_err(), CryptoError::Tampered);
        // Length-prefixed fields: a platform name cannot borrow bytes from its neighbours.
        assert_eq!(
            k.decrypt(&sealed, row, Column::RefreshToken(owner("google_mee"))).unwrap_err(),
            CryptoError::Tampered
        );
        assert_eq!(k.decrypt(&sealed, row, Column::RefreshToken(owner(""))).unwrap_err(), CryptoError::Tampered);
    }

    #[test]
    fn old_format_tokens_open_only_through_the_upgrade() {
        let k = ring();
        let row = Uuid::new_v4();
        let column = Column::AccessToken(owner("google_meet"));
        let legacy = seal_legacy(&k, "ya29.old", row, column);
        assert!(Keyring::is_legacy(&legacy));
        assert!(!k.is_current(&legacy), "the upgrade re-encrypts it");
        assert_eq!(k.decrypt(&legacy, row, column).unwrap_err(), CryptoError::Legacy);
        assert_eq!(k.decrypt_legacy(&legacy, row, column).unwrap().expose_secret(), "ya29.old");
        assert_eq!(k.decrypt_legacy(&legacy, Uuid::new_v4(), column).unwrap_err(), CryptoError::Tampered);
        // A new envelope relabelled as version 1 (or the other way round) opens nowhere.
        let fresh = k.encrypt(&SecretString::from("ya29.new"), row, column);
        let mut raw = STANDARD.decode(&fresh).unwrap();
        raw[0] = LEGACY_VERSION;
        let relabelled = STANDARD.encode(&raw);
        assert_eq!(k.decrypt_legacy(&relabelled, row, column).unwrap_err(), CryptoError::Tampered);
        assert_eq!(k.decrypt(&relabelled, row, column).unwrap_err(), CryptoError::Legacy);
        let mut raw = STANDARD.decode(&legacy).unwrap();
        raw[0] = VERSION;
        assert_eq!(k.decrypt(&STANDARD.encode(&raw), row, column).unwrap_err(), CryptoError::Tampered);
        assert!(matches!(k.decrypt_legacy(&fresh, row, column), Err(CryptoError::Malformed(_))));
        // A PKCE verifier of a connection begun before the upgrade still opens.
        let verifier = seal_legacy(&k, "verifier", row, Column::PkceVerifier);
        assert_eq!(k.decrypt(&verifier, row, Column::PkceVerifier).unwrap().expose_secret(), "verifier");
    }

    #[test]
    fn wrong_or_rotated_keys() {
        let old_key = Keyring::generate_key();
        let old = Keyring::new(&old_key, &[]).unwrap();
        let row = Uuid::new_v4();
        let column = Column::RefreshToken(owner("google_meet"));
        let sealed = old.encrypt(&SecretString::from("r"), row, column);
        let other = ring();
        assert!(matches!(other.decrypt(&sealed, row, column), Err(CryptoError::UnknownKey(_))));
        let rotated = Keyring::new(&Keyring::generate_key(), &[old_key]).unwrap();
        assert_eq!(rotated.decrypt(&sealed, row, column).unwrap().expose_secret(), "r");
        assert!(!rotated.is_current(&sealed));
        assert!(rotated.is_current(&rotated.encrypt(&SecretString::from("r"), row, column)));
        let legacy = seal_legacy(&old, "r", row, column);
        assert_eq!(rotated.decrypt_legacy(&legacy, row, column).unwrap().expose_secret(), "r");
        assert!(matches!(other.decrypt_legacy(&legacy, row, column), Err(CryptoError::UnknownKey(_))));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let k = ring();
        let row = Uuid::new_v4();
        let column = Column::AccessToken(owner("google_meet"));
        for junk in ["", "plaintext-token", "AAAA", &STANDARD.encode([1u8; 44]), &STANDARD.encode([2u8; 60])] {
            assert!(k.decrypt(junk, row, column).is_err(), "{junk:?}");
            assert!(k.decrypt_legacy(junk, row, column).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn bad_keys_are_rejected() {
        assert!(matches!(Keyring::new(&SecretString::from("short"), &[]), Err(CryptoError::BadKey(_))));
        let sixteen = STANDARD.encode([7u8; 16]);
        let err = Keyring::new(&SecretString::from(sixteen), &[]).unwrap_err();
        assert_eq!(err, CryptoError::BadKey("decodes to 16 bytes".into()));
    }

    fn any_column() -> impl Strategy<Value = (u128, String, u8)> {
        (any::<u128>(), "[a-z_]{0,12}", 0u8..3)
    }

    fn column_of((user, platform, which): &(u128, String, u8)) -> Column<'_> {
        let owner = Owner { user_id: Uuid::from_u128(*user), platform };
        match which {
            0 => Column::AccessToken(owner),
            1 => Column::RefreshToken(owner),
            _ => Column::PkceVerifier,
        }
    }

    proptest! {
        #[test]
        fn any_plaintext_round_trips(text in ".{0,300}", binding in any_column(), row in any::<u128>()) {
            let k = ring();
            let (row, column) = (Uuid::from_u128(row), column_of(&binding));
            let sealed = k.encrypt(&SecretString::from(text.clone()), row, column);
            let opened = k.decrypt(&sealed, row, column).unwrap();
            prop_assert_eq!(opened.expose_secret(), text.as_str());
            prop_assert!(k.is_current(&sealed) && !Keyring::is_legacy(&sealed));
        }

        /// Another row, column, user or platform (one of them, or all): refused.
        #[test]
        fn any_other_binding_is_refused(
            a in any_column(),
            b in any_column(),
            (row, other_row, same_row) in (any::<u128>(), any::<u128>(), any::<bool>()),
            change in 0u8..4,
        ) {
            let k = ring();
            let b = match change {
                0 => (b.0, a.1.clone(), a.2),
                1 => (a.0, b.1, a.2),
                2 => (a.0, a.1.clone(), b.2),
                _ => b,
            };
            let (ca, cb) = (column_of(&a), column_of(&b));
            let row_b = if same_row { row } else { other_row };
            let sealed = k.encrypt(&SecretString::from("token"), Uuid::from_u128(row), ca);
            let opened = k.decrypt(&sealed, Uuid::from_u128(row_b), cb);
            if row == row_b && ca == cb {
                prop_assert!(opened.is_ok());
            } else {
                prop_assert_eq!(opened.unwrap_err(), CryptoError::Tampered);
            }
        }

        #[test]
        fn any_flipped_bit_is_detected(text in ".{1,64}", bit in 0usize..10_000, legacy in any::<bool>()) {
            let k = ring();
            let row = Uuid::new_v4();
            let column = Column::AccessToken(owner("google_meet"));
            let sealed = if legacy {
                seal_legacy(&k, &text, row, column)
            } else {
                k.encrypt(&SecretString::from(text), row, column)
            };
            let mut raw = STANDARD.decode(&sealed).unwrap();
            let bit = bit % (raw.len() * 8);
            raw[bit / 8] ^= 1 << (bit % 8);
            let flipped = STANDARD.encode(raw);
            prop_assert!(k.decrypt(&flipped, row, column).is_err());
            prop_assert!(k.decrypt_legacy(&flipped, row, column).is_err());
        }

        /// The envelope parser on untrusted bytes (a column anyone with write access can fill):
        /// an error, never a panic, whatever the bytes or text.
        #[test]
        fn arbitrary_stored_values_are_errors(bytes in proptest::collection::vec(any::<u8>(), 0..128), version in 0u8..4, text in "\\PC{0,80}") {
            let k = ring();
            let row = Uuid::new_v4();
            let column = Column::AccessToken(owner("google_meet"));
            let mut shaped = bytes.clone();
            if let Some(first) = shaped.first_mut() {
                *first = version;
            }
            if shaped.len() > 5 {
                shaped[1..5].copy_from_slice(&k.current.id);
            }
            for stored in [STANDARD.encode(&bytes), STANDARD.encode(&shaped), text] {
                prop_assert!(k.decrypt(&stored, row, column).is_err());
                prop_assert!(k.decrypt(&stored, row, Column::PkceVerifier).is_err());
                prop_assert!(k.decrypt_legacy(&stored, row, column).is_err());
                let _ = (k.is_current(&stored), Keyring::is_legacy(&stored));
            }
        }
    }
}
