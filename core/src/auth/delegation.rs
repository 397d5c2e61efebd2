//! Kerberos delegation (the double hop): a forwardable TGT, handed to the server inside the
//! AP-REQ's authenticator checksum as a KRB-CRED (RFC 4121 4.1.1.1, MS-KILE 3.2.5.2).
//!
//! sspi 0.23.1 asks for a forwardable ticket when told to delegate but then drops the delegation
//! ("KRB_CRED not supported") and never exposes its TGT's session key. So the client asks the
//! KDC for a forwardable TGT itself (an AS exchange with the user's password, built with sspi's
//! public message generators), and [`super::ap_req`] adds the KRB-CRED to the authenticator that
//! sspi produced.

use picky_asn1::wrapper::{
    Asn1SequenceOf, ExplicitContextTag0, ExplicitContextTag1, ExplicitContextTag2, ExplicitContextTag3, IntegerAsn1,
    OctetStringAsn1, Optional,
};
use picky_krb::constants::key_usages::{AS_REP_ENC, KRB_CRED_ENC_PART};
use picky_krb::crypto::CipherSuite;
use picky_krb::data_types::{EncKrbCredPartInner, EncryptedData, KrbCredInfo, PrincipalName, Realm, Ticket};
use picky_krb::messages::{AsRep, EncAsRepPart, EncKdcRepPart, EncTgsRepPart, KrbCred, KrbCredInner, KrbError};
use sspi::kerberos::EncryptionParams;
use sspi::kerberos::client::extractors::extract_salt_from_krb_error;
use sspi::kerberos::client::generators::{
    GenerateAsPaDataOptions, GenerateAsReqOptions, generate_as_req, generate_as_req_kdc_body,
    generate_pa_datas_for_as_req,
};
use sspi::{ClientRequestFlags, NetworkProtocol, NetworkRequest};
use zeroize::Zeroizing;

use super::kdc;
use crate::error::{Error, Result};

const KDC_ERR_PREAUTH_REQUIRED: u32 = 25;
const NT_PRINCIPAL: u8 = 1;
/// TicketFlags bit 1, `forwardable`.
const FORWARDABLE_BIT: usize = 1;

/// What the client needs to delegate: where the KDC is and who the user is.
#[derive(Clone)]
pub(crate) struct DelegationSource {
    pub kdc: url::Url,
    pub realm: String,
    pub account: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for DelegationSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelegationSource")
            .field("kdc", &self.kdc.as_str())
            .field("realm", &self.realm)
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A forwardable TGT and the encrypted part of its AS-REP (which holds its session key).
pub(crate) struct Tgt {
    ticket: Ticket,
    part: EncKdcRepPart,
    crealm: Realm,
    cname: PrincipalName,
}

impl std::fmt::Debug for Tgt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tgt").finish_non_exhaustive()
    }
}

fn deleg_err(e: impl std::fmt::Display) -> Error {
    Error::Authentication { mechanism: "kerberos", message: format!("cannot obtain a ticket to delegate: {e}") }
}

async fn send(kdc: &url::Url, der: Vec<u8>) -> Result<Vec<u8>> {
    let (protocol, data) = if kdc.scheme() == "udp" {
        (NetworkProtocol::Udp, der)
    } else {
        let mut framed = u32::try_from(der.len()).unwrap_or(u32::MAX).to_be_bytes().to_vec();
        framed.extend_from_slice(&der);
        (NetworkProtocol::Tcp, framed)
    };
    let reply = kdc::exchange(&NetworkRequest { protocol, url: kdc.clone(), data }).await.map_err(deleg_err)?;
    Ok(reply.get(4..).unwrap_or_default().to_vec())
}

