//! One HTTP/1.1 connection with its own authentication state.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, header};
use hyper::body::{Frame, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::tls::{self, TlsSetup};
use super::{ConnectionInfo, EncryptionLayer, HttpReply, MessageEncryption, TransportConfig};
use crate::auth::{self, ContextParams, CredSspContext, Mechanism, SecurityContext, policy};
use crate::encryption::{self, Protocol};
use crate::error::{Error, Result};

const CERT_AUTH_PROFILE: &str = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual";
const SOAP_CONTENT_TYPE: &str = "application/soap+xml;charset=UTF-8";
const USER_AGENT: &str = concat!("psremote/", env!("CARGO_PKG_VERSION"));
/// Authentication round trips allowed before giving up (NTLM needs two, SPNEGO three).
const MAX_AUTH_ROUNDS: usize = 6;
/// The largest body accepted on an authentication round trip (a 401's or 200's text, which is
/// discarded): no SOAP envelope is announced there, so a fixed bound stands in for one.
const AUTH_REPLY_LIMIT: u64 = 256 * 1024;

mod credssp;

pub(super) struct Connection {
    /// Unique among the process's connections: what a request sealed ahead names as its own.
    id: u64,
    sender: SendRequest<Pieces>,
    /// The context that seals bodies; `None` when nothing is sealed (Basic, certificate, or
    /// NTLM/Negotiate/Kerberos/CredSSP inside TLS without `MessageEncryption::Always`). Shared
    /// only with requests sealed ahead for this connection ([`super::Lane`]); locked for one
    /// seal or unseal at a time.
    context: Option<SealerRef>,
    task: tokio::task::JoinHandle<()>,
    /// Why the connection task ended, when TLS ended it (a server alert after the handshake).
    closed_by: ClosedBy,
    info: ConnectionInfo,
    /// The last exchange failed because the connection closed before any reply came: the server
    /// closed it (an idle keep-alive connection) or dropped the request unanswered.
    unanswered: bool,
    /// The last exchange failed before any of its request was written: the connection was
    /// closed (a `Connection: close` reply before it) when the request came.
    unsent: bool,
}

/// A connection's sealer, shared with the requests sealed ahead for it.
pub(super) type SealerRef = Arc<SealState>;

/// A connection's sealer and what the requests sealed for it did to it.
#[derive(Debug)]
pub(super) struct SealState {
    sealer: Mutex<Sealer>,
    /// Requests sealed for the connection that have not gone out yet: until they have, the
    /// connection serves no one else (each sealing moved its sequence numbers on).
    unsent: AtomicUsize,
    /// A request sealed for it was dropped unsent: its sequence numbers are ahead of the
    /// server's for good, so the connection is done.
    spoiled: AtomicBool,
}

impl SealState {
    fn new(sealer: Sealer) -> SealerRef {
        Arc::new(SealState { sealer: Mutex::new(sealer), unsent: AtomicUsize::new(0), spoiled: AtomicBool::new(false) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sealer> {
        self.sealer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What seals the bodies of an authenticated connection.
// One per connection, kept for its lifetime: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Sealer {
    /// NTLM, Kerberos or Negotiate: the sspi context's keys.
    Sspi(SecurityContext),
    /// CredSSP: records of its TLS channel.
    CredSsp(CredSspContext),
}

/// A request body sent as the pieces it was built from (a sealed body's MIME head, the
/// ciphertext, the closing boundary), so nothing is copied to lay them end to end.
#[derive(Debug, Default)]
pub(super) struct Pieces {
    pieces: VecDeque<Bytes>,
    len: u64,
}

impl Pieces {
    fn new(pieces: impl IntoIterator<Item = Bytes>) -> Self {
        let pieces: VecDeque<Bytes> = pieces.into_iter().filter(|p| !p.is_empty()).collect();
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        Self { pieces, len }
    }

    fn len(&self) -> u64 {
        self.len
    }
}

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Self::Error>>> {
        let next = self.pieces.pop_front();
        if let Some(p) = &next {
            self.len -= p.len() as u64;
        }
        Poll::Ready(next.map(|p| Ok(Frame::data(p))))
    }

    fn is_end_stream(&self) -> bool {
        self.pieces.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
}

/// A request built (and sealed, when the connection seals) for one connection.
pub(super) struct Outbound {
    req: Option<Request<Pieces>>,
    /// The plaintext envelope's length, for messages.
    envelope_bytes: usize,
    /// The connection whose sealer sealed it: it may go on that connection only.
    pub(super) sealed_for: Option<u64>,
    /// That sealer, until the request went out.
    seal: Option<SealerRef>,
}

impl Outbound {
    /// Taken for sending: the sealer no longer waits for it.
    fn take(&mut self) -> Option<Request<Pieces>> {
        if let Some(seal) = self.seal.take() {
            seal.unsent.fetch_sub(1, Ordering::SeqCst);
        }
        self.req.take()
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if let Some(seal) = self.seal.take() {
            seal.spoiled.store(true, Ordering::SeqCst);
            seal.unsent.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl fmt::Debug for Outbound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbound")
            .field("envelope_bytes", &self.envelope_bytes)
            .field("sealed_for", &self.sealed_for)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").field("id", &self.id).field("context", &self.context).finish_non_exhaustive()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn transport_err(message: impl fmt::Display, status: Option<u16>) -> Error {
    Error::Transport { message: message.to_string(), status }
}

impl Connection {
    /// Connects (TLS for https) and, for NTLM/Negotiate, authenticates with empty POSTs so that
    /// the security context exists before the first body.
    pub(super) async fn open(config: &TransportConfig, tls_setup: Option<&TlsSetup>) -> Result<Self> {
        let stream = super::tunnel::connect(config).await?;
        let opened = Self::establish(config, tls_setup, stream).await;
        match (opened, &config.proxy) {
            // The tunnel broke (the proxy closed it, or cut it off): say it went through one.
            (Err(Error::Transport { message, status }), Some(proxy)) => {
                Err(Error::Transport { message: format!("{message} (through the proxy {proxy})"), status })
            }
            (other, _) => other,
        }
    }

    /// TLS (for https), HTTP/1.1 and the authentication over a connected stream.
    async fn establish(
        config: &TransportConfig,
        tls_setup: Option<&TlsSetup>,
        stream: tokio::net::TcpStream,
    ) -> Result<Self> {
        let address = format!("{}:{}", config.host, config.port);
        let (sender, task, closed_by, tls_info) = match tls_setup {
            None => {
                let (sender, task, closed_by) = http_over(stream, &address).await?;
                (sender, task, closed_by, None)
            }
            Some(setup) => {
                if setup.options.insecure_skip_verify {
                    tracing::warn!(
                        target: "psremote::audit",
                        endpoint = %config.url(),
                        pinned = !setup.options.pinned_spki_sha256.is_empty(),
                        "TLS certificate verification is disabled by configuration: the server's identity is not checked"
                    );
                }
                let connector = tokio_rustls::TlsConnector::from(setup.config.clone());
                let handshake = connector.connect(setup.server_name.clone(), stream);
                let tls_stream = match tokio::time::timeout(config.connect_timeout, handshake).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(tls::describe_failure(&address, &setup.name(), &e)),
                    Err(_) => {
                        return Err(Error::Tls { endpoint: address, message: "the TLS handshake timed out".into() });
                    }
                };
                let info = tls::info(tls_stream.get_ref().1);
                let (sender, task, closed_by) = http_over(tls_stream, &address).await?;
                (sender, task, closed_by, info)
            }
        };
        let seal = tls_info.is_none() || config.message_encryption == MessageEncryption::Always;
        let info = ConnectionInfo {
            endpoint: config.url(),
            mechanism: config.mechanism,
            negotiated: config.mechanism.name(),
            encryption: match (tls_info.is_some(), seal && config.mechanism.can_seal()) {
                (true, true) => EncryptionLayer::TlsAndMessage,
                (true, false) => EncryptionLayer::Tls,
                (false, true) => EncryptionLayer::Message,
                (false, false) => EncryptionLayer::None,
            },
            channel_binding: false,
            tls: tls_info,
            proxy: config.proxy.as_ref().map(|p| p.url()),
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let mut this = Self { id, sender, context: None, task, closed_by, info, unanswered: false, unsent: false };
        if config.mechanism == Mechanism::CredSsp {
            let ctx = this.authenticate_credssp(config).await?;
            this.context = seal.then(|| SealState::new(Sealer::CredSsp(ctx)));
        } else if config.mechanism.can_seal() {
            let ctx = this.authenticate(config).await?;
            if seal {
                this.context = Some(SealState::new(Sealer::Sspi(ctx)));
            }
        }
        tracing::info!(
            target: "psremote::audit",
            event = "connect",
            endpoint = %this.info.endpoint,
            proxy = this.info.proxy.as_deref(),
            mechanism = this.info.mechanism.name(),
            negotiated = this.info.negotiated,
            encryption = this.info.encryption.name(),
            channel_binding = this.info.channel_binding,
            tls_version = this.info.tls.as_ref().map(|t| t.version.name()),
            cipher_suite = this.info.tls.as_ref().map(|t| t.cipher_suite.as_str()),
            certificate_sha256 = this.info.tls.as_ref().map(|t| t.certificate_sha256.as_str()),
            user = config.credentials.username(),
            "connected"
        );
        Ok(this)
    }

    pub(super) fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// This connection's sealer, for sealing requests ahead ([`Connection::outbound`]).
    pub(super) fn sealer(&self) -> Option<SealerRef> {
        self.context.clone()
    }

    /// Whether the connection can take a request: open, and free of requests sealed ahead
    /// for it (see [`Connection::is_usable`]).
    pub(super) fn is_ready(&self) -> bool {
        self.is_usable() && self.context.as_ref().is_none_or(|c| c.unsent.load(Ordering::SeqCst) == 0)
    }

    /// Whether the connection is open and its sealing in step with the server's: it can carry
    /// the requests already sealed for it.
    pub(super) fn is_usable(&self) -> bool {
        !self.sender.is_closed()
            && !self.task.is_finished()
            && self.context.as_ref().is_none_or(|c| !c.spoiled.load(Ordering::SeqCst))
    }

    /// Whether the last exchange failed with the connection closed before any of the reply
    /// arrived (see [`closed_unanswered`]).
    pub(super) fn failed_unanswered(&self) -> bool {
        self.unanswered
    }

    /// Whether the last exchange failed before any of its request was written, so that it can
    /// go on another connection whatever it is.
    pub(super) fn failed_unsent(&self) -> bool {
        self.unsent
    }

    fn request(&self, config: &TransportConfig, body: Vec<u8>, content_type: &str) -> Result<Request<Pieces>> {
        request(config, Pieces::new([Bytes::from(body)]), content_type)
    }

    /// Sends `req` and reads the reply, whose body may not exceed `limit` bytes: a larger
    /// declared Content-Length is refused before any of the body is read, and a chunked body is
    /// counted as it arrives, so a hostile or broken server cannot make the client hold more.
    async fn roundtrip(
        &mut self,
        req: Request<Pieces>,
        timeout: Duration,
        limit: u64,
    ) -> Result<(http::response::Parts, Bytes)> {
        let endpoint = self.info.endpoint.clone();
        self.unanswered = false;
        self.unsent = false;
        let unanswered = &mut self.unanswered;
        let unsent = &mut self.unsent;
        let sender = &mut self.sender;
        let fut = async {
            sender.ready().await.map_err(|e| {
                *unanswered = closed_unanswered(&e);
                *unsent = true;
                tls_alert(&e, &endpoint).unwrap_or_else(|| transport_err(format!("connection lost: {e}"), None))
            })?;
            let resp = sender.send_request(req).await.map_err(|e| {
                *unanswered = closed_unanswered(&e);
                tls_alert(&e, &endpoint).unwrap_or_else(|| transport_err(e, None))
            })?;
            let (parts, body) = resp.into_parts();
            let body = read_bounded(&parts, body, limit).await?;
            Ok((parts, body))
        };
        let result = tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| Error::Timeout(format!("no HTTP reply within {timeout:?}")))?;
        match result {
            Err(e @ Error::Transport { .. }) => {
                // The connection task may have seen why TLS ended: let it finish recording it.
                let _ = tokio::time::timeout(Duration::from_millis(200), &mut self.task).await;
                Err(self.closed_by.take().unwrap_or(e))
            }
            other => other,
        }
    }

    async fn authenticate(&mut self, config: &TransportConfig) -> Result<SecurityContext> {
        let mech = config.mechanism;
        let bindings = self.info.tls.as_ref().and_then(|t| t.channel_binding.clone());
        self.info.channel_binding = bindings.is_some();
        let ntlm_allowed =
            policy::ntlm_permit(config.tls_proves_identity(), &config.trusted_hosts, &config.host).is_some();
        let mut ctx = SecurityContext::new(ContextParams {
            mechanism: mech,
            credentials: &config.credentials,
            host: &config.host,
            kerberos: &config.kerberos,
            ntlm_allowed,
            channel_binding: bindings.as_deref(),
        })?;
        let scheme = if mech == Mechanism::Kerberos { "Kerberos" } else { "Negotiate" };
        let mut token = ctx.step(None).await.map_err(|e| match e {
            Error::Authentication { mechanism, message } if mech == Mechanism::Negotiate && !ntlm_allowed => {
                Error::Authentication {
                    mechanism,
                    message: format!(
                        "{message} (Kerberos failed, and NTLM may not stand in: nothing proves the server's identity; \
                         use https with a verified certificate or name the host in trusted_hosts to allow NTLM)"
                    ),
                }
            }
            other => other,
        })?;
        // NTLM inside SPNEGO proves the user only: whatever Negotiate chose must obey the policy.
        if ctx.negotiated() == "ntlm" && !ntlm_allowed {
            return Err(policy::ntlm_refused(&config.host, "negotiate fell back to NTLM"));
        }
        for _ in 0..MAX_AUTH_ROUNDS {
            let mut req = self.request(config, Vec::new(), SOAP_CONTENT_TYPE)?;
            let value = format!("{scheme} {}", b64(&token));
            req.headers_mut()
                .insert(header::AUTHORIZATION, HeaderValue::from_str(&value).map_err(|e| transport_err(e, None))?);
            let (parts, _) =
                self.roundtrip(req, config.connect_timeout.max(Duration::from_secs(30)), AUTH_REPLY_LIMIT).await?;
            let server_token = server_token(&parts.headers)?;
            if parts.status == StatusCode::UNAUTHORIZED {
                let Some(server_token) = server_token.filter(|t| !t.is_empty()) else {
                    return Err(Error::Authentication {
                        mechanism: mech.name(),
                        message: "the server rejected the credentials (HTTP 401)".into(),
                    });
                };
                if ctx.is_complete() {
                    return Err(Error::Authentication {
                        mechanism: mech.name(),
                        message: "the server asked for more after the handshake completed".into(),
                    });
                }
                token = ctx.step(Some(&server_token)).await?;
                continue;
            }
            // Any other status ends the handshake; a final token (Kerberos AP-REP, SPNEGO
            // mechListMIC) is fed to the context, which verifies the server with it.
            if let Some(t) = server_token.filter(|t| !t.is_empty())
                && (!ctx.is_complete() || mech == Mechanism::Negotiate)
            {
                let _ = ctx.step(Some(&t)).await?;
            }
            if !ctx.is_complete() {
                return Err(Error::Authentication {
                    mechanism: mech.name(),
                    message: format!(
                        "the server ended the handshake with HTTP {} without proving its identity (no final token)",
                        parts.status.as_u16()
                    ),
                });
            }
            self.info.negotiated = ctx.negotiated();
            tracing::debug!(mechanism = mech.name(), negotiated = self.info.negotiated, "connection authenticated");
            return Ok(ctx);
        }
        Err(Error::Authentication { mechanism: mech.name(), message: "too many authentication round trips".into() })
    }

    /// Posts one envelope; seals it when the connection has a security context. The reply's
    /// body (sealed, as received) may not exceed `reply_limit` bytes.
    pub(super) async fn post(
        &mut self,
        config: &TransportConfig,
        body: Vec<u8>,
        timeout: Duration,
        reply_limit: u64,
    ) -> Result<HttpReply> {
        let out = Self::outbound(config, self.context.as_ref().map(|c| (self.id, c)), body)?;
        self.exchange(config, out, timeout, reply_limit).await
    }

    /// Builds the request for `body`, sealed by `sealer` (a connection's id and sealer) when
    /// there is one. A request sealed for a connection must be the next to go out on it: the
    /// sealing moved its sequence numbers (and RC4 stream) on.
    pub(super) fn outbound(
        config: &TransportConfig,
        sealer: Option<(u64, &SealerRef)>,
        mut body: Vec<u8>,
    ) -> Result<Outbound> {
        let envelope_bytes = body.len();
        let Some((id, sealer)) = sealer else {
            let mut req = request(config, Pieces::new([Bytes::from(body)]), SOAP_CONTENT_TYPE)?;
            if config.mechanism == Mechanism::Basic {
                let value = auth::basic_header(&config.credentials);
                let mut hv = HeaderValue::from_str(&value).map_err(|e| transport_err(e, None))?;
                hv.set_sensitive(true);
                req.headers_mut().insert(header::AUTHORIZATION, hv);
            } else if config.mechanism == Mechanism::Certificate {
                // WinRM certificate mapping: the TLS client certificate is the credential;
                // this header names the security profile on every request.
                req.headers_mut().insert(header::AUTHORIZATION, HeaderValue::from_static(CERT_AUTH_PROFILE));
            }
            return Ok(Outbound { req: Some(req), envelope_bytes, sealed_for: None, seal: None });
        };
        let req = match &mut *sealer.lock() {
            Sealer::Sspi(ctx) => {
                // Sealed in place; the MIME head, the ciphertext and the closing boundary go out
                // as three pieces.
                let header = ctx.seal(&mut body)?;
                let protocol = seal_protocol(config.mechanism);
                let head = encryption::frame_head(protocol, envelope_bytes, &header);
                let pieces =
                    Pieces::new([Bytes::from(head), Bytes::from(body), Bytes::from_static(encryption::CLOSING)]);
                request(config, pieces, &protocol.content_type())?
            }
            Sealer::CredSsp(ctx) => {
                let (content_type, framed) = credssp::seal(ctx, &body)?;
                request(config, Pieces::new([Bytes::from(framed)]), &content_type)?
            }
        };
        sealer.unsent.fetch_add(1, Ordering::SeqCst);
        Ok(Outbound { req: Some(req), envelope_bytes, sealed_for: Some(id), seal: Some(sealer.clone()) })
    }

    /// Sends a request built by [`Connection::outbound`] for this connection and reads, checks
    /// and unseals the reply.
    pub(super) async fn exchange(
        &mut self,
        config: &TransportConfig,
        mut out: Outbound,
        timeout: Duration,
        reply_limit: u64,
    ) -> Result<HttpReply> {
        if out.sealed_for.is_some_and(|id| id != self.id) {
            return Err(Error::protocol("a request sealed for one connection was handed to another"));
        }
        let envelope_bytes = out.envelope_bytes;
        let Some(req) = out.take() else { return Err(Error::Closed("request")) };
        let (parts, raw) = self.roundtrip(req, timeout, reply_limit).await?;
        let status = parts.status.as_u16();
        let content_type = parts.headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        let sealed = encryption::is_sealed_content_type(content_type);
        match parts.status {
            StatusCode::UNAUTHORIZED => {
                return Err(Error::Authentication {
                    mechanism: config.mechanism.name(),
                    message: "the server refused the request (HTTP 401)".into(),
                });
            }
            StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(transport_err(
                    format!(
                        "the server refused a {envelope_bytes}-byte request for its size (HTTP 413): its \
                         MaxEnvelopeSizekb is smaller; set max_envelope_size to at most that, or let the \
                         client read the server's limit first (fit_envelope_to_server)"
                    ),
                    Some(status),
                ));
            }
            StatusCode::OK | StatusCode::INTERNAL_SERVER_ERROR => {}
            other => {
                return Err(transport_err(format!("unexpected HTTP status {}", other.as_u16()), Some(status)));
            }
        }
        let mut context = self.context.as_ref().map(|c| c.lock());
        let body = match (context.as_deref_mut(), sealed) {
            (Some(Sealer::Sspi(ctx)), true) => unseal_body(ctx, &raw)?,
            (Some(Sealer::CredSsp(ctx)), true) => credssp::unseal(ctx, &raw)?,
            (Some(_), false) if !raw.is_empty() || status == 200 => {
                return Err(Error::protocol(format!(
                    "the server answered HTTP {status} with an unsealed body although sealing was negotiated"
                )));
            }
            (Some(_), false) => Vec::new(),
            (None, true) => return Err(Error::protocol("sealed reply on a connection without a security context")),
            (None, false) => raw.to_vec(),
        };
        Ok(HttpReply { status, body })
    }
}

fn request(config: &TransportConfig, body: Pieces, content_type: &str) -> Result<Request<Pieces>> {
    let host = format!("{}:{}", config.host, config.port);
    Request::post(config.path.as_str())
        .header(header::HOST, host)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::ACCEPT_ENCODING, "identity")
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, body.len())
        .body(body)
        .map_err(|e| transport_err(e, None))
}

/// Reads a reply body of at most `limit` bytes. The declared Content-Length is checked before
/// any of the body is read; a chunked (or unframed) body is counted frame by frame and given up
/// as soon as it passes the limit, so at most `limit` bytes plus one frame are ever held.
async fn read_bounded(parts: &http::response::Parts, mut body: hyper::body::Incoming, limit: u64) -> Result<Bytes> {
    use http_body_util::BodyExt as _;
    let too_large = |size: u64, declared: bool| {
        tracing::warn!(size, declared, limit, "the server's reply is over the limit; the connection is discarded");
        Error::ReplyTooLarge { size, declared, limit }
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared
        && len > limit
    {
        return Err(too_large(len, true));
    }
    // INVARIANT: `buf.len() <= limit`, checked before each frame is appended.
    let mut buf: Vec<u8> = Vec::with_capacity(declared.unwrap_or(0).min(limit) as usize);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| transport_err(e, Some(parts.status.as_u16())))?;
        let Ok(data) = frame.into_data() else { continue };
        let total = buf.len() as u64 + data.len() as u64;
        if total > limit {
            return Err(too_large(total, false));
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Whether a request failed because its connection closed before any of the reply arrived: the
/// request was refused as sent (hyper gave it back), or the stream ended or was reset while
/// waiting for the status line. Not for a reply that was cut, malformed, or timed out.
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_canceled() || e.is_incomplete_message() || e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
            return matches!(io.kind(), BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof);
        }
        source = err.source();
    }
    false
}

/// A TLS alert the server sent after the handshake (under TLS 1.3 a refused client certificate
/// only shows on the first read) becomes [`Error::Tls`].
fn tls_alert(e: &(dyn std::error::Error + 'static), endpoint: &str) -> Option<Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(rustls::Error::AlertReceived(alert)) = err.downcast_ref::<rustls::Error>() {
            let why = match alert {
                rustls::AlertDescription::CertificateRequired => "the server requires a client certificate".to_owned(),
                rustls::AlertDescription::BadCertificate
                | rustls::AlertDescription::UnknownCA
                | rustls::AlertDescription::CertificateUnknown
                | rustls::AlertDescription::UnsupportedCertificate
                | rustls::AlertDescription::CertificateExpired => {
                    format!("the server refused the client certificate ({alert:?})")
                }
                other => format!("the server ended TLS with the alert {other:?}"),
            };
            return Some(Error::Tls { endpoint: endpoint.to_owned(), message: why });
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            source = Some(inner);
            continue;
        }
        source = err.source();
    }
    None
}

/// Starts hyper's HTTP/1.1 client on `io`; the connection task ends when the sender is dropped.
async fn http_over<S>(io: S, address: &str) -> Result<(SendRequest<Pieces>, tokio::task::JoinHandle<()>, ClosedBy)>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| transport_err(format!("http handshake with {address}: {e}"), None))?;
    let closed_by = ClosedBy::default();
    let slot = closed_by.clone();
    let endpoint = address.to_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "connection closed");
            if let Some(err) = tls_alert(&e, &endpoint) {
                *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
            }
        }
    });
    Ok((sender, task, closed_by))
}

