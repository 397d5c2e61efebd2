//! [`Client::run_cmd_with`]: one command in a cmd shell of its own, to completion, within a
//! deadline and an output limit.

use std::time::Duration;

use super::cmd::{CmdOutput, CmdShellOptions, CommandOptions, DEFAULT_MAX_OUTPUT};
use super::{Client, within};
use crate::error::Result;

/// Options of [`Client::run_cmd_with`].
#[derive(Debug, Clone)]
pub struct RunCmdOptions {
    /// The shell the command runs in (UTF-8 code page by default).
    pub shell: CmdShellOptions,
    /// How the command is started.
    pub command: CommandOptions,
    /// Sent to the command's stdin, which is then closed; `None` sends nothing (as Windows' own
    /// clients do), so a command that reads stdin waits for it.
    pub stdin: Option<Vec<u8>>,
    /// Deadline of the whole call, opening and deleting the shell included; `None`: none. On
    /// expiry the call fails with [`Error::Timeout`](crate::Error::Timeout) and the command and
    /// its shell are released on the server in the background (Signal Terminate, Delete).
    pub timeout: Option<Duration>,
    /// The stdout and stderr bytes (together) kept; [`DEFAULT_MAX_OUTPUT`] by default, `None`:
    /// no limit. Past it the call fails with
    /// [`Error::OutputTooLarge`](crate::Error::OutputTooLarge), the command is terminated and
    /// the shell deleted.
    pub max_output: Option<u64>,
}

impl Default for RunCmdOptions {
    fn default() -> Self {
        Self {
            shell: CmdShellOptions::default(),
            command: CommandOptions::default(),
            stdin: None,
            timeout: None,
            max_output: Some(DEFAULT_MAX_OUTPUT),
        }
    }
}

impl Client {
    /// Opens a cmd shell, runs one command to completion, collects its output and deletes the
    /// shell, as [`Client::run_cmd`] does, with the options given. Dropping the future (a
    /// cancelled task, an outer timeout) releases the command and the shell in the background.
    pub async fn run_cmd_with(&self, command: &str, arguments: &[&str], options: &RunCmdOptions) -> Result<CmdOutput> {
        let work = async {
            let shell = self.open_cmd_shell(options.shell.clone()).await?;
            let result = async {
                let process = shell.start_with(command, arguments, options.command).await?;
                if let Some(data) = &options.stdin {
                    process.send_stdin(data, true).await?;
                }
                process.wait_limited(options.max_output).await
            }
            .await;
            let closed = shell.close().await;
            let out = result?;
            closed?;
            Ok(out)
        };
        within(options.timeout, || format!("the command {command:?}"), work).await
    }
}
