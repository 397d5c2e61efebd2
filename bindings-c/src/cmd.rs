//! WinRS cmd shells: their options, the shells, and the commands running in them with output
//! read chunk by chunk as it arrives.

use std::ffi::{CString, c_char};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use psremote::client::{self as core, CmdShellOptions, CommandOptions, OutputChunk};

use crate::client::{block, psr_client, psr_cmd_result};
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{
    bytes_arg, check_out, cstring, free, guard, guard_ptr, handle, handle_mut, opt_str_arg, out, out_value, str_arg,
    str_array,
};

/// Options for `psr_client_cmd_shell_open`. Free with `psr_cmd_shell_options_free`.
#[allow(non_camel_case_types)]
pub struct psr_cmd_shell_options(pub(crate) CmdShellOptions);

/// An open cmd shell. Free with `psr_cmd_shell_free`.
#[allow(non_camel_case_types)]
pub struct psr_cmd_shell {
    id: CString,
    /// Starts share it; close takes it out (after the starts under way).
    shell: RwLock<Option<core::CmdShell>>,
}

/// A command running in a cmd shell. Free with `psr_cmd_process_free`.
#[allow(non_camel_case_types)]
pub struct psr_cmd_process {
    id: CString,
    control: core::CmdControl,
    reader: Mutex<Reader>,
    /// Copied from the core process when its output ends, so asking never waits for a reader.
    exit_code: Mutex<Option<i64>>,
}

/// The reading side: the core process and what a `psr_cmd_process_wait` that timed out gathered.
struct Reader {
    process: core::CmdProcess,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

/// One piece of a command's output. Free with `psr_cmd_chunk_free`.
#[allow(non_camel_case_types)]
pub struct psr_cmd_chunk {
    stream: psr_cmd_stream,
    data: Vec<u8>,
}

/// The stream a chunk of output came from.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum psr_cmd_stream {
    /// The command's stdout.
    Stdout = 1,
    /// The command's stderr.
    Stderr = 2,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held is reported by `guard`; the data stays consistent
    // (every update is a single assignment or push), so later calls may go on.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn limit(timeout_ms: u32) -> Option<Duration> {
    (timeout_ms > 0).then(|| Duration::from_millis(u64::from(timeout_ms)))
}

/// New cmd-shell options with the defaults: no environment variables, the server's working
/// directory, the UTF-8 code page (65001, so output comes as UTF-8), the user profile loaded,
/// the server's idle timeout.
///
/// Ownership: the caller frees the result with `psr_cmd_shell_options_free`. NULL only if
/// psremote panicked. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_options_new() -> *mut psr_cmd_shell_options {
    guard_ptr(|| Box::into_raw(Box::new(psr_cmd_shell_options(CmdShellOptions::default()))))
}

/// Adds an environment variable that every command in the shell sees (`WINRS` `rsp:Environment`).
/// Repeatable; a name given twice is sent twice (the server decides).
///
/// Ownership: `o`, `name` and `value` are borrowed. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not
/// UTF-8, or an empty name). Threading: not concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_options_add_environment(
    o: *mut psr_cmd_shell_options,
    name: *const c_char,
    value: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        let (name, value) = (str_arg(name, "name")?, str_arg(value, "value")?);
        if name.is_empty() {
            return Err(Failure::new(PsrResult::InvalidArgument, "an environment variable needs a non-empty name"));
        }
        o.0.environment.push((name.to_owned(), value.to_owned()));
        Ok(())
    })
}

/// Sets the directory commands start in; NULL goes back to the server's default. A directory
/// that does not exist is reported by `psr_cmd_shell_start` (a FAULT from the server).
///
/// Ownership: `o` and `directory` are borrowed. Errors: NULL_ARGUMENT (`o`), INVALID_ARGUMENT (not
/// UTF-8). Threading: not concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_options_set_working_directory(
    o: *mut psr_cmd_shell_options,
    directory: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        o.0.working_directory = opt_str_arg(directory, "directory")?.map(str::to_owned);
        Ok(())
    })
}

