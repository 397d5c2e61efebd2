//! [`RunspacePool`]: creating the remote shell, the pool-level calls and closing it.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::{mpsc, oneshot};

use super::host_calls::host_worker;
use super::pipeline::{self, Pipeline, PipelineResult};
use super::session::{Link, Shared, SharedParts, command_id_text};
use super::{PoolConfig, lock};
use crate::client::backoff::{ReceiveBackoff, pause};
use crate::client::runtime::{finish_in_background, spawn_detached};
use crate::client::{Body, Call, Client};
use crate::clixml::Value;
use crate::error::{Error, Result};
use crate::psrp::{self, HostInfo, PipelineSpec, PoolOptions, PoolState, ProtocolVersion};
use crate::wsman::{OptionEntry, action, winrs};

const POWERSHELL_NS: &str = "http://schemas.microsoft.com/powershell";
/// Host calls queued for the host worker before the Receive loops wait for it.
const HOST_CALL_BUFFER: usize = 256;

/// An open runspace pool. Cheap to clone; close it with [`RunspacePool::close`] (dropping the
/// last handle deletes it in the background).
#[derive(Clone)]
pub struct RunspacePool {
    pub(super) shared: Arc<Shared>,
    _guard: Arc<PoolGuard>,
}

impl std::fmt::Debug for RunspacePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunspacePool").field("shell_id", &self.shared.shell_id).finish_non_exhaustive()
    }
}

/// How long closing a pool waits for its pipelines' Signals Terminate to free a connection.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Deletes the shell when the last pool handle goes away without `close`, including a pool
/// whose opening was abandoned after the shell was created.
struct PoolGuard(Arc<Shared>);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        // A disconnected pool outlives its client: that is what disconnecting is for.
        let disconnected = self.0.disconnected.load(Ordering::SeqCst);
        if !self.0.closed.swap(true, Ordering::SeqCst) && !disconnected {
            let shared = self.0.clone();
            if let Some(t) = lock(&shared.pool_task).take() {
                t.abort();
            }
            spawn_detached(async move {
                if let Err(e) = shared.delete().await {
                    tracing::warn!(shell_id = shared.shell_id, error = %e, "could not delete a dropped runspace pool");
                }
            });
        }
    }
}

/// Ids a server hands back are put into later requests' selectors: only the characters a
/// WS-Man id is made of are accepted.
pub(super) fn checked_id(what: &str, id: String) -> Result<String> {
    if winrs::is_wsman_id(&id) {
        Ok(id)
    } else {
        Err(Error::protocol(format!(
            "the server named the {what} with an id that is not a WS-Man id ({} bytes)",
            id.len()
        )))
    }
}

impl RunspacePool {
    /// Wraps shared state; from here on, dropping the last handle deletes the shell (unless
    /// the pool is disconnected).
    pub(super) fn from_shared(shared: Arc<Shared>) -> Self {
        RunspacePool { _guard: Arc::new(PoolGuard(shared.clone())), shared }
    }

    /// Creates the remote shell and opens the pool. When opening fails after the shell was
    /// created, the shell is deleted before the error is returned. With
    /// [`PoolConfig::open_timeout`] all of it has a deadline.
    pub async fn open(client: &Client, config: PoolConfig) -> Result<Self> {
        let limit = config.open_timeout;
        let name = config.configuration_name.clone();
        crate::client::within(limit, || format!("opening a runspace pool on {name:?}"), Self::open_now(client, config))
            .await
    }

