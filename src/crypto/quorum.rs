//! Quorum mode's cryptography: the account key split with Shamir (constant-time
//! GF(2^8), `shamirsecretsharing`) into one share per holder, each share sealed in an
//! envelope to all of its holder's PRF recipients; a per-checkout transit key that
//! contributed shares are re-encrypted to; and the combination of k contributions
//! back into the account key, checked against the account's recipient (fewer than k
//! shares combine to garbage, not to an error).
//!
//! ```text
//! account key (32 bytes) ──Shamir k-of-n──▶ share i (x = i, 32 bytes)
//!   share i ──age──▶ every PRF recipient of holder i          (account_shares, at rest)
//!   holder's browser: PRF → identity → open → age to transit  (checkout_shares, in flight)
//!   transit key ──age──▶ vault key                            (checkouts.transit_sealed)
//! ```
use age::x25519::Recipient;
use secrecy::ExposeSecret;
use zeroize::{Zeroize, Zeroizing};

use super::{
    AccountKey, CryptoError,
    envelope::{self, EnvelopeHeader},
    keys::{self, LABEL_ACCOUNT, LABEL_TRANSIT},
    vault::decode_key,
    x25519::Identity,
};

/// The most holders one account key can be split among (Shamir over GF(2^8)).
pub const MAX_HOLDERS: usize = 255;

/// Why a set of contributed shares did not open the account. Each names the person
/// whose share failed where there is one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuorumError {
    #[error("the share handed over by {person} could not be decrypted with this checkout's transit key")]
    Unreadable { person: String },
    #[error(
        "the share handed over by {person} belongs elsewhere (another account, key version, person or position): {detail}"
    )]
    Foreign { person: String, detail: String },
    #[error("two shares were handed over for the same person or the same position ({person})")]
    Duplicate { person: String },
    #[error("{have} of the {need} shares needed were handed over")]
    TooFew { have: usize, need: usize },
    #[error("the shares handed over do not combine to this account's key (a share is corrupted or stale)")]
    WrongKey,
    #[error("{0}")]
    Crypto(String),
}

impl From<CryptoError> for QuorumError {
    fn from(e: CryptoError) -> Self {
        Self::Crypto(e.to_string())
    }
}

/// The envelope header of holder `person`'s share `index` of `account_id`'s key
/// `key_version`.
pub fn share_header(account_id: &str, key_version: u64, person: &str, index: u8) -> EnvelopeHeader {
    EnvelopeHeader {
        person: Some(person.to_owned()),
        index: Some(index),
        ..EnvelopeHeader::new(account_id, "share", key_version)
    }
}

pub(crate) fn transit_header(account_id: &str, checkout_id: &str) -> EnvelopeHeader {
    EnvelopeHeader { checkout: Some(checkout_id.to_owned()), ..EnvelopeHeader::new(account_id, "transit_key", 1) }
}

/// A new account key: its secret bytes (wiped on drop) and its public recipient.
pub struct FreshAccountKey {
    pub secret: Zeroizing<[u8; 32]>,
    pub recipient: String,
}

pub fn fresh_account_key() -> Result<FreshAccountKey, CryptoError> {
    let secret = keys::random_bytes::<32>()?;
    let recipient = keys::derive_identity(LABEL_ACCOUNT, &secret)?.to_public().to_string();
    Ok(FreshAccountKey { secret, recipient })
}

/// One holder: who, and the share recipients of all their keys.
#[derive(Debug, Clone)]
pub struct Holder {
    pub person: String,
    pub recipients: Vec<String>,
}

/// One dealt share, ready to store.
#[derive(Debug, Clone)]
pub struct DealtShare {
    pub person: String,
    pub index: u8,
    pub ciphertext: Vec<u8>,
}

/// Split `secret` k-of-n among `holders` (n = holders.len()), each share sealed to
/// all of its holder's recipients. Holder i gets x-coordinate i + 1.
pub fn deal(
    account_id: &str,
    key_version: u64,
    secret: &[u8; 32],
    holders: &[Holder],
    k: usize,
) -> Result<Vec<DealtShare>, CryptoError> {
    let n = holders.len();
    if k < 2 || n < k || n > MAX_HOLDERS {
        return Err(CryptoError::Encrypt(format!("cannot split a key {k}-of-{n}")));
    }
    let mut shares = shamirsecretsharing::hazmat::create_keyshares(secret, n as u8, k as u8)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let dealt = holders
        .iter()
        .zip(shares.iter())
        .map(|(h, share)| {
            let index = share[0];
            let recipients =
                h.recipients.iter().map(|r| keys::parse_recipient(r)).collect::<Result<Vec<Recipient>, _>>()?;
            if recipients.is_empty() {
                return Err(CryptoError::Encrypt(format!("{} has no share recipient", h.person)));
            }
            let value = Zeroizing::new(hex::encode(&share[1..]));
            let ciphertext =
                envelope::seal_to_many(&recipients, &share_header(account_id, key_version, &h.person, index), &value)?;
            Ok(DealtShare { person: h.person.clone(), index, ciphertext })
        })
        .collect();
    for s in shares.iter_mut() {
        s.zeroize();
    }
    dealt
}

