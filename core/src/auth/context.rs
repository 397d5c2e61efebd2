//! sspi security contexts for NTLM, Kerberos and Negotiate (Kerberos first), and WinRM sealing
//! with them.
//!
//! Handshake steps run sspi's generator by hand: when Kerberos needs the KDC, the generator yields
//! a network request, [`kdc::exchange`] answers it on tokio, and the generator resumes. (sspi's own
//! async driver is not `Send`, and its network client would pull a second HTTP and TLS stack.)

use std::fmt;

use sspi::generator::GeneratorState;
use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials as SspiCredentials, DataRepresentation,
    EncryptionFlags, KdcResolution, Kerberos, KerberosConfig, Negotiate, NegotiateConfig, Ntlm, SecurityBuffer,
    SecurityBufferRef, SecurityStatus, Sspi, SspiImpl, Username,
};

use sspi::ntlm::NtlmConfig;

use super::delegation::{self, DelegationSource};
use super::kdc::{self, Krb5Conf};
use super::{Credentials, KerberosOptions, Mechanism, ap_req, policy};
use crate::error::{Error, Result};

const CLIENT_NAME: &str = "psremote";

enum Inner {
    Ntlm { ctx: Box<Ntlm>, cred: <Ntlm as SspiImpl>::CredentialsHandle },
    Kerberos { ctx: Box<Kerberos>, cred: <Kerberos as SspiImpl>::CredentialsHandle },
    Negotiate { ctx: Box<Negotiate>, cred: <Negotiate as SspiImpl>::CredentialsHandle },
}

/// Everything a client security context is made from.
#[derive(Debug, Clone, Copy)]
pub struct ContextParams<'a> {
    /// The mechanism (NTLM, Kerberos or Negotiate).
    pub mechanism: Mechanism,
    /// User name and password.
    pub credentials: &'a Credentials,
    /// The host connected to (the SPN's host unless `kerberos.hostname` overrides it).
    pub host: &'a str,
    /// KDC, SPN service class and host name.
    pub kerberos: &'a KerberosOptions,
    /// Whether the security policy lets Negotiate fall back to NTLM.
    pub ntlm_allowed: bool,
    /// tls-server-end-point data of an https connection.
    pub channel_binding: Option<&'a [u8]>,
}

/// A client security context bound to one connection.
pub struct SecurityContext {
    inner: Inner,
    mechanism: Mechanism,
    target: String,
    complete: bool,
    steps: usize,
    /// SEC_CHANNEL_BINDINGS for tls-server-end-point, sent with every handshake step.
    bindings: Option<Vec<u8>>,
    /// Set when the caller asked for delegation and Kerberos may be used.
    delegation: Option<DelegationSource>,
}

impl fmt::Debug for SecurityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityContext")
            .field("mechanism", &self.mechanism)
            .field("target", &self.target)
            .field("complete", &self.complete)
            .finish_non_exhaustive()
    }
}

fn auth_err(mechanism: Mechanism, e: impl fmt::Display) -> Error {
    Error::Authentication { mechanism: mechanism.name(), message: e.to_string() }
}

/// Runs one `initialize_security_context` step on any sspi package, answering the KDC requests
/// its generator yields; evaluates to `(token, done)`.
macro_rules! init_step {
    ($ctx:expr, $cred:expr, $target:expr, $input:expr, $bindings:expr, $mech:expr) => {{
        let ctx = $ctx;
        let flags = ClientRequestFlags::CONFIDENTIALITY
            | ClientRequestFlags::INTEGRITY
            | ClientRequestFlags::ALLOCATE_MEMORY
            | ClientRequestFlags::MUTUAL_AUTH;
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        // Kerberos needs an input buffer even on the first call; an empty token will do.
        let mut input = vec![SecurityBuffer::new($input.map(<[u8]>::to_vec).unwrap_or_default(), BufferType::Token)];
        if let Some(cb) = $bindings {
            input.push(SecurityBuffer::new(cb.clone(), BufferType::ChannelBindings));
        }
        let mut builder = ctx
            .initialize_security_context()
            .with_credentials_handle($cred)
            .with_context_requirements(flags)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name($target)
            .with_input(&mut input)
            .with_output(&mut output);
        let result = {
            let mut generator = ctx.initialize_security_context_impl(&mut builder).map_err(|e| auth_err($mech, e))?;
            let mut state = generator.start();
            loop {
                match state {
                    GeneratorState::Suspended(request) => {
                        let reply = kdc::exchange(&request).await;
                        state = generator.resume(reply);
                    }
                    GeneratorState::Completed(result) => break result,
                }
            }
        }
        .map_err(|e| auth_err($mech, e))?;
        if matches!(result.status, SecurityStatus::CompleteAndContinue | SecurityStatus::CompleteNeeded) {
            ctx.complete_auth_token(&mut output).map_err(|e| auth_err($mech, e))?;
        }
        let token = std::mem::take(&mut output[0].buffer);
        let done = !matches!(result.status, SecurityStatus::ContinueNeeded | SecurityStatus::CompleteAndContinue);
        (token, done)
    }};
}

