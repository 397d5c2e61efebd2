//! WinRS cmd shells and the processes run in them (MS-WSMV 3.1.4.11–3.1.4.16).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::backoff::{ReceiveBackoff, pause};
use super::create::Create;
use super::runtime::{finish_in_background, spawn_detached};
use super::write_behind::WriteBehind;
use super::{Body, Call, Client};
use crate::error::{Error, Result};
use crate::wsman::winrs::{self, ShellSpec};
use crate::wsman::{CMD_SHELL_URI, OptionEntry, Reply, action, code};

/// Options for a new cmd shell.
#[derive(Debug, Clone)]
pub struct CmdShellOptions {
    /// Environment variables for every command in the shell.
    pub environment: Vec<(String, String)>,
    /// Working directory of the shell.
    pub working_directory: Option<String>,
    /// Console code page of the output (`WINRS_CODEPAGE`). [`UTF8_CODEPAGE`] by default, so
    /// output decodes as UTF-8; `None` sends no option and leaves the server's OEM code page
    /// (437 on an English Windows).
    pub codepage: Option<u32>,
    /// Do not load the user profile (`WINRS_NOPROFILE`).
    pub no_profile: bool,
    /// Idle time after which the server may close the shell.
    pub idle_timeout: Option<Duration>,
}

/// The UTF-8 console code page (65001), what [`CmdShellOptions::default`] asks for.
pub const UTF8_CODEPAGE: u32 = 65001;

impl Default for CmdShellOptions {
    fn default() -> Self {
        Self {
            environment: Vec::new(),
            working_directory: None,
            codepage: Some(UTF8_CODEPAGE),
            no_profile: false,
            idle_timeout: None,
        }
    }
}

/// Options for one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandOptions {
    /// Run the program directly instead of through cmd.exe (`WINRS_SKIP_CMD_SHELL`).
    pub skip_cmd_shell: bool,
    /// Console-mode stdin (`WINRS_CONSOLEMODE_STDIN`).
    pub console_mode_stdin: bool,
}

impl Default for CommandOptions {
    fn default() -> Self {
        Self { skip_cmd_shell: false, console_mode_stdin: true }
    }
}

/// Everything a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CmdOutput {
    /// Bytes written to stdout.
    pub stdout: Vec<u8>,
    /// Bytes written to stderr.
    pub stderr: Vec<u8>,
    /// The process exit code.
    pub exit_code: i64,
}

/// A piece of output as it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    /// Bytes from stdout.
    Stdout(Vec<u8>),
    /// Bytes from stderr.
    Stderr(Vec<u8>),
}

/// An open cmd shell. Close it with [`CmdShell::close`]; dropping it deletes it in the background.
#[derive(Debug)]
pub struct CmdShell {
    client: Client,
    shell_id: String,
    open: bool,
}

async fn delete_shell(client: &Client, shell_id: &str) -> Result<()> {
    match client.call(action::DELETE, CMD_SHELL_URI, Some(shell_id), &[], "", None).await {
        Ok(_) => Ok(()),
        // The shell is already gone: that is what Delete wanted.
        Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => Ok(()),
        Err(e) => Err(e),
    }
}

impl CmdShell {
    pub(super) async fn open(client: Client, options: CmdShellOptions) -> Result<Self> {
        client.require_wsman("a cmd shell")?;
        let spec = ShellSpec {
            environment: options.environment,
            working_directory: options.working_directory,
            idle_timeout: options.idle_timeout,
            input_streams: "stdin".into(),
            output_streams: "stdout stderr".into(),
        };
        let mut opts = vec![OptionEntry::new("WINRS_NOPROFILE", if options.no_profile { "TRUE" } else { "FALSE" })];
        if let Some(cp) = options.codepage {
            opts.push(OptionEntry::new("WINRS_CODEPAGE", cp.to_string()));
        }
        // A caller that stops waiting (a deadline) during the Create leaves no shell behind.
        let create = Create {
            resource_uri: CMD_SHELL_URI.to_owned(),
            options: opts,
            body: spec.body(),
            max_envelope_size: None,
        };
        let reply = create.send(&client).await?;
        let shell_id = winrs::shell_id_from_create(&reply)?;
        if !winrs::is_wsman_id(&shell_id) {
            return Err(Error::protocol(format!(
                "the server named the shell with an id that is not a WS-Man id ({} bytes)",
                shell_id.len()
            )));
        }
        tracing::info!(target: "psremote::audit", event = "shell_open", endpoint = client.url(), shell_id, "cmd shell opened");
        Ok(Self { client, shell_id, open: true })
    }

