//! The one tokio runtime behind the blocking faces (Python, C).

use std::sync::OnceLock;

/// The process-wide multi-threaded runtime, created on first use.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("psremote-io")
            .enable_all()
            .build()
            // INVARIANT: building a runtime only fails when the OS refuses threads; nothing
            // in psremote can work then, and callers cannot recover either.
            .expect("cannot start the psremote tokio runtime")
    })
}

/// Runs `fut` to completion in the background: on the current runtime when called from one,
/// otherwise on the process-wide runtime. Used for cleanup from `Drop`.
pub(crate) fn spawn_detached<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(fut);
        }
        Err(_) => {
            runtime().spawn(fut);
        }
    }
}
