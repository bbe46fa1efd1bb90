//! The age X25519 identity every decryption here uses, with its Diffie-Hellman on
//! AWS-LC.
//!
//! age's own identity does the X25519 scalar multiplication in curve25519-dalek and
//! derives its public key again on every unwrap: ~120–170 µs per ciphertext on the
//! 2-core hosts we measure on, against ~25–30 µs for AWS-LC's X25519 (already in the
//! build under rustls). A release opens three ciphertexts (the account key, the
//! password, the TOTP seed); with this identity the release step's median fell by
//! ~170–200 µs, and unwrapping an account key plus one secret from 153 to 73 µs
//! (docs/performance.md).
//!
//! Only the stanza unwrap is ours; the format stays age's. It follows the age
//! specification (c2sp.org/age, "X25519 recipient stanza") and age 0.12's
//! `x25519::Identity` rule for rule: tag `X25519`, exactly one argument that is the
//! canonical unpadded base64 of 32 bytes, a 32-byte body; the shared secret must not
//! be all zero; the wrap key is HKDF-SHA256(salt = ephemeral share ‖ our public key,
//! info = "age-encryption.org/v1/X25519"); the body is ChaCha20-Poly1305 under it with
//! a zero nonce. HKDF and the AEAD are age-core's own functions. Encryption stays
//! entirely age's (`age::x25519::Recipient`). Tests check every rule against age's
//! identity, and ciphertexts from the `age` command line.
use age::DecryptError;
use age_core::{
    format::{FILE_KEY_BYTES, FileKey, Stanza},
    primitives::{aead_decrypt, hkdf},
};
use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey, X25519};
use base64::{Engine, prelude::BASE64_STANDARD_NO_PAD};
use bech32::{Bech32, Hrp};
use zeroize::{Zeroize, Zeroizing};

use super::CryptoError;

const STANZA_TAG: &str = "X25519";
const KEY_LABEL: &[u8] = b"age-encryption.org/v1/X25519";

/// An age X25519 identity (a secret scalar). AWS-LC keeps the scalar on the heap and
/// wipes it when the key is freed (`OPENSSL_free` zeroes what it frees). What is *not*
/// wiped, as with age's own identity: the stack temporaries of AWS-LC's X25519
/// assembly (a clamped copy of the scalar, the ladder state) and HKDF's internal state
/// inside age-core.
pub struct Identity {
    key: PrivateKey,
    public: [u8; 32],
    recipient: age::x25519::Recipient,
}

impl Identity {
    /// The identity for 32 secret bytes, the same as age's `AGE-SECRET-KEY-1…` of them
    /// (X25519 clamps the scalar on use, in both).
    pub fn from_secret_bytes(scalar: &Zeroizing<[u8; 32]>) -> Result<Self, CryptoError> {
        let key = PrivateKey::from_private_key(&X25519, scalar.as_slice())
            .map_err(|_| CryptoError::Kdf("AWS-LC refused the X25519 scalar".into()))?;
        let public_key = key.compute_public_key().map_err(|_| CryptoError::Kdf("X25519 public key".into()))?;
        let public: [u8; 32] =
            public_key.as_ref().try_into().map_err(|_| CryptoError::Kdf("X25519 public key length".into()))?;
        let hrp = Hrp::parse("age").map_err(|e| CryptoError::Kdf(e.to_string()))?;
        let recipient = bech32::encode::<Bech32>(hrp, &public)
            .map_err(|e| CryptoError::Kdf(e.to_string()))?
            .parse::<age::x25519::Recipient>()
            .map_err(|e| CryptoError::Kdf(format!("X25519 public key as an age recipient: {e}")))?;
        Ok(Self { key, public, recipient })
    }

    /// The public side, as age's recipient type (encryption is age's).
    pub fn to_public(&self) -> age::x25519::Recipient {
        self.recipient.clone()
    }
}

