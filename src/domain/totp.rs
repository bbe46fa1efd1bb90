//! The code a release shows: computed server-side from the stored seed at the
//! injected time. The seed itself never leaves.
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use totp_rs::Totp;

use super::ValidationError;

/// Below this many seconds left, the next code is shown too.
pub const SHOW_NEXT_BELOW_SECONDS: u64 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotpNow {
    pub code: String,
    pub valid_for_seconds: u64,
    pub next_code: Option<String>,
    pub period_seconds: u64,
}

/// The current code for a canonical otpauth URI at `unix` seconds.
pub fn code_at(uri: &SecretString, unix: u64) -> Result<TotpNow, ValidationError> {
    let totp = Totp::from_url(uri.expose_secret()).map_err(|_| {
        ValidationError::new("invalid_totp_seed", "The stored TOTP seed could not be read; deposit it again.")
    })?;
    let step = totp.step();
    let valid_for_seconds = step - unix % step;
    let code = totp.generate(unix).to_string();
    let next_code = (valid_for_seconds < SHOW_NEXT_BELOW_SECONDS).then(|| totp.generate(unix + step).to_string());
    Ok(TotpNow { code, valid_for_seconds, next_code, period_seconds: step })
}

#[cfg(test)]
mod tests {
    use totp_rs::Secret;

    use super::*;

    fn uri(secret: &[u8], alg: &str, digits: u8) -> SecretString {
        let b32 = Secret::from(secret.to_vec()).to_base32();
        SecretString::from(format!("otpauth://totp/t?secret={b32}&algorithm={alg}&digits={digits}&period=30"))
    }

    #[test]
    fn rfc6238_appendix_b_vectors() {
        let sha1 = uri(b"12345678901234567890", "SHA1", 8);
        let sha256 = uri(b"12345678901234567890123456789012", "SHA256", 8);
        let sha512 = uri(b"1234567890123456789012345678901234567890123456789012345678901234", "SHA512", 8);
        for (t, c1, c256, c512) in [
            (59u64, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ] {
            assert_eq!(code_at(&sha1, t).unwrap().code, c1, "SHA1 at {t}");
            assert_eq!(code_at(&sha256, t).unwrap().code, c256, "SHA256 at {t}");
            assert_eq!(code_at(&sha512, t).unwrap().code, c512, "SHA512 at {t}");
        }
    }

    #[test]
    fn seconds_left_and_next_code_near_the_boundary() {
        let u = uri(b"12345678901234567890", "SHA1", 6);
        let early = code_at(&u, 1_000_000_010).unwrap(); // 20 s into a step (1_000_000_020 is a boundary)
        assert_eq!(early.valid_for_seconds, 10);
        assert_eq!(early.next_code, None);
        let late = code_at(&u, 1_000_000_016).unwrap(); // 4 s left
        assert_eq!(late.valid_for_seconds, 4);
        assert_eq!(late.next_code.as_deref(), Some(code_at(&u, 1_000_000_020).unwrap().code.as_str()));
        assert_eq!(late.code.len(), 6);
    }
}
