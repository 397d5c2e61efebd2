//! Files for `psremote._native`: `Client::copy` and `Client::fetch`, blocking (GIL released,
//! Ctrl-C aware) or completing asyncio futures. Translation only: the transfer, its checks and
//! its clean-up are the core's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use psremote::client::{CopyOptions, FetchOptions, ProgressCallback};
use psremote::{Error, FileError, FileErrorKind, FileSide};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;
use tokio::sync::watch;

use crate::client::{Client, get};
use crate::runtime::{spawn_in, wait_in};

/// Stops a running copy or fetch: the Python layer fires it when an asyncio caller is
/// cancelled or its progress callback asks to stop. The transfer then ends with a `Cancelled`
/// file error, its pool deleted and its partial local file removed.
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct TransferCancel {
    tx: Arc<watch::Sender<bool>>,
}

#[pymethods]
impl TransferCancel {
    #[new]
    fn new() -> Self {
        Self { tx: Arc::new(watch::channel(false).0) }
    }

    /// Asks the transfer to stop; harmless when it already ended.
    fn cancel(&self) {
        self.tx.send_replace(true);
    }

    #[getter]
    fn cancelled(&self) -> bool {
        *self.tx.borrow()
    }
}

/// What a finished transfer did, as a tuple: (path, bytes, sha1, warnings).
type Outcome = (String, u64, String, Vec<String>);

fn outcome_to_py(py: Python<'_>, o: Outcome) -> PyResult<Py<PyAny>> {
    Ok(PyTuple::new(
        py,
        [
            o.0.into_pyobject(py)?.into_any(),
            o.1.into_pyobject(py)?.into_any(),
            o.2.into_pyobject(py)?.into_any(),
            o.3.into_pyobject(py)?.into_any(),
        ],
    )?
    .into_any()
    .unbind())
}

fn timeout(value: Option<f64>) -> PyResult<Option<Duration>> {
    match value {
        None => Ok(None),
        Some(s) => match Duration::try_from_secs_f64(s) {
            Ok(d) if s > 0.0 => Ok(Some(d)),
            _ => Err(PyValueError::new_err(format!("timeout must be a positive number of seconds, not {s}"))),
        },
    }
}

/// The core's progress callback calling the Python one (with the GIL, on a runtime thread).
/// A callback that raises or returns `False` cancels the transfer.
fn progress(callback: Option<Py<PyAny>>, cancel: Arc<watch::Sender<bool>>) -> Option<ProgressCallback> {
    let callback = callback?;
    Some(Arc::new(move |done: u64, total: Option<u64>| {
        // Once cancelled (by the callback or the caller) the callback is not called again.
        if *cancel.borrow() {
            return;
        }
        // Once the interpreter is exiting the callback cannot run: the transfer stops.
        let stop = crate::shutdown::attach(|py| match callback.call1(py, (done, total)) {
            Ok(v) => v.bind(py).is(pyo3::types::PyBool::new(py, false)),
            Err(e) => {
                e.write_unraisable(py, Some(callback.bind(py)));
                true
            }
        })
        .unwrap_or(true);
        if stop {
            cancel.send_replace(true);
        }
    }))
}

/// Runs `transfer` until it ends or `cancel` fires; dropping it on cancellation is what stops
/// the core's transfer (its pool is deleted, its partial file removed).
async fn cancellable<T>(
    transfer: impl Future<Output = psremote::Result<T>>,
    mut cancelled: watch::Receiver<bool>,
    path: String,
) -> psremote::Result<T> {
    tokio::select! {
        r = transfer => r,
        _ = cancelled.wait_for(|c| *c) => Err(Error::File(Box::new(FileError::new(
            FileErrorKind::Cancelled,
            FileSide::Local,
            path,
            "the transfer was cancelled",
        )))),
    }
}

