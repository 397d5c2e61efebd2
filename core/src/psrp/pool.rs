//! The runspace pool and its pipelines as a sans-IO state machine (MS-PSRP 3.1.4, 3.1.5).
//!
//! Feed the server's bytes with [`RunspacePool::receive`], which returns what happened, and send
//! what [`RunspacePool::next_outgoing`] hands out. The
//! caller (the tokio client, or a test) moves the bytes over WS-Man; nothing here does I/O.

use std::collections::{HashMap, VecDeque};

use crate::clixml::{self, Limits, Value};
use crate::error::{Error, Result};

use super::fragment::{DefragLimits, Defragmenter, FragmentSpan, Fragmenter};
use super::host::{HostCall, HostResponse};
use super::message::{Destination, Message, MessageType};
use super::messages::{
    self, ErrorRecord, HostInfo, InformationRecord, InformationalRecord, PipelineSpec, ProgressRecord, ProtocolVersion,
    ServerCapability,
};
use super::session_key::{ClientKeyPair, SessionKey};

mod connect;

/// Runspace pool states (MS-PSRP 2.2.3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PoolState {
    /// Not opened yet.
    BeforeOpen,
    /// Opening.
    Opening,
    /// Open and usable.
    Opened,
    /// Closed.
    Closed,
    /// Closing.
    Closing,
    /// Failed; unusable.
    Broken,
    /// SESSION_CAPABILITY sent.
    NegotiationSent,
    /// The server accepted our capability.
    NegotiationSucceeded,
    /// Connecting to a disconnected pool.
    Connecting,
    /// Disconnected.
    Disconnected,
}

impl PoolState {
    fn from_i32(v: i32) -> Result<Self> {
        Ok(match v {
            0 => PoolState::BeforeOpen,
            1 => PoolState::Opening,
            2 => PoolState::Opened,
            3 => PoolState::Closed,
            4 => PoolState::Closing,
            5 => PoolState::Broken,
            6 => PoolState::NegotiationSent,
            7 => PoolState::NegotiationSucceeded,
            8 => PoolState::Connecting,
            9 => PoolState::Disconnected,
            other => return Err(Error::protocol(format!("unknown runspace pool state {other}"))),
        })
    }
}

/// Pipeline states (PSInvocationState, MS-PSRP 2.2.3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PipelineState {
    /// Created, not started.
    NotStarted,
    /// Running.
    Running,
    /// Stop requested.
    Stopping,
    /// Stopped by the client.
    Stopped,
    /// Finished.
    Completed,
    /// Failed with an error.
    Failed,
    /// Disconnected.
    Disconnected,
}

impl PipelineState {
    fn from_i32(v: i32) -> Result<Self> {
        Ok(match v {
            0 => PipelineState::NotStarted,
            1 => PipelineState::Running,
            2 => PipelineState::Stopping,
            3 => PipelineState::Stopped,
            4 => PipelineState::Completed,
            5 => PipelineState::Failed,
            6 => PipelineState::Disconnected,
            other => return Err(Error::protocol(format!("unknown pipeline state {other}"))),
        })
    }

    /// Whether the pipeline has ended.
    pub fn is_finished(self) -> bool {
        matches!(self, PipelineState::Stopped | PipelineState::Completed | PipelineState::Failed)
    }
}

/// The WS-Man input stream a chunk goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputStream {
    /// `stdin`: everything but host responses.
    Stdin,
    /// `pr`: host responses.
    PromptResponse,
}

impl InputStream {
    /// The stream name.
    pub fn name(self) -> &'static str {
        match self {
            InputStream::Stdin => "stdin",
            InputStream::PromptResponse => "pr",
        }
    }
}

/// A chunk to send with WS-Man Send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The pipeline (CommandId) it is for; None for the pool.
    pub pid: Option<uuid::Uuid>,
    /// The input stream.
    pub stream: InputStream,
    /// Fragment bytes (base64 them into one `rsp:Stream`).
    pub data: Vec<u8>,
}

/// Input for one pipeline's `stdin` stream, encoded: its messages, and the chunks (one Send
/// each) they are cut into, each chunk's fragments laid over the messages without copying them.
#[derive(Debug)]
pub struct InputChunks {
    /// The pipeline.
    pub pid: uuid::Uuid,
    messages: Vec<Vec<u8>>,
    chunks: Vec<Vec<FragmentSpan>>,
}

impl InputChunks {
    /// How many chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Chunk `i` as the pieces it is made of, in order: each fragment's header and blob.
    pub fn pieces(&self, i: usize) -> Vec<&[u8]> {
        self.chunks[i].iter().flat_map(|f| [&f.header[..], &self.messages[f.message][f.range.clone()]]).collect()
    }

    /// Chunk `i` laid end to end (what [`Fragmenter::fragment`] gives).
    pub fn chunk_bytes(&self, i: usize) -> Vec<u8> {
        self.pieces(i).concat()
    }
}

