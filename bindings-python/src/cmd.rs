//! `CmdShell` and `CmdProcess` of `psremote._native`: WinRS cmd shells and their commands,
//! blocking (GIL released, Ctrl-C aware) or completing asyncio futures.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use psremote::client::{self as core, CmdShellOptions, CommandOptions, OutputChunk, RunCmdOptions};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use tokio::sync::{Mutex as AsyncMutex, RwLock};

use crate::runtime::{spawn, wait};

fn none(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

fn seconds(name: &str, v: f64) -> PyResult<Duration> {
    match Duration::try_from_secs_f64(v) {
        Ok(d) if v > 0.0 => Ok(d),
        _ => Err(PyValueError::new_err(format!("{name} must be a positive number of seconds, not {v}"))),
    }
}

/// A new shell's options as the Python layer passes them (`psremote.cmd._shell_options`):
/// environment, working directory, code page, no-profile, idle timeout.
pub(crate) type ShellArgs = (Vec<(String, String)>, Option<String>, Option<u32>, bool, Option<f64>);

/// The core's shell options from what the Python layer passes (it checked the types).
pub(crate) fn shell_options(
    environment: Vec<(String, String)>,
    working_directory: Option<String>,
    codepage: Option<u32>,
    no_profile: bool,
    idle_timeout: Option<f64>,
) -> PyResult<CmdShellOptions> {
    Ok(CmdShellOptions {
        environment,
        working_directory,
        codepage,
        no_profile,
        idle_timeout: idle_timeout.map(|s| seconds("idle_timeout", s)).transpose()?,
    })
}

fn command_options(skip_cmd_shell: bool) -> CommandOptions {
    CommandOptions { skip_cmd_shell, ..CommandOptions::default() }
}

/// The core's `run_cmd` options from what the Python layer passes.
pub(crate) fn run_options(
    shell: CmdShellOptions,
    stdin: Option<Vec<u8>>,
    skip_cmd_shell: bool,
    timeout: Option<Duration>,
    max_output: Option<u64>,
) -> RunCmdOptions {
    RunCmdOptions { shell, command: command_options(skip_cmd_shell), stdin, timeout, max_output }
}

/// The core's `run_cmd_with`: a shell of its own, the command to completion (`stdin`, when
/// given, is sent and stdin closed; without it nothing is sent, as Windows' own clients do),
/// within the deadline and the output limit, and the shell deleted.
pub(crate) async fn run_cmd(
    client: core::Client,
    exe: String,
    args: Vec<String>,
    options: RunCmdOptions,
) -> psremote::Result<(Vec<u8>, Vec<u8>, i64)> {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = client.run_cmd_with(&exe, &argv, &options).await?;
    Ok((out.stdout, out.stderr, out.exit_code))
}

pub(crate) fn cmd_tuple(py: Python<'_>, (out, err, code): (Vec<u8>, Vec<u8>, i64)) -> PyResult<Py<PyAny>> {
    Ok((PyBytes::new(py, &out), PyBytes::new(py, &err), code).into_pyobject(py)?.into_any().unbind())
}

/// An open cmd shell. `close` deletes it on the server; dropping it does so in the background.
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct CmdShell {
    id: String,
    /// Starts share it; close takes it out (and waits for the starts under way).
    shell: Arc<RwLock<Option<core::CmdShell>>>,
}

impl CmdShell {
    pub(crate) fn new(shell: core::CmdShell) -> Self {
        Self { id: shell.id().to_owned(), shell: Arc::new(RwLock::new(Some(shell))) }
    }
}

/// Opens a shell on `client`.
pub(crate) async fn open_shell(client: core::Client, options: CmdShellOptions) -> psremote::Result<CmdShell> {
    Ok(CmdShell::new(client.open_cmd_shell(options).await?))
}

async fn start(
    shell: Arc<RwLock<Option<core::CmdShell>>>,
    exe: String,
    args: Vec<String>,
    options: CommandOptions,
) -> psremote::Result<CmdProcess> {
    let guard = shell.read().await;
    let shell = guard.as_ref().ok_or(psremote::Error::Closed("cmd shell"))?;
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    Ok(CmdProcess::new(shell.start_with(&exe, &argv, options).await?))
}

async fn close(shell: Arc<RwLock<Option<core::CmdShell>>>) -> psremote::Result<()> {
    let taken = shell.write().await.take();
    match taken {
        Some(s) => s.close().await,
        None => Ok(()),
    }
}

#[pymethods]
impl CmdShell {
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    fn start(
        &self,
        py: Python<'_>,
        executable: String,
        arguments: Vec<String>,
        skip_cmd_shell: bool,
    ) -> PyResult<CmdProcess> {
        wait(py, start(self.shell.clone(), executable, arguments, command_options(skip_cmd_shell)))
    }

    fn start_async(
        &self,
        py: Python<'_>,
        future: Bound<'_, PyAny>,
        executable: String,
        arguments: Vec<String>,
        skip_cmd_shell: bool,
    ) -> PyResult<()> {
        let fut = start(self.shell.clone(), executable, arguments, command_options(skip_cmd_shell));
        spawn(py, future, fut, |py, p| Ok(Py::new(py, p)?.into_any()))
    }

    /// A process for a command the shell already runs (`None`: the shell's own streams).
    #[pyo3(signature = (command_id=None))]
    fn attach(&self, py: Python<'_>, command_id: Option<String>) -> PyResult<CmdProcess> {
        let shell = self.shell.clone();
        wait(py, async move {
            let guard = shell.read().await;
            let shell = guard.as_ref().ok_or(psremote::Error::Closed("cmd shell"))?;
            Ok(CmdProcess::new(shell.attach(command_id.as_deref())?))
        })
    }

    fn close(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, close(self.shell.clone()))
    }

    fn close_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        spawn(py, future, close(self.shell.clone()), none)
    }
}

