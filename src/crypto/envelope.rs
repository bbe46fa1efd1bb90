//! The envelope inside every age payload: `{v, account_id, kind, version, value}`, and
//! for quorum material also `person`, `index` (a share) or `checkout` (a transit key).
//! age has no associated data, so after decryption the envelope is compared with the
//! row it was read from; a ciphertext moved to another row fails.
use age::x25519::Recipient;
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
    /// `root_password`, `totp_seed`, `recovery_notes`, `account_key`, `vault_key`,
    /// `log_key`, `share` or `transit_key`.
    pub kind: String,
    pub version: u64,
    /// A share: the custodian it was dealt to.
    pub person: Option<String>,
    /// A share: its Shamir x-coordinate (1–255).
    pub index: Option<u8>,
    /// A transit key: the checkout it belongs to.
    pub checkout: Option<String>,
}

impl EnvelopeHeader {
    pub fn new(account_id: impl Into<String>, kind: impl Into<String>, version: u64) -> Self {
        Self { account_id: account_id.into(), kind: kind.into(), version, person: None, index: None, checkout: None }
    }
}

impl std::fmt::Display for EnvelopeHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/v{}", self.account_id, self.kind, self.version)?;
        if let Some(p) = &self.person {
            write!(f, "/person {p}")?;
        }
        if let Some(i) = self.index {
            write!(f, "/index {i}")?;
        }
        if let Some(c) = &self.checkout {
            write!(f, "/checkout {c}")?;
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    account_id: &'a str,
    kind: &'a str,
    version: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    person: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checkout: Option<&'a str>,
    value: &'a str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireIn {
    v: u32,
    account_id: String,
    kind: String,
    version: u64,
    #[serde(default)]
    person: Option<String>,
    #[serde(default)]
    index: Option<u8>,
    #[serde(default)]
    checkout: Option<String>,
    value: SecretString,
}

/// Encrypt `value` to `recipient` inside an envelope. Needs only the public key.
pub fn seal(recipient: &Recipient, header: &EnvelopeHeader, value: &str) -> Result<Vec<u8>, CryptoError> {
    seal_to_many(std::slice::from_ref(recipient), header, value)
}

/// Encrypt to several recipients at once (a share to every key of its holder): any
/// one of their identities opens it.
pub fn seal_to_many(recipients: &[Recipient], header: &EnvelopeHeader, value: &str) -> Result<Vec<u8>, CryptoError> {
    // Reserve the worst case (every byte escaped as \u00XX) so the buffer never
    // reallocates and leaves unzeroized copies behind.
    let mut plain = Zeroizing::new(Vec::with_capacity(
        value.len() * 6
            + header.account_id.len()
            + header.kind.len()
            + header.person.as_deref().map_or(0, str::len)
            + header.checkout.as_deref().map_or(0, str::len)
            + 160,
    ));
    serde_json::to_writer(
        &mut *plain,
        &WireOut {
            v: ENVELOPE_VERSION,
            account_id: &header.account_id,
            kind: &header.kind,
            version: header.version,
            person: header.person.as_deref(),
            index: header.index,
            checkout: header.checkout.as_deref(),
            value,
        },
    )
    .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + 200 * recipients.len() + 64);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    std::io::Write::write_all(&mut writer, &plain).map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    writer.finish().map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// Decrypt and check that the payload belongs to `expected`.
pub fn open(
    identity: &dyn age::Identity,
    expected: &EnvelopeHeader,
    ciphertext: &[u8],
) -> Result<SecretString, CryptoError> {
    // Read into a buffer sized up front (plaintext < ciphertext), so it never
    // reallocates and leaves unwiped copies behind (age::decrypt grows a Vec).
    let decryptor = age::Decryptor::new_buffered(ciphertext).map_err(|_| CryptoError::Decrypt)?;
    let mut reader = decryptor.decrypt(std::iter::once(identity)).map_err(|_| CryptoError::Decrypt)?;
    let mut plain = Zeroizing::new(Vec::with_capacity(ciphertext.len()));
    std::io::Read::read_to_end(&mut reader, &mut plain).map_err(|_| CryptoError::Decrypt)?;
    let wire: WireIn = serde_json::from_slice(&plain).map_err(|_| CryptoError::MalformedEnvelope)?;
    if wire.v != ENVELOPE_VERSION
        || wire.account_id != expected.account_id
        || wire.kind != expected.kind
        || wire.version != expected.version
        || wire.person != expected.person
        || wire.index != expected.index
        || wire.checkout != expected.checkout
    {
        return Err(CryptoError::EnvelopeMismatch { expected: expected.to_string() });
    }
    Ok(wire.value)
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::crypto::keys::{LABEL_ACCOUNT, derive_identity};

    /// With age's own identity and with ours (crypto/x25519.rs) alike.
    #[test]
    fn round_trip_and_moved_ciphertext_fails() {
        let age_id = age::x25519::Identity::generate();
        let ours = derive_identity(LABEL_ACCOUNT, &[3u8; 32]).unwrap();
        let pairs: [(&dyn age::Identity, Recipient); 2] = [(&age_id, age_id.to_public()), (&ours, ours.to_public())];
        for (id, recipient) in pairs {
            let h = EnvelopeHeader::new("123456789012", "root_password", 1);
            let ct = seal(&recipient, &h, "correct horse \"battery\" \u{1F511}").unwrap();
            assert_eq!(open(id, &h, &ct).unwrap().expose_secret(), "correct horse \"battery\" \u{1F511}");
            for wrong in [
                EnvelopeHeader::new("210987654321", "root_password", 1),
                EnvelopeHeader::new("123456789012", "totp_seed", 1),
                EnvelopeHeader::new("123456789012", "root_password", 2),
            ] {
                assert!(matches!(open(id, &wrong, &ct), Err(CryptoError::EnvelopeMismatch { .. })));
            }
            let other = derive_identity(LABEL_ACCOUNT, &[4u8; 32]).unwrap();
            assert!(matches!(open(&other, &h, &ct), Err(CryptoError::Decrypt)));
            assert!(matches!(open(&age::x25519::Identity::generate(), &h, &ct), Err(CryptoError::Decrypt)));
        }
    }
}
