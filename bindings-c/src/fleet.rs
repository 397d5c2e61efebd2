//! Fan-out: one script or cmd command on many hosts (the core's `client::Fleet`), each host's
//! outcome handed to a callback on the caller's thread, a cancel from any thread. Translation
//! only: throttling, deadlines, retries and the per-host cleanup are the core's.

use std::ffi::{c_char, c_void};
use std::sync::Mutex;
use std::time::Duration;

use psremote::client::{
    CommandOptions, Fleet, FleetCancel, FleetHost, FleetOptions, FleetWork, HostOutput, HostResult, HostStatus, runtime,
};
use serde_json::{Value as Json, json};

use crate::client::psr_config;
use crate::cmd::psr_cmd_shell_options;
use crate::error::{Failure, PsrResult, psr_error, result_name};
use crate::ffi::{bytes_arg, cstring, free, guard, guard_ptr, handle, handle_mut, str_arg, str_array};
use crate::json::to_json;
use crate::pipeline::{c_state, error_record_json, invocation_json};

/// How a host's run ended.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum psr_host_status {
    /// The script completed (non-terminating errors allowed), or the command exited with 0.
    Succeeded = 1,
    /// Anything else once the host was reached: logon refused, a failing script or a non-zero
    /// exit code, a deadline, a broken reply; also a host cut off or never started because the
    /// run was cancelled.
    Failed = 2,
    /// No connection could be made (after the retries).
    Unreachable = 3,
}

impl From<HostStatus> for psr_host_status {
    fn from(s: HostStatus) -> Self {
        match s {
            HostStatus::Succeeded => Self::Succeeded,
            HostStatus::Failed => Self::Failed,
            HostStatus::Unreachable => Self::Unreachable,
        }
    }
}

/// One host's outcome, called once per host of a `psr_fleet_run_ps` or `psr_fleet_run_cmd` run,
/// in the order the hosts finish, on the thread that called the run (never two at once).
///
/// `index` is the host's position in the order of `psr_fleet_add_host`, `host` its name as
/// given. `result_json` is never NULL: `{"host", "index", "status" ("Succeeded", "Failed" or
/// "Unreachable"), "elapsed_ms", "attempts" (connection attempts; 0 for a host the run never
/// started), "result", "error"}`. `result` is the host's answer, or null: for a script the
/// object of `psr_invocation_json` (state, had_errors, output, errors, warnings, verbose, debug,
/// information, and the terminating error when failed); for a command `{"stdout", "stderr",
/// "exit_code"}` (the output decoded as UTF-8, invalid bytes replaced). `error` is null when the
/// host answered, else `{"code": "PSR_RESULT_...", "message"}`; the same error is passed as
/// `error` (NULL when the host answered; a failing script or a non-zero exit code is an answer,
/// with `status` FAILED). A run that was cancelled reports the hosts it cut off or never started
/// with `PSR_RESULT_CLOSED`.
///
/// `host`, `result_json` and `error` are borrowed for the call only. Return 0 to go on, nonzero
/// to cancel the run (as `psr_fleet_cancel`: every remaining host is still reported, then the run
/// returns `PSR_RESULT_CALLBACK`). The callback may call `psr_fleet_cancel` and psremote's other
/// functions, but not `psr_fleet_free` on the running fleet.
#[allow(non_camel_case_types)]
pub type psr_fleet_result_fn = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        index: usize,
        host: *const c_char,
        status: psr_host_status,
        result_json: *const c_char,
        error: *const psr_error,
    ) -> i32,
>;

/// How a fleet runs. Free with `psr_fleet_options_free`.
#[allow(non_camel_case_types)]
pub struct psr_fleet_options(FleetOptions);

/// A list of hosts to run one script or command on, with a cancel. Free with `psr_fleet_free`.
#[allow(non_camel_case_types)]
pub struct psr_fleet {
    hosts: Mutex<Vec<FleetHost>>,
    runs: Mutex<Runs>,
}

/// The fleet's cancellation and its run under way (one at a time).
#[derive(Default)]
struct Runs {
    cancelled: bool,
    current: Option<FleetCancel>,
}

