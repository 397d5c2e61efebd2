//! TLS for https endpoints with rustls: trust roots (the system's or a given CA), the name the
//! certificate must carry, public-key pinning, client certificates, and what a finished
//! handshake tells the rest of the client (version, fingerprint, channel binding).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use zeroize::Zeroizing;

use super::cert;
use crate::error::{Error, Result};

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// `TLSv1.2` or `TLSv1.3`, as audit events name it.
    pub fn name(self) -> &'static str {
        match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        }
    }
}

impl std::str::FromStr for TlsVersion {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().trim_start_matches("tlsv").trim_start_matches("tls") {
            "1.2" => Ok(TlsVersion::Tls12),
            "1.3" => Ok(TlsVersion::Tls13),
            _ => Err(Error::InvalidConfig(format!("unknown TLS version {s:?}; use 1.2 or 1.3"))),
        }
    }
}

/// A client certificate and its private key, both PEM files.
#[derive(Clone)]
pub struct ClientCertificate {
    /// PEM certificate (chain), leaf first.
    pub certificate: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1). An encrypted PKCS#8 key needs `key_password`.
    pub key: PathBuf,
    /// The password of an encrypted key; zeroized on drop, never printed.
    pub key_password: Option<Zeroizing<String>>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("certificate", &self.certificate)
            .field("key", &self.key)
            .field("key_password", &self.key_password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// How the client verifies an https endpoint.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// A PEM file of CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// A folder of PEM files of CA certificates to trust instead of the system's.
    pub ca_dir: Option<PathBuf>,
    /// The name the certificate must carry (and the SNI), when it differs from the host.
    pub server_name: Option<String>,
    /// SHA-256 digests of SubjectPublicKeyInfo; when any are given the certificate's key must
    /// be one of them (in addition to the chain check).
    pub pinned_spki_sha256: Vec<[u8; 32]>,
    /// Skips chain and name verification. The server's identity is then unproven (pins, when
    /// given, are still checked); every connection logs a warning.
    pub insecure_skip_verify: bool,
    /// Lowest TLS version offered (default 1.2).
    pub min_version: Option<TlsVersion>,
    /// Highest TLS version offered (default 1.3).
    pub max_version: Option<TlsVersion>,
    /// A client certificate for certificate authentication or for servers that require one.
    pub client_certificate: Option<ClientCertificate>,
}

impl TlsOptions {
    /// Whether a finished handshake proves the server's identity (a validated chain, or a
    /// matching pin).
    pub fn proves_identity(&self) -> bool {
        !self.insecure_skip_verify || !self.pinned_spki_sha256.is_empty()
    }
}

/// What one finished handshake established.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// The negotiated version.
    pub version: TlsVersion,
    /// The negotiated cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher_suite: String,
    /// SHA-256 of the server's certificate, lowercase hex.
    pub certificate_sha256: String,
    /// The `tls-server-end-point` channel binding data for the server's certificate.
    pub channel_binding: Option<Vec<u8>>,
    /// The server certificate's SubjectPublicKeyInfo DER.
    pub server_public_key_info: Option<Vec<u8>>,
}

/// A ready rustls configuration for one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct TlsSetup {
    pub(crate) config: Arc<rustls::ClientConfig>,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) options: TlsOptions,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_err(msg: impl fmt::Display) -> Error {
    Error::InvalidConfig(msg.to_string())
}

fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| config_err(format!("cannot read certificates from {}: {e}", path.display())))?;
    let certs: Vec<_> = iter
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| config_err(format!("cannot read certificates from {}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(config_err(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certs)
}

fn roots(options: &TlsOptions) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let mut given = Vec::new();
    if let Some(file) = &options.ca_file {
        given.extend(read_pem_certs(file)?);
    }
    if let Some(dir) = &options.ca_dir {
        let entries =
            std::fs::read_dir(dir).map_err(|e| config_err(format!("cannot read CA folder {}: {e}", dir.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_file() {
                // Folders such as /etc/ssl/certs hold other files too; take what parses.
                if let Ok(certs) = read_pem_certs(&path) {
                    given.extend(certs);
                }
            }
        }
        if given.is_empty() {
            return Err(config_err(format!("the CA folder {} holds no PEM certificate", dir.display())));
        }
    }
    if options.ca_file.is_some() || options.ca_dir.is_some() {
        let (added, _) = store.add_parsable_certificates(given);
        if added == 0 {
            return Err(config_err("none of the given CA certificates can be used as a trust anchor"));
        }
        return Ok(store);
    }
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = store.add_parsable_certificates(native.certs);
    if added == 0 {
        return Err(config_err(
            "the system trust store holds no usable CA certificate; give ca_file or ca_dir with the CA that issued \
             the server's certificate",
        ));
    }
    Ok(store)
}

fn client_auth(cc: &ClientCertificate) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = read_pem_certs(&cc.certificate)?;
    let text = Zeroizing::new(
        std::fs::read(&cc.key).map_err(|e| config_err(format!("cannot read the key {}: {e}", cc.key.display())))?,
    );
    if text.windows(b"ENCRYPTED PRIVATE KEY".len()).any(|w| w == b"ENCRYPTED PRIVATE KEY") {
        let password = cc
            .key_password
            .as_ref()
            .ok_or_else(|| config_err(format!("the key {} is encrypted; give the key's password", cc.key.display())))?;
        return Ok((chain, super::keys::decrypt_pkcs8_pem(&text, password.as_bytes(), &cc.key)?));
    }
    let key = PrivateKeyDer::from_pem_slice(&text)
        .map_err(|e| config_err(format!("cannot read a private key from {}: {e}", cc.key.display())))?;
    Ok((chain, key))
}

impl TlsSetup {
    /// Builds the rustls configuration for `host`; reads the CA and key files now, so a bad
    /// path is reported before any connection.
    pub(crate) fn new(options: &TlsOptions, host: &str) -> Result<Self> {
        let name = options.server_name.clone().unwrap_or_else(|| host.to_owned());
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| config_err(format!("{name:?} cannot be used as a TLS server name: {e}")))?;
        let provider = provider();
        let versions: Vec<&'static rustls::SupportedProtocolVersion> =
            [(TlsVersion::Tls12, &rustls::version::TLS12), (TlsVersion::Tls13, &rustls::version::TLS13)]
                .into_iter()
                .filter(|(v, _)| {
                    *v >= options.min_version.unwrap_or(TlsVersion::Tls12)
                        && *v <= options.max_version.unwrap_or(TlsVersion::Tls13)
                })
                .map(|(_, p)| p)
                .collect();
        if versions.is_empty() {
            return Err(config_err("min_tls_version is above max_tls_version"));
        }
        let chain = if options.insecure_skip_verify {
            None
        } else {
            let store = Arc::new(roots(options)?);
            Some(
                WebPkiServerVerifier::builder_with_provider(store, provider.clone())
                    .build()
                    .map_err(|e| config_err(format!("cannot build the certificate verifier: {e}")))?,
            )
        };
        let verifier = Arc::new(Verifier {
            chain,
            pins: options.pinned_spki_sha256.clone(),
            algorithms: provider.signature_verification_algorithms,
        });
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&versions)
            .map_err(|e| config_err(format!("TLS versions: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &options.client_certificate {
            Some(cc) => {
                let (chain, key) = client_auth(cc)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| config_err(format!("the client certificate cannot be used: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        // WinRM is HTTP/1.1 only; offering ALPN would change nothing.
        config.alpn_protocols.clear();
        Ok(Self { config: Arc::new(config), server_name, options: options.clone() })
    }

    /// The name verified against the certificate.
    pub(crate) fn name(&self) -> String {
        self.server_name.to_str().into_owned()
    }
}

/// Builds [`TlsInfo`] from a finished client connection.
pub(crate) fn info(conn: &rustls::ClientConnection) -> Option<TlsInfo> {
    let version = match conn.protocol_version()? {
        rustls::ProtocolVersion::TLSv1_2 => TlsVersion::Tls12,
        rustls::ProtocolVersion::TLSv1_3 => TlsVersion::Tls13,
        _ => return None,
    };
    let leaf = conn.peer_certificates()?.first()?;
    Some(TlsInfo {
        version,
        cipher_suite: conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite())).unwrap_or_default(),
        certificate_sha256: cert::hex(&cert::fingerprint_sha256(leaf)),
        channel_binding: cert::tls_server_end_point(leaf),
        server_public_key_info: cert::subject_public_key_info(leaf).map(<[u8]>::to_vec),
    })
}

/// Says in words why a handshake with `endpoint` failed.
pub(crate) fn describe_failure(endpoint: &str, name: &str, err: &std::io::Error) -> Error {
    let why = match err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(ce)) => match ce {
            CertificateError::UnknownIssuer => {
                "its certificate was not issued by a trusted CA (give ca_file with the issuing CA, or pin its key)"
                    .to_owned()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => format!(
                "its certificate is not valid for the name {name:?} (connect by a name the certificate carries, or set \
                 server_name)"
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "its certificate has expired".to_owned()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "its certificate is not valid yet".to_owned()
            }
            CertificateError::Revoked => "its certificate is revoked".to_owned(),
            CertificateError::Other(other) => other.to_string(),
            other => format!("its certificate was refused: {other:?}"),
        },
        Some(other) => other.to_string(),
        None => err.to_string(),
    };
    Error::Tls { endpoint: endpoint.to_owned(), message: why }
}

/// Chain and name verification (unless skipped), then the pins; handshake signatures always.
#[derive(Debug)]
pub(crate) struct Verifier {
    chain: Option<Arc<WebPkiServerVerifier>>,
    pins: Vec<[u8; 32]>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Verifier {
    /// Accepts any certificate, whatever its issuer and name, but still checks that the server
    /// holds its key (CredSSP's inner channel: `pubKeyAuth` binds the certificate to the logon).
    pub(crate) fn any_certificate(algorithms: WebPkiSupportedAlgorithms) -> Self {
        Self { chain: None, pins: Vec::new(), algorithms }
    }
}

#[derive(Debug)]
struct PinMismatch(String);

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "its public key (sha256 {}) matches none of the pinned keys", self.0)
    }
}

impl std::error::Error for PinMismatch {}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if !self.pins.is_empty() {
            let digest = cert::spki_sha256(end_entity)
                .ok_or(rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
            if !self.pins.contains(&digest) {
                return Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
                    PinMismatch(cert::hex(&digest)),
                )))));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
