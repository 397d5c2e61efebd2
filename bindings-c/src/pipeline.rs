//! Pipelines: start, input, stop, and waiting with callbacks on the caller's thread.

use std::ffi::{CString, c_char, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use psremote::client::{self as core, runtime};
use psremote::clixml;
use psremote::psrp::{Command, ErrorRecord, Event, PipelineSpec, PipelineState};
use serde_json::Value as Json;

use crate::client::{block, psr_pool};
use crate::error::{Failure, PsrResult, psr_error};
use crate::ffi::{check_out, cstring, free, guard, handle, opt_str_arg, out, str_arg};
use crate::json::{from_json, to_json};

/// A running pipeline. Free with `psr_pipeline_free`.
#[allow(non_camel_case_types)]
pub struct psr_pipeline {
    id: CString,
    events: Mutex<core::Pipeline>,
    control: core::PipelineControl,
    closed: Arc<AtomicBool>,
    collected: Mutex<Collected>,
}

#[derive(Default)]
struct Collected {
    output: Vec<(CString, CString)>,
    errors: Vec<(CString, Option<String>)>,
    json: Vec<(&'static str, Json)>,
    state: Option<(PipelineState, Option<psremote::psrp::ErrorRecord>)>,
}

/// The streams reported through `on_record`.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum psr_stream {
    /// An error record (non-terminating error).
    Error = 1,
    /// A warning.
    Warning = 2,
    /// A verbose message.
    Verbose = 3,
    /// A debug message.
    Debug = 4,
    /// An information record (its message text).
    Information = 5,
}

/// The final state of a pipeline.
#[repr(u32)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum psr_state {
    /// Stopped by `psr_pipeline_stop` or a callback.
    Stopped = 3,
    /// Finished.
    Completed = 4,
    /// Failed with a terminating error.
    Failed = 5,
}

/// Streaming callbacks. They run on the thread that calls `psr_pipeline_wait`; strings are
/// borrowed for the call only. Any member may be NULL. A nonzero return stops the pipeline and
/// `psr_pipeline_wait` returns `PSR_RESULT_CALLBACK`.
#[repr(C)]
#[allow(non_camel_case_types)]
pub struct psr_callbacks {
    /// Passed first to every callback.
    pub userdata: *mut c_void,
    /// One output object, as JSON and as CLIXML.
    pub on_output:
        Option<unsafe extern "C" fn(userdata: *mut c_void, json: *const c_char, clixml: *const c_char) -> i32>,
    /// An error, warning, verbose, debug or information message.
    pub on_record:
        Option<unsafe extern "C" fn(userdata: *mut c_void, stream: psr_stream, message: *const c_char) -> i32>,
    /// A progress record.
    pub on_progress: Option<
        unsafe extern "C" fn(
            userdata: *mut c_void,
            activity: *const c_char,
            status: *const c_char,
            percent_complete: i32,
        ) -> i32,
    >,
}

/// What a finished pipeline produced. Free with `psr_invocation_free`.
#[allow(non_camel_case_types)]
pub struct psr_invocation {
    state: psr_state,
    had_errors: bool,
    output: Vec<(CString, CString)>,
    errors: Vec<CString>,
    error_ids: Vec<Option<CString>>,
    json: CString,
}

fn start(p: &psr_pool, spec: PipelineSpec, out_pl: *mut *mut psr_pipeline) -> Result<(), Failure> {
    p.live()?;
    check_out(out_pl, "out")?;
    let pool = p.pool.clone();
    let pl = block(async move { pool.start(&spec).await })?;
    out(out_pl, psr_pipeline::new(pl, p.closed.clone()));
    Ok(())
}

impl psr_pipeline {
    /// Wraps a core pipeline of the pool whose closed flag is `closed`.
    pub(crate) fn new(pl: core::Pipeline, closed: Arc<AtomicBool>) -> Self {
        psr_pipeline {
            id: cstring(&pl.id().to_string()),
            control: pl.control(),
            events: Mutex::new(pl),
            closed,
            collected: Mutex::new(Collected::default()),
        }
    }
}

