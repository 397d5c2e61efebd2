//! The out-of-process transport's driver (MS-PSRP over a byte stream, PROTOCOL.md §D): the
//! packets of [`crate::psrp::outofproc`] over any carrier that gives a byte stream each way, a
//! local process's stdin/stdout ([`process`]) or an SSH subsystem channel.
//!
//! One [`Session`] carries one runspace pool. Its reader task reads the server's lines and
//! sorts them: acknowledgements release their waiters (each checked against what is
//! outstanding), `Data` goes to the inbox of the pool (nil GUID) or of its pipeline, whose
//! receive loop in `client::powershell` decodes it as it decodes a WS-Man Receive. The reader
//! never waits for a consumer (one stream carries every pipeline's data and every
//! acknowledgement: a pipeline nobody reads must not stall the others); what waits undecoded
//! is bounded for the whole session ([`SESSION_BUDGET`]). Lines go out through one writer task,
//! whole and in the order they were queued, each write bounded by the session's ack timeout; a GUID's
//! next `Data` waits (as long, at most) for the `DataAck` of its previous one, as PowerShell's
//! client does. A caller that stops waiting never leaves half a line or a GUID without its
//! permit. When the stream ends, the carrier fails or the server writes
//! garbage, the session is dead: every waiter and every inbox gets the one typed error that
//! says why (the process's exit status and stderr, or what was wrong with the line), and the
//! carrier is shut down (the process killed and reaped). Nothing waits without a bound on a
//! dead session.
//!
//! The carrier seam: a carrier produces an [`OopStream`] (a reader, a writer, and a [`Peer`]
//! that names the other end, explains its failures and shuts it down); [`open_stream`] picks
//! the carrier from [`ClientConfig::carrier`](super::ClientConfig::carrier).

pub mod process;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};

pub use process::ProcessOptions;

use crate::error::{Error, Result};
use crate::psrp::outofproc::{
    DEFAULT_FRAGMENT_SIZE, DataStream, Decoder, GuidPacket, Packet, encode_data, encode_guid,
};

/// How long an acknowledgement (and a write) is waited for, in operation timeouts: three of the
/// default 20 s make the 60 s PowerShell's client gives a Signal and a Close.
pub const ACK_TIMEOUTS: u32 = 3;

/// The most data one server line may carry: PowerShell writes one fragment per line,
/// psrpcore-based servers (the loopback endpoint's out-of-process mode) pack up to four.
pub const MAX_DATA_PER_LINE: usize = 8 * DEFAULT_FRAGMENT_SIZE;

/// Bytes of undecoded Data the session holds for readers that have not taken them (over every
/// pipeline): past it the session fails with [`Error::OutputTooLarge`] rather than stall the
/// stream or hold more.
pub const SESSION_BUDGET: usize = 256 << 20;

/// How a client reaches PowerShell.
#[derive(Debug, Clone, Default)]
pub enum Carrier {
    /// WS-Management over HTTP(S) (WinRM), the default.
    #[default]
    Wsman,
    /// A local process speaking the out-of-process transport on its stdin/stdout
    /// (`pwsh -NoLogo -s` by default).
    Process(ProcessOptions),
    /// An SSH server's PowerShell subsystem (`Enter-PSSession -HostName`), reached by
    /// [`crate::transport::ssh::open_subsystem`].
    Ssh(Box<crate::transport::ssh::SshOptions>),
}

impl Carrier {
    /// The transport's name, as the bindings and the audit events give it.
    pub fn name(&self) -> &'static str {
        match self {
            Carrier::Wsman => "wsman",
            Carrier::Process(_) => "process",
            Carrier::Ssh(_) => "ssh",
        }
    }

    /// Whether this is WS-Man (cmd shells, disconnect and the other WS-Man-only features).
    pub fn is_wsman(&self) -> bool {
        matches!(self, Carrier::Wsman)
    }

    /// What the client's `url()` and the audit events name as the endpoint.
    pub fn endpoint(&self) -> Option<String> {
        match self {
            Carrier::Wsman => None,
            Carrier::Process(p) => Some(format!("process:{}", p.executable)),
            Carrier::Ssh(o) => Some(format!("ssh://{}@{}/{}", o.username, o.address(), o.subsystem)),
        }
    }

    /// Checks the carrier's options without starting anything.
    pub fn validate(&self) -> Result<()> {
        match self {
            Carrier::Wsman => Ok(()),
            Carrier::Process(p) => p.validate(),
            Carrier::Ssh(o) => o.validate(),
        }
    }
}

