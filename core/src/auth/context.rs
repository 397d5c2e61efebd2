//! sspi security contexts for NTLM and Negotiate, and WinRM sealing with them.

use std::fmt;

use sspi::{
    AuthIdentity, BufferType, ClientRequestFlags, CredentialUse, Credentials as SspiCredentials, DataRepresentation,
    EncryptionFlags, Negotiate, NegotiateConfig, Ntlm, SecurityBuffer, SecurityBufferRef, SecurityStatus, Sspi,
    SspiImpl, Username,
};

use sspi::ntlm::NtlmConfig;

use super::{Credentials, Mechanism};
use crate::error::{Error, Result};

const CLIENT_NAME: &str = "psremote";

enum Inner {
    Ntlm { ctx: Box<Ntlm>, cred: <Ntlm as SspiImpl>::CredentialsHandle },
    Negotiate { ctx: Box<Negotiate>, cred: <Negotiate as SspiImpl>::CredentialsHandle },
}

/// A client security context bound to one connection.
pub struct SecurityContext {
    inner: Inner,
    mechanism: Mechanism,
    target: String,
    complete: bool,
    /// SEC_CHANNEL_BINDINGS for tls-server-end-point, sent with every handshake step.
    bindings: Option<Vec<u8>>,
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

/// Runs one step of `initialize_security_context` on any sspi package; the two packages differ
/// only in their credential handle types.
macro_rules! init_step {
    ($ctx:expr, $cred:expr, $target:expr, $input:expr, $bindings:expr, $mech:expr) => {{
        let ctx = $ctx;
        let flags = ClientRequestFlags::CONFIDENTIALITY
            | ClientRequestFlags::INTEGRITY
            | ClientRequestFlags::ALLOCATE_MEMORY
            | ClientRequestFlags::MUTUAL_AUTH;
        let mut output = vec![SecurityBuffer::new(Vec::new(), BufferType::Token)];
        let mut input: Option<Vec<SecurityBuffer>> =
            $input.map(|t: &[u8]| vec![SecurityBuffer::new(t.to_vec(), BufferType::Token)]);
        if let Some(cb) = $bindings {
            input.get_or_insert_with(Vec::new).push(SecurityBuffer::new(cb.clone(), BufferType::ChannelBindings));
        }
        let mut builder = ctx
            .initialize_security_context()
            .with_credentials_handle($cred)
            .with_context_requirements(flags)
            .with_target_data_representation(DataRepresentation::Native)
            .with_target_name($target)
            .with_output(&mut output);
        if let Some(input) = input.as_mut() {
            builder = builder.with_input(input);
        }
        let result = ctx
            .initialize_security_context_impl(&mut builder)
            .map_err(|e| auth_err($mech, e))?
            .resolve_to_result()
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
            Inner::Negotiate { ctx, .. } => {
                let $s: &mut Negotiate = &mut **ctx;
                $body
            }
        }
    };
}

impl SecurityContext {
    /// A new client context for `mechanism` towards `host` (the SPN is `HTTP/host`).
    /// `channel_binding` is the tls-server-end-point data of an https connection.
    pub fn new(
        mechanism: Mechanism,
        creds: &Credentials,
        host: &str,
        channel_binding: Option<Vec<u8>>,
    ) -> Result<Self> {
        let username = Username::parse(creds.username())
            .map_err(|e| Error::InvalidConfig(format!("user name {:?} cannot be used: {e}", creds.username())))?;
        let identity = AuthIdentity { username, password: creds.password().to_owned().into() };
        let target = format!("HTTP/{host}");
        let inner = match mechanism {
            Mechanism::Ntlm => {
                let mut ctx = Box::new(Ntlm::with_config(NtlmConfig::new(CLIENT_NAME.to_owned())));
                let acq = ctx
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&identity)
                    .execute(&mut *ctx)
                    .map_err(|e| auth_err(mechanism, e))?;
                Inner::Ntlm { ctx, cred: acq.credentials_handle }
            }
            Mechanism::Negotiate => {
                // Kerberos is not wired yet (it needs a KDC client): restrict SPNEGO to NTLM so
                // the mechanism used is known rather than a silent fallback.
                let config = NegotiateConfig::new(
                    Box::new(NtlmConfig::new(CLIENT_NAME.to_owned())),
                    Some("!kerberos,!pku2u,ntlm".to_owned()),
                    CLIENT_NAME.to_owned(),
                );
                let mut ctx = Box::new(Negotiate::new_client(config).map_err(|e| auth_err(mechanism, e))?);
                let sspi_creds = SspiCredentials::AuthIdentity(identity);
                let acq = ctx
                    .acquire_credentials_handle()
                    .with_credential_use(CredentialUse::Outbound)
                    .with_auth_data(&sspi_creds)
                    .execute(&mut *ctx)
                    .map_err(|e| auth_err(mechanism, e))?;
                Inner::Negotiate { ctx, cred: acq.credentials_handle }
            }
            Mechanism::Basic | Mechanism::Certificate | Mechanism::Kerberos | Mechanism::CredSsp => {
                return Err(Error::InvalidConfig(format!("{} has no sspi security context here", mechanism.name())));
            }
        };
        let bindings = channel_binding.map(|data| crate::transport::sec_channel_bindings(&data));
        Ok(Self { inner, mechanism, target, complete: false, bindings })
    }

    /// The mechanism this context runs.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the handshake has finished on the client side.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// Feeds the server's token (None for the first step) and returns the next token to send,
    /// empty when there is nothing more to send.
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>> {
        let mech = self.mechanism;
        let target = self.target.as_str();
        let bindings = self.bindings.as_ref();
        let (token, done) = match &mut self.inner {
            Inner::Ntlm { ctx, cred } => init_step!(&mut **ctx, cred, target, input, bindings, mech),
            Inner::Negotiate { ctx, cred } => init_step!(&mut **ctx, cred, target, input, bindings, mech),
        };
        self.complete = done;
        Ok(token)
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