/// Runs `$body` with `$s` bound to the context's sspi package.
macro_rules! with_sspi {
    ($self:expr, |$s:ident| $body:expr) => {
        match &mut $self.inner {
            Inner::Ntlm { ctx, .. } => {
                let $s: &mut Ntlm = &mut **ctx;
                $body
            }
            Inner::Kerberos { ctx, .. } => {
                let $s: &mut Kerberos = &mut **ctx;
                $body
            }
            Inner::Negotiate { ctx, .. } => {
                let $s: &mut Negotiate = &mut **ctx;
                $body
            }
        }
    };
}

/// The realm a user name names (`REALM\user`, `user@realm`), else krb5.conf's default realm.
fn realm_of(username: &str, conf: &Krb5Conf) -> Option<String> {
    if let Some((domain, _)) = username.split_once('\\') {
        return Some(domain.to_ascii_uppercase());
    }
    if let Some((_, realm)) = username.rsplit_once('@') {
        return Some(realm.to_ascii_uppercase());
    }
    conf.default_realm.clone()
}

/// The account part of `REALM\user` or `user@realm`.
fn account_of(username: &str) -> &str {
    match (username.split_once('\\'), username.rsplit_once('@')) {
        (Some((_, user)), _) => user,
        (None, Some((user, _))) => user,
        _ => username,
    }
}

/// The user name as sspi's Kerberos should see it: `user@REALM` becomes `REALM\user`, because
/// sspi sends names with `@` as enterprise names, which MIT KDCs do not resolve (AD accepts both).
fn kerberos_username(username: &str, realm: Option<&str>) -> Result<Username> {
    let parsed = match (username.split_once('\\'), username.rsplit_once('@'), realm) {
        (None, Some((user, domain)), _) => Username::new_down_level_logon_name(user, &domain.to_ascii_uppercase()),
        (None, None, Some(realm)) => Username::new_down_level_logon_name(username, realm),
        _ => Username::parse(username),
    };
    parsed.map_err(|e| Error::InvalidConfig(format!("user name {username:?} cannot be used: {e}")))
}

fn acquire<P>(ctx: &mut P, data: &P::AuthenticationData, mech: Mechanism) -> Result<P::CredentialsHandle>
where
    P: Sspi,
{
    ctx.acquire_credentials_handle()
        .with_credential_use(CredentialUse::Outbound)
        .with_auth_data(data)
        .execute(ctx)
        .map(|a| a.credentials_handle)
        .map_err(|e| auth_err(mech, e))
}

