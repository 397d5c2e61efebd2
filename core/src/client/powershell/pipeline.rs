//! [`Pipeline`]: one PowerShell pipeline on a pool, its Receive loop and its collected result.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::mpsc;

use super::lock;
use super::pool::RunspacePool;
use super::session::{Route, Shared, WATCH_POOL_AFTER, command_id_text};
use crate::client::backoff::{ReceiveBackoff, pause};
use crate::client::runtime::spawn_detached;
use crate::client::write_behind::WriteBehind;
use crate::clixml::Value;
use crate::error::{Error, Result};
use crate::psrp::messages::{InformationRecord, InformationalRecord, ProgressRecord};
use crate::psrp::{CommandMetadataQuery, ErrorRecord, Event, PipelineSpec, PipelineState};
use crate::wsman::{action, code, winrs};

const STOP_SIGNAL: &str = winrs::signal::PS_STOP;
const TERMINATE_SIGNAL: &str = winrs::signal::PS_TERMINATE;

/// Starts a pipeline on `pool`: the Command carries the first fragment of CREATE_PIPELINE,
/// Sends carry the rest.
pub(super) async fn start(pool: &RunspacePool, spec: &PipelineSpec) -> Result<Pipeline> {
    let pipeline = launch(pool, |sm, pid| sm.create_pipeline(pid, spec)).await?;
    audit_pipeline_start(&pool.shared, pipeline.pid, spec);
    Ok(pipeline)
}

/// Asks for command metadata; the answer arrives as the returned pipeline's output.
pub(super) async fn start_metadata(pool: &RunspacePool, query: &CommandMetadataQuery) -> Result<Pipeline> {
    launch(pool, |sm, pid| sm.get_command_metadata(pid, query)).await
}

/// Sends the Command whose first fragment `first_message` makes (and the Sends of the rest),
/// then starts the pipeline's Receive loop.
async fn launch(
    pool: &RunspacePool,
    first_message: impl FnOnce(&mut crate::psrp::RunspacePool, uuid::Uuid) -> Result<Vec<u8>>,
) -> Result<Pipeline> {
    let shared = &pool.shared;
    if shared.closed.load(Ordering::Relaxed) {
        return Err(Error::Closed("runspace pool"));
    }
    let pid = uuid::Uuid::new_v4();
    let (tx, rx) = mpsc::channel(shared.client.config().max_events_ahead.max(1));
    let guard = shared.send_lock.lock().await;
    let first = first_message(&mut lock(&shared.sm), pid)?;
    lock(&shared.routes).insert(pid, tx.clone());
    let cmd_id = command_id_text(pid);
    let body = format!(
        "<rsp:CommandLine CommandId=\"{cmd_id}\"><rsp:Command/><rsp:Arguments>{}</rsp:Arguments></rsp:CommandLine>",
        B64.encode(&first)
    );
    let started = async {
        if let Some(oop) = shared.oop() {
            // Out of process: Command, its CommandAck, then CREATE_PIPELINE as the pipeline's Data.
            oop.command(pid).await?;
            oop.send_data(pid, crate::psrp::outofproc::DataStream::Default, &[&first]).await?;
            return shared.flush_locked().await;
        }
        let reply = shared.call(action::COMMAND, &[], &body).await?;
        let got = winrs::command_id_from_reply(&reply).and_then(|id| super::pool::checked_id("pipeline", id))?;
        if !got.eq_ignore_ascii_case(&cmd_id) {
            // PowerShell 2.0 servers choose their own CommandId: WS-Man uses it from here on,
            // PSRP keeps naming the pipeline by ours.
            tracing::debug!(requested = cmd_id, created = got, "the server chose its own command id");
            lock(&shared.command_ids).insert(pid, got);
        }
        shared.flush_locked().await
    }
    .await;
    drop(guard);
    if let Err(e) = started {
        lock(&shared.routes).remove(&pid);
        lock(&shared.sm).close_pipeline(pid);
        let _ = shared.signal(pid, TERMINATE_SIGNAL).await;
        lock(&shared.command_ids).remove(&pid);
        if let Some(oop) = shared.oop() {
            oop.forget(pid);
        }
        return Err(e);
    }
    let task = tokio::spawn(pipeline_loop(shared.clone(), pid, tx));
    Ok(Pipeline { pool: pool.clone(), pid, events: rx, finished: None, task: Some(task), behind: Default::default() })
}

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

/// Receives a pipeline's messages until it finishes, then releases it with Signal Terminate
/// (after the final state has been handed to the reader).
async fn pipeline_loop(shared: Arc<Shared>, pid: uuid::Uuid, tx: Route) {
    receive_loop(shared, pid, tx, false).await;
}

