//! HTTP transport: tokio + hyper HTTP/1.1 client connections, each authenticated on its own,
//! carrying sealed SOAP bodies.
//!
//! Idle authenticated connections are kept for reuse. A request takes one connection for its
//! whole exchange (so a long-polling Receive occupies it) and a second concurrent request opens
//! and authenticates another. A connection that saw any error is dropped, never reused.

mod connection;

use std::sync::Mutex;
use std::time::Duration;

use connection::Connection;

use crate::auth::{Credentials, Mechanism};
use crate::error::{Error, Result};

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
}

impl TransportConfig {
    /// The endpoint URL (`http://host:port/path`).
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("http://{host}:{}{}", self.port, self.path)
    }

    fn validate(&self) -> Result<()> {
        if self.host.is_empty() {
            return Err(Error::InvalidConfig("the host is empty; give a host name or address".into()));
        }
        if !self.path.starts_with('/') {
            return Err(Error::InvalidConfig(format!("the path {:?} must start with '/', e.g. /wsman", self.path)));
        }
        if self.mechanism == Mechanism::Basic && !self.allow_unencrypted {
            return Err(Error::InvalidConfig(
                "basic authentication over HTTP sends the password and every body in clear text; \
                 use negotiate or ntlm (sealed), or set allow_unencrypted explicitly"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// A pool of authenticated connections to one endpoint.
#[derive(Debug)]
pub struct Transport {
    config: TransportConfig,
    idle: Mutex<Vec<Connection>>,
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
        if config.allow_unencrypted {
            tracing::warn!(endpoint = %config.url(), "plaintext bodies after authentication are allowed by configuration");
        }
        Ok(Self { config, idle: Mutex::new(Vec::new()) })
    }

    /// The transport's configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Opens and authenticates one connection now and keeps it for reuse, so that a wrong
    /// password or an unreachable host is reported at connect time.
    pub async fn warm_up(&self) -> Result<()> {
        let conn = Connection::open(&self.config).await?;
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
        if conn.is_ready() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
        }
    }

    /// Posts one SOAP envelope and returns the plaintext reply. `read_timeout` bounds the wait
    /// for the reply (it must exceed the request's OperationTimeout).
    pub async fn post(&self, envelope: String, read_timeout: Duration) -> Result<HttpReply> {
        let mut conn = match self.take_idle() {
            Some(c) => c,
            None => Connection::open(&self.config).await?,
        };
        let reply = conn.post(&self.config, envelope.into_bytes(), read_timeout).await?;
        // Only a connection whose exchange fully succeeded goes back to the pool.
        self.put_back(conn);
        Ok(reply)
    }
}