impl psr_fleet {
    fn runs(&self) -> std::sync::MutexGuard<'_, Runs> {
        // A panic stopped at the boundary may have poisoned the lock; each field is written
        // whole, so what it holds is still consistent.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// New fleet options with the defaults: 32 hosts at once, no deadline, no retries (1 s between
/// retries once set), at most 64 MiB (67108864 bytes) of stdout and stderr per command.
///
/// Ownership: the caller frees the result with `psr_fleet_options_free`. NULL only if psremote
/// panicked. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_new() -> *mut psr_fleet_options {
    guard_ptr(|| Box::into_raw(Box::new(psr_fleet_options(FleetOptions::default()))))
}

/// Sets how many hosts run at once (at least 1). A throttle that needs more open files than the
/// process may have (about 3 per host) makes the run fail with `PSR_RESULT_INVALID_CONFIG`
/// naming the limit; the soft limit is raised up to the hard one when that is enough.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (0; the options are
/// unchanged). Threading: not concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_throttle(
    o: *mut psr_fleet_options,
    hosts: u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        if hosts == 0 {
            return Err(Failure::new(PsrResult::InvalidArgument, "the throttle must be at least 1"));
        }
        o.0.throttle = hosts as usize;
        Ok(())
    })
}

/// Sets each host's deadline in milliseconds, from its first connection attempt to its pool's
/// (or shell's) close, retries included; 0: none. A host past it is reported FAILED with
/// `PSR_RESULT_TIMEOUT`, its pipeline or command and its pool or shell released on the server in
/// the background.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_timeout_ms(
    o: *mut psr_fleet_options,
    ms: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.timeout = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Sets how many more times a host is tried when no connection could be made (0, the default:
/// once only). Only connection failures are retried: a host that answered (a refused logon, a
/// failing script) is never asked twice.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_connect_retries(
    o: *mut psr_fleet_options,
    retries: u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.connect_retries = retries;
        Ok(())
    })
}

/// Sets the wait before each further connection attempt, in milliseconds (default 1000).
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_retry_delay_ms(
    o: *mut psr_fleet_options,
    ms: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.retry_delay = Duration::from_millis(ms);
        Ok(())
    })
}

/// Sets the stdout and stderr bytes (together) one host's command may write
/// (`psr_fleet_run_cmd`); 0: no limit. A host whose command writes more is reported FAILED with
/// `PSR_RESULT_OUTPUT_TOO_LARGE`, the command terminated and its shell deleted.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_max_output(
    o: *mut psr_fleet_options,
    bytes: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.max_output = (bytes != 0).then_some(bytes);
        Ok(())
    })
}

/// Sets the session configuration each host's runspace pool opens for a script (e.g. a JEA
/// endpoint; default Microsoft.PowerShell). A host that has no such configuration is FAILED with
/// `PSR_RESULT_FAULT`.
///
/// Ownership: `o` and `name` are borrowed. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (empty or not
/// UTF-8). Threading: not concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_configuration_name(
    o: *mut psr_fleet_options,
    name: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        let name = str_arg(name, "name")?;
        if name.is_empty() {
            return Err(Failure::new(PsrResult::InvalidArgument, "name is empty"));
        }
        o.0.pool.configuration_name = name.to_owned();
        Ok(())
    })
}

/// Sets the options of the cmd shell each host opens for a command (copied; NULL: the defaults
/// of `psr_cmd_shell_options_new`): working directory, environment, code page, profile.
///
/// Ownership: `o` and `shell` are borrowed. Errors: NULL_ARGUMENT (`o`). Threading: not
/// concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_shell_options(
    o: *mut psr_fleet_options,
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

/// Starts each host's command directly instead of through cmd.exe (`WINRS_SKIP_CMD_SHELL`);
/// false by default.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_skip_cmd_shell(
    o: *mut psr_fleet_options,
    skip: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.0.command = CommandOptions { skip_cmd_shell: skip, ..CommandOptions::default() };
        Ok(())
    })
}