/// The other end of a carrier: names it, explains why it ended, shuts it down.
pub trait Peer: Send + Sync + 'static {
    /// The other end for messages and audit events (`process pwsh (pid 4242)`).
    fn describe(&self) -> String;

    /// Called once the stream ended or broke: what the carrier knows about why (the exit
    /// status, the last stderr lines), escaped for a terminal, or None. May wait briefly.
    fn ended(&self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>>;

    /// Ends the carrier (kills and reaps the process, closes the channel). Called once the
    /// session is over, whether it ended well or not; must not wait without a bound.
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// A byte stream each way and its other end.
pub struct OopStream {
    /// What the server writes.
    pub reader: Box<dyn AsyncRead + Send + Unpin>,
    /// What the server reads.
    pub writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// The other end.
    pub peer: Arc<dyn Peer>,
}

impl OopStream {
    /// A stream over one duplex byte stream (an SSH channel, a socket).
    pub fn duplex<S>(stream: S, peer: Arc<dyn Peer>) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (reader, writer) = tokio::io::split(stream);
        Self { reader: Box::new(reader), writer: Box::new(writer), peer }
    }
}

impl std::fmt::Debug for OopStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OopStream").field("peer", &self.peer.describe()).finish_non_exhaustive()
    }
}

/// Opens the carrier `carrier` names.
pub async fn open_stream(carrier: &Carrier) -> Result<OopStream> {
    match carrier {
        Carrier::Wsman => Err(Error::InvalidConfig("the WS-Man transport has no out-of-process stream".into())),
        Carrier::Process(options) => process::spawn(options).await,
        Carrier::Ssh(options) => {
            let (stream, info) = crate::transport::ssh::open_subsystem(options).await?;
            let status = stream.status();
            Ok(OopStream::duplex(stream, Arc::new(SshPeer { info, status })))
        }
    }
}

/// The SSH server's subsystem on the other end of a channel.
struct SshPeer {
    info: crate::transport::ssh::SshInfo,
    status: crate::transport::ssh::SshChannelStatus,
}

impl Peer for SshPeer {
    fn describe(&self) -> String {
        format!(
            "SSH subsystem {:?} of {}@{}",
            crate::text::printable(&self.info.subsystem),
            crate::text::printable(&self.info.user),
            self.info.address
        )
    }

    fn ended(&self) -> Pin<Box<dyn Future<Output = Option<String>> + Send + '_>> {
        Box::pin(async move {
            // The exit status comes before the channel's close.
            let _ = tokio::time::timeout(Duration::from_secs(3), self.status.closed()).await;
            let said = self.status.describe();
            (!said.is_empty()).then_some(said)
        })
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            self.status.close();
            let _ = tokio::time::timeout(Duration::from_secs(3), self.status.closed()).await;
        })
    }
}

/// Why a session ended, kept to give every later caller the same error.
#[derive(Debug, Clone)]
enum Dead {
    /// The pool was closed (CloseAck for the nil GUID) and the stream ended after it.
    Closed,
    /// The server broke the protocol.
    Protocol(String),
    /// The carrier ended or failed.
    Transport(String),
    /// The server did not acknowledge or read within the session's ack timeout.
    Timeout(String),
    /// More undecoded data than [`SESSION_BUDGET`] waited for its readers.
    TooLarge,
}

