//! Authentication: credentials, the mechanisms the client offers, and the sspi security
//! contexts that authenticate an HTTP connection and then seal and unseal its bodies
//! ([`SecurityContext`] for NTLM, Kerberos and Negotiate; [`CredSspContext`] for CredSSP).
//!
//! One [`SecurityContext`] belongs to one TCP connection (NTLM's RC4 streams and sequence
//! numbers are per context); the transport never shares one between connections.

mod ap_req;
mod context;
mod credssp;
mod delegation;
pub mod kdc;
pub mod policy;

pub use context::{ContextParams, SecurityContext};
pub use credssp::CredSspContext;
pub use policy::{host_matches, is_trusted_host};

use std::fmt;

use zeroize::Zeroizing;

/// The HTTP authentication mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// SPNEGO (RFC 4559): Kerberos first, NTLM only where the security policy allows it.
    Negotiate,
    /// Raw NTLM tokens under the `Negotiate` HTTP scheme, as WinRM clients send them.
    Ntlm,
    /// Kerberos under the `Kerberos` HTTP scheme (no fallback).
    Kerberos,
    /// HTTP Basic: the password on every request; only over HTTPS or with an explicit opt-in.
    Basic,
    /// CredSSP: hands the user's credentials to the server (the double hop). Explicit opt-in.
    CredSsp,
    /// TLS client certificate (WinRM certificate mapping); HTTPS only.
    Certificate,
}

impl Mechanism {
    /// The lowercase name used in configuration and errors.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Negotiate => "negotiate",
            Mechanism::Ntlm => "ntlm",
            Mechanism::Kerberos => "kerberos",
            Mechanism::Basic => "basic",
            Mechanism::CredSsp => "credssp",
            Mechanism::Certificate => "certificate",
        }
    }

    /// Whether the mechanism provides message sealing after authentication.
    pub fn can_seal(self) -> bool {
        matches!(self, Mechanism::Negotiate | Mechanism::Ntlm | Mechanism::Kerberos | Mechanism::CredSsp)
    }
}

/// Kerberos settings (used by `kerberos` and by `negotiate`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerberosOptions {
    /// The KDC: `host`, `host:port`, `tcp://host:port` or `udp://host:port`. When `None`, the
    /// `PSREMOTE_KDC` environment variable, then the realm's `kdc` in krb5.conf
    /// (`KRB5_CONFIG` or `/etc/krb5.conf`).
    pub kdc: Option<String>,
    /// The service class of the SPN: `HTTP` (what Windows registers for WinRM), `host` or `WSMAN`.
    pub service: String,
    /// The host name in the SPN when it differs from the connection's host.
    pub hostname: Option<String>,
    /// Ask for a forwardable ticket and delegate it to the server (the double hop).
    pub delegate: bool,
}

impl Default for KerberosOptions {
    fn default() -> Self {
        Self { kdc: None, service: "HTTP".into(), hostname: None, delegate: false }
    }
}

impl std::str::FromStr for Mechanism {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "negotiate" => Ok(Mechanism::Negotiate),
            "ntlm" => Ok(Mechanism::Ntlm),
            "kerberos" => Ok(Mechanism::Kerberos),
            "basic" => Ok(Mechanism::Basic),
            "credssp" => Ok(Mechanism::CredSsp),
            "certificate" => Ok(Mechanism::Certificate),
            other => Err(crate::Error::InvalidConfig(format!(
                "unknown authentication mechanism {other:?}; use one of negotiate, ntlm, kerberos, basic, credssp, \
                 certificate"
            ))),
        }
    }
}

/// A user name and password. The password is zeroized on drop and never printed.
#[derive(Clone)]
pub struct Credentials {
    username: String,
    password: Zeroizing<String>,
}

impl Credentials {
    /// `username` may be `user`, `DOMAIN\user` or `user@domain`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: Zeroizing::new(password.into()) }
    }

    /// The user name as given.
    pub fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// The `Authorization` header value for Basic.
pub(crate) fn basic_header(creds: &Credentials) -> Zeroizing<String> {
    use base64::Engine as _;
    let raw = Zeroizing::new(format!("{}:{}", creds.username(), creds.password()));
    Zeroizing::new(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new("DOM\\user", "s3cret-Passw0rd");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"));
        assert!(shown.contains("DOM\\\\user"));
    }

    #[test]
    fn basic_header_encodes_user_and_password() {
        let h = basic_header(&Credentials::new("user", "pass"));
        assert_eq!(h.as_str(), "Basic dXNlcjpwYXNz");
    }
}
