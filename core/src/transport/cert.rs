//! The few facts the client reads from an X.509 certificate: its SubjectPublicKeyInfo (for
//! pinning) and its signature algorithm (which picks the tls-server-end-point hash, RFC 5929
//! section 4.1). A minimal DER walker; anything malformed is an error, never a panic.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// One DER element: its tag, the whole encoding and the contents.
struct Tlv<'a> {
    tag: u8,
    whole: &'a [u8],
    contents: &'a [u8],
}

fn read_tlv(data: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in data.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let whole = data.get(..end)?;
    Some((Tlv { tag, whole, contents: &whole[header..] }, &data[end..]))
}

const SEQUENCE: u8 = 0x30;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const VERSION: u8 = 0xa0;

/// The certificate's TBSCertificate fields up to the public key, and its signature algorithm OID.
fn split(cert: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (outer, _) = read_tlv(cert).filter(|(t, _)| t.tag == SEQUENCE)?;
    let (tbs, rest) = read_tlv(outer.contents).filter(|(t, _)| t.tag == SEQUENCE)?;
    let (alg, _) = read_tlv(rest).filter(|(t, _)| t.tag == SEQUENCE)?;
    let (oid, _) = read_tlv(alg.contents).filter(|(t, _)| t.tag == OID)?;
    Some((tbs, oid.contents))
}

/// The DER SubjectPublicKeyInfo (tag and length included), or `None` when the certificate
/// cannot be read.
pub(crate) fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let (tbs, _) = split(cert)?;
    let mut rest = tbs.contents;
    let (first, after) = read_tlv(rest)?;
    if first.tag == VERSION {
        rest = after;
    }
    // serialNumber, signature, issuer, validity, subject, then subjectPublicKeyInfo.
    for _ in 0..5 {
        rest = read_tlv(rest)?.1;
    }
    let (spki, _) = read_tlv(rest).filter(|(t, _)| t.tag == SEQUENCE)?;
    Some(spki.whole)
}

/// The contents of the subjectPublicKey BIT STRING without its unused-bits octet (for RSA the
/// DER `RSAPublicKey`): what CredSSP's `pubKeyAuth` is computed over (MS-CSSP 3.1.5).
pub(crate) fn subject_public_key(cert: &[u8]) -> Option<&[u8]> {
    let (spki, _) = read_tlv(subject_public_key_info(cert)?)?;
    let (_, rest) = read_tlv(spki.contents).filter(|(t, _)| t.tag == SEQUENCE)?;
    let (bits, _) = read_tlv(rest).filter(|(t, _)| t.tag == BIT_STRING)?;
    let (&unused_bits, key) = bits.contents.split_first()?;
    (unused_bits == 0).then_some(key)
}

/// SHA-256 of the certificate's SubjectPublicKeyInfo: the value a pin names.
pub(crate) fn spki_sha256(cert: &[u8]) -> Option<[u8; 32]> {
    subject_public_key_info(cert).map(|spki| Sha256::digest(spki).into())
}

/// SHA-256 of the whole certificate: its fingerprint in audit events.
pub(crate) fn fingerprint_sha256(cert: &[u8]) -> [u8; 32] {
    Sha256::digest(cert).into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndPointHash {
    Sha256,
    Sha384,
    Sha512,
}

// Signature algorithm OIDs (DER contents) whose hash is stronger than SHA-256.
const SHA384_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c];
const SHA512_WITH_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d];
const ECDSA_WITH_SHA384: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03];
const ECDSA_WITH_SHA512: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04];

/// RFC 5929 4.1: the certificate's signature hash, except that MD5 and SHA-1 become SHA-256.
/// Algorithms without a separate hash (RSASSA-PSS parameters, EdDSA) use SHA-256, as Windows does.
fn end_point_hash(signature_oid: &[u8]) -> EndPointHash {
    match signature_oid {
        SHA384_WITH_RSA | ECDSA_WITH_SHA384 => EndPointHash::Sha384,
        SHA512_WITH_RSA | ECDSA_WITH_SHA512 => EndPointHash::Sha512,
        _ => EndPointHash::Sha256,
    }
}

/// The `tls-server-end-point` channel binding data: the prefix and the certificate's hash.
pub(crate) fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    let (_, oid) = split(cert)?;
    let digest = match end_point_hash(oid) {
        EndPointHash::Sha256 => Sha256::digest(cert).to_vec(),
        EndPointHash::Sha384 => Sha384::digest(cert).to_vec(),
        EndPointHash::Sha512 => Sha512::digest(cert).to_vec(),
    };
    let mut out = b"tls-server-end-point:".to_vec();
    out.extend_from_slice(&digest);
    Some(out)
}

