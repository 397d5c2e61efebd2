//! CredSSP ([MS-CSSP]) under WinRM's `CredSSP` HTTP scheme: a TLS channel carried in the HTTP
//! tokens, an NTLM logon inside it, then the user's password handed to the server (the double
//! hop). Afterwards the same TLS channel seals the bodies ([MS-WSMV] 2.2.9.1.3).
//!
//! The TLS channel is an in-memory rustls [`ClientConnection`]: each token is what one leg makes
//! the connection write, and the server's token is fed back into it. The legs are the TLS
//! handshake (two round trips with TLS 1.2 and 1.3), then three TSRequests: NEGOTIATE,
//! AUTHENTICATE with `pubKeyAuth`, and `authInfo` with the TSCredentials.
//!
//! The server presents its own self-signed CredSSP certificate, so the chain is not verified
//! (handshake signatures are). What ties the channel to the logon is `pubKeyAuth`: sspi seals a
//! hash of the certificate's public key with the NTLM session key, checks the server's answer
//! over the same key, and only then sends the password. The server's identity therefore rests on
//! NTLM, and CredSSP obeys the NTLM policy (HTTPS that proves the server, or `trusted_hosts`).
//!
//! The inner logon is NTLM ([`ClientMode::Ntlm`]). Kerberos is not offered: sspi's CredSSP client
//! forces `USE_SESSION_KEY`, which makes Kerberos inside CredSSP user-to-user, and MIT acceptors
//! refuse that (`SEC_E_SECPKG_NOT_FOUND`); whether Windows accepts it is untested.
//!
//! [MS-CSSP]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-cssp/
//! [MS-WSMV]: https://learn.microsoft.com/en-us/openspecs/windows_protocols/ms-wsmv/

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::{CipherSuite, ClientConfig, ClientConnection, ProtocolVersion};
use sspi::credssp::{ClientMode, ClientState, CredSspClient, CredSspMode, TsRequest};
use sspi::generator::GeneratorState;
use sspi::ntlm::NtlmConfig;
use sspi::{AuthIdentity, Credentials as SspiCredentials, Username};
use zeroize::Zeroizing;

use super::{Credentials, Mechanism};
use crate::error::{Error, Result};

const CLIENT_NAME: &str = "psremote";

/// TLS record trailers as SSPI and pyspnego count them for the 4-byte length field: the AEAD tag
/// plus, in TLS 1.3, the inner content-type octet.
const TLS13_TRAILER: usize = 17;
const TLS12_AES_GCM_TRAILER: usize = 16;

/// The TLS 1.2 suites offered: AES-GCM only, whose trailer is a fixed 16 bytes (pyspnego
/// miscounts ChaCha20's under TLS 1.2). All TLS 1.3 suites have the same 17.
const TLS12_SUITES: [CipherSuite; 4] = [
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
];

enum Phase {
    /// Nothing sent yet.
    Start,
    /// TLS handshake legs.
    Tls,
    /// TSRequest legs (the NTLM logon inside the channel).
    Logon(Box<CredSspClient>),
    /// The TSCredentials went out: the server holds the password, the channel seals bodies.
    Delegated,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Start => "start",
            Phase::Tls => "tls",
            Phase::Logon(_) => "logon",
            Phase::Delegated => "delegated",
        }
    }
}

/// A CredSSP client context bound to one connection: it steps the handshake, then seals and
/// unseals bodies with its TLS channel.
pub struct CredSspContext {
    tls: ClientConnection,
    phase: Phase,
    /// Held until the logon starts (the sspi client then owns its copy until delegation).
    credentials: Option<Credentials>,
    spn: String,
}

impl fmt::Debug for CredSspContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CredSspContext")
            .field("phase", &self.phase.name())
            .field("spn", &self.spn)
            .field("tls", &self.tls.protocol_version())
            .finish_non_exhaustive()
    }
}

fn auth_err(message: impl fmt::Display) -> Error {
    Error::Authentication { mechanism: Mechanism::CredSsp.name(), message: message.to_string() }
}