/// A running command: its output comes chunk by chunk (one reader at a time); stdin and
/// signals go through the core's control handle, so they pass a read that is waiting.
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct CmdProcess {
    id: String,
    control: core::CmdControl,
    output: Arc<AsyncMutex<core::CmdProcess>>,
    /// Copied from the core process when its output ends, so reading it never waits for a reader.
    exit_code: Arc<Mutex<Option<i64>>>,
}

impl CmdProcess {
    fn new(p: core::CmdProcess) -> Self {
        Self {
            id: p.id().to_owned(),
            control: p.control(),
            output: Arc::new(AsyncMutex::new(p)),
            exit_code: Arc::new(Mutex::new(None)),
        }
    }
}

/// The next chunk, or `None` at the end. A timeout loses nothing: the core's `next_output` is
/// cancel-safe, and the lock is released with the dropped future.
async fn next_chunk(
    output: Arc<AsyncMutex<core::CmdProcess>>,
    exit_code: Arc<Mutex<Option<i64>>>,
    timeout: Option<Duration>,
) -> psremote::Result<Option<OutputChunk>> {
    let read = async {
        let mut p = output.lock().await;
        let chunk = p.next_output().await?;
        if chunk.is_none() {
            *exit_code.lock().unwrap_or_else(PoisonError::into_inner) = p.exit_code();
        }
        Ok(chunk)
    };
    match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .map_err(|_| psremote::Error::Timeout(format!("no output from the command within {t:?}")))?,
        None => read.await,
    }
}

fn chunk_to_py(py: Python<'_>, chunk: Option<OutputChunk>) -> PyResult<Py<PyAny>> {
    let (stream, data) = match chunk {
        None => return Ok(py.None()),
        Some(OutputChunk::Stdout(d)) => ("stdout", d),
        Some(OutputChunk::Stderr(d)) => ("stderr", d),
    };
    Ok((stream, PyBytes::new(py, &data)).into_pyobject(py)?.into_any().unbind())
}

#[pymethods]
impl CmdProcess {
    #[getter]
    fn id(&self) -> &str {
        &self.id
    }

    /// The exit code once the output ended (None before, or when the command was terminated
    /// before the server reported one).
    #[getter]
    fn exit_code(&self) -> Option<i64> {
        *self.exit_code.lock().unwrap_or_else(PoisonError::into_inner)
    }

    #[pyo3(signature = (timeout=None))]
    fn next_chunk(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let t = timeout.map(|t| if t <= 0.0 { Ok(Duration::ZERO) } else { seconds("timeout", t) }).transpose()?;
        let chunk = wait(py, next_chunk(self.output.clone(), self.exit_code.clone(), t))?;
        chunk_to_py(py, chunk)
    }

    fn next_chunk_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        spawn(py, future, next_chunk(self.output.clone(), self.exit_code.clone(), None), chunk_to_py)
    }

    fn send_stdin(&self, py: Python<'_>, data: Vec<u8>, end: bool) -> PyResult<()> {
        let c = self.control.clone();
        wait(py, async move { c.send_stdin(&data, end).await })
    }

    fn send_stdin_async(&self, py: Python<'_>, future: Bound<'_, PyAny>, data: Vec<u8>, end: bool) -> PyResult<()> {
        let c = self.control.clone();
        spawn(py, future, async move { c.send_stdin(&data, end).await }, none)
    }

    fn ctrl_c(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.control.clone();
        wait(py, async move { c.ctrl_c().await })
    }

    fn ctrl_c_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let c = self.control.clone();
        spawn(py, future, async move { c.ctrl_c().await }, none)
    }

    fn terminate(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.control.clone();
        wait(py, async move { c.terminate().await })
    }

    fn terminate_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        let c = self.control.clone();
        spawn(py, future, async move { c.terminate().await }, none)
    }
}