/// The pipeline's id, its WS-Man CommandId (owned by `pl`, valid until `psr_pipeline_free`):
/// what `psr_pool_attach_pipeline` takes after a disconnect. NULL if `pl` is NULL. Threading:
/// any thread, also while another waits for the pipeline.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pipeline_id(pl: *const psr_pipeline) -> *const c_char {
    handle(pl, "pl").map(|pl| pl.id.as_ptr()).unwrap_or(std::ptr::null())
}

/// Starts a script on the pool. `has_input`: the pipeline takes input (then end it with
/// `psr_pipeline_end_input`).
///
/// Ownership: `*out` is freed with `psr_pipeline_free`. Errors: NULL_ARGUMENT, CLOSED, connection
/// errors. Threading: blocks until the server accepted the pipeline.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_start_script(
    p: *mut psr_pool,
    script: *const c_char,
    has_input: bool,
    out_pl: *mut *mut psr_pipeline,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        let mut spec = PipelineSpec::script(str_arg(script, "script")?);
        spec.has_input = has_input;
        start(p, spec, out_pl)
    })
}

/// Starts one command with parameters given as a JSON object (`{"Name": value}`; a JSON null is a
/// switch; `""` holds an array of positional arguments). `parameters_json` may be NULL.
///
/// Ownership: strings are borrowed for the call; `*out` is freed with `psr_pipeline_free`.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (bad JSON), CLOSED, connection errors. Threading:
/// blocks until the server accepted the pipeline; any thread except a psremote callback.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pool_start_command(
    p: *mut psr_pool,
    command: *const c_char,
    parameters_json: *const c_char,
    has_input: bool,
    out_pl: *mut *mut psr_pipeline,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let p = handle(p, "p")?;
        let mut cmd = Command::new(str_arg(command, "command")?);
        if let Some(text) = opt_str_arg(parameters_json, "parameters_json")? {
            let json: Json = serde_json::from_str(text)
                .map_err(|e| Failure::new(PsrResult::InvalidArgument, format!("parameters_json: {e}")))?;
            let Json::Object(map) = json else {
                return Err(Failure::new(PsrResult::InvalidArgument, "parameters_json must be a JSON object"));
            };
            for (name, value) in map {
                if name.is_empty() {
                    let Json::Array(items) = value else {
                        return Err(Failure::new(
                            PsrResult::InvalidArgument,
                            "positional arguments (\"\") must be an array",
                        ));
                    };
                    cmd.parameters.extend(items.iter().map(|v| (None, from_json(v))));
                } else {
                    cmd.parameters.push((Some(name), from_json(&value)));
                }
            }
        }
        let mut spec = PipelineSpec::command(cmd);
        spec.has_input = has_input;
        start(p, spec, out_pl)
    })
}

fn running(pl: &psr_pipeline) -> Result<(), Failure> {
    if pl.closed.load(Ordering::SeqCst) {
        Err(Failure::new(PsrResult::Closed, "the pipeline's runspace pool is closed"))
    } else {
        Ok(())
    }
}

/// Sends one input object given as JSON (borrowed for the call).
///
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (bad JSON), CLOSED, connection errors. Threading: blocks
/// until the object is encoded and its Send has started, after the previous input's Send was
/// answered (the caller prepares the next object while this one travels); a Send that fails is
/// reported by the next `psr_pipeline_send_input_json` or by `psr_pipeline_end_input`. Any
/// thread, also while another thread waits on the pipeline.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pipeline_send_input_json(
    pl: *mut psr_pipeline,
    json_value: *const c_char,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let pl = handle(pl, "pl")?;
        running(pl)?;
        let json: Json = serde_json::from_str(str_arg(json_value, "json_value")?)
            .map_err(|e| Failure::new(PsrResult::InvalidArgument, format!("json_value: {e}")))?;
        let c = pl.control.clone();
        block(async move { c.send_input(vec![from_json(&json)]).await })
    })
}

