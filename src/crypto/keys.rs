//! The one primitive: any 32 secret bytes → an age X25519 identity, via HKDF-SHA256
//! with a domain-separation label. Its public side is an ordinary `age1…` recipient.
use std::str::FromStr;

use age::x25519::{Identity, Recipient};
use bech32::{Bech32, Hrp};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::CryptoError;

/// Labels: one per use, so the same bytes never yield the same key in two roles.
pub const LABEL_SEAL: &str = "breakglass/v1/seal-key";
pub const LABEL_VAULT: &str = "breakglass/v1/vault-key";
pub const LABEL_ACCOUNT: &str = "breakglass/v1/account-key";
/// A share recipient, from an authenticator's PRF output (computed in the browser).
pub const LABEL_PRF_SHARE: &str = "breakglass/v1/prf-share-key";
/// The per-checkout transit key that contributed shares are encrypted to.
pub const LABEL_TRANSIT: &str = "breakglass/v1/transit-key";

/// What the PRF salt is the SHA-256 of: every client evaluates PRF with
/// `SHA-256("breakglass/prf/v1")`.
pub const PRF_SALT_INPUT: &str = "breakglass/prf/v1";

pub fn prf_salt() -> [u8; 32] {
    use sha2::Digest;
    Sha256::digest(PRF_SALT_INPUT.as_bytes()).into()
}

pub fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut_slice()).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(buf)
}

/// Derive the age identity for `label` from 32 secret bytes.
pub fn derive_identity(label: &str, secret: &[u8; 32]) -> Result<Identity, CryptoError> {
    let hk = Hkdf::<Sha256>::new(None, secret);
    let mut scalar = Zeroizing::new([0u8; 32]);
    hk.expand(label.as_bytes(), scalar.as_mut_slice()).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    // age only constructs identities from their Bech32 text form.
    let hrp = Hrp::parse("age-secret-key-").map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut encoded = bech32::encode::<Bech32>(hrp, scalar.as_slice()).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    encoded.make_ascii_uppercase();
    let identity = Identity::from_str(&encoded).map_err(|e| CryptoError::Kdf(e.to_string()));
    encoded.zeroize();
    identity
}

pub fn parse_recipient(s: &str) -> Result<Recipient, CryptoError> {
    Recipient::from_str(s).map_err(|e| CryptoError::Kdf(format!("invalid age recipient: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_is_deterministic_and_label_separated() {
        let secret = [7u8; 32];
        let a = derive_identity(LABEL_ACCOUNT, &secret).unwrap().to_public().to_string();
        let b = derive_identity(LABEL_ACCOUNT, &secret).unwrap().to_public().to_string();
        let c = derive_identity(LABEL_VAULT, &secret).unwrap().to_public().to_string();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.starts_with("age1"));
    }
}
