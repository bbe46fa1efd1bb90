//! Signed audit checkpoints in the C2SP signed-note / tlog-checkpoint style:
//!
//! ```text
//! <origin>\n<size>\n<base64 head>\n
//! \n
//! — <key name> <base64(key id ‖ Ed25519 signature)>\n
//! ```
//!
//! The signature covers the first block (origin, size, head, each line ending in
//! `\n`). The key id is the first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key).
//! `head` is the hash of audit entry `size` (the chain head), not a Merkle root.
use base64::{Engine, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

const ALG_ED25519: u8 = 0x01;
const DASH: &str = "\u{2014} ";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub head: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the checkpoint is not a signed note of the expected form")]
    Malformed,
    #[error("the checkpoint carries no signature by {0}")]
    NoSignatureByKey(String),
    #[error("the checkpoint's signature does not verify")]
    BadSignature,
}

pub fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The verifier key, as C2SP notes print it: `name+keyid+base64(0x01 ‖ public key)`.
pub fn verifier_key(name: &str, public: &[u8; 32]) -> String {
    let mut k = vec![ALG_ED25519];
    k.extend_from_slice(public);
    format!("{name}+{}+{}", hex::encode(key_id(name, public)), STANDARD.encode(k))
}

/// Parse a verifier key back into `(name, public key)`.
pub fn parse_verifier_key(vkey: &str) -> Result<(String, [u8; 32]), NoteError> {
    // Names cannot contain '+'; the base64 key can: split from the left.
    let mut parts = vkey.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(k)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::Malformed);
    };
    let raw = STANDARD.decode(k).map_err(|_| NoteError::Malformed)?;
    let Some((&ALG_ED25519, key)) = raw.split_first() else { return Err(NoteError::Malformed) };
    let public: [u8; 32] = key.try_into().map_err(|_| NoteError::Malformed)?;
    if hex::encode(key_id(name, &public)) != id {
        return Err(NoteError::Malformed);
    }
    Ok((name.to_owned(), public))
}

fn body(c: &Checkpoint) -> String {
    format!("{}\n{}\n{}\n", c.origin, c.size, STANDARD.encode(c.head))
}

pub fn sign(key: &SigningKey, name: &str, c: &Checkpoint) -> String {
    let text = body(c);
    let sig = key.sign(text.as_bytes());
    let mut blob = key_id(name, key.verifying_key().as_bytes()).to_vec();
    blob.extend_from_slice(&sig.to_bytes());
    format!("{text}\n{DASH}{name} {}\n", STANDARD.encode(blob))
}

/// Verify a note's signature by `name`/`public` and return its checkpoint.
pub fn verify(note: &str, name: &str, public: &[u8; 32]) -> Result<Checkpoint, NoteError> {
    // A signed note ends with the newline of its last signature line: anything else
    // (a truncated copy, text appended after it) is not the note that was signed.
    if !note.ends_with('\n') || note.ends_with("\n\n") {
        return Err(NoteError::Malformed);
    }
    let (text, sigs) = note.split_once("\n\n").ok_or(NoteError::Malformed)?;
    let text = format!("{text}\n");
    let mut lines = text.lines();
    let (Some(origin), Some(size), Some(head), None) = (lines.next(), lines.next(), lines.next(), lines.next()) else {
        return Err(NoteError::Malformed);
    };
    let size: u64 = size.parse().map_err(|_| NoteError::Malformed)?;
    let head: [u8; 32] = STANDARD.decode(head).ok().and_then(|h| h.try_into().ok()).ok_or(NoteError::Malformed)?;
    let id = key_id(name, public);
    let key = VerifyingKey::from_bytes(public).map_err(|_| NoteError::BadSignature)?;
    let mut found = false;
    for line in sigs.lines() {
        let Some(rest) = line.strip_prefix(DASH) else { return Err(NoteError::Malformed) };
        let Some((signer, b64)) = rest.split_once(' ') else { return Err(NoteError::Malformed) };
        let blob = STANDARD.decode(b64).map_err(|_| NoteError::Malformed)?;
        if signer != name || blob.len() != 68 || blob[..4] != id {
            continue;
        }
        found = true;
        let sig = Signature::from_slice(&blob[4..]).map_err(|_| NoteError::BadSignature)?;
        key.verify(text.as_bytes(), &sig).map_err(|_| NoteError::BadSignature)?;
    }
    if !found {
        return Err(NoteError::NoSignatureByKey(name.to_owned()));
    }
    Ok(Checkpoint { origin: origin.to_owned(), size, head })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_checkpoints_round_trip_and_tampering_fails() {
        let key = SigningKey::from_bytes(&[3u8; 32]);
        let public = key.verifying_key().to_bytes();
        let c = Checkpoint { origin: "custody.example.com/breakglass/audit".into(), size: 42, head: [9u8; 32] };
        let note = sign(&key, "custody.example.com/breakglass/audit", &c);
        assert!(note.starts_with("custody.example.com/breakglass/audit\n42\n"), "{note}");
        assert_eq!(verify(&note, "custody.example.com/breakglass/audit", &public).unwrap(), c);
        let tampered = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(verify(&tampered, "custody.example.com/breakglass/audit", &public), Err(NoteError::BadSignature));
        let other = SigningKey::from_bytes(&[4u8; 32]).verifying_key().to_bytes();
        assert!(matches!(
            verify(&note, "custody.example.com/breakglass/audit", &other),
            Err(NoteError::NoSignatureByKey(_))
        ));
        let unterminated = note.trim_end_matches('\n');
        assert_eq!(verify(unterminated, "custody.example.com/breakglass/audit", &public), Err(NoteError::Malformed));
        assert_eq!(
            verify(&format!("{note}\n"), "custody.example.com/breakglass/audit", &public),
            Err(NoteError::Malformed)
        );
        let vkey = verifier_key("custody.example.com/breakglass/audit", &public);
        assert_eq!(parse_verifier_key(&vkey).unwrap(), ("custody.example.com/breakglass/audit".to_owned(), public));
        assert!(parse_verifier_key("nonsense").is_err());
        assert!(parse_verifier_key("name+id+").is_err(), "an empty key is refused, not a panic");
        assert!(parse_verifier_key("name+00000000+AQ==").is_err());
        // Keys whose base64 contains '+' parse too.
        for seed in 0..64u8 {
            let pk = SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes();
            let v = verifier_key("n", &pk);
            assert_eq!(parse_verifier_key(&v).unwrap().1, pk, "{v}");
        }
    }
}