/// Ends the input.
///
/// Errors: NULL_ARGUMENT, CLOSED, connection errors. Threading: any thread, also while another
/// thread waits on the pipeline.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pipeline_end_input(pl: *mut psr_pipeline, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let pl = handle(pl, "pl")?;
        running(pl)?;
        let c = pl.control.clone();
        block(async move { c.end_input().await })
    })
}

/// Stops the pipeline (PowerShell's Ctrl-C). Callable from any thread, also while another thread
/// is in `psr_pipeline_wait`, which then returns with state STOPPED.
///
/// Ownership: `pl` is borrowed. NULL `pl` gives NULL_ARGUMENT. Errors: CLOSED, connection errors.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pipeline_stop(pl: *mut psr_pipeline, err: *mut *mut psr_error) -> PsrResult {
    guard(err, || {
        let pl = handle(pl, "pl")?;
        running(pl)?;
        let c = pl.control.clone();
        block(async move { c.stop().await })
    })
}

fn call_cb(rc: i32) -> Result<(), ()> {
    if rc == 0 { Ok(()) } else { Err(()) }
}

/// Delivers one event to the callbacks and the collected result.
fn deliver(ev: Event, cb: Option<&psr_callbacks>, col: &mut Collected) -> Result<(), ()> {
    let record = |stream: psr_stream, message: &str, cb: Option<&psr_callbacks>| -> Result<(), ()> {
        if let Some(f) = cb.and_then(|c| c.on_record) {
            let m = cstring(message);
            // SAFETY: the callback contract; the string is valid for the call.
            call_cb(unsafe { f(cb.map_or(std::ptr::null_mut(), |c| c.userdata), stream, m.as_ptr()) })?;
        }
        Ok(())
    };
    match ev {
        Event::Output { value, .. } => {
            let json = cstring(&to_json(&value).to_string());
            let xml = cstring(&clixml::to_string(&value));
            if let Some(f) = cb.and_then(|c| c.on_output) {
                // SAFETY: the callback contract; the strings are valid for the call.
                call_cb(unsafe { f(cb.map_or(std::ptr::null_mut(), |c| c.userdata), json.as_ptr(), xml.as_ptr()) })?;
            }
            col.output.push((json, xml));
        }
        Event::Error { record: r, .. } => {
            record(psr_stream::Error, &r.to_string(), cb)?;
            col.json.push(("errors", error_record_json(&r)));
            col.errors.push((cstring(&r.to_string()), r.fully_qualified_error_id.clone()));
        }
        Event::Warning { record: r, .. } => {
            record(psr_stream::Warning, &r.message, cb)?;
            col.json.push(("warnings", Json::String(r.message)));
        }
        Event::Verbose { record: r, .. } => {
            record(psr_stream::Verbose, &r.message, cb)?;
            col.json.push(("verbose", Json::String(r.message)));
        }
        Event::Debug { record: r, .. } => {
            record(psr_stream::Debug, &r.message, cb)?;
            col.json.push(("debug", Json::String(r.message)));
        }
        Event::Information { record: r, .. } => {
            let text = r.text();
            record(psr_stream::Information, &text, cb)?;
            col.json.push(("information", Json::String(text)));
        }
        Event::Progress { record: r, .. } => {
            if let Some(f) = cb.and_then(|c| c.on_progress) {
                let (a, s) = (cstring(&r.activity), cstring(&r.status_description));
                // SAFETY: the callback contract; the strings are valid for the call.
                call_cb(unsafe {
                    f(cb.map_or(std::ptr::null_mut(), |c| c.userdata), a.as_ptr(), s.as_ptr(), r.percent_complete)
                })?;
            }
        }
        Event::PipelineState { state, error, .. } if state.is_finished() => col.state = Some((state, error)),
        _ => {}
    }
    Ok(())
}

/// A pipeline's final state as C names it (anything but Completed and Stopped is Failed).
pub(crate) fn c_state(state: PipelineState) -> psr_state {
    match state {
        PipelineState::Completed => psr_state::Completed,
        PipelineState::Stopped => psr_state::Stopped,
        _ => psr_state::Failed,
    }
}

