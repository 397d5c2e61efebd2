//! What the tasks of one runspace pool share: the WS-Man calls on its shell, the PSRP state
//! machine, the routes of pipeline events, the session key and the pool's own Receive loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::host_calls::HostJob;
use super::{Host, lock};
use crate::client::backoff::{ReceiveBackoff, pause};
use crate::client::{Body, Call, Client, SealedCall};
use crate::clixml::Value;
use crate::error::{Error, Result};
use crate::psrp::session_key::ClientKeyPair;
use crate::psrp::{self, Event, InputChunks, InputStream, PoolState, ProtocolVersion};
use crate::transport::Lane;
use crate::wsman::shells::BufferMode;
use crate::wsman::{OptionEntry, action, code, winrs};

/// Envelope size used once the server speaks protocol 2.2 or later, unless the user set one.
const LARGE_ENVELOPE: u32 = 512_000;

pub(super) type Route = mpsc::Sender<Result<Event>>;

/// What carries a pool's messages: WS-Man calls on its shell, or an out-of-process session
/// (a process's stdin/stdout, an SSH channel). The WS-Man calls of [`Shared`] (flush, input,
/// receive, signal, delete) take the other path for the latter; what needs WS-Man alone
/// (disconnect, Connect, attach) is refused with [`Error::WsmanOnly`].
#[derive(Debug, Clone, Default)]
pub(super) enum Link {
    #[default]
    Wsman,
    OutOfProc(Arc<crate::client::outofproc::Session>),
}

/// What one Receive brought: the stdout payloads as received, and whether the command
/// reported Done.
#[derive(Debug, Default)]
pub(super) struct Received {
    pub data: Vec<Vec<u8>>,
    pub done: bool,
}

pub(super) struct Shared {
    pub client: Client,
    pub link: Link,
    pub resource_uri: String,
    /// The server's id for the shell (WS-Man selector). PowerShell 2.0 servers choose their own;
    /// PSRP messages still name the pool by the client's RPID.
    pub shell_id: String,
    pub sm: Mutex<psrp::RunspacePool>,
    /// One Send (or Command) at a time per shell, in order.
    pub send_lock: tokio::sync::Mutex<()>,
    pub routes: Mutex<HashMap<uuid::Uuid, Route>>,
    /// The server's CommandId of each pipeline, where it differs from the pipeline id (servers
    /// that ignore the CommandId the client asks for).
    pub command_ids: Mutex<HashMap<uuid::Uuid, String>>,
    pub waiters: Mutex<HashMap<i64, oneshot::Sender<Value>>>,
    pub key_waiters: Mutex<Vec<oneshot::Sender<Result<()>>>>,
    /// A key exchange was started (by us or at the server's request); later callers wait for it.
    pub key_exchange_started: AtomicBool,
    pub host: Option<Arc<dyn Host>>,
    /// Host calls go to one worker per pool, so the host sees them in the order they came.
    pub host_calls: mpsc::Sender<HostJob>,
    /// Host calls of each pipeline that the host has not finished yet; its final state waits
    /// for them, so a caller never sees a result before the host saw every call that led to it.
    pub host_pending: Mutex<HashMap<uuid::Uuid, Vec<oneshot::Receiver<()>>>>,
    pub key_pair: Mutex<Option<ClientKeyPair>>,
    pub envelope: AtomicU32,
    /// Whether the envelope may be raised for a protocol ≥ 2.2 server (no size set by the user).
    pub raise_envelope: bool,
    pub closed: AtomicBool,
    pub private_data: Mutex<Option<Value>>,
    pub pool_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What a disconnect asks the server for (the pool's configuration).
    pub idle_timeout: Option<std::time::Duration>,
    pub buffer_mode: Option<BufferMode>,
    /// Set from just before Disconnect until Reconnect: the Receive loops stop (keeping what
    /// their last Receive brought) instead of posting another Receive.
    pub disconnected: AtomicBool,
    /// The pool was attached with Connect by this client: attaching to one of its pipelines
    /// needs a command-level Connect first (MS-WSMV 3.1.4.15).
    pub via_connect: AtomicBool,
    /// The Receive loops running now: None for the pool's, Some(pid) for a pipeline's.
    pub live_loops: Mutex<std::collections::HashSet<Option<uuid::Uuid>>>,
    pub loops_changed: tokio::sync::Notify,
    /// Pipelines that have run for [`WATCH_POOL_AFTER`] and not finished: while there are any,
    /// the pool's own Receive runs too (see [`Shared::pool_receive_needed`]).
    pub long_pipelines: AtomicUsize,
    /// Set when a Connect attached the pool: Windows then sends RUNSPACEPOOL_STATE on the
    /// pool's stream, which the pool's Receive collects.
    pub awaiting_pool_state: AtomicBool,
    /// Pipelines whose final state went to their reader and whose Signal Terminate has not
    /// been answered yet: closing the pool waits for those Signals rather than open a
    /// connection for its Delete ([`Shared::releases_done`]).
    pub releasing: Mutex<std::collections::HashSet<uuid::Uuid>>,
    pub released: tokio::sync::Notify,
}

/// How long a pipeline runs before the pool's own Receive starts beside it, for what the server
/// may send at pool level meanwhile (a request for the client's public key before it sends a
/// SecureString, pool-level host calls). Short invocations never start it, so they and the
/// pool's Delete share one connection.
pub(super) const WATCH_POOL_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// Marks one Receive loop as running while it lives.
pub(super) struct LoopGuard {
    shared: Arc<Shared>,
    key: Option<uuid::Uuid>,
    armed: bool,
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        if self.armed {
            lock(&self.shared.live_loops).remove(&self.key);
            self.shared.loops_changed.notify_waiters();
        }
    }
}