impl Dead {
    fn error(&self) -> Error {
        match self {
            Dead::Closed => Error::Closed("runspace pool"),
            Dead::Protocol(m) => Error::Protocol(m.clone()),
            Dead::Transport(m) => Error::Transport { message: m.clone(), status: None },
            Dead::Timeout(m) => Error::Timeout(m.clone()),
            Dead::TooLarge => Error::OutputTooLarge { limit: SESSION_BUDGET as u64 },
        }
    }
}

/// One GUID's undecoded Data, in order (bounded with the session's other inboxes by
/// [`SESSION_BUDGET`]).
struct Inbox {
    tx: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Vec<u8>>>,
}

impl Inbox {
    fn new() -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Self { tx: Mutex::new(Some(tx)), rx: tokio::sync::Mutex::new(rx) })
    }

    fn close(&self) {
        lock(&self.tx).take();
    }
}

/// Outstanding Commands, Signals or Closes of one GUID, and who waits for their acks.
#[derive(Default)]
struct AckWait {
    waiters: std::collections::VecDeque<oneshot::Sender<()>>,
}

#[derive(Default)]
struct State {
    dead: Option<Dead>,
    /// One permit while a GUID may send Data; taken by a Data, given back by its DataAck.
    gates: HashMap<uuid::Uuid, Arc<Semaphore>>,
    acks: HashMap<(GuidPacket, uuid::Uuid), AckWait>,
    inboxes: HashMap<uuid::Uuid, Arc<Inbox>>,
    /// The pipelines released last: what comes late for one of them (Data, a DataAck after
    /// the CloseAck) is dropped, where a GUID of no pipeline of the session is a protocol error.
    released: Released,
    /// The pool's Close went out.
    closing: bool,
    /// Its CloseAck came.
    closed: bool,
}

/// How many released pipelines a session remembers (16 bytes each, twice): late packets come
/// right after a release, and a session running pipelines for days stays bounded.
const RELEASED_KEPT: usize = 1024;

/// The GUIDs of the pipelines released last, oldest forgotten first.
#[derive(Default)]
struct Released {
    order: VecDeque<uuid::Uuid>,
    set: HashSet<uuid::Uuid>,
}

impl Released {
    fn add(&mut self, guid: uuid::Uuid) {
        if !self.set.insert(guid) {
            return;
        }
        self.order.push_back(guid);
        if self.order.len() > RELEASED_KEPT
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
    }

