//! The envelope inside every age payload: `{v, account_id, kind, version, value}`.
//! age has no associated data, so after decryption the envelope is compared with the
//! row it was read from; a ciphertext moved to another row fails.
use age::x25519::{Identity, Recipient};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::CryptoError;

pub const ENVELOPE_VERSION: u32 = 1;

/// Where a payload belongs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeHeader {
    /// The AWS account id, or `"vault"` for the vault key.
    pub account_id: String,
    /// `root_password`, `totp_seed`, `recovery_notes`, `account_key` or `vault_key`.
    pub kind: String,
    pub version: u64,
}

impl EnvelopeHeader {
    pub fn new(account_id: impl Into<String>, kind: impl Into<String>, version: u64) -> Self {
        Self { account_id: account_id.into(), kind: kind.into(), version }
    }
}

impl std::fmt::Display for EnvelopeHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/v{}", self.account_id, self.kind, self.version)
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    account_id: &'a str,
    kind: &'a str,
    version: u64,
    value: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn {
    v: u32,
    account_id: String,
    kind: String,
    version: u64,
    value: SecretString,
}

/// Encrypt `value` to `recipient` inside an envelope. Needs only the public key.
pub fn seal(recipient: &Recipient, header: &EnvelopeHeader, value: &str) -> Result<Vec<u8>, CryptoError> {
    // Reserve the worst case (every byte escaped as \u00XX) so the buffer never
    // reallocates and leaves unzeroized copies behind.
    let mut plain =
        Zeroizing::new(Vec::with_capacity(value.len() * 6 + header.account_id.len() + header.kind.len() + 128));
    serde_json::to_writer(
        &mut *plain,
        &WireOut {
            v: ENVELOPE_VERSION,
            account_id: &header.account_id,
            kind: &header.kind,
            version: header.version,
            value,
        },
    )
    .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    age::encrypt(recipient, &plain).map_err(|e| CryptoError::Encrypt(e.to_string()))
}

/// Decrypt and check that the payload belongs to `expected`.
pub fn open(identity: &Identity, expected: &EnvelopeHeader, ciphertext: &[u8]) -> Result<SecretString, CryptoError> {
    // Read into a buffer sized up front (plaintext < ciphertext), so it never
    // reallocates and leaves unwiped copies behind (age::decrypt grows a Vec).
    let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(|_| CryptoError::Decrypt)?;
    let mut reader =
        decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)).map_err(|_| CryptoError::Decrypt)?;
    let mut plain = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    std::io::Read::read_to_end(&mut reader, &mut plain).map_err(|_| CryptoError::Decrypt)?;
    let wire: WireIn = serde_json::from_slice(&plain).map_err(|_| CryptoError::MalformedEnvelope)?;
    if wire.v != ENVELOPE_VERSION
        || wire.account_id != expected.account_id
        || wire.kind != expected.kind
        || wire.version != expected.version
    {
        return Err(CryptoError::EnvelopeMismatch { expected: expected.to_string() });
    }
    Ok(wire.value)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn round_trip_and_moved_ciphertext_fails() {
        let id = Identity::generate();
        let h = EnvelopeHeader::new("123456789012", "root_password", 1);
        let ct = seal(&id.to_public(), &h, "correct horse \"battery\" \u{1F511}").unwrap();
        assert_eq!(open(&id, &h, &ct).unwrap().expose_secret(), "correct horse \"battery\" \u{1F511}");
        for wrong in [
            EnvelopeHeader::new("210987654321", "root_password", 1),
            EnvelopeHeader::new("123456789012", "totp_seed", 1),
            EnvelopeHeader::new("123456789012", "root_password", 2),
        ] {
            assert!(matches!(open(&id, &wrong, &ct), Err(CryptoError::EnvelopeMismatch { .. })));
        }
        let other = Identity::generate();
        assert!(matches!(open(&other, &h, &ct), Err(CryptoError::Decrypt)));
    }
}
