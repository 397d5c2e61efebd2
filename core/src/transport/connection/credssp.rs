//! The CredSSP side of a connection: the handshake legs under the `CredSSP` HTTP scheme (see
//! [`CredSspContext`] for what they carry) and WinRM message encryption with its TLS channel.

use std::time::Duration;

use http::{HeaderValue, StatusCode, header};

use super::{Connection, SOAP_CONTENT_TYPE, b64, transport_err};
use crate::auth::{CredSspContext, Mechanism};
use crate::encryption::{self, Protocol};
use crate::error::{Error, Result};
use crate::transport::TransportConfig;

/// Round trips allowed: two TLS legs (three after a HelloRetryRequest) and three TSRequests.
const MAX_ROUNDS: usize = 8;

fn auth_err(message: impl Into<String>) -> Error {
    Error::Authentication { mechanism: Mechanism::CredSsp.name(), message: message.into() }
}

impl Connection {
    /// Runs the CredSSP handshake with empty POSTs. The last leg hands the user's credentials to
    /// the server, and every logon says so in an audit warning.
    pub(super) async fn authenticate_credssp(&mut self, config: &TransportConfig) -> Result<CredSspContext> {
        let spn_host = config.kerberos.hostname.as_deref().unwrap_or(&config.host);
        let spn = format!("{}/{}", config.kerberos.service, spn_host);
        let mut ctx = CredSspContext::new(&config.credentials, spn)?;
        let mut token = ctx.step(None)?;
        for _ in 0..MAX_ROUNDS {
            if ctx.is_complete() {
                tracing::warn!(
                    target: "psremote::audit",
                    event = "credssp_delegation",
                    endpoint = %self.info.endpoint,
                    user = config.credentials.username(),
                    "CredSSP hands the user's credentials to the server, which can then act as the user towards \
                     other machines"
                );
            }
            let mut req = self.request(config, Vec::new(), SOAP_CONTENT_TYPE)?;
            let value =
                HeaderValue::from_str(&format!("CredSSP {}", b64(&token))).map_err(|e| transport_err(e, None))?;
            req.headers_mut().insert(header::AUTHORIZATION, value);
            let (parts, _) = self
                .roundtrip(req, config.connect_timeout.max(Duration::from_secs(30)), super::AUTH_REPLY_LIMIT)
                .await?;
            let server_token = credssp_token(&parts.headers)?.filter(|t| !t.is_empty());
            if parts.status == StatusCode::UNAUTHORIZED {
                match server_token {
                    // A failed inner logon also comes as a token: a TSRequest with the error status.
                    Some(t) if !ctx.is_complete() => {
                        token = ctx.step(Some(&t))?;
                        continue;
                    }
                    _ => return Err(auth_err("the server rejected the credentials (HTTP 401)")),
                }
            }
            if !ctx.is_complete() {
                return Err(auth_err(format!(
                    "the server ended the handshake with HTTP {} before the credentials were delegated",
                    parts.status.as_u16()
                )));
            }
            if !parts.status.is_success() {
                return Err(auth_err(format!(
                    "the server answered HTTP {} to the delegated credentials",
                    parts.status.as_u16()
                )));
            }
            tracing::debug!(tls = ctx.tls_version(), "connection authenticated with CredSSP");
            return Ok(ctx);
        }
        Err(auth_err("too many authentication round trips"))
    }
}

/// Seals a body with the CredSSP channel: its Content-Type and the (possibly multi-part) body.
pub(super) fn seal(ctx: &mut CredSspContext, body: &[u8]) -> Result<(String, Vec<u8>)> {
    encryption::seal_with(Protocol::CredSsp, body, |chunk| ctx.wrap(chunk))
}

/// Unseals a reply body part by part.
pub(super) fn unseal(ctx: &mut CredSspContext, raw: &[u8]) -> Result<Vec<u8>> {
    encryption::unseal_with(raw, |header, data| ctx.unwrap(header, data))
}

/// The token of the first `WWW-Authenticate: CredSSP <token>` header, if any.
fn credssp_token(headers: &http::HeaderMap) -> Result<Option<Vec<u8>>> {
    use base64::Engine as _;
    for v in headers.get_all(header::WWW_AUTHENTICATE) {
        let Ok(v) = v.to_str() else { continue };
        let v = v.trim();
        let (scheme, rest) = v.split_once(' ').unwrap_or((v, ""));
        if scheme.eq_ignore_ascii_case("CredSSP") {
            return base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map(Some)
                .map_err(|e| Error::protocol(format!("invalid base64 in WWW-Authenticate: {e}")));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_credssp_token_among_other_schemes() {
        let mut headers = http::HeaderMap::new();
        headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("Negotiate"));
        headers.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("credssp AQID"));
        assert_eq!(credssp_token(&headers).unwrap(), Some(vec![1, 2, 3]));
        let mut bare = http::HeaderMap::new();
        bare.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("CredSSP"));
        assert_eq!(credssp_token(&bare).unwrap(), Some(vec![]));
        assert_eq!(credssp_token(&http::HeaderMap::new()).unwrap(), None);
        let mut bad = http::HeaderMap::new();
        bad.append(header::WWW_AUTHENTICATE, HeaderValue::from_static("CredSSP !!"));
        assert!(credssp_token(&bad).is_err());
    }
}
