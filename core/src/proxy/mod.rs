//! Proxies between the client and the server, sans-IO: the proxy URL and its credentials, the
//! environment's proxy variables ([`env`]), the HTTP CONNECT exchange ([`http`]) and the SOCKS5
//! handshake ([`socks5`]). Each handshake builds the bytes to send and reads the proxy's bytes
//! into a tunnel or a typed [`ProxyFailure`]; `transport` drives them over a socket.
//!
//! Every proxy is a tunnel: an HTTP proxy is asked to CONNECT even for an `http://` endpoint, so
//! that connection-based authentication (NTLM, Kerberos, CredSSP) and message encryption keep
//! one TCP connection end to end, and TLS to an `https://` endpoint runs inside it unchanged.

pub mod env;
pub mod http;
pub mod socks5;

use std::fmt;

use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The kind of proxy, from the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyScheme {
    /// `http://`: an HTTP proxy asked for a CONNECT tunnel (RFC 9110 §9.3.6).
    Http,
    /// `socks5://`: SOCKS5 (RFC 1928) with the server's name resolved by the client.
    Socks5,
    /// `socks5h://`: SOCKS5 with the name sent to the proxy, which resolves it.
    Socks5h,
}

impl ProxyScheme {
    /// The URL scheme.
    pub fn name(self) -> &'static str {
        match self {
            ProxyScheme::Http => "http",
            ProxyScheme::Socks5 => "socks5",
            ProxyScheme::Socks5h => "socks5h",
        }
    }

    /// The port a URL without one means: 80 for HTTP, 1080 for SOCKS (as urllib3 and requests).
    pub fn default_port(self) -> u16 {
        match self {
            ProxyScheme::Http => 80,
            ProxyScheme::Socks5 | ProxyScheme::Socks5h => 1080,
        }
    }
}

/// A user name and password for the proxy (Basic for an HTTP proxy, RFC 1929 for SOCKS5). The
/// password is zeroized on drop and never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    username: String,
    password: Zeroizing<String>,
}

impl ProxyCredentials {
    /// Credentials for the proxy.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self { username: username.into(), password: Zeroizing::new(password.into()) }
    }

    /// The user name.
    pub fn username(&self) -> &str {
        &self.username
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for ProxyCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCredentials").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// A proxy: where it is and how to log on to it.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// HTTP CONNECT, SOCKS5 or SOCKS5 with remote name resolution.
    pub scheme: ProxyScheme,
    /// The proxy's host name or IP address (no brackets).
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// Credentials for the proxy, if it wants them.
    pub credentials: Option<ProxyCredentials>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy").field("url", &self.url()).field("credentials", &self.credentials).finish()
    }
}

