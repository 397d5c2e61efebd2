//! Rewrites the authenticator of the AP-REQ sspi 0.23.1 builds, for two things sspi gets wrong
//! or leaves out: the channel-binding AP-options element, and delegation.
//!
//! **Channel binding.**
//! MS-KILE 3.2.5.8 puts `KERB_AP_OPTIONS_CBT` (0x4000) into an ad-type 143 element as a 32-bit
//! little-endian value; picky-krb 0.13.1 encodes it in 2 bytes (`40 00`). MIT's acceptor checks
//! that the element is 4 bytes and rejects the whole AP-REQ otherwise ("Invalid message type"),
//! so Kerberos with channel binding (HTTPS) fails against MIT. sspi offers no hook for the
//! element, so the finished AP-REQ is taken apart here: the authenticator is decrypted with the
//! service ticket's session key, the element widened to 4 bytes, and the authenticator encrypted
//! again. Nothing else covers the authenticator, so the AP-REQ stays valid. When a later picky-krb
//! writes 4 bytes itself, the repair changes nothing.
//!
//! **Delegation.** The GSS checksum (type 0x8003, RFC 4121 4.1.1) gets the DELEG flag and the
//! KRB-CRED of a forwardable TGT (see [`super::delegation`]), which sspi never adds.

use picky_asn1::wrapper::{ExplicitContextTag2, OctetStringAsn1};
use picky_krb::constants::key_usages::AP_REQ_AUTHENTICATOR;
use picky_krb::crypto::CipherSuite;
use picky_krb::data_types::Authenticator;
use picky_krb::gss_api::{ApplicationTag0, GssApiNegInit, KrbMessage};
use picky_krb::messages::ApReq;

use super::delegation::{self, Tgt};
use crate::error::{Error, Result};

/// The GSS checksum type.
const GSS_CHECKSUM: u32 = 0x8003;
/// GSS_C_DELEG_FLAG in the checksum's flags.
const GSS_C_DELEG_FLAG: u32 = 1;

/// ad-type 143, AD-AUTH-DATA-AP-OPTIONS.
const AD_AP_OPTIONS: [u8; 2] = [0x00, 0x8f];
/// KERB_AP_OPTIONS_CBT as MS-KILE encodes it.
const CBT_FLAG_LE32: [u8; 4] = 0x4000u32.to_le_bytes();

fn repair_err(e: impl std::fmt::Display) -> Error {
    Error::Authentication { mechanism: "kerberos", message: format!("cannot prepare the AP-REQ: {e}") }
}

/// Rewrites the authenticator of a raw Kerberos GSS token (the token of the `Kerberos` HTTP
/// scheme): widens a 2-byte AP-options element and, with `delegate`, adds the KRB-CRED. Returns
/// `None` when nothing needed changing.
pub(crate) fn rewrite_krb_token(token: &[u8], session_key: &[u8], delegate: Option<&Tgt>) -> Result<Option<Vec<u8>>> {
    let mut msg: KrbMessage<ApReq> = KrbMessage::<ApReq>::decode_application_krb_message(token).map_err(repair_err)?.0;
    let enc = &mut msg.krb_msg.0.authenticator.0;
    let suite = CipherSuite::try_from(enc.etype.0.0.as_slice()).map_err(repair_err)?;
    let cipher = suite.cipher();
    let plain = cipher.decrypt(session_key, AP_REQ_AUTHENTICATOR, &enc.cipher.0.0).map_err(repair_err)?;
    let mut authenticator: Authenticator = picky_asn1_der::from_bytes(&plain).map_err(repair_err)?;
    let mut changed = false;
    if let Some(ad) = authenticator.0.authorization_data.0.as_mut() {
        for element in ad.0.0.iter_mut() {
            if element.ad_type.0.0 == AD_AP_OPTIONS && element.ad_data.0.0.len() == 2 {
                element.ad_data.0 = OctetStringAsn1::from(CBT_FLAG_LE32.to_vec());
                changed = true;
            }
        }
    }
    if let Some(tgt) = delegate {
        let cred = delegation::krb_cred(tgt, &suite, session_key)?;
        let cksum = authenticator.0.cksum.0.as_mut().ok_or_else(|| repair_err("the authenticator has no checksum"))?;
        let kind = cksum.0.cksumtype.0.0.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
        let bytes = &mut cksum.0.checksum.0.0;
        if kind != GSS_CHECKSUM || bytes.len() < 24 {
            return Err(repair_err("the authenticator's checksum is not a GSS checksum"));
        }
        bytes.truncate(24);
        let flags = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]) | GSS_C_DELEG_FLAG;
        bytes[20..24].copy_from_slice(&flags.to_le_bytes());
        let len = u16::try_from(cred.len()).map_err(|_| repair_err("the KRB-CRED is too large"))?;
        bytes.extend_from_slice(&1u16.to_le_bytes()); // DlgOpt
        bytes.extend_from_slice(&len.to_le_bytes()); // Dlgth
        bytes.extend_from_slice(&cred);
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    let plain = picky_asn1_der::to_vec(&authenticator).map_err(repair_err)?;
    let sealed = cipher.encrypt(session_key, AP_REQ_AUTHENTICATOR, &plain).map_err(repair_err)?;
    enc.cipher = ExplicitContextTag2::from(OctetStringAsn1::from(sealed));
    picky_asn1_der::to_vec(&ApplicationTag0(msg)).map(Some).map_err(repair_err)
}

/// The same rewrite inside a SPNEGO NegTokenInit (the first token of the `Negotiate` scheme).
/// The mechListMIC covers the mechanism list, not the mechanism token, so it stays valid.
pub(crate) fn rewrite_spnego_init(token: &[u8], session_key: &[u8], delegate: Option<&Tgt>) -> Result<Option<Vec<u8>>> {
    let mut init: ApplicationTag0<GssApiNegInit> = picky_asn1_der::from_bytes(token).map_err(repair_err)?;
    let Some(mech_token) = init.0.neg_token_init.0.mech_token.0.as_mut() else { return Ok(None) };
    let Some(fixed) = rewrite_krb_token(&mech_token.0.0, session_key, delegate)? else { return Ok(None) };
    mech_token.0 = OctetStringAsn1::from(fixed);
    picky_asn1_der::to_vec(&init).map(Some).map_err(repair_err)
}
