//! `Fleet` of `psremote._native`: the core's fan-out ([`core::Fleet`]) for Python.
//!
//! Each host's configuration is that of a native `Client` (built and validated by
//! `Client(...)`), so a fleet takes exactly the options a client takes. Results come back one
//! host at a time in completion order, blocking (GIL released, Ctrl-C aware) or completing an
//! asyncio future, each converted as `run_ps` and `run_cmd` convert theirs: output objects by
//! the same CLIXML conversion, records as the same dicts, errors as the same exception classes.

use std::sync::Arc;
use std::time::Duration;

use psremote::client::{self as core, FleetHost, FleetOptions, FleetWork, HostOutput, HostResult, HostStatus};
use psremote::client::{PipelineResult, runtime};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyList;
use tokio::sync::Mutex as AsyncMutex;

use crate::client::{Client, deadline, information_dict, progress_dict, record_dict, state_dict};
use crate::convert::{ConvertError, GcPause, NoKeys, ToPy};
use crate::errors::to_py_err;
use crate::runtime::{check_fork, spawn, wait};

/// A pipeline result with at least this many output objects is converted with Python's garbage
/// collector paused (as a large batch of pipeline events is).
const GC_PAUSE_OUTPUT: usize = 64;

/// A fan-out under way: started by the constructor, read with `next` / `next_async`, stopped
/// with `cancel` (or by being dropped).
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct Fleet {
    inner: Arc<AsyncMutex<core::Fleet>>,
    cancel: core::FleetCancel,
    total: usize,
}

impl Drop for Fleet {
    /// Python let go of the run: stop it, even while a `next` is still waiting on the runtime.
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// `seconds` as a person writes it: `2`, `0.5`.
fn shown(seconds: Duration) -> String {
    let s = seconds.as_secs_f64();
    if s.fract() == 0.0 { format!("{s:.0}") } else { format!("{s}") }
}

/// The next host to finish (None once all have), waiting at most `limit`.
async fn next_result(
    inner: Arc<AsyncMutex<core::Fleet>>,
    limit: Option<Duration>,
) -> psremote::Result<Option<HostResult>> {
    let next = async move { inner.lock().await.next().await };
    match limit {
        None => Ok(next.await),
        // Cancel-safe: a result not taken stays in the fleet's channel for the next call.
        Some(t) => tokio::time::timeout(t, next)
            .await
            .map_err(|_| psremote::Error::Timeout(format!("no host finished within {} s", shown(t)))),
    }
}

fn status_name(status: HostStatus) -> &'static str {
    match status {
        HostStatus::Succeeded => "Succeeded",
        HostStatus::Failed => "Failed",
        HostStatus::Unreachable => "Unreachable",
    }
}

/// A pipeline's result as the `(kind, payload)` tuples its events would have given, which
/// `PSResult._absorb` collects; the final state comes last.
fn pipeline_events<'py>(py: Python<'py>, r: &PipelineResult) -> Result<Bound<'py, PyList>, ConvertError> {
    let _gc = GcPause::new(py, r.output.len() >= GC_PAUSE_OUTPUT)?;
    // The host's pool is closed by now: a SecureString in the output cannot be decrypted.
    let keys = NoKeys;
    let mut conv = ToPy::new(py, &keys)?;
    let list = PyList::empty(py);
    for v in &r.output {
        list.append(("output", conv.convert(v)?))?;
    }
    for e in &r.errors {
        list.append(("error", record_dict(py, e)?))?;
    }
    for (kind, records) in [("warning", &r.warnings), ("verbose", &r.verbose), ("debug", &r.debug)] {
        for record in records {
            list.append((kind, &record.message))?;
        }
    }
    for record in &r.information {
        list.append(("information", information_dict(py, record, &mut conv)?))?;
    }
    for record in &r.progress {
        list.append(("progress", progress_dict(py, record)?))?;
    }
    if let Some(d) = state_dict(py, r.state, r.terminating_error.as_ref())? {
        list.append(("state", d))?;
    }
    Ok(list)
}

/// One host's result as `(index, host, status, elapsed, attempts, kind, payload)`: kind
/// `"powershell"` with the pipeline's events, `"cmd"` with `(stdout, stderr, exit_code)`, or
/// `"error"` with the exception `Client` would have raised.
fn host_result_py(py: Python<'_>, r: HostResult) -> PyResult<Py<PyAny>> {
    let mut status = status_name(r.status());
    let (kind, payload): (&str, Bound<'_, PyAny>) = match r.result {
        Ok(HostOutput::PowerShell(p)) => match pipeline_events(py, &p) {
            Ok(events) => ("powershell", events.into_any()),
            Err(ConvertError::NeedKey) => {
                let e = psremote::Error::Protocol(
                    "the output holds a SecureString, which a fleet run cannot decrypt (the host's runspace pool \
                     is closed); convert it on the server first"
                        .into(),
                );
                status = status_name(HostStatus::Failed);
                ("error", to_py_err(py, e).into_value(py).into_bound(py).into_any())
            }
            Err(ConvertError::Py(e)) => return Err(e),
        },
        Ok(HostOutput::Cmd(o)) => ("cmd", crate::cmd::cmd_tuple(py, (o.stdout, o.stderr, o.exit_code))?.into_bound(py)),
        Err(e) => ("error", to_py_err(py, e).into_value(py).into_bound(py).into_any()),
    };
    let tuple = (r.index, r.host, status, r.elapsed.as_secs_f64(), r.attempts, kind, payload);
    Ok(tuple.into_pyobject(py)?.into_any().unbind())
}