impl fmt::Display for Proxy {
    /// The URL without credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

impl Proxy {
    /// Reads `[scheme://][user[:password]@]host[:port][/]`. The scheme is `http` (the default when
    /// none is written), `socks5` or `socks5h`, in any case; `https://` proxies and SOCKS4 are
    /// refused. User and password are percent-decoded. Without a port: 80 for `http`, 1080 for
    /// SOCKS (urllib3's defaults). Errors never repeat the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self> {
        let bad = |why: &str| Error::InvalidConfig(format!("the proxy URL cannot be used: {why}"));
        let url = url.trim();
        let (scheme, rest) = match url.find("://") {
            Some(i) => (url[..i].to_ascii_lowercase(), &url[i + 3..]),
            None => ("http".to_owned(), url),
        };
        let scheme = match scheme.as_str() {
            "http" => ProxyScheme::Http,
            "socks5" => ProxyScheme::Socks5,
            "socks5h" => ProxyScheme::Socks5h,
            "https" => {
                return Err(bad(
                    "https:// proxies (TLS to the proxy) are not supported; use http:// (an https endpoint's TLS \
                     still runs end to end inside the tunnel)",
                ));
            }
            "socks4" | "socks4a" => return Err(bad("SOCKS4 is not supported; use socks5:// or socks5h://")),
            _ => return Err(bad("the scheme must be http://, socks5:// or socks5h://")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(bad("a proxy URL has no path, query or fragment"));
        }
        let (userinfo, hostport) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let credentials = match userinfo {
            None => None,
            Some(info) => {
                let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                let user =
                    percent_decode(user).ok_or_else(|| bad("the user name is not valid percent-encoded UTF-8"))?;
                let pass = Zeroizing::new(
                    percent_decode(pass).ok_or_else(|| bad("the password is not valid percent-encoded UTF-8"))?,
                );
                if user.is_empty() {
                    return Err(bad("the user name before '@' is empty"));
                }
                Some(ProxyCredentials { username: user, password: pass })
            }
        };
        let (host, port) = split_host_port(hostport).ok_or_else(|| bad("expected host:port after the scheme"))?;
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| bad("the port is not 1..65535"))?,
            None => scheme.default_port(),
        };
        let proxy = Proxy { scheme, host: host.to_owned(), port, credentials };
        proxy.check()?;
        Ok(proxy)
    }

    /// Sets (or, with `None`, clears) the credentials, replacing any from the URL.
    pub fn with_credentials(mut self, credentials: Option<ProxyCredentials>) -> Result<Self> {
        self.credentials = credentials;
        self.check()?;
        Ok(self)
    }

    /// Checks what the handshakes need of the host and the credentials.
    fn check(&self) -> Result<()> {
        let bad = |why: String| Error::InvalidConfig(format!("the proxy cannot be used: {why}"));
        if self.host.is_empty() || !valid_host(&self.host) {
            return Err(bad("the proxy's host is empty or not a host name or address".into()));
        }
        if let Some(c) = &self.credentials {
            match self.scheme {
                ProxyScheme::Http if c.username.contains(':') => {
                    return Err(bad("an HTTP proxy's user name cannot contain ':' (Basic authentication)".into()));
                }
                ProxyScheme::Http if c.username.contains(['\r', '\n']) => {
                    return Err(bad("the proxy user name holds a line break".into()));
                }
                ProxyScheme::Socks5 | ProxyScheme::Socks5h
                    if !(1..=255).contains(&c.username.len()) || !(1..=255).contains(&c.password.len()) =>
                {
                    return Err(bad(
                        "a SOCKS5 proxy's user name and password must each be 1 to 255 bytes (RFC 1929)".into()
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The URL without credentials: `scheme://host:port`, an IPv6 address in brackets.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme.name(), authority(&self.host, self.port))
    }
}

/// `host:port`, an IPv6 address in brackets.
pub(crate) fn authority(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// Whether `host` can stand in a request line or a SOCKS request: no whitespace, controls or
/// URL delimiters.
pub(crate) fn valid_host(host: &str) -> bool {
    !host.is_empty() && !host.chars().any(|c| c.is_whitespace() || c.is_control() || "/@?#[]\\\"".contains(c))
}

/// `host[:port]` or `[v6][:port]`; the host without brackets.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        // A bare IPv6 address has several colons and must be bracketed to carry a port.
        Some((host, _)) if host.contains(':') => None,
        Some((host, port)) => Some((host, Some(port))),
        None => Some((s, None)),
    }
}

/// `%XX` decoding into UTF-8; `None` for a bad escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len()));
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out.to_vec()).ok()
}

/// Why a proxy did not give a tunnel. [`Error::Proxy`] carries it with the proxy's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyFailure {
    /// No TCP connection to the proxy could be made.
    Unreachable {
        /// The operating system's error.
        message: String,
    },
    /// The proxy wants credentials, or refused the ones given (HTTP 407, or tinyproxy's 401;
    /// SOCKS5 method `FF` or a failed RFC 1929 logon).
    Authentication {
        /// Whether credentials were sent.
        had_credentials: bool,
        /// The HTTP status, for an HTTP proxy.
        status: Option<u16>,
    },
    /// The proxy answered but would not open the tunnel to the server.
    Refused {
        /// The server's `host:port` asked for.
        target: String,
        /// The HTTP status, or the SOCKS5 reply code.
        status: Option<u16>,
        /// The HTTP reason phrase (escaped for terminals) or the SOCKS5 reply code's meaning.
        reason: String,
    },
    /// The proxy's bytes break the protocol.
    Protocol(String),
    /// The proxy closed the connection during the handshake.
    Closed,
    /// The connection to the proxy failed during the handshake.
    Io(String),
    /// The connect and handshake together took longer than the connect timeout.
    Timeout {
        /// The connect timeout, in milliseconds.
        millis: u64,
    },
}

impl ProxyFailure {
    /// A short stable name: `unreachable`, `authentication`, `refused`, `protocol`, `closed`,
    /// `io` or `timeout`.
    pub fn name(&self) -> &'static str {
        match self {
            ProxyFailure::Unreachable { .. } => "unreachable",
            ProxyFailure::Authentication { .. } => "authentication",
            ProxyFailure::Refused { .. } => "refused",
            ProxyFailure::Protocol(_) => "protocol",
            ProxyFailure::Closed => "closed",
            ProxyFailure::Io(_) => "io",
            ProxyFailure::Timeout { .. } => "timeout",
        }
    }

    /// The proxy's HTTP status, or its SOCKS5 reply code, when it answered with one.
    pub fn status(&self) -> Option<u16> {
        match self {
            ProxyFailure::Authentication { status, .. } | ProxyFailure::Refused { status, .. } => *status,
            _ => None,
        }
    }

    /// Whether the server may be reachable another time or another way: the proxy was down,
    /// could not reach the server, or the connection broke; not refused credentials or a
    /// proxy that breaks the protocol.
    pub fn is_transient(&self) -> bool {
        !matches!(self, ProxyFailure::Authentication { .. } | ProxyFailure::Protocol(_))
    }
}

