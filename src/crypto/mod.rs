//! Cryptography: one primitive (32 secret bytes → age X25519 identity), the
//! authenticated envelope inside every age payload, and the vault seal.
pub mod checkpoint;
pub mod envelope;
pub mod evidence;
pub mod keys;
pub mod quorum;
pub mod seal;
pub mod vault;
pub mod x25519;

use std::path::PathBuf;

pub use envelope::EnvelopeHeader;
pub use keys::random_bytes;
pub use vault::{AccountKey, UnsealedVault};

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("the ciphertext could not be decrypted with this key")]
    Decrypt,
    #[error("the decrypted payload does not belong here (expected {expected}): a ciphertext was moved between rows")]
    EnvelopeMismatch { expected: String },
    #[error("the payload inside the ciphertext is malformed")]
    MalformedEnvelope,
    #[error("wrong passphrase or key file: the vault key could not be unsealed")]
    WrongSealKey,
    #[error("key file {0} does not exist: create it with `breakglass init`, or point seal.key_file at the right file")]
    KeyFileMissing(PathBuf),
    #[error("key file {path} is readable by other users (mode {mode:o}): run `chmod 600 {path}`", path = .path.display())]
    KeyFileTooOpen { path: PathBuf, mode: u32 },
    #[error("key file {0} is not 32 bytes (raw) or 64 hex characters")]
    KeyFileMalformed(PathBuf),
    #[error(
        "passphrase file {0} does not exist: create it (one line, mode 0600, owned by the service user) or fix seal.passphrase_file"
    )]
    PassphraseFileMissing(PathBuf),
    #[error("passphrase file {path} is readable by other users (mode {mode:o}): run `chmod 600 {path}`", path = .path.display())]
    PassphraseFileTooOpen { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Io(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("encryption failed: {0}")]
    Encrypt(String),
    #[error("the system random number generator failed: {0}")]
    Random(String),
}