impl SecurityContext {
    /// A new client context. For Negotiate: Kerberos first when a KDC is known for the user's
    /// realm and the host is a name; NTLM only as `ntlm_allowed` says, else the handshake fails
    /// instead of falling back.
    pub fn new(p: ContextParams<'_>) -> Result<Self> {
        let mechanism = p.mechanism;
        let creds = p.credentials;
        let spn_host = p.kerberos.hostname.as_deref().unwrap_or(p.host);
        let target = format!("{}/{}", p.kerberos.service, spn_host);
        let conf = Krb5Conf::load();
        let realm = realm_of(creds.username(), &conf);
        let kdc_url = match (&realm, mechanism) {
            (Some(r), Mechanism::Kerberos | Mechanism::Negotiate) => kdc::resolve(p.kerberos.kdc.as_deref(), r, &conf)?,
            _ => None,
        };
        let password = || creds.password().to_owned().into();
        let inner = match mechanism {
            Mechanism::Ntlm => Self::ntlm(creds)?,
            Mechanism::Kerberos => {
                let Some(url) = kdc_url.clone() else {
                    return Err(Error::InvalidConfig(format!(
                        "no KDC is known for realm {}: give the kerberos kdc option, set {}, or name the realm's kdc \
                         in krb5.conf",
                        realm.as_deref().unwrap_or("(none: name it as REALM\\user or user@REALM)"),
                        kdc::KDC_ENV
                    )));
                };
                let config = KerberosConfig {
                    kdc_resolution: KdcResolution::KdcUrl(Some(url)),
                    client_computer_name: CLIENT_NAME.to_owned(),
                };
                let mut ctx = Box::new(Kerberos::new_client_from_config(config).map_err(|e| auth_err(mechanism, e))?);
                let identity = AuthIdentity {
                    username: kerberos_username(creds.username(), realm.as_deref())?,
                    password: password(),
                };
                let cred = acquire(&mut *ctx, &SspiCredentials::AuthIdentity(identity), mechanism)?;
                Inner::Kerberos { ctx, cred }
            }
            Mechanism::Negotiate => {
                let kerberos_possible = kdc_url.is_some() && !policy::is_ip_address(spn_host);
                if policy::is_ip_address(spn_host) {
                    tracing::warn!(
                        target: "psremote::audit",
                        host = spn_host,
                        "negotiate towards an IP address: Kerberos cannot be used there (it needs the host's name); \
                         only NTLM remains"
                    );
                }
                match (kerberos_possible, p.ntlm_allowed) {
                    (false, false) => {
                        let why = if kdc_url.is_none() {
                            format!("no KDC is known for realm {}", realm.as_deref().unwrap_or("(unknown)"))
                        } else {
                            "Kerberos cannot be used towards an IP address".to_owned()
                        };
                        return Err(policy::ntlm_refused(p.host, &why));
                    }
                    (false, true) => Self::negotiate(
                        mechanism,
                        Box::new(NtlmConfig::new(CLIENT_NAME.to_owned())),
                        "!kerberos,!pku2u,ntlm",
                        AuthIdentity { username: Self::ntlm_username(creds)?, password: password() },
                    )?,
                    (true, ntlm) => Self::negotiate(
                        mechanism,
                        Box::new(KerberosConfig {
                            kdc_resolution: KdcResolution::KdcUrl(kdc_url.clone()),
                            client_computer_name: CLIENT_NAME.to_owned(),
                        }),
                        if ntlm { "kerberos,ntlm" } else { "kerberos,!ntlm" },
                        AuthIdentity {
                            username: kerberos_username(creds.username(), realm.as_deref())?,
                            password: password(),
                        },
                    )?,
                }
            }
            Mechanism::Basic | Mechanism::Certificate | Mechanism::CredSsp => {
                return Err(Error::InvalidConfig(format!("{} has no sspi security context here", mechanism.name())));
            }
        };
        let bindings = p.channel_binding.map(crate::transport::sec_channel_bindings);
        let delegation = match (&kdc_url, &realm) {
            (Some(kdc), Some(realm)) if p.kerberos.delegate => Some(DelegationSource {
                kdc: kdc.clone(),
                realm: realm.clone(),
                account: account_of(creds.username()).to_owned(),
                password: zeroize::Zeroizing::new(creds.password().to_owned()),
            }),
            _ => None,
        };
        if p.kerberos.delegate && delegation.is_none() && mechanism == Mechanism::Kerberos {
            return Err(Error::InvalidConfig("delegation needs a KDC and a realm".into()));
        }
        Ok(Self { inner, mechanism, target, complete: false, steps: 0, bindings, delegation })
    }

    fn ntlm_username(creds: &Credentials) -> Result<Username> {
        Username::parse(creds.username())
            .map_err(|e| Error::InvalidConfig(format!("user name {:?} cannot be used: {e}", creds.username())))
    }

    fn ntlm(creds: &Credentials) -> Result<Inner> {
        let identity =
            AuthIdentity { username: Self::ntlm_username(creds)?, password: creds.password().to_owned().into() };
        let mut ctx = Box::new(Ntlm::with_config(NtlmConfig::new(CLIENT_NAME.to_owned())));
        let cred = acquire(&mut *ctx, &identity, Mechanism::Ntlm)?;
        Ok(Inner::Ntlm { ctx, cred })
    }

    fn negotiate(
        mechanism: Mechanism,
        protocol: Box<dyn sspi::negotiate::ProtocolConfig>,
        packages: &str,
        identity: AuthIdentity,
    ) -> Result<Inner> {
        let config = NegotiateConfig::new(protocol, Some(packages.to_owned()), CLIENT_NAME.to_owned());
        let mut ctx = Box::new(Negotiate::new_client(config).map_err(|e| auth_err(mechanism, e))?);
        let cred = acquire(&mut *ctx, &SspiCredentials::AuthIdentity(identity), mechanism)?;
        Ok(Inner::Negotiate { ctx, cred })
    }

