//! Result codes and the error object.

use std::ffi::{CStr, CString, c_char};

use crate::ffi::{cstring, free, handle};

/// Result of every fallible call. Values are stable and never reused.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsrResult {
    /// Success.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// An argument was invalid (not UTF-8, bad JSON, out of range).
    InvalidArgument = 2,
    /// The configuration cannot be used.
    InvalidConfig = 3,
    /// The server refused the credentials.
    Authentication = 4,
    /// Nothing accepted the TCP connection.
    Connect = 5,
    /// The HTTP exchange failed.
    Transport = 6,
    /// The server answered with a WS-Management fault.
    Fault = 7,
    /// The server broke the protocol.
    Protocol = 8,
    /// A time limit passed.
    Timeout = 9,
    /// The handle (or its pool) was closed.
    Closed = 10,
    /// A callback asked to stop.
    Callback = 11,
    /// psremote panicked (a bug); the handle should not be used further.
    Panic = 12,
    /// The TLS handshake failed or the server's certificate did not verify.
    Tls = 13,
    /// A security rule refused the operation (e.g. NTLM towards an unverified server).
    Policy = 14,
    /// A file copy or fetch failed on one side (the message names the side, the path and why).
    File = 15,
    /// The runspace pool is disconnected: reconnect (or connect) first.
    Disconnected = 16,
    /// The server has no such runspace pool, pipeline or command (`psr_error_fault_code` has its fault).
    NotFound = 17,
    /// A command wrote more output than `psr_client_run_cmd` collects (see
    /// `psr_run_cmd_options_set_max_output`); the command was terminated and its shell deleted.
    OutputTooLarge = 18,
    /// The proxy gave no tunnel to the server: unreachable, refused the tunnel or the proxy
    /// credentials, closed or broke the handshake (the message names the proxy and why).
    Proxy = 19,
}

/// A failure on its way to C.
#[derive(Debug)]
pub struct Failure {
    pub code: PsrResult,
    pub message: String,
    pub fault_code: u32,
    /// A file transfer's failure: (kind, side, path).
    pub file: Option<(&'static str, &'static str, String)>,
}

impl Failure {
    pub fn new(code: PsrResult, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), fault_code: 0, file: None }
    }

    pub fn null(name: &str) -> Self {
        Self::new(PsrResult::NullArgument, format!("{name} is NULL"))
    }
}

impl From<psremote::Error> for Failure {
    fn from(e: psremote::Error) -> Self {
        use psremote::ErrorKind as K;
        let code = match e.kind() {
            K::InvalidConfig => PsrResult::InvalidConfig,
            K::Authentication => PsrResult::Authentication,
            K::Connect => PsrResult::Connect,
            K::Transport => PsrResult::Transport,
            K::Fault => PsrResult::Fault,
            K::Protocol => PsrResult::Protocol,
            K::Timeout => PsrResult::Timeout,
            K::Closed => PsrResult::Closed,
            K::Tls => PsrResult::Tls,
            K::Policy => PsrResult::Policy,
            K::File => PsrResult::File,
            K::Disconnected => PsrResult::Disconnected,
            K::NotFound => PsrResult::NotFound,
            K::OutputTooLarge => PsrResult::OutputTooLarge,
            K::Proxy => PsrResult::Proxy,
        };
        let fault_code = e.fault().and_then(|f| f.code).unwrap_or(0);
        let file = e.file().map(|f| (f.kind.as_str(), f.side.as_str(), f.path.clone()));
        // The message often holds the server's words: shown, never obeyed.
        let message = psremote::text::printable(&e.to_string()).into_owned();
        Self { code, message, fault_code, file }
    }
}

/// Details of a failed call. Free with `psr_error_free`.
#[allow(non_camel_case_types)]
pub struct psr_error {
    code: PsrResult,
    message: CString,
    fault_code: u32,
    file: Option<(CString, CString, CString)>,
}

impl From<Failure> for psr_error {
    fn from(f: Failure) -> Self {
        let file = f.file.map(|(kind, side, path)| (cstring(kind), cstring(side), cstring(&path)));
        Self { code: f.code, message: cstring(&f.message), fault_code: f.fault_code, file }
    }
}

