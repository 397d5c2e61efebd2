//! Sessions that outlive the client: pool options (idle timeout, buffer mode), disconnect,
//! reconnect, is-alive, listing the pools on the server, connecting to a disconnected one and
//! attaching to a pipeline started before the disconnect. Translation only.

use std::ffi::c_char;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use psremote::client::{self as core, BufferMode, PoolConfig, PoolInfo};

use crate::client::{CHost, block, psr_client, psr_host, psr_pool};
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{
    check_out, free, guard, guard_ptr, handle, handle_mut, opt_str_arg, out, out_string, out_value, str_arg,
};
use crate::pipeline::psr_pipeline;

/// What the server does with output produced while a pool is disconnected.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum psr_buffer_mode {
    /// The server's default (Windows: block).
    ServerDefault = 0,
    /// Pause the pipelines once the server's buffer is full, until a client receives again.
    Block = 1,
    /// Keep the pipelines running and discard the oldest output that does not fit.
    Drop = 2,
}

/// Options of a runspace pool beyond `psr_pool_open`'s: how it lives on the server once
/// disconnected. Free with `psr_pool_options_free`.
#[allow(non_camel_case_types)]
pub struct psr_pool_options {
    idle_timeout: Option<Duration>,
    buffer_mode: Option<BufferMode>,
    open_timeout: Option<Duration>,
}

/// New pool options: the server's idle timeout and buffer mode.
///
/// Ownership: the caller frees the result with `psr_pool_options_free`. NULL only if psremote
/// panicked. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_options_new() -> *mut psr_pool_options {
    guard_ptr(|| {
        Box::into_raw(Box::new(psr_pool_options { idle_timeout: None, buffer_mode: None, open_timeout: None }))
    })
}

/// Sets how long the pool waits on the server, once disconnected, for a client to reconnect or
/// connect before the server deletes it, in milliseconds (sent when the pool is created and with
/// every disconnect); 0 leaves it to the server (Windows: 2 hours).
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_options_set_idle_timeout_ms(
    o: *mut psr_pool_options,
    ms: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.idle_timeout = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Sets what the server does with output produced while the pool is disconnected: `mode` is a
/// `psr_buffer_mode` value (sent when the pool is created and with every disconnect).
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT, INVALID_ARGUMENT (not a
/// `psr_buffer_mode`). Threading: not concurrently with other calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_options_set_buffer_mode(
    o: *mut psr_pool_options,
    mode: u32,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let o = handle_mut(o, "o")?;
        o.buffer_mode = match mode {
            m if m == psr_buffer_mode::ServerDefault as u32 => None,
            m if m == psr_buffer_mode::Block as u32 => Some(BufferMode::Block),
            m if m == psr_buffer_mode::Drop as u32 => Some(BufferMode::Drop),
            other => {
                return Err(Failure::new(PsrResult::InvalidArgument, format!("{other} is not a psr_buffer_mode")));
            }
        };
        Ok(())
    })
}

/// Sets the deadline of opening the pool (`psr_pool_open_with_options`) in milliseconds; 0: none.
/// Past it the open returns `PSR_RESULT_TIMEOUT` and the half-opened pool is deleted on the
/// server in the background.
///
/// Ownership: `o` is borrowed. Errors: NULL_ARGUMENT. Threading: not concurrently with other
/// calls on the same options.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_options_set_open_timeout_ms(
    o: *mut psr_pool_options,
    ms: u64,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        handle_mut(o, "o")?.open_timeout = (ms != 0).then(|| Duration::from_millis(ms));
        Ok(())
    })
}

/// Frees pool options. NULL is allowed. Threading: any thread, once no other call uses them.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_options_free(o: *mut psr_pool_options) {
    free(o);
}

/// The core configuration from the C arguments (all borrowed for the call).
fn pool_config(
    configuration_name: *const c_char,
    host: *const psr_host,
    options: *const psr_pool_options,
) -> Result<PoolConfig, Failure> {
    let mut config = PoolConfig::default();
    if let Some(name) = opt_str_arg(configuration_name, "configuration_name")? {
        config.configuration_name = name.to_owned();
    }
    // SAFETY: a non-NULL `host` points to a psr_host valid for this call (API contract); it is copied.
    if let Some(h) = unsafe { host.as_ref() } {
        config.host = Some(Arc::new(CHost(*h)));
    }
    // SAFETY: a non-NULL `options` points to options made by this library (API contract).
    if let Some(o) = unsafe { options.as_ref() } {
        config.idle_timeout = o.idle_timeout;
        config.buffer_mode = o.buffer_mode;
        config.open_timeout = o.open_timeout;
    }
    Ok(config)
}