    /// The server's id for this shell.
    pub fn id(&self) -> &str {
        &self.shell_id
    }

    /// Starts `command` with `arguments`. The server joins them into one command line, as
    /// cmd.exe does.
    pub async fn start(&self, command: &str, arguments: &[&str]) -> Result<CmdProcess> {
        self.start_with(command, arguments, CommandOptions::default()).await
    }

    /// Starts a command with explicit options.
    pub async fn start_with(&self, command: &str, arguments: &[&str], options: CommandOptions) -> Result<CmdProcess> {
        if !self.open {
            return Err(Error::Closed("cmd shell"));
        }
        let args: Vec<String> = arguments.iter().map(|a| (*a).to_owned()).collect();
        let flag = |b: bool| if b { "TRUE" } else { "FALSE" };
        let opts = [
            OptionEntry::new("WINRS_CONSOLEMODE_STDIN", flag(options.console_mode_stdin)),
            OptionEntry::new("WINRS_SKIP_CMD_SHELL", flag(options.skip_cmd_shell)),
        ];
        let body = winrs::command_body(command, &args, None);
        let reply = self.client.call(action::COMMAND, CMD_SHELL_URI, Some(&self.shell_id), &opts, &body, None).await?;
        let command_id = winrs::command_id_from_reply(&reply)?;
        if !winrs::is_wsman_id(&command_id) {
            return Err(Error::protocol(format!(
                "the server named the command with an id that is not a WS-Man id ({} bytes)",
                command_id.len()
            )));
        }
        let audit_args = self.client.config().audit_arguments.then(|| args.join(" "));
        tracing::info!(
            target: "psremote::audit",
            event = "command_start",
            endpoint = self.client.url(),
            shell_id = self.shell_id,
            command_id,
            command,
            arguments = audit_args,
            "command started"
        );
        Ok(self.process(command_id))
    }

    /// A process for a command this shell already runs, by the id the server gave it (a command
    /// whose [`CmdProcess`] is gone, or whose id was kept): reading it receives the output the
    /// server still holds, and signals and stdin reach it. An id the server does not know fails
    /// on the first read with [`Error::NotFound`]. `None` reads the shell's own output streams
    /// (a Receive without a CommandId, for shell plugins that write at shell level; a cmd shell
    /// refuses it with an InvalidParameter fault); that process takes no stdin or signals.
    pub fn attach(&self, command_id: Option<&str>) -> Result<CmdProcess> {
        if !self.open {
            return Err(Error::Closed("cmd shell"));
        }
        let command_id = match command_id {
            Some(id) if winrs::is_wsman_id(id) => id.to_owned(),
            Some(id) => return Err(Error::InvalidConfig(format!("{id:?} is not a WS-Man command id"))),
            None => String::new(),
        };
        Ok(self.process(command_id))
    }

    fn process(&self, command_id: String) -> CmdProcess {
        CmdProcess {
            control: CmdControl {
                client: self.client.clone(),
                shell_id: self.shell_id.clone(),
                command_id,
                released: Arc::new(AtomicBool::new(false)),
                behind: Default::default(),
            },
            pending: VecDeque::new(),
            exit_code: None,
            receiving: None,
            backoff: ReceiveBackoff::new(self.client.config().operation_timeout),
        }
    }

    /// Runs a command to completion and collects its output.
    pub async fn run(&self, command: &str, arguments: &[&str]) -> Result<CmdOutput> {
        self.start(command, arguments).await?.wait().await
    }

    /// Deletes the shell on the server.
    pub async fn close(mut self) -> Result<()> {
        self.open = false;
        let (client, id) = (self.client.clone(), self.shell_id.clone());
        finish_in_background(async move { delete_shell(&client, &id).await }).await?;
        tracing::info!(
            target: "psremote::audit",
            event = "shell_close",
            endpoint = self.client.url(),
            shell_id = self.shell_id,
            "cmd shell closed"
        );
        Ok(())
    }
}

impl Drop for CmdShell {
    fn drop(&mut self) {
        if self.open {
            let client = self.client.clone();
            let id = std::mem::take(&mut self.shell_id);
            spawn_detached(async move {
                if let Err(e) = delete_shell(&client, &id).await {
                    tracing::warn!(shell_id = id, error = %e, "could not delete a dropped cmd shell");
                }
            });
        }
    }
}

