//! A small tokio client for the KDC requests sspi's Kerberos generator yields, and the lookup of
//! which KDC to ask (explicit option, `PSREMOTE_KDC`, or krb5.conf).
//!
//! sspi hands over a [`NetworkRequest`] whose bytes are already framed for the transport: over TCP
//! they carry the 4-byte length prefix, over UDP they do not, and in both cases sspi expects the
//! reply with a 4-byte prefix in front. sspi neither times out nor retries a UDP reply that was
//! too big for a datagram (KRB_ERR_RESPONSE_TOO_BIG); both happen here.

use std::path::PathBuf;
use std::time::Duration;

use sspi::{NetworkProtocol, NetworkRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};

/// Time allowed for one KDC exchange.
const KDC_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest KDC reply accepted over TCP (tickets with big PACs stay far below this).
const MAX_REPLY: usize = 1 << 20;
/// KRB-ERROR code asking the client to retry over TCP.
const KRB_ERR_RESPONSE_TOO_BIG: u32 = 52;

/// The environment variable naming the KDC when no option does.
pub const KDC_ENV: &str = "PSREMOTE_KDC";

fn unreachable(url: &url::Url, what: impl std::fmt::Display) -> sspi::Error {
    sspi::Error::new(sspi::ErrorKind::NoAuthenticatingAuthority, format!("KDC {url}: {what}"))
}

/// Sends one request and returns the reply framed as sspi expects it.
pub(crate) async fn exchange(req: &NetworkRequest) -> sspi::Result<Vec<u8>> {
    let url = &req.url;
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_owned();
    let port = url.port().unwrap_or(88);
    tracing::debug!(kdc = %url, protocol = ?req.protocol, bytes = req.data.len(), "KDC request");
    let fut = async {
        match req.protocol {
            NetworkProtocol::Tcp => tcp(&host, port, &req.data).await.map_err(|e| unreachable(url, e)),
            NetworkProtocol::Udp => {
                let reply = udp(&host, port, &req.data).await.map_err(|e| unreachable(url, e))?;
                if krb_error_code(&reply) == Some(KRB_ERR_RESPONSE_TOO_BIG) {
                    tracing::debug!(kdc = %url, "reply too big for UDP; asking again over TCP");
                    let mut framed = u32::try_from(req.data.len()).unwrap_or(u32::MAX).to_be_bytes().to_vec();
                    framed.extend_from_slice(&req.data);
                    return tcp(&host, port, &framed).await.map_err(|e| unreachable(url, e));
                }
                let mut out = u32::try_from(reply.len()).unwrap_or(u32::MAX).to_be_bytes().to_vec();
                out.extend_from_slice(&reply);
                Ok(out)
            }
            NetworkProtocol::Http | NetworkProtocol::Https => {
                Err(unreachable(url, "KDC proxies (MS-KKDCP) are not supported; give a tcp:// or udp:// KDC"))
            }
        }
    };
    match tokio::time::timeout(KDC_TIMEOUT, fut).await {
        Ok(r) => r,
        Err(_) => Err(unreachable(url, format!("no answer within {KDC_TIMEOUT:?}"))),
    }
}

async fn tcp(host: &str, port: u16, framed: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = tokio::net::TcpStream::connect((host, port)).await?;
    s.write_all(framed).await?;
    let len = s.read_u32().await? as usize;
    if len > MAX_REPLY {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{len}-byte reply is too large")));
    }
    let mut out = vec![0u8; 4 + len];
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    s.read_exact(&mut out[4..]).await?;
    Ok(out)
}

async fn udp(host: &str, port: u16, datagram: &[u8]) -> std::io::Result<Vec<u8>> {
    let target = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let local = if target.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let s = tokio::net::UdpSocket::bind(local).await?;
    s.connect(target).await?;
    s.send(datagram).await?;
    let mut buf = vec![0u8; 65_536];
    let n = s.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

/// The error-code of a KRB-ERROR message, if `reply` is one.
fn krb_error_code(reply: &[u8]) -> Option<u32> {
    let err: picky_krb::messages::KrbError = picky_asn1_der::from_bytes(reply).ok()?;
    Some(err.0.error_code.0)
}

/// Reads a KDC given as `host`, `host:port`, `tcp://host:port` or `udp://host:port`.
pub(crate) fn parse_kdc(text: &str) -> Result<url::Url> {
    let t = text.trim();
    let with_scheme = if t.contains("://") { t.to_owned() } else { format!("tcp://{t}") };
    let url = url::Url::parse(&with_scheme).map_err(|e| {
        Error::InvalidConfig(format!("cannot read the KDC {text:?}: {e}; use host[:port] or tcp://host:port"))
    })?;
    if !matches!(url.scheme(), "tcp" | "udp") || url.host_str().is_none_or(str::is_empty) {
        return Err(Error::InvalidConfig(format!(
            "the KDC {text:?} must be host[:port], tcp://host:port or udp://host:port"
        )));
    }
    Ok(url)
}

/// What krb5.conf says: the default realm and each realm's first KDC.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Krb5Conf {
    pub default_realm: Option<String>,
    pub kdcs: Vec<(String, String)>,
}

