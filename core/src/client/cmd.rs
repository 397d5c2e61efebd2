//! WinRS cmd shells and the processes run in them (MS-WSMV 3.1.4.11–3.1.4.16).

use std::collections::VecDeque;
use std::time::Duration;

use super::Client;
use super::runtime::spawn_detached;
use crate::error::{Error, Result};
use crate::wsman::winrs::{self, CommandState, ShellSpec};
use crate::wsman::{CMD_SHELL_URI, OptionEntry, action, code};

/// Options for a new cmd shell.
#[derive(Debug, Clone, Default)]
pub struct CmdShellOptions {
    /// Environment variables for every command in the shell.
    pub environment: Vec<(String, String)>,
    /// Working directory of the shell.
    pub working_directory: Option<String>,
    /// Console code page of the output (`WINRS_CODEPAGE`), e.g. 65001 for UTF-8.
    pub codepage: Option<u32>,
    /// Do not load the user profile (`WINRS_NOPROFILE`).
    pub no_profile: bool,
    /// Idle time after which the server may close the shell.
    pub idle_timeout: Option<Duration>,
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
        let reply = client.call(action::CREATE, CMD_SHELL_URI, None, &opts, &spec.body(), None).await?;
        let shell_id = winrs::shell_id_from_create(&reply)?;
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
        Ok(CmdProcess {
            client: self.client.clone(),
            shell_id: self.shell_id.clone(),
            command_id,
            pending: VecDeque::new(),
            exit_code: None,
            released: false,
        })
    }

    /// Runs a command to completion and collects its output.
    pub async fn run(&self, command: &str, arguments: &[&str]) -> Result<CmdOutput> {
        self.start(command, arguments).await?.wait().await
    }

    /// Deletes the shell on the server.
    pub async fn close(mut self) -> Result<()> {
        self.open = false;
        delete_shell(&self.client, &self.shell_id).await?;
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

/// A running command. Read its output with [`CmdProcess::next_output`] or [`CmdProcess::wait`].
/// The command's server state is released (Signal Terminate) when it finishes, on any error, and
/// when the value is dropped.
#[derive(Debug)]
pub struct CmdProcess {
    client: Client,
    shell_id: String,
    command_id: String,
    pending: VecDeque<OutputChunk>,
    exit_code: Option<i64>,
    released: bool,
}

/// Raw bytes per Send: what fits in a 153600-byte envelope after base64 and the SOAP header.
const STDIN_CHUNK: usize = 96 * 1024;

impl CmdProcess {
    /// The server's id for this command.
    pub fn id(&self) -> &str {
        &self.command_id
    }

    /// The exit code, once [`next_output`](Self::next_output) returned `None`.
    pub fn exit_code(&self) -> Option<i64> {
        self.exit_code
    }

    /// Writes to the command's stdin; `end` closes it afterwards.
    pub async fn send_stdin(&mut self, data: &[u8], end: bool) -> Result<()> {
        if self.released {
            return Err(Error::Closed("command"));
        }
        let budget = (self.client.inner.config.max_envelope_size as usize).saturating_sub(4096) / 4 * 3;
        let chunk = STDIN_CHUNK.min(budget.max(1024));
        let mut pieces: Vec<&[u8]> = data.chunks(chunk).collect();
        if pieces.is_empty() {
            pieces.push(&[]);
        }
        let last = pieces.len() - 1;
        for (i, piece) in pieces.into_iter().enumerate() {
            let body = winrs::send_body("stdin", Some(&self.command_id), piece, end && i == last);
            self.client.call(action::SEND, CMD_SHELL_URI, Some(&self.shell_id), &[], &body, None).await?;
        }
        Ok(())
    }

    /// The next piece of output, or `None` when the command has finished (then
    /// [`exit_code`](Self::exit_code) is set).
    pub async fn next_output(&mut self) -> Result<Option<OutputChunk>> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(Some(c));
            }
            if self.exit_code.is_some() || self.released {
                return Ok(None);
            }
            match self.receive_once().await {
                Ok(()) => {}
                Err(e) => {
                    self.release().await;
                    return Err(e);
                }
            }
        }
    }

    async fn receive_once(&mut self) -> Result<()> {
        let body = winrs::receive_body("stdout stderr", Some(&self.command_id));
        let opts = [OptionEntry::new("WSMAN_CMDSHELL_OPTION_KEEPALIVE", "TRUE")];
        let reply =
            match self.client.call(action::RECEIVE, CMD_SHELL_URI, Some(&self.shell_id), &opts, &body, None).await {
                Ok(r) => r,
                // Nothing arrived within the OperationTimeout: poll again.
                Err(Error::Fault(f)) if f.is_operation_timeout() => return Ok(()),
                Err(e) => return Err(e),
            };
        let out = winrs::parse_receive(&reply)?;
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
        if out.state == Some(CommandState::Done) {
            self.exit_code = Some(out.exit_code.unwrap_or(0));
            tracing::info!(
                target: "psremote::audit",
                event = "command_end",
                endpoint = self.client.url(),
                shell_id = self.shell_id,
                command_id = self.command_id,
                exit_code = self.exit_code,
                "command ended"
            );
            // MS-WSMV: after Done the client releases the command with Signal Terminate.
            self.release().await;
        }
        Ok(())
    }

    /// Reads until the command finishes and returns everything it wrote.
    pub async fn wait(mut self) -> Result<CmdOutput> {
        let mut out = CmdOutput::default();
        while let Some(chunk) = self.next_output().await? {
            match chunk {
                OutputChunk::Stdout(d) => out.stdout.extend_from_slice(&d),
                OutputChunk::Stderr(d) => out.stderr.extend_from_slice(&d),
            }
        }
        out.exit_code = self.exit_code.ok_or_else(|| Error::protocol("command ended without an exit code"))?;
        Ok(out)
    }

    /// Sends Ctrl-C to the command.
    pub async fn ctrl_c(&self) -> Result<()> {
        let body = winrs::signal_body(&self.command_id, winrs::signal::CTRL_C);
        self.client.call(action::SIGNAL, CMD_SHELL_URI, Some(&self.shell_id), &[], &body, None).await?;
        Ok(())
    }

    /// Stops the command (if still running) and releases it on the server.
    pub async fn terminate(mut self) -> Result<()> {
        self.released = true;
        signal_terminate(&self.client, &self.shell_id, &self.command_id).await
    }

    async fn release(&mut self) {
        if !self.released {
            self.released = true;
            if let Err(e) = signal_terminate(&self.client, &self.shell_id, &self.command_id).await {
                tracing::debug!(command_id = self.command_id, error = %e, "terminate signal failed");
            }
        }
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
        if !self.released {
            let client = self.client.clone();
            let shell = std::mem::take(&mut self.shell_id);
            let cmd = std::mem::take(&mut self.command_id);
            spawn_detached(async move {
                let _ = signal_terminate(&client, &shell, &cmd).await;
            });
        }
    }
}
