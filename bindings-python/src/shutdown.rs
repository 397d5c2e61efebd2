//! Interpreter exit: the runtime's threads stop touching Python before finalization begins.
//!
//! A runtime thread that attaches while `Py_FinalizeEx` runs crashes the process (CPython ends or
//! confuses a thread taking the GIL once finalizing: SIGSEGV, or "PyGILState_Release: thread
//! state must be current"). This happens when an asyncio program returns from `asyncio.run`
//! while a worker is completing its future: `call_soon_threadsafe` releases the GIL to write to
//! the loop's self-pipe, the main thread exits, and the worker takes the GIL back mid-finalization.
//!
//! So every attach from a thread Python does not own goes through [`attach`], which counts it in
//! a gate. An `atexit` hook (atexit handlers run before CPython marks itself finalizing) closes
//! the gate and waits, with the GIL released, until the attaches already under way have let go
//! of the GIL. After that no runtime thread attaches again: whatever it would have done with
//! Python (complete a future, call a host or progress callback, log) is skipped, and the Python
//! references it holds are leaked rather than dropped.

use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use pyo3::prelude::*;

/// How long the exit hook waits for attaches under way (a host callback may be slow).
const DRAIN: Duration = Duration::from_secs(5);

struct Gate {
    closed: bool,
    active: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate { closed: false, active: 0 });
static LEFT: Condvar = Condvar::new();

/// Attaches to Python and runs `f`, unless the interpreter is exiting: then `f` is handed back
/// unrun, for the caller to leak (`std::mem::forget`) the Python references it owns. Only for
/// threads Python does not own (runtime workers, the log thread), which are never attached
/// already when they call this.
pub fn attach<F, R>(f: F) -> Result<R, F>
where
    F: for<'py> FnOnce(Python<'py>) -> R,
{
    {
        let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        if gate.closed {
            return Err(f);
        }
        gate.active += 1;
    }
    // Leaves the gate when the GIL has been released, also if `f` panics.
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            let mut gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
            gate.active -= 1;
            if gate.active == 0 {
                LEFT.notify_all();
            }
        }
    }
    let _leave = Leave;
    // `try_attach` declines (without running the closure) where Python is not initialized.
    let mut slot = Some(f);
    let ran = Python::try_attach(|py| slot.take().map(|f| f(py)));
    match (ran.flatten(), slot) {
        (Some(r), _) => Ok(r),
        (None, Some(f)) => Err(f),
        (None, None) => unreachable!("a closure that ran returned its result"),
    }
}

/// The `atexit` hook: closes the gate, then waits (GIL released, so the attaches under way can
/// finish) until no runtime thread is attached, or [`DRAIN`] has passed.
#[pyfunction]
pub fn _shutdown(py: Python<'_>) {
    GATE.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
    py.detach(|| {
        let gate = GATE.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = LEFT.wait_timeout_while(gate, DRAIN, |g| g.active > 0).unwrap_or_else(PoisonError::into_inner);
    });
}

/// Registers [`_shutdown`] with `atexit` when the module is imported.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(_shutdown, m)?;
    m.add_function(hook.clone())?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}
