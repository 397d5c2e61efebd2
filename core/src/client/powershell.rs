//! PowerShell over WS-Man: runspace pools and pipelines driven by the sans-IO state machine in
//! [`crate::psrp`] (MS-PSRP 3.1.5, PROTOCOL.md C.4, C.5).
//!
//! A pool keeps one shell-level Receive posted for pool messages (host calls, session key,
//! availability). Each running pipeline keeps its own command-level Receive. Every pending
//! Receive occupies its own authenticated connection; Sends are serialised per pool.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::{mpsc, oneshot};

use super::runtime::spawn_detached;
use super::{Call, Client};
use crate::clixml::Value;
use crate::error::{Error, Result};
use crate::psrp::messages::{InformationRecord, InformationalRecord, ProgressRecord};
use crate::psrp::session_key::ClientKeyPair;
use crate::psrp::{
    self, ErrorRecord, Event, HostCall, HostInfo, HostResponse, PipelineSpec, PipelineState, PoolOptions, PoolState,
    ProtocolVersion,
};
use crate::wsman::{OptionEntry, action, code, winrs};

const POWERSHELL_NS: &str = "http://schemas.microsoft.com/powershell";
const STOP_SIGNAL: &str = winrs::signal::PS_STOP;
const TERMINATE_SIGNAL: &str = winrs::signal::PS_TERMINATE;
/// Envelope size used once the server speaks protocol 2.2 or later.
const LARGE_ENVELOPE: u32 = 512_000;
/// Events buffered per pipeline before its Receive loop waits for the reader.
const EVENT_BUFFER: usize = 256;

/// The client's host: answers the server's host calls (Read-Host, Get-Credential, prompts,
/// Write-Host, progress, raw UI). Called on a blocking thread, never on the runtime.
pub trait Host: Send + Sync + 'static {
    /// Answers one call. Void methods (writes, progress) are called too; their answer is ignored.
    fn call(&self, call: &HostCall) -> HostResponse;
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
    /// Idle timeout of the remote shell.
    pub idle_timeout: Option<Duration>,
    /// `$PSSenderInfo.ApplicationArguments`.
    pub application_arguments: Option<Value>,
    /// Raise the envelope size to 512000 bytes when the server speaks protocol ≥ 2.2.
    pub raise_envelope_size: bool,
    /// Do not load the user's profile on the server (`WINRS_NOPROFILE`).
    pub no_profile: bool,
    /// The RSA key pair for the session-key exchange; a fresh one is generated when absent.
    pub key_pair: Option<ClientKeyPair>,
    /// CLIXML limits for what the server sends (nesting depth, object count, message bytes).
    pub clixml_limits: crate::clixml::Limits,
    /// Fragment reassembly limits (largest message, messages in flight).
    pub message_limits: psrp::fragment::DefragLimits,
}

impl std::fmt::Debug for PoolConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolConfig")
            .field("configuration_name", &self.configuration_name)
            .field("min_runspaces", &self.min_runspaces)
            .field("max_runspaces", &self.max_runspaces)
            .field("host", &self.host.is_some())
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
            application_arguments: None,
            raise_envelope_size: true,
            no_profile: false,
            key_pair: None,
            clixml_limits: crate::clixml::Limits::default(),
            message_limits: psrp::fragment::DefragLimits::default(),
        }
    }
}

type Route = mpsc::Sender<Result<Event>>;