    fn contains(&self, guid: &uuid::Uuid) -> bool {
        self.set.contains(guid)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the reader task and the callers share.
struct Core {
    state: Mutex<State>,
    peer: Arc<dyn Peer>,
    /// Notified when the session dies.
    died: tokio::sync::Notify,
    /// Undecoded Data bytes in the inboxes (given back as the readers take them).
    held: std::sync::atomic::AtomicUsize,
    /// How long an acknowledgement or a write is waited for before the session is ended.
    ack_timeout: Duration,
}

impl Core {
    fn dead_error(&self) -> Option<Error> {
        lock(&self.state).dead.as_ref().map(Dead::error)
    }

    /// Marks the session dead (the first reason wins) and fails everything that waits.
    fn die(&self, why: Dead) {
        let mut st = lock(&self.state);
        if st.dead.is_none() {
            match &why {
                Dead::Closed => tracing::debug!(peer = self.peer.describe(), "out-of-process session closed"),
                other => {
                    tracing::warn!(peer = self.peer.describe(), error = %other.error(), "out-of-process session failed")
                }
            }
            st.dead = Some(why);
        }
        for gate in st.gates.values() {
            gate.close();
        }
        st.acks.clear();
        for inbox in st.inboxes.values() {
            inbox.close();
        }
        drop(st);
        self.died.notify_waiters();
    }

    /// Marks the session dead for a failure of the server's and ends the carrier (in the
    /// background: a caller that gives up must not keep it).
    fn fail(self: &Arc<Self>, why: Dead) {
        self.die(why);
        let core = self.clone();
        tokio::spawn(async move { core.peer.shutdown().await });
    }

    fn gate(&self, guid: uuid::Uuid) -> Result<Arc<Semaphore>> {
        let mut st = lock(&self.state);
        if let Some(d) = &st.dead {
            return Err(d.error());
        }
        Ok(st.gates.entry(guid).or_insert_with(|| Arc::new(Semaphore::new(1))).clone())
    }

    /// One line from the server; never waits.
    fn take(&self, packet: Packet) -> std::result::Result<(), String> {
        match packet {
            Packet::Data { guid, data, .. } => {
                let inbox = {
                    let st = lock(&self.state);
                    match st.inboxes.get(&guid) {
                        Some(i) => i.clone(),
                        None if st.released.contains(&guid) => {
                            tracing::debug!(pipeline = %guid, bytes = data.len(), "data for a released pipeline dropped");
                            return Ok(());
                        }
                        None => {
                            return Err(format!(
                                "the server sent Data for {guid}, which is no pipeline of this session"
                            ));
                        }
                    }
                };
                if data.is_empty() {
                    return Ok(());
                }
                // Never waits: the readers give the bytes back as they take them.
                use std::sync::atomic::Ordering::SeqCst;
                let len = data.len();
                if self.held.fetch_add(len, SeqCst) + len > SESSION_BUDGET {
                    return Err(TOO_LARGE.into());
                }
                match lock(&inbox.tx).as_ref() {
                    Some(tx) if tx.send(data).is_ok() => {}
                    // A released pipeline's inbox drops what comes late.
                    _ => {
                        self.held.fetch_sub(len, SeqCst);
                    }
                }
                Ok(())
            }
            Packet::Guid(GuidPacket::DataAck, guid) => {
                let st = lock(&self.state);
                match st.gates.get(&guid) {
                    Some(gate) if gate.available_permits() == 0 => {
                        gate.add_permits(1);
                        Ok(())
                    }
                    // A pipeline released already: pwsh handles packets on a thread pool, so its
                    // last DataAck may come after the CloseAck (PowerShell's client ignores it).
                    None if st.released.contains(&guid) => Ok(()),
                    _ => Err(format!("the server acknowledged Data for {guid}, which has none outstanding")),
                }
            }
            Packet::Guid(kind, guid) => {
                let sent = match kind {
                    GuidPacket::CommandAck => GuidPacket::Command,
                    GuidPacket::SignalAck => GuidPacket::Signal,
                    GuidPacket::CloseAck => GuidPacket::Close,
                    // The decoder refuses client packets from the server.
                    other => return Err(format!("the server sent <{}>", other.name())),
                };
                let mut st = lock(&self.state);
                let waiter = st.acks.get_mut(&(sent, guid)).and_then(|w| w.waiters.pop_front());
                let Some(waiter) = waiter else {
                    if st.released.contains(&guid) {
                        return Ok(());
                    }
                    return Err(format!(
                        "the server sent <{} PSGuid='{guid}'> for no {} of the client",
                        kind.name(),
                        sent.name()
                    ));
                };
                if kind == GuidPacket::CloseAck && guid.is_nil() {
                    st.closed = true;
                }
                let _ = waiter.send(());
                Ok(())
            }
        }
    }
}

/// The reader's refusal when the inboxes pass [`SESSION_BUDGET`].
const TOO_LARGE: &str = "\u{0}too large";

/// One out-of-process session: one runspace pool over one carrier.
pub struct Session {
    core: Arc<Core>,
    /// Whole lines for the writer task; dropped to end the stream (EOF to the server).
    lines: Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("peer", &self.core.peer.describe()).finish_non_exhaustive()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.reader).take() {
            task.abort();
        }
        if let Some(task) = lock(&self.writer).take() {
            task.abort();
        }
        // The carrier's own drop kills what is left (a process is killed on drop).
        self.core.die(Dead::Closed);
    }
}