    async fn open_now(client: &Client, config: PoolConfig) -> Result<Self> {
        if config.configuration_name.is_empty() || config.configuration_name.contains(['/', ' ']) {
            return Err(Error::InvalidConfig(format!(
                "configuration name {:?} is not a valid session configuration name",
                config.configuration_name
            )));
        }
        if config.min_runspaces < 1 || config.max_runspaces < config.min_runspaces {
            return Err(Error::InvalidConfig("runspaces: need 1 <= min_runspaces <= max_runspaces".into()));
        }
        let id = uuid::Uuid::new_v4();
        let envelope = client.envelope_size();
        let host = match &config.host {
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
        };
        let out_of_process = !client.config().carrier.is_wsman();
        let options = PoolOptions {
            min_runspaces: config.min_runspaces,
            max_runspaces: config.max_runspaces,
            host,
            application_arguments: config.application_arguments.clone(),
            max_chunk: if out_of_process {
                psrp::outofproc::DEFAULT_FRAGMENT_SIZE
            } else {
                psrp::fragment::max_payload_for_envelope(envelope as usize)
            },
            clixml_limits: config.clixml_limits.clone(),
            defrag_limits: config.message_limits,
        };
        if out_of_process {
            return Self::open_out_of_process(client, &config, psrp::RunspacePool::new(id, options)).await;
        }
        let mut sm = psrp::RunspacePool::new(id, options);
        let first = sm.open()?;
        let requested_id = command_id_text(id);
        let resource_uri = format!("{POWERSHELL_NS}/{}", config.configuration_name);
        let mut body = format!(
            "<rsp:Shell ShellId=\"{requested_id}\"><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
        );
        if let Some(t) = config.idle_timeout {
            body.push_str(&format!("<rsp:IdleTimeOut>PT{}.{:03}S</rsp:IdleTimeOut>", t.as_secs(), t.subsec_millis()));
        }
        if let Some(mode) = config.buffer_mode {
            // Open content after the streams, where Windows' Shell echo has it too.
            body.push_str(&format!("<rsp:BufferMode>{}</rsp:BufferMode>", mode.as_str()));
        }
        body.push_str(&format!(
            "<creationXml xmlns=\"{POWERSHELL_NS}\">{}</creationXml></rsp:Shell>",
            B64.encode(&first)
        ));
        let mut opts = vec![OptionEntry {
            name: "protocolversion".into(),
            value: psrp::messages::PROTOCOL_VERSION.into(),
            must_comply: true,
        }];
        if config.no_profile {
            opts.push(OptionEntry { name: "WINRS_NOPROFILE".into(), value: "TRUE".into(), must_comply: true });
        }
        let create = Call {
            action: action::CREATE,
            resource_uri: &resource_uri,
            shell_id: None,
            options: &opts,
            body: Body::Xml(&body),
            operation_timeout: None,
            max_envelope_size: Some(envelope),
        };
        // A caller that stops waiting (a deadline) during the Create leaves no shell behind.
        let detached = crate::client::create::Create {
            resource_uri: resource_uri.clone(),
            options: opts.clone(),
            body: body.clone(),
            max_envelope_size: Some(envelope),
        };
        let reply = detached.send(client).await?;
        // The server may choose its own id (PowerShell 2.0 does); PSRP still names the pool by
        // ours in every message, WS-Man by the server's in every selector.
        let shell_id = match winrs::shell_id_from_create(&reply).and_then(|s| checked_id("shell", s)) {
            Ok(s) => s,
            Err(e) => {
                // Best effort: a server that did create the shell most likely used our id.
                let delete = Call {
                    action: action::DELETE,
                    shell_id: Some(&requested_id),
                    body: Body::Xml(""),
                    options: &[],
                    ..create
                };
                let _ = client.request(&delete).await;
                return Err(e);
            }
        };
        if !shell_id.eq_ignore_ascii_case(&requested_id) {
            tracing::debug!(requested = requested_id, created = shell_id, "the server chose its own shell id");
        }
        // From here on the guard deletes the shell if this future is dropped.
        let pool = Self::assemble(client, &config, resource_uri, shell_id, sm);
        if let Err(e) = pool.finish_open().await {
            pool.shared.closed.store(true, Ordering::SeqCst);
            if let Err(d) = pool.shared.delete().await {
                tracing::warn!(shell_id = pool.shared.shell_id, error = %d, "could not delete a pool that failed to open");
            }
            return Err(e);
        }
        pool.go_live("pool_open");
        Ok(pool)
    }

