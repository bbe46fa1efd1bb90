//! Policy mode: the vault key is sealed under the seal key; each account key is
//! encrypted to the vault key; each secret is encrypted to its account key.
//!
//! ```text
//! seal key (key file | argon2id(passphrase))
//!   └─ age → vault key (32 bytes → identity "vault-key")
//!              └─ age → account key (32 bytes → identity "account-key"), one per account
//!                         └─ age → {v, account_id, kind, version, value}
//! ```
//!
//! Quorum mode replaces only [`UnsealedVault::account_key`] (the seam): there the
//! account key is combined from custodians' shares for one approved release.
use age::x25519::Recipient;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{
    CryptoError,
    envelope::{self, EnvelopeHeader},
    keys::{self, LABEL_ACCOUNT, LABEL_SEAL, LABEL_VAULT},
    seal::SealKey,
    x25519::Identity,
};

pub const VAULT_SUBJECT: &str = "vault";

pub(crate) fn decode_key(hex_text: &SecretString) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let mut out = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(hex_text.expose_secret(), out.as_mut_slice()).map_err(|_| CryptoError::MalformedEnvelope)?;
    Ok(out)
}

fn vault_header() -> EnvelopeHeader {
    EnvelopeHeader::new(VAULT_SUBJECT, "vault_key", 1)
}

fn account_key_header(account_id: &str) -> EnvelopeHeader {
    EnvelopeHeader::new(account_id, "account_key", 1)
}

/// The unsealed vault key, held in memory by `serve` in policy mode.
pub struct UnsealedVault {
    identity: Identity,
    recipient: String,
}

/// A newly created vault: what to store, and the open vault.
pub struct NewVault {
    pub sealed_key: Vec<u8>,
    pub recipient: String,
    pub vault: UnsealedVault,
}

impl UnsealedVault {
    /// Create a vault key and seal it under `seal_key`.
    pub fn create(seal_key: &SealKey) -> Result<NewVault, CryptoError> {
        let secret = keys::random_bytes::<32>()?;
        let identity = keys::derive_identity(LABEL_VAULT, &secret)?;
        let recipient = identity.to_public().to_string();
        let seal_identity = keys::derive_identity(LABEL_SEAL, seal_key.bytes())?;
        let hex_secret = Zeroizing::new(hex::encode(secret.as_slice()));
        let sealed_key = envelope::seal(&seal_identity.to_public(), &vault_header(), &hex_secret)?;
        Ok(NewVault { sealed_key, recipient: recipient.clone(), vault: UnsealedVault { identity, recipient } })
    }

    /// Unseal a stored vault key. A wrong seal key is `WrongSealKey`, never a panic.
    pub fn unseal(seal_key: &SealKey, sealed_key: &[u8], expected_recipient: &str) -> Result<Self, CryptoError> {
        let seal_identity = keys::derive_identity(LABEL_SEAL, seal_key.bytes())?;
        let hex_secret = envelope::open(&seal_identity, &vault_header(), sealed_key).map_err(|e| match e {
            CryptoError::Decrypt => CryptoError::WrongSealKey,
            other => other,
        })?;
        let secret = decode_key(&hex_secret)?;
        let identity = keys::derive_identity(LABEL_VAULT, &secret)?;
        let recipient = identity.to_public().to_string();
        if recipient != expected_recipient {
            return Err(CryptoError::WrongSealKey);
        }
        Ok(Self { identity, recipient })
    }

    pub fn recipient(&self) -> &str {
        &self.recipient
    }

    /// Open a checkout's sealed transit identity (quorum mode).
    pub fn transit_identity(
        &self,
        account_id: &str,
        checkout_id: &str,
        sealed: &[u8],
    ) -> Result<Identity, CryptoError> {
        let hex_secret =
            envelope::open(&self.identity, &super::quorum::transit_header(account_id, checkout_id), sealed)?;
        let secret = decode_key(&hex_secret)?;
        keys::derive_identity(keys::LABEL_TRANSIT, &secret)
    }