struct Shared {
    client: Client,
    resource_uri: String,
    shell_id: String,
    sm: Mutex<psrp::RunspacePool>,
    /// One Send (or Command) at a time per shell, in order.
    send_lock: tokio::sync::Mutex<()>,
    routes: Mutex<HashMap<uuid::Uuid, Route>>,
    waiters: Mutex<HashMap<i64, oneshot::Sender<Value>>>,
    key_waiters: Mutex<Vec<oneshot::Sender<Result<()>>>>,
    /// A key exchange was started (by us or at the server's request); later callers wait for it.
    key_exchange_started: AtomicBool,
    host: Option<Arc<dyn Host>>,
    /// Host calls go to one worker per pool, so the host sees them in the order they came.
    host_calls: mpsc::Sender<(Option<uuid::Uuid>, HostCall)>,
    key_pair: Mutex<Option<ClientKeyPair>>,
    envelope: AtomicU32,
    closed: AtomicBool,
    private_data: Mutex<Option<Value>>,
    pool_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    async fn call(&self, action: &str, options: &[OptionEntry], body: &str) -> Result<crate::wsman::Reply> {
        self.client
            .request(&Call {
                action,
                resource_uri: &self.resource_uri,
                shell_id: Some(&self.shell_id),
                options,
                body,
                operation_timeout: None,
                max_envelope_size: Some(self.envelope.load(Ordering::Relaxed)),
            })
            .await
    }

    /// Sends every queued chunk. The caller holds `send_lock`.
    async fn flush_locked(&self) -> Result<()> {
        loop {
            let next = lock(&self.sm).next_outgoing();
            let Some(o) = next else { return Ok(()) };
            let cmd = o.pid.map(|p| p.as_hyphenated().to_string().to_uppercase());
            let body = winrs::send_body(o.stream.name(), cmd.as_deref(), &o.data, false);
            self.call(action::SEND, &[], &body).await?;
        }
    }

    async fn flush(&self) -> Result<()> {
        let _g = self.send_lock.lock().await;
        self.flush_locked().await
    }

    /// One Receive for the pool (`pid` None) or a pipeline; feeds the state machine. Returns
    /// the events it produced, in order, and whether the command reported Done.
    async fn receive(&self, pid: Option<uuid::Uuid>) -> Result<(Vec<Event>, bool)> {
        let cmd = pid.map(|p| p.as_hyphenated().to_string().to_uppercase());
        let body = winrs::receive_body("stdout", cmd.as_deref());
        let opts = [OptionEntry::new("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "TRUE")];
        let reply = match self.call(action::RECEIVE, &opts, &body).await {
            Ok(r) => r,
            Err(Error::Fault(f)) if f.is_operation_timeout() => return Ok((Vec::new(), false)),
            Err(e) => return Err(e),
        };
        let out = winrs::parse_receive(&reply)?;
        let mut events = Vec::new();
        let mut sm = lock(&self.sm);
        for s in out.streams {
            if s.name != "stdout" || s.data.is_empty() {
                continue;
            }
            events.extend(sm.receive(pid, &s.data)?);
        }
        Ok((events, out.state == Some(winrs::CommandState::Done)))
    }

    /// Delivers events in order: pipeline events to their reader, pool events here.
    async fn dispatch(self: &Arc<Self>, events: Vec<Event>) -> Result<()> {
        for ev in events {
            match event_pid(&ev) {
                Some(pid) => {
                    if let Event::HostCall { pid, call } = &ev {
                        // Writes and progress also reach the reader below; calls that wait for an
                        // answer only go to the host.
                        let _ = self.host_calls.send((*pid, call.clone())).await;
                        if !call.method.is_void() {
                            continue;
                        }
                    }
                    let route = lock(&self.routes).get(&pid).cloned();
                    if let Some(route) = route {
                        // A reader that went away is not an error; its pipeline is being torn down.
                        let _ = route.send(Ok(ev)).await;
                    }
                }
                None => self.pool_event(ev).await?,
            }
        }
        Ok(())
    }

    async fn pool_event(self: &Arc<Self>, ev: Event) -> Result<()> {
        match ev {
            Event::SessionCapability(cap) => {
                tracing::debug!(protocol = cap.protocol_version, "server capability");
                let raise = lock(&self.sm).protocol_version().is_some_and(|p| p >= ProtocolVersion::V2_2);
                if raise && self.envelope.load(Ordering::Relaxed) < LARGE_ENVELOPE {
                    self.envelope.store(LARGE_ENVELOPE, Ordering::Relaxed);
                    lock(&self.sm).set_max_chunk(psrp::fragment::max_payload_for_envelope(LARGE_ENVELOPE as usize));
                }
            }
            Event::ApplicationPrivateData(v) => *lock(&self.private_data) = Some(v),
            Event::SessionKeyReady => {
                let _sm = lock(&self.sm);
                for w in lock(&self.key_waiters).drain(..) {
                    let _ = w.send(Ok(()));
                }
            }
            Event::PublicKeyRequested => {
                if self.key_exchange_started.swap(true, Ordering::SeqCst) {
                    return Ok(());
                }
                let this = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = this.start_key_exchange().await {
                        tracing::warn!(error = %e, "answering the server's public key request failed");
                    }
                });
            }
            Event::RunspaceAvailability { ci, value } => {
                if let Some(w) = lock(&self.waiters).remove(&ci) {
                    let _ = w.send(value);
                }
            }
            Event::HostCall { pid: None, call } => {
                let _ = self.host_calls.send((None, call)).await;
            }
            Event::PoolState { state, error } => {
                if matches!(state, PoolState::Broken | PoolState::Closed) {
                    tracing::warn!(?state, error = error.as_ref().map(|e| e.to_string()), "runspace pool ended");
                    let err = || Error::protocol(format!("the runspace pool is {state:?}"));
                    for w in lock(&self.key_waiters).drain(..) {
                        let _ = w.send(Err(err()));
                    }
                    lock(&self.waiters).clear();
                }
            }
            Event::Warning { pid: None, record } => tracing::warn!(message = record.message, "pool warning"),
            Event::UserEvent(_) => tracing::debug!("user event"),
            other => tracing::debug!(event = ?other, "unhandled pool event"),
        }
        Ok(())
    }