/// `psr_pool_open` with `options` (NULL: the defaults of `psr_pool_options_new`), which are
/// copied.
///
/// Ownership: `*out_pool` (written only on success) is freed with `psr_pool_free`. Errors:
/// NULL_ARGUMENT, FAULT, connection errors. Threading: blocks the calling thread; any thread
/// except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_open_with_options(
    c: *mut psr_client,
    configuration_name: *const c_char,
    host: *const psr_host,
    options: *const psr_pool_options,
    out_pool: *mut *mut psr_pool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        check_out(out_pool, "out_pool")?;
        let config = pool_config(configuration_name, host, options)?;
        let pool = block(async move { core::RunspacePool::open(&client, config).await })?;
        out(out_pool, psr_pool::new(pool));
        Ok(())
    })
}

/// The pool's id, its ShellId (owned by `p`, valid until `psr_pool_free`): what
/// `psr_client_pool_connect` takes. NULL if `p` is NULL. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_id(p: *const psr_pool) -> *const c_char {
    handle(p, "p").map(|p| p.id.as_ptr()).unwrap_or(std::ptr::null())
}

/// Disconnects the pool: it and its pipelines keep running on the server, which keeps their
/// output (per the buffer mode) until `psr_pool_reconnect`, a `psr_client_pool_connect` from
/// another client, or the idle timeout. Returns once the pool's receiving stopped (what it
/// brought is delivered to the pipelines' handles). Until a reconnect, starting pipelines and
/// pool calls give DISCONNECTED. `psr_pool_free` of a disconnected pool leaves it on the server;
/// `psr_pool_close` deletes it.
///
/// Ownership: `p` is borrowed. Errors: NULL_ARGUMENT, CLOSED, DISCONNECTED (already), NOT_FOUND
/// (the server no longer has it), PROTOCOL (the pool is not open), connection errors. Threading:
/// blocks; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_disconnect(p: *mut psr_pool, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        p.live()?;
        let pool = p.pool.clone();
        block(async move { pool.disconnect().await })
    })
}

/// Reconnects this client to its disconnected pool; the output the server kept arrives on the
/// pipelines' handles (`psr_pipeline_wait` goes on where it stopped).
///
/// Ownership: `p` is borrowed. Errors: NULL_ARGUMENT, CLOSED, NOT_FOUND (deleted or expired; the
/// pool is then closed), PROTOCOL (the pool is not disconnected), connection errors. Threading:
/// blocks; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_reconnect(p: *mut psr_pool, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        p.live()?;
        let pool = p.pool.clone();
        let r = block(async move { pool.reconnect().await });
        if let Err(f) = &r
            && f.code == PsrResult::NotFound
        {
            p.closed.store(true, Ordering::SeqCst);
        }
        r
    })
}

/// Whether the server still has the pool, connected or disconnected (a Transfer Get of its
/// shell): `*out_alive` is written on success. A pool the server does not know is `false` and
/// closed; a closed pool is `false` without a request.
///
/// Ownership: `p` is borrowed. Errors: NULL_ARGUMENT, FAULT (another fault than "no such
/// shell"), connection errors. Threading: blocks; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_is_alive(p: *mut psr_pool, out_alive: *mut bool, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        if out_alive.is_null() {
            return Err(Failure::null("out_alive"));
        }
        if p.closed.load(Ordering::SeqCst) {
            out_value(out_alive, false);
            return Ok(());
        }
        let pool = p.pool.clone();
        let alive = block(async move { pool.is_alive().await })?;
        if !alive {
            p.closed.store(true, Ordering::SeqCst);
        }
        out_value(out_alive, alive);
        Ok(())
    })
}

fn pool_json(info: &PoolInfo) -> serde_json::Value {
    let s = &info.shell;
    serde_json::json!({
        "id": s.shell_id,
        "configuration_name": info.configuration_name,
        "state": s.state,
        "pipelines": info.pipelines,
        "name": s.name,
        "resource_uri": s.resource_uri,
        "owner": s.owner,
        "client_ip": s.client_ip,
        "process_id": s.process_id,
        "idle_timeout_ms": s.idle_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        "max_idle_timeout_ms": s.max_idle_timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        "buffer_mode": s.buffer_mode.map(|b| b.as_str().to_ascii_lowercase()),
        "locale": s.locale,
        "data_locale": s.data_locale,
        "shell_run_time": s.shell_run_time,
        "shell_inactivity": s.shell_inactivity,
        "memory_used": s.memory_used,
        "child_processes": s.child_processes,
    })
}