    /// The mechanism this context runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The mechanism actually in use: `kerberos` or `ntlm` (for Negotiate, what SPNEGO chose).
    pub fn negotiated(&self) -> &'static str {
        match &self.inner {
            Inner::Ntlm { .. } => "ntlm",
            Inner::Kerberos { .. } => "kerberos",
            Inner::Negotiate { ctx, .. } => {
                let p = ctx.negotiated_protocol();
                if p.is_kerberos() {
                    "kerberos"
                } else if p.is_ntlm() {
                    "ntlm"
                } else {
                    "other"
                }
            }
        }
    }

    /// Whether the handshake has finished on the client side.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Feeds the server's token (None for the first step) and returns the next token to send,
    /// empty when there is nothing more to send. Kerberos steps talk to the KDC.
    pub async fn step(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>> {
        let mech = self.mechanism;
        let target = self.target.as_str();
        let bindings = self.bindings.as_ref();
        let (mut token, done) = match &mut self.inner {
            Inner::Ntlm { ctx, cred } => init_step!(&mut **ctx, cred, target, input, bindings, mech),
            Inner::Kerberos { ctx, cred } => init_step!(&mut **ctx, cred, target, input, bindings, mech),
            Inner::Negotiate { ctx, cred } => init_step!(&mut **ctx, cred, target, input, bindings, mech),
        };
        if self.steps == 0 && self.negotiated() == "kerberos" {
            if let Some(src) = self.delegation.clone() {
                let tgt = delegation::forwardable_tgt(&src).await?;
                tracing::warn!(
                    target: "psremote::audit",
                    target_spn = self.target,
                    user = src.account,
                    realm = src.realm,
                    "delegating a forwardable Kerberos ticket to the server (the double hop): the server can act as \
                     the user"
                );
                token = self.rewrite_ap_req(token, Some(&tgt))?;
            } else if self.bindings.is_some() {
                token = self.rewrite_ap_req(token, None)?;
            }
        }
        self.steps += 1;
        self.complete = done;
        Ok(token)
    }

    /// See [`ap_req`]: widens the channel-binding AP-options element of the first Kerberos token
    /// and adds the delegated ticket.
    fn rewrite_ap_req(&mut self, token: Vec<u8>, delegate: Option<&delegation::Tgt>) -> Result<Vec<u8>> {
        let key = with_sspi!(self, |s| s.query_context_session_key())
            .map_err(|e| auth_err(self.mechanism, format!("no ticket session key: {e}")))?;
        let key = key.session_key.as_ref();
        let repaired = match &self.inner {
            Inner::Negotiate { .. } => ap_req::rewrite_spnego_init(&token, key, delegate)?,
            _ => ap_req::rewrite_krb_token(&token, key, delegate)?,
        };
        Ok(repaired.unwrap_or(token))
    }

    /// Seals `data` in place and returns the signature/header that goes before it.
    pub fn seal(&mut self, data: &mut [u8]) -> Result<Vec<u8>> {
        if !self.complete {
            return Err(Error::protocol("cannot seal before authentication completed"));
        }
        let mech = self.mechanism;
        with_sspi!(self, |sspi| {
            let trailer = sspi.query_context_sizes().map_err(|e| auth_err(mech, e))?.security_trailer as usize;
            let mut header = vec![0u8; trailer];
            let mut bufs = [SecurityBufferRef::token_buf(&mut header), SecurityBufferRef::data_buf(data)];
            sspi.encrypt_message(EncryptionFlags::empty(), &mut bufs)
                .map_err(|e| Error::protocol(format!("sealing failed: {e}")))?;
            let len = bufs[0].buf_len();
            header.truncate(len);
            Ok(header)
        })
    }

    /// Checks `header` and decrypts `data` in place. A bad signature is a protocol error.
    pub fn unseal(&mut self, header: &[u8], data: &mut [u8]) -> Result<()> {
        let mut header = header.to_vec();
        let len = data.len();
        with_sspi!(self, |sspi| {
            let mut bufs = [SecurityBufferRef::token_buf(&mut header), SecurityBufferRef::data_buf(data)];
            sspi.decrypt_message(&mut bufs)
                .map_err(|e| Error::protocol(format!("the server's sealed reply failed verification: {e}")))?;
            if bufs[1].buf_len() != len {
                return Err(Error::protocol("unsealed reply changed length"));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_come_from_the_name_or_the_default() {
        let conf = Krb5Conf { default_realm: Some("DEF.TEST".into()), kdcs: vec![] };
        assert_eq!(realm_of("corp\\u", &conf).as_deref(), Some("CORP"));
        assert_eq!(realm_of("u@corp.test", &conf).as_deref(), Some("CORP.TEST"));
        assert_eq!(realm_of("u", &conf).as_deref(), Some("DEF.TEST"));
        assert_eq!(realm_of("u", &Krb5Conf::default()), None);
    }

    #[test]
    fn enterprise_names_become_down_level_names() {
        let down_level = |u: &Username| match u.parts() {
            sspi::UsernameParts::DownLevelLogonName(p) => {
                Some((p.netbios_domain().unwrap_or_default().to_owned(), p.account_name().to_owned()))
            }
            _ => None,
        };
        let u = kerberos_username("user@corp.test", None).unwrap();
        assert_eq!(down_level(&u), Some(("CORP.TEST".into(), "user".into())));
        let u = kerberos_username("user", Some("R.TEST")).unwrap();
        assert_eq!(down_level(&u), Some(("R.TEST".into(), "user".into())));
    }
}