    async fn answer_host_call(&self, pid: Option<uuid::Uuid>, call: HostCall) {
        let response = match self.host.clone() {
            Some(h) => {
                let c = call.clone();
                tokio::task::spawn_blocking(move || h.call(&c))
                    .await
                    .unwrap_or_else(|_| HostResponse::Error("the host callback panicked".into()))
            }
            None => HostResponse::NotImplemented,
        };
        if call.method.is_void() {
            return;
        }
        if response.needs_session_key()
            && let Err(e) = self.ensure_key().await
        {
            tracing::warn!(error = %e, "no session key for a host response carrying a secret");
        }
        let queued = lock(&self.sm).host_response(pid, &call, &response);
        if let Err(e) = async {
            queued?;
            self.flush().await
        }
        .await
        {
            tracing::warn!(error = %e, method = call.method.name(), "could not answer a host call");
        }
    }

    /// Runs the session-key exchange, or waits for the one already under way.
    async fn ensure_key(&self) -> Result<()> {
        let rx = {
            // INVARIANT: the key check and the waiter registration happen under the state lock,
            // which the SessionKeyReady dispatch also takes, so no notification is missed.
            let sm = lock(&self.sm);
            if sm.session_key().is_some() {
                return Ok(());
            }
            let (tx, rx) = oneshot::channel();
            lock(&self.key_waiters).push(tx);
            rx
        };
        if !self.key_exchange_started.swap(true, Ordering::SeqCst) {
            self.start_key_exchange().await?;
        }
        rx.await.map_err(|_| Error::protocol("the session key exchange was abandoned"))?
    }

    async fn start_key_exchange(&self) -> Result<()> {
        let given = lock(&self.key_pair).take();
        let pair = match given {
            Some(p) => p,
            None => tokio::task::spawn_blocking(ClientKeyPair::generate)
                .await
                .map_err(|_| Error::protocol("key generation was cancelled"))??,
        };
        lock(&self.sm).exchange_key(pair)?;
        self.flush().await
    }

    async fn pool_receive_loop(self: Arc<Self>) {
        while !self.closed.load(Ordering::Relaxed) {
            let r = async {
                let (events, _) = self.receive(None).await?;
                self.dispatch(events).await
            }
            .await;
            if let Err(e) = r {
                if !self.closed.load(Ordering::Relaxed) {
                    tracing::warn!(error = %e, "runspace pool receive failed; the pool is broken");
                    lock(&self.sm).set_broken();
                    for w in lock(&self.key_waiters).drain(..) {
                        let _ = w.send(Err(Error::protocol(format!("runspace pool broken: {e}"))));
                    }
                    lock(&self.waiters).clear();
                }
                return;
            }
        }
    }

