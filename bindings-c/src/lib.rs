//! The C ABI of psremote (`libpsremote`). The header `include/psremote.h` is generated from this
//! crate by cbindgen (`make header`).
//!
//! This crate translates only: every protocol decision lives in the `psremote` core crate.
//! Conventions: opaque handles, one NULL-tolerant `_free` per constructor, `psr_result` codes
//! with stable values, out-parameters written only on success, details in a `psr_error`, panics
//! stopped at the boundary (`PSR_RESULT_PANIC`). Blocking calls run on psremote's runtime and
//! must not be made from inside a psremote callback.

// The C boundary is the one place unsafe code is allowed; every block states its reason, and the
// pointer conversions live in `ffi.rs`.
#![allow(unsafe_code)]
// The handles are opaque to C and never printed; Debug impls would only add surface.
#![allow(missing_debug_implementations)]

mod client;
mod cmd;
mod error;
mod ffi;
mod files;
mod fleet;
mod json;
mod log;
mod pipeline;
mod proxy;
mod run;
mod security;
mod server;
mod sessions;
mod ssh;

use std::ffi::c_char;

pub use client::{psr_client, psr_cmd_result, psr_config, psr_host, psr_pool};
pub use cmd::{psr_cmd_chunk, psr_cmd_process, psr_cmd_shell, psr_cmd_shell_options, psr_cmd_stream};
pub use error::{PsrResult, psr_error};
pub use files::psr_transfer_options;
pub use fleet::{psr_fleet, psr_fleet_options, psr_host_status};
pub use pipeline::{psr_callbacks, psr_invocation, psr_pipeline, psr_state, psr_stream};
pub use run::psr_run_cmd_options;
pub use sessions::{psr_buffer_mode, psr_pool_options};

/// The library version as a NUL-terminated UTF-8 string, e.g. `"0.1.0"`.
///
/// Ownership: the string is static; do not free it. Threading: callable from any thread.
/// Errors: none.
#[unsafe(no_mangle)]
pub extern "C" fn psr_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_nul_terminated() {
        // SAFETY: psr_version returns a pointer to a static NUL-terminated string.
        let s = unsafe { std::ffi::CStr::from_ptr(super::psr_version()) };
        assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
