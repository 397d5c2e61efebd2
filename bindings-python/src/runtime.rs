//! Waiting on the core's futures from Python: blocking with the GIL released and Ctrl-C checked,
//! or completing an asyncio future on its own loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use psremote::client::runtime;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use tokio::sync::Notify;

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

/// The operations of one client that are in flight, so that closing the client can end them.
///
/// Each operation runs until it finishes or is cancelled: by the client's close
/// ([`Ops::cancel_all`]) or, for an asyncio caller, by the cancellation of the future it
/// completes. Cancelling drops the core's future, whose drop guards release what it had opened
/// on the server (the Signal and Delete requests the core counts as pending cleanups).
#[derive(Debug, Default)]
pub struct Ops {
    state: Mutex<OpsState>,
    ended: Notify,
}

#[derive(Debug, Default)]
struct OpsState {
    next: u64,
    live: HashMap<u64, Arc<Notify>>,
    closed: bool,
}

/// One registered operation; dropping it (after the operation's future) unregisters it.
struct OpGuard {
    ops: Arc<Ops>,
    id: u64,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        let mut state = self.ops.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.live.remove(&self.id);
        if state.live.is_empty() {
            self.ops.ended.notify_waiters();
        }
    }
}

impl Ops {
    /// Registers an operation: its guard and the signal that cancels it. A closed client
    /// refuses new operations.
    fn register(self: &Arc<Self>) -> psremote::Result<(OpGuard, Arc<Notify>)> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.closed {
            return Err(psremote::Error::Closed("client"));
        }
        state.next += 1;
        let id = state.next;
        let cancel = Arc::new(Notify::new());
        state.live.insert(id, cancel.clone());
        Ok((OpGuard { ops: self.clone(), id }, cancel))
    }

    /// Refuses new operations and cancels those in flight; they end with `ClosedError`.
    pub fn cancel_all(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.closed = true;
        for cancel in state.live.values() {
            cancel.notify_one();
        }
    }

    /// How many operations are in flight.
    pub fn in_flight(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).live.len()
    }

    /// Waits until no operation is in flight, or `limit` has passed; whether none is left.
    pub async fn settled(&self, limit: Duration) -> bool {
        let settled = async {
            loop {
                let ended = self.ended.notified();
                tokio::pin!(ended);
                ended.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                ended.await;
            }
        };
        tokio::time::timeout(limit, settled).await.is_ok()
    }
}

/// `fut`, unless `cancel` fires first: then `fut` is dropped (its drop guards run) and the
/// result is `Closed`.
async fn cancellable<T>(
    fut: impl Future<Output = psremote::Result<T>>,
    cancel: Option<Arc<Notify>>,
) -> psremote::Result<T> {
    let Some(cancel) = cancel else { return fut.await };
    tokio::select! {
        biased;
        _ = cancel.notified() => Err(psremote::Error::Closed("client")),
        r = fut => r,
    }
}

/// Cancels a native operation when the asyncio future it completes is cancelled: the future's
/// done callback (called on the loop's thread).
#[derive(Debug)]
#[pyclass(frozen, module = "psremote._native")]
pub struct _CancelOnCancelled {
    cancel: Arc<Notify>,
}

#[pymethods]
impl _CancelOnCancelled {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.cancel.notify_one();
        }
        Ok(())
    }
}

/// Runs `fut` on the runtime and waits for it with the GIL released. Ctrl-C (and any other
/// pending Python signal handler that raises) cancels the future and propagates.
pub fn wait<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    wait_op(py, None, fut)
}

/// [`wait`] for an operation of a client: the client's close ends it with `ClosedError`.
pub fn wait_in<F, T>(py: Python<'_>, ops: &Arc<Ops>, fut: F) -> PyResult<T>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    wait_op(py, Some(ops), fut)
}

fn wait_op<F, T>(py: Python<'_>, ops: Option<&Arc<Ops>>, fut: F) -> PyResult<T>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    check_fork()?;
    let registered = ops.map(|o| o.register()).transpose().map_err(|e| to_py_err(py, e))?;
    let (guard, cancel) = registered.map_or((None, None), |(g, c)| (Some(g), Some(c)));
    let mut handle = runtime().spawn(async move {
        let r = cancellable(fut, cancel).await;
        drop(guard);
        r
    });
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
/// future's own loop. Returns at once. Cancelling `future` cancels `fut` (it is dropped, so its
/// drop guards release its remote work).
pub fn spawn<F, T, C>(py: Python<'_>, future: Bound<'_, PyAny>, fut: F, convert: C) -> PyResult<()>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    spawn_op(py, None, future, fut, convert)
}

/// [`spawn`] for an operation of a client: the client's close ends it with `ClosedError`.
pub fn spawn_in<F, T, C>(py: Python<'_>, ops: &Arc<Ops>, future: Bound<'_, PyAny>, fut: F, convert: C) -> PyResult<()>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    spawn_op(py, Some(ops), future, fut, convert)
}

fn spawn_op<F, T, C>(
    py: Python<'_>,
    ops: Option<&Arc<Ops>>,
    future: Bound<'_, PyAny>,
    fut: F,
    convert: C,
) -> PyResult<()>
where
    F: Future<Output = psremote::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    check_fork()?;
    let (guard, cancel) = match ops {
        Some(o) => {
            let (guard, cancel) = o.register().map_err(|e| to_py_err(py, e))?;
            (Some(guard), cancel)
        }
        None => (None, Arc::new(Notify::new())),
    };
    future.call_method1("add_done_callback", (_CancelOnCancelled { cancel: cancel.clone() },))?;
    let event_loop = future.call_method0("get_loop")?.unbind();
    let future = future.unbind();
    let complete = wrap_pyfunction!(_complete, py)?.unbind();
    runtime().spawn(async move {
        let result = cancellable(fut, Some(cancel)).await;
        // The future is gone (and its drop guards ran) before anyone hears of the end.
        drop(guard);
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
