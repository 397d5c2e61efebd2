//! The one audited place where C pointers become Rust values, and where panics stop.

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::error::{Failure, PsrResult, psr_error};

/// Runs `f`, turning a panic into `PSR_RESULT_PANIC` and a failure into its code plus an error
/// object written to `err` (when `err` is not NULL).
pub fn guard(err: *mut *mut psr_error, f: impl FnOnce() -> Result<(), Failure>) -> PsrResult {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => PsrResult::Ok,
        Ok(Err(failure)) => {
            let code = failure.code;
            write_error(err, failure);
            code
        }
        Err(_) => {
            write_error(err, Failure::new(PsrResult::Panic, "psremote panicked; this is a bug"));
            PsrResult::Panic
        }
    }
}

/// Runs `f` for a function that returns a pointer; NULL on panic.
pub fn guard_ptr<T>(f: impl FnOnce() -> *mut T) -> *mut T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(std::ptr::null_mut())
}

fn write_error(err: *mut *mut psr_error, failure: Failure) {
    if !err.is_null() {
        let boxed = Box::into_raw(Box::new(psr_error::from(failure)));
        // SAFETY: `err` is non-NULL and, by the API contract, points to writable storage for one pointer.
        unsafe { *err = boxed };
    }
}

/// Reads a NUL-terminated UTF-8 string.
pub fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Failure> {
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: `p` is non-NULL and, by the API contract, a NUL-terminated string valid for this call.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| Failure::new(PsrResult::InvalidArgument, format!("{name} is not valid UTF-8")))
}

/// Reads an optional string (NULL allowed).
pub fn opt_str_arg<'a>(p: *const c_char, name: &str) -> Result<Option<&'a str>, Failure> {
    if p.is_null() { Ok(None) } else { str_arg(p, name).map(Some) }
}

/// Reads an array of `n` NUL-terminated UTF-8 strings (`p` may be NULL when `n` is 0).
pub fn str_array(p: *const *const c_char, n: usize, name: &str) -> Result<Vec<String>, Failure> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: `p` is non-NULL and, by the API contract, points to `n` readable string pointers.
    let slots = unsafe { std::slice::from_raw_parts(p, n) };
    slots.iter().enumerate().map(|(i, &s)| str_arg(s, &format!("{name}[{i}]")).map(str::to_owned)).collect()
}

/// Borrows `len` bytes at `p` (`p` may be NULL when `len` is 0).
pub fn bytes_arg<'a>(p: *const u8, len: usize, name: &str) -> Result<&'a [u8], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: `p` is non-NULL and, by the API contract, points to `len` bytes readable for this call.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Writes a plain value to an out-parameter that the caller checked for NULL.
pub fn out_value<T>(p: *mut T, value: T) {
    // SAFETY: callers check `p` for NULL first; it points to writable storage for one `T`.
    unsafe { *p = value };
}

/// Borrows a handle mutably.
pub fn handle_mut<'a, T>(p: *mut T, name: &str) -> Result<&'a mut T, Failure> {
    // SAFETY: a non-NULL handle was created by this library with Box::into_raw and not freed yet
    // (the API contract); no other thread holds a `&mut` to it during this call.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::null(name))
}

/// Borrows a handle.
pub fn handle<'a, T>(p: *const T, name: &str) -> Result<&'a T, Failure> {
    // SAFETY: a non-NULL handle was created by this library with Box::into_raw and not freed yet.
    unsafe { p.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// Writes an out-parameter (only on success).
pub fn out<T>(p: *mut *mut T, value: T) {
    // SAFETY: callers check `p` for NULL before doing any work (see `check_out`).
    unsafe { *p = Box::into_raw(Box::new(value)) };
}

/// Writes a string out-parameter (only on success); the caller frees it with `free_string`.
pub fn out_string(p: *mut *mut c_char, value: &str) {
    // SAFETY: callers check `p` for NULL before doing any work (see `check_out`).
    unsafe { *p = cstring(value).into_raw() };
}

/// Frees a string made by `out_string`; NULL is fine.
pub fn free_string(p: *mut c_char) {
    if !p.is_null() {
        // SAFETY: the string came from CString::into_raw in `out_string` and is freed once (API contract).
        drop(unsafe { CString::from_raw(p) });
    }
}

/// Fails when an out-parameter is NULL.
pub fn check_out<T>(p: *mut *mut T, name: &str) -> Result<(), Failure> {
    if p.is_null() { Err(Failure::null(name)) } else { Ok(()) }
}

/// Frees a handle made by `out` or `Box::into_raw`; NULL is fine.
pub fn free<T>(p: *mut T) {
    if !p.is_null() {
        // SAFETY: the handle came from Box::into_raw in this library and is freed once (API contract).
        drop(unsafe { Box::from_raw(p) });
    }
}

/// A C string for returning borrowed text; interior NULs become U+FFFD.
pub fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).unwrap_or_default()
}