/// Sets the console code page of the output (`WINRS_CODEPAGE`): 65001 (UTF-8, the default), 437,
/// ...; 0 sends none, so the server uses its OEM code page.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_options_set_codepage(
    o: *mut psr_cmd_shell_options,
    codepage: u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.codepage = (codepage != 0).then_some(codepage);
        Ok(())
    })
}

/// Whether the user profile is left unloaded (`WINRS_NOPROFILE`); false by default.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_options_set_no_profile(
    o: *mut psr_cmd_shell_options,
    no_profile: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.no_profile = no_profile;
        Ok(())
    })
}

/// Sets how long the shell may stay idle before the server deletes it, in milliseconds; 0 leaves
/// it to the server.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_options_set_idle_timeout_ms(
    o: *mut psr_cmd_shell_options,
    ms: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.idle_timeout = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Frees cmd-shell options. NULL is allowed. Threading: any thread, once no other call uses them.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_options_free(o: *mut psr_cmd_shell_options) {
    free(o);
}

/// Opens a cmd shell (WinRS) with `options` (NULL: the defaults of `psr_cmd_shell_options_new`),
/// which are copied.
///
/// Ownership: `c` and `options` are borrowed; `*out` (written only on success) is freed with
/// `psr_cmd_shell_free`. Errors: NULL_ARGUMENT, FAULT (the server refused the shell; the fault
/// code is in the error), connection errors. Threading: blocks the calling thread; any thread
/// except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_cmd_shell_open(
    c: *mut psr_client,
    options: *const psr_cmd_shell_options,
    out_shell: *mut *mut psr_cmd_shell,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        check_out(out_shell, "out")?;
        // SAFETY: a non-NULL `options` points to options made by this library (API contract).
        let opts = unsafe { options.as_ref() }.map_or_else(CmdShellOptions::default, |o| o.0.clone());
        let shell = block(async move { client.open_cmd_shell(opts).await })?;
        out(out_shell, psr_cmd_shell { id: cstring(shell.id()), shell: RwLock::new(Some(shell)) });
        Ok(())
    })
}

/// The server's id for the shell (owned by `s`, valid until `psr_cmd_shell_free`); NULL if `s` is
/// NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_id(s: *const psr_cmd_shell) -> *const c_char {
    handle(s, "s").map(|s| s.id.as_ptr()).unwrap_or(std::ptr::null())
}

/// Starts `exe` with `args` (an array of `nargs` strings; NULL when `nargs` is 0). The server
/// joins them with spaces into one command line and runs it through `cmd.exe /c`, so quote
/// arguments with spaces yourself; `skip_cmd_shell` (`WINRS_SKIP_CMD_SHELL`) starts the program
/// directly.
///
/// Ownership: the strings are borrowed for the call; `*out` (on success) is freed with
/// `psr_cmd_process_free`. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not UTF-8), CLOSED (the shell
/// was closed), FAULT (e.g. 2150858843 when the shell no longer exists on the server, 2147942402
/// when the program is not found, 2147942667 when the working directory does not exist),
/// connection errors. Threading: blocks the calling thread; any thread, also while others start
/// commands in the same shell.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_start(
    s: *mut psr_cmd_shell,
    exe: *const c_char,
    args: *const *const c_char,
    nargs: usize,
    skip_cmd_shell: bool,
    out_process: *mut *mut psr_cmd_process,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let s = handle(s, "s")?;
        check_out(out_process, "out")?;
        let exe = str_arg(exe, "exe")?;
        let argv = str_array(args, nargs, "args")?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let shell = s.shell.read().unwrap_or_else(PoisonError::into_inner);
        let shell = shell.as_ref().ok_or_else(|| Failure::new(PsrResult::Closed, "the cmd shell is closed"))?;
        let options = CommandOptions { skip_cmd_shell, ..CommandOptions::default() };
        let process = block(shell.start_with(exe, &argv, options))?;
        out(
            out_process,
            psr_cmd_process {
                id: cstring(process.id()),
                control: process.control(),
                reader: Mutex::new(Reader { process, stdout: Vec::new(), stderr: Vec::new() }),
                exit_code: Mutex::new(None),
            },
        );
        Ok(())
    })
}