/// A new transit key for one checkout: its recipient, and its secret sealed to the
/// vault key so that a restart between approval and release loses nothing.
pub struct NewTransit {
    pub recipient: String,
    pub sealed: Vec<u8>,
}

pub fn new_transit(vault_recipient: &str, account_id: &str, checkout_id: &str) -> Result<NewTransit, CryptoError> {
    let vault = keys::parse_recipient(vault_recipient)?;
    let secret = keys::random_bytes::<32>()?;
    let recipient = keys::derive_identity(LABEL_TRANSIT, &secret)?.to_public().to_string();
    let hex_secret = Zeroizing::new(hex::encode(secret.as_slice()));
    let sealed = envelope::seal(&vault, &transit_header(account_id, checkout_id), &hex_secret)?;
    Ok(NewTransit { recipient, sealed })
}

/// One share as handed over for a checkout.
#[derive(Debug, Clone)]
pub struct Contribution {
    pub person: String,
    pub index: u8,
    pub ciphertext: Vec<u8>,
}

/// Open every contribution with the transit identity, check its envelope, combine
/// exactly `k` of them and check the result against the account's recipient.
pub fn combine(
    transit: &dyn age::Identity,
    account_id: &str,
    key_version: u64,
    account_recipient: &str,
    contributions: &[Contribution],
    k: usize,
) -> Result<AccountKey, QuorumError> {
    let mut seen_people = std::collections::BTreeSet::new();
    let mut seen_index = std::collections::BTreeSet::new();
    let mut keyshares: Vec<Vec<u8>> = Vec::with_capacity(contributions.len());
    let result = (|| {
        for c in contributions {
            if !seen_people.insert(c.person.as_str()) || !seen_index.insert(c.index) {
                return Err(QuorumError::Duplicate { person: c.person.clone() });
            }
            let header = share_header(account_id, key_version, &c.person, c.index);
            let hex_y = envelope::open(transit, &header, &c.ciphertext).map_err(|e| match e {
                CryptoError::Decrypt => QuorumError::Unreadable { person: c.person.clone() },
                other => QuorumError::Foreign { person: c.person.clone(), detail: other.to_string() },
            })?;
            let mut share = vec![0u8; 33];
            share[0] = c.index;
            if hex::decode_to_slice(hex_y.expose_secret(), &mut share[1..]).is_err() || c.index == 0 {
                share.zeroize();
                return Err(QuorumError::Foreign {
                    person: c.person.clone(),
                    detail: "the share value is malformed".into(),
                });
            }
            keyshares.push(share);
        }
        if keyshares.len() < k {
            return Err(QuorumError::TooFew { have: keyshares.len(), need: k });
        }
        let mut combined = shamirsecretsharing::hazmat::combine_keyshares(&keyshares[..k])
            .map_err(|e| QuorumError::Crypto(e.to_string()))?;
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&combined);
        combined.zeroize();
        let key = AccountKey::from_secret(account_id, &secret)?;
        if key.recipient() != account_recipient {
            return Err(QuorumError::WrongKey);
        }
        Ok(key)
    })();
    for s in keyshares.iter_mut() {
        s.zeroize();
    }
    result
}

/// The recipient of the age identity derived from a share secret (tests and tools:
/// the browser does this from its PRF output).
pub fn prf_share_identity(prf_output: &[u8; 32]) -> Result<Identity, CryptoError> {
    keys::derive_identity(keys::LABEL_PRF_SHARE, prf_output)
}