/// What the server told us.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The server's SESSION_CAPABILITY was accepted.
    SessionCapability(ServerCapability),
    /// APPLICATION_PRIVATE_DATA (e.g. the PSVersionTable).
    ApplicationPrivateData(Value),
    /// The pool changed state.
    PoolState {
        /// New state.
        state: PoolState,
        /// Why it broke, when it did.
        error: Option<ErrorRecord>,
    },
    /// The server asks for our public key (it will then send a session key).
    PublicKeyRequested,
    /// The session key arrived; SecureStrings can be sent and read.
    SessionKeyReady,
    /// Answer to set min/max, get available, or reset.
    RunspaceAvailability {
        /// The call id of the request.
        ci: i64,
        /// A boolean (set, reset) or a count (get).
        value: Value,
    },
    /// A PowerShell event forwarded from the server.
    UserEvent(Value),
    /// A host call; answer it with [`RunspacePool::host_response`] unless the method is void.
    HostCall {
        /// The pipeline, or None for a pool host call.
        pid: Option<uuid::Uuid>,
        /// The call.
        call: HostCall,
    },
    /// An output object.
    Output {
        /// The pipeline.
        pid: uuid::Uuid,
        /// The object.
        value: Value,
    },
    /// An error record (non-terminating error).
    Error {
        /// The pipeline.
        pid: uuid::Uuid,
        /// The record.
        record: ErrorRecord,
    },
    /// A warning record.
    Warning {
        /// The pipeline; None when the server sent it at pool level.
        pid: Option<uuid::Uuid>,
        /// The record.
        record: InformationalRecord,
    },
    /// A verbose record.
    Verbose {
        /// The pipeline.
        pid: uuid::Uuid,
        /// The record.
        record: InformationalRecord,
    },
    /// A debug record.
    Debug {
        /// The pipeline.
        pid: uuid::Uuid,
        /// The record.
        record: InformationalRecord,
    },
    /// An information record.
    Information {
        /// The pipeline.
        pid: uuid::Uuid,
        /// The record.
        record: InformationRecord,
    },
    /// A progress record.
    Progress {
        /// The pipeline.
        pid: uuid::Uuid,
        /// The record.
        record: ProgressRecord,
    },
    /// The pipeline changed state; a finished state is its last event.
    PipelineState {
        /// The pipeline.
        pid: uuid::Uuid,
        /// New state.
        state: PipelineState,
        /// The terminating error of a failed pipeline.
        error: Option<ErrorRecord>,
    },
}

/// Options of a runspace pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Minimum runspaces.
    pub min_runspaces: i32,
    /// Maximum runspaces (concurrent pipelines).
    pub max_runspaces: i32,
    /// What host the client offers.
    pub host: HostInfo,
    /// `$PSSenderInfo.ApplicationArguments` (a PSPrimitiveDictionary), if any.
    pub application_arguments: Option<Value>,
    /// Largest chunk of fragments per WS-Man payload.
    pub max_chunk: usize,
    /// CLIXML decoding limits.
    pub clixml_limits: Limits,
    /// Fragment reassembly limits.
    pub defrag_limits: DefragLimits,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            min_runspaces: 1,
            max_runspaces: 1,
            host: HostInfo::null(),
            application_arguments: None,
            max_chunk: super::fragment::max_payload_for_envelope(153_600),
            clixml_limits: Limits::default(),
            defrag_limits: DefragLimits::default(),
        }
    }
}

/// The client side of one runspace pool.
#[derive(Debug)]
pub struct RunspacePool {
    id: uuid::Uuid,
    state: PoolState,
    options: PoolOptions,
    fragmenter: Fragmenter,
    defrag: HashMap<Option<uuid::Uuid>, Defragmenter>,
    protocol: Option<ProtocolVersion>,
    pipelines: HashMap<uuid::Uuid, PipelineState>,
    outgoing: VecDeque<Outgoing>,
    /// Chunks ever queued: with `outgoing.len()`, how far sending got (see [`Self::outgoing_mark`]).
    queued: u64,
    key_pair: Option<ClientKeyPair>,
    session_key: Option<SessionKey>,
    next_ci: i64,
}

impl RunspacePool {
    /// A pool with the given id (the WS-Man ShellId) and options.
    pub fn new(id: uuid::Uuid, options: PoolOptions) -> Self {
        Self {
            id,
            state: PoolState::BeforeOpen,
            fragmenter: Fragmenter::new(options.max_chunk),
            options,
            defrag: HashMap::new(),
            protocol: None,
            pipelines: HashMap::new(),
            outgoing: VecDeque::new(),
            queued: 0,
            key_pair: None,
            session_key: None,
            next_ci: 1,
        }
    }

    /// The pool id.
    pub fn id(&self) -> uuid::Uuid {
        self.id
    }

    /// The pool state.
    pub fn state(&self) -> PoolState {
        self.state
    }

