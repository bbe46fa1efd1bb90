//! WebAuthn approval evidence, checked offline: the signature over
//! `authenticatorData ‖ SHA-256(clientDataJSON)` against the public key recorded at
//! enrolment, the challenge, the RP id hash and the user-verified flag.
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use p256::ecdsa::signature::Verifier;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{COSEAlgorithm, COSEKey, COSEKeyType};

/// A credential's public key as recorded at enrolment (and in the audit log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "alg")]
pub enum PublicKeyRecord {
    /// ECDSA P-256 with SHA-256; `x`, `y` base64url coordinates.
    ES256 { x: String, y: String },
    /// ECDSA P-384 with SHA-384.
    ES384 { x: String, y: String },
    /// RSASSA-PKCS1-v1_5 with SHA-256 (Windows Hello); `n`, `e` base64url big-endian.
    RS256 { n: String, e: String },
}

impl PublicKeyRecord {
    pub fn from_cose(k: &COSEKey) -> Option<Self> {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match (&k.type_, &k.key) {
            (COSEAlgorithm::ES256, COSEKeyType::EC_EC2(ec)) => Some(Self::ES256 { x: b(&ec.x), y: b(&ec.y) }),
            (COSEAlgorithm::ES384, COSEKeyType::EC_EC2(ec)) => Some(Self::ES384 { x: b(&ec.x), y: b(&ec.y) }),
            (COSEAlgorithm::RS256, COSEKeyType::RSA(rsa)) => Some(Self::RS256 { n: b(&rsa.n), e: b(&rsa.e) }),
            _ => None,
        }
    }
}

/// What was kept of one assertion (all base64url, as stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionEvidence {
    pub credential_id: String,
    pub challenge: String,
    pub client_data_json: String,
    pub authenticator_data: String,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    #[error("a field is not valid base64url")]
    Encoding,
    #[error("clientDataJSON is not a WebAuthn assertion (type {0:?})")]
    WrongType(String),
    #[error("clientDataJSON's challenge is not the challenge issued for this request")]
    ChallengeMismatch,
    #[error("clientDataJSON comes from origin {0:?}, not the service's")]
    OriginMismatch(String),
    #[error("authenticatorData is not for this relying party")]
    RpIdMismatch,
    #[error("the authenticator did not report user presence and verification")]
    NotUserVerified,
    #[error("the signature does not verify against the key recorded at enrolment")]
    BadSignature,
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    type_: String,
    challenge: String,
    #[serde(default)]
    origin: String,
    #[serde(default, rename = "crossOrigin")]
    cross_origin: bool,
}

fn unb64(s: &str) -> Result<Vec<u8>, EvidenceError> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| EvidenceError::Encoding)
}

/// The signature counter in `authenticator_data` (bytes 33..37, big-endian), when the
/// field decodes and is long enough.
pub fn sign_count(ev: &AssertionEvidence) -> Option<u32> {
    let ad = unb64(&ev.authenticator_data).ok()?;
    Some(u32::from_be_bytes(ad.get(33..37)?.try_into().ok()?))
}

/// May `origin` (from clientDataJSON) use credentials of RP id `rp_id`? Its host must be
/// the RP id or a subdomain of it, over https — or over http on `localhost` only.
fn origin_fits_rp_id(origin: &str, rp_id: &str) -> bool {
    let Ok(u) = url::Url::parse(origin) else { return false };
    let Some(host) = u.host_str() else { return false };
    let host_ok = host == rp_id || host.strip_suffix(rp_id).is_some_and(|h| h.ends_with('.'));
    let scheme_ok = u.scheme() == "https" || (u.scheme() == "http" && host == "localhost");
    host_ok && scheme_ok
}