    async fn delete(&self) -> Result<()> {
        match self.call(action::DELETE, &[], "").await {
            Ok(_) => Ok(()),
            Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn signal(&self, pid: uuid::Uuid, code_uri: &str) -> Result<()> {
        let body = winrs::signal_body(&pid.as_hyphenated().to_string().to_uppercase(), code_uri);
        match self.call(action::SIGNAL, &[], &body).await {
            Ok(_) => Ok(()),
            Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn event_pid(ev: &Event) -> Option<uuid::Uuid> {
    match ev {
        Event::HostCall { pid, .. } | Event::Warning { pid, .. } => *pid,
        Event::Output { pid, .. }
        | Event::Error { pid, .. }
        | Event::Verbose { pid, .. }
        | Event::Debug { pid, .. }
        | Event::Information { pid, .. }
        | Event::Progress { pid, .. }
        | Event::PipelineState { pid, .. } => Some(*pid),
        _ => None,
    }
}

/// An open runspace pool. Cheap to clone; close it with [`RunspacePool::close`] (dropping the
/// last handle deletes it in the background).
#[derive(Clone)]
pub struct RunspacePool {
    shared: Arc<Shared>,
    _guard: Arc<PoolGuard>,
}

impl std::fmt::Debug for RunspacePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunspacePool").field("shell_id", &self.shared.shell_id).finish_non_exhaustive()
    }
}

/// Deletes the shell when the last pool handle goes away without `close`.
struct PoolGuard(Arc<Shared>);

impl Drop for PoolGuard {
    fn drop(&mut self) {
        if !self.0.closed.swap(true, Ordering::SeqCst) {
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

impl RunspacePool {
    /// Creates the remote shell and opens the pool.
    pub async fn open(client: &Client, config: PoolConfig) -> Result<Self> {
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
        let envelope = client.inner.config.max_envelope_size;
        let options = PoolOptions {
            min_runspaces: config.min_runspaces,
            max_runspaces: config.max_runspaces,
            host: if config.host.is_some() { HostInfo::with_ui() } else { HostInfo::null() },
            application_arguments: config.application_arguments.clone(),
            max_chunk: psrp::fragment::max_payload_for_envelope(envelope as usize),
            clixml_limits: config.clixml_limits.clone(),
            defrag_limits: config.message_limits,
        };
        let mut sm = psrp::RunspacePool::new(id, options);
        let first = sm.open()?;
        let shell_id = id.as_hyphenated().to_string().to_uppercase();
        let (host_tx, host_rx) = mpsc::channel(EVENT_BUFFER);
        let shared = Arc::new(Shared {
            client: client.clone(),
            resource_uri: format!("{POWERSHELL_NS}/{}", config.configuration_name),
            shell_id: shell_id.clone(),
            sm: Mutex::new(sm),
            send_lock: tokio::sync::Mutex::new(()),
            routes: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            key_waiters: Mutex::new(Vec::new()),
            key_exchange_started: AtomicBool::new(false),
            host: config.host.clone(),
            host_calls: host_tx,
            key_pair: Mutex::new(config.key_pair.clone()),
            envelope: AtomicU32::new(envelope),
            closed: AtomicBool::new(false),
            private_data: Mutex::new(None),
            pool_task: Mutex::new(None),
        });
        let mut body = format!(
            "<rsp:Shell ShellId=\"{shell_id}\"><rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
        );
        if let Some(t) = config.idle_timeout {
            body.push_str(&format!("<rsp:IdleTimeOut>PT{}.{:03}S</rsp:IdleTimeOut>", t.as_secs(), t.subsec_millis()));
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
        let reply = client
            .request(&Call {
                action: action::CREATE,
                resource_uri: &shared.resource_uri,
                shell_id: None,
                options: &opts,
                body: &body,
                operation_timeout: None,
                max_envelope_size: Some(envelope),
            })
            .await?;
        let created = winrs::shell_id_from_create(&reply)?;
        if !created.eq_ignore_ascii_case(&shell_id) {
            // The server chose its own id; PSRP still names the pool by ours in every message.
            return Err(Error::protocol(format!("the server created shell {created}, not the requested {shell_id}")));
        }
        tokio::spawn(host_worker(Arc::downgrade(&shared), host_rx));
        let pool = RunspacePool { _guard: Arc::new(PoolGuard(shared.clone())), shared };
        if let Err(e) = pool.finish_open().await {
            let _ = pool.shared.delete().await;
            pool.shared.closed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        let task = tokio::spawn(pool.shared.clone().pool_receive_loop());
        *lock(&pool.shared.pool_task) = Some(task);
        tracing::info!(
            target: "psremote::audit",
            event = "pool_open",
            endpoint = client.url(),
            shell_id = pool.shared.shell_id,
            configuration = pool.shared.resource_uri,
            "runspace pool opened"
        );
        Ok(pool)
    }

    async fn finish_open(&self) -> Result<()> {
        self.shared.flush().await?;
        loop {
            let (events, _) = self.shared.receive(None).await?;
            self.shared.dispatch(events).await?;
            let state = lock(&self.shared.sm).state();
            match state {
                PoolState::Opened => return Ok(()),
                PoolState::Broken | PoolState::Closed => {
                    return Err(Error::protocol(format!("the server refused to open the runspace pool ({state:?})")));
                }
                _ => {}
            }
        }
    }

    /// The pool (shell) id.
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

    /// Runs the session-key exchange (needed before sending or reading SecureStrings), or waits
    /// for the one already under way (the server may have asked for it).
    pub async fn exchange_key(&self) -> Result<()> {
        self.shared.ensure_key().await
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
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed("runspace pool"));
        }
        let pid = uuid::Uuid::new_v4();
        let (tx, rx) = mpsc::channel(EVENT_BUFFER);
        let guard = self.shared.send_lock.lock().await;
        let first = lock(&self.shared.sm).create_pipeline(pid, spec)?;
        lock(&self.shared.routes).insert(pid, tx.clone());
        let cmd_id = pid.as_hyphenated().to_string().to_uppercase();
        let body = format!(
            "<rsp:CommandLine CommandId=\"{cmd_id}\"><rsp:Command/><rsp:Arguments>{}</rsp:Arguments></rsp:CommandLine>",
            B64.encode(&first)
        );
        let started = async {
            let reply = self.shared.call(action::COMMAND, &[], &body).await?;
            let got = winrs::command_id_from_reply(&reply)?;
            if !got.eq_ignore_ascii_case(&cmd_id) {
                return Err(Error::protocol(format!("the server named the pipeline {got}, not {cmd_id}")));
            }
            self.shared.flush_locked().await
        }
        .await;
        drop(guard);
        if let Err(e) = started {
            lock(&self.shared.routes).remove(&pid);
            lock(&self.shared.sm).close_pipeline(pid);
            let _ = self.shared.signal(pid, TERMINATE_SIGNAL).await;
            return Err(e);
        }
        audit_pipeline_start(&self.shared, pid, spec);
        let shared = self.shared.clone();
        let task = tokio::spawn(pipeline_loop(shared, pid, tx));
        Ok(Pipeline { pool: self.clone(), pid, events: rx, finished: None, task: Some(task) })
    }

    /// Runs a pipeline to completion and collects every stream.
    pub async fn invoke(&self, spec: &PipelineSpec) -> Result<PipelineResult> {
        self.start(spec).await?.wait().await
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
        let r = self.shared.delete().await;
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

/// Answers host calls one at a time, in order. Holds the pool weakly so that dropping the pool
/// ends the worker (the channel closes with it).
async fn host_worker(shared: Weak<Shared>, mut calls: mpsc::Receiver<(Option<uuid::Uuid>, HostCall)>) {
    while let Some((pid, call)) = calls.recv().await {
        let Some(this) = shared.upgrade() else { return };
        this.answer_host_call(pid, call).await;
    }
}

/// Receives a pipeline's messages until it finishes, then releases it with Signal Terminate.
/// The audit event of a started pipeline: command names always, arguments and script text only
/// when the configuration opts in (they may hold data an audit log should not).
fn audit_pipeline_start(shared: &Shared, pid: uuid::Uuid, spec: &PipelineSpec) {
    let with_arguments = shared.client.config().audit_arguments;
    let commands: Vec<String> = spec
        .statements
        .iter()
        .map(|statement| {
            statement
                .iter()
                .map(|c| match (c.is_script, with_arguments) {
                    (true, false) => "<script>".to_owned(),
                    (false, false) => c.text.clone(),
                    (_, true) => {
                        let mut text = c.text.clone();
                        for (name, value) in &c.parameters {
                            text.push_str(&match name {
                                Some(n) => format!(" -{n} {}", crate::clixml::to_string(value)),
                                None => format!(" {}", crate::clixml::to_string(value)),
                            });
                        }
                        text
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect();
    tracing::info!(
        target: "psremote::audit",
        event = "pipeline_start",
        endpoint = shared.client.url(),
        shell_id = shared.shell_id,
        pipeline = %pid,
        commands = %commands.join("; "),
        arguments_logged = with_arguments,
        "pipeline started"
    );
}

async fn pipeline_loop(shared: Arc<Shared>, pid: uuid::Uuid, tx: Route) {
    let result = async {
        loop {
            let (events, done) = shared.receive(Some(pid)).await?;
            shared.dispatch(events).await?;
            let state = lock(&shared.sm).pipeline_state(pid);
            if state.is_none_or(PipelineState::is_finished) || done {
                return Ok::<_, Error>(());
            }
        }
    }
    .await;
    let state = lock(&shared.sm).pipeline_state(pid);
    tracing::info!(
        target: "psremote::audit",
        event = "pipeline_end",
        endpoint = shared.client.url(),
        shell_id = shared.shell_id,
        pipeline = %pid,
        state = ?state,
        error = result.as_ref().err().map(ToString::to_string),
        "pipeline ended"
    );
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
    if let Err(e) = shared.signal(pid, TERMINATE_SIGNAL).await {
        tracing::debug!(pipeline = %pid, error = %e, "terminate signal failed");
    }
    lock(&shared.routes).remove(&pid);
    lock(&shared.sm).close_pipeline(pid);
}

/// A running pipeline.
pub struct Pipeline {
    pool: RunspacePool,
    pid: uuid::Uuid,
    events: mpsc::Receiver<Result<Event>>,
    finished: Option<(PipelineState, Option<ErrorRecord>)>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("id", &self.pid).field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl Pipeline {
    /// The pipeline id (the WS-Man CommandId).
    pub fn id(&self) -> uuid::Uuid {
        self.pid
    }

    /// The next event, as it arrives; `None` after the final state event.
    pub async fn next_event(&mut self) -> Result<Option<Event>> {
        if self.finished.is_some() {
            return Ok(None);
        }
        match self.events.recv().await {
            Some(Ok(ev)) => {
                if let Event::PipelineState { state, error, .. } = &ev
                    && state.is_finished()
                {
                    self.finished = Some((*state, error.clone()));
                }
                Ok(Some(ev))
            }
            Some(Err(e)) => {
                self.finished = Some((PipelineState::Failed, None));
                Err(e)
            }
            None => {
                self.finished = Some((PipelineState::Failed, None));
                Err(Error::protocol("the pipeline's receive loop ended without a final state"))
            }
        }
    }

    /// A handle that sends input to and stops this pipeline, usable while another task waits
    /// for its events.
    pub fn control(&self) -> PipelineControl {
        PipelineControl { pool: self.pool.clone(), pid: self.pid }
    }

    /// Sends input objects.
    pub async fn send_input(&self, values: Vec<Value>) -> Result<()> {
        self.control().send_input(values).await
    }

    /// Ends the input.
    pub async fn end_input(&self) -> Result<()> {
        self.control().end_input().await
    }

    /// Asks the server to stop the pipeline (PowerShell's Ctrl-C); the final state is Stopped.
    pub async fn stop(&self) -> Result<()> {
        self.control().stop().await
    }

    /// The next event if one has already arrived, without waiting.
    pub fn try_next_event(&mut self) -> Option<Result<Event>> {
        if self.finished.is_some() {
            return None;
        }
        match self.events.try_recv() {
            Ok(Ok(ev)) => {
                if let Event::PipelineState { state, error, .. } = &ev
                    && state.is_finished()
                {
                    self.finished = Some((*state, error.clone()));
                }
                Some(Ok(ev))
            }
            Ok(Err(e)) => {
                self.finished = Some((PipelineState::Failed, None));
                Some(Err(e))
            }
            Err(_) => None,
        }
    }

    /// Reads every remaining event and returns the collected result.
    pub async fn wait(mut self) -> Result<PipelineResult> {
        let mut r = PipelineResult::default();
        while let Some(ev) = self.next_event().await? {
            match ev {
                Event::Output { value, .. } => r.output.push(value),
                Event::Error { record, .. } => r.errors.push(record),
                Event::Warning { record, .. } => r.warnings.push(record),
                Event::Verbose { record, .. } => r.verbose.push(record),
                Event::Debug { record, .. } => r.debug.push(record),
                Event::Information { record, .. } => r.information.push(record),
                Event::Progress { record, .. } => r.progress.push(record),
                Event::PipelineState { state, error, .. } => {
                    r.state = state;
                    r.terminating_error = error;
                }
                _ => {}
            }
        }
        Ok(r)
    }
}

/// Sends input to and stops a pipeline from anywhere; cheap to clone.
#[derive(Debug, Clone)]
pub struct PipelineControl {
    pool: RunspacePool,
    pid: uuid::Uuid,
}

impl PipelineControl {
    /// Sends input objects.
    pub async fn send_input(&self, values: Vec<Value>) -> Result<()> {
        lock(&self.pool.shared.sm).send_input(self.pid, &values)?;
        self.pool.shared.flush().await
    }

    /// Ends the input.
    pub async fn end_input(&self) -> Result<()> {
        lock(&self.pool.shared.sm).end_input(self.pid)?;
        self.pool.shared.flush().await
    }

    /// Asks the server to stop the pipeline; its final state becomes Stopped.
    pub async fn stop(&self) -> Result<()> {
        self.pool.shared.signal(self.pid, STOP_SIGNAL).await
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if self.finished.is_none() {
            // Abandoned while running: stop it; the receive loop then terminates it.
            let shared = self.pool.shared.clone();
            let pid = self.pid;
            spawn_detached(async move {
                let _ = shared.signal(pid, STOP_SIGNAL).await;
            });
        }
        drop(self.task.take());
    }
}

/// Everything a finished pipeline produced.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineResult {
    /// Output objects.
    pub output: Vec<Value>,
    /// Error records.
    pub errors: Vec<ErrorRecord>,
    /// Warning records.
    pub warnings: Vec<InformationalRecord>,
    /// Verbose records.
    pub verbose: Vec<InformationalRecord>,
    /// Debug records.
    pub debug: Vec<InformationalRecord>,
    /// Information records.
    pub information: Vec<InformationRecord>,
    /// Progress records.
    pub progress: Vec<ProgressRecord>,
    /// Final state.
    pub state: PipelineState,
    /// The terminating error of a failed pipeline.
    pub terminating_error: Option<ErrorRecord>,
}

impl Default for PipelineResult {
    fn default() -> Self {
        Self {
            output: Vec::new(),
            errors: Vec::new(),
            warnings: Vec::new(),
            verbose: Vec::new(),
            debug: Vec::new(),
            information: Vec::new(),
            progress: Vec::new(),
            state: PipelineState::NotStarted,
            terminating_error: None,
        }
    }
}

impl PipelineResult {
    /// Whether the pipeline wrote errors or failed.
    pub fn had_errors(&self) -> bool {
        !self.errors.is_empty() || self.state == PipelineState::Failed
    }
}
