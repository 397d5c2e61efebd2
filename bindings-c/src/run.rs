//! `psr_client_run_cmd_with_options`: one command to completion with a deadline, an output
//! limit and shell options (the core's `Client::run_cmd_with`).

use std::ffi::c_char;
use std::time::Duration;

use psremote::client::{CommandOptions, RunCmdOptions};

use crate::client::{block, psr_client, psr_cmd_result};
use crate::cmd::psr_cmd_shell_options;
use crate::error::{PsrResult, psr_error};
use crate::ffi::{bytes_arg, check_out, free, guard, guard_ptr, handle, handle_mut, out, str_arg, str_array};

/// Options of `psr_client_run_cmd_with_options`. Free with `psr_run_cmd_options_free`.
#[allow(non_camel_case_types)]
pub struct psr_run_cmd_options(RunCmdOptions);

/// New run options with the defaults of `psr_client_run_cmd`: the shell options of
/// `psr_cmd_shell_options_new`, no deadline, at most 64 MiB (67108864 bytes) of stdout and
/// stderr together.
///
/// Ownership: the caller frees the result with `psr_run_cmd_options_free`. NULL only if psremote
/// panicked. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_run_cmd_options_new() -> *mut psr_run_cmd_options {
    guard_ptr(|| Box::into_raw(Box::new(psr_run_cmd_options(RunCmdOptions::default()))))
}

/// Sets the deadline of the whole run in milliseconds (opening and deleting the shell
/// included); 0: none. Past it the run returns `PSR_RESULT_TIMEOUT` and the command and its shell
/// are released on the server (Signal, Delete) in the background.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_run_cmd_options_set_timeout_ms(
    o: *mut psr_run_cmd_options,
    ms: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.timeout = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Sets the stdout and stderr bytes (together) the run keeps; 0: no limit. A command that writes
/// more is terminated, its shell deleted, and the run returns `PSR_RESULT_OUTPUT_TOO_LARGE`.
/// To take any amount, read the output as it comes (`psr_cmd_shell_start`, `psr_cmd_process_read`).
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_run_cmd_options_set_max_output(
    o: *mut psr_run_cmd_options,
    bytes: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.max_output = (bytes != 0).then_some(bytes);
        Ok(())
    })
}

/// Sets the options of the shell the command runs in (copied; NULL: the defaults of
/// `psr_cmd_shell_options_new`).
///
/// Ownership: `o` and `shell` are borrowed. Errors: NULL_ARGUMENT (`o`). Threading: not
/// concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_run_cmd_options_set_shell_options(
    o: *mut psr_run_cmd_options,
    shell: *const psr_cmd_shell_options,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        // SAFETY: a non-NULL `shell` points to options made by this library (API contract).
        o.0.shell = unsafe { shell.as_ref() }.map_or_else(Default::default, |s| s.0.clone());
        Ok(())
    })
}

/// Starts the program directly instead of through cmd.exe (`WINRS_SKIP_CMD_SHELL`); false by
/// default.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_run_cmd_options_set_skip_cmd_shell(
    o: *mut psr_run_cmd_options,
    skip: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.command = CommandOptions { skip_cmd_shell: skip, ..CommandOptions::default() };
        Ok(())
    })
}

/// Frees run options. NULL is allowed. Threading: any thread, once no other call uses them.
#[unsafe(no_mangle)]
pub extern "C" fn psr_run_cmd_options_free(o: *mut psr_run_cmd_options) {
    free(o);
}

/// Runs a command with the core's defaults or `options` (NULL: those of
/// `psr_run_cmd_options_new`): stdin as given, then closed.
pub(crate) fn run(
    client: psremote::client::Client,
    exe: &str,
    argv: Vec<String>,
    stdin: &[u8],
    options: Option<&RunCmdOptions>,
) -> Result<psr_cmd_result, crate::error::Failure> {
    let mut options = options.cloned().unwrap_or_default();
    // stdin is always closed, so a command that reads it ends.
    options.stdin = Some(stdin.to_vec());
    let a: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = block(client.run_cmd_with(exe, &a, &options))?;
    Ok(psr_cmd_result { stdout: out.stdout, stderr: out.stderr, exit_code: out.exit_code })
}

/// `psr_client_run_cmd` with `options` (NULL: the defaults of `psr_run_cmd_options_new`), which
/// are copied.
///
/// Ownership: `*out` (written only on success) is freed with `psr_cmd_result_free`; the other
/// arguments are borrowed for the call. Errors: NULL_ARGUMENT, INVALID_ARGUMENT, TIMEOUT (the
/// deadline passed; the command and its shell are released), OUTPUT_TOO_LARGE (the output limit
/// passed; the command was terminated and its shell deleted), CLOSED (the command ended without
/// an exit code), FAULT, connection errors. Threading: blocks the calling thread; any thread
/// except a psremote callback.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn psr_client_run_cmd_with_options(
    c: *mut psr_client,
    exe: *const c_char,
    args: *const *const c_char,
    nargs: usize,
    stdin_data: *const u8,
    stdin_len: usize,
    options: *const psr_run_cmd_options,
    out_result: *mut *mut psr_cmd_result,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        check_out(out_result, "out")?;
        let exe = str_arg(exe, "exe")?;
        let argv = str_array(args, nargs, "args")?;
        let stdin = bytes_arg(stdin_data, stdin_len, "stdin_data")?;
        // SAFETY: a non-NULL `options` points to options made by this library (API contract).
        let options = unsafe { options.as_ref() }.map(|o| &o.0);
        let r = run(client, exe, argv, stdin, options)?;
        out(out_result, r);
        Ok(())
    })
}
