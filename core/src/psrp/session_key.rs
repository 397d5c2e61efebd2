//! The PSRP session key exchange and SecureString encryption (MS-PSRP 2.2.2.3, 2.2.2.4,
//! 2.2.5.1.24; PROTOCOL.md C.8).
//!
//! The client sends its RSA-2048 public key as a CAPI PUBLICKEYBLOB; the server answers with a
//! 256-bit AES key encrypted to it (RSAES-PKCS1-v1_5) inside a CAPI SIMPLEBLOB. SecureStrings are
//! then UTF-16LE, PKCS#7-padded, AES-256-CBC with a zero IV, a fresh CBC state for each string.

use std::fmt;

use aes::Aes256;
use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, Pkcs1v15Encrypt, RsaPrivateKey};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

const PUBLICKEYBLOB: [u8; 4] = [0x06, 0x02, 0x00, 0x00];
const CALG_RSA_KEYX: [u8; 4] = [0x00, 0xA4, 0x00, 0x00];
const RSA1: [u8; 4] = *b"RSA1";
const SIMPLEBLOB: [u8; 4] = [0x01, 0x02, 0x00, 0x00];
const CALG_AES_256: [u8; 4] = [0x10, 0x66, 0x00, 0x00];
const KEY_BITS: usize = 2048;

/// The client's RSA key pair for the exchange. Never printed.
#[derive(Clone)]
pub struct ClientKeyPair {
    key: RsaPrivateKey,
}

impl fmt::Debug for ClientKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClientKeyPair(<redacted>)")
    }
}

impl ClientKeyPair {
    /// Generates a fresh RSA-2048 key pair from the operating system's randomness.
    pub fn generate() -> Result<Self> {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::try_from_rng(&mut rand::rngs::SysRng)
            .map_err(|e| Error::protocol(format!("no randomness for the session key pair: {e}")))?;
        let key = RsaPrivateKey::new(&mut rng, KEY_BITS)
            .map_err(|e| Error::protocol(format!("cannot generate the session key pair: {e}")))?;
        Ok(Self { key })
    }

    /// A key pair from its primes and public exponent (big-endian bytes), for tests with a
    /// published key.
    pub fn from_primes(p: &[u8], q: &[u8], e: u32) -> Result<Self> {
        let bits = (KEY_BITS / 2) as u32;
        let big =
            |b: &[u8]| BoxedUint::from_be_slice(b, bits).map_err(|e| Error::protocol(format!("bad prime: {e:?}")));
        let e = BoxedUint::from_be_slice(&e.to_be_bytes(), bits).map_err(|e| Error::protocol(format!("{e:?}")))?;
        let key = RsaPrivateKey::from_p_q(big(p)?, big(q)?, e)
            .map_err(|e| Error::protocol(format!("invalid RSA key: {e}")))?;
        Ok(Self { key })
    }

    /// The PUBLIC_KEY message's blob: a CAPI PUBLICKEYBLOB with the modulus little-endian.
    pub fn public_key_blob(&self) -> Vec<u8> {
        let n = self.key.n_bytes();
        let e = self.key.e_bytes();
        let mut e_le = [0u8; 4];
        for (i, b) in e.iter().rev().take(4).enumerate() {
            e_le[i] = *b;
        }
        let mut blob = Vec::with_capacity(20 + KEY_BITS / 8);
        blob.extend_from_slice(&PUBLICKEYBLOB);
        blob.extend_from_slice(&CALG_RSA_KEYX);
        blob.extend_from_slice(&RSA1);
        blob.extend_from_slice(&(KEY_BITS as u32).to_le_bytes());
        blob.extend_from_slice(&e_le);
        let mut modulus = vec![0u8; KEY_BITS / 8];
        // n_bytes is big-endian and may be shorter than the key; CAPI wants it little-endian.
        for (i, b) in n.iter().rev().enumerate().take(KEY_BITS / 8) {
            modulus[i] = *b;
        }
        blob.extend_from_slice(&modulus);
        blob
    }

    /// Decrypts the ENCRYPTED_SESSION_KEY blob (a CAPI SIMPLEBLOB).
    pub fn decrypt_session_key(&self, blob: &[u8]) -> Result<SessionKey> {
        if blob.len() < 12 + KEY_BITS / 8 {
            return Err(Error::protocol(format!("session key blob of {} bytes is too short", blob.len())));
        }
        if blob[0..4] != SIMPLEBLOB || blob[4..8] != CALG_AES_256 || blob[8..12] != CALG_RSA_KEYX {
            return Err(Error::protocol("session key blob is not an AES-256 SIMPLEBLOB for RSA key exchange"));
        }
        // CAPI stores the RSA ciphertext little-endian.
        let mut ct: Vec<u8> = blob[12..12 + KEY_BITS / 8].to_vec();
        ct.reverse();
        let mut key = self
            .key
            .decrypt(Pkcs1v15Encrypt, &ct)
            .map_err(|e| Error::protocol(format!("cannot decrypt the session key: {e}")))?;
        if key.len() != 32 {
            key.zeroize();
            return Err(Error::protocol("the session key is not 256 bits"));
        }
        let mut k = [0u8; 32];
        k.copy_from_slice(&key);
        key.zeroize();
        Ok(SessionKey(Zeroizing::new(k)))
    }
}

/// The AES-256 session key. Zeroized on drop, never printed.
#[derive(Clone)]
pub struct SessionKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

type Enc = cbc::Encryptor<Aes256>;
type Dec = cbc::Decryptor<Aes256>;

