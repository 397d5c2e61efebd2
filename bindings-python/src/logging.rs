//! Rust `tracing` events to Python's `logging` (logger `psremote`).
//!
//! The layer never takes the GIL where the event happens (it may be inside a core lock that a
//! Python thread is waiting for): events go through a bounded queue to one forwarder thread,
//! which calls `psremote._logging.emit(level, target, message, fields)`. Nothing is forwarded
//! until Python enables a level; the core never puts secrets into events.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};

use pyo3::prelude::*;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The most verbose level forwarded: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
static MAX_LEVEL: AtomicU8 = AtomicU8::new(0);
static SENDER: OnceLock<SyncSender<Record>> = OnceLock::new();

struct Record {
    level: u8,
    target: String,
    message: String,
    fields: Vec<(String, String)>,
}

fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Python logging levels for our ranks.
fn python_level(rank: u8) -> i32 {
    match rank {
        1 => 40,
        2 => 30,
        3 => 20,
        4 => 10,
        _ => 5,
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut s = String::new();
        let _ = write!(s, "{value:?}");
        if field.name() == "message" {
            self.message = s;
        } else {
            self.fields.push((field.name().to_owned(), s));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name().to_owned(), value.to_owned()));
        }
    }
}

struct ToPython;

impl<S: Subscriber> Layer<S> for ToPython {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let r = rank(event.metadata().level());
        let max = MAX_LEVEL.load(Ordering::Relaxed);
        if r > max {
            return;
        }
        // Dependencies (sspi, hyper) log every message at debug, and warn of conditions that are
        // normal for us (sspi: a Kerberos delegation sealing with the session key): only the trace
        // opt-in shows them, so Python's last-resort handler never prints them on stderr. Their
        // errors still pass.
        if r >= 2 && max < 5 && !event.metadata().target().starts_with("psremote") {
            return;
        }
        let Some(tx) = SENDER.get() else { return };
        let mut f = Fields::default();
        event.record(&mut f);
        // A full queue drops the record rather than slowing the protocol down.
        let _ = tx.try_send(Record {
            level: r,
            target: event.metadata().target().to_owned(),
            message: f.message,
            fields: f.fields,
        });
    }
}

fn install() {
    SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Record>(4096);
        let _ = std::thread::Builder::new().name("psremote-log".into()).spawn(move || {
            psremote::client::mask_process_signals();
            for rec in rx {
                if MAX_LEVEL.load(Ordering::Relaxed) == 0 {
                    continue;
                }
                // At interpreter exit (records from the runtime's last tasks) there is no Python
                // left to attach to: drop the record instead of attaching mid-finalization.
                let _ = crate::shutdown::attach(|py| {
                    let emit = py.import("psremote._logging").and_then(|m| m.getattr("emit"));
                    if let Ok(emit) = emit {
                        let _ = emit.call1((python_level(rec.level), rec.target, rec.message, rec.fields));
                    }
                });
            }
        });
        let subscriber = tracing_subscriber::registry().with(ToPython);
        // Another subscriber may already be global (an embedding application's): then ours is
        // not installed and Python sees nothing, which is that application's choice.
        let _ = tracing::subscriber::set_global_default(subscriber);
        tx
    });
}

/// Sets the most verbose Python logging level forwarded (e.g. `logging.DEBUG`); 0 or above
/// `logging.CRITICAL` turns forwarding off. Levels below DEBUG (the trace opt-in) forward trace
/// events too.
#[pyfunction]
pub fn set_log_level(level: i32) {
    let r = match level {
        l if l <= 0 || l > 50 => 0,
        l if l < 10 => 5,
        l if l < 20 => 4,
        l if l < 30 => 3,
        l if l < 40 => 2,
        _ => 1,
    };
    if r > 0 {
        install();
    }
    MAX_LEVEL.store(r, Ordering::Relaxed);
}
