//! Configuration, client, cmd commands and runspace pools.

use std::ffi::{c_char, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use psremote::auth::Mechanism;
use psremote::client::{self as core, ClientConfig, PoolConfig, runtime};
use psremote::psrp::{HostCall, HostMethod, HostResponse};

use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{check_out, free, guard, guard_ptr, handle, handle_mut, opt_str_arg, out, str_arg, str_array};

/// Connection settings. Free with `psr_config_free`.
#[allow(non_camel_case_types)]
pub struct psr_config(pub(crate) ClientConfig);

/// A connected client. Free with `psr_client_free`.
#[allow(non_camel_case_types)]
pub struct psr_client(pub(crate) core::Client);

/// What a cmd command produced. Free with `psr_cmd_result_free`.
#[allow(non_camel_case_types)]
pub struct psr_cmd_result {
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    pub(crate) exit_code: i64,
}

/// An open runspace pool. Free with `psr_pool_free`.
#[allow(non_camel_case_types)]
pub struct psr_pool {
    pub(crate) id: std::ffi::CString,
    pub(crate) pool: core::RunspacePool,
    pub(crate) closed: Arc<AtomicBool>,
}

impl psr_pool {
    pub(crate) fn new(pool: core::RunspacePool) -> Self {
        psr_pool { id: crate::ffi::cstring(pool.id()), pool, closed: Arc::new(AtomicBool::new(false)) }
    }

    /// CLOSED once `psr_pool_close` ran (or the server was found to have deleted the pool).
    pub(crate) fn live(&self) -> Result<(), Failure> {
        if self.closed.load(Ordering::SeqCst) {
            Err(Failure::new(PsrResult::Closed, "the runspace pool is closed"))
        } else {
            Ok(())
        }
    }
}

/// Host callbacks for Read-Host and Get-Credential. Copied by `psr_pool_open` (and
/// `psr_pool_open_with_options`, `psr_client_pool_connect`).
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Clone, Copy)]
pub struct psr_host {
    /// Passed first to every callback.
    pub userdata: *mut c_void,
    /// Read-Host: write a NUL-terminated answer into `buf` (at most `buf_len` bytes with the NUL);
    /// return 0, or nonzero to fail the call.
    pub read_line: Option<
        unsafe extern "C" fn(userdata: *mut c_void, prompt: *const c_char, buf: *mut c_char, buf_len: usize) -> i32,
    >,
    /// Get-Credential: fill `user` and `password` (NUL-terminated); return 0, or nonzero to fail.
    pub prompt_for_credential: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            caption: *const c_char,
            message: *const c_char,
            user: *mut c_char,
            user_len: usize,
            password: *mut c_char,
            password_len: usize,
        ) -> i32,
    >,
}

/// The C host as a core host.
pub(crate) struct CHost(pub(crate) psr_host);

// SAFETY: the caller of psr_pool_open promises that `userdata` and the callbacks may be used from
// psremote's worker threads (documented in the header); psremote calls them one at a time.
unsafe impl Send for CHost {}
// SAFETY: as above; calls are serialised by the pool's single host worker.
unsafe impl Sync for CHost {}

const HOST_BUF: usize = 4096;

fn read_cbuf(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl core::Host for CHost {
    fn call(&self, call: &HostCall) -> HostResponse {
        let text = |i: usize| crate::ffi::cstring(call.parameters.get(i).and_then(|v| v.as_str()).unwrap_or(""));
        match call.method {
            HostMethod::ReadLine | HostMethod::ReadLineAsSecureString => {
                let Some(f) = self.0.read_line else { return HostResponse::NotImplemented };
                let prompt = text(0);
                let mut buf = vec![0u8; HOST_BUF];
                // SAFETY: the callback contract: it writes at most HOST_BUF bytes into buf.
                let rc = unsafe { f(self.0.userdata, prompt.as_ptr(), buf.as_mut_ptr().cast(), HOST_BUF) };
                if rc != 0 {
                    return HostResponse::Error(format!("the host's read_line callback failed ({rc})"));
                }
                let answer = read_cbuf(&buf);
                buf.fill(0);
                if call.method == HostMethod::ReadLineAsSecureString {
                    HostResponse::SecureString(answer.into())
                } else {
                    HostResponse::Value(psremote::clixml::Value::Str(answer))
                }
            }
            HostMethod::PromptForCredential1 | HostMethod::PromptForCredential2 => {
                let Some(f) = self.0.prompt_for_credential else { return HostResponse::NotImplemented };
                let (caption, message) = (text(0), text(1));
                let (mut user, mut password) = (vec![0u8; HOST_BUF], vec![0u8; HOST_BUF]);
                // SAFETY: the callback contract: it writes at most HOST_BUF bytes into each buffer.
                let rc = unsafe {
                    f(
                        self.0.userdata,
                        caption.as_ptr(),
                        message.as_ptr(),
                        user.as_mut_ptr().cast(),
                        HOST_BUF,
                        password.as_mut_ptr().cast(),
                        HOST_BUF,
                    )
                };
                if rc != 0 {
                    return HostResponse::Error(format!("the host's prompt_for_credential callback failed ({rc})"));
                }
                let response =
                    HostResponse::Credential { username: read_cbuf(&user), password: read_cbuf(&password).into() };
                password.fill(0);
                response
            }
            _ => HostResponse::NotImplemented,
        }
    }
}

/// Blocks on a core future from a C thread. Not callable from a psremote callback thread.
pub(crate) fn block<T>(fut: impl std::future::Future<Output = psremote::Result<T>>) -> Result<T, Failure> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::new(
            PsrResult::InvalidArgument,
            "psremote cannot be called from inside a psremote callback",
        ));
    }
    runtime().block_on(fut).map_err(Failure::from)
}