/// Check one assertion's evidence completely. `origin` is the origin recorded with the
/// challenge: clientDataJSON's `origin` must be the same origin. When none was recorded
/// the check is not skipped: the origin must then fit the RP id (https on the RP id or
/// a subdomain of it; http only on `localhost`).
pub fn verify(
    pk: &PublicKeyRecord,
    ev: &AssertionEvidence,
    rp_id: &str,
    origin: Option<&str>,
) -> Result<(), EvidenceError> {
    let client_data_json = unb64(&ev.client_data_json)?;
    let auth_data = unb64(&ev.authenticator_data)?;
    let signature = unb64(&ev.signature)?;
    let cd: ClientData = serde_json::from_slice(&client_data_json).map_err(|_| EvidenceError::Encoding)?;
    if cd.type_ != "webauthn.get" {
        return Err(EvidenceError::WrongType(cd.type_));
    }
    if unb64(&cd.challenge)? != unb64(&ev.challenge)? {
        return Err(EvidenceError::ChallengeMismatch);
    }
    // Compare origins as origins (`http://h:1` and `http://h:1/` are the same one).
    let normal = |o: &str| url::Url::parse(o).map(|u| u.origin().ascii_serialization()).ok();
    let origin_ok = match origin {
        Some(o) => normal(o).is_some() && normal(o) == normal(&cd.origin),
        None => origin_fits_rp_id(&cd.origin, rp_id),
    };
    if !origin_ok || cd.cross_origin {
        return Err(EvidenceError::OriginMismatch(cd.origin));
    }
    if auth_data.len() < 37 || auth_data[..32] != Sha256::digest(rp_id.as_bytes())[..] {
        return Err(EvidenceError::RpIdMismatch);
    }
    // UP (0x01) and UV (0x04): the person was present and verified.
    if auth_data[32] & 0x05 != 0x05 {
        return Err(EvidenceError::NotUserVerified);
    }
    let mut signed = auth_data;
    signed.extend_from_slice(&Sha256::digest(&client_data_json));
    let sec1 = |x: &str, y: &str| -> Result<Vec<u8>, EvidenceError> {
        let mut v = vec![0x04];
        v.extend(unb64(x)?);
        v.extend(unb64(y)?);
        Ok(v)
    };
    let ok = match pk {
        PublicKeyRecord::ES256 { x, y } => {
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y)?).map_err(|_| EvidenceError::BadSignature)?;
            let sig = p256::ecdsa::Signature::from_der(&signature).map_err(|_| EvidenceError::BadSignature)?;
            key.verify(&signed, &sig).is_ok()
        }
        PublicKeyRecord::ES384 { x, y } => {
            let key =
                p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y)?).map_err(|_| EvidenceError::BadSignature)?;
            let sig = p384::ecdsa::Signature::from_der(&signature).map_err(|_| EvidenceError::BadSignature)?;
            key.verify(&signed, &sig).is_ok()
        }
        PublicKeyRecord::RS256 { n, e } => {
            use rsa::{BoxedUint, RsaPublicKey, pkcs1v15};
            let key = RsaPublicKey::new(
                BoxedUint::from_be_slice_vartime(&unb64(n)?),
                BoxedUint::from_be_slice_vartime(&unb64(e)?),
            )
            .map_err(|_| EvidenceError::BadSignature)?;
            let sig = pkcs1v15::Signature::try_from(signature.as_slice()).map_err(|_| EvidenceError::BadSignature)?;
            pkcs1v15::VerifyingKey::<rsa::sha2::Sha256>::new(key).verify(&signed, &sig).is_ok()
        }
    };
    if ok { Ok(()) } else { Err(EvidenceError::BadSignature) }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::{SigningKey, signature::Signer};

    use super::*;

    fn b(v: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn signed_evidence(flags: u8, typ: &str) -> (PublicKeyRecord, AssertionEvidence) {
        let sk = SigningKey::from_slice(&[7u8; 32]).unwrap();
        let point = sk.verifying_key().to_sec1_point(false);
        let bytes = point.as_bytes();
        let pk = PublicKeyRecord::ES256 { x: b(&bytes[1..33]), y: b(&bytes[33..65]) };
        let challenge = b(&[1u8; 32]);
        let cdj = format!(r#"{{"type":"{typ}","challenge":"{challenge}","origin":"http://localhost:8080"}}"#);
        let mut ad = Sha256::digest(b"localhost").to_vec();
        ad.push(flags);
        ad.extend([0, 0, 0, 1]);
        let mut msg = ad.clone();
        msg.extend(Sha256::digest(cdj.as_bytes()));
        let sig: p256::ecdsa::Signature = sk.sign(&msg);
        let ev = AssertionEvidence {
            credential_id: "c".into(),
            challenge,
            client_data_json: b(cdj.as_bytes()),
            authenticator_data: b(&ad),
            signature: b(sig.to_der().as_bytes()),
        };
        (pk, ev)
    }

    #[test]
    fn good_evidence_verifies_and_each_alteration_is_caught() {
        let (pk, ev) = signed_evidence(0x05, "webauthn.get");
        assert_eq!(verify(&pk, &ev, "localhost", Some("http://localhost:8080")), Ok(()));
        assert_eq!(verify(&pk, &ev, "localhost", None), Ok(()));
        assert!(matches!(
            verify(&pk, &ev, "localhost", Some("https://evil.example")),
            Err(EvidenceError::OriginMismatch(_))
        ));
        assert_eq!(verify(&pk, &ev, "example.com", Some("http://localhost:8080")), Err(EvidenceError::RpIdMismatch));
        // No recorded origin: the check is not skipped, the origin must fit the RP id.
        assert!(matches!(verify(&pk, &ev, "example.com", None), Err(EvidenceError::OriginMismatch(_))));
        assert_eq!(sign_count(&ev), Some(1));
        let other_challenge = AssertionEvidence { challenge: b(&[2u8; 32]), ..ev.clone() };
        assert_eq!(verify(&pk, &other_challenge, "localhost", None), Err(EvidenceError::ChallengeMismatch));
        let mut sig = unb64(&ev.signature).unwrap();
        let last = sig.len() - 1;
        sig[last] ^= 1;
        let bad_sig = AssertionEvidence { signature: b(&sig), ..ev.clone() };
        assert_eq!(verify(&pk, &bad_sig, "localhost", None), Err(EvidenceError::BadSignature));
        let (pk2, ev2) = signed_evidence(0x01, "webauthn.get");
        assert_eq!(verify(&pk2, &ev2, "localhost", None), Err(EvidenceError::NotUserVerified));
        let (pk4, ev4) = signed_evidence(0x04, "webauthn.get");
        assert_eq!(verify(&pk4, &ev4, "localhost", None), Err(EvidenceError::NotUserVerified), "UV without UP");
        let (pk3, ev3) = signed_evidence(0x05, "webauthn.create");
        assert!(matches!(verify(&pk3, &ev3, "localhost", None), Err(EvidenceError::WrongType(_))));
    }

    #[test]
    fn without_a_recorded_origin_the_origin_must_fit_the_rp_id() {
        assert!(origin_fits_rp_id("https://custody.example.com", "custody.example.com"));
        assert!(origin_fits_rp_id("https://bg.custody.example.com:8443", "custody.example.com"));
        assert!(origin_fits_rp_id("http://localhost:8080", "localhost"));
        assert!(!origin_fits_rp_id("http://custody.example.com", "custody.example.com"), "plain http");
        assert!(!origin_fits_rp_id("https://evilcustody.example.com", "custody.example.com"));
        assert!(!origin_fits_rp_id("https://example.com", "custody.example.com"));
        assert!(!origin_fits_rp_id("", "localhost"));
    }

    #[test]
    fn rs256_evidence_signed_by_openssl_verifies_and_a_flipped_bit_does_not() {
        // Fixture made with `openssl genrsa 2048` and `openssl dgst -sha256 -sign` over
        // authenticatorData ‖ SHA-256(clientDataJSON): an independent implementation.
        let pk = PublicKeyRecord::RS256 { n: "0-6zQLw8PECljxHUmKBXY2F7OHQG_Y9REl9i8_7X23mjvR1Nf9ZF-zDB2SKY61UR4zdYOZT3PMgBdSFYdUQ0gD0LLWVosbB2Udk2yfwICxVmlnXHtpVRMiaZUpovZzr_ygvPfpi0OhFWIWDU3UHfyNX9C23G-nKJ2G2sKma1btbvot4cPVwFTiXGqjg_yI4263f_QTVIZHqH9D-7Rad1CszkJI5RuxDXiiYcrP0m2FFCvNnbz2Fg54fI25LLPx1Ocfdq4CUr-QYEk43KamkDQu_WdEhsl64v2bW8pKMWyGGpq9AMFH0DjRYZUFUMq900rK0ck2-pdG8HZrUGqqJibQ".into(), e: "AQAB".into() };
        let ev = AssertionEvidence {
            credential_id: "c".into(),
            challenge: "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE".into(),
            client_data_json: "eyJ0eXBlIjoid2ViYXV0aG4uZ2V0IiwiY2hhbGxlbmdlIjoiQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRUJBUUVCQVFFQkFRRSIsIm9yaWdpbiI6Imh0dHA6Ly9sb2NhbGhvc3Q6ODA4MCJ9".into(),
            authenticator_data: "SZYN5YgOjGh0NBcPZHZgW4_krrmihjLHmVzzuoMdl2MFAAAAAQ".into(),
            signature: "NLOTXEMryzeEziFPtj6Y4TPIALcmYtx3PNFRVjpbyEq8MXjai9Fllntq_W3VUk9GK1wPMw9-3J8D5jMZYMHSRPlxV5QmGu-ClCX2z_ODkc68nve6nhnaZ2udDdy8kw_PV7W1X4Vpms37yFyvMXBl2JAhmpaxuC-Xgm-J64FSiE00hm3TrCxe_PY5PW7ZyCyPSyznJQwk7iN2Uqs5nanFd0CvtDaWwG1Y-n0gz8TcjtJOy1Z8IVSruDBpLBAWWO0EDX-NB2ZfQWt_loVQ7KVk-DYccwPLU8SErA5Fn_0xs7QO8UfQOJaIwWrPla9J3D40e6EmuR760_illjusGIz7xA".into(),
        };
        assert_eq!(verify(&pk, &ev, "localhost", Some("http://localhost:8080")), Ok(()));
        let mut sig = unb64(&ev.signature).unwrap();
        sig[10] ^= 0x40;
        assert_eq!(
            verify(&pk, &AssertionEvidence { signature: b(&sig), ..ev }, "localhost", None),
            Err(EvidenceError::BadSignature)
        );
    }
}
