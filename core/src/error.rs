//! The crate's one error type.
//!
//! Every failure a caller can see is an [`Error`] with a [`ErrorKind`]; the variants carry the data
//! a caller needs to act (the WS-Man fault code, the address that refused, the mechanism that
//! failed). Messages never contain secrets.

use std::fmt;

use crate::wsman::WsmanFault;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, coarsely; stable across releases. Deliberately not `non_exhaustive`: the
/// bindings match it exhaustively, so a new kind cannot be added without mapping it everywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The configuration given by the caller cannot be used.
    InvalidConfig,
    /// The server refused the credentials, or the authentication exchange failed.
    Authentication,
    /// No TCP connection could be made.
    Connect,
    /// The connection broke, or the server answered with an unexpected HTTP status.
    Transport,
    /// The server answered with a WS-Management SOAP fault.
    Fault,
    /// The server's reply breaks the protocol (bad XML, bad base64, bad seal, wrong RelatesTo).
    Protocol,
    /// An operation did not finish within its time limit.
    Timeout,
    /// The object was already closed.
    Closed,
    /// The TLS handshake failed or the server's certificate did not verify.
    Tls,
    /// A security rule refused the operation (e.g. NTLM towards a server whose identity
    /// nothing proves); the message names the ways out.
    Policy,
    /// A file transfer failed on one side ([`Error::File`] says which and why).
    File,
    /// The runspace pool is disconnected: reconnect (or connect) before using it.
    Disconnected,
    /// The server has no such runspace pool, pipeline or command (deleted, expired, or never there).
    NotFound,
    /// A command wrote more output than the caller lets `run_cmd` collect
    /// ([`Error::OutputTooLarge`]); the command was stopped.
    OutputTooLarge,
    /// The proxy between the client and the server failed: unreachable, refused the tunnel or
    /// the proxy credentials, closed or broke the handshake ([`Error::Proxy`] says which proxy
    /// and why).
    Proxy,
}