/// Sets what every host's command reads on stdin (`len` bytes at `data`, copied; `data` may be
/// NULL when `len` is 0); stdin is closed afterwards, and without this call closed at once.
///
/// Ownership: `o` and `data` are borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently
/// with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_set_stdin(
    o: *mut psr_fleet_options,
    data: *const u8,
    len: usize,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        let data = bytes_arg(data, len, "data")?;
        o.0.stdin = Some(data.to_vec());
        Ok(())
    })
}

/// Frees fleet options. NULL is allowed. Threading: any thread, once no other call uses them.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_options_free(o: *mut psr_fleet_options) {
    free(o);
}

/// A new fleet without hosts.
///
/// Ownership: the caller frees the result with `psr_fleet_free`. NULL only if psremote panicked.
/// Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_new() -> *mut psr_fleet {
    guard_ptr(|| Box::into_raw(Box::new(psr_fleet { hosts: Mutex::new(Vec::new()), runs: Mutex::default() })))
}

/// Adds a host: `name` is how results name it (the callback's `host`, the JSON's "host"),
/// `config` how to reach it (URL, credentials, security settings: each host has its own, so
/// per-host overrides are a config of their own). `config` is copied: it may be changed or
/// freed afterwards. Hosts are numbered from 0 in the order they are added.
///
/// Ownership: `f`, `name` and `config` are borrowed. Errors: NULL_ARGUMENT, INVALID_ARGUMENT
/// (`name` empty or not UTF-8). Threading: any thread; a host added while a run is under way
/// takes part in the next run.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_add_host(
    f: *mut psr_fleet,
    name: *const c_char,
    config: *const psr_config,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let f = handle(f, "f")?;
        let name = str_arg(name, "name")?;
        let config = handle(config, "config")?.0.clone();
        if name.is_empty() {
            return Err(Failure::new(PsrResult::InvalidArgument, "name is empty"));
        }
        f.hosts.lock().unwrap_or_else(|e| e.into_inner()).push(FleetHost { name: name.to_owned(), config });
        Ok(())
    })
}

/// The number of hosts added; 0 if `f` is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_host_count(f: *const psr_fleet) -> usize {
    handle(f, "f").map(|f| f.hosts.lock().unwrap_or_else(|e| e.into_inner()).len()).unwrap_or(0)
}

/// Runs `script` on every host, each in a runspace pool of its own that is opened, used and
/// closed without holding up the others, at most the options' throttle at once, and calls
/// `callback` once per host as each finishes (see `psr_fleet_result_fn`). Returns once every
/// host has been reported. `options` NULL: the defaults of `psr_fleet_options_new`; they are
/// copied. A failing host (unreachable, refused logon, deadline, failing script) is that host's
/// result, never the run's error. A fleet without hosts returns at once.
///
/// Ownership: `f`, `script` and `options` are borrowed for the call; `userdata` is passed to
/// the callback as given. Errors: NULL_ARGUMENT (`f`, `script`, `callback`), INVALID_ARGUMENT
/// (not UTF-8; a run already under way on `f`; a call from a psremote thread, where host,
/// progress and log callbacks run),
/// INVALID_CONFIG (the throttle needs more open files than the process may have; no host
/// contacted), CALLBACK (the callback returned nonzero; every host was still reported).
/// Cancelled by `psr_fleet_cancel`, the run returns OK once the cut-off and never-started hosts
/// are reported. Threading: blocks the calling thread, where the callback runs; any thread but
/// psremote's own; one run at a time per fleet.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_run_ps(
    f: *mut psr_fleet,
    script: *const c_char,
    options: *const psr_fleet_options,
    callback: psr_fleet_result_fn,
    userdata: *mut c_void,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let f = handle(f, "f")?;
        let work = FleetWork::PowerShell(str_arg(script, "script")?.to_owned());
        run(f, work, options, callback, userdata)
    })
}