impl Session {
    /// Starts the reader task over `stream`; the pool's inbox (nil GUID) is ready. An
    /// acknowledgement (and a write) is waited for `ack_timeout` at most ([`ACK_TIMEOUTS`]
    /// operation timeouts): a server that takes longer is ended with [`Error::Timeout`].
    pub fn start(stream: OopStream, ack_timeout: Duration) -> Arc<Self> {
        let OopStream { reader, writer, peer } = stream;
        let core = Arc::new(Core {
            state: Mutex::new(State::default()),
            peer,
            died: tokio::sync::Notify::new(),
            held: std::sync::atomic::AtomicUsize::new(0),
            ack_timeout,
        });
        lock(&core.state).inboxes.insert(uuid::Uuid::nil(), Inbox::new());
        let task = tokio::spawn(read_loop(core.clone(), reader));
        let (tx, rx) = mpsc::unbounded_channel();
        let writing = tokio::spawn(write_loop(core.clone(), writer, rx));
        Arc::new(Self {
            core,
            lines: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writing)),
            reader: Mutex::new(Some(task)),
        })
    }

    /// The other end, for messages and audit events.
    pub fn describe(&self) -> String {
        self.core.peer.describe()
    }

    /// The session's error, once it is dead.
    pub fn dead_error(&self) -> Option<Error> {
        self.core.dead_error()
    }

    /// Queues one whole line for the writer task; it does not wait, so a caller that stops
    /// waiting afterwards leaves nothing half written. A write that fails or does not finish
    /// within the session's ack timeout ends the session with its error.
    fn write_line(&self, line: Vec<u8>) -> Result<()> {
        if let Some(e) = self.core.dead_error() {
            return Err(e);
        }
        match lock(&self.lines).as_ref() {
            Some(tx) if tx.send(line).is_ok() => Ok(()),
            _ => Err(self.gone()),
        }
    }

    /// Sends one Data line for `guid` (nil: the pool), its base64 written from `pieces`, after
    /// the DataAck of the GUID's previous Data (waited for the session's ack timeout at most: a server
    /// that does not acknowledge ends the session).
    pub async fn send_data(&self, guid: uuid::Uuid, stream: DataStream, pieces: &[&[u8]]) -> Result<()> {
        let gate = self.core.gate(guid)?;
        let line = encode_data(stream, guid, pieces);
        match tokio::time::timeout(self.core.ack_timeout, gate.acquire()).await {
            // Given back by the DataAck; taken only together with queueing the line.
            Ok(Ok(permit)) => {
                permit.forget();
                self.write_line(line)
            }
            // The session died, or the pipeline was released meanwhile.
            Ok(Err(_)) => Err(self.core.dead_error().unwrap_or(Error::Closed("pipeline"))),
            Err(_) => Err(self.time_out(format!(
                "the {} did not acknowledge the Data before for {guid} within {} s",
                self.core.peer.describe(),
                self.core.ack_timeout.as_secs()
            ))),
        }
    }

    /// Ends the session for a server that did not answer in time; the error for every caller.
    fn time_out(&self, message: String) -> Error {
        self.core.fail(Dead::Timeout(message));
        self.gone()
    }

    fn gone(&self) -> Error {
        self.core.dead_error().unwrap_or(Error::Closed("runspace pool"))
    }

    /// Sends a Command, Signal or Close for `guid` and waits for its acknowledgement (at most
    /// the session's ack timeout).
    async fn exchange(&self, kind: GuidPacket, guid: uuid::Uuid) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.core.state);
            if let Some(d) = &st.dead {
                return Err(d.error());
            }
            if kind == GuidPacket::Close && guid.is_nil() {
                st.closing = true;
            }
            st.acks.entry((kind, guid)).or_default().waiters.push_back(tx);
        }
        self.write_line(encode_guid(kind, guid))?;
        match tokio::time::timeout(self.core.ack_timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.gone()),
            Err(_) => Err(self.time_out(format!(
                "the {} did not acknowledge <{} PSGuid='{guid}'> within {} s",
                self.core.peer.describe(),
                kind.name(),
                self.core.ack_timeout.as_secs()
            ))),
        }
    }

    /// Creates pipeline `pid`: its inbox, then Command and the wait for CommandAck. Its
    /// CREATE_PIPELINE goes out afterwards as Data.
    pub async fn command(&self, pid: uuid::Uuid) -> Result<()> {
        {
            let mut st = lock(&self.core.state);
            if let Some(d) = &st.dead {
                return Err(d.error());
            }
            st.inboxes.insert(pid, Inbox::new());
        }
        self.exchange(GuidPacket::Command, pid).await
    }

    /// Stops pipeline `pid` (Signal, SignalAck); its final state arrives as Data.
    pub async fn signal(&self, pid: uuid::Uuid) -> Result<()> {
        self.exchange(GuidPacket::Signal, pid).await
    }

    /// Releases pipeline `pid` (Close, CloseAck) and forgets it.
    pub async fn close_pipeline(&self, pid: uuid::Uuid) -> Result<()> {
        let r = self.exchange(GuidPacket::Close, pid).await;
        self.forget(pid);
        r
    }

    /// Forgets a pipeline: released, or never known to the server (its Command failed). Input
    /// still waiting for a DataAck fails with [`Error::Closed`].
    pub fn forget(&self, pid: uuid::Uuid) {
        let mut st = lock(&self.core.state);
        if let Some(inbox) = st.inboxes.remove(&pid) {
            inbox.close();
            st.released.add(pid);
        }
        if let Some(gate) = st.gates.remove(&pid) {
            gate.close();
        }
        // Its entries with nobody waiting (a Close racing this one still waits for its ack).
        st.acks.retain(|(_, guid), w| *guid != pid || !w.waiters.is_empty());
    }

    /// Closes the pool (Close for the nil GUID; the server answers once its pipelines are
    /// closed, after RUNSPACEPOOL_STATE Closing and Closed), then ends the carrier. A session
    /// that died already is shut down all the same.
    pub async fn close(&self) -> Result<()> {
        let r = if self.core.dead_error().is_some() {
            Ok(())
        } else {
            self.close_pipelines().await;
            self.exchange(GuidPacket::Close, uuid::Uuid::nil()).await
        };
        self.shutdown().await;
        r
    }

    /// Stops and closes the pipelines still open, as PowerShell's client does before it closes
    /// the pool: the server acknowledges the pool's Close only once its commands are closed.
    async fn close_pipelines(&self) {
        let open: Vec<uuid::Uuid> = lock(&self.core.state).inboxes.keys().copied().filter(|g| !g.is_nil()).collect();
        for pid in open {
            // A pipeline that ended meanwhile may refuse; only a dead session stops the round.
            let _ = self.signal(pid).await;
            let _ = self.close_pipeline(pid).await;
            if self.core.dead_error().is_some() {
                return;
            }
        }
    }

    /// Ends the carrier: the stream to the server ended once the lines queued are written (its
    /// EOF lets a process exit by itself), then the carrier closed (a process that did not exit
    /// killed and reaped).
    pub async fn shutdown(&self) {
        lock(&self.lines).take();
        let writer = lock(&self.writer).take();
        if let Some(writer) = writer {
            let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
        }
        self.core.peer.shutdown().await;
        self.core.die(Dead::Closed);
    }

    /// What arrived for `guid` (nil: the pool): waits for one Data, then takes what else is
    /// there. An error once the session is dead (the reason), or when the pipeline was released.
    pub async fn receive(&self, guid: uuid::Uuid) -> Result<Vec<Vec<u8>>> {
        let inbox = lock(&self.core.state).inboxes.get(&guid).cloned();
        let Some(inbox) = inbox else {
            return Err(self
                .core
                .dead_error()
                .unwrap_or_else(|| Error::protocol(format!("no pipeline {guid} on this session"))));
        };
        let mut rx = inbox.rx.lock().await;
        let Some(first) = rx.recv().await else { return Err(self.gone()) };
        let mut taken = first.len();
        let mut out = vec![first];
        while out.len() < 64 {
            match rx.try_recv() {
                Ok(more) => {
                    taken += more.len();
                    out.push(more);
                }
                Err(_) => break,
            }
        }
        self.core.held.fetch_sub(taken, std::sync::atomic::Ordering::SeqCst);
        Ok(out)
    }
}