#[pymethods]
impl Fleet {
    /// Starts the work on every host at once (at most `throttle` running): `script` (PowerShell)
    /// or `executable` with `arguments` (cmd), not both.
    #[new]
    #[pyo3(signature = (hosts, script, executable, arguments, throttle, timeout, connect_retries, retry_delay, max_output, configuration_name=None, shell=None, stdin=None, skip_cmd_shell=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        hosts: Vec<(String, Bound<'_, Client>)>,
        script: Option<String>,
        executable: Option<String>,
        arguments: Vec<String>,
        throttle: usize,
        timeout: Option<f64>,
        connect_retries: u32,
        retry_delay: f64,
        max_output: Option<u64>,
        configuration_name: Option<String>,
        shell: Option<crate::cmd::ShellArgs>,
        stdin: Option<Vec<u8>>,
        skip_cmd_shell: bool,
    ) -> PyResult<Self> {
        check_fork()?;
        let work = match (script, executable) {
            (Some(script), None) => FleetWork::PowerShell(script),
            (None, Some(command)) => FleetWork::Cmd { command, arguments },
            _ => return Err(PyValueError::new_err("give either script or executable")),
        };
        let retry_delay = match Duration::try_from_secs_f64(retry_delay) {
            Ok(d) => d,
            Err(_) => {
                return Err(PyValueError::new_err(format!(
                    "retry_delay must be a number of seconds of at least 0, not {retry_delay}"
                )));
            }
        };
        let mut options = FleetOptions {
            throttle,
            timeout: deadline("timeout", timeout)?,
            connect_retries,
            retry_delay,
            max_output,
            stdin,
            ..FleetOptions::default()
        };
        if let Some(name) = configuration_name {
            options.pool.configuration_name = name;
        }
        if let Some((environment, working_directory, codepage, no_profile, idle_timeout)) = shell {
            options.shell =
                crate::cmd::shell_options(environment, working_directory, codepage, no_profile, idle_timeout)?;
        }
        options.command.skip_cmd_shell = skip_cmd_shell;
        let hosts: Vec<FleetHost> =
            hosts.into_iter().map(|(name, client)| FleetHost { name, config: client.get().handle().1 }).collect();
        let total = hosts.len();
        // The fleet spawns its hosts' tasks on the runtime it is started in.
        let _entered = runtime().enter();
        let fleet = core::Fleet::start(hosts, work, options).map_err(|e| to_py_err(py, e))?;
        Ok(Self { cancel: fleet.canceller(), inner: Arc::new(AsyncMutex::new(fleet)), total })
    }

    /// How many hosts the run has.
    #[getter]
    fn total(&self) -> usize {
        self.total
    }

    /// Whether `cancel` was called (or the fleet dropped).
    #[getter]
    fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Stops the run: hosts not started yet report a ClosedError without being contacted,
    /// running ones are cut off (what they opened on the server is released in the background).
    fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The next host's result, None once every host reported; OperationTimeoutError when
    /// none finished within `timeout` seconds (the run goes on).
    #[pyo3(signature = (timeout=None))]
    fn next(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Py<PyAny>>> {
        let limit = deadline("timeout", timeout)?;
        let found = wait(py, next_result(self.inner.clone(), limit))?;
        found.map(|r| host_result_py(py, r)).transpose()
    }

    /// `next` for asyncio: completes `future` with the next result or None. Cancelling the
    /// future stops the wait; a result already taken from the run then goes with it, so the
    /// Python layer shields the future instead of cancelling it.
    fn next_async(&self, py: Python<'_>, future: Bound<'_, PyAny>) -> PyResult<()> {
        spawn(py, future, next_result(self.inner.clone(), None), |py, found| match found {
            Some(r) => host_result_py(py, r),
            None => Ok(py.None()),
        })
    }

    /// Waits up to `grace` seconds until the background cleanups (the Signal and Delete requests
    /// releasing what cancelled or timed-out hosts had opened) have finished; whether none is left.
    fn wait_for_cleanup(&self, py: Python<'_>, grace: f64) -> PyResult<bool> {
        let limit = crate::client::grace(grace)?;
        wait(py, async move { Ok(core::cleanup_finished(limit).await) })
    }

    fn wait_for_cleanup_async(&self, py: Python<'_>, future: Bound<'_, PyAny>, grace: f64) -> PyResult<()> {
        let limit = crate::client::grace(grace)?;
        spawn(py, future, async move { Ok(core::cleanup_finished(limit).await) }, |py, done| {
            Ok(pyo3::types::PyBool::new(py, done).to_owned().into_any().unbind())
        })
    }

    fn __repr__(&self) -> String {
        format!("<Fleet hosts={}{}>", self.total, if self.cancel.is_cancelled() { " cancelled" } else { "" })
    }
}

/// Adds the class to the module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Fleet>()
}
