//! Waiting on the core's futures from Python: blocking with the GIL released and Ctrl-C checked,
//! or completing an asyncio future on its own loop.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use psremote::client::runtime;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::errors::to_py_err;
use crate::shutdown;

/// How often a blocking wait wakes up to let Python handle signals (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(100);
/// How long an interrupted wait waits for its aborted task to be dropped.
const ABORT_GRACE: Duration = Duration::from_secs(5);

static PID: OnceLock<u32> = OnceLock::new();

/// Fails in a process forked after psremote started: the runtime's threads do not exist there,
/// so any wait would hang forever.
pub fn check_fork() -> PyResult<()> {
    let first = *PID.get_or_init(std::process::id);
    if first != std::process::id() {
        const MESSAGE: &str = "psremote was already in use when this process was forked, and its I/O threads \
             do not exist in the child; use multiprocessing's 'spawn' or 'forkserver' start method, or fork \
             before psremote is first used";
        return Err(Python::attach(|py| {
            let class = py.import("psremote.exceptions").and_then(|m| m.getattr("PSRemoteError"));
            match class.and_then(|c| c.call1((MESSAGE,))) {
                Ok(exc) => PyErr::from_value(exc),
                Err(_) => PyRuntimeError::new_err(MESSAGE),
            }
        }));
    }
    Ok(())
}

/// Runs `fut` on the runtime and waits for it with the GIL released. Ctrl-C (and any other
/// pending Python signal handler that raises) cancels the future and propagates.
pub fn wait<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    check_fork()?;
    let mut handle = runtime().spawn(fut);
    loop {
        let r = py.detach(|| runtime().block_on(async { tokio::time::timeout(SIGNAL_POLL, &mut handle).await }));
        match r {
            Ok(Ok(result)) => return result.map_err(|e| to_py_err(py, e)),
            Ok(Err(join)) => return Err(PyRuntimeError::new_err(format!("psremote task failed: {join}"))),
            Err(_) => {
                if let Err(e) = py.check_signals() {
                    // Dropping the future runs its cleanup (a pipeline sends its stop signal, a
                    // fetch removes its partial file); wait (briefly) until it has been dropped.
                    handle.abort();
                    let _ = py.detach(|| runtime().block_on(async { tokio::time::timeout(ABORT_GRACE, handle).await }));
                    return Err(e);
                }
            }
        }
    }
}

/// Completes an asyncio future from a runtime task: `_complete` runs on the future's loop.
#[pyfunction]
pub fn _complete(future: &Bound<'_, PyAny>, ok: bool, value: &Bound<'_, PyAny>) -> PyResult<()> {
    if future.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        future.call_method1("set_result", (value,))?
    } else {
        future.call_method1("set_exception", (value,))?
    };
    Ok(())
}

/// Runs `fut` on the runtime and completes the asyncio `future` with `convert(result)` on the
/// future's own loop. Returns at once.
pub fn spawn<F, T, C>(py: Python<'_>, future: Bound<'_, PyAny>, fut: F, convert: C) -> PyResult<()>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    check_fork()?;
    let event_loop = future.call_method0("get_loop")?.unbind();
    let future = future.unbind();
    let complete = wrap_pyfunction!(_complete, py)?.unbind();
    runtime().spawn(async move {
        let result = fut.await;
        let completed = shutdown::attach(move |py| {
            let (ok, value) = match result.map_err(|e| to_py_err(py, e)).and_then(|v| convert(py, v)) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            // A closed loop cannot take the result any more; nobody is waiting then.
            let _ = event_loop.call_method1(py, "call_soon_threadsafe", (complete, future, ok, value));
        });
        // The interpreter is exiting: nobody awaits the future any more, and its references
        // (the loop, the future, what `convert` holds) must not be dropped without Python.
        if let Err(unrun) = completed {
            std::mem::forget(unrun);
        }
    });
    Ok(())
}