/// New settings for `url` (`http://host:port/path`, port 5985 by default, or `https://...`, port
/// 5986) with a user and password (the password is copied and zeroized when the config is freed).
/// Negotiate by default. NTLM (and Negotiate, which falls back to it) is used only towards a
/// server whose identity something proves: an https certificate that verifies, or the host named
/// with `psr_config_set_trusted_hosts`; otherwise `psr_client_connect` gives `PSR_RESULT_POLICY`.
///
/// Ownership: the caller frees the result with `psr_config_free`. NULL when an argument is NULL or
/// not UTF-8, or the URL cannot be used. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_new(
    url: *const c_char,
    username: *const c_char,
    password: *const c_char,
) -> *mut psr_config {
    guard_ptr(|| {
        let (Ok(url), Ok(user), Ok(pw)) =
            (str_arg(url, "url"), str_arg(username, "username"), str_arg(password, "password"))
        else {
            return std::ptr::null_mut();
        };
        match ClientConfig::new("", user, pw).with_url(url) {
            Ok(c) => Box::into_raw(Box::new(psr_config(c))),
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// Sets the authentication mechanism: "negotiate", "ntlm", "kerberos", "basic" (only over https,
/// or with `psr_config_set_allow_unencrypted`), "credssp" or "certificate" (https with
/// `psr_config_set_client_certificate`). Whether the core supports a mechanism, and whether the
/// security rules allow it towards the endpoint, is reported by `psr_client_connect`.
///
/// Ownership: `c` and `mechanism` are borrowed. Errors: NULL_ARGUMENT, INVALID_CONFIG (unknown
/// name). Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_auth(
    c: *mut psr_config,
    mechanism: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        let m: Mechanism = str_arg(mechanism, "mechanism")?.parse()?;
        c.0.mechanism = m;
        Ok(())
    })
}

/// Sets the largest HTTP reply body accepted, in bytes (0: the default, the MaxEnvelopeSize each
/// request announces plus a margin for sealing: 228736 bytes for the default 153600). A larger
/// reply fails the call with TRANSPORT, refused while it is read.
///
/// Ownership: `c` is borrowed. NULL `c` gives NULL_ARGUMENT.
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_max_reply_size(c: *mut psr_config, bytes: u64, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        handle_mut(c, "c")?.0.max_reply_size = (bytes != 0).then_some(bytes);
        Ok(())
    })
}

/// Sets how many events of one pipeline are decoded and buffered before its reader takes them
/// (default 256). A full buffer pauses that pipeline's Receive loop, so a reader that does not
/// keep up slows the server down instead of filling memory.
///
/// Ownership: `c` is borrowed. NULL `c` gives NULL_ARGUMENT. Errors: INVALID_CONFIG for 0.
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_max_events_ahead(
    c: *mut psr_config,
    events: u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        if events == 0 {
            return Err(Failure::new(PsrResult::InvalidConfig, "max_events_ahead must be at least 1"));
        }
        c.0.max_events_ahead = events as usize;
        Ok(())
    })
}

/// Sets the WS-Man OperationTimeout (how long the server holds a Receive), in milliseconds (>= 1000).
/// Over SSH and the process transport, three of it bound the waits for the server's
/// acknowledgements.
///
/// Ownership: `c` is borrowed. NULL `c` gives NULL_ARGUMENT. Errors: INVALID_CONFIG below 1000 ms.
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_operation_timeout_ms(
    c: *mut psr_config,
    ms: u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        if ms < 1000 {
            return Err(Failure::new(PsrResult::InvalidConfig, "the operation timeout must be at least 1000 ms"));
        }
        c.0.operation_timeout = Duration::from_millis(u64::from(ms));
        Ok(())
    })
}