/// The account key from a wrapped key opened by the vault, as secret bytes (policy
/// mode → quorum mode conversion re-encrypts with it).
pub fn decode_secret(hex_secret: &secrecy::SecretString) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    decode_key(hex_secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(name: &str, prf: u8) -> (Holder, Identity) {
        let id = prf_share_identity(&[prf; 32]).unwrap();
        (Holder { person: name.into(), recipients: vec![id.to_public().to_string()] }, id)
    }

    /// What a holder's browser does: open the share with its PRF identity, re-encrypt
    /// the same plaintext to the transit recipient.
    fn hand_over(share: &DealtShare, id: &Identity, transit: &Recipient) -> Contribution {
        let plain = age::decrypt(id, &share.ciphertext).unwrap();
        Contribution {
            person: share.person.clone(),
            index: share.index,
            ciphertext: age::encrypt(transit, &plain).unwrap(),
        }
    }

    #[test]
    fn k_shares_open_the_key_and_every_wrong_set_names_its_cause() {
        let key = fresh_account_key().unwrap();
        let people: Vec<_> = [("ann", 1), ("bob", 2), ("cyd", 3)].iter().map(|(n, p)| holder(n, *p)).collect();
        let holders: Vec<_> = people.iter().map(|(h, _)| h.clone()).collect();
        let dealt = deal("123456789012", 1, &key.secret, &holders, 2).unwrap();
        // The transit key as production derives it (crypto/x25519.rs); the foreign one
        // below is age's own type.
        let transit = keys::derive_identity(LABEL_TRANSIT, &[9u8; 32]).unwrap();
        let tr = transit.to_public();
        let c: Vec<_> = dealt.iter().zip(&people).map(|(d, (_, id))| hand_over(d, id, &tr)).collect();

        let opened = combine(&transit, "123456789012", 1, &key.recipient, &c[..2], 2).unwrap();
        assert_eq!(opened.recipient(), key.recipient);
        assert!(combine(&transit, "123456789012", 1, &key.recipient, &[c[2].clone(), c[0].clone()], 2).is_ok());

        // Fewer than k.
        assert_eq!(
            combine(&transit, "123456789012", 1, &key.recipient, &c[..1], 2).err(),
            Some(QuorumError::TooFew { have: 1, need: 2 })
        );
        // The same person twice.
        assert!(matches!(
            combine(&transit, "123456789012", 1, &key.recipient, &[c[0].clone(), c[0].clone()], 2),
            Err(QuorumError::Duplicate { .. })
        ));
        // A share presented as someone else's.
        let mut swapped = c[1].clone();
        swapped.person = "cyd".into();
        assert!(matches!(
            combine(&transit, "123456789012", 1, &key.recipient, &[c[0].clone(), swapped], 2),
            Err(QuorumError::Foreign { person, .. }) if person == "cyd"
        ));
        // Another account or key version.
        assert!(matches!(
            combine(&transit, "210987654321", 1, &key.recipient, &c[..2], 2),
            Err(QuorumError::Foreign { .. })
        ));
        assert!(matches!(
            combine(&transit, "123456789012", 2, &key.recipient, &c[..2], 2),
            Err(QuorumError::Foreign { .. })
        ));
        // Corrupted ciphertext, or encrypted to another transit key.
        let mut corrupt = c[1].clone();
        let n = corrupt.ciphertext.len();
        corrupt.ciphertext[n - 5] ^= 1;
        assert_eq!(
            combine(&transit, "123456789012", 1, &key.recipient, &[c[0].clone(), corrupt], 2).err(),
            Some(QuorumError::Unreadable { person: "bob".into() })
        );
        let other = age::x25519::Identity::generate();
        let foreign = hand_over(&dealt[1], &people[1].1, &other.to_public());
        assert_eq!(
            combine(&transit, "123456789012", 1, &key.recipient, &[c[0].clone(), foreign], 2).err(),
            Some(QuorumError::Unreadable { person: "bob".into() })
        );
        // A share of another dealing of the same key version combines to garbage.
        let other_deal = deal("123456789012", 1, &fresh_account_key().unwrap().secret, &holders, 2).unwrap();
        let stale = hand_over(&other_deal[1], &people[1].1, &tr);
        assert_eq!(
            combine(&transit, "123456789012", 1, &key.recipient, &[c[0].clone(), stale], 2).err(),
            Some(QuorumError::WrongKey)
        );
    }

    #[test]
    fn a_share_opens_with_any_key_of_its_holder_and_no_one_elses() {
        let key = fresh_account_key().unwrap();
        let a1 = prf_share_identity(&[1; 32]).unwrap();
        let a2 = prf_share_identity(&[2; 32]).unwrap();
        let b = prf_share_identity(&[3; 32]).unwrap();
        let holders = vec![
            Holder { person: "ann".into(), recipients: vec![a1.to_public().to_string(), a2.to_public().to_string()] },
            Holder { person: "bob".into(), recipients: vec![b.to_public().to_string()] },
        ];
        let dealt = deal("123456789012", 3, &key.secret, &holders, 2).unwrap();
        assert!(age::decrypt(&a1, &dealt[0].ciphertext).is_ok());
        assert!(age::decrypt(&a2, &dealt[0].ciphertext).is_ok());
        assert!(age::decrypt(&b, &dealt[0].ciphertext).is_err());
        assert!(deal("123456789012", 3, &key.secret, &holders, 3).is_err(), "n < k is refused");
        assert!(deal("123456789012", 3, &key.secret, &holders, 1).is_err(), "k = 1 is not a quorum");
    }

    #[test]
    fn transit_key_round_trips_through_the_vault_and_is_bound_to_its_checkout() {
        use crate::crypto::{UnsealedVault, seal::SealKey};
        let seal = SealKey::from_bytes(Zeroizing::new([9; 32]));
        let vault = UnsealedVault::create(&seal).unwrap();
        let t = new_transit(&vault.recipient, "123456789012", "c-1").unwrap();
        let id = vault.vault.transit_identity("123456789012", "c-1", &t.sealed).unwrap();
        assert_eq!(id.to_public().to_string(), t.recipient);
        assert!(vault.vault.transit_identity("123456789012", "c-2", &t.sealed).is_err());
    }
}