/// An error record as the result JSON holds it: its message and FullyQualifiedErrorId.
pub(crate) fn error_record_json(r: &ErrorRecord) -> Json {
    serde_json::json!({"message": r.message, "id": r.fully_qualified_error_id})
}

/// The result JSON of `psr_invocation_json` (and of a fleet's PowerShell hosts): `records` are
/// (stream key, value) pairs in the order they came, `error` the terminating error.
pub(crate) fn invocation_json(
    state: psr_state,
    had_errors: bool,
    records: impl IntoIterator<Item = (&'static str, Json)>,
    output: impl IntoIterator<Item = Json>,
    error: Option<&ErrorRecord>,
) -> Json {
    let mut json = serde_json::Map::new();
    json.insert("state".into(), Json::String(format!("{state:?}")));
    for k in ["output", "errors", "warnings", "verbose", "debug", "information"] {
        json.insert(k.into(), Json::Array(Vec::new()));
    }
    for (k, v) in records {
        if let Some(Json::Array(a)) = json.get_mut(k) {
            a.push(v);
        }
    }
    if let Some(Json::Array(a)) = json.get_mut("output") {
        a.extend(output);
    }
    if let Some(e) = error {
        json.insert("error".into(), error_record_json(e));
    }
    json.insert("had_errors".into(), Json::Bool(had_errors));
    Json::Object(json)
}

/// Waits until the pipeline ends, running `cb` (may be NULL) on this thread for each event as it
/// arrives. `timeout_ms` 0 waits without limit; on timeout returns `PSR_RESULT_TIMEOUT` and the
/// pipeline keeps running (wait again, or stop it). A callback returning nonzero stops the pipeline
/// and returns `PSR_RESULT_CALLBACK`.
///
/// Ownership: `*out` (on success) is freed with `psr_invocation_free`. Errors: NULL_ARGUMENT,
/// TIMEOUT, CALLBACK, CLOSED (the pool was closed), connection errors. Threading: one waiter at a
/// time per pipeline.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pipeline_wait(
    pl: *mut psr_pipeline,
    cb: *const psr_callbacks,
    timeout_ms: u32,
    out_inv: *mut *mut psr_invocation,
    err: *mut *mut psr_error,
) -> PsrResult {
    guard(err, || {
        let pl = handle(pl, "pl")?;
        running(pl)?;
        check_out(out_inv, "out")?;
        // SAFETY: a non-NULL `cb` points to a psr_callbacks valid for this call (API contract).
        let cb = unsafe { cb.as_ref() };
        let deadline = (timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(u64::from(timeout_ms)));
        let mut events = pl.events.lock().map_err(|_| Failure::new(PsrResult::Panic, "pipeline lock poisoned"))?;
        let mut col = pl.collected.lock().map_err(|_| Failure::new(PsrResult::Panic, "pipeline lock poisoned"))?;
        loop {
            if col.state.is_some() {
                break;
            }
            let next = if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                match runtime().block_on(async { tokio::time::timeout(left, events.next_event()).await }) {
                    Ok(r) => r?,
                    Err(_) => return Err(Failure::new(PsrResult::Timeout, "the pipeline did not finish in time")),
                }
            } else {
                runtime().block_on(events.next_event())?
            };
            let Some(ev) = next else { break };
            if deliver(ev, cb, &mut col).is_err() {
                let c = pl.control.clone();
                let _ = runtime().block_on(async move { c.stop().await });
                return Err(Failure::new(PsrResult::Callback, "a callback asked to stop; the pipeline was stopped"));
            }
        }
        let (state, error) = col.state.clone().unwrap_or((PipelineState::Failed, None));
        let state = c_state(state);
        let mut errors: Vec<CString> = col.errors.iter().map(|(m, _)| m.clone()).collect();
        let mut error_ids: Vec<Option<CString>> = col.errors.iter().map(|(_, id)| id.as_deref().map(cstring)).collect();
        if let Some(e) = &error {
            errors.push(cstring(&e.to_string()));
            error_ids.push(e.fully_qualified_error_id.as_deref().map(cstring));
        }
        let had_errors = !errors.is_empty() || state == psr_state::Failed;
        let output = col.output.iter().map(|(j, _)| serde_json::from_str(&j.to_string_lossy()).unwrap_or(Json::Null));
        let json = invocation_json(state, had_errors, col.json.iter().cloned(), output, error.as_ref());
        out(
            out_inv,
            psr_invocation {
                state,
                had_errors,
                output: col.output.clone(),
                errors,
                error_ids,
                json: cstring(&json.to_string()),
            },
        );
        Ok(())
    })
}

