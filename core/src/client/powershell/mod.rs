//! PowerShell over WS-Man: runspace pools and pipelines driven by the sans-IO state machine in
//! [`crate::psrp`] (MS-PSRP 3.1.5, PROTOCOL.md C.4, C.5).
//!
//! A pool keeps one shell-level Receive posted for pool messages (host calls, session key,
//! availability). Each running pipeline keeps its own command-level Receive. Every pending
//! Receive occupies its own authenticated connection; Sends are serialised per pool.
//!
//! - [`session`]: what a pool's tasks share: the WS-Man calls of one shell, the state machine,
//!   routing of events to pipelines, the session key, the pool's Receive loop;
//! - [`host_calls`]: the worker that answers the server's host calls in order;
//! - [`pool`]: [`RunspacePool`] (open, pool-level calls, close);
//! - [`pipeline`]: [`Pipeline`], its Receive loop and [`PipelineResult`];
//! - [`disconnect`]: sessions that outlive the client (disconnect, reconnect, enumerate,
//!   connect from a new client, attaching to a pipeline, is-alive).

mod disconnect;
mod host_calls;
mod pipeline;
mod pool;
mod session;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clixml::Value;
use crate::psrp::session_key::ClientKeyPair;
use crate::psrp::{self, HostCall, HostDefaults, HostResponse};
pub use crate::wsman::shells::{BufferMode, ShellInfo};

pub use disconnect::PoolInfo;
pub use pipeline::{Pipeline, PipelineControl, PipelineResult};
pub use pool::RunspacePool;

/// The client's host: answers the server's host calls (Read-Host, Get-Credential, prompts,
/// Write-Host, progress, raw UI). Called on a blocking thread, never on the runtime.
pub trait Host: Send + Sync + 'static {
    /// Answers one call. Void methods (writes, progress) are called too; their answer is ignored.
    fn call(&self, call: &HostCall) -> HostResponse;

    /// The console this host shows, when it has a raw UI (colours, cursor, buffer and window
    /// sizes, title). With `Some`, the pool declares a raw UI (`$host.UI.RawUI` is not `$null`
    /// on the server) and sends these as the host's default data, as PowerShell's own client
    /// does; with `None` (the default) only a UI is declared.
    fn defaults(&self) -> Option<HostDefaults> {
        None
    }
}

/// Options for a runspace pool.
#[derive(Clone)]
pub struct PoolConfig {
    /// Session configuration (JEA endpoint) name; `Microsoft.PowerShell` by default.
    pub configuration_name: String,
    /// Minimum runspaces.
    pub min_runspaces: i32,
    /// Maximum runspaces: how many pipelines run at once.
    pub max_runspaces: i32,
    /// The host answering host calls; without one the server gets "not implemented" errors.
    pub host: Option<Arc<dyn Host>>,
    /// Idle timeout of the remote shell; also sent with Disconnect, so it is how long a
    /// disconnected pool waits for a client before the server deletes it.
    pub idle_timeout: Option<Duration>,
    /// What the server does with output produced while the pool is disconnected (sent at
    /// creation and with Disconnect); the server's default (`Block`) when None.
    pub buffer_mode: Option<BufferMode>,
    /// `$PSSenderInfo.ApplicationArguments`.
    pub application_arguments: Option<Value>,
    /// Raise the envelope size to 512000 bytes once the server speaks protocol ≥ 2.2, unless
    /// the client's configuration sets a size (a size the user set is never overridden).
    pub raise_envelope_size: bool,
    /// Do not load the user's profile on the server (`WINRS_NOPROFILE`).
    pub no_profile: bool,
    /// The RSA key pair for the session-key exchange; a fresh one is generated when absent.
    pub key_pair: Option<ClientKeyPair>,
    /// CLIXML limits for what the server sends (nesting depth, object count, message bytes).
    pub clixml_limits: crate::clixml::Limits,
    /// Fragment reassembly limits (largest message, messages in flight).
    pub message_limits: psrp::fragment::DefragLimits,
    /// Deadline of [`RunspacePool::open`] (creating the shell, the opening handshake, and the
    /// Delete of a pool that failed to open); `None` (the default): none. On expiry the open
    /// fails with [`Error::Timeout`](crate::Error::Timeout) and the shell, if the server
    /// created it, is deleted in the background.
    pub open_timeout: Option<Duration>,
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("configuration_name", &self.configuration_name)
            .field("min_runspaces", &self.min_runspaces)
            .field("max_runspaces", &self.max_runspaces)
            .field("host", &self.host.is_some())
            .field("open_timeout", &self.open_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            configuration_name: "Microsoft.PowerShell".into(),
            min_runspaces: 1,
            max_runspaces: 1,
            host: None,
            idle_timeout: None,
            buffer_mode: None,
            application_arguments: None,
            raise_envelope_size: true,
            no_profile: false,
            key_pair: None,
            clixml_limits: crate::clixml::Limits::default(),
            message_limits: psrp::fragment::DefragLimits::default(),
            open_timeout: None,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