/// Allows plaintext bodies after authentication (Basic over HTTP). Off by default; a warning is
/// logged when on.
///
/// Ownership: `c` is borrowed. NULL `c` gives NULL_ARGUMENT. Errors: none other.
/// Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_allow_unencrypted(
    c: *mut psr_config,
    allow: bool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(c, "c")?.0.allow_unencrypted = allow;
        Ok(())
    })
}

/// Makes the client reach PowerShell through a local program instead of WS-Man: each runspace
/// pool starts `executable` with `args` and speaks PowerShell's out-of-process transport on its
/// stdin and stdout (`pwsh -NoLogo -s` serves it; its stderr is kept for error messages). The
/// program is ended (killed if need be, and reaped) when the pool closes or fails. The URL,
/// credentials and WS-Man settings of `c` then play no part. `executable` NULL: "pwsh"; `args`
/// NULL: "-NoLogo", "-s" (`nargs` is then ignored). A program that cannot be started gives
/// CONNECT when a pool opens; one that exits mid-session TRANSPORT (with its exit status and
/// stderr), one that writes something else than the transport's packets PROTOCOL. Cmd shells,
/// disconnect, reconnect, connect and list are WS-Man only: INVALID_CONFIG.
///
/// Ownership: `c`, `executable` and `args` (an array of `nargs` strings) are borrowed and
/// copied. Errors: NULL_ARGUMENT (`c`, or a NULL entry in `args`), INVALID_ARGUMENT (not UTF-8),
/// INVALID_CONFIG (an empty executable, or `c` made by `psr_config_new_ssh`: its SSH carrier is
/// not replaced). Threading: not concurrently with other calls on the same config.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_set_process(
    c: *mut psr_config,
    executable: *const c_char,
    args: *const *const c_char,
    nargs: usize,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle_mut(c, "c")?;
        if matches!(c.0.carrier, core::Carrier::Ssh(_)) {
            return Err(Failure::new(
                PsrResult::InvalidConfig,
                "an SSH configuration (psr_config_new_ssh) cannot become a process one: make it with psr_config_new",
            ));
        }
        let mut options = core::ProcessOptions::default();
        if let Some(exe) = opt_str_arg(executable, "executable")? {
            options.executable = exe.to_owned();
        }
        if !args.is_null() {
            options.arguments = str_array(args, nargs, "args")?;
        }
        let carrier = core::Carrier::Process(options);
        carrier.validate()?;
        c.0.carrier = carrier;
        Ok(())
    })
}

/// Frees settings. NULL is allowed. Threading: any thread, once no other call uses the handle.
#[unsafe(no_mangle)]
pub extern "C" fn psr_config_free(c: *mut psr_config) {
    free(c);
}

/// Connects and authenticates. `c` is not consumed.
///
/// Ownership: `*out` (written only on success) is freed with `psr_client_free`. Errors:
/// NULL_ARGUMENT, INVALID_CONFIG (including unreadable CA or key files, a wrong key password),
/// POLICY (a security rule refused the configuration before any request: NTLM towards a server
/// nothing proves, Basic over http; the message names the ways out), TLS (the handshake or the
/// certificate check failed: untrusted issuer, wrong name, pin mismatch; the message says which
/// host and why), AUTHENTICATION, CONNECT, TRANSPORT, PROTOCOL. Threading: blocks the calling
/// thread; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_connect(
    c: *const psr_config,
    out_client: *mut *mut psr_client,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let c = handle(c, "c")?;
        check_out(out_client, "out")?;
        let client = block(core::Client::connect(c.0.clone()))?;
        out(out_client, psr_client(client));
        Ok(())
    })
}

/// How long freeing a client waits for the background cleanups under way (the Signal and
/// Delete of work that was stopped or freed).
const CLEANUP_GRACE: Duration = Duration::from_secs(30);

/// Frees a client (its idle connections close). First waits, up to 30 s, for the cleanups still
/// under way in the background (the Signal and Delete that release commands, shells and pools
/// stopped by a deadline or freed while running), so that a program that exits next leaves
/// nothing on the server. NULL is allowed. Threading: any thread, once no other call uses the
/// handle; from inside a psremote callback it frees without waiting.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_free(c: *mut psr_client) {
    if !c.is_null() && tokio::runtime::Handle::try_current().is_err() {
        let _ = std::panic::catch_unwind(|| runtime().block_on(core::cleanup_finished(CLEANUP_GRACE)));
    }
    free(c);
}