/// Deletes the shell on the server; its commands end with it. Afterwards `psr_cmd_shell_start`
/// returns CLOSED; the handle must still be freed.
///
/// Ownership: `s` is borrowed. Errors: NULL_ARGUMENT, CLOSED (already closed), connection errors.
/// Threading: blocks the calling thread (until starts under way have finished, too).
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_close(s: *mut psr_cmd_shell, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let s = handle(s, "s")?;
        let taken = s.shell.write().unwrap_or_else(PoisonError::into_inner).take();
        let shell = taken.ok_or_else(|| Failure::new(PsrResult::Closed, "the cmd shell is already closed"))?;
        block(shell.close())
    })
}

/// Frees a shell, deleting it on the server in the background if it was not closed. Its
/// processes stay usable until the server reports the shell gone. NULL is allowed. Threading: any
/// thread, once no other call uses the handle.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_shell_free(s: *mut psr_cmd_shell) {
    free(s);
}

/// The server's id for the command (owned by `p`, valid until `psr_cmd_process_free`); NULL if `p`
/// is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_id(p: *const psr_cmd_process) -> *const c_char {
    handle(p, "p").map(|p| p.id.as_ptr()).unwrap_or(std::ptr::null())
}

/// Writes `len` bytes at `data` (NULL when `len` is 0) to the command's stdin; `end` closes stdin
/// afterwards. Large data goes out in several requests.
///
/// Ownership: `data` is borrowed for the call. Errors: NULL_ARGUMENT, CLOSED (the command has
/// ended or was terminated), FAULT (e.g. 2150858843 when the server no longer knows the
/// command), connection errors. Threading: blocks the calling thread; any thread, also while
/// another one reads the output.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_send_stdin(
    p: *mut psr_cmd_process,
    data: *const u8,
    len: usize,
    end: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        let data = bytes_arg(data, len, "data")?;
        block(p.control.send_stdin(data, end))
    })
}

/// Reads the next chunk of output, waiting up to `timeout_ms` (0: without limit). On OK, `*out` is
/// the chunk, or NULL when the output has ended (then `psr_cmd_process_exit_code` tells how it
/// ended). TIMEOUT means nothing arrived in time; nothing is lost, read again.
///
/// Ownership: a chunk written to `*out` is freed with `psr_cmd_chunk_free`. Errors: NULL_ARGUMENT,
/// TIMEOUT, FAULT (e.g. 2150858843 when the shell or command is gone on the server), connection
/// errors. Threading: blocks the calling thread; one reader at a time per process (a second
/// waits for the first), while any thread may send stdin, Ctrl-C or terminate.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_read(
    p: *mut psr_cmd_process,
    timeout_ms: u32,
    out_chunk: *mut *mut psr_cmd_chunk,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        check_out(out_chunk, "out")?;
        let mut reader = lock(&p.reader);
        let chunk = next(p, &mut reader.process, limit(timeout_ms))?;
        let chunk = chunk.map(|c| match c {
            OutputChunk::Stdout(data) => psr_cmd_chunk { stream: psr_cmd_stream::Stdout, data },
            OutputChunk::Stderr(data) => psr_cmd_chunk { stream: psr_cmd_stream::Stderr, data },
        });
        match chunk {
            Some(c) => out(out_chunk, c),
            None => out_value(out_chunk, std::ptr::null_mut()),
        }
        Ok(())
    })
}

/// The next chunk within `timeout` (the core's `next_output` is cancel-safe); at the end, the
/// exit code is copied where `psr_cmd_process_exit_code` finds it.
fn next(
    p: &psr_cmd_process,
    process: &mut core::CmdProcess,
    timeout: Option<Duration>,
) -> Result<Option<OutputChunk>, Failure> {
    let chunk = block(async {
        match timeout {
            Some(t) => tokio::time::timeout(t, process.next_output())
                .await
                .map_err(|_| psremote::Error::Timeout(format!("no output from the command within {t:?}")))?,
            None => process.next_output().await,
        }
    })?;
    if chunk.is_none() {
        *lock(&p.exit_code) = process.exit_code();
    }
    Ok(chunk)
}