impl age::Identity for Identity {
    fn unwrap_stanza(&self, stanza: &Stanza) -> Option<Result<FileKey, DecryptError>> {
        if stanza.tag != STANZA_TAG {
            return None;
        }
        let [arg] = &stanza.args[..] else {
            return Some(Err(DecryptError::InvalidHeader));
        };
        // Canonical unpadded base64 of exactly 32 bytes (a 33-byte buffer catches
        // longer input instead of an error about the buffer).
        let mut epk = [0u8; 33];
        match BASE64_STANDARD_NO_PAD.decode_slice(arg, &mut epk) {
            Ok(32) => {}
            _ => return Some(Err(DecryptError::InvalidHeader)),
        }
        let epk = &epk[..32];
        if stanza.body.len() != FILE_KEY_BYTES + 16 {
            return Some(Err(DecryptError::InvalidHeader));
        }
        // AWS-LC refuses a shared secret of all zeros (a low-order share); the check
        // below says so in our code too, as defence in depth that no test can reach
        // while AWS-LC does its part. AWS-LC's only other failure is an allocation
        // failure: refusing the file then (fail closed) is the right outcome too.
        let shared = agreement::agree(&self.key, UnparsedPublicKey::new(&X25519, epk), (), |s| {
            let mut out = Zeroizing::new([0u8; 32]);
            if s.len() != 32 {
                return Err(());
            }
            out.copy_from_slice(s);
            Ok(out)
        });
        let Ok(shared) = shared else {
            return Some(Err(DecryptError::InvalidHeader));
        };
        if shared.iter().fold(0u8, |acc, b| acc | b) == 0 {
            return Some(Err(DecryptError::InvalidHeader));
        }
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(epk);
        salt[32..].copy_from_slice(&self.public);
        let wrap_key = Zeroizing::new(hkdf(&salt, KEY_LABEL, shared.as_slice()));
        // Not ours (another recipient's stanza) is not an error: age tries the next.
        aead_decrypt(&wrap_key, FILE_KEY_BYTES, &stanza.body).ok().map(|mut plain| {
            Ok(FileKey::init_with_mut(|file_key| {
                file_key.copy_from_slice(&plain);
                plain.zeroize();
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::str::FromStr;

    use age::secrecy::ExposeSecret;

    use super::*;

    fn pair(seed: u8) -> (Identity, age::x25519::Identity) {
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8);
        }
        let hrp = Hrp::parse("age-secret-key-").unwrap();
        let text = bech32::encode::<Bech32>(hrp, bytes.as_slice()).unwrap().to_ascii_uppercase();
        (Identity::from_secret_bytes(&bytes).unwrap(), age::x25519::Identity::from_str(&text).unwrap())
    }

    fn encrypt_to(recipients: &[age::x25519::Recipient], plain: &[u8]) -> Vec<u8> {
        let e = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient)).unwrap();
        let mut out = vec![];
        let mut w = e.wrap_output(&mut out).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap();
        out
    }

    fn decrypt(identity: &dyn age::Identity, ct: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let d = age::Decryptor::new(ct)?;
        let mut r = d.decrypt(std::iter::once(identity))?;
        let mut out = vec![];
        std::io::Read::read_to_end(&mut r, &mut out).map_err(DecryptError::Io)?;
        Ok(out)
    }

    /// A stanza like age's: tag, one argument, a body.
    fn stanza(tag: &str, args: &[&str], body: Vec<u8>) -> Stanza {
        Stanza { tag: tag.into(), args: args.iter().map(|a| (*a).to_owned()).collect(), body }
    }

    fn age_stanza_of(ct: &[u8]) -> (String, Vec<u8>) {
        // The header's recipient line: "-> X25519 <arg>\n<base64 body>\n".
        let text = String::from_utf8_lossy(ct);
        let line = text.lines().find(|l| l.starts_with("-> X25519 ")).unwrap();
        let arg = line.trim_start_matches("-> X25519 ").to_owned();
        let body_line = text.lines().skip_while(|l| !l.starts_with("-> X25519 ")).nth(1).unwrap();
        (arg, BASE64_STANDARD_NO_PAD.decode(body_line).unwrap())
    }

    /// age's own test key pair (age 0.12, `native::x25519::tests`).
    #[test]
    fn ages_test_key_pair_gives_ages_public_key() {
        let (_, bytes) =
            bech32::decode("AGE-SECRET-KEY-1GQ9778VQXMMJVE8SK7J6VT8UJ4HDQAJUVSFCWCM02D8GEWQ72PVQ2Y5J33").unwrap();
        let scalar = Zeroizing::new(<[u8; 32]>::try_from(bytes.as_slice()).unwrap());
        assert_eq!(
            Identity::from_secret_bytes(&scalar).unwrap().to_public().to_string(),
            "age1t7rxyev2z3rw82stdlrrepyc39nvn86l5078zqkf5uasdy86jp6svpy7pa"
        );
    }

    #[test]
    fn the_public_key_and_every_decryption_agree_with_ages_own_identity() {
        for seed in 0..16u8 {
            let (ours, theirs) = pair(seed);
            assert_eq!(ours.to_public().to_string(), theirs.to_public().to_string(), "seed {seed}");
            let ct = encrypt_to(&[ours.to_public()], b"the same plaintext either way");
            assert_eq!(decrypt(&ours, &ct).unwrap(), decrypt(&theirs, &ct).unwrap());
        }
        // Several recipients: ours is found whichever stanza it is.
        let (a, _) = pair(1);
        let (b, _) = pair(2);
        let (c, _) = pair(3);
        let ct = encrypt_to(&[a.to_public(), b.to_public(), c.to_public()], b"three");
        for id in [&a, &b, &c] {
            assert_eq!(decrypt(id, &ct).unwrap(), b"three");
        }
        let (stranger, _) = pair(4);
        assert!(matches!(decrypt(&stranger, &ct), Err(DecryptError::NoMatchingKeys)));
    }

    #[test]
    fn stanzas_age_refuses_are_refused_the_same_way() {
        let (ours, theirs) = pair(9);
        let ct = encrypt_to(&[ours.to_public()], b"x");
        let (arg, body) = age_stanza_of(&ct);
        let padded = format!("{arg}=");
        // The last of 43 base64 characters carries 2 spare bits; setting one is
        // non-canonical.
        let non_canonical = {
            let mut a = arg.clone().into_bytes();
            let last = a.len() - 1;
            let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let pos = alphabet.iter().position(|c| *c == a[last]).unwrap();
            a[last] = alphabet[pos ^ 1];
            String::from_utf8(a).unwrap()
        };
        // The real share with one more byte: 44 characters, 33 bytes.
        let too_long = BASE64_STANDARD_NO_PAD.encode([BASE64_STANDARD_NO_PAD.decode(&arg).unwrap(), vec![0]].concat());
        let mut cases: Vec<(String, Stanza)> = vec![
            ("no argument".into(), stanza("X25519", &[], body.clone())),
            ("two arguments".into(), stanza("X25519", &[&arg, &arg], body.clone())),
            ("padded share".into(), stanza("X25519", &[&padded], body.clone())),
            ("non-canonical share".into(), stanza("X25519", &[&non_canonical], body.clone())),
            ("short share".into(), stanza("X25519", &[&arg[..40]], body.clone())),
            ("body too short".into(), stanza("X25519", &[&arg], body[..31].to_vec())),
            ("body too long".into(), stanza("X25519", &[&arg], [body.clone(), vec![0]].concat())),
            ("share one byte too long".into(), stanza("X25519", &[&too_long], body.clone())),
        ];
        // Every low-order point of Curve25519 (each gives the all-zero secret), and the
        // same with the ignored top bit set, and the out-of-range encodings of them
        // (p-1, p, p+1): how the share's u is read must not matter.
        for (i, hex_point) in [
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0100000000000000000000000000000000000000000000000000000000000000",
            "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
            "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        ]
        .into_iter()
        .enumerate()
        {
            let mut point: [u8; 32] = hex::decode(hex_point).unwrap().try_into().unwrap();
            for top_bit in [false, true] {
                if top_bit {
                    point[31] |= 0x80;
                }
                let share = BASE64_STANDARD_NO_PAD.encode(point);
                cases.push((
                    format!("low-order point {i}, top bit {top_bit}"),
                    stanza("X25519", &[&share], body.clone()),
                ));
            }
        }
        for (name, s) in &cases {
            let mine = age::Identity::unwrap_stanza(&ours, s);
            let age_says = age::Identity::unwrap_stanza(&theirs, s);
            assert!(matches!(mine, Some(Err(DecryptError::InvalidHeader))), "{name}: ours accepted or skipped it");
            assert!(matches!(age_says, Some(Err(DecryptError::InvalidHeader))), "{name}: age differs");
        }
        // Another tag is not ours to judge; a tampered body is "not for us" (None).
        assert!(age::Identity::unwrap_stanza(&ours, &stanza("scrypt", &[&arg], body.clone())).is_none());
        let mut flipped = body.clone();
        flipped[0] ^= 1;
        assert!(age::Identity::unwrap_stanza(&ours, &stanza("X25519", &[&arg], flipped.clone())).is_none());
        assert!(age::Identity::unwrap_stanza(&theirs, &stanza("X25519", &[&arg], flipped)).is_none());
        // And the untouched stanza gives both the same file key.
        let good = stanza("X25519", &[&arg], body);
        let k1 = age::Identity::unwrap_stanza(&ours, &good).unwrap().unwrap();
        let k2 = age::Identity::unwrap_stanza(&theirs, &good).unwrap().unwrap();
        assert_eq!(k1.expose_secret(), k2.expose_secret());
    }

    /// The `age` command line (another implementation, Go) encrypts; we decrypt.
    #[test]
    fn files_from_the_age_command_line_decrypt() {
        let (ours, _) = pair(5);
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in");
        std::fs::write(&input, b"from the age CLI").unwrap();
        let out = std::process::Command::new("age")
            .args(["-r", &ours.to_public().to_string(), input.to_str().unwrap()])
            .output()
            .expect("the `age` command line is needed (Debian package `age`; .ci/run installs it)");
        assert!(out.status.success(), "age: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(decrypt(&ours, &out.stdout).unwrap(), b"from the age CLI");
    }
}