/// Runs `exe` with `args` in a new cmd shell with the default options (UTF-8 code page, see
/// `psr_cmd_shell_options_new`), feeding `stdin_data` (may be NULL when `stdin_len` is 0) and
/// closing stdin, and waits for it. `args` may be NULL when `nargs` is 0. At most 64 MiB of
/// stdout and stderr together are kept (`psr_client_run_cmd_with_options` sets another limit, or
/// a deadline).
///
/// Ownership: `*out` is freed with `psr_cmd_result_free`; `args` (an array of `nargs` strings) is
/// borrowed for the call. Errors: NULL_ARGUMENT, INVALID_ARGUMENT, OUTPUT_TOO_LARGE (the command
/// was terminated and its shell deleted), CLOSED (the command ended without an exit code), and
/// connection errors. Threading: blocks the calling thread.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn psr_client_run_cmd(
    c: *mut psr_client,
    exe: *const c_char,
    args: *const *const c_char,
    nargs: usize,
    stdin_data: *const u8,
    stdin_len: usize,
    out_result: *mut *mut psr_cmd_result,
    err: *mut *mut psr_error,
) -> PsrResult {
    crate::run::psr_client_run_cmd_with_options(
        c,
        exe,
        args,
        nargs,
        stdin_data,
        stdin_len,
        std::ptr::null(),
        out_result,
        err,
    )
}

/// The command's stdout (owned by `r`, valid until `psr_cmd_result_free`); its length goes to
/// `*len`. NULL if an argument is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_result_stdout(r: *const psr_cmd_result, len: *mut usize) -> *const u8 {
    bytes(r, len, |r| &r.stdout)
}

/// The command's stderr (owned by `r`, valid until `psr_cmd_result_free`); its length goes to
/// `*len`. NULL if an argument is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_result_stderr(r: *const psr_cmd_result, len: *mut usize) -> *const u8 {
    bytes(r, len, |r| &r.stderr)
}

fn bytes(r: *const psr_cmd_result, len: *mut usize, pick: fn(&psr_cmd_result) -> &Vec<u8>) -> *const u8 {
    let Ok(r) = handle(r, "r") else { return std::ptr::null() };
    if len.is_null() {
        return std::ptr::null();
    }
    let b = pick(r);
    // SAFETY: `len` is non-NULL and writable (API contract).
    unsafe { *len = b.len() };
    b.as_ptr()
}

/// The command's exit code; -1 if `r` is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_result_exit_code(r: *const psr_cmd_result) -> i64 {
    handle(r, "r").map(|r| r.exit_code).unwrap_or(-1)
}

/// Frees a cmd result. NULL is allowed. Threading: any thread, once no other call uses the handle.
#[unsafe(no_mangle)]
pub extern "C" fn psr_cmd_result_free(r: *mut psr_cmd_result) {
    free(r);
}

/// Opens a runspace pool on `configuration_name` (NULL for Microsoft.PowerShell). `host` (may be
/// NULL) is copied; its callbacks run on a psremote worker thread, one at a time, and must not
/// call psremote.
///
/// Ownership: `*out` is freed with `psr_pool_free`. Errors: NULL_ARGUMENT, FAULT (e.g. unknown
/// configuration), connection errors. Threading: blocks the calling thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_open(
    c: *mut psr_client,
    configuration_name: *const c_char,
    host: *const psr_host,
    out_pool: *mut *mut psr_pool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        check_out(out_pool, "out")?;
        let mut config = PoolConfig::default();
        if let Some(name) = opt_str_arg(configuration_name, "configuration_name")? {
            config.configuration_name = name.to_owned();
        }
        // SAFETY: a non-NULL `host` points to a psr_host valid for this call (API contract); it is copied.
        if let Some(h) = unsafe { host.as_ref() } {
            config.host = Some(Arc::new(CHost(*h)));
        }
        let pool = block(async move { core::RunspacePool::open(&client, config).await })?;
        out(out_pool, psr_pool::new(pool));
        Ok(())
    })
}

/// Closes the pool (deletes the remote shell). Afterwards every call on the pool or its
/// pipelines returns `PSR_RESULT_CLOSED`; the handle must still be freed.
///
/// Ownership: `p` is borrowed. NULL `p` gives NULL_ARGUMENT. Errors: CLOSED (already closed),
/// connection errors. Threading: blocks the calling thread; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_close(p: *mut psr_pool, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        if p.closed.swap(true, Ordering::SeqCst) {
            return Err(Failure::new(PsrResult::Closed, "the runspace pool is already closed"));
        }
        let pool = p.pool.clone();
        block(async move { pool.close().await })
    })
}

/// Frees a pool, deleting the remote shell if it was not closed. NULL is allowed. Threading: any thread, once no other call uses the handle.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_free(p: *mut psr_pool) {
    free(p);
}
