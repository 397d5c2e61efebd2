//! A server's reply is bounded while it is read: an oversized Content-Length is refused before
//! the body, an endless chunked body is given up once it passes the limit. In a test binary of
//! its own so that the process's peak memory (VmHWM) is this test's alone.

mod common;

use std::time::Duration;

use common::{DOMAIN_USER, Endpoint, PASSWORD, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig};
use psremote::{Error, ErrorKind};

fn config(ep: &Endpoint) -> ClientConfig {
    let mut cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm);
    // Without the bound, a client would read until this (plus the read margin) ran out.
    cfg.operation_timeout = Duration::from_secs(5);
    cfg
}

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// Runs `echo` against an endpoint in `mode` and returns the error, after checking that the
/// broken connection was discarded (the next command works on a new one) and nothing is left
/// on the server.
fn oversized_reply(mode: &str, cfg: impl Fn(&Endpoint) -> ClientConfig) -> Error {
    let ep = Endpoint::start(&["--misbehave", mode]);
    let err = block_on(async {
        let client = Client::connect(cfg(&ep)).await.unwrap();
        // Hang guard only: the bound makes this fail within moments.
        let err = tokio::time::timeout(Duration::from_secs(120), client.run_cmd("echo", &["hi"]))
            .await
            .unwrap_or_else(|_| panic!("{mode}: no answer within 120 s"))
            .unwrap_err();
        eprintln!("{mode}: {err}");
        let before = ep.counter("connections_opened");
        let out = client.run_cmd("echo", &["again"]).await.unwrap();
        assert_eq!(out.stdout, b"again\n", "{mode}");
        assert!(ep.counter("connections_opened") > before, "{mode}: the connection that carried it was reused");
        err
    });
    for counter in ["commands", "shells"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{mode}: {counter} left: {}", ep.state());
    }
    err
}

#[test]
fn oversized_and_endless_replies_are_refused_in_bounded_memory() {
    // What a request announcing the default 153600-byte envelope accepts.
    let default_limit = psremote::transport::default_reply_limit(153_600);
    assert_eq!(default_limit, 228_736);
    let start = peak_rss();

    // A 512 MiB Content-Length: refused before any of the body is read.
    let err = oversized_reply("huge-reply", config);
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    match &err {
        Error::ReplyTooLarge { size, declared: true, limit } => {
            assert_eq!((*size, *limit), (512 * 1024 * 1024, default_limit), "{err}");
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("536870912") && text.contains("228736"), "{text}");

    // A chunked body that never ends: counted as it arrives and given up past the limit.
    let err = oversized_reply("endless-body", config);
    match &err {
        Error::ReplyTooLarge { size, declared: false, limit } => {
            assert_eq!(*limit, default_limit, "{err}");
            // Given up with the first frame past the limit: at most one more 64 KiB chunk.
            assert!(*size > default_limit && *size <= default_limit + 1024 * 1024, "{err}");
        }
        other => panic!("expected ReplyTooLarge, got {other:?}"),
    }

    // max_reply_size replaces the derived limit.
    let err = oversized_reply("endless-body", |ep| {
        let mut cfg = config(ep);
        cfg.max_reply_size = Some(1024 * 1024);
        cfg
    });
    match &err {
        Error::ReplyTooLarge { size, declared: false, limit: 1_048_576 } => assert!(*size > 1_048_576, "{err}"),
        other => panic!("expected ReplyTooLarge with the configured limit, got {other:?}"),
    }

    // Generous: an unbounded client would have held hundreds of MiB (the huge reply alone is 512).
    let growth = peak_rss().saturating_sub(start);
    assert!(growth < 96 * 1024 * 1024, "peak memory grew by {growth} bytes");
}
