//! HTTP transport: tokio + hyper HTTP/1.1 client connections (plain TCP or rustls TLS), each
//! authenticated on its own, carrying sealed SOAP bodies over HTTP and TLS-protected ones over
//! HTTPS.
//!
//! Idle authenticated connections are kept for reuse. A request takes one connection for its
//! whole exchange (so a long-polling Receive occupies it) and a second concurrent request opens
//! and authenticates another. A connection that saw any error is dropped, never reused.

mod cert;
#[doc(hidden)]
pub use cert::fuzz_der;
mod connection;
mod keys;
pub mod ssh;
mod tls;
mod tunnel;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use connection::{Connection, Outbound, SealerRef};
use tls::TlsSetup;
pub use tls::{ClientCertificate, TlsInfo, TlsOptions, TlsVersion};

use crate::auth::{Credentials, KerberosOptions, Mechanism, policy};
use crate::error::{Error, Result};
use crate::proxy::Proxy;

pub(crate) use cert::{sec_channel_bindings, subject_public_key};
pub(crate) use tls::Verifier;

/// Reads a public-key pin (64 hex digits, optionally `sha256/`-prefixed or colon-separated).
pub fn parse_pin(text: &str) -> Result<[u8; 32]> {
    cert::parse_pin(text)
        .ok_or_else(|| Error::InvalidConfig(format!("{text:?} is not a SHA-256 public-key pin (64 hex digits)")))
}

/// When bodies are sealed with the authentication's session keys (WinRM message encryption).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum MessageEncryption {
    /// Over HTTP always; over HTTPS never (TLS protects the bodies), as WinRM clients default.
    #[default]
    Auto,
    /// Also inside TLS.
    Always,
}

impl std::str::FromStr for MessageEncryption {
    type Err = Error;

    /// `auto` or `always`, in any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(MessageEncryption::Auto),
            "always" => Ok(MessageEncryption::Always),
            other => {
                Err(Error::InvalidConfig(format!("unknown message encryption mode {other:?}; use auto or always")))
            }
        }
    }
}

/// What protects the bodies of an authenticated connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionLayer {
    /// WinRM message encryption with the authentication's keys (over HTTP).
    Message,
    /// TLS only.
    Tls,
    /// TLS and message encryption.
    TlsAndMessage,
    /// Nothing (Basic over HTTP, explicitly allowed).
    None,
}

impl EncryptionLayer {
    /// A short name for logs and audit events.
    pub fn name(self) -> &'static str {
        match self {
            EncryptionLayer::Message => "message-encryption",
            EncryptionLayer::Tls => "tls",
            EncryptionLayer::TlsAndMessage => "tls+message-encryption",
            EncryptionLayer::None => "none",
        }
    }
}

/// What one authenticated connection established; reported by `Client::connection_info`.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The endpoint URL.
    pub endpoint: String,
    /// The mechanism configured (`negotiate`, `ntlm`, ...).
    pub mechanism: Mechanism,
    /// The mechanism actually used on the wire (`kerberos`, `ntlm`, `basic`, ...).
    pub negotiated: &'static str,
    /// What protects the bodies.
    pub encryption: EncryptionLayer,
    /// Whether channel binding (tls-server-end-point) was sent.
    pub channel_binding: bool,
    /// TLS details for https endpoints.
    pub tls: Option<TlsInfo>,
    /// The proxy the connection went through (its URL without credentials), if any.
    pub proxy: Option<String>,
}

