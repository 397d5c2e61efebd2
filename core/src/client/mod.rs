//! The public async API: a [`Client`] for one endpoint, cmd shells and their processes.
//!
//! ```no_run
//! # async fn demo() -> psremote::Result<()> {
//! use psremote::client::{Client, ClientConfig};
//! let client = Client::connect(ClientConfig::new("server.example", "DOMAIN\\user", "password")).await?;
//! let out = client.run_cmd("ipconfig", &["/all"]).await?;
//! println!("{}", String::from_utf8_lossy(&out.stdout));
//! # Ok(()) }
//! ```

mod backoff;
mod cmd;
mod config;
mod create;
mod files;
mod fleet;
pub mod outofproc;
mod powershell;
mod run_cmd;
mod runtime;
mod write_behind;

pub use crate::auth::{KerberosOptions, Mechanism};
pub use crate::transport::{
    ClientCertificate, ConnectionInfo, EncryptionLayer, MessageEncryption, TlsInfo, TlsOptions, TlsVersion, parse_pin,
};
pub use cmd::{
    CmdControl, CmdOutput, CmdProcess, CmdShell, CmdShellOptions, CommandOptions, DEFAULT_MAX_OUTPUT, OutputChunk,
    UTF8_CODEPAGE,
};
pub use config::{ClientConfig, DEFAULT_ENVELOPE_SIZE};
pub use files::{
    COPY_SCRIPT, CopyOptions, CopyOutcome, DEFAULT_ACK_WINDOW, FETCH_SCRIPT, FetchOptions, FetchOutcome,
    MAX_CHUNK_SIZE, ProgressCallback, file_error_from_record,
};
pub use fleet::{
    DEFAULT_THROTTLE, Fleet, FleetCancel, FleetHost, FleetOptions, FleetWork, HostOutput, HostResult, HostStatus,
};
pub use outofproc::{Carrier, ProcessOptions};
pub use powershell::{
    BufferMode, Host, Pipeline, PipelineControl, PipelineResult, PoolConfig, PoolInfo, RunspacePool, ShellInfo,
};
pub use run_cmd::RunCmdOptions;
pub use runtime::{cleanup_finished, mask_process_signals, pending_cleanups, runtime, within};

use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::transport::Transport;
use crate::wsman::{self, OptionEntry, Reply, RequestHeader};

/// A connection to one WinRM endpoint. Cheap to clone; clones share connections.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    config: ClientConfig,
    session_id: uuid::Uuid,
    url: String,
    /// The server's MaxEnvelopeSize once [`Client::fit_envelope_to_server`] read it (0: not read).
    server_envelope: std::sync::atomic::AtomicU32,
}

/// One WS-Man request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Call<'a> {
    pub action: &'a str,
    pub resource_uri: &'a str,
    pub shell_id: Option<&'a str>,
    pub options: &'a [OptionEntry],
    pub body: Body<'a>,
    pub operation_timeout: Option<Duration>,
    pub max_envelope_size: Option<u32>,
}

/// What goes into a request's `s:Body`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body<'a> {
    /// Its children, already XML.
    Xml(&'a str),
    /// `rsp:Send` of one stream chunk, given as the pieces it is made of: the base64 is
    /// written from them straight into the envelope.
    Send { stream: &'a str, command_id: Option<&'a str>, pieces: &'a [&'a [u8]], end: bool },
}

impl Body<'_> {
    fn write(&self, out: &mut String) {
        match *self {
            Body::Xml(xml) => out.push_str(xml),
            Body::Send { stream, command_id, pieces, end } => {
                wsman::winrs::write_send_body(out, stream, command_id, pieces, end);
            }
        }
    }

    fn len_hint(&self) -> usize {
        match self {
            Body::Xml(xml) => xml.len(),
            Body::Send { pieces, .. } => 200 + pieces.iter().map(|p| p.len()).sum::<usize>().div_ceil(3) * 4,
        }
    }
}