/// The SEC_CHANNEL_BINDINGS structure sspi takes: a 32-byte header whose only non-zero fields are
/// the application data's length and offset, followed by the data.
pub(crate) fn sec_channel_bindings(application_data: &[u8]) -> Vec<u8> {
    const HEADER: u32 = 32;
    let mut out = vec![0u8; 24];
    let len = u32::try_from(application_data.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&HEADER.to_le_bytes());
    out.extend_from_slice(application_data);
    out
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fuzzing entry point (`fuzz/` and `core/tests/fuzz_corpus.rs`): runs every reader of
/// certificate bytes over `data`. Not part of the API.
#[doc(hidden)]
pub fn fuzz_der(data: &[u8]) {
    let _ = subject_public_key_info(data);
    let _ = subject_public_key(data);
    let _ = spki_sha256(data);
    let _ = tls_server_end_point(data);
    let _ = parse_pin(&String::from_utf8_lossy(data));
}

/// Reads a pin: 64 hex digits, optionally with `sha256/` before or `:` between byte pairs.
pub(crate) fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    let t = t.strip_prefix("sha256/").or_else(|| t.strip_prefix("sha256:")).unwrap_or(t);
    let digits: String = t.chars().filter(|c| *c != ':').collect();
    if digits.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(digits.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate (ECDSA P-256, ecdsa-with-SHA256) made with openssl for this test.
    const CERT_P256: &str = "MIIBfDCCASOgAwIBAgIUPXIi76VDcC3zJthU5siAmbHdy3UwCgYIKoZIzj0EAwIwFDESMBAGA1UEAwwJbG9jYWxob3N0MB4XDTI2MTEyNTE0Mzg1OVoXDTM2MTEyMjE0Mzg1OVowFDESMBAGA1UEAwwJbG9jYWxob3N0MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEetBfMPOLVJVlj44933qhhOj3EkXCj3OSbz3G01b1ppeEkDNO5H966Ej3cJQDM8JSoMwjhx0LHgDxIYIKvBE/T6NTMFEwHQYDVR0OBBYEFPCbIjT5TeT1VOmrXbE/C/hcY1AiMB8GA1UdIwQYMBaAFPCbIjT5TeT1VOmrXbE/C/hcY1AiMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgBRqprSt3JrrJJh+Oc2kfmalH5yBGFFeaKouZhCq15+oCIFTe59lcGs+xAhtwnWcEbZ54rqoTaVDxrEb/k+NqPAWu";

    fn der(b64: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn reads_spki_and_signature_hash() {
        let cert = der(CERT_P256);
        let spki = subject_public_key_info(&cert).expect("spki");
        assert_eq!(spki[0], SEQUENCE);
        // The same value as `openssl x509 -pubkey | openssl pkey -pubin -outform der | sha256sum`.
        assert_eq!(
            hex(&spki_sha256(&cert).unwrap()),
            "736cd4bb0656211c285783c2c9393320f2069ea1f7da41b92de983ad107be56d"
        );
        let key = subject_public_key(&cert).expect("subjectPublicKey");
        // An uncompressed P-256 point, the last 65 bytes of the SubjectPublicKeyInfo.
        assert_eq!((key.len(), key[0]), (65, 0x04));
        assert!(spki.ends_with(key));
        let cb = tls_server_end_point(&cert).unwrap();
        assert_eq!(cb.len(), "tls-server-end-point:".len() + 32);
        assert_eq!(&cb[21..], Sha256::digest(&cert).as_slice());
    }

    #[test]
    fn stronger_signature_hashes_are_kept() {
        assert_eq!(end_point_hash(SHA384_WITH_RSA), EndPointHash::Sha384);
        assert_eq!(end_point_hash(ECDSA_WITH_SHA512), EndPointHash::Sha512);
        // sha1WithRSAEncryption becomes SHA-256.
        assert_eq!(end_point_hash(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05]), EndPointHash::Sha256);
    }

    #[test]
    fn malformed_certificates_are_refused_without_panicking() {
        let cert = der(CERT_P256);
        for cut in 0..cert.len() {
            let _ = subject_public_key_info(&cert[..cut]);
            let _ = subject_public_key(&cert[..cut]);
            let _ = tls_server_end_point(&cert[..cut]);
        }
        assert!(subject_public_key_info(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_none());
        assert!(tls_server_end_point(&[]).is_none());
    }

    #[test]
    fn channel_bindings_layout() {
        let b = sec_channel_bindings(b"abc");
        assert_eq!(b.len(), 35);
        assert_eq!(&b[24..28], &3u32.to_le_bytes());
        assert_eq!(&b[28..32], &32u32.to_le_bytes());
        assert_eq!(&b[32..], b"abc");
    }

    #[test]
    fn pins_parse_in_common_spellings() {
        let hexpin = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let want = parse_pin(hexpin).unwrap();
        assert_eq!(hex(&want), hexpin);
        assert_eq!(parse_pin(&format!("sha256/{hexpin}")), Some(want));
        let colons: Vec<String> = want.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(parse_pin(&colons.join(":")), Some(want));
        assert!(parse_pin("abcd").is_none());
        assert!(parse_pin(&"zz".repeat(32)).is_none());
    }
}
