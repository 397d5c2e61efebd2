//! Client configuration.

use std::time::Duration;

use crate::auth::{Credentials, KerberosOptions, Mechanism};
use crate::error::{Error, Result};
use crate::proxy::{Proxy, ProxyCredentials};
use crate::transport::{MessageEncryption, TlsOptions, TransportConfig};

/// How to reach and authenticate to a WinRM endpoint.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Host name or IP address.
    pub host: String,
    /// TCP port; 5985 for HTTP, 5986 for HTTPS.
    pub port: u16,
    /// HTTPS (TLS) instead of HTTP.
    pub https: bool,
    /// How an https endpoint is verified.
    pub tls: TlsOptions,
    /// Hosts towards which NTLM is accepted without TLS proving the server, as WinRM's
    /// TrustedHosts (wildcards `*`, `<local>`). Naming a host here does not make it trusted; it
    /// accepts that its identity is not verified.
    pub trusted_hosts: Vec<String>,
    /// When bodies are sealed with the authentication's keys.
    pub message_encryption: MessageEncryption,
    /// Kerberos: KDC, SPN service class and host name, delegation.
    pub kerberos: KerberosOptions,
    /// URL path.
    pub path: String,
    /// Authentication mechanism; Negotiate by default.
    pub mechanism: Mechanism,
    /// User name and password.
    pub credentials: Credentials,
    /// WS-Man OperationTimeout: how long the server may hold a Receive before answering.
    pub operation_timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// MaxEnvelopeSize in bytes sent with every request, and the size psremote's own requests
    /// are kept under. `None` (the default): 153600 bytes (what every WinRM accepts), raised to
    /// 512000 once a runspace pool learns that the server speaks PSRP 2.2 or later (Windows'
    /// own default `MaxEnvelopeSizekb` is 500). `Some(n)`: exactly `n`, never changed by psremote.
    pub max_envelope_size: Option<u32>,
    /// The largest HTTP reply body accepted, in bytes, as received (sealed). `None` (the
    /// default): the MaxEnvelopeSize the request announced plus a margin for message encryption
    /// and CredSSP records ([`crate::transport::default_reply_limit`]: 228736 bytes for 153600,
    /// 609536 for 512000). A declared Content-Length over it is refused before the body is read;
    /// a chunked body is given up once it passes it. Either way the request fails with
    /// [`Error::ReplyTooLarge`](crate::Error::ReplyTooLarge) and the connection is discarded.
    /// `Some(n)`: exactly `n` for every request.
    pub max_reply_size: Option<u64>,
    /// Events of one pipeline decoded and buffered ahead of its reader (default 256, at least
    /// 1). When the buffer is full its Receive loop stops decoding and posts no further Receive
    /// until the reader takes events, so a fast server cannot fill memory past this buffer, one
    /// PSRP message being decoded, and the undecoded rest of one reply (bounded by
    /// `max_reply_size`).
    pub max_events_ahead: usize,
    /// `wsman:Locale`.
    pub locale: String,
    /// `wsmv:DataLocale`.
    pub data_locale: String,
    /// Allow plaintext bodies after authentication (Basic over HTTP); off by default.
    pub allow_unencrypted: bool,
    /// Put pipeline arguments (parameter values, scripts) into audit events; off by default,
    /// since arguments may carry data the audit log should not hold.
    pub audit_arguments: bool,
    /// The proxy to tunnel every connection through ([`ClientConfig::with_proxy`]). `None`
    /// (the default): the environment's `https_proxy`/`http_proxy`/`all_proxy` and `no_proxy`,
    /// as Python's requests reads them ([`crate::proxy::env`]), unless `ignore_proxy`. A proxy set
    /// here is used for this host whatever `no_proxy` says.
    pub proxy: Option<Proxy>,
    /// Credentials for whichever proxy is used, replacing any in its URL.
    pub proxy_credentials: Option<ProxyCredentials>,
    /// Ignore the environment's proxy variables: connect directly unless `proxy` is set.
    pub ignore_proxy: bool,
    /// How PowerShell is reached: WS-Man (the default; every option above applies) or the
    /// out-of-process transport over a carrier (a local process), where the WS-Man options
    /// (host, authentication, TLS, envelope sizes) play no part.
    pub carrier: crate::client::outofproc::Carrier,
}

