//! Encrypted PKCS#8 private keys (`ENCRYPTED PRIVATE KEY`, PBES2) for client certificates.

use std::path::Path;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Decrypts the first `ENCRYPTED PRIVATE KEY` block of `pem` with `password`.
pub(crate) fn decrypt_pkcs8_pem(pem: &[u8], password: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>> {
    const BEGIN: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &[u8] = b"-----END ENCRYPTED PRIVATE KEY-----";
    let unreadable = || Error::InvalidConfig(format!("{} holds no readable encrypted private key", path.display()));
    let start = find(pem, BEGIN).ok_or_else(unreadable)?;
    let end = find(&pem[start..], END).map(|e| start + e + END.len()).ok_or_else(unreadable)?;
    let (_, der) = pkcs8::der::pem::decode_vec(&pem[start..end]).map_err(|_| unreadable())?;
    let der = Zeroizing::new(der);
    let info = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice())
        .map_err(|e| Error::InvalidConfig(format!("cannot read the encrypted key {}: {e}", path.display())))?;
    // A wrong password shows as a padding or structure error; say so without echoing anything.
    let plain = info.decrypt(password).map_err(|_| {
        Error::InvalidConfig(format!(
            "cannot decrypt the key {}: wrong key_password or unsupported cipher",
            path.display()
        ))
    })?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(plain.as_bytes().to_vec())))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
