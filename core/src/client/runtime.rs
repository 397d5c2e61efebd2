//! The one tokio runtime behind the blocking faces (Python, C).

use std::sync::OnceLock;

/// Stack size of the runtime's worker threads: 8 MiB, four times tokio's default.
const RUNTIME_STACK: usize = 8 * 1024 * 1024;

/// The process-wide multi-threaded runtime, created on first use.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("psremote-io")
            // Deep operations (a copy opens a pool, starts a pipeline and sends through the
            // transport, each an async fn inside the last) poll through many frames; an
            // unoptimised build's frames are large. Address space only: pages are touched on use.
            .thread_stack_size(RUNTIME_STACK)
            .on_thread_start(mask_process_signals)
            .enable_all()
            .build()
            // INVARIANT: building a runtime only fails when the OS refuses threads; nothing
            // in psremote can work then, and callers cannot recover either.
            .expect("cannot start the psremote tokio runtime")
    })
}

/// Runs `fut` to completion in the background: on the current runtime when called from one,
/// otherwise on the process-wide runtime. Used for cleanup from `Drop` (the Signal and Delete
/// that release a dropped command, pipeline, shell or pool); [`cleanup_finished`] waits for it.
pub(crate) fn spawn_detached<F>(fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let counted = Cleanup::start();
    let fut = async move {
        let _counted = counted;
        fut.await;
    };
    match tokio::runtime::Handle::try_current() {
        Ok(h) => {
            h.spawn(fut);
        }
        Err(_) => {
            runtime().spawn(fut);
        }
    }
}

/// Cleanup tasks under way in this process.
/// Runs `fut` as a counted background cleanup (see [`spawn_detached`]) and waits for its result.
/// For the Delete of a shell or pool being closed: a caller that stops waiting (a deadline, a
/// cancelled task) does not cut the request off half-way and leave the shell on the server.
pub(crate) async fn finish_in_background<T, F>(fut: F) -> crate::Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = crate::Result<T>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    spawn_detached(async move {
        let _ = tx.send(fut.await);
    });
    rx.await.map_err(|_| crate::Error::Closed("the psremote runtime"))?
}

static CLEANUPS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);
static CLEANUPS_DONE: std::sync::LazyLock<tokio::sync::Notify> = std::sync::LazyLock::new(tokio::sync::Notify::new);

/// Counts one cleanup task from its start until it is dropped (finished, or its runtime shut down).
struct Cleanup;

impl Cleanup {
    fn start() -> Self {
        *CLEANUPS.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += 1;
        Cleanup
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut n = CLEANUPS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *n -= 1;
        if *n == 0 {
            CLEANUPS_DONE.notify_waiters();
        }
    }
}

/// How many background cleanups (the Signal and Delete requests that release dropped
/// commands, pipelines, shells and pools on their servers) are under way in this process.
pub fn pending_cleanups() -> usize {
    *CLEANUPS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until no background cleanup is under way (see [`pending_cleanups`]), or `limit` has
/// passed; returns whether none is left. A closing client calls it after cancelling what it had
/// in flight, so that its remote work is released before the program goes on (or exits). Each
/// cleanup request is bounded by the client's OperationTimeout and read margin.
pub async fn cleanup_finished(limit: std::time::Duration) -> bool {
    let settled = async {
        loop {
            let notified = CLEANUPS_DONE.notified();
            tokio::pin!(notified);
            // Registered before the count is read, so a cleanup ending in between wakes us.
            notified.as_mut().enable();
            if pending_cleanups() == 0 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(limit, settled).await.is_ok()
}

/// Runs `work` within `timeout` (`None`: without limit). On expiry `work` is dropped (its drop
/// guards release what it had opened on the server, in the background) and the result is
/// [`Error::Timeout`](crate::Error::Timeout) naming `what` and the limit.
pub async fn within<T, W, F>(timeout: Option<std::time::Duration>, what: W, work: F) -> crate::Result<T>
where
    W: FnOnce() -> String,
    F: std::future::Future<Output = crate::Result<T>>,
{
    match timeout {
        None => work.await,
        Some(limit) => match tokio::time::timeout(limit, work).await {
            Ok(r) => r,
            Err(_) => Err(crate::Error::Timeout(format!("{} did not finish within {}", what(), seconds(limit)))),
        },
    }
}

/// A time limit as users wrote it: `3 s`, `2.5 s`, `0.001 s` (milliseconds at most; a deadline
/// that is the rest of a larger one reads `2.999 s`, not `2.999994061s`).
pub(crate) fn seconds(limit: std::time::Duration) -> String {
    let millis = limit.as_millis();
    if millis.is_multiple_of(1000) {
        return format!("{} s", millis / 1000);
    }
    let text = format!("{}.{:03}", millis / 1000, millis % 1000);
    format!("{} s", text.trim_end_matches('0'))
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    #[test]
    fn limits_read_as_seconds_to_the_millisecond() {
        assert_eq!(super::seconds(Duration::from_secs(3)), "3 s");
        assert_eq!(super::seconds(Duration::from_millis(2500)), "2.5 s");
        assert_eq!(super::seconds(Duration::from_millis(1)), "0.001 s");
        assert_eq!(super::seconds(Duration::from_nanos(2_999_994_061)), "2.999 s");
    }
}