impl SessionKey {
    /// A key from raw bytes (tests, or a key agreed elsewhere).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// Encrypts a string into SecureString ciphertext (the bytes inside `<SS>` before base64).
    pub fn encrypt_string(&self, plaintext: &str) -> Vec<u8> {
        let utf16: Zeroizing<Vec<u8>> = Zeroizing::new(plaintext.encode_utf16().flat_map(u16::to_le_bytes).collect());
        Enc::new(&(*self.0).into(), &[0u8; 16].into()).encrypt_padded_vec::<Pkcs7>(&utf16)
    }

    /// Decrypts SecureString ciphertext. The result is zeroized on drop.
    pub fn decrypt_string(&self, ciphertext: &[u8]) -> Result<Zeroizing<String>> {
        let plain = Zeroizing::new(
            Dec::new(&(*self.0).into(), &[0u8; 16].into())
                .decrypt_padded_vec::<Pkcs7>(ciphertext)
                .map_err(|_| Error::protocol("SecureString does not decrypt with the session key"))?,
        );
        if plain.len() % 2 != 0 {
            return Err(Error::protocol("SecureString plaintext is not UTF-16"));
        }
        let units: Zeroizing<Vec<u16>> =
            Zeroizing::new(plain.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect());
        String::from_utf16(&units)
            .map(Zeroizing::new)
            .map_err(|_| Error::protocol("SecureString plaintext is not valid UTF-16"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    const KEY: &str = "6d4a21e2b04dcaf4454df18779e72b1ea0fa85fd3817d067e174e4edb3326acd";

    #[test]
    fn securestrings_match_windows_both_ways() {
        // Vector securestring-aes-real.
        let key = SessionKey::from_bytes(unhex(KEY).try_into().unwrap());
        assert_eq!(key.decrypt_string(&b64("rTm4n3bxaFOIgdjhDDV5OA==")).unwrap().as_str(), "abc");
        assert_eq!(key.encrypt_string("Hello World"), b64("GXD6gSYvWjfp54Vgl3jLpuNMBhNdfWFRbM1QdeUNYFU="));
        assert_eq!(key.decrypt_string(&key.encrypt_string("pässwörd 🔑")).unwrap().as_str(), "pässwörd 🔑");
        assert!(key.decrypt_string(b"short").is_err());
        assert_eq!(format!("{key:?}"), "SessionKey(<redacted>)");
    }

    #[test]
    fn generated_key_blob_has_the_capi_layout() {
        let pair = ClientKeyPair::generate().unwrap();
        let blob = pair.public_key_blob();
        assert_eq!(blob.len(), 276);
        assert_eq!(&blob[..20], &unhex("0602000000a40000525341310008000001000100")[..]);
        assert_eq!(blob[275] & 0x80, 0x80, "the most significant modulus byte comes last");
    }
    #[test]
    fn decrypts_the_recorded_windows_session_key() {
        // Vector psrp-key-exchange-real: pypsrp's published test key against Windows PowerShell.
        let pair = ClientKeyPair::from_primes(
            &unhex("f8417a30800b68c766c29f80991870f0912052a967755c307c2f99300c65e9c1493f8f49c4706ebe26bd82c4435de417f12ca13402a3419edc1b444e30cffb205dba8d828574022d13974b7d217a20107b6cbecaa529c13868f429d56d10973da7e773c4a056fa3d5b4cf96ba92c3b9c378bb9c3a9f2214ced38711025f39355"),
            &unhex("c9b3671a98095c024dbd29894c559301868edf49a1e87b3d8d37ee5d186319ddde827811c5e54a07e739644cec83b36e8972b4b50ac00577d80987a67cbf8967aa4c12fce69b9b2120f9ddaf2e90acc7399380e849f2f7def18dc7f81b012249337a4b1964c24d625260b8764014f29eb76e8fc5d57e6e4d5472fcd30e0eafb3"),
            65537,
        )
        .unwrap();
        assert_eq!(
            pair.public_key_blob(),
            b64(
                "BgIAAACkAABSU0ExAAgAAAEAAQBvH62/q5haEUStHGs+p3e5TIR1xaL+Ab9pYjd1pB4oYN1Rbru+i2BpzCNAvmE+y018u0idwQnoE70Pvq16bcxeXiaXajuKrqx+e+cg/Yu0emyZZspUN8opTPXceSEVXR8jhpSrnpI6ziP0ek+/Mu7836HJ5DnikE6h7tSk1sRnJ3XVQFS8EbcfI+sigy30rJjZA/aD1HRpXpyoABoK8hSpihvnJcVNr3uY8DibjLSKIoeGF3nK0V3peMUC3cbxjvwOsGjFPBCuA/exOKkNuPEraLtEv1PvaFmRFUR0M9lj4WjKMhU8sle04IZJlYTvX6xuX8nYS1P3RsRdsqa0YpnD"
            )
        );
        let key = pair
            .decrypt_session_key(&b64("AQIAABBmAAAApAAAyiHuF/hQKKq/XcqpzNRoVsSjI3deLpXbcwpKWdlsxSKS/5c0Mw3d0Wj3YGCZRjbQXbY2mG8/KyrXgt0sK7891btBvIO1rlMzRmiyv5IygUtBOHm3cknyCPNEJ68JK93m01lo4UPe7bLcINFWla4dOPl55cFlKqo7JnWpzD3jp8rYCjtJlM4fUG2GUt+doHJVL9uZV3jxSatwQnSMe3QFuZWYbUU0pCutdb/SQiByM4KIch3Tq5N1mFjVnBLJUClwZL/a4fU4VwGqPmhw8f60EdJP6iaixln/iyZ0WZse6dd0ys1WdidLVl5jVR5EbUC/oLmEfx1xb4p5Dck1DBb5cw=="))
            .unwrap();
        assert_eq!(&*key.0, &unhex(KEY)[..]);
        assert!(pair.decrypt_session_key(&[0u8; 100]).is_err());
    }
}