    /// The negotiated protocol version, once the server's capability arrived.
    pub fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.protocol
    }

    /// A pipeline's state.
    pub fn pipeline_state(&self, pid: uuid::Uuid) -> Option<PipelineState> {
        self.pipelines.get(&pid).copied()
    }

    /// Changes the chunk size (after the envelope size grows).
    pub fn set_max_chunk(&mut self, max_chunk: usize) {
        self.fragmenter.set_max_chunk(max_chunk);
    }

    /// The chunk size in use: the most bytes of fragments one Send (or out-of-process Data)
    /// carries.
    pub fn max_chunk(&self) -> usize {
        self.fragmenter.max_chunk()
    }

    /// The session key, once exchanged.
    pub fn session_key(&self) -> Option<&SessionKey> {
        self.session_key.as_ref()
    }

    fn message(&self, message_type: MessageType, pid: Option<uuid::Uuid>, data: &Value) -> Vec<u8> {
        Message::encode_value(Destination::Server, message_type, self.id, pid, data)
    }

    fn queue(&mut self, pid: Option<uuid::Uuid>, stream: InputStream, messages: &[Vec<u8>]) {
        for data in self.fragmenter.fragment(messages.iter().map(Vec::as_slice)) {
            self.push_outgoing(Outgoing { pid, stream, data });
        }
    }

    fn push_outgoing(&mut self, o: Outgoing) {
        self.queued += 1;
        self.outgoing.push_back(o);
    }

    fn expect_state(&self, action: &'static str, allowed: &[PoolState]) -> Result<()> {
        if allowed.contains(&self.state) {
            Ok(())
        } else if self.state == PoolState::Disconnected {
            Err(Error::Disconnected(action))
        } else {
            Err(Error::protocol(format!(
                "cannot {action} while the runspace pool is {:?} (it must be {allowed:?})",
                self.state
            )))
        }
    }

    /// Starts opening: returns the first chunk for `creationXml`; any further chunks are queued
    /// as pool Sends.
    pub fn open(&mut self) -> Result<Vec<u8>> {
        self.expect_state("open", &[PoolState::BeforeOpen])?;
        let cap = self.message(MessageType::SessionCapability, None, &messages::session_capability());
        let init = messages::init_runspace_pool(
            self.options.min_runspaces,
            self.options.max_runspaces,
            &self.options.host,
            self.options.application_arguments.clone().map(messages::application_arguments),
        );
        let init = self.message(MessageType::InitRunspacePool, None, &init);
        let mut chunks = self.fragmenter.fragment([cap.as_slice(), init.as_slice()]).into_iter();
        let first = chunks.next().unwrap_or_default();
        chunks.for_each(|data| self.push_outgoing(Outgoing { pid: None, stream: InputStream::Stdin, data }));
        self.state = PoolState::NegotiationSent;
        Ok(first)
    }

    /// Starts a pipeline with id `pid`: returns the first chunk for the Command's
    /// `rsp:Arguments`; further chunks are queued as Sends for that pipeline.
    pub fn create_pipeline(&mut self, pid: uuid::Uuid, spec: &PipelineSpec) -> Result<Vec<u8>> {
        self.expect_state("create a pipeline", &[PoolState::Opened])?;
        if self.pipelines.contains_key(&pid) {
            return Err(Error::protocol(format!("pipeline {pid} already exists")));
        }
        let protocol = self.protocol.unwrap_or(ProtocolVersion::V2_1);
        let value = messages::create_pipeline(spec, &self.options.host, protocol)?;
        let msg = self.message(MessageType::CreatePipeline, Some(pid), &value);
        let mut chunks = self.fragmenter.fragment([msg.as_slice()]).into_iter();
        let first = chunks.next().unwrap_or_default();
        chunks.for_each(|data| self.push_outgoing(Outgoing { pid: Some(pid), stream: InputStream::Stdin, data }));
        self.pipelines.insert(pid, PipelineState::Running);
        Ok(first)
    }

    /// Asks for command metadata (what `Get-Command` knows) with id `pid`: like a pipeline,
    /// the first chunk goes into the Command's `rsp:Arguments` and the answer arrives as that
    /// pipeline's output (a CommandMetadataCount, then one object per command) and state.
    pub fn get_command_metadata(&mut self, pid: uuid::Uuid, query: &messages::CommandMetadataQuery) -> Result<Vec<u8>> {
        self.expect_state("ask for command metadata", &[PoolState::Opened])?;
        if self.pipelines.contains_key(&pid) {
            return Err(Error::protocol(format!("pipeline {pid} already exists")));
        }
        let msg = self.message(MessageType::GetCommandMetadata, Some(pid), &messages::get_command_metadata(query));
        let mut chunks = self.fragmenter.fragment([msg.as_slice()]).into_iter();
        let first = chunks.next().unwrap_or_default();
        chunks.for_each(|data| self.push_outgoing(Outgoing { pid: Some(pid), stream: InputStream::Stdin, data }));
        self.pipelines.insert(pid, PipelineState::Running);
        Ok(first)
    }

    fn expect_running(&self, pid: uuid::Uuid, action: &str) -> Result<()> {
        match self.pipelines.get(&pid) {
            Some(s) if !s.is_finished() => Ok(()),
            Some(s) => Err(Error::protocol(format!("cannot {action}: pipeline {pid} is {s:?}"))),
            None => Err(Error::protocol(format!("cannot {action}: no pipeline {pid}"))),
        }
    }

    /// Encodes input objects for a pipeline into chunks (several objects per chunk when small)
    /// and hands them to the caller instead of queueing them: a pipeline's input has a sender
    /// of its own, which sends them in order on the pipeline's `stdin` stream.
    pub fn send_input(&mut self, pid: uuid::Uuid, values: &[Value]) -> Result<InputChunks> {
        self.expect_running(pid, "send input")?;
        let messages: Vec<Vec<u8>> =
            values.iter().map(|v| self.message(MessageType::PipelineInput, Some(pid), v)).collect();
        let chunks = self.fragmenter.plan(messages.iter().map(Vec::len));
        Ok(InputChunks { pid, messages, chunks })
    }

    /// Queues END_OF_PIPELINE_INPUT.
    pub fn end_input(&mut self, pid: uuid::Uuid) -> Result<()> {
        self.expect_running(pid, "end input")?;
        let msg =
            Message::new(Destination::Server, MessageType::EndOfPipelineInput, self.id, Some(pid), Vec::new()).encode();
        self.queue(Some(pid), InputStream::Stdin, &[msg]);
        Ok(())
    }

    /// Queues the answer to a host call (nothing for void methods). Secrets in the answer are
    /// encrypted with the session key, which must have been exchanged.
    pub fn host_response(&mut self, pid: Option<uuid::Uuid>, call: &HostCall, response: &HostResponse) -> Result<()> {
        if call.method.is_void() {
            return Ok(());
        }
        let encrypted;
        let response = match response {
            HostResponse::SecureString(plain) => {
                encrypted = HostResponse::Value(self.secure_string(plain)?);
                &encrypted
            }
            HostResponse::Credential { username, password } => {
                let Value::SecureString(ct) = self.secure_string(password)? else {
                    return Err(Error::protocol("secure_string returned no SecureString"));
                };
                encrypted = HostResponse::Value(super::host::credential_value(username, ct));
                &encrypted
            }
            other => other,
        };
        let value = messages::host_response(call, response);
        let (ty, pid) = match pid {
            Some(p) => (MessageType::PipelineHostResponse, Some(p)),
            None => (MessageType::RunspacePoolHostResponse, None),
        };
        let msg = self.message(ty, pid, &value);
        self.queue(pid, InputStream::PromptResponse, &[msg]);
        Ok(())
    }

    /// Queues PUBLIC_KEY with `key_pair`; [`Event::SessionKeyReady`] follows.
    pub fn exchange_key(&mut self, key_pair: ClientKeyPair) -> Result<()> {
        self.expect_state("exchange the session key", &[PoolState::Opened])?;
        let value = messages::public_key(&key_pair.public_key_blob());
        let msg = self.message(MessageType::PublicKey, None, &value);
        self.key_pair = Some(key_pair);
        self.queue(None, InputStream::Stdin, &[msg]);
        Ok(())
    }

    /// Encrypts a string into a SecureString value; needs the session key.
    pub fn secure_string(&self, plaintext: &str) -> Result<Value> {
        let key = self
            .session_key
            .as_ref()
            .ok_or_else(|| Error::protocol("a SecureString needs the session key: exchange it first"))?;
        Ok(Value::SecureString(key.encrypt_string(plaintext)))
    }

    /// Decrypts a SecureString value received from the server.
    pub fn decrypt_secure_string(&self, ciphertext: &[u8]) -> Result<zeroize::Zeroizing<String>> {
        let key = self
            .session_key
            .as_ref()
            .ok_or_else(|| Error::protocol("cannot read a SecureString before the session key was exchanged"))?;
        key.decrypt_string(ciphertext)
    }

    fn call(&mut self, ty: MessageType, value: Value) -> Result<i64> {
        self.expect_state("send a pool request", &[PoolState::Opened])?;
        let msg = self.message(ty, None, &value);
        self.queue(None, InputStream::Stdin, &[msg]);
        Ok(self.next_ci - 1)
    }

    fn take_ci(&mut self) -> i64 {
        let ci = self.next_ci;
        self.next_ci += 1;
        ci
    }

    /// Queues SET_MAX_RUNSPACES; returns the call id that the RunspaceAvailability answer carries.
    pub fn set_max_runspaces(&mut self, count: i32) -> Result<i64> {
        let ci = self.take_ci();
        self.call(MessageType::SetMaxRunspaces, messages::set_runspaces(true, count, ci))?;
        self.options.max_runspaces = count;
        Ok(ci)
    }

    /// Queues SET_MIN_RUNSPACES; returns the call id.
    pub fn set_min_runspaces(&mut self, count: i32) -> Result<i64> {
        let ci = self.take_ci();
        self.call(MessageType::SetMinRunspaces, messages::set_runspaces(false, count, ci))?;
        self.options.min_runspaces = count;
        Ok(ci)
    }

    /// Queues GET_AVAILABLE_RUNSPACES; returns the call id.
    pub fn get_available_runspaces(&mut self) -> Result<i64> {
        let ci = self.take_ci();
        self.call(MessageType::GetAvailableRunspaces, messages::call_id(ci))
    }

    /// Queues RESET_RUNSPACE_STATE (protocol 2.3); returns the call id.
    pub fn reset_runspace_state(&mut self) -> Result<i64> {
        if self.protocol.is_some_and(|p| p < ProtocolVersion::V2_3) {
            return Err(Error::protocol("resetting the runspace state needs protocol 2.3"));
        }
        let ci = self.take_ci();
        self.call(MessageType::ResetRunspaceState, messages::call_id(ci))
    }

    /// Marks a pipeline closed (after Signal Terminate) and forgets it.
    pub fn close_pipeline(&mut self, pid: uuid::Uuid) {
        self.pipelines.remove(&pid);
        self.defrag.remove(&Some(pid));
        self.outgoing.retain(|o| o.pid != Some(pid));
    }

    /// Marks the pool closing (before Delete) or closed (after).
    pub fn set_closed(&mut self, done: bool) {
        self.state = if done { PoolState::Closed } else { PoolState::Closing };
    }

    /// Marks the pool broken (transport failure).
    pub fn set_broken(&mut self) {
        self.state = PoolState::Broken;
    }

    /// The next chunk to send.
    pub fn next_outgoing(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }

    /// A mark after every chunk queued so far: once [`Self::outgoing_taken`] reaches it, all of
    /// them were handed out (or dropped with their pipeline).
    pub fn outgoing_mark(&self) -> u64 {
        self.queued
    }

    /// How many chunks were handed out by [`Self::next_outgoing`] or dropped, in queue order.
    pub fn outgoing_taken(&self) -> u64 {
        self.queued - self.outgoing.len() as u64
    }

    /// Feeds bytes from one `rsp:Stream Name="stdout"` of a Receive for the pool (`pid` None)
    /// or a pipeline, and returns the events they completed, in order. Events come back from the
    /// call that fed them, so a driver with one task per Receive keeps each pipeline's order.
    pub fn receive(&mut self, pid: Option<uuid::Uuid>, data: &[u8]) -> Result<Vec<Event>> {
        let limits = self.options.defrag_limits;
        let messages = self.defrag.entry(pid).or_insert_with(|| Defragmenter::new(limits)).push(data)?;
        let mut events = Vec::with_capacity(messages.len());
        for m in messages {
            let msg = Message::decode(&m)?;
            self.check_ids(pid, &msg)?;
            if let Some(ev) = self.process(msg)? {
                events.push(ev);
            }
        }
        Ok(events)
    }

    /// A message that names another runspace pool (an all-zero RPID is accepted: some servers
    /// send it), or, on a pipeline's Receive, another pipeline, belongs to another session or
    /// reader: taking it would hand a caller someone else's data, or drop it silently. Servers
    /// echo the id bytes a client sent, so ours in RFC byte order (what clients with pypsrp's
    /// old GUID bug sent, in the older recordings) is still ours.
    fn check_ids(&self, pid: Option<uuid::Uuid>, msg: &Message) -> Result<()> {
        let ours =
            |mine: uuid::Uuid, named: uuid::Uuid| named == mine || named == uuid::Uuid::from_bytes_le(*mine.as_bytes());
        if !msg.rpid.is_nil() && !ours(self.id, msg.rpid) {
            return Err(Error::protocol(format!(
                "a {:?} message names runspace pool {} where {} was expected",
                msg.message_type, msg.rpid, self.id
            )));
        }
        if let (Some(receiving), Some(named)) = (pid, msg.pid)
            && !ours(receiving, named)
        {
            return Err(Error::protocol(format!(
                "a {:?} message on pipeline {receiving}'s Receive names pipeline {named}",
                msg.message_type
            )));
        }
        Ok(())
    }

    fn process(&mut self, msg: Message) -> Result<Option<Event>> {
        tracing::trace!(
            target: "psremote::psrp::message",
            message_type = ?msg.message_type,
            pipeline = ?msg.pid,
            bytes = msg.data.len(),
            "message received"
        );
        if msg.message_type == MessageType::EndOfPipelineInput {
            return Ok(None);
        }
        let value = if msg.data.is_empty() {
            Value::Nil
        } else {
            clixml::from_bytes(&msg.data, &self.options.clixml_limits)
                .map_err(|e| Error::protocol(format!("{:?} message: {e}", msg.message_type)))?
        };
        let pipeline = |pid: Option<uuid::Uuid>| {
            pid.ok_or_else(|| Error::protocol(format!("{:?} without a pipeline id", msg.message_type)))
        };
        let event = match msg.message_type {
            MessageType::SessionCapability => {
                let cap = messages::parse_session_capability(&value)?;
                let protocol = ProtocolVersion::parse(&cap.protocol_version)?;
                self.protocol = Some(protocol);
                if self.state == PoolState::NegotiationSent {
                    self.state = PoolState::NegotiationSucceeded;
                }
                Event::SessionCapability(cap)
            }
            MessageType::ApplicationPrivateData => {
                Event::ApplicationPrivateData(value.property("ApplicationPrivateData").cloned().unwrap_or(value))
            }
            MessageType::RunspacePoolState => {
                let (state, error) = messages::parse_state(&value, "RunspaceState")?;
                let state = PoolState::from_i32(state)?;
                self.state = state;
                Event::PoolState { state, error }
            }
            MessageType::EncryptedSessionKey => {
                let blob = messages::parse_encrypted_session_key(&value)?;
                let pair = self
                    .key_pair
                    .as_ref()
                    .ok_or_else(|| Error::protocol("the server sent a session key that was not asked for"))?;
                self.session_key = Some(pair.decrypt_session_key(&blob)?);
                Event::SessionKeyReady
            }
            MessageType::PublicKeyRequest => Event::PublicKeyRequested,
            MessageType::RunspaceAvailability => {
                let (ci, value) = messages::parse_availability(&value)?;
                Event::RunspaceAvailability { ci, value }
            }
            MessageType::UserEvent => Event::UserEvent(value),
            MessageType::RunspacePoolHostCall => {
                Event::HostCall { pid: None, call: messages::parse_host_call(&value)? }
            }
            MessageType::RunspacePoolInitData => match self.init_data(&value)? {
                Some(state) => Event::PoolState { state, error: None },
                None => return Ok(None),
            },
            MessageType::PipelineHostCall => {
                Event::HostCall { pid: Some(pipeline(msg.pid)?), call: messages::parse_host_call(&value)? }
            }
            MessageType::PipelineOutput => Event::Output { pid: pipeline(msg.pid)?, value },
            MessageType::ErrorRecord => {
                Event::Error { pid: pipeline(msg.pid)?, record: messages::parse_error_record(&value) }
            }
            MessageType::WarningRecord => {
                Event::Warning { pid: msg.pid, record: messages::parse_informational(&value) }
            }
            MessageType::VerboseRecord => {
                Event::Verbose { pid: pipeline(msg.pid)?, record: messages::parse_informational(&value) }
            }
            MessageType::DebugRecord => {
                Event::Debug { pid: pipeline(msg.pid)?, record: messages::parse_informational(&value) }
            }
            MessageType::InformationRecord => {
                Event::Information { pid: pipeline(msg.pid)?, record: messages::parse_information(&value) }
            }
            MessageType::ProgressRecord => {
                Event::Progress { pid: pipeline(msg.pid)?, record: messages::parse_progress(&value) }
            }
            MessageType::PipelineState => {
                let pid = pipeline(msg.pid)?;
                let (state, error) = messages::parse_state(&value, "PipelineState")?;
                let state = PipelineState::from_i32(state)?;
                if let Some(s) = self.pipelines.get_mut(&pid) {
                    *s = state;
                }
                Event::PipelineState { pid, state, error }
            }
            other => {
                tracing::warn!(message_type = ?other, "skipping a PSRP message this client does not handle");
                return Ok(None);
            }
        };
        Ok(Some(event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn b64(s: &str) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.decode(s).unwrap()
    }

    // Recorded from Windows PowerShell 5.1 (vectors psrp-receive-server-session-capability-real and
    // psrp-receive-pipeline-output-and-state-real): RPID B2DDE5BA-…, pipeline 5B1BE6C6-….
    const CAPABILITY_AND_PRIVATE_DATA: [&str; 2] = [
        "AAAAAAAAAAEAAAAAAAAAAAMAAADKAQAAAAIAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAO+7vzxPYmogUmVmSWQ9IjAiPjxNUz48VmVyc2lvbiBOPSJwcm90b2NvbHZlcnNpb24iPjIuMzwvVmVyc2lvbj48VmVyc2lvbiBOPSJQU1ZlcnNpb24iPjIuMDwvVmVyc2lvbj48VmVyc2lvbiBOPSJTZXJpYWxpemF0aW9uVmVyc2lvbiI+MS4xLjAuMTwvVmVyc2lvbj48L01TPjwvT2JqPg==",
        "AAAAAAAAAAIAAAAAAAAAAAMAAAStAQAAAAkQAgC65d2yL/KTRJuOi1ZQc/VjAAAAAAAAAAAAAAAAAAAAAO+7vzxPYmogUmVmSWQ9IjAiPjxNUz48T2JqIE49IkFwcGxpY2F0aW9uUHJpdmF0ZURhdGEiIFJlZklkPSIxIj48VE4gUmVmSWQ9IjAiPjxUPlN5c3RlbS5NYW5hZ2VtZW50LkF1dG9tYXRpb24uUFNQcmltaXRpdmVEaWN0aW9uYXJ5PC9UPjxUPlN5c3RlbS5Db2xsZWN0aW9ucy5IYXNodGFibGU8L1Q+PFQ+U3lzdGVtLk9iamVjdDwvVD48L1ROPjxEQ1Q+PEVuPjxTIE49IktleSI+UFNWZXJzaW9uVGFibGU8L1M+PE9iaiBOPSJWYWx1ZSIgUmVmSWQ9IjIiPjxUTlJlZiBSZWZJZD0iMCIgLz48RENUPjxFbj48UyBOPSJLZXkiPlBTVmVyc2lvbjwvUz48VmVyc2lvbiBOPSJWYWx1ZSI+NS4xLjI2MjM2LjUwMDA8L1ZlcnNpb24+PC9Fbj48RW4+PFMgTj0iS2V5Ij5QU0VkaXRpb248L1M+PFMgTj0iVmFsdWUiPkRlc2t0b3A8L1M+PC9Fbj48RW4+PFMgTj0iS2V5Ij5QU0NvbXBhdGlibGVWZXJzaW9uczwvUz48T2JqIE49IlZhbHVlIiBSZWZJZD0iMyI+PFROIFJlZklkPSIxIj48VD5TeXN0ZW0uVmVyc2lvbltdPC9UPjxUPlN5c3RlbS5BcnJheTwvVD48VD5TeXN0ZW0uT2JqZWN0PC9UPjwvVE4+PExTVD48VmVyc2lvbj4xLjA8L1ZlcnNpb24+PFZlcnNpb24+Mi4wPC9WZXJzaW9uPjxWZXJzaW9uPjMuMDwvVmVyc2lvbj48VmVyc2lvbj40LjA8L1ZlcnNpb24+PFZlcnNpb24+NS4wPC9WZXJzaW9uPjxWZXJzaW9uPjUuMS4yNjIzNi41MDAwPC9WZXJzaW9uPjwvTFNUPjwvT2JqPjwvRW4+PEVuPjxTIE49IktleSI+Q0xSVmVyc2lvbjwvUz48VmVyc2lvbiBOPSJWYWx1ZSI+NC4wLjMwMzE5LjQyMDAwPC9WZXJzaW9uPjwvRW4+PEVuPjxTIE49IktleSI+QnVpbGRWZXJzaW9uPC9TPjxWZXJzaW9uIE49IlZhbHVlIj4xMC4wLjI2MjM2LjUwMDA8L1ZlcnNpb24+PC9Fbj48RW4+PFMgTj0iS2V5Ij5XU01hblN0YWNrVmVyc2lvbjwvUz48VmVyc2lvbiBOPSJWYWx1ZSI+My4wPC9WZXJzaW9uPjwvRW4+PEVuPjxTIE49IktleSI+UFNSZW1vdGluZ1Byb3RvY29sVmVyc2lvbjwvUz48VmVyc2lvbiBOPSJWYWx1ZSI+Mi4zPC9WZXJzaW9uPjwvRW4+PEVuPjxTIE49IktleSI+U2VyaWFsaXphdGlvblZlcnNpb248L1M+PFZlcnNpb24gTj0iVmFsdWUiPjEuMS4wLjE8L1ZlcnNpb24+PC9Fbj48L0RDVD48L09iaj48L0VuPjwvRENUPjwvT2JqPjwvTVM+PC9PYmo+",
    ];
    const OUTPUT_AND_STATE: [&str; 2] = [
        "AAAAAAAAAAQAAAAAAAAAAAMAAAA3AQAAAAQQBAC65d2yL/KTRJuOi1ZQc/VjxuYbW/rsqEuAa43XwpCg+u+7vzxJMzI+MjwvSTMyPg==",
        "AAAAAAAAAAUAAAAAAAAAAAMAAABnAQAAAAYQBAC65d2yL/KTRJuOi1ZQc/VjxuYbW/rsqEuAa43XwpCg+u+7vzxPYmogUmVmSWQ9IjAiPjxNUz48STMyIE49IlBpcGVsaW5lU3RhdGUiPjQ8L0kzMj48L01TPjwvT2JqPg==",
    ];

    fn opened_pool() -> (RunspacePool, VecDeque<Event>) {
        let rpid = uuid::Uuid::parse_str("b2dde5ba-f22f-4493-9b8e-8b565073f563").unwrap();
        let mut pool = RunspacePool::new(rpid, PoolOptions::default());
        let first = pool.open().unwrap();
        assert!(pool.next_outgoing().is_none(), "capability and init fit one creationXml chunk");
        let frags = crate::psrp::fragment::parse_fragments(&first).unwrap();
        assert_eq!(frags.len(), 2);
        assert!(frags.iter().all(|f| f.start && f.end));
        let mut events = Vec::new();
        for s in CAPABILITY_AND_PRIVATE_DATA {
            events.extend(pool.receive(None, &b64(s)).unwrap());
        }
        let state = messages::ms(vec![("RunspaceState", Value::I32(2))]);
        let msg = Message::new(
            Destination::Client,
            MessageType::RunspacePoolState,
            rpid,
            None,
            clixml::to_string(&state).into_bytes(),
        );
        let chunk = Fragmenter::new(4096).fragment([msg.encode().as_slice()]);
        events.extend(pool.receive(None, &chunk[0]).unwrap());
        (pool, events.into())
    }

    #[test]
    fn opens_on_the_recorded_windows_handshake() {
        let (pool, mut events) = opened_pool();
        match events.pop_front() {
            Some(Event::SessionCapability(c)) => assert_eq!(c.protocol_version, "2.3"),
            other => panic!("{other:?}"),
        }
        match events.pop_front() {
            Some(Event::ApplicationPrivateData(v)) => {
                let table = v.as_object().unwrap();
                assert!(matches!(&table.container, Some(clixml::Container::Dictionary(e)) if !e.is_empty()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(events.pop_front(), Some(Event::PoolState { state: PoolState::Opened, error: None }));
        assert_eq!(pool.protocol_version(), Some(ProtocolVersion::V2_3));
        assert_eq!(pool.state(), PoolState::Opened);
    }

    #[test]
    fn input_chunks_are_fragments_laid_over_the_messages() {
        let (mut pool, _) = opened_pool();
        let pid = uuid::Uuid::from_u128(7);
        let spec = PipelineSpec { statements: vec![vec![messages::Command::script("$input")]], ..Default::default() };
        pool.create_pipeline(pid, &spec).unwrap();
        pool.set_max_chunk(4096);
        let values = [Value::Str("x".repeat(10_000)), Value::I32(5), Value::Str("y".repeat(3000))];
        let input = pool.send_input(pid, &values).unwrap();
        assert!(input.len() >= 4, "{} chunks", input.len());
        let mut defrag = Defragmenter::new(DefragLimits::default());
        let mut decoded = Vec::new();
        for i in 0..input.len() {
            let bytes = input.chunk_bytes(i);
            assert!(bytes.len() <= 4096);
            for m in defrag.push(&bytes).unwrap() {
                let m = Message::decode(&m).unwrap();
                assert_eq!((m.message_type, m.pid), (MessageType::PipelineInput, Some(pid)));
                decoded
                    .push(crate::clixml::from_str(std::str::from_utf8(&m.data).unwrap(), &Default::default()).unwrap());
            }
        }
        assert_eq!(decoded, values);
    }

    #[test]
    fn delivers_recorded_pipeline_output_and_state() {
        let (mut pool, _) = opened_pool();
        let pid = uuid::Uuid::parse_str("5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa").unwrap();
        let spec = PipelineSpec { statements: vec![vec![messages::Command::script("1+1")]], ..Default::default() };
        let first = pool.create_pipeline(pid, &spec).unwrap();
        let m = Message::decode(crate::psrp::fragment::parse_fragments(&first).unwrap()[0].blob).unwrap();
        assert_eq!(m.message_type, MessageType::CreatePipeline);
        let events: Vec<Event> =
            OUTPUT_AND_STATE.iter().flat_map(|s| pool.receive(Some(pid), &b64(s)).unwrap()).collect();
        assert_eq!(
            events,
            vec![
                Event::Output { pid, value: Value::I32(2) },
                Event::PipelineState { pid, state: PipelineState::Completed, error: None }
            ]
        );
        assert!(pool.send_input(pid, &[Value::I32(1)]).is_err(), "a finished pipeline takes no input");
    }

    #[test]
    fn messages_naming_another_pool_or_pipeline_are_refused() {
        let (mut pool, _) = opened_pool();
        let pid = uuid::Uuid::parse_str("5b1be6c6-ecfa-4ba8-806b-8dd7c290a0fa").unwrap();
        let spec = PipelineSpec { statements: vec![vec![messages::Command::script("1+1")]], ..Default::default() };
        pool.create_pipeline(pid, &spec).unwrap();
        let output = |rpid, pid| {
            let msg = Message::new(
                Destination::Client,
                MessageType::PipelineOutput,
                rpid,
                Some(pid),
                b"<I32>2</I32>".to_vec(),
            );
            Fragmenter::new(4096).fragment([msg.encode().as_slice()]).remove(0)
        };
        let other = uuid::Uuid::new_v4();
        let err = pool.receive(Some(pid), &output(other, pid)).unwrap_err();
        assert!(err.to_string().contains(&format!("names runspace pool {other}")), "{err}");
        let err = pool.receive(Some(pid), &output(pool.id(), other)).unwrap_err();
        assert!(err.to_string().contains(&format!("names pipeline {other}")), "{err}");
        // Ours, or an all-zero RPID as some servers send, is taken.
        let want = vec![Event::Output { pid, value: Value::I32(2) }];
        assert_eq!(pool.receive(Some(pid), &output(pool.id(), pid)).unwrap(), want);
        assert_eq!(pool.receive(Some(pid), &output(uuid::Uuid::nil(), pid)).unwrap(), want);
    }

    #[test]
    fn unknown_message_types_are_skipped() {
        let (mut pool, _) = opened_pool();
        let msg =
            Message::new(Destination::Client, MessageType::Unknown(0x0004_1234), pool.id(), None, b"<S>x</S>".to_vec());
        let chunk = Fragmenter::new(4096).fragment([msg.encode().as_slice()]);
        assert_eq!(pool.receive(None, &chunk[0]).unwrap(), Vec::new());
        assert_eq!(pool.state(), PoolState::Opened);
    }

    #[test]
    fn host_secrets_need_and_use_the_session_key() {
        let (mut pool, _) = opened_pool();
        let call =
            HostCall { ci: 1, method: super::super::host::HostMethod::ReadLineAsSecureString, parameters: vec![] };
        let secret = HostResponse::SecureString(zeroize::Zeroizing::new("hunter2".into()));
        assert!(pool.host_response(None, &call, &secret).is_err(), "no session key yet");
        pool.session_key = Some(SessionKey::from_bytes([7; 32]));
        pool.host_response(None, &call, &secret).unwrap();
        let out = pool.next_outgoing().unwrap();
        assert_eq!(out.stream, InputStream::PromptResponse);
        let text = String::from_utf8_lossy(&out.data);
        assert!(!text.contains("hunter2"));
        assert!(text.contains("<SS"));
        assert_eq!(format!("{secret:?}"), "SecureString(<redacted>)");
    }

    #[test]
    fn refuses_actions_in_the_wrong_state() {
        let mut pool = RunspacePool::new(uuid::Uuid::new_v4(), PoolOptions::default());
        let err = pool.create_pipeline(uuid::Uuid::new_v4(), &PipelineSpec::default()).unwrap_err();
        assert!(err.to_string().contains("BeforeOpen"), "{err}");
        pool.open().unwrap();
        assert!(pool.open().is_err());
    }
}