/// The result code of an error. NULL gives `PSR_RESULT_NULL_ARGUMENT`. Errors are plain data: every
/// `psr_error_*` accessor may be called from any thread; returned strings are owned by `e`.
#[unsafe(no_mangle)]
pub extern "C" fn psr_error_code(e: *const psr_error) -> PsrResult {
    handle(e, "e").map(|e| e.code).unwrap_or(PsrResult::NullArgument)
}

/// The error's message (UTF-8, owned by `e`, valid until `psr_error_free`). NULL if `e` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_error_message(e: *const psr_error) -> *const c_char {
    handle(e, "e").map(|e| e.message.as_ptr()).unwrap_or(std::ptr::null())
}

/// The WS-Management fault code of a `PSR_RESULT_FAULT` error; 0 when there is none or `e` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_error_fault_code(e: *const psr_error) -> u32 {
    handle(e, "e").map(|e| e.fault_code).unwrap_or(0)
}

/// What went wrong in a failed file transfer (`psr_client_copy`, `psr_client_fetch`):
/// "NotFound", "IsADirectory", "ParentNotFound", "AccessDenied", "DiskFull", "InUse",
/// "InvalidPath", "HashMismatch", "Cancelled" or "Io" (owned by `e`). NULL when the error is not
/// a file error (or `e` is NULL); a transfer's connection failures are not file errors.
#[unsafe(no_mangle)]
pub extern "C" fn psr_error_file_kind(e: *const psr_error) -> *const c_char {
    file_part(e, |f| &f.0)
}

/// Which side of a failed file transfer failed: "local" or "remote" (owned by `e`); NULL when
/// the error is not a file error.
#[unsafe(no_mangle)]
pub extern "C" fn psr_error_file_side(e: *const psr_error) -> *const c_char {
    file_part(e, |f| &f.1)
}

/// The path concerned by a failed file transfer, as the failing side names it (owned by `e`);
/// NULL when the error is not a file error.
#[unsafe(no_mangle)]
pub extern "C" fn psr_error_file_path(e: *const psr_error) -> *const c_char {
    file_part(e, |f| &f.2)
}

fn file_part(e: *const psr_error, part: impl Fn(&(CString, CString, CString)) -> &CString) -> *const c_char {
    handle(e, "e").ok().and_then(|e| e.file.as_ref()).map(|f| part(f).as_ptr()).unwrap_or(std::ptr::null())
}

/// Frees an error (its strings go with it). NULL is allowed. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_error_free(e: *mut psr_error) {
    free(e);
}

/// The name of a result code (a static string, never NULL; "PSR_RESULT_UNKNOWN" for other values).
/// Takes the code as an integer so that any value a C caller passes is defined.
#[unsafe(no_mangle)]
pub extern "C" fn psr_result_name(r: u32) -> *const c_char {
    result_name(r).as_ptr()
}

/// The name of a result code as `psr_result_name` gives it (the fleet's JSON names codes too).
pub(crate) fn result_name(r: u32) -> &'static CStr {
    match r {
        0 => c"PSR_RESULT_OK",
        1 => c"PSR_RESULT_NULL_ARGUMENT",
        2 => c"PSR_RESULT_INVALID_ARGUMENT",
        3 => c"PSR_RESULT_INVALID_CONFIG",
        4 => c"PSR_RESULT_AUTHENTICATION",
        5 => c"PSR_RESULT_CONNECT",
        6 => c"PSR_RESULT_TRANSPORT",
        7 => c"PSR_RESULT_FAULT",
        8 => c"PSR_RESULT_PROTOCOL",
        9 => c"PSR_RESULT_TIMEOUT",
        10 => c"PSR_RESULT_CLOSED",
        11 => c"PSR_RESULT_CALLBACK",
        12 => c"PSR_RESULT_PANIC",
        13 => c"PSR_RESULT_TLS",
        14 => c"PSR_RESULT_POLICY",
        15 => c"PSR_RESULT_FILE",
        16 => c"PSR_RESULT_DISCONNECTED",
        17 => c"PSR_RESULT_NOT_FOUND",
        18 => c"PSR_RESULT_OUTPUT_TOO_LARGE",
        19 => c"PSR_RESULT_PROXY",
        _ => c"PSR_RESULT_UNKNOWN",
    }
}