/// Counts a pipeline among [`Shared::long_pipelines`] while it lives.
pub(super) struct LongPipeline(Arc<Shared>);

impl Drop for LongPipeline {
    fn drop(&mut self) {
        self.0.long_pipelines.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What [`Shared::new`] needs besides the state machine.
pub(super) struct SharedParts {
    pub client: Client,
    pub link: Link,
    pub resource_uri: String,
    pub shell_id: String,
    pub host: Option<Arc<dyn Host>>,
    pub host_calls: mpsc::Sender<HostJob>,
    pub key_pair: Option<ClientKeyPair>,
    pub envelope: u32,
    pub raise_envelope: bool,
    pub idle_timeout: Option<std::time::Duration>,
    pub buffer_mode: Option<BufferMode>,
}

impl SharedParts {
    pub fn new(
        client: &Client,
        config: &super::PoolConfig,
        resource_uri: String,
        shell_id: String,
        host_calls: mpsc::Sender<HostJob>,
    ) -> Self {
        Self {
            client: client.clone(),
            link: Link::Wsman,
            resource_uri,
            shell_id,
            host: config.host.clone(),
            host_calls,
            key_pair: config.key_pair.clone(),
            envelope: client.envelope_size(),
            raise_envelope: config.raise_envelope_size && !client.envelope_size_is_settled(),
            idle_timeout: config.idle_timeout,
            buffer_mode: config.buffer_mode,
        }
    }
}

/// A pipeline id as WS-Man writes a CommandId.
pub(super) fn command_id_text(pid: uuid::Uuid) -> String {
    pid.as_hyphenated().to_string().to_uppercase()
}

/// A pipeline's input chunks on their way out: the first sealed ahead, the rest to follow.
#[derive(Debug)]
pub struct InputSends {
    first: Option<SealedCall>,
    chunks: InputChunks,
}

impl Shared {
    pub fn new(parts: SharedParts, sm: psrp::RunspacePool) -> Self {
        Self {
            client: parts.client,
            link: parts.link,
            resource_uri: parts.resource_uri,
            shell_id: parts.shell_id,
            sm: Mutex::new(sm),
            send_lock: tokio::sync::Mutex::new(()),
            routes: Mutex::new(HashMap::new()),
            command_ids: Mutex::new(HashMap::new()),
            waiters: Mutex::new(HashMap::new()),
            key_waiters: Mutex::new(Vec::new()),
            key_exchange_started: AtomicBool::new(false),
            host: parts.host,
            host_calls: parts.host_calls,
            host_pending: Mutex::new(HashMap::new()),
            key_pair: Mutex::new(parts.key_pair),
            envelope: AtomicU32::new(parts.envelope),
            raise_envelope: parts.raise_envelope,
            closed: AtomicBool::new(false),
            private_data: Mutex::new(None),
            pool_task: Mutex::new(None),
            idle_timeout: parts.idle_timeout,
            buffer_mode: parts.buffer_mode,
            disconnected: AtomicBool::new(false),
            via_connect: AtomicBool::new(false),
            live_loops: Mutex::new(std::collections::HashSet::new()),
            loops_changed: tokio::sync::Notify::new(),
            long_pipelines: AtomicUsize::new(0),
            awaiting_pool_state: AtomicBool::new(false),
            releasing: Mutex::new(std::collections::HashSet::new()),
            released: tokio::sync::Notify::new(),
        }
    }

    /// Registers a Receive loop for the pool (`None`) or a pipeline; None when one is already
    /// running for it (a loop respawned by a reconnect while the old one was still ending).
    pub fn loop_guard(self: &Arc<Self>, key: Option<uuid::Uuid>) -> Option<LoopGuard> {
        lock(&self.live_loops).insert(key).then(|| LoopGuard { shared: self.clone(), key, armed: true })
    }

    /// Whether the pool's own Receive has something to wait for: an answer to a pool call, the
    /// session key, or what the server may send at pool level while a long pipeline runs. The
    /// pool loop runs only then, so an idle pool holds no connection with a pending Receive.
    pub fn pool_receive_needed(&self) -> bool {
        // Out of process the pool's messages come whether asked for or not: its loop reads
        // them for as long as the pool is open, holding nothing on the server.
        self.oop().is_some()
            || !lock(&self.waiters).is_empty()
            || !lock(&self.key_waiters).is_empty()
            || (self.key_exchange_started.load(Ordering::SeqCst) && lock(&self.sm).session_key().is_none())
            || self.long_pipelines.load(Ordering::SeqCst) > 0
            || self.awaiting_pool_state.load(Ordering::SeqCst)
    }

    /// Starts the pool's own Receive loop unless it runs already. Call it after registering
    /// what the loop is to wait for (a waiter, a long pipeline): the loop decides to stop under
    /// the same lock, so it either sees that or has stopped and is started again here.
    pub fn watch_pool(self: &Arc<Self>) {
        if self.closed.load(Ordering::SeqCst) || self.disconnected.load(Ordering::SeqCst) {
            return;
        }
        let mut live = lock(&self.live_loops);
        if !live.insert(None) {
            return;
        }
        let guard = LoopGuard { shared: self.clone(), key: None, armed: true };
        let task = tokio::spawn(self.clone().pool_receive_loop(guard));
        drop(live);
        if let Some(old) = lock(&self.pool_task).replace(task) {
            // A loop that decided to stop; it has nothing left to do.
            drop(old);
        }
    }

    /// Counts a pipeline as long-running from now until the returned guard drops, and makes
    /// sure the pool's Receive runs meanwhile.
    pub fn long_pipeline(self: &Arc<Self>) -> LongPipeline {
        self.long_pipelines.fetch_add(1, Ordering::SeqCst);
        self.watch_pool();
        LongPipeline(self.clone())
    }

    /// Waits until every Receive loop has stopped (after a disconnect).
    pub async fn loops_stopped(&self) {
        loop {
            let changed = self.loops_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if lock(&self.live_loops).is_empty() {
                return;
            }
            changed.await;
        }
    }

    /// The out-of-process session, when the pool is not on WS-Man.
    pub fn oop(&self) -> Option<&Arc<crate::client::outofproc::Session>> {
        match &self.link {
            Link::Wsman => None,
            Link::OutOfProc(s) => Some(s),
        }
    }

    /// Refuses `operation` on a pool that is not on WS-Man.
    pub fn require_wsman(&self, operation: &'static str) -> Result<()> {
        match &self.link {
            Link::Wsman => Ok(()),
            Link::OutOfProc(_) => Err(Error::WsmanOnly { operation, transport: self.client.transport_name() }),
        }
    }

    pub async fn call(&self, action: &str, options: &[OptionEntry], body: &str) -> Result<crate::wsman::Reply> {
        self.require_wsman("a WS-Man request")?;
        self.client
            .request(&Call {
                action,
                resource_uri: &self.resource_uri,
                shell_id: Some(&self.shell_id),
                options,
                body: Body::Xml(body),
                operation_timeout: None,
                max_envelope_size: Some(self.envelope.load(Ordering::Relaxed)),
            })
            .await
    }

    /// The WS-Man CommandId of a pipeline: the server's, when it chose its own.
    pub fn command_id(&self, pid: uuid::Uuid) -> String {
        lock(&self.command_ids).get(&pid).cloned().unwrap_or_else(|| command_id_text(pid))
    }

    /// Sends every queued chunk, in queue order. The caller holds `send_lock`.
    pub async fn flush_locked(&self) -> Result<()> {
        loop {
            let next = lock(&self.sm).next_outgoing();
            let Some(o) = next else { return Ok(()) };
            if let Some(oop) = self.oop() {
                let stream = crate::psrp::outofproc::DataStream::of(o.stream);
                oop.send_data(o.pid.unwrap_or_else(uuid::Uuid::nil), stream, &[&o.data]).await?;
                continue;
            }
            let cmd = o.pid.map(|p| self.command_id(p));
            let pieces = [o.data.as_slice()];
            self.client.request(&self.send_call(o.stream, cmd.as_deref(), &pieces)).await?;
        }
    }

    pub async fn flush(&self) -> Result<()> {
        let _g = self.send_lock.lock().await;
        self.flush_locked().await
    }

    /// The Send of one chunk, its base64 written from `pieces` (the chunk's bytes) straight
    /// into the envelope.
    fn send_call<'a>(&'a self, stream: InputStream, cmd: Option<&'a str>, pieces: &'a [&'a [u8]]) -> Call<'a> {
        Call {
            action: action::SEND,
            resource_uri: &self.resource_uri,
            shell_id: Some(&self.shell_id),
            options: &[],
            body: Body::Send { stream: stream.name(), command_id: cmd, pieces, end: false },
            operation_timeout: None,
            max_envelope_size: Some(self.envelope.load(Ordering::Relaxed)),
        }
    }

    /// Builds and seals the first of a pipeline's input chunks on the stream's `lane` (the
    /// previous input may still be in flight on it); [`Shared::post_input`] sends them all.
    pub async fn seal_input(&self, lane: &Lane, chunks: InputChunks) -> Result<InputSends> {
        let first = if chunks.is_empty() || self.oop().is_some() {
            None
        } else {
            let cmd = self.command_id(chunks.pid);
            let pieces = chunks.pieces(0);
            Some(self.client.seal_on_lane(lane, &self.send_call(InputStream::Stdin, Some(&cmd), &pieces)).await?)
        };
        Ok(InputSends { first, chunks })
    }

    /// Sends input chunks sealed ahead by [`Shared::seal_input`], in order, one at a time on
    /// the lane; each next chunk is built (its base64 written from the fragments' headers and
    /// the messages' bytes where they lie) and sealed while the one before is in flight.
    pub async fn post_input(&self, lane: &Lane, sends: InputSends) -> Result<()> {
        let InputSends { first, chunks } = sends;
        if let Some(oop) = self.oop() {
            return Self::post_input_oop(oop, &chunks).await;
        }
        let cmd = self.command_id(chunks.pid);
        let pieces: Vec<Vec<&[u8]>> = (0..chunks.len()).map(|i| chunks.pieces(i)).collect();
        let calls: Vec<Call<'_>> = pieces.iter().map(|p| self.send_call(InputStream::Stdin, Some(&cmd), p)).collect();
        self.client.post_in_order(lane, first, &calls).await
    }

    /// Sends a pipeline's input chunks out of process, one Data each, each after the DataAck
    /// of the one before.
    async fn post_input_oop(oop: &crate::client::outofproc::Session, chunks: &InputChunks) -> Result<()> {
        for i in 0..chunks.len() {
            oop.send_data(chunks.pid, crate::psrp::outofproc::DataStream::Default, &chunks.pieces(i)).await?;
        }
        Ok(())
    }

    /// One Receive for the pool (`pid` None) or a pipeline. Returns what it brought, checked
    /// but not yet decoded: [`Shared::deliver`] decodes it at the pace of its readers.
    pub async fn receive(&self, pid: Option<uuid::Uuid>) -> Result<Received> {
        if let Some(oop) = self.oop() {
            let data = oop.receive(pid.unwrap_or_else(uuid::Uuid::nil)).await?;
            return Ok(Received { data, done: false });
        }
        let cmd = pid.map(|p| self.command_id(p));
        let body = winrs::receive_body("stdout", cmd.as_deref());
        let opts = [OptionEntry::new("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "TRUE")];
        let reply = match self.call(action::RECEIVE, &opts, &body).await {
            Ok(r) => r,
            Err(Error::Fault(f)) if f.is_operation_timeout() => return Ok(Received::default()),
            Err(e) => return Err(e),
        };
        let out = winrs::parse_receive(&reply)?;
        // Another pipeline's data (or a pipeline's data on the pool's Receive) would be fed to
        // the wrong reader, or reassembled into the wrong message: refuse the whole reply.
        out.check_command(cmd.as_deref())?;
        let done = out.state == Some(winrs::CommandState::Done);
        let data = out.streams.into_iter().filter(|s| s.name == "stdout" && !s.data.is_empty()).map(|s| s.data);
        Ok(Received { data: data.collect(), done })
    }

    /// Decodes what a Receive brought one PSRP fragment at a time, handing each completed
    /// message's event on before decoding the next. A reader that does not keep up holds the
    /// decoding: at most one message's events are decoded beyond what its buffer holds (the
    /// rest of the reply waits as received bytes, bounded by the reply size limit). The
    /// framing of the whole reply is checked first, so a malformed reply delivers nothing.
    pub async fn deliver(self: &Arc<Self>, pid: Option<uuid::Uuid>, received: &Received) -> Result<()> {
        let mut fragments = Vec::new();
        for data in &received.data {
            fragments.extend(psrp::fragment::split_fragments(data)?);
        }
        for fragment in fragments {
            let events = lock(&self.sm).receive(pid, fragment)?;
            if !events.is_empty() {
                self.dispatch(events).await?;
            }
        }
        Ok(())
    }

    /// Delivers events in order: pipeline events to their reader, pool events here.
    pub async fn dispatch(self: &Arc<Self>, events: Vec<Event>) -> Result<()> {
        for ev in events {
            match event_pid(&ev) {
                Some(pid) => {
                    if let Event::HostCall { pid, call } = &ev {
                        let (done, finished) = oneshot::channel();
                        let job = HostJob { pid: *pid, call: call.clone(), done: Some(done) };
                        if self.host_calls.send(job).await.is_ok()
                            && let Some(p) = pid
                        {
                            let mut pending = lock(&self.host_pending);
                            let list = pending.entry(*p).or_default();
                            // Only calls still in the host's hands are kept.
                            list.retain_mut(|r| matches!(r.try_recv(), Err(oneshot::error::TryRecvError::Empty)));
                            list.push(finished);
                        }
                        // Writes and progress also reach the reader below; calls that wait for an
                        // answer only go to the host.
                        if !call.method.is_void() {
                            continue;
                        }
                    }
                    if let Event::PipelineState { state, .. } = &ev
                        && state.is_finished()
                    {
                        self.host_calls_finished(pid).await;
                        // Its Signal Terminate follows; a close from the reader waits for it.
                        lock(&self.releasing).insert(pid);
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

    /// Waits until the host has handled every call the pipeline made.
    async fn host_calls_finished(&self, pid: uuid::Uuid) {
        let pending = lock(&self.host_pending).remove(&pid).unwrap_or_default();
        for done in pending {
            // An error means the worker is gone (the pool is being dropped): nothing to wait for.
            let _ = done.await;
        }
    }

    async fn pool_event(self: &Arc<Self>, ev: Event) -> Result<()> {
        match ev {
            Event::SessionCapability(cap) => {
                tracing::debug!(protocol = cap.protocol_version, "server capability");
                let v2_2 = lock(&self.sm).protocol_version().is_some_and(|p| p >= ProtocolVersion::V2_2);
                if v2_2 && self.raise_envelope && self.envelope.load(Ordering::Relaxed) < LARGE_ENVELOPE {
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
                let _ = self.host_calls.send(HostJob { pid: None, call, done: None }).await;
            }
            Event::PoolState { state, error } => {
                self.awaiting_pool_state.store(false, Ordering::SeqCst);
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

    /// Runs the session-key exchange, or waits for the one already under way.
    pub async fn ensure_key(self: &Arc<Self>) -> Result<()> {
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
        self.watch_pool();
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

    /// The pool's own Receive loop, started by [`Shared::watch_pool`] with its registration in
    /// `live_loops`. It stops once nothing needs it (deciding under the `live_loops` lock), and
    /// when the pool is closed or disconnected.
    async fn pool_receive_loop(self: Arc<Self>, mut running: LoopGuard) {
        let mut backoff = ReceiveBackoff::new(self.client.config().operation_timeout);
        while !self.closed.load(Ordering::Relaxed) && !self.disconnected.load(Ordering::SeqCst) {
            {
                let mut live = lock(&self.live_loops);
                if !self.pool_receive_needed() {
                    live.remove(&None);
                    running.armed = false;
                    drop(live);
                    self.loops_changed.notify_waiters();
                    return;
                }
            }
            let sent = tokio::time::Instant::now();
            let r = async {
                let received = self.receive(None).await?;
                self.deliver(None, &received).await?;
                Ok::<_, Error>(received.data.is_empty())
            }
            .await;
            if let Ok(idle) = r {
                let wait = backoff.after_receive(idle, sent.elapsed());
                if !wait.is_zero() {
                    pause(wait, || self.closed.load(Ordering::Relaxed) || self.disconnected.load(Ordering::SeqCst))
                        .await;
                }
                continue;
            }
            if let Err(e) = r {
                if self.disconnected.load(Ordering::SeqCst) {
                    // The shell was disconnected under this Receive (its fault says so).
                    tracing::debug!(error = %e, "pool receive stopped by the disconnect");
                } else if !self.closed.load(Ordering::Relaxed) {
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

    /// The Signal Terminate of a finished pipeline went out and was answered (or will not go).
    pub fn released(&self, pid: uuid::Uuid) {
        if lock(&self.releasing).remove(&pid) {
            self.released.notify_waiters();
        }
    }

    /// Waits (up to `limit`) for the Signals Terminate of pipelines that finished: each is one
    /// short round trip already under way (or about to be) on the connection the pipeline's last
    /// Receive freed, where a Delete sent beside it would open another connection and log on.
    /// It also keeps the order the protocol shows: Signal, then Delete.
    pub async fn releases_done(&self, limit: std::time::Duration) {
        let settled = async {
            loop {
                let released = self.released.notified();
                tokio::pin!(released);
                released.as_mut().enable();
                if lock(&self.releasing).is_empty() {
                    return;
                }
                released.await;
            }
        };
        let _ = tokio::time::timeout(limit, settled).await;
    }

    pub async fn delete(&self) -> Result<()> {
        if let Some(oop) = self.oop() {
            // A pool that never opened (an open cut short) has nothing to close on the server.
            if matches!(lock(&self.sm).state(), PoolState::Opened | PoolState::Closing) {
                return oop.close().await;
            }
            oop.shutdown().await;
            return Ok(());
        }
        match self.call(action::DELETE, &[], "").await {
            Ok(_) => Ok(()),
            Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn signal(&self, pid: uuid::Uuid, code_uri: &str) -> Result<()> {
        if let Some(oop) = self.oop() {
            // Out of process, stopping is a Signal and releasing a finished pipeline a Close.
            return if code_uri == winrs::signal::PS_TERMINATE {
                oop.close_pipeline(pid).await
            } else {
                oop.signal(pid).await
            };
        }
        let body = winrs::signal_body(&self.command_id(pid), code_uri);
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
