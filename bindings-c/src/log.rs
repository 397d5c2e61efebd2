//! Rust `tracing` events to a C log callback.

use std::ffi::{c_char, c_void};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, Once};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::ffi::cstring;

type LogFn = unsafe extern "C" fn(userdata: *mut c_void, level: i32, target: *const c_char, message: *const c_char);

struct Sink {
    cb: LogFn,
    userdata: *mut c_void,
}

// SAFETY: psr_set_log_callback's contract: the callback and userdata may be used from any thread.
unsafe impl Send for Sink {}

static SINK: Mutex<Option<Sink>> = Mutex::new(None);
static MAX_LEVEL: AtomicI32 = AtomicI32::new(0);
static INSTALL: Once = Once::new();

fn rank(l: &Level) -> i32 {
    match *l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

struct ToC;

impl<S: Subscriber> Layer<S> for ToC {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = rank(event.metadata().level());
        let max = MAX_LEVEL.load(Ordering::Relaxed);
        if level > max || (level >= 3 && max < 5 && !event.metadata().target().starts_with("psremote")) {
            return;
        }
        let mut m = Message::default();
        event.record(&mut m);
        let (target, message) = (cstring(event.metadata().target()), cstring(&m.0));
        if let Ok(guard) = SINK.lock()
            && let Some(s) = guard.as_ref()
        {
            // SAFETY: the callback contract of psr_set_log_callback; strings valid for the call.
            unsafe { (s.cb)(s.userdata, level, target.as_ptr(), message.as_ptr()) };
        }
    }
}

/// Sends psremote's log events (level 1 error … 5 trace, up to `max_level`) to `cb`, which runs
/// on psremote's threads, must return quickly and must not call psremote. `cb` NULL or
/// `max_level` 0 turns logging off. Events never contain secrets. Threading: any thread.
#[unsafe(no_mangle)]
pub extern "C" fn psr_set_log_callback(
    cb: Option<unsafe extern "C" fn(userdata: *mut c_void, level: i32, target: *const c_char, message: *const c_char)>,
    userdata: *mut c_void,
    max_level: i32,
) {
    let _ = std::panic::catch_unwind(|| {
        INSTALL.call_once(|| {
            let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(ToC));
        });
        if let Ok(mut s) = SINK.lock() {
            *s = cb.map(|cb| Sink { cb, userdata });
        }
        MAX_LEVEL.store(if cb.is_some() { max_level.clamp(0, 5) } else { 0 }, Ordering::Relaxed);
    });
}