/// Asks the KDC for a forwardable TGT with the user's password (AS exchange with encrypted
/// timestamp pre-authentication).
pub(crate) async fn forwardable_tgt(src: &DelegationSource) -> Result<Tgt> {
    let snames = ["krbtgt", src.realm.as_str()];
    let options = GenerateAsReqOptions {
        realm: &src.realm,
        username: &src.account,
        cname_type: NT_PRINCIPAL,
        snames: &snames,
        nonce: rand::random::<u32>() & 0x7fff_ffff,
        hostname: "psremote",
        context_requirements: ClientRequestFlags::DELEGATE,
    };
    let body = generate_as_req_kdc_body(&options).map_err(deleg_err)?;
    let pa = |salt: Vec<u8>, with_pre_auth: bool| {
        generate_pa_datas_for_as_req(&GenerateAsPaDataOptions {
            password: &src.password,
            salt,
            enc_params: EncryptionParams::default_for_client(),
            with_pre_auth,
        })
        .map_err(deleg_err)
    };
    // First without pre-authentication: the KDC answers with the salt to use.
    let first = picky_asn1_der::to_vec(&generate_as_req(pa(Vec::new(), false)?, body.clone())).map_err(deleg_err)?;
    let reply = send(&src.kdc, first).await?;
    let err: KrbError = picky_asn1_der::from_bytes(&reply)
        .map_err(|_| deleg_err("the KDC issued a ticket without pre-authentication; refusing to use it"))?;
    if err.0.error_code.0 != KDC_ERR_PREAUTH_REQUIRED {
        return Err(deleg_err(format!("the KDC answered with error {}", err.0.error_code.0)));
    }
    let salt = extract_salt_from_krb_error(&err)
        .map_err(deleg_err)?
        .unwrap_or_else(|| format!("{}{}", src.realm, src.account));
    let second =
        picky_asn1_der::to_vec(&generate_as_req(pa(salt.clone().into_bytes(), true)?, body)).map_err(deleg_err)?;
    let reply = send(&src.kdc, second).await?;
    let as_rep: AsRep = match picky_asn1_der::from_bytes(&reply) {
        Ok(r) => r,
        Err(_) => {
            let code = picky_asn1_der::from_bytes::<KrbError>(&reply).map(|e| e.0.error_code.0).ok();
            return Err(deleg_err(format!("the KDC refused the request (error {code:?})")));
        }
    };
    let rep = as_rep.0;
    let cipher = CipherSuite::try_from(rep.enc_part.0.etype.0.0.as_slice()).map_err(deleg_err)?.cipher();
    let key =
        Zeroizing::new(cipher.generate_key_from_password(src.password.as_bytes(), salt.as_bytes()).map_err(deleg_err)?);
    let plain = Zeroizing::new(cipher.decrypt(&key, AS_REP_ENC, &rep.enc_part.0.cipher.0.0).map_err(deleg_err)?);
    let part = match picky_asn1_der::from_bytes::<EncAsRepPart>(&plain) {
        Ok(p) => p.0,
        Err(_) => picky_asn1_der::from_bytes::<EncTgsRepPart>(&plain).map_err(deleg_err)?.0,
    };
    if !part.flags.0.0.is_set(FORWARDABLE_BIT) {
        return Err(deleg_err("the KDC issued a ticket that is not forwardable (is the account sensitive?)"));
    }
    Ok(Tgt { ticket: rep.ticket.0, part, crealm: rep.crealm.0, cname: rep.cname.0 })
}

/// The KRB-CRED carrying `tgt`, its EncKrbCredPart encrypted with the AP-REQ's ticket session
/// key (`cipher_suite`, key usage 14).
pub(crate) fn krb_cred(tgt: &Tgt, cipher_suite: &CipherSuite, session_key: &[u8]) -> Result<Vec<u8>> {
    let p = &tgt.part;
    let info = KrbCredInfo {
        key: p.key.clone(),
        prealm: Optional::from(Some(ExplicitContextTag1::from(tgt.crealm.clone()))),
        pname: Optional::from(Some(ExplicitContextTag2::from(tgt.cname.clone()))),
        flags: Optional::from(Some(ExplicitContextTag3::from(p.flags.0.clone()))),
        auth_time: Optional::from(Some(p.auth_time.0.clone().into())),
        start_time: Optional::from(p.start_time.0.clone().map(|t| t.0.into())),
        end_time: Optional::from(Some(p.end_time.0.clone().into())),
        renew_till: Optional::from(p.renew_till.0.clone().map(|t| t.0.into())),
        srealm: Optional::from(Some(p.srealm.0.clone().into())),
        sname: Optional::from(Some(p.sname.0.clone().into())),
        caddr: Optional::from(None),
    };
    let enc_part = picky_krb::data_types::EncKrbCredPart::from(EncKrbCredPartInner {
        ticket_info: ExplicitContextTag0::from(Asn1SequenceOf::from(vec![info])),
        nonce: Optional::from(None),
        timestamp: Optional::from(None),
        usec: Optional::from(None),
        s_address: Optional::from(None),
        r_address: Optional::from(None),
    });
    let plain = Zeroizing::new(picky_asn1_der::to_vec(&enc_part).map_err(deleg_err)?);
    let sealed = cipher_suite.cipher().encrypt(session_key, KRB_CRED_ENC_PART, &plain).map_err(deleg_err)?;
    let etype: u8 = cipher_suite.clone().into();
    let cred = KrbCred::from(KrbCredInner {
        pvno: ExplicitContextTag0::from(IntegerAsn1::from(vec![5])),
        msg_type: ExplicitContextTag1::from(IntegerAsn1::from(vec![22])),
        tickets: ExplicitContextTag2::from(Asn1SequenceOf::from(vec![tgt.ticket.clone()])),
        enc_part: ExplicitContextTag3::from(EncryptedData {
            etype: ExplicitContextTag0::from(IntegerAsn1::from(vec![etype])),
            kvno: Optional::from(None),
            cipher: ExplicitContextTag2::from(OctetStringAsn1::from(sealed)),
        }),
    });
    picky_asn1_der::to_vec(&cred).map_err(deleg_err)
}
