//! Client configuration.

use std::time::Duration;

use crate::auth::{Credentials, Mechanism};
use crate::error::{Error, Result};
use crate::transport::TransportConfig;

/// How to reach and authenticate to a WinRM endpoint.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Host name or IP address.
    pub host: String,
    /// TCP port; 5985 for HTTP.
    pub port: u16,
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
    /// MaxEnvelopeSize in bytes sent with every request.
    pub max_envelope_size: u32,
    /// `wsman:Locale`.
    pub locale: String,
    /// `wsmv:DataLocale`.
    pub data_locale: String,
    /// Allow plaintext bodies after authentication (Basic over HTTP); off by default.
    pub allow_unencrypted: bool,
}

impl ClientConfig {
    /// Defaults: HTTP port 5985, path `/wsman`, Negotiate, 20 s OperationTimeout, 153600-byte
    /// envelopes, `en-US`.
    pub fn new(host: impl Into<String>, username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port: 5985,
            path: "/wsman".into(),
            mechanism: Mechanism::Negotiate,
            credentials: Credentials::new(username, password),
            operation_timeout: Duration::from_secs(20),
            connect_timeout: Duration::from_secs(30),
            max_envelope_size: 153_600,
            locale: "en-US".into(),
            data_locale: "en-US".into(),
            allow_unencrypted: false,
        }
    }

    /// Reads `http://host:port/path` into host, port and path.
    pub fn with_url(mut self, url: &str) -> Result<Self> {
        let uri: http::Uri = url.parse().map_err(|e| Error::InvalidConfig(format!("cannot read URL {url:?}: {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(Error::InvalidConfig(
                    "https endpoints are not supported yet; use http with negotiate or ntlm (sealed)".into(),
                ));
            }
            _ => return Err(Error::InvalidConfig(format!("URL {url:?} must start with http://"))),
        }
        self.host = uri
            .host()
            .ok_or_else(|| Error::InvalidConfig(format!("URL {url:?} has no host")))?
            .trim_matches(['[', ']'])
            .to_owned();
        self.port = uri.port_u16().unwrap_or(5985);
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

    /// Checks every option without connecting; returns the endpoint URL.
    pub fn validate(&self) -> Result<String> {
        let t = self.transport_config()?;
        crate::transport::Transport::new(t.clone())?;
        Ok(t.url())
    }

    pub(crate) fn transport_config(&self) -> Result<TransportConfig> {
        if self.operation_timeout < Duration::from_secs(1) {
            return Err(Error::InvalidConfig("operation_timeout must be at least one second".into()));
        }
        if self.max_envelope_size < 8192 {
            return Err(Error::InvalidConfig(format!(
                "max_envelope_size {} is below the WS-Man minimum of 8192 bytes",
                self.max_envelope_size
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
        })
    }
}
