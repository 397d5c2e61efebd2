//! What an agent asks of the server itself: its WinRM limits (`winrm/config`), command metadata
//! (`Get-Command` without a pipeline) and a bounded session-key exchange.

use std::ffi::c_char;
use std::time::Duration;

use psremote::psrp::CommandMetadataQuery;

use crate::client::{block, psr_client, psr_pool};
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{check_out, guard, handle, out_string, out_value, str_array};
use crate::json::to_json;

/// The server's WinRM configuration (`winrm/config`) as one JSON object:
/// `max_envelope_size_kb`, `max_timeout_ms`, `max_batch_items`, `shell_idle_timeout_ms`,
/// `max_shells_per_user`, `max_memory_per_shell_mb`, `max_concurrent_operations_per_user`
/// (numbers, or null when the server did not say), and `entries`: every setting as
/// `{"Service/Auth/Basic": "true", ...}`. Windows lets only administrators read it.
///
/// Ownership: `*out_json` (written only on success) is freed with `psr_string_free`. Errors:
/// NULL_ARGUMENT, FAULT (e.g. access denied), connection errors. Threading: blocks the calling
/// thread; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_server_config_json(
    c: *const psr_client,
    out_json: *mut *mut c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        check_out(out_json, "out_json")?;
        let config = block(async move { client.server_config().await })?;
        let entries: serde_json::Map<String, serde_json::Value> =
            config.entries.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let json = serde_json::json!({
            "max_envelope_size_kb": config.max_envelope_size_kb,
            "max_timeout_ms": config.max_timeout_ms,
            "max_batch_items": config.max_batch_items,
            "shell_idle_timeout_ms": config.shell_idle_timeout_ms,
            "max_shells_per_user": config.max_shells_per_user,
            "max_memory_per_shell_mb": config.max_memory_per_shell_mb,
            "max_concurrent_operations_per_user": config.max_concurrent_operations_per_user,
            "entries": entries,
        });
        out_string(out_json, &json.to_string());
        Ok(())
    })
}

/// Reads the server's MaxEnvelopeSizekb and sizes the client's later requests, pools and
/// shells to it; `*out_size` receives the size in bytes now in use. A size set with the client's
/// configuration is never changed (it is returned as it is).
///
/// Ownership: `out_size` may be NULL. Errors: NULL_ARGUMENT, FAULT, PROTOCOL (no usable size in
/// the answer), connection errors. Threading: blocks; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_fit_envelope_to_server(
    c: *const psr_client,
    out_size: *mut u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        let size = block(async move { client.fit_envelope_to_server().await })?;
        if !out_size.is_null() {
            out_value(out_size, size);
        }
        Ok(())
    })
}

/// What `Get-Command` knows about the server's commands, as a JSON array of CommandMetadata
/// objects (`Name`, `Namespace`, `CommandType`, `Parameters`, ...; values as
/// `psr_invocation_output_json` writes them). `names` (an array of `nnames` strings, wildcards
/// allowed; NULL or 0 for all), `command_types`: CommandTypes flags (Alias 1, Function 2,
/// Filter 4, Cmdlet 8, ExternalScript 16, Application 32, Script 64; 0 for 15, what Get-Command
/// lists by default).
///
/// Ownership: strings are borrowed for the call; `*out_json` is freed with `psr_string_free`.
/// Errors: NULL_ARGUMENT, CLOSED, PROTOCOL, connection errors. Threading: blocks; any thread
/// except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_command_metadata_json(
    p: *mut psr_pool,
    names: *const *const c_char,
    nnames: usize,
    command_types: i32,
    out_json: *mut *mut c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        p.live()?;
        check_out(out_json, "out_json")?;
        let names = if names.is_null() || nnames == 0 { Vec::new() } else { str_array(names, nnames, "names")? };
        let command_types = if command_types == 0 { 15 } else { command_types };
        if !(1..=511).contains(&command_types) {
            return Err(Failure::new(PsrResult::InvalidArgument, "command_types must be CommandTypes flags (1-511)"));
        }
        let query = CommandMetadataQuery { names, command_types, namespaces: Vec::new() };
        let pool = p.pool.clone();
        let found = block(async move { pool.command_metadata(&query).await })?;
        let json = serde_json::Value::Array(found.iter().map(to_json).collect());
        out_string(out_json, &json.to_string());
        Ok(())
    })
}

/// Runs the session-key exchange (needed before SecureStrings cross; it also happens by itself
/// when one does), giving up after `timeout_ms` milliseconds (0: 60 s) with TIMEOUT.
///
/// Errors: NULL_ARGUMENT, CLOSED, TIMEOUT, connection errors. Threading: blocks; any thread
/// except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_exchange_key(p: *mut psr_pool, timeout_ms: u32, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        p.live()?;
        let timeout = Duration::from_millis(if timeout_ms == 0 { 60_000 } else { u64::from(timeout_ms) });
        let pool = p.pool.clone();
        block(async move { pool.exchange_key_within(timeout).await })
    })
}