/// Reads the server's lines until the stream ends or breaks.
async fn read_loop(core: Arc<Core>, mut reader: Box<dyn AsyncRead + Send + Unpin>) {
    let mut decoder = Decoder::new(MAX_DATA_PER_LINE);
    let mut buf = vec![0u8; 64 * 1024];
    let why = loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => {
                let (closed, closing) = {
                    let st = lock(&core.state);
                    (st.closed, st.closing)
                };
                if closed && !decoder.has_partial() {
                    break Dead::Closed;
                }
                if let Err(e) = decoder.finish() {
                    break Dead::Protocol(format!("{e} (from the {})", core.peer.describe()));
                }
                let detail = core.peer.ended().await.map(|d| format!(": {d}")).unwrap_or_default();
                let when = if closing { "while the pool was closing" } else { "mid-session" };
                break Dead::Transport(format!("the {} ended the session {when}{detail}", core.peer.describe()));
            }
            Ok(n) => n,
            Err(e) => {
                let detail = core.peer.ended().await.map(|d| format!("; {d}")).unwrap_or_default();
                break Dead::Transport(format!("reading from the {} failed: {e}{detail}", core.peer.describe()));
            }
        };
        let packets = match decoder.feed(&buf[..n]) {
            Ok(p) => p,
            Err(e) => break Dead::Protocol(format!("{} (from the {})", strip_kind(&e), core.peer.describe())),
        };
        let mut failed = None;
        for p in packets {
            match core.take(p) {
                Ok(()) => {}
                Err(m) if m == TOO_LARGE => {
                    failed = Some(Dead::TooLarge);
                    break;
                }
                Err(m) => {
                    failed = Some(Dead::Protocol(format!("out-of-process: {m} (from the {})", core.peer.describe())));
                    break;
                }
            }
        }
        if let Some(f) = failed {
            break f;
        }
    };
    let broken = !matches!(why, Dead::Closed);
    core.die(why);
    if broken {
        // A server that broke the protocol or went away is ended for good.
        core.peer.shutdown().await;
    }
}

