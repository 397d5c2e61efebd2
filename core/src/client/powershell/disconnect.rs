//! Sessions that outlive the client (MS-PSRP 3.1.4.9–3.1.4.11, MS-WSMV 3.1.4.15–3.1.4.17,
//! PROTOCOL.md A.8): disconnecting a pool and reconnecting to it, listing the pools on the
//! server, connecting a new client to a disconnected pool, attaching to a pipeline that was
//! started before the disconnect, and asking whether a pool still exists.
//!
//! A disconnect stops the Receive loops instead of cancelling them: each loop finishes its
//! current Receive (the server ends a waiting Receive when its shell is disconnected), hands
//! on what it brought and does not post another. Output produced meanwhile stays on the server
//! (BufferMode) and arrives after the reconnect.

use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::pipeline::{self, Pipeline};
use super::pool::{RunspacePool, checked_id};
use super::session::command_id_text;
use super::{PoolConfig, lock};
use crate::client::{Body, Call, Client};
use crate::error::{Error, Result};
use crate::psrp::{self, HostInfo, PoolOptions, PoolState};
use crate::wsman::shells::{self, ShellInfo};
use crate::wsman::{OptionEntry, action, code};

const POWERSHELL_PREFIX: &str = "http://schemas.microsoft.com/powershell/";
/// Most Pull requests one listing makes; a server that never ends an enumeration is an error.
const MAX_PULLS: usize = 1000;

/// A runspace pool on the server, as listed by [`Client::list_pools`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    /// What the server says about the shell (state, owner, idle timeout, buffer mode...).
    pub shell: ShellInfo,
    /// The session configuration (`Microsoft.PowerShell`, a JEA endpoint...).
    pub configuration_name: String,
    /// The CommandIds of its pipelines that the server still holds (finished or not).
    pub pipelines: Vec<String>,
}

impl PoolInfo {
    /// The pool (shell) id.
    pub fn id(&self) -> &str {
        &self.shell.shell_id
    }

    /// Whether the pool is disconnected (a client may connect to it).
    pub fn is_disconnected(&self) -> bool {
        self.shell.is_disconnected()
    }
}

/// Turns the server's "no such shell or command" into [`Error::NotFound`].
fn gone(what: impl FnOnce() -> String) -> impl FnOnce(Error) -> Error {
    move |e| match e {
        Error::Fault(fault) if fault.code == Some(code::INVALID_SELECTORS) => Error::NotFound { what: what(), fault },
        other => other,
    }
}

impl Client {
    /// The PowerShell runspace pools this account has on the server, connected or not, with
    /// the CommandIds of their pipelines: one Enumerate of the shells, one per pool for its
    /// commands (each followed by Pulls while the server has more).
    pub async fn list_pools(&self) -> Result<Vec<PoolInfo>> {
        self.require_wsman("listing runspace pools")?;
        let shells = self.enumerate(shells::SHELL_RESOURCE, None).await?;
        let mut pools = Vec::new();
        for item in &shells {
            if !item.is(crate::wsman::ns::SHELL, "Shell") {
                continue;
            }
            let shell = ShellInfo::from_element(item)?;
            let Some(configuration_name) = shell.resource_uri.strip_prefix(POWERSHELL_PREFIX) else {
                continue; // a cmd shell or another plugin's
            };
            let configuration_name = configuration_name.to_owned();
            let shell_id = checked_id("shell", shell.shell_id.clone())?;
            let commands = self.enumerate(shells::COMMAND_RESOURCE, Some(&shell_id)).await?;
            let pipelines =
                shells::command_ids(&commands).into_iter().map(|c| checked_id("pipeline", c)).collect::<Result<_>>()?;
            pools.push(PoolInfo { shell, configuration_name, pipelines });
        }
        Ok(pools)
    }

    /// Every item of an enumeration: Enumerate, then Pull until the server says it is over.
    async fn enumerate(
        &self,
        resource_uri: &str,
        shell_filter: Option<&str>,
    ) -> Result<Vec<crate::wsman::xml::Element>> {
        let body = shells::enumerate_body(shell_filter);
        let reply = self.call(action::ENUMERATE, resource_uri, None, &[], &body, None).await?;
        let mut page = shells::parse_enumeration(&reply)?;
        let mut items = std::mem::take(&mut page.items);
        let mut pulls = 0;
        while let Some(context) = page.next.take() {
            pulls += 1;
            if pulls > MAX_PULLS {
                return Err(Error::protocol(format!("the server's enumeration did not end after {MAX_PULLS} pulls")));
            }
            let reply = self.call(action::PULL, resource_uri, None, &[], &shells::pull_body(&context), None).await?;
            page = shells::parse_enumeration(&reply)?;
            items.append(&mut page.items);
        }
        Ok(items)
    }
}