    /// Opens the pool over the client's out-of-process carrier: starts it (the process), sends
    /// SESSION_CAPABILITY and INIT_RUNSPACEPOOL as the pool's Data and reads the server's
    /// answer up to RUNSPACEPOOL_STATE Opened. On failure the carrier is ended before the
    /// error is returned.
    async fn open_out_of_process(client: &Client, config: &PoolConfig, mut sm: psrp::RunspacePool) -> Result<Self> {
        if !config.configuration_name.eq_ignore_ascii_case("Microsoft.PowerShell") {
            return Err(Error::InvalidConfig(format!(
                "the {} transport has no session configurations ({:?} was asked for): the program it starts \
                 decides what the session is",
                client.transport_name(),
                config.configuration_name
            )));
        }
        let first = sm.open()?;
        let stream = crate::client::outofproc::open_stream(&client.config().carrier).await?;
        let acks = client.config().operation_timeout * crate::client::outofproc::ACK_TIMEOUTS;
        let session = crate::client::outofproc::Session::start(stream, acks);
        let shell_id = command_id_text(sm.id());
        let resource_uri = format!("{POWERSHELL_NS}/{}", config.configuration_name);
        let pool = Self::assemble_on(client, config, resource_uri, shell_id, sm, Link::OutOfProc(session.clone()));
        let opened = async {
            session.send_data(uuid::Uuid::nil(), psrp::outofproc::DataStream::Default, &[&first]).await?;
            pool.finish_open().await
        }
        .await;
        if let Err(e) = opened {
            pool.shared.closed.store(true, Ordering::SeqCst);
            session.shutdown().await;
            return Err(e);
        }
        pool.go_live("pool_open");
        Ok(pool)
    }

    /// A pool over `sm` for the shell the server named, with its host worker running.
    pub(super) fn assemble(
        client: &Client,
        config: &PoolConfig,
        resource_uri: String,
        shell_id: String,
        sm: psrp::RunspacePool,
    ) -> Self {
        Self::assemble_on(client, config, resource_uri, shell_id, sm, Link::Wsman)
    }

    fn assemble_on(
        client: &Client,
        config: &PoolConfig,
        resource_uri: String,
        shell_id: String,
        sm: psrp::RunspacePool,
        link: Link,
    ) -> Self {
        let (host_tx, host_rx) = mpsc::channel(HOST_CALL_BUFFER);
        let mut parts = SharedParts::new(client, config, resource_uri, shell_id, host_tx);
        if !matches!(link, Link::Wsman) {
            // The fragment size is the transport's; no envelope to grow.
            parts.raise_envelope = false;
        }
        parts.link = link;
        let shared = Arc::new(Shared::new(parts, sm));
        tokio::spawn(host_worker(Arc::downgrade(&shared), host_rx));
        RunspacePool::from_shared(shared)
    }

    /// Writes the audit event of a pool ready for use (`pool_open` or `pool_connect`), and
    /// starts the pool's own Receive if something waits for it already. Otherwise it starts
    /// when needed ([`Shared::watch_pool`]): an idle pool keeps no Receive pending.
    pub(super) fn go_live(&self, event: &'static str) {
        self.shared.watch_pool();
        tracing::info!(
            target: "psremote::audit",
            event,
            endpoint = self.shared.client.url(),
            shell_id = self.shared.shell_id,
            configuration = self.shared.resource_uri,
            "runspace pool ready"
        );
    }

    async fn finish_open(&self) -> Result<()> {
        self.shared.flush().await?;
        let mut backoff = ReceiveBackoff::new(self.shared.client.config().operation_timeout);
        loop {
            let sent = tokio::time::Instant::now();
            let received = self.shared.receive(None).await?;
            self.shared.deliver(None, &received).await?;
            let wait = backoff.after_receive(received.data.is_empty(), sent.elapsed());
            let state = lock(&self.shared.sm).state();
            match state {
                PoolState::Opened => return Ok(()),
                PoolState::Broken | PoolState::Closed => {
                    return Err(Error::protocol(format!("the server refused to open the runspace pool ({state:?})")));
                }
                _ => {}
            }
            if !wait.is_zero() {
                pause(wait, || self.shared.closed.load(Ordering::SeqCst)).await;
            }
        }
    }

    /// The pool (shell) id the server uses.
    pub fn id(&self) -> &str {
        &self.shared.shell_id
    }

