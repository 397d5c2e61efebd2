//! The C ABI of psremote (`libpsremote`). The header `include/psremote.h` is generated from this
//! crate by cbindgen (`make header`).
//!
//! This crate translates only: every protocol decision lives in the `psremote` core crate.

// The C boundary is the one place unsafe code is allowed; every block states its reason.
#![allow(unsafe_code)]

use std::ffi::c_char;

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
