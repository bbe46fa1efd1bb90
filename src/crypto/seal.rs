//! The seal key: 32 bytes from a key file, or argon2id(passphrase, salt, params).
use std::{
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::CryptoError;

/// 32 bytes that unseal the vault key. Never logged, never cloned.
pub struct SealKey(Zeroizing<[u8; 32]>);

impl SealKey {
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// argon2id parameters, stored next to the sealed vault key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option (64 MiB, 3 passes), one lane: about
    /// 0.2 s on the reference machine (docs/performance.md).
    fn default() -> Self {
        Self { m_kib: 64 * 1024, t: 3, p: 1 }
    }
}

pub const MIN_PASSPHRASE_CHARS: usize = 12;

pub fn derive_from_passphrase(
    passphrase: &SecretString,
    salt: &[u8],
    params: KdfParams,
) -> Result<SealKey, CryptoError> {
    let p = Params::new(params.m_kib, params.t, params.p, Some(32)).map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let mut out = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
        .hash_password_into(passphrase.expose_secret().as_bytes(), salt, out.as_mut_slice())
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(SealKey(out))
}

/// Whether `path` is a credential systemd handed over (`LoadCredential=`): a file
/// directly inside `$CREDENTIALS_DIRECTORY`. systemd makes those readable by the service
/// through an ACL, which shows as a group read bit (mode 0440). Only that one bit is
/// tolerated, and only when the comparison holds after resolving symlinks and `..`
/// (so `$CREDENTIALS_DIRECTORY/../elsewhere` is an ordinary file) and the directory
/// itself is closed to others and to group writes, as systemd creates it.
fn is_systemd_credential(path: &Path, credentials_dir: Option<&std::ffi::OsStr>) -> bool {
    let Some(dir) = credentials_dir.filter(|d| !d.is_empty()).map(Path::new) else {
        return false;
    };
    let (Ok(dir), Ok(file)) = (dir.canonicalize(), path.canonicalize()) else {
        return false;
    };
    if file.parent() != Some(dir.as_path()) {
        return false;
    }
    std::fs::metadata(&dir).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o027 == 0)
}

fn check_private(
    path: &Path,
    missing: impl Fn() -> CryptoError,
    too_open: impl Fn(u32) -> CryptoError,
) -> Result<std::fs::Metadata, CryptoError> {
    check_private_in(path, std::env::var_os("CREDENTIALS_DIRECTORY").as_deref(), missing, too_open)
}

fn check_private_in(
    path: &Path,
    credentials_dir: Option<&std::ffi::OsStr>,
    missing: impl Fn() -> CryptoError,
    too_open: impl Fn(u32) -> CryptoError,
) -> Result<std::fs::Metadata, CryptoError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => {
            return Err(CryptoError::Io(format!("cannot read {}: {e}", path.display())));
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    // Group read only for a systemd credential; nothing else for anyone but the owner.
    let forbidden = if is_systemd_credential(path, credentials_dir) { 0o037 } else { 0o077 };
    if mode & forbidden != 0 {
        return Err(too_open(mode));
    }
    Ok(meta)
}

/// Read a key file: 32 raw bytes, or 64 hex characters with an optional newline.
/// Refuses files that group or others can read.
pub fn read_key_file(path: &Path) -> Result<SealKey, CryptoError> {
    check_private(
        path,
        || CryptoError::KeyFileMissing(path.to_owned()),
        |mode| CryptoError::KeyFileTooOpen { path: path.to_owned(), mode },
    )?;
    let raw = Zeroizing::new(
        std::fs::read(path).map_err(|e| CryptoError::Io(format!("cannot read {}: {e}", path.display())))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if raw.len() == 32 {
        key.copy_from_slice(&raw);
        return Ok(SealKey(key));
    }
    let text = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    hex::decode_to_slice(text, key.as_mut_slice()).map_err(|_| CryptoError::KeyFileMalformed(path.to_owned()))?;
    Ok(SealKey(key))
}

/// Create a new random key file (hex, mode 0600). Fails if the file exists.
pub fn create_key_file(path: &Path) -> Result<SealKey, CryptoError> {
    let key = super::random_bytes::<32>()?;
    let mut hex_text = Zeroizing::new(hex::encode(key.as_slice()));
    hex_text.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CryptoError::Io(format!("cannot create key file {}: {e}", path.display())))?;
    f.write_all(hex_text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| CryptoError::Io(format!("cannot write key file {}: {e}", path.display())))?;
    Ok(SealKey(key))
}

