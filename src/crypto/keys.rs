//! The one primitive: any 32 secret bytes → an age X25519 identity, via HKDF-SHA256
//! with a domain-separation label. Its public side is an ordinary `age1…` recipient.
use std::str::FromStr;

use age::x25519::Recipient;
use bech32::{Bech32, Hrp};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use super::{CryptoError, x25519::Identity};

/// Labels: one per use, so the same bytes never yield the same key in two roles.
pub const LABEL_SEAL: &str = "breakglass/v1/seal-key";
pub const LABEL_VAULT: &str = "breakglass/v1/vault-key";
pub const LABEL_ACCOUNT: &str = "breakglass/v1/account-key";
/// Quorum mode: a WebAuthn PRF output → a custodian's share identity. The browser derives
/// the same (web/static/quorum.js); tests/vectors/prf-share-key.json pins both.
pub const LABEL_PRF_SHARE: &str = "breakglass/v1/prf-share-key";
/// The per-checkout transit key that handed-over shares are encrypted to.
pub const LABEL_TRANSIT: &str = "breakglass/v1/transit-key";
/// The PRF extension's salt is the SHA-256 of this (`prf_salt`).
pub const PRF_SALT_INPUT: &str = "breakglass/prf/v1";

pub fn random_bytes<const N: usize>() -> Result<Zeroizing<[u8; N]>, CryptoError> {
    let mut buf = Zeroizing::new([0u8; N]);
    getrandom::fill(buf.as_mut_slice()).map_err(|e| CryptoError::Random(e.to_string()))?;
    Ok(buf)
}

/// The 32-byte X25519 scalar for `label` from 32 secret bytes.
fn derive_scalar(label: &str, secret: &[u8; 32]) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    let hk = Hkdf::<Sha256>::new(None, secret);
    let mut scalar = Zeroizing::new([0u8; 32]);
    hk.expand(label.as_bytes(), scalar.as_mut_slice()).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(scalar)
}

/// Derive the age identity for `label` from 32 secret bytes (its unwrap runs on
/// AWS-LC: `x25519.rs`).
pub fn derive_identity(label: &str, secret: &[u8; 32]) -> Result<Identity, CryptoError> {
    Identity::from_secret_bytes(&derive_scalar(label, secret)?)
}

/// The same identity as age's own type, for its `AGE-SECRET-KEY-1…` text: tests look
/// for that text where it must not be, and check the two types agree.
pub fn derive_age_identity(label: &str, secret: &[u8; 32]) -> Result<age::x25519::Identity, CryptoError> {
    let scalar = derive_scalar(label, secret)?;
    // age only constructs identities from their Bech32 text form.
    let hrp = Hrp::parse("age-secret-key-").map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut encoded = bech32::encode::<Bech32>(hrp, scalar.as_slice()).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    encoded.make_ascii_uppercase();
    let identity = age::x25519::Identity::from_str(&encoded).map_err(|e| CryptoError::Kdf(e.to_string()));
    encoded.zeroize();
    identity
}

/// The fixed salt the browser sends in `extensions.prf.eval.first`: SHA-256("breakglass/prf/v1").
pub fn prf_salt() -> [u8; 32] {
    <Sha256 as sha2::Digest>::digest(PRF_SALT_INPUT.as_bytes()).into()
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

    #[test]
    fn prf_share_identities_match_the_vector_shared_with_the_browser() {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        use secrecy::ExposeSecret;

        let v: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/prf-share-key.json")).unwrap();
        assert_eq!(v["label"], LABEL_PRF_SHARE);
        assert_eq!(v["prf_salt_input"], PRF_SALT_INPUT);
        assert_eq!(v["prf_salt_hex"], hex::encode(prf_salt()));
        assert_eq!(v["prf_salt_b64url"], URL_SAFE_NO_PAD.encode(prf_salt()));
        let cases = v["cases"].as_array().unwrap();
        assert!(cases.len() >= 3);
        for c in cases {
            let prf: [u8; 32] = hex::decode(c["prf_output_hex"].as_str().unwrap()).unwrap().try_into().unwrap();
            let identity = derive_age_identity(LABEL_PRF_SHARE, &prf).unwrap();
            assert_eq!(identity.to_string().expose_secret(), c["identity"].as_str().unwrap(), "{}", c["name"]);
            assert_eq!(identity.to_public().to_string(), c["recipient"].as_str().unwrap(), "{}", c["name"]);
            let fast = derive_identity(LABEL_PRF_SHARE, &prf).unwrap();
            assert_eq!(fast.to_public().to_string(), c["recipient"].as_str().unwrap(), "{}", c["name"]);
        }
    }
}