/// Reads the output until the command ends, waiting up to `timeout_ms` in all (0: without limit),
/// and returns what was not read yet with the exit code. On TIMEOUT the command keeps running and
/// what was gathered is kept for the next `psr_cmd_process_wait`.
///
/// Ownership: `*out` (on success) is freed with `psr_cmd_result_free`. Errors: NULL_ARGUMENT,
/// TIMEOUT, CLOSED (the command was terminated before it reported an exit code), FAULT,
/// connection errors. Threading: as `psr_cmd_process_read`.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_wait(
    p: *mut psr_cmd_process,
    timeout_ms: u32,
    out_result: *mut *mut psr_cmd_result,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        check_out(out_result, "out")?;
        let deadline = limit(timeout_ms).map(|t| Instant::now() + t);
        let mut reader = lock(&p.reader);
        let Reader { process, stdout, stderr } = &mut *reader;
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            match next(p, process, left)? {
                Some(OutputChunk::Stdout(d)) => stdout.extend_from_slice(&d),
                Some(OutputChunk::Stderr(d)) => stderr.extend_from_slice(&d),
                None => break,
            }
        }
        let exit_code = process.exit_code().ok_or_else(|| {
            Failure::new(PsrResult::Closed, "the command was terminated before it reported an exit code")
        })?;
        out(out_result, psr_cmd_result { stdout: std::mem::take(stdout), stderr: std::mem::take(stderr), exit_code });
        Ok(())
    })
}

/// Whether the command's exit code is known (its output has ended and the server reported one);
/// if so, writes it to `*out_code`. False when an argument is NULL, while the command runs, and
/// after `psr_cmd_process_terminate` unless the server had reported one. Threading: any thread;
/// never waits.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_exit_code(p: *const psr_cmd_process, out_code: *mut i64) -> bool {
    let Ok(p) = handle(p, "p") else { return false };
    match (*lock(&p.exit_code), out_code.is_null()) {
        (Some(code), false) => {
            out_value(out_code, code);
            true
        }
        _ => false,
    }
}

/// Sends Ctrl-C to the command (WinRS signal `ctrl_c`); it then ends as it chooses, and its exit
/// code tells. Does nothing once the command has ended.
///
/// Ownership: `p` is borrowed. Errors: NULL_ARGUMENT, FAULT, connection errors. Threading: blocks
/// the calling thread; any thread, also while another one reads the output.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_ctrl_c(p: *mut psr_cmd_process, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || block(handle(p, "p")?.control.ctrl_c()))
}

/// Stops the command and releases it on the server. A reader gets the output that had already
/// arrived, then the end (NULL); the exit code stays unknown unless the server reported one first.
/// Calling it again does nothing.
///
/// Ownership: `p` is borrowed. Errors: NULL_ARGUMENT, connection errors. Threading: blocks the
/// calling thread; any thread, also while another one reads the output.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_terminate(p: *mut psr_cmd_process, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || block(handle(p, "p")?.control.terminate()))
}

/// Frees a process, releasing a command that is still running in the background. NULL is
/// allowed. Threading: any thread, once no other call uses the handle.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_process_free(p: *mut psr_cmd_process) {
    free(p);
}

/// The stream a chunk came from; `PSR_CMD_STREAM_STDOUT` if `c` is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_chunk_stream(c: *const psr_cmd_chunk) -> psr_cmd_stream {
    handle(c, "c").map(|c| c.stream).unwrap_or(psr_cmd_stream::Stdout)
}

/// The chunk's bytes (owned by `c`, valid until `psr_cmd_chunk_free`; never empty); their number
/// goes to `*len`. NULL if an argument is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_chunk_data(c: *const psr_cmd_chunk, len: *mut usize) -> *const u8 {
    let Ok(c) = handle(c, "c") else { return std::ptr::null() };
    if len.is_null() {
        return std::ptr::null();
    }
    out_value(len, c.data.len());
    c.data.as_ptr()
}

/// Frees a chunk. NULL is allowed. Threading: any thread, once no other call uses it.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_chunk_free(c: *mut psr_cmd_chunk) {
    free(c);
}