    /// Open the sealed audit-log signing key.
    pub fn log_key(&self, sealed: &[u8]) -> Result<ed25519_dalek::SigningKey, CryptoError> {
        let hex_seed = envelope::open(&self.identity, &log_key_header(), sealed)?;
        let seed = decode_key(&hex_seed)?;
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// **The seam.** Turns an account's wrapped key into the account key. In policy
    /// mode the vault key decrypts it; quorum mode will combine shares handed over
    /// for one approved release instead. Every decryption of a secret goes through
    /// here (and, from the checkout issue on, only for an approved release).
    pub fn account_key(&self, account_id: &str, wrapped: &[u8]) -> Result<AccountKey, CryptoError> {
        let hex_secret = envelope::open(&self.identity, &account_key_header(account_id), wrapped)?;
        let secret = decode_key(&hex_secret)?;
        Ok(AccountKey { identity: keys::derive_identity(LABEL_ACCOUNT, &secret)?, account_id: account_id.to_owned() })
    }
}

/// A freshly generated audit-log signing key: its public key and its seed sealed to
/// the vault recipient (like the vault key, it opens only on an unsealed server).
pub struct NewLogKey {
    pub public_key: [u8; 32],
    pub sealed: Vec<u8>,
}

fn log_key_header() -> EnvelopeHeader {
    EnvelopeHeader::new(VAULT_SUBJECT, "log_key", 1)
}

pub fn new_log_key(vault_recipient: &str) -> Result<NewLogKey, CryptoError> {
    let vault = keys::parse_recipient(vault_recipient)?;
    let seed = keys::random_bytes::<32>()?;
    let public_key = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    let hex_seed = Zeroizing::new(hex::encode(seed.as_slice()));
    Ok(NewLogKey { public_key, sealed: envelope::seal(&vault, &log_key_header(), &hex_seed)? })
}

/// A freshly generated account key: its public recipient and its wrapped form.
pub struct NewAccountKey {
    pub recipient: String,
    pub wrapped: Vec<u8>,
}

/// Generate an account key, wrapped to the vault recipient. Needs no secret.
pub fn new_account_key(vault_recipient: &str, account_id: &str) -> Result<NewAccountKey, CryptoError> {
    let vault = keys::parse_recipient(vault_recipient)?;
    let secret = keys::random_bytes::<32>()?;
    let recipient = keys::derive_identity(LABEL_ACCOUNT, &secret)?.to_public().to_string();
    let hex_secret = Zeroizing::new(hex::encode(secret.as_slice()));
    let wrapped = envelope::seal(&vault, &account_key_header(account_id), &hex_secret)?;
    Ok(NewAccountKey { recipient, wrapped })
}

/// Encrypt a secret version to an account's public recipient. Needs no secret.
pub fn encrypt_secret(
    account_recipient: &str,
    header: &EnvelopeHeader,
    value: &SecretString,
) -> Result<Vec<u8>, CryptoError> {
    let recipient: Recipient = keys::parse_recipient(account_recipient)?;
    envelope::seal(&recipient, header, value.expose_secret())
}

/// An account's private key, alive only while a release is being served.
pub struct AccountKey {
    identity: Identity,
    account_id: String,
}

impl AccountKey {
    /// The account key from its 32 secret bytes (quorum mode: combined shares).
    pub(crate) fn from_secret(account_id: &str, secret: &[u8; 32]) -> Result<Self, CryptoError> {
        Ok(Self { identity: keys::derive_identity(LABEL_ACCOUNT, secret)?, account_id: account_id.to_owned() })
    }

    pub fn recipient(&self) -> String {
        self.identity.to_public().to_string()
    }

    pub fn open(&self, kind: &str, version: u64, ciphertext: &[u8]) -> Result<SecretString, CryptoError> {
        envelope::open(&self.identity, &EnvelopeHeader::new(self.account_id.clone(), kind, version), ciphertext)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;
    use crate::crypto::seal::{KdfParams, derive_from_passphrase};

    fn test_seal(pass: &str) -> SealKey {
        derive_from_passphrase(
            &SecretString::from(pass.to_owned()),
            b"0123456789abcdef",
            KdfParams { m_kib: 1024, t: 1, p: 1 },
        )
        .unwrap()
    }

    #[test]
    fn deposited_secret_decrypts_back_through_the_vault() {
        let new = UnsealedVault::create(&test_seal("a long passphrase")).unwrap();
        let reopened = UnsealedVault::unseal(&test_seal("a long passphrase"), &new.sealed_key, &new.recipient).unwrap();
        let acct = new_account_key(&new.recipient, "123456789012").unwrap();
        let header = EnvelopeHeader::new("123456789012", "root_password", 1);
        let ct = encrypt_secret(&acct.recipient, &header, &SecretString::from("hunter2-but-longer")).unwrap();
        let key = reopened.account_key("123456789012", &acct.wrapped).unwrap();
        assert_eq!(key.open("root_password", 1, &ct).unwrap().expose_secret(), "hunter2-but-longer");
    }

    #[test]
    fn wrong_passphrase_fails_cleanly() {
        let new = UnsealedVault::create(&test_seal("a long passphrase")).unwrap();
        let e = UnsealedVault::unseal(&test_seal("a wrong passphrase"), &new.sealed_key, &new.recipient).err().unwrap();
        assert!(matches!(e, CryptoError::WrongSealKey), "{e}");
    }

    #[test]
    fn ciphertext_moved_to_another_account_or_kind_fails() {
        let new = UnsealedVault::create(&test_seal("p")).unwrap();
        let a = new_account_key(&new.recipient, "111111111111").unwrap();
        let b = new_account_key(&new.recipient, "222222222222").unwrap();
        let pw = encrypt_secret(
            &a.recipient,
            &EnvelopeHeader::new("111111111111", "root_password", 1),
            &SecretString::from("pw-a"),
        )
        .unwrap();
        // Another kind or version of the same account.
        let key_a = new.vault.account_key("111111111111", &a.wrapped).unwrap();
        assert!(matches!(key_a.open("totp_seed", 1, &pw), Err(CryptoError::EnvelopeMismatch { .. })));
        assert!(matches!(key_a.open("root_password", 2, &pw), Err(CryptoError::EnvelopeMismatch { .. })));
        // Another account's key cannot decrypt it at all.
        let key_b = new.vault.account_key("222222222222", &b.wrapped).unwrap();
        assert!(matches!(key_b.open("root_password", 1, &pw), Err(CryptoError::Decrypt)));
        // A wrapped account key moved to another account row is refused.
        assert!(matches!(new.vault.account_key("222222222222", &a.wrapped), Err(CryptoError::EnvelopeMismatch { .. })));
    }
}