/// Runs `exe` with `args` (an array of `nargs` strings; NULL when `nargs` is 0) in a cmd shell
/// of its own on every host (stdin as `psr_fleet_options_set_stdin` sets it, then closed), as
/// `psr_fleet_run_ps` runs a script; a host whose
/// command exits with a code other than 0 is FAILED, with its output and code in the result.
///
/// Ownership, errors and threading as for `psr_fleet_run_ps` (NULL_ARGUMENT for `exe`, or for
/// `args` when `nargs` is not 0).
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_run_cmd(
    f: *mut psr_fleet,
    exe: *const c_char,
    args: *const *const c_char,
    nargs: usize,
    options: *const psr_fleet_options,
    callback: psr_fleet_result_fn,
    userdata: *mut c_void,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let f = handle(f, "f")?;
        let command = str_arg(exe, "exe")?.to_owned();
        let arguments = str_array(args, nargs, "args")?;
        run(f, FleetWork::Cmd { command, arguments }, options, callback, userdata)
    })
}

/// Cancels the fleet: a run under way stops starting hosts and cuts off the running ones (their
/// pipelines or commands stopped, their pools or shells deleted in the background); each is
/// reported FAILED with `PSR_RESULT_CLOSED`, and the run returns. The cancellation is final: a
/// run started afterwards reports every host so at once, contacting none. Cancelling twice is
/// harmless.
///
/// Ownership: `f` is borrowed. Errors: NULL_ARGUMENT. Threading: any thread, also while another
/// blocks in a run of `f`, and from the callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_cancel(f: *mut psr_fleet, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let mut runs = handle(f, "f")?.runs();
        runs.cancelled = true;
        if let Some(c) = &runs.current {
            c.cancel();
        }
        Ok(())
    })
}

/// How long freeing a fleet waits for the background cleanups under way.
const CLEANUP_GRACE: Duration = Duration::from_secs(30);

/// Frees a fleet. First waits, up to 30 s, for the cleanups still under way in the background
/// (the Signal and Delete that release the pipelines, commands, pools and shells of hosts cut off
/// by a deadline or a cancel), so that a program that exits next leaves nothing on the servers.
/// NULL is allowed. Threading: any thread, once no run of `f` is under way and no other call uses
/// it; from one of psremote's threads (a host, progress or log callback) it frees without waiting.
#[unsafe(no_mangle)]
pub extern "C" fn psr_fleet_free(f: *mut psr_fleet) {
    if !f.is_null() && tokio::runtime::Handle::try_current().is_err() {
        let _ = std::panic::catch_unwind(|| runtime().block_on(psremote::client::cleanup_finished(CLEANUP_GRACE)));
    }
    free(f);
}

/// Clears the fleet's run under way when the run ends, however it ends.
struct Registered<'a>(&'a psr_fleet);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.runs().current = None;
    }
}

fn run(
    f: &psr_fleet,
    work: FleetWork,
    options: *const psr_fleet_options,
    callback: psr_fleet_result_fn,
    userdata: *mut c_void,
) -> Result<(), Failure> {
    let callback = callback.ok_or_else(|| Failure::null("callback"))?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::new(
            PsrResult::InvalidArgument,
            "psremote cannot be called from inside a psremote callback",
        ));
    }
    // SAFETY: a non-NULL `options` points to options made by this library (API contract).
    let mut options = unsafe { options.as_ref() }.map(|o| o.0.clone()).unwrap_or_default();
    // As psr_client_run_cmd: stdin is always closed, so a command that reads it ends.
    options.stdin.get_or_insert_with(Vec::new);
    let hosts = f.hosts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut stopped = false;
    let mut report = |result: HostResult| {
        // After a stop the remaining hosts are still reported; the callback's answer no longer matters.
        let stop = deliver(result, callback, userdata) != 0 && !stopped;
        stopped |= stop;
        stop
    };
    let (mut fleet, _registered) = {
        let mut runs = f.runs();
        if runs.current.is_some() {
            return Err(Failure::new(PsrResult::InvalidArgument, "a run is already under way on this fleet"));
        }
        if runs.cancelled {
            drop(runs);
            // Not started at all: a fleet cancelled after its start could have contacted a host
            // or two before the cancel reached them. Each host is reported as the core reports
            // the hosts a cancelled run never started.
            for (index, host) in hosts.into_iter().enumerate() {
                let result = Err(psremote::Error::Closed("fleet run (cancelled)"));
                report(HostResult { index, host: host.name, result, elapsed: Duration::ZERO, attempts: 0 });
            }
            return stopped_by_callback(stopped);
        }
        // The fleet spawns its hosts' tasks on psremote's runtime.
        let fleet = {
            let _entered = runtime().enter();
            Fleet::start(hosts, work, options)?
        };
        // Registered under the lock psr_fleet_cancel takes: a cancel comes before (and the run
        // does not start) or finds the run.
        runs.current = Some(fleet.canceller());
        (fleet, Registered(f))
    };
    while let Some(result) = runtime().block_on(fleet.next()) {
        if report(result) {
            fleet.canceller().cancel();
        }
    }
    stopped_by_callback(stopped)
}