/// The PowerShell runspace pools this account has on the server, connected or disconnected, as
/// a JSON array of objects: `id`, `configuration_name`, `state` (`"Connected"` or
/// `"Disconnected"`), `pipelines` (the CommandIds the server still holds), and the server's
/// other shell fields (`owner`, `client_ip`, `process_id`, `idle_timeout_ms`,
/// `max_idle_timeout_ms`, `buffer_mode` `"block"`/`"drop"`, `locale`, `data_locale`,
/// `shell_run_time`, `shell_inactivity`, `memory_used`, `child_processes`, `name`,
/// `resource_uri`; null or empty when the server left them out).
///
/// Ownership: `*out_json` (written only on success) is freed with `psr_string_free`. Errors:
/// NULL_ARGUMENT, FAULT, PROTOCOL, connection errors. Threading: blocks; any thread except a
/// psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_list_pools_json(
    c: *const psr_client,
    out_json: *mut *mut c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        check_out(out_json, "out_json")?;
        let pools = block(async move { client.list_pools().await })?;
        let json = serde_json::Value::Array(pools.iter().map(pool_json).collect());
        out_string(out_json, &json.to_string());
        Ok(())
    })
}

/// Connects this client to a disconnected pool, another client's or one a program disconnected
/// before it ended, by its id (`shell_id`, from `psr_pool_id` or `psr_client_list_pools_json`),
/// on `configuration_name` (NULL for Microsoft.PowerShell; the pool's own, as listed). `host`
/// (may be NULL) is copied and answers host calls as with `psr_pool_open`; `options` (may be
/// NULL) are copied and apply to a later `psr_pool_disconnect`. Then `psr_pool_attach_pipeline`
/// reads the pipelines the pool was running.
///
/// Ownership: strings are borrowed for the call; `*out_pool` (written only on success) is freed
/// with `psr_pool_free`. Errors: NULL_ARGUMENT, INVALID_CONFIG (not a pool id), NOT_FOUND (the
/// server has no such pool), FAULT (e.g. the pool is connected to another client), connection
/// errors. Threading: blocks; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_client_pool_connect(
    c: *mut psr_client,
    shell_id: *const c_char,
    configuration_name: *const c_char,
    host: *const psr_host,
    options: *const psr_pool_options,
    out_pool: *mut *mut psr_pool,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let client = handle(c, "c")?.0.clone();
        let shell_id = str_arg(shell_id, "shell_id")?.to_owned();
        check_out(out_pool, "out_pool")?;
        let config = pool_config(configuration_name, host, options)?;
        let pool = block(async move { core::RunspacePool::connect(&client, &shell_id, config).await })?;
        out(out_pool, psr_pool::new(pool));
        Ok(())
    })
}

/// A handle on a pipeline started before a disconnect (by this client, or by the one that
/// created the pool), by its CommandId (`psr_pipeline_id`, or `pipelines` in
/// `psr_client_list_pools_json`): `psr_pipeline_wait` gives what it wrote, beginning with what
/// the server kept, and its final state.
///
/// Ownership: `command_id` is borrowed; `*out_pipeline` (written only on success) is freed with
/// `psr_pipeline_free`. Errors: NULL_ARGUMENT, CLOSED, INVALID_CONFIG (not a pipeline id, or
/// already attached), NOT_FOUND (the server has no such pipeline in this pool; it may also come
/// from the first `psr_pipeline_wait`), connection errors. Threading: blocks; any thread except a
/// psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_attach_pipeline(
    p: *mut psr_pool,
    command_id: *const c_char,
    out_pipeline: *mut *mut psr_pipeline,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        p.live()?;
        let command_id = str_arg(command_id, "command_id")?.to_owned();
        check_out(out_pipeline, "out_pipeline")?;
        let pool = p.pool.clone();
        let pl = block(async move { pool.attach_pipeline(&command_id).await })?;
        out(out_pipeline, psr_pipeline::new(pl, p.closed.clone()));
        Ok(())
    })
}