    /// The negotiated protocol version.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        lock(&self.shared.sm).protocol_version()
    }

    /// The server's application private data (e.g. `PSVersionTable`), if it sent any.
    pub fn application_private_data(&self) -> Option<Value> {
        lock(&self.shared.private_data).clone()
    }

    /// The pool state.
    pub fn state(&self) -> PoolState {
        lock(&self.shared.sm).state()
    }

    /// The most bytes of PSRP fragments one Send (or out-of-process Data) carries now.
    pub fn max_chunk(&self) -> usize {
        lock(&self.shared.sm).max_chunk()
    }

    /// The transport the pool runs on (`wsman`, `process`).
    pub fn transport(&self) -> &'static str {
        match &self.shared.link {
            Link::Wsman => "wsman",
            Link::OutOfProc(_) => self.shared.client.transport_name(),
        }
    }

    /// The MaxEnvelopeSize this pool's requests use now.
    pub fn max_envelope_size(&self) -> u32 {
        self.shared.envelope.load(Ordering::Relaxed)
    }

    /// Runs the session-key exchange (needed before sending or reading SecureStrings), or waits
    /// for the one already under way (the server may have asked for it).
    pub async fn exchange_key(&self) -> Result<()> {
        self.shared.ensure_key().await
    }

    /// Testing only: the key exchange (not started yet) uses `pair` instead of a key generated
    /// for it, as [`PoolConfig::key_pair`](super::PoolConfig) does at open. Replaying a recorded
    /// conversation needs the recorded client's key; anything else should let the pool generate
    /// one, since whoever knows the private key can read every SecureString of the session.
    /// Fails with [`Error::InvalidConfig`] once the exchange has started.
    #[doc(hidden)]
    pub fn use_key_pair(&self, pair: crate::psrp::session_key::ClientKeyPair) -> Result<()> {
        // Holding the slot while checking: an exchange starting meanwhile takes this pair.
        let mut slot = lock(&self.shared.key_pair);
        if self.shared.key_exchange_started.load(Ordering::SeqCst) {
            return Err(Error::InvalidConfig(
                "the session key exchange has already started: a key pair can no longer be set".into(),
            ));
        }
        *slot = Some(pair);
        Ok(())
    }

    /// Encrypts a string for use as a SecureString argument (exchanges the key if needed).
    pub async fn secure_string(&self, plaintext: &str) -> Result<Value> {
        self.exchange_key().await?;
        lock(&self.shared.sm).secure_string(plaintext)
    }

    /// Encrypts a string for a SecureString argument when the session key is already there
    /// (no waiting); fails when it is not.
    pub fn secure_string_now(&self, plaintext: &str) -> Result<Value> {
        lock(&self.shared.sm).secure_string(plaintext)
    }

    /// Whether the session key has been exchanged.
    pub fn has_session_key(&self) -> bool {
        lock(&self.shared.sm).session_key().is_some()
    }

    /// Decrypts a SecureString received from the server.
    pub fn decrypt_secure_string(&self, ciphertext: &[u8]) -> Result<zeroize::Zeroizing<String>> {
        lock(&self.shared.sm).decrypt_secure_string(ciphertext)
    }

    async fn pool_call(&self, queue: impl FnOnce(&mut psrp::RunspacePool) -> Result<i64>) -> Result<Value> {
        let (tx, rx) = oneshot::channel();
        {
            let mut sm = lock(&self.shared.sm);
            let ci = queue(&mut sm)?;
            lock(&self.shared.waiters).insert(ci, tx);
        }
        self.shared.flush().await?;
        // After the Send, so that it and this Receive can take turns on one connection.
        self.shared.watch_pool();
        rx.await.map_err(|_| Error::protocol("the runspace pool ended before answering"))
    }

    /// Sets the maximum runspaces; returns whether the server accepted.
    pub async fn set_max_runspaces(&self, count: i32) -> Result<bool> {
        Ok(self.pool_call(|sm| sm.set_max_runspaces(count)).await?.as_bool().unwrap_or(false))
    }

    /// Sets the minimum runspaces; returns whether the server accepted.
    pub async fn set_min_runspaces(&self, count: i32) -> Result<bool> {
        Ok(self.pool_call(|sm| sm.set_min_runspaces(count)).await?.as_bool().unwrap_or(false))
    }

    /// How many runspaces are free.
    pub async fn available_runspaces(&self) -> Result<i64> {
        self.pool_call(|sm| sm.get_available_runspaces())
            .await?
            .as_i64()
            .ok_or_else(|| Error::protocol("available runspaces is not a number"))
    }

    /// Resets the runspace state (variables, modules) to the configuration's initial state.
    pub async fn reset_runspace_state(&self) -> Result<bool> {
        Ok(self.pool_call(|sm| sm.reset_runspace_state()).await?.as_bool().unwrap_or(false))
    }

    /// Starts a pipeline; read its events with [`Pipeline::next_event`].
    pub async fn start(&self, spec: &PipelineSpec) -> Result<Pipeline> {
        pipeline::start(self, spec).await
    }

    /// What `Get-Command` knows about the commands `query` names (GET_COMMAND_METADATA): one
    /// `CommandMetadata` object per command (Name, Namespace, CommandType, Parameters, ...), as
    /// the server sent them; the leading count object is checked and removed.
    pub async fn command_metadata(&self, query: &crate::psrp::CommandMetadataQuery) -> Result<Vec<Value>> {
        let result = pipeline::start_metadata(self, query).await?.wait().await?;
        if let Some(e) = &result.terminating_error {
            return Err(Error::protocol(format!("the server could not list command metadata: {}", e.message)));
        }
        let mut output = result.output.into_iter();
        // The count's first integer `Count` (psrpcore writes a Nil one before it).
        let count = output.next().and_then(|c| {
            let o = c.as_object()?;
            o.extended.iter().chain(o.adapted.iter()).filter(|(n, _)| n == "Count").find_map(|(_, v)| v.as_i64())
        });
        let items: Vec<Value> = output.collect();
        match count {
            Some(n) if usize::try_from(n).is_ok_and(|n| n == items.len()) => Ok(items),
            Some(n) => Err(Error::protocol(format!(
                "the server announced {n} command metadata objects and sent {}",
                items.len()
            ))),
            None => Err(Error::protocol("command metadata without its leading count")),
        }
    }

    /// Runs the session-key exchange like [`RunspacePool::exchange_key`], giving up after
    /// `timeout` with [`Error::Timeout`].
    pub async fn exchange_key_within(&self, timeout: std::time::Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.exchange_key()).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(format!("the session key exchange took longer than {timeout:?}"))),
        }
    }

    /// Runs a pipeline to completion and collects every stream.
    pub async fn invoke(&self, spec: &PipelineSpec) -> Result<PipelineResult> {
        self.start(spec).await?.wait().await
    }

    /// Like [`RunspacePool::invoke`], giving up after `timeout` with [`Error::Timeout`]; the
    /// pipeline is then stopped on the server (in the background), the pool stays open.
    pub async fn invoke_within(&self, spec: &PipelineSpec, timeout: std::time::Duration) -> Result<PipelineResult> {
        crate::client::within(Some(timeout), || "the pipeline".to_owned(), self.invoke(spec)).await
    }

    /// Runs a pipeline fed with `input` (then end of input) and collects every stream.
    pub async fn invoke_with_input(&self, spec: &PipelineSpec, input: Vec<Value>) -> Result<PipelineResult> {
        let mut spec = spec.clone();
        spec.has_input = true;
        let p = self.start(&spec).await?;
        p.send_input(input).await?;
        p.end_input().await?;
        p.wait().await
    }

    /// Closes the pool: deletes the remote shell (stopping its pipelines).
    pub async fn close(self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        lock(&self.shared.sm).set_closed(false);
        if let Some(t) = lock(&self.shared.pool_task).take() {
            t.abort();
        }
        // In the background, so that a caller who stops waiting (a deadline) leaves no pool.
        let shared = self.shared.clone();
        let r = finish_in_background(async move {
            shared.releases_done(RELEASE_WAIT).await;
            shared.delete().await
        })
        .await;
        lock(&self.shared.sm).set_closed(true);
        tracing::info!(
            target: "psremote::audit",
            event = "pool_close",
            endpoint = self.shared.client.url(),
            shell_id = self.shared.shell_id,
            ok = r.is_ok(),
            "runspace pool closed"
        );
        r
    }
}