/// The MaxEnvelopeSize psremote uses when the configuration sets none: 150 KiB, what WinRM
/// accepts in every version (PowerShell 2.0's default `MaxEnvelopeSizekb`).
pub const DEFAULT_ENVELOPE_SIZE: u32 = 153_600;

/// Events of one pipeline buffered ahead of its reader unless the configuration says otherwise.
pub const DEFAULT_EVENTS_AHEAD: usize = 256;

impl ClientConfig {
    /// Defaults: HTTP port 5985, path `/wsman`, Negotiate, 20 s OperationTimeout, 153600-byte
    /// envelopes, `en-US`.
    pub fn new(host: impl Into<String>, username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: 5985,
            https: false,
            tls: TlsOptions::default(),
            trusted_hosts: Vec::new(),
            message_encryption: MessageEncryption::Auto,
            kerberos: KerberosOptions::default(),
            path: "/wsman".into(),
            mechanism: Mechanism::Negotiate,
            credentials: Credentials::new(username, password),
            operation_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(30),
            max_envelope_size: None,
            max_reply_size: None,
            max_events_ahead: DEFAULT_EVENTS_AHEAD,
            locale: "en-US".into(),
            data_locale: "en-US".into(),
            allow_unencrypted: false,
            audit_arguments: false,
            proxy: None,
            proxy_credentials: None,
            ignore_proxy: false,
            carrier: crate::client::outofproc::Carrier::Wsman,
        }
    }

    /// Tunnels every connection through the proxy at `url`: `http://[user:password@]host:port`
    /// (CONNECT), `socks5://...` (the server's name resolved here) or `socks5h://...` (resolved
    /// by the proxy). See [`Proxy::parse`].
    pub fn with_proxy(mut self, url: &str) -> Result<Self> {
        self.proxy = Some(Proxy::parse(url)?);
        Ok(self)
    }

    /// The proxy connections will go through: the configured one, else (unless `ignore_proxy`)
    /// the one the environment names for this endpoint, with `proxy_credentials` applied.
    /// Reads the process environment.
    pub fn resolve_proxy(&self) -> Result<Option<Proxy>> {
        self.resolve_proxy_with(&|name| std::env::var(name).ok())
    }

    /// Reads the environment's proxy variables now and keeps what they say for this host, so
    /// that later connections do not read them again: `proxy` becomes the proxy to use (with
    /// `proxy_credentials` applied) and `ignore_proxy` is set. For a client object that is
    /// configured once and connects later (the bindings' clients).
    pub fn pin_proxy(&mut self) -> Result<()> {
        self.proxy = self.resolve_proxy()?;
        self.ignore_proxy = true;
        Ok(())
    }

    /// [`ClientConfig::resolve_proxy`] with the environment's variables given by `lookup`.
    pub fn resolve_proxy_with(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Proxy>> {
        let proxy = match &self.proxy {
            Some(p) => Some(p.clone()),
            // The environment's variables are for HTTP(S), as ssh reads none of them.
            None if self.ignore_proxy || !self.carrier.is_wsman() => None,
            None => crate::proxy::env::proxy_for(lookup, self.https, &self.host, self.port)?.map(|(p, variable)| {
                tracing::debug!(variable, proxy = %p, "proxy from the environment");
                p
            }),
        };
        match (proxy, &self.proxy_credentials) {
            (Some(p), Some(c)) => Ok(Some(p.with_credentials(Some(c.clone()))?)),
            (p, _) => Ok(p),
        }
    }

    /// A client for a local process that speaks the out-of-process transport on its stdin and
    /// stdout (PowerShell's `pwsh -NoLogo -s` with [`ProcessOptions::default`]).
    ///
    /// [`ProcessOptions::default`]: crate::client::ProcessOptions
    pub fn process(options: crate::client::ProcessOptions) -> Self {
        Self { carrier: crate::client::outofproc::Carrier::Process(options), ..Self::new("localhost", "", "") }
    }

    /// A client for an SSH server's PowerShell subsystem (`Enter-PSSession -HostName`): each
    /// runspace pool opens its own SSH connection and subsystem channel.
    pub fn ssh(options: crate::transport::ssh::SshOptions) -> Self {
        let host = options.host.clone();
        Self { carrier: crate::client::outofproc::Carrier::Ssh(Box::new(options)), ..Self::new(host, "", "") }
    }

    /// Reads `http(s)://host:port/path` into https, host, port and path.
    pub fn with_url(mut self, url: &str) -> Result<Self> {
        let uri: http::Uri = url.parse().map_err(|e| Error::InvalidConfig(format!("cannot read URL {url:?}: {e}")))?;
        self.https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(Error::InvalidConfig(format!("URL {url:?} must start with http:// or https://"))),
        };
        self.host = uri
            .host()
            .ok_or_else(|| Error::InvalidConfig(format!("URL {url:?} has no host")))?
            .trim_matches(['[', ']'])
            .to_owned();
        self.port = uri.port_u16().unwrap_or(if self.https { 5986 } else { 5985 });
        if !uri.path().is_empty() && uri.path() != "/" {
            self.path = uri.path().to_owned();
        }
        Ok(self)
    }

    /// Sets the mechanism.
    pub fn with_mechanism(mut self, mechanism: Mechanism) -> Self {
        self.mechanism = mechanism;
        self
    }

    /// Names hosts towards which NTLM is accepted without TLS proving the server.
    pub fn with_trusted_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted_hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Sets how an https endpoint is verified.
    pub fn with_tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Checks every option without connecting; returns the endpoint URL (for another
    /// transport than WS-Man, what names its endpoint: `process:pwsh`).
    pub fn validate(&self) -> Result<String> {
        if let Some(endpoint) = self.carrier.endpoint() {
            self.carrier.validate()?;
            if self.proxy.is_some() {
                // Never a direct connection where the user asked for a proxy.
                return Err(Error::InvalidConfig(match self.carrier {
                    crate::client::outofproc::Carrier::Ssh(_) => {
                        "ClientConfig::proxy is WS-Man's: give an SSH connection's proxy as SshOptions::proxy".into()
                    }
                    _ => format!(
                        "a proxy carries WS-Man (http and https) only; the {} transport cannot go through one",
                        self.carrier.name()
                    ),
                }));
            }
            if self.max_events_ahead == 0 {
                return Err(Error::InvalidConfig("max_events_ahead must be at least 1".into()));
            }
            return Ok(endpoint);
        }
        let t = self.transport_config()?;
        crate::transport::Transport::new(t.clone())?;
        Ok(t.url())
    }

    /// The envelope size requests start with: the one set, or [`DEFAULT_ENVELOPE_SIZE`].
    pub fn envelope_size(&self) -> u32 {
        self.max_envelope_size.unwrap_or(DEFAULT_ENVELOPE_SIZE)
    }

    pub(crate) fn transport_config(&self) -> Result<TransportConfig> {
        if self.operation_timeout < Duration::from_secs(1) {
            return Err(Error::InvalidConfig("operation_timeout must be at least one second".into()));
        }
        if self.max_events_ahead == 0 {
            return Err(Error::InvalidConfig("max_events_ahead must be at least 1".into()));
        }
        if let Some(size) = self.max_envelope_size
            && size < 8192
        {
            return Err(Error::InvalidConfig(format!(
                "max_envelope_size {size} is below the WS-Man minimum of 8192 bytes"
            )));
        }
        Ok(TransportConfig {
            host: self.host.clone(),
            port: self.port,
            path: self.path.clone(),
            mechanism: self.mechanism,
            credentials: self.credentials.clone(),
            connect_timeout: self.connect_timeout,
            allow_unencrypted: self.allow_unencrypted,
            tls: self.https.then(|| self.tls.clone()),
            trusted_hosts: self.trusted_hosts.clone(),
            message_encryption: self.message_encryption,
            kerberos: self.kerberos.clone(),
            proxy: self.resolve_proxy()?,
        })
    }
}