/// Filled by the connection task when a TLS alert ended the connection.
#[derive(Debug, Clone, Default)]
struct ClosedBy(std::sync::Arc<std::sync::Mutex<Option<Error>>>);

impl ClosedBy {
    fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The multipart protocol string: the `Kerberos` HTTP scheme has its own; NTLM and Kerberos
/// under `Negotiate` both use the SPNEGO one.
fn seal_protocol(mechanism: Mechanism) -> Protocol {
    if mechanism == Mechanism::Kerberos { Protocol::Kerberos } else { Protocol::Spnego }
}

fn unseal_body(ctx: &mut SecurityContext, raw: &[u8]) -> Result<Vec<u8>> {
    encryption::unseal_with(raw, |header, ciphertext| {
        let mut data = ciphertext.to_vec();
        ctx.unseal(header, &mut data)?;
        Ok(data)
    })
}

fn b64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The token of the first `WWW-Authenticate: Negotiate|Kerberos|NTLM <token>` header, if any.
fn server_token(headers: &http::HeaderMap) -> Result<Option<Vec<u8>>> {
    use base64::Engine as _;
    for v in headers.get_all(header::WWW_AUTHENTICATE) {
        let Ok(v) = v.to_str() else { continue };
        for scheme in ["Negotiate", "Kerberos", "NTLM"] {
            if let Some(rest) =
                v.get(..scheme.len()).filter(|p| p.eq_ignore_ascii_case(scheme)).map(|_| &v[scheme.len()..])
            {
                let t = rest.trim();
                if t.is_empty() {
                    return Ok(Some(Vec::new()));
                }
                return base64::engine::general_purpose::STANDARD
                    .decode(t)
                    .map(Some)
                    .map_err(|e| Error::protocol(format!("invalid base64 in WWW-Authenticate: {e}")));
            }
        }
    }
    Ok(None)
}