/// Read a passphrase from the first line of a file that only its owner can read.
pub fn read_passphrase_file(path: &Path) -> Result<SecretString, CryptoError> {
    check_private(
        path,
        || CryptoError::PassphraseFileMissing(path.to_owned()),
        |mode| CryptoError::PassphraseFileTooOpen { path: path.to_owned(), mode },
    )?;
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| CryptoError::Io(format!("cannot read passphrase file {}: {e}", path.display())))?,
    );
    let line = text.lines().next().unwrap_or_default();
    Ok(SecretString::from(line.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip_and_permission_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seal.key");
        let k = create_key_file(&path).unwrap();
        assert_eq!(read_key_file(&path).unwrap().bytes(), k.bytes());
        assert!(create_key_file(&path).is_err(), "never overwrites a key file");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key_file(&path).err().unwrap();
        assert!(matches!(e, CryptoError::KeyFileTooOpen { mode: 0o644, .. }), "{e}");
        assert!(e.to_string().contains("chmod 600"));

        let missing = dir.path().join("nope.key");
        assert!(matches!(read_key_file(&missing), Err(CryptoError::KeyFileMissing(_))));

        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not hex").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(read_key_file(&bad), Err(CryptoError::KeyFileMalformed(_))));

        let raw = dir.path().join("raw.key");
        std::fs::write(&raw, [9u8; 32]).unwrap();
        std::fs::set_permissions(&raw, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(read_key_file(&raw).unwrap().bytes(), &[9u8; 32]);
    }

    #[test]
    fn only_a_file_directly_in_a_closed_credentials_directory_may_be_group_readable() {
        let root = tempfile::tempdir().unwrap();
        let creds = root.path().join("credentials");
        std::fs::create_dir(&creds).unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
        let key = |dir: &Path, name: &str, mode: u32| {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
            let p = dir.join(name);
            std::fs::write(&p, [7u8; 32]).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let inside = key(&creds, "seal.key", 0o440);
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
        let check = |p: &Path, dir: Option<&Path>| {
            check_private_in(
                p,
                dir.map(Path::as_os_str),
                || CryptoError::KeyFileMissing(p.to_owned()),
                |mode| CryptoError::KeyFileTooOpen { path: p.to_owned(), mode },
            )
            .map(|_| ())
        };
        assert!(check(&inside, Some(&creds)).is_ok(), "a systemd credential (0440 through its ACL)");
        assert!(check(&inside, None).is_err(), "without CREDENTIALS_DIRECTORY the same file is too open");
        assert!(check(&inside, Some(Path::new(""))).is_err());

        // A group-readable file outside, named through `..` or a symlink, is not a credential.
        let outside = key(root.path(), "other.key", 0o440);
        let dotdot = creds.join("..").join("other.key");
        assert!(check(&dotdot, Some(&creds)).is_err(), "{}", dotdot.display());
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
        let link = creds.join("link.key");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o500)).unwrap();
        assert!(check(&link, Some(&creds)).is_err(), "a symlink out of the directory");
        // A subdirectory does not count either.
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
        let sub = creds.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let nested = key(&sub, "nested.key", 0o440);
        assert!(check(&nested, Some(&creds)).is_err());

        // Group write, other bits, or a directory open to others: refused.
        let gw = key(&creds, "gw.key", 0o460);
        assert!(check(&gw, Some(&creds)).is_err());
        let world = key(&creds, "world.key", 0o444);
        assert!(check(&world, Some(&creds)).is_err());
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check(&inside, Some(&creds)).is_err(), "a credentials directory others can list");
        std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o700)).unwrap();
    }

    #[test]
    fn passphrase_derivation_depends_on_passphrase_and_salt() {
        let small = KdfParams { m_kib: 1024, t: 1, p: 1 };
        let a =
            derive_from_passphrase(&SecretString::from("correct horse battery"), b"saltsaltsaltsalt", small).unwrap();
        let b =
            derive_from_passphrase(&SecretString::from("correct horse battery"), b"saltsaltsaltsalt", small).unwrap();
        let c =
            derive_from_passphrase(&SecretString::from("correct horse battery!"), b"saltsaltsaltsalt", small).unwrap();
        let d =
            derive_from_passphrase(&SecretString::from("correct horse battery"), b"SALTSALTSALTSALT", small).unwrap();
        assert_eq!(a.bytes(), b.bytes());
        assert_ne!(a.bytes(), c.bytes());
        assert_ne!(a.bytes(), d.bytes());
    }
}