/// A running command. Read its output with [`CmdProcess::next_output`] or [`CmdProcess::wait`];
/// stdin and signals go through it, or through a [`CmdControl`] from other tasks meanwhile.
/// The command's server state is released (Signal Terminate) when it finishes, on any error, and
/// when the value is dropped.
#[derive(Debug)]
pub struct CmdProcess {
    control: CmdControl,
    pending: VecDeque<OutputChunk>,
    exit_code: Option<i64>,
    /// The Receive in flight. It runs as a task of its own, so a caller that stops waiting for
    /// [`next_output`](CmdProcess::next_output) (a timeout, a cancelled task) loses no output:
    /// the next call takes up the same reply.
    receiving: Option<JoinHandle<(Result<Reply>, Duration)>>,
    /// Paces the Receives against a server that answers them at once with nothing.
    backoff: ReceiveBackoff,
}

/// Stdin and signals of a running command, usable from any task while another one waits in
/// [`CmdProcess::next_output`]: every request takes a connection of its own, so a Send or a
/// Signal never queues behind a pending Receive. Cheap to clone; get one with
/// [`CmdProcess::control`].
#[derive(Debug, Clone)]
pub struct CmdControl {
    client: Client,
    shell_id: String,
    command_id: String,
    /// Set once Signal Terminate is on its way: after Done, on an error, by a terminate or a drop.
    released: Arc<AtomicBool>,
    /// The stdin Send in flight, if any.
    behind: Arc<WriteBehind>,
}

/// The stdout and stderr bytes (together) that [`CmdProcess::wait`] and `run_cmd` collect by
/// default: 64 MiB, far above what a command run for its result writes, low enough that a command
/// that never stops writing cannot exhaust the client's memory.
pub const DEFAULT_MAX_OUTPUT: u64 = 64 * 1024 * 1024;

/// Raw bytes per Send: what fits in a 153600-byte envelope after base64 and the SOAP header.
const STDIN_CHUNK: usize = 96 * 1024;

impl CmdControl {
    /// The server's id for the command.
    pub fn id(&self) -> &str {
        &self.command_id
    }

    /// Whether this reads the shell's own streams rather than a command's.
    fn is_shell_level(&self) -> bool {
        self.command_id.is_empty()
    }

    fn no_command(&self) -> Result<()> {
        if self.is_shell_level() {
            Err(Error::InvalidConfig("the shell's own output streams have no command to signal or feed".into()))
        } else {
            Ok(())
        }
    }

    fn is_released(&self) -> bool {
        self.released.load(Ordering::SeqCst)
    }

    /// Writes to the command's stdin; `end` closes it afterwards. Fails with [`Error::Closed`]
    /// once the command has finished or was terminated, and with the server's fault when it
    /// refuses the data: it returns once every Send of `data` was answered. Data larger than one
    /// Send goes out in pieces, each built and sealed while the one before is in flight, on one
    /// connection kept for the command's stdin until it ends.
    pub async fn send_stdin(&self, data: &[u8], end: bool) -> Result<()> {
        self.no_command()?;
        if self.is_released() {
            return Err(Error::Closed("command"));
        }
        let budget = (self.client.envelope_size() as usize).saturating_sub(4096) / 4 * 3;
        let chunk = STDIN_CHUNK.min(budget.max(1024));
        let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        let last = pieces.len() - 1;
        let calls: Vec<Call<'_>> = pieces
            .iter()
            .enumerate()
            .map(|(i, piece)| Call {
                action: action::SEND,
                resource_uri: CMD_SHELL_URI,
                shell_id: Some(&self.shell_id),
                options: &[],
                body: Body::Send {
                    stream: "stdin",
                    command_id: Some(&self.command_id),
                    pieces: std::slice::from_ref(piece),
                    end: end && i == last,
                },
                operation_timeout: None,
                max_envelope_size: None,
            })
            .collect();
        // One writer at a time: pieces of two writes never interleave.
        let _turn = self.behind.exclusive().await?;
        let lane = self.behind.lane(|| self.client.lane());
        self.client.post_in_order(lane, None, &calls).await?;
        if end {
            self.behind.release_lane();
        }
        Ok(())
    }