impl CredSspContext {
    /// A new context for `credentials`; `spn` (`HTTP/host`) names the server to NTLM.
    pub fn new(credentials: &Credentials, spn: String) -> Result<Self> {
        // The name is neither sent (no SNI) nor checked: the certificate is CredSSP's own.
        let name = ServerName::try_from("credssp.invalid").map_err(auth_err)?;
        let tls = ClientConnection::new(tls_config()?, name).map_err(|e| auth_err(format!("TLS channel: {e}")))?;
        Ok(Self { tls, phase: Phase::Start, credentials: Some(credentials.clone()), spn })
    }

    /// Whether the handshake is over on the client side: true once [`step`](Self::step) returned
    /// the token that delegates the credentials (the server then answers without a token).
    pub fn is_complete(&self) -> bool {
        matches!(self.phase, Phase::Delegated)
    }

    /// The TLS version of the channel, once negotiated.
    pub fn tls_version(&self) -> Option<&'static str> {
        match self.tls.protocol_version()? {
            ProtocolVersion::TLSv1_2 => Some("TLSv1.2"),
            ProtocolVersion::TLSv1_3 => Some("TLSv1.3"),
            _ => None,
        }
    }

    /// Feeds the server's token (None for the first step) and returns the next token to send.
    /// A server's error status (a failed inner logon) and a `pubKeyAuth` that does not match
    /// the channel's key are authentication errors.
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Vec<u8>> {
        match (&self.phase, input) {
            (Phase::Start, None) => {
                self.phase = Phase::Tls;
                self.drain_tls()
            }
            (Phase::Tls, Some(input)) => {
                self.feed(input).map_err(|e| auth_err(format!("TLS handshake: {e}")))?;
                if self.tls.wants_write() {
                    return self.drain_tls();
                }
                if self.tls.is_handshaking() {
                    return Err(auth_err("TLS handshake: the server's answer did not advance it"));
                }
                self.phase = Phase::Logon(Box::new(self.logon_client()?));
                self.logon(TsRequest::default())
            }
            (Phase::Logon(_), Some(input)) => {
                let plain = Zeroizing::new(self.feed(input).map_err(|e| auth_err(format!("TLS channel: {e}")))?);
                let request = TsRequest::from_buffer(&plain)
                    .map_err(|e| auth_err(format!("the server's TSRequest cannot be read: {e}")))?;
                self.logon(request)
            }
            (Phase::Delegated, Some(_)) => Err(auth_err("the server asked for more after the credentials were sent")),
            (phase, _) => Err(Error::protocol(format!("credssp step out of order (phase {})", phase.name()))),
        }
    }

    /// The sspi client, made once TLS shows the server's public key.
    fn logon_client(&mut self) -> Result<CredSspClient> {
        let certificate = self
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| auth_err("the server's TLS channel has no certificate"))?;
        let public_key = crate::transport::subject_public_key(certificate)
            .ok_or_else(|| auth_err("the public key of the server's CredSSP certificate cannot be read"))?
            .to_vec();
        let credentials = self.credentials.take().ok_or_else(|| Error::protocol("credssp logon started twice"))?;
        let username = Username::parse(credentials.username())
            .map_err(|e| Error::InvalidConfig(format!("user name {:?} cannot be used: {e}", credentials.username())))?;
        let identity = AuthIdentity { username, password: credentials.password().to_owned().into() };
        CredSspClient::new(
            public_key,
            SspiCredentials::AuthIdentity(identity),
            CredSspMode::WithCredentials,
            ClientMode::Ntlm(NtlmConfig::new(CLIENT_NAME.to_owned())),
            self.spn.clone(),
        )
        .map_err(auth_err)
    }

    /// Runs the sspi client on the server's TSRequest and seals its answer into the channel.
    fn logon(&mut self, request: TsRequest) -> Result<Vec<u8>> {
        let Phase::Logon(client) = &mut self.phase else {
            return Err(Error::protocol("credssp logon outside its phase"));
        };
        let state = {
            let mut generator = client.process(request);
            match generator.start() {
                GeneratorState::Completed(result) => result,
                // NTLM never talks to the network; only Kerberos would (to its KDC).
                GeneratorState::Suspended(_) => {
                    return Err(auth_err("sspi's CredSSP client asked for a network exchange, which NTLM never needs"));
                }
            }
        };
        let (answer, last) = match state {
            Ok(ClientState::ReplyNeeded(r)) => (r, false),
            Ok(ClientState::FinalMessage(r)) => (r, true),
            Err(e) if e.nstatus.is_some() => return Err(auth_err(refusal(&e))),
            Err(e) => return Err(auth_err(e)),
        };
        let mut encoded = Zeroizing::new(Vec::new());
        answer
            .encode_ts_request(&mut *encoded)
            .map_err(|e| auth_err(format!("the TSRequest cannot be encoded: {e}")))?;
        let token = self.write_app_data(&encoded).map_err(auth_err)?;
        if last {
            // Drops the sspi client and its copy of the password.
            self.phase = Phase::Delegated;
        }
        Ok(token)
    }

    /// Seals one chunk (at most 16384 bytes: one TLS record) for WinRM message encryption:
    /// returns the record's first "trailer length" bytes as the header and the rest as data,
    /// the layout SSPI and pyspnego use (MS-WSMV 2.2.9.1.3).
    pub fn wrap(&mut self, chunk: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        if !self.is_complete() {
            return Err(Error::protocol("cannot seal before authentication completed"));
        }
        let trailer = self.trailer_len()?;
        let mut record = self.write_app_data(chunk).map_err(|e| Error::protocol(format!("sealing failed: {e}")))?;
        if record.len() < trailer + chunk.len() {
            return Err(Error::protocol("sealing produced a short TLS record"));
        }
        let data = record.split_off(trailer);
        Ok((record, data))
    }

    /// Unseals one part: the header and data together are TLS records of the channel. The
    /// header's length is not trusted; the bytes are read as one TLS stream.
    pub fn unwrap(&mut self, header: &[u8], data: &[u8]) -> Result<Vec<u8>> {
        if !self.is_complete() {
            return Err(Error::protocol("cannot unseal before authentication completed"));
        }
        let mut records = Vec::with_capacity(header.len() + data.len());
        records.extend_from_slice(header);
        records.extend_from_slice(data);
        self.feed(&records).map_err(|e| Error::protocol(format!("the server's sealed reply failed verification: {e}")))
    }

    fn trailer_len(&self) -> Result<usize> {
        let suite = self.tls.negotiated_cipher_suite().map(|s| s.suite());
        match self.tls.protocol_version() {
            Some(ProtocolVersion::TLSv1_3) => Ok(TLS13_TRAILER),
            Some(ProtocolVersion::TLSv1_2) if suite.is_some_and(|s| TLS12_SUITES.contains(&s)) => {
                Ok(TLS12_AES_GCM_TRAILER)
            }
            other => Err(Error::protocol(format!("no CredSSP sealing for TLS {other:?} with {suite:?}"))),
        }
    }

    /// Encrypts `plain` as application data and returns the TLS bytes.
    fn write_app_data(&mut self, plain: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.tls.writer().write_all(plain).map_err(|e| e.to_string())?;
        self.drain_tls().map_err(|e| e.to_string())
    }

    /// Everything the TLS connection has to send.
    fn drain_tls(&mut self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            self.tls.write_tls(&mut out).map_err(|e| auth_err(format!("TLS channel: {e}")))?;
        }
        Ok(out)
    }

    /// Feeds TLS bytes from the server and returns the application data they carried.
    fn feed(&mut self, mut input: &[u8]) -> std::result::Result<Vec<u8>, String> {
        let mut plain = Vec::new();
        while !input.is_empty() {
            let read = self.tls.read_tls(&mut input).map_err(|e| e.to_string())?;
            let state = self.tls.process_new_packets().map_err(|e| e.to_string())?;
            let available = state.plaintext_bytes_to_read();
            if available > 0 {
                let start = plain.len();
                plain.resize(start + available, 0);
                self.tls.reader().read_exact(&mut plain[start..]).map_err(|e| e.to_string())?;
            }
            if state.peer_has_closed() || read == 0 {
                return Err("the server closed the TLS channel".into());
            }
        }
        Ok(plain)
    }
}

