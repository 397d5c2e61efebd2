//! A pipeline's Receive loop decodes at its reader's pace: what a server sends in one large
//! Receive reply is decoded one PSRP message at a time, and decoding stops while the reader's
//! buffer (`ClientConfig::max_events_ahead`) is full. The test counts the messages the state
//! machine decoded (its `psremote::psrp::message` trace events) against the events the reader
//! took. In a test binary of its own, since it installs the process's tracing subscriber.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Endpoint, block_on, ntlm_config};
use psremote::client::{Client, PoolConfig, RunspacePool};
use psremote::psrp::{Event, PipelineSpec};
use tracing_subscriber::layer::{Context, SubscriberExt};

static DECODED: AtomicUsize = AtomicUsize::new(0);

/// Counts every PSRP message the client decoded.
struct CountMessages;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CountMessages {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() == "psremote::psrp::message" {
            DECODED.fetch_add(1, Ordering::SeqCst);
        }
    }
}

const OBJECTS: usize = 12_000;
const AHEAD: usize = 8;

#[test]
fn a_large_reply_is_decoded_at_the_readers_pace() {
    let subscriber = tracing_subscriber::registry()
        .with(CountMessages)
        .with(tracing_subscriber::filter::Targets::new().with_target("psremote::psrp::message", tracing::Level::TRACE));
    tracing::subscriber::set_global_default(subscriber).unwrap();
    // Envelopes of 4 MiB and a server that queues 64 MiB of output for a reader that does not
    // read: one Receive reply then carries thousands of output messages.
    let ep = Endpoint::start(&["--max-envelope-kb", "4096", "--psrp-buffer-kb", "65536"]);
    let mut cfg = ntlm_config(&ep);
    cfg.max_envelope_size = Some(4 * 1024 * 1024);
    cfg.max_events_ahead = AHEAD;
    block_on(async {
        let client = Client::connect(cfg).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let spec = PipelineSpec::script(format!("New-TestObject -Count {OBJECTS} -Properties 20 -Size 1"));
        let mut pipeline = pool.start(&spec).await.unwrap();
        let before = DECODED.load(Ordering::SeqCst);
        // The server queues what the reader does not take yet (setup only: nothing below
        // depends on how much it queued by then).
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut taken = 0usize;
        let mut most_ahead = 0usize;
        let mut outputs = 0usize;
        let read = async {
            while let Some(ev) = pipeline.next_event().await.unwrap() {
                taken += 1;
                if let Event::Output { .. } = ev {
                    outputs += 1;
                }
                // Let the Receive loop run as far as it may before the next read.
                for _ in 0..4 {
                    tokio::task::yield_now().await;
                }
                let ahead = (DECODED.load(Ordering::SeqCst) - before).saturating_sub(taken);
                most_ahead = most_ahead.max(ahead);
            }
        };
        tokio::time::timeout(Duration::from_secs(300), read).await.expect("hang guard: the pipeline did not finish");
        assert_eq!(outputs, OBJECTS);
        // The buffer, the message being handed over, and the end-of-pipeline messages that
        // produce no event of their own.
        eprintln!("at most {most_ahead} messages were decoded ahead of the reader");
        assert!(most_ahead <= AHEAD + 4, "{most_ahead} messages were decoded ahead of a reader buffering {AHEAD}");
        pool.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("pools", 0), 0, "{}", ep.state());
}