#[allow(clippy::too_many_arguments)]
fn copy_future(
    client: &Client,
    src: PathBuf,
    dest: String,
    expand_variables: bool,
    timeout_s: Option<f64>,
    configuration_name: String,
    callback: Option<Py<PyAny>>,
    cancel: &TransferCancel,
) -> PyResult<impl Future<Output = psremote::Result<Outcome>> + Send + 'static> {
    let options = CopyOptions {
        configuration_name,
        expand_variables,
        timeout: timeout(timeout_s)?,
        progress: progress(callback, cancel.tx.clone()),
        ..CopyOptions::default()
    };
    let (cell, config) = client.handle();
    let cancelled = cancel.tx.subscribe();
    let shown = src.display().to_string();
    Ok(async move {
        let client = get(cell, config).await?;
        let o = cancellable(client.copy(&src, &dest, &options), cancelled, shown).await?;
        Ok((o.remote_path, o.bytes, o.sha1, o.warnings))
    })
}

#[allow(clippy::too_many_arguments)]
fn fetch_future(
    client: &Client,
    src: String,
    dest: PathBuf,
    expand_variables: bool,
    timeout_s: Option<f64>,
    configuration_name: String,
    callback: Option<Py<PyAny>>,
    cancel: &TransferCancel,
) -> PyResult<impl Future<Output = psremote::Result<Outcome>> + Send + 'static> {
    let options = FetchOptions {
        configuration_name,
        expand_variables,
        timeout: timeout(timeout_s)?,
        progress: progress(callback, cancel.tx.clone()),
    };
    let (cell, config) = client.handle();
    let cancelled = cancel.tx.subscribe();
    let shown = dest.display().to_string();
    Ok(async move {
        let client = get(cell, config).await?;
        let o = cancellable(client.fetch(&src, &dest, &options), cancelled, shown).await?;
        Ok((o.local_path.display().to_string(), o.bytes, o.sha1, o.warnings))
    })
}

/// Copies a local file to the server; (remote path, bytes, sha1, warnings).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn client_copy(
    py: Python<'_>,
    client: &Client,
    src: PathBuf,
    dest: String,
    expand_variables: bool,
    timeout: Option<f64>,
    configuration_name: String,
    progress: Option<Py<PyAny>>,
    cancel: &TransferCancel,
) -> PyResult<Py<PyAny>> {
    let fut = copy_future(client, src, dest, expand_variables, timeout, configuration_name, progress, cancel)?;
    let o = wait_in(py, client.ops(), fut)?;
    outcome_to_py(py, o)
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn client_copy_async(
    py: Python<'_>,
    client: &Client,
    future: Bound<'_, PyAny>,
    src: PathBuf,
    dest: String,
    expand_variables: bool,
    timeout: Option<f64>,
    configuration_name: String,
    progress: Option<Py<PyAny>>,
    cancel: &TransferCancel,
) -> PyResult<()> {
    let fut = copy_future(client, src, dest, expand_variables, timeout, configuration_name, progress, cancel)?;
    spawn_in(py, client.ops(), future, fut, outcome_to_py)
}

/// Fetches a remote file into a local one; (local path, bytes, sha1, warnings).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn client_fetch(
    py: Python<'_>,
    client: &Client,
    src: String,
    dest: PathBuf,
    expand_variables: bool,
    timeout: Option<f64>,
    configuration_name: String,
    progress: Option<Py<PyAny>>,
    cancel: &TransferCancel,
) -> PyResult<Py<PyAny>> {
    let fut = fetch_future(client, src, dest, expand_variables, timeout, configuration_name, progress, cancel)?;
    let o = wait_in(py, client.ops(), fut)?;
    outcome_to_py(py, o)
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
pub fn client_fetch_async(
    py: Python<'_>,
    client: &Client,
    future: Bound<'_, PyAny>,
    src: String,
    dest: PathBuf,
    expand_variables: bool,
    timeout: Option<f64>,
    configuration_name: String,
    progress: Option<Py<PyAny>>,
    cancel: &TransferCancel,
) -> PyResult<()> {
    let fut = fetch_future(client, src, dest, expand_variables, timeout, configuration_name, progress, cancel)?;
    spawn_in(py, client.ops(), future, fut, outcome_to_py)
}

/// Registers the class and functions in the native module.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TransferCancel>()?;
    m.add_function(wrap_pyfunction!(client_copy, m)?)?;
    m.add_function(wrap_pyfunction!(client_copy_async, m)?)?;
    m.add_function(wrap_pyfunction!(client_fetch, m)?)?;
    m.add_function(wrap_pyfunction!(client_fetch_async, m)?)?;
    Ok(())
}