/// Where and how to reach the WinRM endpoint.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// URL path, normally `/wsman`.
    pub path: String,
    /// Authentication mechanism.
    pub mechanism: Mechanism,
    /// User name and password.
    pub credentials: Credentials,
    /// Time allowed for the TCP connect.
    pub connect_timeout: Duration,
    /// Permits plaintext SOAP bodies after authentication (Basic over HTTP). Off by default,
    /// as Windows' `AllowUnencrypted=false`.
    pub allow_unencrypted: bool,
    /// `Some` for an https endpoint: how to verify it.
    pub tls: Option<TlsOptions>,
    /// Hosts towards which NTLM is accepted without TLS proving the server (WinRM's
    /// TrustedHosts: wildcards, `<local>`).
    pub trusted_hosts: Vec<String>,
    /// When bodies are sealed.
    pub message_encryption: MessageEncryption,
    /// Kerberos settings.
    pub kerberos: KerberosOptions,
    /// The proxy every connection tunnels through, or `None` to connect directly. Already
    /// resolved: [`crate::client::ClientConfig`] reads the environment's variables.
    pub proxy: Option<Proxy>,
}

impl TransportConfig {
    /// The endpoint URL (`http://host:port/path` or `https://...`).
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }

    /// Whether an https handshake will prove the server's identity.
    pub fn tls_proves_identity(&self) -> bool {
        self.tls.as_ref().is_some_and(TlsOptions::proves_identity)
    }

    fn validate(&self) -> Result<()> {
        if self.host.is_empty() {
            return Err(Error::InvalidConfig("the host is empty; give a host name or address".into()));
        }
        if !self.path.starts_with('/') {
            return Err(Error::InvalidConfig(format!("the path {:?} must start with '/', e.g. /wsman", self.path)));
        }
        if self.mechanism == Mechanism::Basic && self.tls.is_none() && !self.allow_unencrypted {
            return Err(Error::Policy(
                "basic authentication over HTTP sends the password and every body in clear text; use https, or \
                 negotiate or ntlm (sealed), or set allow_unencrypted explicitly"
                    .into(),
            ));
        }
        match self.mechanism {
            // CredSSP logs on with NTLM inside (auth::CredSspContext), so NTLM's rule applies;
            // over HTTP its bodies are always sealed.
            Mechanism::CredSsp
                if policy::ntlm_permit(self.tls_proves_identity(), &self.trusted_hosts, &self.host).is_none() =>
            {
                return Err(policy::ntlm_refused(
                    &self.host,
                    "credssp (NTLM inside) towards an unverified server would hand it the password",
                ));
            }
            Mechanism::Certificate if self.tls.is_none() => {
                return Err(Error::Policy("certificate authentication needs https".into()));
            }
            Mechanism::Certificate if self.tls.as_ref().is_some_and(|t| t.client_certificate.is_none()) => {
                return Err(Error::InvalidConfig(
                    "certificate authentication needs a client certificate and key (client_certificate)".into(),
                ));
            }
            _ => {}
        }
        if self.message_encryption == MessageEncryption::Always && !self.mechanism.can_seal() {
            return Err(Error::InvalidConfig(format!(
                "{} authentication has no keys to seal with: message encryption 'always' needs negotiate, kerberos, \
                 ntlm or credssp",
                self.mechanism.name()
            )));
        }
        let valid = |s: &str| !s.is_empty() && !s.contains(['/', '@', ' ']);
        if !valid(&self.kerberos.service) {
            return Err(Error::InvalidConfig(format!(
                "the SPN service class {:?} cannot be used; use HTTP, host or WSMAN",
                self.kerberos.service
            )));
        }
        let ntlm_allowed = policy::ntlm_permit(self.tls_proves_identity(), &self.trusted_hosts, &self.host).is_some();
        if self.mechanism == Mechanism::Ntlm && !ntlm_allowed {
            return Err(policy::ntlm_refused(&self.host, "ntlm towards an unverified server"));
        }
        // Negotiate is refused up front only where Kerberos cannot work: towards an IP address.
        // Elsewhere the handshake tries Kerberos and refuses a fallback to NTLM.
        let spn_host = self.kerberos.hostname.as_deref().unwrap_or(&self.host);
        if self.mechanism == Mechanism::Negotiate && !ntlm_allowed && policy::is_ip_address(spn_host) {
            return Err(policy::ntlm_refused(
                &self.host,
                "negotiate towards an IP address (Kerberos needs the host's name) would use NTLM",
            ));
        }
        Ok(())
    }
}

