//! Files: `psr_client_copy` and `psr_client_fetch` (the core's `Client::copy` / `Client::fetch`),
//! their options and a progress callback that may stop the transfer.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::time::Duration;

use psremote::client::{CopyOptions, FetchOptions, MAX_CHUNK_SIZE, ProgressCallback};
use psremote::{Error, FileError, FileErrorKind, FileSide};
use tokio::sync::watch;

use crate::client::{block, psr_client};
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{check_out, free, guard, guard_ptr, handle, handle_mut, out_string, str_arg};

/// Options of a copy or fetch. Free with `psr_transfer_options_free`.
#[allow(non_camel_case_types)]
pub struct psr_transfer_options {
    configuration_name: String,
    expand_variables: bool,
    timeout: Option<Duration>,
    chunk_size: Option<usize>,
}

impl Default for psr_transfer_options {
    fn default() -> Self {
        Self {
            configuration_name: "Microsoft.PowerShell".into(),
            expand_variables: true,
            timeout: None,
            chunk_size: None,
        }
    }
}

/// Progress of a copy or fetch: `done` bytes so far, `total` the file's size or -1 while
/// unknown. Called on a psremote worker thread after each chunk (never concurrently for one
/// transfer); return 0 to go on, nonzero to stop the transfer (it then fails with
/// `PSR_RESULT_CALLBACK`). It must not call psremote's blocking functions.
#[allow(non_camel_case_types)]
pub type psr_progress_fn = Option<unsafe extern "C" fn(userdata: *mut c_void, done: u64, total: i64) -> i32>;

/// New transfer options with the defaults: the `Microsoft.PowerShell` configuration, variables
/// (`%VAR%`, `$env:VAR`, `${env:VAR}`) in the remote path expanded on the server, no deadline.
///
/// Ownership: the caller frees the result with `psr_transfer_options_free`. NULL only if
/// psremote panicked. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_transfer_options_new() -> *mut psr_transfer_options {
    guard_ptr(|| Box::into_raw(Box::new(psr_transfer_options::default())))
}

/// Sets the session configuration the transfer's runspace pool opens.
///
/// Ownership: `o` and `name` are borrowed. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not UTF-8 or
/// empty). Threading: not concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_transfer_options_set_configuration_name(
    o: *mut psr_transfer_options,
    name: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        let name = str_arg(name, "name")?;
        if name.is_empty() {
            return Err(Failure::new(PsrResult::InvalidArgument, "name is empty"));
        }
        o.configuration_name = name.to_owned();
        Ok(())
    })
}

/// Whether variables in the remote path expand on the server (nonzero, the default) or the
/// path travels verbatim (0).
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_transfer_options_set_expand_variables(
    o: *mut psr_transfer_options,
    expand: i32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.expand_variables = expand != 0;
        Ok(())
    })
}

/// Bounds the whole transfer (opening its pool included) to `ms` milliseconds; 0 removes the
/// bound. When it passes the transfer fails with `PSR_RESULT_TIMEOUT`, its pool deleted.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_transfer_options_set_timeout_ms(
    o: *mut psr_transfer_options,
    ms: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.timeout = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// The raw bytes a copy sends per chunk (one PIPELINE_INPUT each), 1 to 4 MiB (4194304); 0
/// restores the default, as many as fill one fragment of the pool's negotiated envelope. A
/// fetch ignores it: the server's script sizes the chunks it sends.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (above 4 MiB; the
/// options are unchanged). Threading: not concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_transfer_options_set_chunk_size(
    o: *mut psr_transfer_options,
    bytes: usize,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        if bytes > MAX_CHUNK_SIZE {
            return Err(Failure::new(
                PsrResult::InvalidArgument,
                format!("chunk size {bytes} is above the largest, {MAX_CHUNK_SIZE}"),
            ));
        }
        o.chunk_size = (bytes != 0).then_some(bytes);
        Ok(())
    })
}

/// Frees transfer options. NULL is allowed. Threading: any thread, once no other call uses them.
#[unsafe(no_mangle)]
pub extern "C" fn psr_transfer_options_free(o: *mut psr_transfer_options) {
    free(o);
}

/// The C callback and its userdata, called from worker threads.
struct CProgress {
    f: unsafe extern "C" fn(*mut c_void, u64, i64) -> i32,
    userdata: *mut c_void,
}

// SAFETY: psr_client_copy's contract: the callback and userdata may be used from psremote's
// worker threads; one transfer calls them one at a time.
unsafe impl Send for CProgress {}
// SAFETY: as above.
unsafe impl Sync for CProgress {}

impl CProgress {
    fn call(&self, done: u64, total: i64) -> i32 {
        // SAFETY: the callback contract of `psr_progress_fn`; `userdata` is passed back as given.
        unsafe { (self.f)(self.userdata, done, total) }
    }
}