/// Writes the queued lines in order until the queue ends (then the stream is shut down and
/// dropped: EOF for the server). A write that fails or does not finish within the session's ack timeout
/// (a server that stopped reading) ends the session.
async fn write_loop(
    core: Arc<Core>,
    mut writer: Box<dyn AsyncWrite + Send + Unpin>,
    mut lines: mpsc::UnboundedReceiver<Vec<u8>>,
) {
    while let Some(line) = lines.recv().await {
        let written = tokio::time::timeout(core.ack_timeout, async {
            writer.write_all(&line).await?;
            writer.flush().await
        })
        .await;
        let why = match written {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => {
                // The reader sees the end of the stream at about the same time, with the
                // carrier's account of it (exit status, stderr): that error wins if it comes.
                let died = core.died.notified();
                tokio::pin!(died);
                died.as_mut().enable();
                if core.dead_error().is_none() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), died).await;
                }
                Dead::Transport(format!("writing to the {} failed: {e}", core.peer.describe()))
            }
            Err(_) => Dead::Timeout(format!(
                "the {} read nothing for {} s (a write could not finish)",
                core.peer.describe(),
                core.ack_timeout.as_secs()
            )),
        };
        core.fail(why);
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
}

/// An error's message without the "protocol error: " its Display adds (it is added again).
fn strip_kind(e: &Error) -> String {
    match e {
        Error::Protocol(m) => m.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn released_pipelines_are_remembered_up_to_a_bound() {
        let mut released = Released::default();
        let guids: Vec<uuid::Uuid> = (0..RELEASED_KEPT as u128 + 10).map(uuid::Uuid::from_u128).collect();
        for g in &guids {
            released.add(*g);
            released.add(*g); // twice: still one entry
        }
        assert_eq!((released.order.len(), released.set.len()), (RELEASED_KEPT, RELEASED_KEPT));
        assert!(guids[..10].iter().all(|g| !released.contains(g)), "the oldest are forgotten");
        assert!(guids[10..].iter().all(|g| released.contains(g)));
    }
}