/// Whether a request may be sent again when its connection closed before any reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Sending it twice does no harm: a Receive, a Get, an Enumerate, a Signal, a Delete.
    Safe,
    /// It must not run twice: a Create, a Command, a Send, a Connect or Disconnect.
    Never,
}

/// A pool of authenticated connections to one endpoint.
#[derive(Debug)]
pub struct Transport {
    config: TransportConfig,
    tls: Option<TlsSetup>,
    idle: Arc<Mutex<Vec<Connection>>>,
    last_info: Mutex<Option<ConnectionInfo>>,
}

impl Drop for Transport {
    fn drop(&mut self) {
        let idle = self.idle.lock().map(|v| v.len()).unwrap_or(0);
        tracing::info!(
            target: "psremote::audit",
            event = "disconnect",
            endpoint = %self.config.url(),
            connections_closed = idle,
            "disconnected"
        );
    }
}

/// The default bound on a reply's body for a request that announced `max_envelope_size`: the
/// envelope itself (base64 data is already inside it) plus what sealing and framing add. Message
/// encryption adds a signature header and MIME boundaries (a few hundred bytes); CredSSP cuts the
/// envelope into TLS records of at most 16 KiB with up to a few dozen bytes each. One sixteenth
/// of the envelope plus 64 KiB covers both with room to spare: 228736 bytes for 153600.
pub fn default_reply_limit(max_envelope_size: u32) -> u64 {
    let envelope = u64::from(max_envelope_size);
    envelope + envelope / 16 + 64 * 1024
}

/// A reply body, already unsealed.
#[derive(Debug)]
pub struct HttpReply {
    /// HTTP status (200 or 500 for SOAP).
    pub status: u16,
    /// The plaintext SOAP bytes.
    pub body: Vec<u8>,
}

impl Transport {
    /// A transport for `config`; no connection is made yet.
    pub fn new(config: TransportConfig) -> Result<Self> {
        config.validate()?;
        if config.allow_unencrypted && config.tls.is_none() {
            tracing::warn!(endpoint = %config.url(), "plaintext bodies after authentication are allowed by configuration");
        }
        let tls = config.tls.as_ref().map(|o| TlsSetup::new(o, &config.host)).transpose()?;
        Ok(Self { config, tls, idle: Arc::new(Mutex::new(Vec::new())), last_info: Mutex::new(None) })
    }

    /// What the most recently opened connection established, once one was opened.
    pub fn connection_info(&self) -> Option<ConnectionInfo> {
        self.last_info.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn open(&self) -> Result<Connection> {
        let conn = Connection::open(&self.config, self.tls.as_ref()).await?;
        *self.last_info.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.info().clone());
        Ok(conn)
    }