impl Krb5Conf {
    /// Reads `KRB5_CONFIG` (the first readable file of its colon-separated list) or /etc/krb5.conf.
    pub(crate) fn load() -> Self {
        let paths: Vec<PathBuf> = match std::env::var_os("KRB5_CONFIG") {
            Some(v) => std::env::split_paths(&v).collect(),
            None => vec![PathBuf::from("/etc/krb5.conf")],
        };
        paths.iter().find_map(|p| std::fs::read_to_string(p).ok()).map(|t| Self::parse(&t)).unwrap_or_default()
    }

    /// A tolerant reader of the profile format: sections, `name = value`, `REALM = { ... }`.
    pub(crate) fn parse(text: &str) -> Self {
        let mut conf = Self::default();
        let mut section = String::new();
        let mut realm: Option<String> = None;
        for raw in text.lines() {
            let line = raw.split(['#', ';']).next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                section = line.trim_matches(['[', ']']).trim().to_ascii_lowercase();
                realm = None;
                continue;
            }
            if line == "}" {
                realm = None;
                continue;
            }
            let Some((key, value)) = line.split_once('=') else { continue };
            let (key, value) = (key.trim(), value.trim());
            match section.as_str() {
                "libdefaults" if key == "default_realm" => conf.default_realm = Some(value.to_owned()),
                "realms" if value.starts_with('{') => realm = Some(key.to_owned()),
                "realms" if key == "kdc" => {
                    if let Some(r) = &realm
                        && !conf.kdcs.iter().any(|(k, _)| k.eq_ignore_ascii_case(r))
                    {
                        conf.kdcs.push((r.clone(), value.to_owned()));
                    }
                }
                _ => {}
            }
        }
        conf
    }

    fn kdc_for(&self, realm: &str) -> Option<&str> {
        self.kdcs.iter().find(|(r, _)| r.eq_ignore_ascii_case(realm)).map(|(_, k)| k.as_str())
    }
}

/// The KDC for `realm`: the explicit option, then `PSREMOTE_KDC`, then krb5.conf. `None` when
/// nothing names one.
pub(crate) fn resolve(explicit: Option<&str>, realm: &str, conf: &Krb5Conf) -> Result<Option<url::Url>> {
    if let Some(k) = explicit {
        return parse_kdc(k).map(Some);
    }
    if let Ok(k) = std::env::var(KDC_ENV)
        && !k.trim().is_empty()
    {
        return parse_kdc(&k).map(Some);
    }
    conf.kdc_for(realm).map(parse_kdc).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdc_spellings() {
        assert_eq!(parse_kdc("kdc.example").unwrap().as_str(), "tcp://kdc.example");
        assert_eq!(parse_kdc("127.0.0.1:8888").unwrap().port(), Some(8888));
        assert_eq!(parse_kdc("udp://127.0.0.1:88").unwrap().scheme(), "udp");
        assert!(parse_kdc("https://proxy/KdcProxy").is_err());
        assert!(parse_kdc("tcp://").is_err());
    }

    #[test]
    fn reads_krb5_conf() {
        let conf = Krb5Conf::parse(
            "[libdefaults]\n  default_realm = EXAMPLE.TEST # comment\n  rdns = false\n[realms]\n EXAMPLE.TEST = {\n  \
             kdc = 127.0.0.1:7088\n  kdc = second:88\n  admin_server = x\n }\n OTHER.TEST = {\n  kdc = other:88\n }\n\
             [domain_realm]\n .example.test = EXAMPLE.TEST\n",
        );
        assert_eq!(conf.default_realm.as_deref(), Some("EXAMPLE.TEST"));
        assert_eq!(conf.kdc_for("example.test"), Some("127.0.0.1:7088"));
        assert_eq!(conf.kdc_for("OTHER.TEST"), Some("other:88"));
        assert_eq!(conf.kdc_for("NONE"), None);
        assert_eq!(resolve(Some("udp://k:1"), "X", &conf).unwrap().unwrap().as_str(), "udp://k:1");
    }
}