/// The error type of every fallible psremote operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration cannot be used; the message says what to change.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// Authentication failed.
    #[error("authentication with {mechanism} failed: {message}")]
    Authentication {
        /// The mechanism that was tried (`ntlm`, `negotiate`, `basic`).
        mechanism: &'static str,
        /// What the server or the security package said.
        message: String,
    },
    /// Nothing accepted a TCP connection at the address.
    #[error("cannot connect to {address}: {source}")]
    Connect {
        /// The `host:port` that was tried.
        address: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed or answered with an unexpected status.
    #[error("transport error: {message}")]
    Transport {
        /// What failed.
        message: String,
        /// The HTTP status, when the server answered with one.
        status: Option<u16>,
    },
    /// The server answered with a WS-Management fault.
    #[error(transparent)]
    Fault(#[from] WsmanFault),
    /// The server's HTTP reply was larger than the client accepts (kind
    /// [`ErrorKind::Transport`]); the connection that carried it is discarded.
    #[error(
        "transport error: the server's reply {} bytes, over the {limit}-byte limit for this request \
         (the announced MaxEnvelopeSize plus a margin for sealing; see ClientConfig::max_reply_size)",
        if *.declared { format!("declared {size}") } else { format!("passed {size}") }
    )]
    ReplyTooLarge {
        /// The declared Content-Length, or the bytes received when a chunked body passed the limit.
        size: u64,
        /// Whether `size` is the declared Content-Length (else: counted while reading).
        declared: bool,
        /// The limit in bytes.
        limit: u64,
    },
    /// The server's reply broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// An operation took longer than allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The object was already closed.
    #[error("{0} is closed")]
    Closed(&'static str),
    /// TLS with the endpoint failed; the message says why (untrusted issuer, wrong name, pin...).
    #[error("TLS with {endpoint} failed: {message}")]
    Tls {
        /// The `host:port` of the endpoint.
        endpoint: String,
        /// Why the handshake or the verification failed.
        message: String,
    },
    /// A security rule refused the operation.
    #[error("refused by security policy: {0}")]
    Policy(String),
    /// A file copy or fetch failed; the data says on which side, the path and why.
    #[error("{0}")]
    File(Box<crate::file_error::FileError>),
    /// The runspace pool is disconnected; the message names the refused action.
    #[error("cannot {0}: the runspace pool is disconnected (reconnect first)")]
    Disconnected(&'static str),
    /// A command's stdout and stderr together passed the bytes `run_cmd` (or
    /// [`CmdProcess::wait_limited`](crate::client::CmdProcess::wait_limited)) collects; the
    /// command was terminated and, for `run_cmd`, its shell deleted.
    #[error(
        "the command wrote more than {limit} bytes of output (the collecting limit; see RunCmdOptions::max_output)"
    )]
    OutputTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The SSH server's host key failed the `known_hosts` check (kind [`ErrorKind::Policy`]):
    /// unknown under the strict policy, changed, or revoked; the data names both fingerprints.
    #[error("refused by security policy: {0}")]
    HostKey(Box<crate::host_key_error::HostKeyError>),
    /// The SSH server logged us on but would not start the subsystem (kind
    /// [`ErrorKind::Transport`]): a server without the PowerShell subsystem.
    #[error(
        "the SSH server {address} refused to start the {subsystem:?} subsystem: a server without the \
         PowerShell subsystem (its sshd_config needs a line `Subsystem {subsystem} /path/to/pwsh -sshs \
         -NoLogo`)"
    )]
    SubsystemRefused {
        /// The `host:port` of the server.
        address: String,
        /// The subsystem asked for.
        subsystem: String,
    },
    /// The operation exists only over WS-Management (cmd shells, disconnect and reconnect,
    /// listing pools, the server's WinRM configuration), and the client reaches PowerShell
    /// another way (kind [`ErrorKind::InvalidConfig`]).
    #[error("{operation} needs the WS-Man transport; this client uses the {transport} transport")]
    WsmanOnly {
        /// What was refused.
        operation: &'static str,
        /// The client's transport (`process`, `ssh`).
        transport: &'static str,
    },
    /// The server does not know the shell or command (its InvalidSelectors fault).
    #[error("{what} not found on the server: {fault}")]
    NotFound {
        /// What was looked for (`runspace pool 1A2B...`, `pipeline 3C4D...`).
        what: String,
        /// The server's fault.
        fault: WsmanFault,
    },
    /// The proxy gave no tunnel to the server.
    #[error("proxy {proxy}: {failure}")]
    Proxy {
        /// The proxy's URL, without credentials.
        proxy: String,
        /// What went wrong.
        failure: crate::proxy::ProxyFailure,
    },
}

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidConfig(_) | Error::WsmanOnly { .. } => ErrorKind::InvalidConfig,
            Error::Authentication { .. } => ErrorKind::Authentication,
            Error::Connect { .. } => ErrorKind::Connect,
            Error::Transport { .. } | Error::ReplyTooLarge { .. } | Error::SubsystemRefused { .. } => {
                ErrorKind::Transport
            }
            Error::Fault(_) => ErrorKind::Fault,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Timeout(_) => ErrorKind::Timeout,
            Error::Closed(_) => ErrorKind::Closed,
            Error::Tls { .. } => ErrorKind::Tls,
            Error::Policy(_) | Error::HostKey(_) => ErrorKind::Policy,
            Error::File(_) => ErrorKind::File,
            Error::Disconnected(_) => ErrorKind::Disconnected,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::OutputTooLarge { .. } => ErrorKind::OutputTooLarge,
            Error::Proxy { .. } => ErrorKind::Proxy,
        }
    }

    /// The WS-Management fault, when this error is one.
    pub fn fault(&self) -> Option<&WsmanFault> {
        match self {
            Error::Fault(f) | Error::NotFound { fault: f, .. } => Some(f),
            _ => None,
        }
    }

    /// Whether no connection to the server could be made, directly ([`ErrorKind::Connect`]) or
    /// through a proxy that is down, could not reach the server, or broke off
    /// ([`crate::proxy::ProxyFailure::is_transient`]): what a retry may cure.
    pub fn is_connect_failure(&self) -> bool {
        match self {
            Error::Proxy { failure, .. } => failure.is_transient(),
            other => other.kind() == ErrorKind::Connect,
        }
    }

    /// The refused SSH host key, when this error is one.
    pub fn host_key(&self) -> Option<&crate::host_key_error::HostKeyError> {
        match self {
            Error::HostKey(h) => Some(h),
            _ => None,
        }
    }

    /// The file-transfer failure, when this error is one.
    pub fn file(&self) -> Option<&crate::file_error::FileError> {
        match self {
            Error::File(f) => Some(f),
            _ => None,
        }
    }

    pub(crate) fn protocol(msg: impl fmt::Display) -> Self {
        Error::Protocol(msg.to_string())
    }
}