    /// The transport's configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Opens and authenticates one connection now and keeps it for reuse, so that a wrong
    /// password or an unreachable host is reported at connect time.
    pub async fn warm_up(&self) -> Result<()> {
        let conn = self.open().await?;
        self.put_back(conn);
        Ok(())
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            if c.is_ready() {
                return Some(c);
            }
        }
        None
    }

    fn put_back(&self, conn: Connection) {
        put_back(&self.idle, conn);
    }

    /// An idle connection, or a new one.
    async fn connection(&self) -> Result<Connection> {
        match self.take_idle() {
            Some(c) => Ok(c),
            None => self.open().await,
        }
    }

    /// Posts one SOAP envelope and returns the plaintext reply. `read_timeout` bounds the wait
    /// for the reply (it must exceed the request's OperationTimeout); `reply_limit` bounds the
    /// reply's body as received (sealed), else [`Error::ReplyTooLarge`] and the connection is
    /// discarded. A request is sent once more, on a new connection, built again by `rebuild`
    /// (sealing consumed the first), when its connection was closed before any of it was
    /// written, or, with `retry` [`Retry::Safe`], when the connection closed before any of the
    /// reply arrived (an idle connection the server had closed, a request dropped unanswered);
    /// [`Retry::Never`] (a Create, Command or Send, which must not run twice) then surfaces the
    /// failure.
    pub async fn post(
        &self,
        envelope: String,
        rebuild: impl FnOnce() -> String,
        read_timeout: Duration,
        reply_limit: u64,
        retry: Retry,
    ) -> Result<HttpReply> {
        let mut conn = self.connection().await?;
        let reply = match conn.post(&self.config, envelope.into_bytes(), read_timeout, reply_limit).await {
            Ok(reply) => reply,
            Err(e) if conn.failed_unsent() || (retry == Retry::Safe && conn.failed_unanswered()) => {
                tracing::debug!(error = %e, unsent = conn.failed_unsent(), "the connection closed before the reply; sending the request again on a new one");
                drop(conn);
                conn = self.open().await?;
                conn.post(&self.config, rebuild().into_bytes(), read_timeout, reply_limit).await?
            }
            Err(e) => return Err(e),
        };
        // Only a connection whose exchange fully succeeded goes back to the pool.
        self.put_back(conn);
        Ok(reply)
    }

    /// A lane for one stream of requests that go one after another (see [`Lane`]).
    pub fn lane(&self) -> Lane {
        Lane { state: Mutex::new(LaneState::default()), pool: self.idle.clone() }
    }

    /// Builds and seals `envelope` for the lane's connection, taking an idle connection or
    /// opening one first when the lane has none. The request must then go out by
    /// [`Transport::post_on_lane`], in the order the lane's requests were sealed; the caller
    /// keeps them in that order (one sealing at a time, the previous request answered before
    /// the next is posted). Dropped unsent, a request sealed ahead ends its connection: the
    /// connection's sequence numbers moved on.
    pub async fn seal_on_lane(&self, lane: &Lane, envelope: String) -> Result<LaneRequest> {
        let have = {
            let mut st = lane.lock();
            // A lane connection the server closed while idle is replaced before anything is
            // sealed for it.
            if st.idle.as_ref().is_some_and(|c| !c.is_usable()) {
                st.idle = None;
                st.current = None;
            }
            st.current.is_some()
        };
        if !have {
            let conn = self.connection().await?;
            let mut st = lane.lock();
            if st.current.is_none() {
                st.current = Some((conn.id(), conn.sealer()));
                st.idle = Some(conn);
            } else {
                drop(st);
                self.put_back(conn);
            }
        }
        let st = lane.lock();
        let Some((id, sealer)) = st.current.as_ref() else { return Err(Error::Closed("request lane")) };
        let out = Connection::outbound(&self.config, sealer.as_ref().map(|s| (*id, s)), envelope.into_bytes())?;
        Ok(LaneRequest { out })
    }

    /// Posts a request sealed by [`Transport::seal_on_lane`] on the lane's connection and
    /// returns the plaintext reply; the connection stays with the lane. When that connection
    /// is gone before the request left (the server closed it after the previous reply, or the
    /// previous request failed), nothing of this request was sent: `rebuild` gives its
    /// envelope again, and it is sealed and sent on another connection. A request that left is
    /// never sent twice.
    pub async fn post_on_lane(
        &self,
        lane: &Lane,
        request: LaneRequest,
        rebuild: impl FnOnce() -> String,
        read_timeout: Duration,
        reply_limit: u64,
    ) -> Result<HttpReply> {
        let LaneRequest { out } = request;
        let mut rebuild = Some(rebuild);
        let mut envelope = move || rebuild.take().map(|r| r().into_bytes()).unwrap_or_default();
        let taken = {
            let mut st = lane.lock();
            match st.idle.take() {
                Some(c) if c.is_usable() && out.sealed_for.is_none_or(|id| id == c.id()) => Some(c),
                other => {
                    // Gone, or not the one this request was sealed for (which then is done).
                    if other.is_some() {
                        st.current = None;
                    }
                    None
                }
            }
        };
        let rebuilt = taken.is_none();
        let (mut conn, out) = match taken {
            Some(c) => (c, out),
            None => {
                drop(out);
                tracing::debug!("the lane's connection is gone; the request is sealed again on another");
                let conn = self.connection().await?;
                let out =
                    Connection::outbound(&self.config, conn.sealer().as_ref().map(|s| (conn.id(), s)), envelope())?;
                let mut st = lane.lock();
                if st.current.is_none() {
                    st.current = Some((conn.id(), conn.sealer()));
                }
                (conn, out)
            }
        };
        let mut result = conn.exchange(&self.config, out, read_timeout, reply_limit).await;
        if result.is_err() && conn.failed_unsent() && !rebuilt {
            // Closed before any of the request was written (a `Connection: close` after the
            // previous reply): nothing of it left, so it goes on another connection.
            tracing::debug!("the lane's connection closed before the request left; sending it on another");
            {
                let mut st = lane.lock();
                if st.current.as_ref().is_some_and(|(id, _)| *id == conn.id()) {
                    st.current = None;
                }
            }
            conn = self.open().await?;
            let out = Connection::outbound(&self.config, conn.sealer().as_ref().map(|s| (conn.id(), s)), envelope())?;
            result = conn.exchange(&self.config, out, read_timeout, reply_limit).await;
        }
        let mut st = lane.lock();
        let ours = st.current.as_ref().is_some_and(|(id, _)| *id == conn.id());
        match result {
            Ok(reply) => {
                // Only a connection whose exchange fully succeeded is kept: with the lane when
                // it is the lane's, else with the transport's idle ones.
                if ours && st.idle.is_none() {
                    st.idle = Some(conn);
                } else {
                    drop(st);
                    self.put_back(conn);
                }
                Ok(reply)
            }
            Err(e) => {
                if ours {
                    st.current = None;
                }
                Err(e)
            }
        }
    }
}