    /// Sends Ctrl-C to the command (MS-WSMV 3.1.4.14). Nothing is sent once the command has
    /// finished or was terminated: there is nothing left to interrupt.
    pub async fn ctrl_c(&self) -> Result<()> {
        self.no_command()?;
        if self.is_released() {
            return Ok(());
        }
        let body = winrs::signal_body(&self.command_id, winrs::signal::CTRL_C);
        self.client.call(action::SIGNAL, CMD_SHELL_URI, Some(&self.shell_id), &[], &body, None).await?;
        Ok(())
    }

    /// Stops the command (if still running) and releases it on the server. A reader waiting in
    /// [`CmdProcess::next_output`] gets the output already received, then `None`; the exit code
    /// stays unknown unless the server reported one first. Calling it again does nothing.
    pub async fn terminate(&self) -> Result<()> {
        if self.released.swap(true, Ordering::SeqCst) || self.is_shell_level() {
            return Ok(());
        }
        signal_terminate(&self.client, &self.shell_id, &self.command_id).await
    }

    /// A Receive after waiting `wait` (cut short once the command is released), and how long
    /// the Receive itself took.
    async fn paced_receive(self, wait: Duration) -> (Result<Reply>, Duration) {
        if !wait.is_zero() && pause(wait, || self.is_released()).await {
            return (Err(Error::Closed("command")), Duration::ZERO);
        }
        let sent = tokio::time::Instant::now();
        let reply = self.receive().await;
        (reply, sent.elapsed())
    }