fn stopped_by_callback(stopped: bool) -> Result<(), Failure> {
    if stopped {
        return Err(Failure::new(
            PsrResult::Callback,
            "the callback asked to stop; the hosts not finished were cancelled and reported",
        ));
    }
    Ok(())
}

/// Hands one host's result to the callback; its return value.
fn deliver(
    r: HostResult,
    callback: unsafe extern "C" fn(
        *mut c_void,
        usize,
        *const c_char,
        psr_host_status,
        *const c_char,
        *const psr_error,
    ) -> i32,
    userdata: *mut c_void,
) -> i32 {
    let status = psr_host_status::from(r.status());
    let host = cstring(&r.host);
    let (result, error) = match r.result {
        Ok(HostOutput::PowerShell(p)) => {
            let state = c_state(p.state);
            let records = p
                .errors
                .iter()
                .map(|e| ("errors", error_record_json(e)))
                .chain(p.warnings.iter().map(|w| ("warnings", Json::String(w.message.clone()))))
                .chain(p.verbose.iter().map(|v| ("verbose", Json::String(v.message.clone()))))
                .chain(p.debug.iter().map(|d| ("debug", Json::String(d.message.clone()))))
                .chain(p.information.iter().map(|i| ("information", Json::String(i.text()))));
            let output = p.output.iter().map(to_json);
            (invocation_json(state, p.had_errors(), records, output, p.terminating_error.as_ref()), None)
        }
        Ok(HostOutput::Cmd(o)) => (
            json!({
                "stdout": String::from_utf8_lossy(&o.stdout),
                "stderr": String::from_utf8_lossy(&o.stderr),
                "exit_code": o.exit_code,
            }),
            None,
        ),
        Err(e) => (Json::Null, Some(Failure::from(e))),
    };
    let error_json = error.as_ref().map_or(
        Json::Null,
        |e| json!({"code": result_name(e.code as u32).to_str().unwrap_or("PSR_RESULT_UNKNOWN"), "message": e.message}),
    );
    let json = json!({
        "host": r.host,
        "index": r.index,
        "status": format!("{status:?}"),
        "elapsed_ms": u64::try_from(r.elapsed.as_millis()).unwrap_or(u64::MAX),
        "attempts": r.attempts,
        "result": result,
        "error": error_json,
    });
    let json = cstring(&json.to_string());
    let error = error.map(psr_error::from);
    let error_ptr = error.as_ref().map_or(std::ptr::null(), |e| e as *const psr_error);
    // SAFETY: the callback contract (psr_fleet_result_fn): it is called on this thread with
    // strings and an error that stay valid for the call.
    unsafe { callback(userdata, r.index, host.as_ptr(), status, json.as_ptr(), error_ptr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_without_hosts_reports_nothing_and_returns() {
        unsafe extern "C" fn count(
            userdata: *mut c_void,
            _: usize,
            _: *const c_char,
            _: psr_host_status,
            _: *const c_char,
            _: *const psr_error,
        ) -> i32 {
            // SAFETY: the test passes a pointer to its counter.
            unsafe { *userdata.cast::<u32>() += 1 };
            0
        }
        let mut calls = 0u32;
        let f = psr_fleet_new();
        assert_eq!(psr_fleet_host_count(f), 0);
        let script = std::ffi::CString::new("1").unwrap();
        let userdata = (&raw mut calls).cast::<c_void>();
        let rc = psr_fleet_run_ps(f, script.as_ptr(), std::ptr::null(), Some(count), userdata, std::ptr::null_mut());
        assert_eq!((rc, calls), (PsrResult::Ok, 0));
        psr_fleet_free(f);
    }
}
