//! Authentication: credentials, the mechanisms the client offers, and the sspi security
//! contexts that authenticate an HTTP connection and then seal and unseal its bodies.
//!
//! One [`SecurityContext`] belongs to one TCP connection (NTLM's RC4 streams and sequence
//! numbers are per context); the transport never shares one between connections.

mod context;
pub mod policy;

pub use context::SecurityContext;

use std::fmt;

use zeroize::Zeroizing;

/// The HTTP authentication mechanism to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mechanism {
    /// SPNEGO (RFC 4559). Kerberos is not available yet, so this negotiates NTLM inside SPNEGO.
    Negotiate,
    /// Raw NTLM tokens under the `Negotiate` HTTP scheme, as WinRM clients send them.
    Ntlm,
    /// HTTP Basic: the password on every request; only over HTTPS or with an explicit opt-in.
    Basic,
}

impl Mechanism {
    /// The lowercase name used in configuration and errors.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Negotiate => "negotiate",
            Mechanism::Ntlm => "ntlm",
            Mechanism::Basic => "basic",
        }
    }

    /// Whether the mechanism provides message sealing after authentication.
    pub fn can_seal(self) -> bool {
        matches!(self, Mechanism::Negotiate | Mechanism::Ntlm)
    }
}

impl std::str::FromStr for Mechanism {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "negotiate" => Ok(Mechanism::Negotiate),
            "ntlm" => Ok(Mechanism::Ntlm),
            "basic" => Ok(Mechanism::Basic),
            other => Err(crate::Error::InvalidConfig(format!(
                "unknown authentication mechanism {other:?}; use one of negotiate, ntlm, basic"
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
