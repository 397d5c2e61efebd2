//! The one tokio runtime behind the blocking faces (Python, C).

use std::sync::OnceLock;

/// The process-wide multi-threaded runtime, created on first use.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("psremote-io")
            .on_thread_start(mask_process_signals)
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

/// Blocks the terminal and termination signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT) in the calling
/// thread, so the kernel delivers them to the application's own threads. Every thread psremote
/// starts calls it: a Ctrl-C that landed on a psremote thread would run Python's C-level handler
/// there without waking the main thread (a REPL blocked in readline would miss it).
pub fn mask_process_signals() {
    #[cfg(unix)]
    mask_unix();
}

#[cfg(unix)]
#[allow(unsafe_code)]
fn mask_unix() {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the sigset_t `set` points to; nothing reads it before.
    unsafe { libc::sigemptyset(set.as_mut_ptr()) };
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        // SAFETY: `set` was initialised by sigemptyset above; sigaddset only writes into it.
        unsafe { libc::sigaddset(set.as_mut_ptr(), sig) };
    }
    // SAFETY: `set` is initialised; pthread_sigmask reads it and changes only this thread's mask.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut()) };
}