impl fmt::Display for ProxyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyFailure::Unreachable { message } => write!(f, "cannot connect to the proxy: {message}"),
            ProxyFailure::Authentication { had_credentials: true, status } => {
                write!(f, "the proxy refused the proxy credentials")?;
                status.map_or(Ok(()), |s| write!(f, " (HTTP {s})"))
            }
            ProxyFailure::Authentication { had_credentials: false, status } => {
                write!(f, "the proxy requires authentication")?;
                status.map_or(Ok(()), |s| write!(f, " (HTTP {s})"))?;
                write!(f, "; give proxy credentials")
            }
            ProxyFailure::Refused { target, status: Some(s), reason } => {
                write!(f, "the proxy refused the tunnel to {target}: {s} {reason}")
            }
            ProxyFailure::Refused { target, status: None, reason } => {
                write!(f, "the proxy refused the tunnel to {target}: {reason}")
            }
            ProxyFailure::Protocol(why) => write!(f, "the proxy's answer breaks the protocol: {why}"),
            ProxyFailure::Closed => write!(f, "the proxy closed the connection during the handshake"),
            ProxyFailure::Io(why) => write!(f, "the connection to the proxy failed during the handshake: {why}"),
            ProxyFailure::Timeout { millis } => {
                write!(f, "no tunnel through the proxy within the connect timeout ({millis} ms)")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_defaults_and_decoding() {
        let p = Proxy::parse("http://user:p%40ss%3Aw@127.0.0.1:3128").unwrap();
        assert_eq!((p.scheme, p.host.as_str(), p.port), (ProxyScheme::Http, "127.0.0.1", 3128));
        let c = p.credentials.as_ref().unwrap();
        assert_eq!((c.username(), c.password()), ("user", "p@ss:w"));
        assert_eq!(p.url(), "http://127.0.0.1:3128");

        let p = Proxy::parse("proxy.example").unwrap();
        assert_eq!((p.scheme, p.port), (ProxyScheme::Http, 80));
        let p = Proxy::parse("SOCKS5H://[::1]/").unwrap();
        assert_eq!((p.scheme, p.host.as_str(), p.port), (ProxyScheme::Socks5h, "::1", 1080));
        assert_eq!(p.url(), "socks5h://[::1]:1080");
        let p = Proxy::parse("socks5://u:pw@[::1]:1081").unwrap();
        assert_eq!((p.scheme, p.port, p.credentials.unwrap().username()), (ProxyScheme::Socks5, 1081, "u"));
        // The last '@' ends the userinfo.
        let p = Proxy::parse("http://u:a@b@h:1").unwrap();
        assert_eq!((p.host.as_str(), p.credentials.unwrap().password()), ("h", "a@b"));
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for url in [
            "https://u:secret@h:1",
            "socks4://h:1",
            "ftp://h:1",
            "http://u:secret@h:0",
            "http://u:secret@h:99999",
            "http://u:secret@h:1/path",
            "http://u:secret@::1:80",
            "http://:secret@h:1",
            "http://u:%zzsecret@h:1",
            "http://",
            "socks5://u@h:1",
            "http://h st:1",
        ] {
            let err = Proxy::parse(url).unwrap_err();
            assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig, "{url}");
            assert!(!err.to_string().contains("secret"), "{url}: {err}");
        }
    }

    #[test]
    fn debug_and_display_hide_the_password() {
        let p = Proxy::parse("socks5://user:hunter2@h:1").unwrap();
        let shown = format!("{p:?} {p}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("user"), "{shown}");
    }

    #[test]
    fn credentials_given_apart_replace_the_urls() {
        let p =
            Proxy::parse("http://a:b@h:1").unwrap().with_credentials(Some(ProxyCredentials::new("c", "d"))).unwrap();
        assert_eq!(p.credentials.unwrap().password(), "d");
        assert!(Proxy::parse("http://h:1").unwrap().with_credentials(Some(ProxyCredentials::new("a:b", "c"))).is_err());
        let long = "x".repeat(256);
        assert!(
            Proxy::parse("socks5://h:1").unwrap().with_credentials(Some(ProxyCredentials::new(&long, "c"))).is_err()
        );
    }
}