/// Frees a pipeline; a running one is stopped in the background. NULL is allowed. Threading: any
/// thread, once no other call uses the handle.
#[unsafe(no_mangle)]
pub extern "C" fn psr_pipeline_free(pl: *mut psr_pipeline) {
    free(pl);
}

/// The final state; `PSR_STATE_FAILED` if `r` is NULL. The `psr_invocation_*` accessors may be
/// called from any thread; returned strings are owned by `r` and valid until `psr_invocation_free`.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_state(r: *const psr_invocation) -> psr_state {
    handle(r, "r").map(|r| r.state).unwrap_or(psr_state::Failed)
}

/// Whether the pipeline wrote errors or failed; false if `r` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_had_errors(r: *const psr_invocation) -> bool {
    handle(r, "r").map(|r| r.had_errors).unwrap_or(false)
}

/// The number of output objects; 0 if `r` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_output_count(r: *const psr_invocation) -> usize {
    handle(r, "r").map(|r| r.output.len()).unwrap_or(0)
}

/// Output object `index` as JSON (owned by `r`); NULL if out of range or `r` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_output_json(r: *const psr_invocation, index: usize) -> *const c_char {
    handle(r, "r").ok().and_then(|r| r.output.get(index)).map(|(j, _)| j.as_ptr()).unwrap_or(std::ptr::null())
}

/// Output object `index` as CLIXML (owned by `r`); NULL if out of range or `r` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_output_clixml(r: *const psr_invocation, index: usize) -> *const c_char {
    handle(r, "r").ok().and_then(|r| r.output.get(index)).map(|(_, x)| x.as_ptr()).unwrap_or(std::ptr::null())
}

/// The number of error messages (error records and the terminating error); 0 if `r` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_error_count(r: *const psr_invocation) -> usize {
    handle(r, "r").map(|r| r.errors.len()).unwrap_or(0)
}

/// Error message `index` (owned by `r`); NULL if out of range or `r` is NULL.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_error_message(r: *const psr_invocation, index: usize) -> *const c_char {
    handle(r, "r").ok().and_then(|r| r.errors.get(index)).map(|m| m.as_ptr()).unwrap_or(std::ptr::null())
}

/// The FullyQualifiedErrorId of error `index` (e.g. `CommandNotFoundException`; owned by `r`);
/// NULL if it has none, `index` is out of range or `r` is NULL. The terminating error of a failed
/// pipeline is the last one.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_error_id(r: *const psr_invocation, index: usize) -> *const c_char {
    handle(r, "r")
        .ok()
        .and_then(|r| r.error_ids.get(index))
        .and_then(|id| id.as_ref())
        .map(|id| id.as_ptr())
        .unwrap_or(std::ptr::null())
}

/// The whole result as one JSON object (owned by `r`): state, had_errors, output, errors,
/// warnings, verbose, debug, information, and error (the terminating one) when failed.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_json(r: *const psr_invocation) -> *const c_char {
    handle(r, "r").map(|r| r.json.as_ptr()).unwrap_or(std::ptr::null())
}

/// Frees a result. NULL is allowed. Threading: any thread, once no other call uses the handle.
#[unsafe(no_mangle)]
pub extern "C" fn psr_invocation_free(r: *mut psr_invocation) {
    free(r);
}