/// A connection kept for one stream of requests that go strictly one after another (a
/// pipeline's input Sends, a command's stdin), so that the next request is built and sealed
/// while the previous one is on the wire. Sealing is bound to the connection that carries the
/// request (NTLM's and Kerberos' sequence numbers, NTLM's RC4 stream, CredSSP's TLS records),
/// and each direction has its own: sealing the next request does not touch what unseals the
/// reply in flight. A connection with requests sealed for it and not yet sent serves no one
/// else, and one with such a request dropped unsent is closed. The connection goes back to the
/// transport's idle ones when the lane is released or dropped.
#[derive(Debug)]
pub struct Lane {
    state: Mutex<LaneState>,
    pool: Arc<Mutex<Vec<Connection>>>,
}

#[derive(Debug, Default)]
struct LaneState {
    /// The lane's connection while none of its requests is on it.
    idle: Option<Connection>,
    /// The connection the lane's requests are sealed for (its id and sealer), from when it was
    /// taken until it fails or is released.
    current: Option<(u64, Option<SealerRef>)>,
}

impl Lane {
    fn lock(&self) -> std::sync::MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands the lane's connection back to the transport's idle ones (when no request of the
    /// lane is on it); a later request of the lane takes a connection again.
    pub fn release(&self) {
        let mut st = self.lock();
        if let Some(conn) = st.idle.take() {
            st.current = None;
            drop(st);
            put_back(&self.pool, conn);
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.release();
    }
}

/// A request sealed ahead for a lane's connection. Dropped unsent, it ends that connection.
#[derive(Debug)]
pub struct LaneRequest {
    out: Outbound,
}

fn put_back(pool: &Mutex<Vec<Connection>>, conn: Connection) {
    if conn.is_ready() {
        pool.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }
}
