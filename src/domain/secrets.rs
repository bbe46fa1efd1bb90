//! Rules for the secrets people deposit. Values stay in `SecretString`.
use secrecy::{ExposeSecret, SecretString};
use totp_rs::{Secret, Totp};
use zeroize::Zeroizing;

use super::{SecretKind, ValidationError};

pub const PASSWORD_MIN_CHARS: usize = 8;
pub const PASSWORD_MAX_CHARS: usize = 128;
pub const NOTES_MAX_CHARS: usize = 4096;

/// Check and normalise a deposited value. Returns what is stored.
pub fn normalize_secret(kind: SecretKind, value: &SecretString) -> Result<SecretString, ValidationError> {
    match kind {
        SecretKind::RootPassword => {
            let v = value.expose_secret();
            let n = v.chars().count();
            if !(PASSWORD_MIN_CHARS..=PASSWORD_MAX_CHARS).contains(&n) {
                return Err(ValidationError::new(
                    "invalid_secret",
                    format!(
                        "An AWS root password has {PASSWORD_MIN_CHARS} to {PASSWORD_MAX_CHARS} characters; this one has {n}."
                    ),
                ));
            }
            if v.chars().any(char::is_control) {
                return Err(ValidationError::new(
                    "invalid_secret",
                    "The password contains a control character (newline, tab…): check what was pasted.",
                ));
            }
            Ok(SecretString::from(v.to_owned()))
        }
        SecretKind::TotpSeed => normalize_totp_seed(value),
        SecretKind::RecoveryNotes => {
            let v = value.expose_secret();
            if v.trim().is_empty() || v.chars().count() > NOTES_MAX_CHARS {
                return Err(ValidationError::new(
                    "invalid_secret",
                    format!("Recovery notes must be 1 to {NOTES_MAX_CHARS} characters."),
                ));
            }
            Ok(SecretString::from(v.to_owned()))
        }
    }
}

fn totp_error() -> ValidationError {
    ValidationError::new(
        "invalid_totp_seed",
        "Not a TOTP seed: paste the otpauth:// URI, or the base32 secret key AWS shows under \"Show secret key\" (letters A–Z and digits 2–7, at least 26 characters).",
    )
}

/// Accept an `otpauth://totp/…` URI or a base32 seed as AWS shows it (spaces,
/// lower case and `=` padding tolerated) and return a canonical otpauth URI.
pub fn normalize_totp_seed(value: &SecretString) -> Result<SecretString, ValidationError> {
    let input = value.expose_secret().trim();
    if input.len() > 2048 {
        return Err(totp_error());
    }
    if input.get(..10).is_some_and(|p| p.eq_ignore_ascii_case("otpauth://")) {
        // Validates algorithm, digits, period and secret length (≥ 128 bits).
        Totp::from_url(input).map_err(|_| totp_error())?;
        return Ok(SecretString::from(input.to_owned()));
    }
    let cleaned: Zeroizing<String> = Zeroizing::new(
        input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-' && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    let secret = Secret::try_from_base32(cleaned.as_str()).map_err(|_| totp_error())?;
    if secret.as_ref().len() < 16 {
        return Err(ValidationError::new(
            "invalid_totp_seed",
            "The TOTP seed is shorter than 128 bits (26 base32 characters): check that the whole key was copied.",
        ));
    }
    let uri = format!("otpauth://totp/breakglass?secret={}&algorithm=SHA1&digits=6&period=30", cleaned.as_str());
    Totp::from_url(&uri).map_err(|_| totp_error())?;
    Ok(SecretString::from(uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    // 64 base32 characters, like the seed AWS shows for a virtual MFA device.
    const AWS_SEED: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[test]
    fn base32_seed_as_aws_shows_it_is_accepted_and_normalised() {
        let canon = normalize_totp_seed(&s(AWS_SEED)).unwrap();
        let spaced = AWS_SEED
            .to_lowercase()
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(normalize_totp_seed(&s(&spaced)).unwrap().expose_secret(), canon.expose_secret());
        assert!(canon.expose_secret().starts_with("otpauth://totp/"));
    }

    #[test]
    fn otpauth_uri_is_accepted() {
        let uri = format!(
            "otpauth://totp/Amazon%20Web%20Services:root@123456789012?secret={AWS_SEED}&issuer=Amazon%20Web%20Services"
        );
        assert!(normalize_totp_seed(&s(&uri)).is_ok());
    }

    #[test]
    fn junk_and_short_seeds_are_refused() {
        for bad in ["", "not base32 !!", "JBSWY3DP", "otpauth://hotp/x?secret=JBSWY3DP", "otpauth://totp/x?secret=1111"]
        {
            assert!(normalize_totp_seed(&s(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn passwords_follow_aws_length_rules() {
        assert!(normalize_secret(SecretKind::RootPassword, &s("short")).is_err());
        assert!(normalize_secret(SecretKind::RootPassword, &s(&"x".repeat(129))).is_err());
        assert!(normalize_secret(SecretKind::RootPassword, &s("line\nbreak-in-it")).is_err());
        assert!(normalize_secret(SecretKind::RootPassword, &s("Correct-Horse-9")).is_ok());
    }
}