    async fn receive(self) -> Result<Reply> {
        let command = (!self.is_shell_level()).then_some(self.command_id.as_str());
        let body = winrs::receive_body("stdout stderr", command);
        let opts = [OptionEntry::new("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "TRUE")];
        match self.client.call(action::RECEIVE, CMD_SHELL_URI, Some(&self.shell_id), &opts, &body, None).await {
            // The server does not know the command (never started here, released, or timed out).
            Err(Error::Fault(fault)) if fault.code == Some(code::INVALID_SELECTORS) && command.is_some() => {
                Err(Error::NotFound { what: format!("command {}", self.command_id), fault })
            }
            other => other,
        }
    }
}

impl CmdProcess {
    /// The server's id for this command.
    pub fn id(&self) -> &str {
        &self.control.command_id
    }

    /// A handle for stdin and signals from other tasks while this one reads the output.
    pub fn control(&self) -> CmdControl {
        self.control.clone()
    }

    /// The exit code, once [`next_output`](Self::next_output) returned `None` (unless the
    /// command was terminated before the server reported one).
    pub fn exit_code(&self) -> Option<i64> {
        self.exit_code
    }

    /// Writes to the command's stdin; `end` closes it afterwards.
    pub async fn send_stdin(&self, data: &[u8], end: bool) -> Result<()> {
        self.control.send_stdin(data, end).await
    }

    /// The next piece of output, or `None` when the command has finished (then
    /// [`exit_code`](Self::exit_code) is set) or was terminated.
    ///
    /// Cancel-safe: dropping the future (say, in `tokio::time::timeout`) loses no output.
    pub async fn next_output(&mut self) -> Result<Option<OutputChunk>> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(Some(c));
            }
            if self.exit_code.is_some() || self.control.is_released() {
                return Ok(None);
            }
            if let Err(e) = self.receive_once().await {
                // After a terminate the Receive may fail (the command is gone): the output ends.
                let terminated = self.control.is_released();
                if matches!(e, Error::NotFound { .. }) {
                    // Nothing on the server to release.
                    self.control.released.store(true, Ordering::SeqCst);
                }
                self.release().await;
                return if terminated { Ok(None) } else { Err(e) };
            }
        }
    }

    async fn receive_once(&mut self) -> Result<()> {
        let control = &self.control;
        let wait = self.backoff.next_wait();
        let receiving = self.receiving.get_or_insert_with(|| tokio::spawn(control.clone().paced_receive(wait)));
        let joined = receiving.await;
        self.receiving = None;
        let (reply, took) = match joined {
            Ok((Ok(r), took)) => (r, took),
            // Nothing arrived within the OperationTimeout: poll again.
            Ok((Err(Error::Fault(f)), took)) if f.is_operation_timeout() => {
                self.backoff.after_receive(true, took);
                return Ok(());
            }
            Ok((Err(e), _)) => return Err(e),
            Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
            Err(_) => return Err(Error::Closed("command")),
        };
        let out = winrs::parse_receive(&reply)?;
        let idle = out.streams.iter().all(|s| s.data.is_empty()) && out.state != Some(winrs::CommandState::Done);
        self.backoff.after_receive(idle, took);
        // The whole reply is checked before any of it is taken: a reply with another command's
        // output, or a Done without its exit code, hands the caller nothing of it.
        let command = (!self.control.is_shell_level()).then_some(self.control.command_id.as_str());
        out.check_command(command)?;
        let exit_code = out.done_exit_code()?;
        for s in out.streams {
            if s.data.is_empty() {
                continue;
            }
            match s.name.as_str() {
                "stdout" => self.pending.push_back(OutputChunk::Stdout(s.data)),
                "stderr" => self.pending.push_back(OutputChunk::Stderr(s.data)),
                other => tracing::debug!(stream = other, "ignoring output on an unrequested stream"),
            }
        }
        if let Some(code) = exit_code {
            self.exit_code = Some(code);
            tracing::info!(
                target: "psremote::audit",
                event = "command_end",
                endpoint = self.control.client.url(),
                shell_id = self.control.shell_id,
                command_id = self.control.command_id,
                exit_code = self.exit_code,
                "command ended"
            );
            // MS-WSMV: after Done the client releases the command with Signal Terminate.
            self.release().await;
        }
        Ok(())
    }

    /// Reads until the command finishes and returns everything it wrote, up to
    /// [`DEFAULT_MAX_OUTPUT`] bytes of stdout and stderr together (see [`Self::wait_limited`]).
    pub async fn wait(self) -> Result<CmdOutput> {
        self.wait_limited(Some(DEFAULT_MAX_OUTPUT)).await
    }

    /// Like [`Self::wait`], keeping at most `max_output` bytes of stdout and stderr together
    /// (`None`: no limit). A command that writes more is terminated (Signal Terminate) and the
    /// call fails with [`Error::OutputTooLarge`]. Reading with [`Self::next_output`] has no limit.
    pub async fn wait_limited(mut self, max_output: Option<u64>) -> Result<CmdOutput> {
        let mut out = CmdOutput::default();
        while let Some(chunk) = self.next_output().await? {
            match chunk {
                OutputChunk::Stdout(d) => out.stdout.extend_from_slice(&d),
                OutputChunk::Stderr(d) => out.stderr.extend_from_slice(&d),
            }
            if let Some(limit) = max_output
                && (out.stdout.len() + out.stderr.len()) as u64 > limit
            {
                // The command goes on writing otherwise; what it wrote so far is not a result.
                self.release().await;
                return Err(Error::OutputTooLarge { limit });
            }
        }
        out.exit_code = match self.exit_code {
            Some(code) => code,
            None if self.control.is_released() => return Err(Error::Closed("command")),
            None => return Err(Error::protocol("command ended without an exit code")),
        };
        Ok(out)
    }

    /// Sends Ctrl-C to the command.
    pub async fn ctrl_c(&self) -> Result<()> {
        self.control.ctrl_c().await
    }

    /// Stops the command (if still running) and releases it on the server.
    pub async fn terminate(self) -> Result<()> {
        self.control.terminate().await
    }

    /// Sends Signal Terminate once. It runs as a task of its own, so a caller that stops waiting
    /// does not leave the command behind on the server.
    async fn release(&mut self) {
        if self.control.released.swap(true, Ordering::SeqCst) || self.control.is_shell_level() {
            return;
        }
        let c = self.control.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = signal_terminate(&c.client, &c.shell_id, &c.command_id).await {
                tracing::debug!(command_id = c.command_id, error = %e, "terminate signal failed");
            }
        });
        let _ = task.await;
    }
}

async fn signal_terminate(client: &Client, shell_id: &str, command_id: &str) -> Result<()> {
    let body = winrs::signal_body(command_id, winrs::signal::TERMINATE);
    match client.call(action::SIGNAL, CMD_SHELL_URI, Some(shell_id), &[], &body, None).await {
        Ok(_) => Ok(()),
        Err(Error::Fault(f)) if f.code == Some(code::INVALID_SELECTORS) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for CmdProcess {
    fn drop(&mut self) {
        if let Some(receiving) = self.receiving.take() {
            receiving.abort();
        }
        if !self.control.released.swap(true, Ordering::SeqCst) && !self.control.is_shell_level() {
            let c = self.control.clone();
            spawn_detached(async move {
                let _ = signal_terminate(&c.client, &c.shell_id, &c.command_id).await;
            });
        }
    }
}