/// The Receive loop of a pipeline, started with it or (`attached`) for one that was already
/// running on the server. A disconnect stops it after its current Receive, keeping the pipeline
/// as it is (its reader waits); a reconnect starts it again.
pub(super) async fn receive_loop(shared: Arc<Shared>, pid: uuid::Uuid, tx: Route, attached: bool) {
    let Some(_running) = shared.loop_guard(Some(pid)) else { return };
    let mut backoff = ReceiveBackoff::new(shared.client.config().operation_timeout);
    let watch = tokio::time::sleep(WATCH_POOL_AFTER);
    tokio::pin!(watch);
    let mut long = None;
    let result = async {
        loop {
            if shared.disconnected.load(Ordering::SeqCst) {
                return Ok::<_, Error>(false);
            }
            // A closed pool ends its pipelines' loops: their shell is gone or going.
            if shared.closed.load(Ordering::SeqCst) {
                return Err(Error::Closed("runspace pool"));
            }
            let sent = tokio::time::Instant::now();
            let receive = shared.receive(Some(pid));
            tokio::pin!(receive);
            // A pipeline still running after WATCH_POOL_AFTER has the pool's Receive run beside
            // its own until it ends, for what the server sends at pool level meanwhile.
            let reply = loop {
                if long.is_some() {
                    break receive.await;
                }
                tokio::select! {
                    r = &mut receive => break r,
                    () = &mut watch => long = Some(shared.long_pipeline()),
                }
            };
            let received = match reply {
                Ok(r) => r,
                Err(_) if shared.closed.load(Ordering::SeqCst) => return Err(Error::Closed("runspace pool")),
                // The shell was disconnected under this Receive: nothing was lost.
                Err(_) if shared.disconnected.load(Ordering::SeqCst) => return Ok(false),
                Err(Error::Fault(fault)) if attached && fault.code == Some(code::INVALID_SELECTORS) => {
                    return Err(Error::NotFound { what: format!("pipeline {}", command_id_text(pid)), fault });
                }
                Err(e) => return Err(e),
            };
            shared.deliver(Some(pid), &received).await?;
            let state = lock(&shared.sm).pipeline_state(pid);
            if state.is_none_or(PipelineState::is_finished) || received.done {
                return Ok(true);
            }
            let wait = backoff.after_receive(received.data.is_empty(), sent.elapsed());
            if !wait.is_zero() {
                pause(wait, || shared.closed.load(Ordering::SeqCst) || shared.disconnected.load(Ordering::SeqCst))
                    .await;
            }
        }
    }
    .await;
    if matches!(result, Ok(false)) {
        tracing::debug!(pipeline = %pid, "pipeline receive stopped by the disconnect");
        shared.released(pid);
        return;
    }
    let state = lock(&shared.sm).pipeline_state(pid);
    tracing::info!(
        target: "psremote::audit",
        event = "pipeline_end",
        endpoint = shared.client.url(),
        shell_id = shared.shell_id,
        pipeline = %pid,
        state = state.map(|s| format!("{s:?}")).as_deref().unwrap_or("unknown"),
        error = result.as_ref().err().map(ToString::to_string),
        "pipeline ended"
    );
    // A command the server does not know, or one whose pool was closed (the Delete released
    // it), has nothing to release.
    let unknown = matches!(result, Err(Error::NotFound { .. }) | Err(Error::Closed(_)));
    if let Err(e) = result {
        let _ = tx.send(Err(e)).await;
    }
    if !unknown && let Err(e) = shared.signal(pid, TERMINATE_SIGNAL).await {
        tracing::debug!(pipeline = %pid, error = %e, "terminate signal failed");
    }
    shared.released(pid);
    lock(&shared.routes).remove(&pid);
    lock(&shared.host_pending).remove(&pid);
    lock(&shared.command_ids).remove(&pid);
    lock(&shared.sm).close_pipeline(pid);
}

/// A running pipeline.
pub struct Pipeline {
    pool: RunspacePool,
    pid: uuid::Uuid,
    events: mpsc::Receiver<Result<Event>>,
    finished: Option<(PipelineState, Option<ErrorRecord>)>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The input Send in flight, if any.
    behind: Arc<WriteBehind>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("id", &self.pid).field("finished", &self.finished).finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline whose Receive loop runs already (an attached one).
    pub(super) fn attached(
        pool: RunspacePool,
        pid: uuid::Uuid,
        events: mpsc::Receiver<Result<Event>>,
        task: tokio::task::JoinHandle<()>,
    ) -> Self {
        Pipeline { pool, pid, events, finished: None, task: Some(task), behind: Default::default() }
    }

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
        PipelineControl { pool: self.pool.clone(), pid: self.pid, behind: self.behind.clone() }
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
    behind: Arc<WriteBehind>,
}

impl PipelineControl {
    /// Sends input objects. Returns once they are encoded, their first Send sealed (while the
    /// previous input's Send is in flight) and sent off after that one was answered, so the
    /// caller prepares the next objects while these travel; a Send that fails is reported by
    /// the next `send_input` or by [`end_input`](Self::end_input).
    pub async fn send_input(&self, values: Vec<Value>) -> Result<()> {
        let shared = &self.pool.shared;
        let (pid, behind) = (self.pid, &self.behind);
        let prepare = Box::pin(async move {
            let chunks = lock(&shared.sm).send_input(pid, &values)?;
            let lane = behind.lane(|| shared.client.lane());
            shared.seal_input(lane, chunks).await
        });
        let (shared, behind) = (shared.clone(), self.behind.clone());
        self.behind
            .start_prepared(prepare, move |sends| {
                Box::pin(async move { shared.post_input(behind.lane(|| shared.client.lane()), sends).await })
            })
            .await
    }

    /// Ends the input, once every input Send was answered.
    pub async fn end_input(&self) -> Result<()> {
        self.behind.settle().await?;
        self.behind.release_lane();
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