/// Words for the error status of a server's TSRequest (a failed inner logon).
fn refusal(e: &sspi::Error) -> String {
    const SEC_E_LOGON_DENIED: u32 = 0x8009_030C;
    match e.nstatus.map(|s| s.0) {
        Some(SEC_E_LOGON_DENIED) => {
            "the server refused the logon: wrong user name or password (SEC_E_LOGON_DENIED)".to_owned()
        }
        Some(code) => format!("the server refused the logon (status 0x{code:08x})"),
        None => e.to_string(),
    }
}

/// The channel's rustls configuration: TLS 1.2 (AES-GCM) or 1.3, no resumption, no SNI, no
/// ALPN, any certificate with verified handshake signatures.
fn tls_config() -> Result<Arc<ClientConfig>> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites.retain(|s| match s {
        rustls::SupportedCipherSuite::Tls13(_) => true,
        rustls::SupportedCipherSuite::Tls12(_) => TLS12_SUITES.contains(&s.suite()),
    });
    let verifier = Arc::new(crate::transport::Verifier::any_certificate(provider.signature_verification_algorithms));
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| auth_err(format!("TLS channel: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    config.alpn_protocols.clear();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{ServerConfig, ServerConnection, SupportedProtocolVersion};

    use super::*;

    /// A throwaway self-signed ECDSA P-256 certificate and its PKCS#8 key, made with openssl for
    /// these tests (a stand-in for the server's generated CredSSP certificate).
    const CERT_P256: &str = "MIIBhTCCASugAwIBAgIUZy+o8m7l/7vt6JYF0GGymt8RLzUwCgYIKoZIzj0EAwIwFzEVMBMGA1UEAwwMQ1JFRFNTUC10ZXN0MCAXDTI2MTEyNTE1MDAwMloYDzIxMjYxMTAxMTUwMDAyWjAXMRUwEwYDVQQDDAxDUkVEU1NQLXRlc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASI1f+nyvEGOA3mqNV/RQ+d45tJQ4NmnCt2NlmnvRWM4p+rA/kE3P8Nvof/HkjkyYR9lXZ9oipXh4rMCzlg3Ffjo1MwUTAdBgNVHQ4EFgQU+1Gu9DQlU/sacjeFGD+RQqXOKR4wHwYDVR0jBBgwFoAU+1Gu9DQlU/sacjeFGD+RQqXOKR4wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA6xJX47TaqH+3M5jjfDmuYngbjebGUghoqWwp+jJ+mJQCIDXfabZrbepTYCYsf+6JzWdspoxwIJ2qpeJUWvAW63ew";
    const KEY_P256: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg7WPoWwyJ8Sl7JGOGTvsG4rNx9NXmFsxEwTJ+gS9oMt6hRANCAASI1f+nyvEGOA3mqNV/RQ+d45tJQ4NmnCt2NlmnvRWM4p+rA/kE3P8Nvof/HkjkyYR9lXZ9oipXh4rMCzlg3Ffj";

    fn der(b64: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(b64).unwrap()
    }

    fn server(version: &'static SupportedProtocolVersion) -> ServerConnection {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::try_from(der(KEY_P256)).unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(der(CERT_P256))], key)
            .unwrap();
        ServerConnection::new(Arc::new(config)).unwrap()
    }

    /// Hands `bytes` to the server; returns the plaintext it read and what it sends back.
    fn server_leg(server: &mut ServerConnection, mut bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut plain = Vec::new();
        while !bytes.is_empty() {
            server.read_tls(&mut bytes).unwrap();
            server.process_new_packets().unwrap();
            let _ = server.reader().read_to_end(&mut plain);
        }
        let mut out = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut out).unwrap();
        }
        (plain, out)
    }

    /// Runs the TLS legs against a rustls server until the client sends its first TSRequest;
    /// returns the context, the server, the number of TLS legs and that TSRequest.
    fn through_tls(version: &'static SupportedProtocolVersion) -> (CredSspContext, ServerConnection, usize, TsRequest) {
        let mut ctx = CredSspContext::new(&Credentials::new("DOMAIN\\user", "pw"), "HTTP/host".into()).unwrap();
        let mut server = server(version);
        let mut token = ctx.step(None).unwrap();
        let mut legs = 0;
        loop {
            let (plain, reply) = server_leg(&mut server, &token);
            if !plain.is_empty() {
                return (ctx, server, legs, TsRequest::from_buffer(&plain).unwrap());
            }
            legs += 1;
            token = ctx.step(Some(&reply)).unwrap();
            assert!(legs < 4, "the TLS handshake does not end");
        }
    }

    #[test]
    fn two_tls_legs_then_ntlm_negotiate_inside_the_channel() {
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let (ctx, _, legs, request) = through_tls(version);
            assert_eq!(legs, 2, "{version:?}");
            assert!(matches!(ctx.phase, Phase::Logon(_)));
            assert!(ctx.credentials.is_none(), "the password moved into the sspi client");
            let nego = request.nego_tokens.expect("a NEGOTIATE token");
            assert!(nego.starts_with(b"NTLMSSP\0\x01\0\0\0"), "{nego:02x?}");
        }
    }

    #[test]
    fn sealed_chunks_are_whole_records_with_the_trailer_as_header() {
        for (version, trailer) in [(&rustls::version::TLS13, 17), (&rustls::version::TLS12, 16)] {
            let (mut ctx, mut server, _, _) = through_tls(version);
            let negotiated = ctx.tls.negotiated_cipher_suite().unwrap().suite();
            assert!(trailer == 17 || TLS12_SUITES.contains(&negotiated), "{negotiated:?}");
            ctx.phase = Phase::Delegated;
            let chunk: Vec<u8> = (0..crate::encryption::CREDSSP_CHUNK).map(|i| (i % 253) as u8).collect();
            let (header, data) = ctx.wrap(&chunk).unwrap();
            assert_eq!(header.len(), trailer, "{version:?}");
            // One record: its length field covers everything after the 5-byte record header.
            let record_len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            assert_eq!(5 + record_len, header.len() + data.len(), "{version:?}");
            // TLS 1.2 GCM records also carry an 8-byte explicit nonce before the ciphertext.
            assert_eq!(record_len, chunk.len() + trailer + if trailer == 16 { 8 } else { 0 });
            let mut record = header.clone();
            record.extend_from_slice(&data);
            assert_eq!(server_leg(&mut server, &record).0, chunk);

            server.writer().write_all(b"reply over credssp").unwrap();
            let (_, reply) = server_leg(&mut server, &[]);
            let (h, d) = reply.split_at(trailer);
            assert_eq!(ctx.unwrap(h, d).unwrap(), b"reply over credssp");

            server.writer().write_all(b"tampered").unwrap();
            let (_, mut reply) = server_leg(&mut server, &[]);
            let last = reply.len() - 1;
            reply[last] ^= 1;
            let err = ctx.unwrap(&reply[..trailer], &reply[trailer..]).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::Protocol, "{err}");
        }
    }

    #[test]
    fn nothing_is_sealed_or_stepped_out_of_order() {
        let mut ctx = CredSspContext::new(&Credentials::new("user", "pw"), "HTTP/host".into()).unwrap();
        assert!(ctx.wrap(b"x").is_err());
        assert!(ctx.unwrap(b"x", b"y").is_err());
        assert!(ctx.step(Some(b"early")).is_err());
        let mut ctx = CredSspContext::new(&Credentials::new("user", "pw"), "HTTP/host".into()).unwrap();
        ctx.step(None).unwrap();
        let err = ctx.step(Some(b"not TLS at all")).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::Authentication, "{err}");
        assert!(!format!("{ctx:?}").contains("pw"));
    }
}