fn progress(cb: psr_progress_fn, userdata: *mut c_void, stop: Arc<watch::Sender<bool>>) -> Option<ProgressCallback> {
    let c = CProgress { f: cb?, userdata };
    Some(Arc::new(move |done: u64, total: Option<u64>| {
        // Once the callback asked to stop it is not called again, even if the transfer reports
        // more progress before it notices.
        if *stop.borrow() {
            return;
        }
        let total = total.and_then(|t| i64::try_from(t).ok()).unwrap_or(-1);
        if c.call(done, total) != 0 {
            stop.send_replace(true);
        }
    }))
}

/// Runs a transfer until it ends or the callback asks to stop (dropping it deletes the pool and
/// removes a partial local file).
fn run<T>(
    transfer: impl Future<Output = psremote::Result<T>>,
    stop: &watch::Sender<bool>,
    path: &str,
) -> Result<T, Failure> {
    let mut stopped = stop.subscribe();
    let r = block(async {
        tokio::select! {
            r = transfer => r,
            _ = stopped.wait_for(|s| *s) => Err(Error::File(Box::new(FileError::new(
                FileErrorKind::Cancelled,
                FileSide::Local,
                path,
                "the progress callback asked to stop",
            )))),
        }
    });
    match r {
        Err(mut f) if *stop.borrow() => {
            f.code = PsrResult::Callback;
            Err(f)
        }
        other => other,
    }
}

/// Copies the local file `src` to `dest` on the server, streamed in chunks and checked by SHA-1
/// on the server. An existing `dest` file is replaced; a `dest` that is a directory is refused.
/// `*out_remote_path` (written only on success) is the absolute path the server wrote.
///
/// `options` NULL: the defaults of `psr_transfer_options_new`. `progress` may be NULL; see
/// `psr_progress_fn` (it runs on a psremote worker thread; `userdata` is passed back as given).
///
/// Ownership: `c`, `src`, `dest` and `options` are borrowed; free `*out_remote_path` with
/// `psr_string_free`. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not UTF-8), FILE (the side, kind
/// and path are in the error: `psr_error_file_kind`, `_side`, `_path`), CALLBACK (the progress
/// callback stopped it), TIMEOUT, connection errors. Whatever the failure, no partial file is
/// left on the server and the transfer's pool is deleted. Threading: blocks the calling
/// thread; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_copy(
    c: *mut psr_client,
    src: *const c_char,
    dest: *const c_char,
    options: *const psr_transfer_options,
    progress_cb: psr_progress_fn,
    userdata: *mut c_void,
    out_remote_path: *mut *mut c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        let (src, dest) = (str_arg(src, "src")?, str_arg(dest, "dest")?);
        check_out(out_remote_path, "out_remote_path")?;
        // SAFETY: a non-NULL `options` points to options made by this library (API contract).
        let o = unsafe { options.as_ref() };
        let default = psr_transfer_options::default();
        let o = o.unwrap_or(&default);
        let stop = Arc::new(watch::channel(false).0);
        let options = CopyOptions {
            configuration_name: o.configuration_name.clone(),
            expand_variables: o.expand_variables,
            timeout: o.timeout,
            chunk_size: o.chunk_size,
            progress: progress(progress_cb, userdata, stop.clone()),
            ..CopyOptions::default()
        };
        let done = run(client.copy(src.as_ref(), dest, &options), &stop, src)?;
        out_string(out_remote_path, &done.remote_path);
        Ok(())
    })
}

/// Fetches the remote file `src` into the local file `dest`, streamed in chunks and checked by
/// SHA-1. The data goes to a hidden `.part` file beside `dest` that replaces `dest` only once
/// the hashes match; on any failure it is removed. `*out_local_path` (written only on success)
/// is the path written (`dest`).
///
/// Options, progress, ownership, errors and threading as for `psr_client_copy`.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_fetch(
    c: *mut psr_client,
    src: *const c_char,
    dest: *const c_char,
    options: *const psr_transfer_options,
    progress_cb: psr_progress_fn,
    userdata: *mut c_void,
    out_local_path: *mut *mut c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        let (src, dest) = (str_arg(src, "src")?, str_arg(dest, "dest")?);
        check_out(out_local_path, "out_local_path")?;
        // SAFETY: a non-NULL `options` points to options made by this library (API contract).
        let o = unsafe { options.as_ref() };
        let default = psr_transfer_options::default();
        let o = o.unwrap_or(&default);
        let stop = Arc::new(watch::channel(false).0);
        let options = FetchOptions {
            configuration_name: o.configuration_name.clone(),
            expand_variables: o.expand_variables,
            timeout: o.timeout,
            progress: progress(progress_cb, userdata, stop.clone()),
        };
        let done = run(client.fetch(src, dest.as_ref(), &options), &stop, dest)?;
        out_string(out_local_path, &done.local_path.display().to_string());
        Ok(())
    })
}