/// A request built ahead of sending it: its envelope and what reading the reply needs.
#[derive(Debug)]
struct Prepared {
    message_id: uuid::Uuid,
    envelope: String,
    read_timeout: Duration,
    reply_limit: u64,
    retry: crate::transport::Retry,
}

/// A request sealed on a lane ([`Client::seal_on_lane`]), waiting to be posted.
#[derive(Debug)]
pub(crate) struct SealedCall {
    message_id: uuid::Uuid,
    read_timeout: Duration,
    reply_limit: u64,
    request: crate::transport::LaneRequest,
}

/// Extra time allowed on top of the OperationTimeout before the HTTP read gives up.
const READ_MARGIN: Duration = Duration::from_secs(5);

impl Client {
    /// Validates the configuration and authenticates one connection, so that a wrong password
    /// or an unreachable host is reported here.
    ///
    /// With another transport than WS-Man ([`ClientConfig::carrier`]) nothing is contacted
    /// here: each runspace pool starts its own carrier (a process) when it opens.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        if let Some(url) = config.carrier.endpoint() {
            config.validate()?;
            // Never used for a request ([`Client::wsman`] refuses them); it gives the lanes.
            let transport = Transport::new(ClientConfig::new("localhost", "", "").transport_config()?)?;
            let inner = Inner {
                transport,
                config,
                session_id: uuid::Uuid::new_v4(),
                url,
                server_envelope: std::sync::atomic::AtomicU32::new(0),
            };
            return Ok(Self { inner: Arc::new(inner) });
        }
        let transport = Transport::new(config.transport_config()?)?;
        let url = transport.config().url();
        let inner = Inner {
            transport,
            config,
            session_id: uuid::Uuid::new_v4(),
            url,
            server_envelope: std::sync::atomic::AtomicU32::new(0),
        };
        let client = Self { inner: Arc::new(inner) };
        client.inner.transport.warm_up().await?;
        Ok(client)
    }

    /// The endpoint URL.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// What the most recent connection established: the mechanism actually negotiated, the
    /// encryption layer, channel binding, TLS version and certificate fingerprint.
    pub fn connection_info(&self) -> Option<ConnectionInfo> {
        if !self.inner.config.carrier.is_wsman() {
            return None;
        }
        self.inner.transport.connection_info()
    }

    /// The transport's name: `wsman`, or the out-of-process carrier's (`process`).
    pub fn transport_name(&self) -> &'static str {
        self.inner.config.carrier.name()
    }

    /// Refuses `operation` unless this client speaks WS-Man.
    pub(crate) fn require_wsman(&self, operation: &'static str) -> Result<()> {
        match &self.inner.config.carrier {
            c if c.is_wsman() => Ok(()),
            c => Err(Error::WsmanOnly { operation, transport: c.name() }),
        }
    }

    /// The configuration this client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The MaxEnvelopeSize new requests, pools and shells start with: the size the
    /// configuration sets; else the server's, once [`Client::fit_envelope_to_server`] read it;
    /// else [`DEFAULT_ENVELOPE_SIZE`].
    pub fn envelope_size(&self) -> u32 {
        if let Some(size) = self.inner.config.max_envelope_size {
            return size;
        }
        match self.inner.server_envelope.load(std::sync::atomic::Ordering::Relaxed) {
            0 => DEFAULT_ENVELOPE_SIZE,
            server => server,
        }
    }

    /// Whether the envelope size is settled (set by the user, or read from the server), so that
    /// a pool must not raise it on its own.
    pub(crate) fn envelope_size_is_settled(&self) -> bool {
        self.inner.config.max_envelope_size.is_some()
            || self.inner.server_envelope.load(std::sync::atomic::Ordering::Relaxed) != 0
    }

    /// Reads the server's WinRM configuration (`winrm/config`: MaxEnvelopeSizekb,
    /// MaxTimeoutms, shell limits, ...). Reading it needs the rights of an administrator on
    /// Windows; other users get an access-denied fault.
    pub async fn server_config(&self) -> Result<wsman::config::ServerConfig> {
        self.require_wsman("reading the WinRM configuration")?;
        let reply = self.call(wsman::action::GET, wsman::config::CONFIG_URI, None, &[], "", None).await?;
        wsman::config::parse_config(&reply)
    }

    /// Reads the server's MaxEnvelopeSizekb and sizes this client's later requests, pools and
    /// shells to it, as pypsrp's `update_max_payload_size` does; returns the size now in use.
    /// A size set in the configuration is never changed: it is returned as it is.
    pub async fn fit_envelope_to_server(&self) -> Result<u32> {
        self.require_wsman("fitting the envelope size to the server")?;
        if let Some(size) = self.inner.config.max_envelope_size {
            return Ok(size);
        }
        let config = self.server_config().await?;
        let size = config
            .max_envelope_size()
            .filter(|s| *s >= 8192)
            .ok_or_else(|| Error::protocol("the server's configuration names no usable MaxEnvelopeSizekb"))?;
        self.inner.server_envelope.store(size, std::sync::atomic::Ordering::Relaxed);
        Ok(size)
    }

    /// Opens a cmd shell.
    pub async fn open_cmd_shell(&self, options: CmdShellOptions) -> Result<CmdShell> {
        CmdShell::open(self.clone(), options).await
    }

    /// Opens a cmd shell with [`CmdShellOptions::default`] (UTF-8 code page), runs one command
    /// to completion and closes the shell: [`Client::run_cmd_with`] with
    /// [`RunCmdOptions::default`] (no deadline, at most [`DEFAULT_MAX_OUTPUT`] bytes of output).
    pub async fn run_cmd(&self, command: &str, arguments: &[&str]) -> Result<CmdOutput> {
        self.run_cmd_with(command, arguments, &RunCmdOptions::default()).await
    }

    /// Sends one WS-Man request and parses the reply; a fault becomes [`Error::Fault`].
    pub(crate) async fn call(
        &self,
        action: &str,
        resource_uri: &str,
        shell_id: Option<&str>,
        options: &[OptionEntry],
        body: &str,
        operation_timeout: Option<Duration>,
    ) -> Result<Reply> {
        self.request(&Call {
            action,
            resource_uri,
            shell_id,
            options,
            body: Body::Xml(body),
            operation_timeout,
            max_envelope_size: None,
        })
        .await
    }

    /// Sends one WS-Man request described by `call`.
    pub(crate) async fn request(&self, call: &Call<'_>) -> Result<Reply> {
        self.require_wsman("a WS-Man request")?;
        let p = self.prepare(call, uuid::Uuid::new_v4());
        let rebuild = || self.prepare(call, p.message_id).envelope;
        let reply = self.inner.transport.post(p.envelope, rebuild, p.read_timeout, p.reply_limit, p.retry).await?;
        finish(reply, p.message_id)
    }

    /// A lane for requests that go one after another, each sealed while the one before is in
    /// flight ([`crate::transport::Lane`]).
    pub(crate) fn lane(&self) -> crate::transport::Lane {
        self.inner.transport.lane()
    }

    /// Builds and seals `call` for `lane`'s connection; [`Client::post_on_lane`] sends it. The
    /// caller seals and posts a lane's requests in one order, each posted after the one before
    /// it was answered.
    pub(crate) async fn seal_on_lane(&self, lane: &crate::transport::Lane, call: &Call<'_>) -> Result<SealedCall> {
        self.require_wsman("a WS-Man request")?;
        let p = self.prepare(call, uuid::Uuid::new_v4());
        let request = self.inner.transport.seal_on_lane(lane, p.envelope).await?;
        Ok(SealedCall { message_id: p.message_id, read_timeout: p.read_timeout, reply_limit: p.reply_limit, request })
    }

    /// Posts a request sealed by [`Client::seal_on_lane`]. Should the lane's connection be gone
    /// before it left, `call` (the same request) is built again for another.
    pub(crate) async fn post_on_lane(
        &self,
        lane: &crate::transport::Lane,
        sealed: SealedCall,
        call: &Call<'_>,
    ) -> Result<Reply> {
        let SealedCall { message_id, read_timeout, reply_limit, request } = sealed;
        let rebuild = || self.prepare(call, message_id).envelope;
        let reply = self.inner.transport.post_on_lane(lane, request, rebuild, read_timeout, reply_limit).await?;
        finish(reply, message_id)
    }

    /// Sends `calls` in order on `lane`, one at a time, each built and sealed while the one
    /// before is in flight; `first`, when given, is `calls[0]` sealed already. Stops at the
    /// first failure (what was sealed after it is dropped unsent).
    pub(crate) async fn post_in_order(
        &self,
        lane: &crate::transport::Lane,
        mut first: Option<SealedCall>,
        calls: &[Call<'_>],
    ) -> Result<()> {
        for (i, call) in calls.iter().enumerate() {
            let sealed = match first.take() {
                Some(s) => s,
                None => self.seal_on_lane(lane, call).await?,
            };
            let next = async {
                match calls.get(i + 1) {
                    Some(n) => self.seal_on_lane(lane, n).await.map(Some),
                    None => Ok(None),
                }
            };
            let (posted, next) = tokio::join!(self.post_on_lane(lane, sealed, call), next);
            posted?;
            first = next?;
        }
        Ok(())
    }

    fn prepare(&self, call: &Call<'_>, message_id: uuid::Uuid) -> Prepared {
        let cfg = &self.inner.config;
        let operation_timeout = call.operation_timeout.unwrap_or(cfg.operation_timeout);
        let max_envelope_size = call.max_envelope_size.unwrap_or(self.envelope_size());
        // The reply may be as large as the envelope this request announced, plus its sealing.
        let reply_limit =
            cfg.max_reply_size.unwrap_or_else(|| crate::transport::default_reply_limit(max_envelope_size));
        let action = call.action;
        let header = RequestHeader {
            action,
            resource_uri: call.resource_uri,
            to: &self.inner.url,
            message_id,
            session_id: self.inner.session_id,
            max_envelope_size,
            operation_timeout,
            locale: &cfg.locale,
            data_locale: &cfg.data_locale,
            shell_id: call.shell_id,
            options: call.options,
        };
        let envelope = header.envelope_with(call.body.len_hint(), |s| call.body.write(s));
        tracing::trace!(action, bytes = envelope.len(), "request");
        // Sent again (once) when its connection closed before any reply: only requests that may
        // run twice, never a Create, Command or Send.
        let retry = match action {
            wsman::action::RECEIVE
            | wsman::action::GET
            | wsman::action::ENUMERATE
            | wsman::action::SIGNAL
            | wsman::action::DELETE => crate::transport::Retry::Safe,
            _ => crate::transport::Retry::Never,
        };
        Prepared { message_id, envelope, read_timeout: operation_timeout + READ_MARGIN, reply_limit, retry }
    }
}

/// Parses the reply to the request `message_id`; a fault becomes [`Error::Fault`].
fn finish(reply: crate::transport::HttpReply, message_id: uuid::Uuid) -> Result<Reply> {
    match wsman::parse_reply(&reply.body, message_id) {
        Ok(r) if reply.status == 200 => Ok(r),
        Ok(_) => Err(Error::Transport {
            message: format!("HTTP {} without a SOAP fault", reply.status),
            status: Some(reply.status),
        }),
        Err(e @ Error::Fault(_)) => Err(e),
        Err(e) if reply.status != 200 => Err(Error::Transport {
            message: format!("HTTP {} with an unreadable body: {e}", reply.status),
            status: Some(reply.status),
        }),
        Err(e) => Err(e),
    }
}
