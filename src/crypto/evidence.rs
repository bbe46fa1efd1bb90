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
    /// RSASSA-PKCS1-v1_5 with SHA-256; recorded, not verified offline by this tool.
    RS256 { n: String, e: String },
}

impl PublicKeyRecord {
    pub fn from_cose(k: &COSEKey) -> Option<Self> {
        let b = |v: &[u8]| URL_SAFE_NO_PAD.encode(v);
        match (&k.type_, &k.key) {
            (COSEAlgorithm::ES256, COSEKeyType::EC_EC2(ec)) => Some(Self::ES256 {
                x: b(&ec.x),
                y: b(&ec.y),
            }),
            (COSEAlgorithm::ES384, COSEKeyType::EC_EC2(ec)) => Some(Self::ES384 {
                x: b(&ec.x),
                y: b(&ec.y),
            }),
            (COSEAlgorithm::RS256, COSEKeyType::RSA(rsa)) => Some(Self::RS256 {
                n: b(&rsa.n),
                e: b(&rsa.e),
            }),
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
    #[error("authenticatorData is not for this relying party")]
    RpIdMismatch,
    #[error("the authenticator did not report user verification")]
    NotUserVerified,
    #[error("the signature does not verify against the key recorded at enrolment")]
    BadSignature,
    #[error("{0} signatures are recorded but not verified offline")]
    Unsupported(&'static str),
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    type_: String,
    challenge: String,
}

fn unb64(s: &str) -> Result<Vec<u8>, EvidenceError> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| EvidenceError::Encoding)
}

/// Check one approval's evidence completely.
pub fn verify(
    pk: &PublicKeyRecord,
    ev: &AssertionEvidence,
    rp_id: &str,
) -> Result<(), EvidenceError> {
    let client_data_json = unb64(&ev.client_data_json)?;
    let auth_data = unb64(&ev.authenticator_data)?;
    let signature = unb64(&ev.signature)?;
    let cd: ClientData =
        serde_json::from_slice(&client_data_json).map_err(|_| EvidenceError::Encoding)?;
    if cd.type_ != "webauthn.get" {
        return Err(EvidenceError::WrongType(cd.type_));
    }
    if unb64(&cd.challenge)? != unb64(&ev.challenge)? {
        return Err(EvidenceError::ChallengeMismatch);
    }
    if auth_data.len() < 37 || auth_data[..32] != Sha256::digest(rp_id.as_bytes())[..] {
        return Err(EvidenceError::RpIdMismatch);
    }
    if auth_data[32] & 0x04 == 0 {
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
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y)?)
                .map_err(|_| EvidenceError::BadSignature)?;
            let sig = p256::ecdsa::Signature::from_der(&signature)
                .map_err(|_| EvidenceError::BadSignature)?;
            key.verify(&signed, &sig).is_ok()
        }
        PublicKeyRecord::ES384 { x, y } => {
            let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1(x, y)?)
                .map_err(|_| EvidenceError::BadSignature)?;
            let sig = p384::ecdsa::Signature::from_der(&signature)
                .map_err(|_| EvidenceError::BadSignature)?;
            key.verify(&signed, &sig).is_ok()
        }
        PublicKeyRecord::RS256 { .. } => return Err(EvidenceError::Unsupported("RS256")),
    };
    if ok {
        Ok(())
    } else {
        Err(EvidenceError::BadSignature)
    }
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
        let pk = PublicKeyRecord::ES256 {
            x: b(&bytes[1..33]),
            y: b(&bytes[33..65]),
        };
        let challenge = b(&[1u8; 32]);
        let cdj = format!(
            r#"{{"type":"{typ}","challenge":"{challenge}","origin":"http://localhost:8080"}}"#
        );
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
        assert_eq!(verify(&pk, &ev, "localhost"), Ok(()));
        assert_eq!(
            verify(&pk, &ev, "example.com"),
            Err(EvidenceError::RpIdMismatch)
        );
        assert_eq!(
            verify(
                &pk,
                &AssertionEvidence {
                    challenge: b(&[2u8; 32]),
                    ..ev.clone()
                },
                "localhost"
            ),
            Err(EvidenceError::ChallengeMismatch)
        );
        let mut sig = unb64(&ev.signature).unwrap();
        let last = sig.len() - 1;
        sig[last] ^= 1;
        assert_eq!(
            verify(
                &pk,
                &AssertionEvidence {
                    signature: b(&sig),
                    ..ev.clone()
                },
                "localhost"
            ),
            Err(EvidenceError::BadSignature)
        );
        let (pk2, ev2) = signed_evidence(0x01, "webauthn.get");
        assert_eq!(
            verify(&pk2, &ev2, "localhost"),
            Err(EvidenceError::NotUserVerified)
        );
        let (pk3, ev3) = signed_evidence(0x05, "webauthn.create");
        assert!(matches!(
            verify(&pk3, &ev3, "localhost"),
            Err(EvidenceError::WrongType(_))
        ));
    }
}
