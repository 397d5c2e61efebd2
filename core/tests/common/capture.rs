//! Captures every tracing event of the test binary (all crates, down to TRACE) as text lines
//! `LEVEL target field=value ...`, for tests that check what the client logs.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The captured text, shared with the global subscriber.
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<String>>);

impl Capture {
    /// Everything captured so far.
    pub fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, line: &str) {
        let mut all = self.0.lock().unwrap();
        all.push_str(line);
        all.push('\n');
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut line = format!("{} {}", event.metadata().level(), event.metadata().target());
        event.record(&mut Fields(&mut line));
        self.push(&line);
    }

    fn on_new_span(&self, attrs: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        let mut line = format!("span {}", attrs.metadata().name());
        attrs.record(&mut Fields(&mut line));
        self.push(&line);
    }
}

/// Installs the capturing subscriber for the whole test binary (once) and returns it.
pub fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let subscriber = tracing_subscriber::registry()
            .with(capture.clone().with_filter(tracing::level_filters::LevelFilter::TRACE));
        tracing::subscriber::set_global_default(subscriber).unwrap();
        capture
    })
}
