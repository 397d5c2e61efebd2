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

// The version of psremote.h. cbindgen copies these literals into the header (it cannot expand
// `env!`); the unit tests below fail when they differ from the crate's version, so a version bump
// in Cargo.toml needs them changed too (and `make header`). PSR_VERSION_STRING is made from them
// by the preprocessor (cbindgen.toml's after_includes: cbindgen emits no string constants).

/// The major version of the psremote.h a program was compiled with.
///
/// ABI policy: from 1.0 on, a release with the same major version is binary compatible (the
/// shared library's SONAME is `libpsremote.so.<MAJOR>`); before 1.0, every minor release may break
/// the ABI, so the SONAME is `libpsremote.so.0.<MINOR>` and only patch releases of one 0.MINOR
/// series are compatible. `psr_version_number()` tells a program which library it loaded.
pub const PSR_VERSION_MAJOR: u32 = 0;
/// The minor version of the psremote.h a program was compiled with (see `PSR_VERSION_MAJOR`).
pub const PSR_VERSION_MINOR: u32 = 1;
/// The patch version of the psremote.h a program was compiled with (see `PSR_VERSION_MAJOR`).
pub const PSR_VERSION_PATCH: u32 = 0;
/// The version of the psremote.h a program was compiled with as one number,
/// `(MAJOR << 16) | (MINOR << 8) | PATCH` (0.1.0 is 0x000100): what `psr_version_number()` returns
/// when the loaded library is the same release. Compare numbers, not strings, for "at least".
pub const PSR_VERSION_NUMBER: u32 = (PSR_VERSION_MAJOR << 16) | (PSR_VERSION_MINOR << 8) | PSR_VERSION_PATCH;

/// The version of the loaded library as a NUL-terminated UTF-8 string, e.g. `"0.1.0"`; equal to
/// `PSR_VERSION_STRING` when the program runs with the release it was compiled against (to test
/// for "at least" or for the ABI series, use `psr_version_number()`).
///
/// Ownership: the string is static; do not free it. Threading: callable from any thread.
/// Errors: none.
#[unsafe(no_mangle)]
pub extern "C" fn psr_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The version of the loaded library as `(MAJOR << 16) | (MINOR << 8) | PATCH`, the encoding of
/// `PSR_VERSION_NUMBER`. A program compiled against 0.MINOR.x can check at run time that it
/// loaded the same ABI series with
/// `(psr_version_number() >> 8) == (PSR_VERSION_NUMBER >> 8)` (from 1.0 on, `>> 16`).
///
/// Threading: callable from any thread. Errors: none.
#[unsafe(no_mangle)]
pub extern "C" fn psr_version_number() -> u32 {
    VERSION_NUMBER
}

/// This crate's version as `psr_version_number` encodes it, computed by the compiler.
const VERSION_NUMBER: u32 =
    version_number(env!("CARGO_PKG_VERSION_MAJOR"), env!("CARGO_PKG_VERSION_MINOR"), env!("CARGO_PKG_VERSION_PATCH"));

/// `(major << 16) | (minor << 8) | patch` of cargo's decimal version parts, at compile time.
const fn version_number(major: &str, minor: &str, patch: &str) -> u32 {
    (parse_part(major) << 16) | (parse_part(minor) << 8) | parse_part(patch)
}

/// A decimal version part below 256 (the number's byte for it); anything else stops the build.
const fn parse_part(s: &str) -> u32 {
    let b = s.as_bytes();
    assert!(!b.is_empty(), "empty version part");
    let mut n: u32 = 0;
    let mut i = 0;
    while i < b.len() {
        assert!(b[i].is_ascii_digit(), "version part is not a decimal number");
        n = n * 10 + (b[i] - b'0') as u32;
        assert!(n < 256, "version part does not fit psr_version_number's byte");
        i += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_nul_terminated() {
        // SAFETY: psr_version returns a pointer to a static NUL-terminated string.
        let s = unsafe { std::ffi::CStr::from_ptr(super::psr_version()) };
        assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    /// The header's constants are literals (cbindgen copies them); a version bump in Cargo.toml
    /// without them (and `make header`) fails here.
    #[test]
    fn header_constants_are_the_crate_version() {
        let part = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(super::PSR_VERSION_MAJOR, part(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(super::PSR_VERSION_MINOR, part(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(super::PSR_VERSION_PATCH, part(env!("CARGO_PKG_VERSION_PATCH")));
        // PSR_VERSION_STRING is "MAJOR.MINOR.PATCH": a pre-release or build suffix would make it lie.
        let (major, minor, patch) = (super::PSR_VERSION_MAJOR, super::PSR_VERSION_MINOR, super::PSR_VERSION_PATCH);
        assert_eq!(format!("{major}.{minor}.{patch}"), env!("CARGO_PKG_VERSION"));
        assert_eq!(super::psr_version_number(), super::PSR_VERSION_NUMBER);
        assert_eq!(super::PSR_VERSION_NUMBER, major * 65536 + minor * 256 + patch);
    }

    #[test]
    fn version_numbers_are_bytes_of_one_word() {
        assert_eq!(super::version_number("0", "1", "0"), 0x000100);
        assert_eq!(super::version_number("1", "12", "255"), 0x010cff);
        assert_eq!(super::version_number("10", "0", "7"), 0x0a0007);
    }
}