/// The host the pool declares, from the configured host's defaults (as `open` does).
async fn host_info(config: &PoolConfig) -> Result<HostInfo> {
    Ok(match &config.host {
        None => HostInfo::null(),
        Some(h) => {
            let h = h.clone();
            let defaults = tokio::task::spawn_blocking(move || h.defaults())
                .await
                .map_err(|_| Error::protocol("the host's defaults callback panicked"))?;
            match defaults {
                Some(d) => HostInfo::with_raw_ui(&d),
                None => HostInfo::with_ui(),
            }
        }
    })
}

impl RunspacePool {
    /// Disconnects the pool (rsp:Disconnect with the pool's idle timeout and buffer mode):
    /// the pool and its pipelines keep running on the server, which keeps their output until
    /// [`RunspacePool::reconnect`] or a [`RunspacePool::connect`] from another client, or
    /// deletes them after the idle timeout. Returns once every Receive loop has stopped (what
    /// their last Receives brought is delivered). Until then, pool calls and new pipelines
    /// fail with [`Error::Disconnected`]; dropping a disconnected pool leaves it on the server.
    pub async fn disconnect(&self) -> Result<()> {
        let shared = &self.shared;
        shared.require_wsman("disconnecting a runspace pool")?;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed("runspace pool"));
        }
        {
            // No Send is in flight while the guard is held, and none starts.
            let _sending = shared.send_lock.lock().await;
            let state = lock(&shared.sm).state();
            match state {
                PoolState::Opened => {}
                PoolState::Disconnected => return Err(Error::Disconnected("disconnect")),
                other => return Err(Error::protocol(format!("cannot disconnect a runspace pool that is {other:?}"))),
            }
            shared.disconnected.store(true, Ordering::SeqCst);
            let body = shells::disconnect_body(shared.idle_timeout, shared.buffer_mode);
            if let Err(e) = shared.call(action::DISCONNECT, &[], &body).await {
                shared.disconnected.store(false, Ordering::SeqCst);
                self.resume_loops();
                return Err(gone(|| format!("runspace pool {}", shared.shell_id))(e));
            }
            lock(&shared.sm).set_disconnected()?;
        }
        shared.loops_stopped().await;
        tracing::info!(
            target: "psremote::audit",
            event = "pool_disconnect",
            endpoint = shared.client.url(),
            shell_id = shared.shell_id,
            "runspace pool disconnected"
        );
        Ok(())
    }

    /// Reconnects this client to its disconnected pool (rsp:Reconnect): the Receive loops
    /// start again and the output the server kept arrives. A pool the server no longer has
    /// (deleted, or expired after its idle timeout) gives [`Error::NotFound`] and is closed.
    pub async fn reconnect(&self) -> Result<()> {
        let shared = &self.shared;
        shared.require_wsman("reconnecting a runspace pool")?;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed("runspace pool"));
        }
        let _sending = shared.send_lock.lock().await;
        let state = lock(&shared.sm).state();
        if state != PoolState::Disconnected {
            return Err(Error::protocol(format!(
                "cannot reconnect a runspace pool that is {state:?} (not Disconnected)"
            )));
        }
        if let Err(e) = shared.call(action::RECONNECT, &[], "").await {
            let e = gone(|| format!("runspace pool {}", shared.shell_id))(e);
            if e.kind() == crate::ErrorKind::NotFound {
                self.mark_gone();
            }
            return Err(e);
        }
        lock(&shared.sm).set_reconnected()?;
        shared.disconnected.store(false, Ordering::SeqCst);
        self.resume_loops();
        tracing::info!(
            target: "psremote::audit",
            event = "pool_reconnect",
            endpoint = shared.client.url(),
            shell_id = shared.shell_id,
            "runspace pool reconnected"
        );
        // What was queued before the disconnect (host responses, input) goes out now.
        shared.flush_locked().await
    }

    /// Whether the server still has this pool (a Transfer Get of its shell, which a
    /// disconnected pool answers too). A pool the server does not know (its InvalidSelectors
    /// fault) is `false` and closed here; any other failure is an error.
    pub async fn is_alive(&self) -> Result<bool> {
        let shared = &self.shared;
        if shared.closed.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if let Some(oop) = shared.oop() {
            // Out of process the pool lives as long as its session.
            return Ok(oop.dead_error().is_none());
        }
        let get = Call {
            action: action::GET,
            resource_uri: shells::SHELL_RESOURCE,
            shell_id: Some(&shared.shell_id),
            options: &[],
            body: Body::Xml(""),
            operation_timeout: None,
            max_envelope_size: Some(shared.envelope.load(Ordering::Relaxed)),
        };
        match shared.client.request(&get).await {
            Ok(_) => Ok(true),
            Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => {
                self.mark_gone();
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this pool is disconnected.
    pub fn is_disconnected(&self) -> bool {
        self.state() == PoolState::Disconnected
    }

    /// Attaches a new client to a disconnected pool (rsp:Connect with SESSION_CAPABILITY and
    /// CONNECT_RUNSPACEPOOL): on success the pool is Opened and belongs to `client`; attach to
    /// its running pipelines with [`RunspacePool::attach_pipeline`]. `shell_id` names the pool
    /// (see [`Client::list_pools`]); `config` gives the session configuration and the local
    /// options (host, limits, idle timeout and buffer mode for a later disconnect). A pool the
    /// server does not have gives [`Error::NotFound`]. When the handshake fails after the
    /// server accepted the Connect, the pool is disconnected again, so it stays available.
    pub async fn connect(client: &Client, shell_id: &str, config: PoolConfig) -> Result<Self> {
        client.require_wsman("connecting to a disconnected runspace pool")?;
        let shell_id = checked_id("shell", shell_id.trim().to_owned())
            .map_err(|_| Error::InvalidConfig(format!("{shell_id:?} is not a runspace pool id")))?;
        let rpid = uuid::Uuid::parse_str(&shell_id)
            .map_err(|_| Error::InvalidConfig(format!("{shell_id:?} is not a runspace pool id (a GUID)")))?;
        if config.configuration_name.is_empty() || config.configuration_name.contains(['/', ' ']) {
            return Err(Error::InvalidConfig(format!(
                "configuration name {:?} is not a valid session configuration name",
                config.configuration_name
            )));
        }
        let envelope = client.envelope_size();
        let options = PoolOptions {
            min_runspaces: config.min_runspaces,
            max_runspaces: config.max_runspaces,
            host: host_info(&config).await?,
            application_arguments: None,
            max_chunk: psrp::fragment::max_payload_for_envelope(envelope as usize),
            clixml_limits: config.clixml_limits.clone(),
            defrag_limits: config.message_limits,
        };
        let mut sm = psrp::RunspacePool::new(rpid, options);
        let connect_xml = sm.connect()?;
        let resource_uri = format!("{POWERSHELL_PREFIX}{}", config.configuration_name);
        let opts = [OptionEntry {
            name: "protocolversion".into(),
            value: psrp::messages::PROTOCOL_VERSION.into(),
            must_comply: true,
        }];
        let call = Call {
            action: action::CONNECT,
            resource_uri: &resource_uri,
            shell_id: Some(&shell_id),
            options: &opts,
            body: Body::Xml(&shells::connect_body(&connect_xml)),
            operation_timeout: None,
            max_envelope_size: Some(envelope),
        };
        let reply = client.request(&call).await.map_err(gone(|| format!("runspace pool {shell_id}")))?;
        let pool = RunspacePool::assemble(client, &config, resource_uri, shell_id, sm);
        pool.shared.via_connect.store(true, Ordering::SeqCst);
        if let Err(e) = pool.finish_connect(&reply).await {
            // Leave the pool as it was found: disconnected, for another attempt.
            pool.shared.disconnected.store(true, Ordering::SeqCst);
            let body = shells::disconnect_body(pool.shared.idle_timeout, pool.shared.buffer_mode);
            if let Err(d) = pool.shared.call(action::DISCONNECT, &[], &body).await {
                tracing::warn!(shell_id = pool.shared.shell_id, error = %d, "could not disconnect a pool whose connect failed");
            }
            return Err(e);
        }
        pool.shared.awaiting_pool_state.store(true, Ordering::SeqCst);
        pool.go_live("pool_connect");
        Ok(pool)
    }

    /// [`RunspacePool::connect`] to a pool from [`Client::list_pools`] (its configuration
    /// name replaces `config`'s).
    pub async fn connect_to(client: &Client, info: &PoolInfo, config: PoolConfig) -> Result<Self> {
        let config = PoolConfig { configuration_name: info.configuration_name.clone(), ..config };
        Self::connect(client, info.id(), config).await
    }

    async fn finish_connect(&self, reply: &crate::wsman::Reply) -> Result<()> {
        let data = shells::connect_response_data(reply)?;
        if data.is_empty() {
            return Err(Error::protocol("the ConnectResponse carries no connectResponseXml"));
        }
        self.shared.deliver(None, &super::session::Received { data: vec![data], done: false }).await?;
        match lock(&self.shared.sm).state() {
            PoolState::Opened => Ok(()),
            state => Err(Error::protocol(format!(
                "the server's connect answer left the runspace pool {state:?} (no RUNSPACEPOOL_INIT_DATA)"
            ))),
        }
    }

    /// Attaches to a pipeline that runs on this pool's server but was not started by this
    /// handle: one started before a disconnect (by this client or by the one that created
    /// the pool). On a pool attached with [`RunspacePool::connect`] this sends a
    /// command-level Connect first; then the pipeline's Receives bring the output the server
    /// kept. A CommandId the server does not know gives [`Error::NotFound`] (here, or from the
    /// first [`Pipeline::next_event`]).
    pub async fn attach_pipeline(&self, command_id: &str) -> Result<Pipeline> {
        let shared = &self.shared;
        shared.require_wsman("attaching to a pipeline")?;
        if shared.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed("runspace pool"));
        }
        let pid = uuid::Uuid::parse_str(command_id.trim())
            .map_err(|_| Error::InvalidConfig(format!("{command_id:?} is not a pipeline id (a GUID)")))?;
        if lock(&shared.routes).contains_key(&pid) {
            return Err(Error::InvalidConfig(format!("pipeline {} is already attached", command_id_text(pid))));
        }
        lock(&shared.sm).attach_pipeline(pid)?;
        let (tx, rx) = mpsc::channel(shared.client.config().max_events_ahead.max(1));
        lock(&shared.routes).insert(pid, tx.clone());
        if shared.via_connect.load(Ordering::SeqCst) {
            let body = shells::connect_command_body(&command_id_text(pid));
            let connected = {
                let _sending = shared.send_lock.lock().await;
                shared.call(action::CONNECT, &[], &body).await
            };
            if let Err(e) = connected {
                lock(&shared.routes).remove(&pid);
                lock(&shared.sm).close_pipeline(pid);
                return Err(gone(|| format!("pipeline {}", command_id_text(pid)))(e));
            }
        }
        tracing::info!(
            target: "psremote::audit",
            event = "pipeline_attach",
            endpoint = shared.client.url(),
            shell_id = shared.shell_id,
            pipeline = %pid,
            "attached to a running pipeline"
        );
        let task = tokio::spawn(pipeline::receive_loop(shared.clone(), pid, tx, true));
        Ok(Pipeline::attached(self.clone(), pid, rx, task))
    }

    /// Starts the Receive loops a disconnect stopped: the pool's, and one per pipeline that
    /// has a reader and has not finished.
    fn resume_loops(&self) {
        let shared = &self.shared;
        shared.watch_pool();
        let routes: Vec<_> = lock(&shared.routes).iter().map(|(pid, tx)| (*pid, tx.clone())).collect();
        for (pid, tx) in routes {
            let running = lock(&shared.sm).pipeline_state(pid).is_some_and(|s| !s.is_finished());
            if running && !lock(&shared.live_loops).contains(&Some(pid)) {
                tokio::spawn(pipeline::receive_loop(shared.clone(), pid, tx, true));
            }
        }
    }

    /// The server no longer has the pool: nothing to delete, nothing to receive.
    fn mark_gone(&self) {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::SeqCst);
        lock(&shared.sm).set_closed(true);
        if let Some(t) = lock(&shared.pool_task).take() {
            t.abort();
        }
    }
}
