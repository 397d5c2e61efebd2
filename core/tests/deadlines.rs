//! Deadlines, the collected-output limit and dropped futures (issue 12): a call that runs out of
//! time or output fails with a typed error, and what it had opened on the server (the command,
//! the shell, the pipeline, the pool) is released: the endpoint's counts go back to zero.

mod common;

use std::time::{Duration, Instant};

use common::{DOMAIN_USER, Endpoint, PASSWORD, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, PoolConfig, RunCmdOptions, RunspacePool};
use psremote::psrp::PipelineSpec;
use psremote::{Error, ErrorKind};

fn config(ep: &Endpoint) -> ClientConfig {
    let mut cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm);
    cfg.operation_timeout = Duration::from_secs(2);
    cfg
}

fn assert_nothing_left(ep: &Endpoint) {
    for counter in ["commands", "pipelines", "pools", "shells"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{counter}: {}", ep.state());
    }
}

/// Nothing polls the endpoint any more: the Receives it answered stay the same over a few
/// OperationTimeouts (a Receive held when the work was released is answered within one).
fn assert_no_more_receives(ep: &Endpoint) {
    std::thread::sleep(Duration::from_secs(3));
    let before = ep.action("Receive");
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ep.action("Receive"), before, "{}", ep.state());
}

#[test]
fn run_cmd_past_its_deadline_times_out_and_releases_the_command_and_shell() {
    let ep = Endpoint::start(&[]);
    let err = block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let options = RunCmdOptions { timeout: Some(Duration::from_secs(2)), ..RunCmdOptions::default() };
        let err = client.run_cmd_with("sleep", &["60"], &options).await.unwrap_err();
        // Within the deadline the same call succeeds.
        let out = client.run_cmd_with("echo", &["in", "time"], &options).await.unwrap();
        assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"in time\n"[..], 0));
        err
    });
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("\"sleep\" did not finish within 2 s"), "{err}");
    assert_nothing_left(&ep);
    assert!(ep.action("Signal") >= 1 && ep.action("Delete") >= 2, "{}", ep.state());
    assert_no_more_receives(&ep);
}

#[test]
fn a_dropped_run_cmd_future_releases_the_command_and_shell() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let started = Instant::now();
        let outer = tokio::time::timeout(Duration::from_secs(2), client.run_cmd("sleep", &["60"])).await;
        assert!(outer.is_err(), "the command cannot have finished");
        // The drop guards' Signal and Delete are under way; the runtime reports when they are done.
        assert!(psremote::client::cleanup_finished(Duration::from_secs(60)).await, "cleanup still pending");
        eprintln!("dropped run_cmd released after {:?}", started.elapsed());
    });
    // Counted once the Delete was answered: nothing to wait for any more.
    assert_eq!(ep.counter("shells"), 0, "{}", ep.state());
    assert_eq!(ep.counter("commands"), 0, "{}", ep.state());
    assert!(ep.action("Delete") >= 1, "{}", ep.state());
    assert_no_more_receives(&ep);
}

#[test]
fn run_cmd_keeps_at_most_max_output_bytes() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let limited = RunCmdOptions { max_output: Some(100_000), ..RunCmdOptions::default() };
        // stdout and stderr count together: 60000 + 60000 passes 100000.
        let both = "head -c 60000 /dev/zero; head -c 60000 /dev/zero 1>&2; sleep 60";
        let err = client.run_cmd_with(both, &[], &limited).await.unwrap_err();
        assert!(matches!(err, Error::OutputTooLarge { limit: 100_000 }), "{err}");
        assert_eq!(err.kind(), ErrorKind::OutputTooLarge);
        // Up to the limit is a result; no limit takes everything; the default is 64 MiB.
        let out = client.run_cmd_with("head -c 100000 /dev/zero", &[], &limited).await.unwrap();
        assert_eq!(out.stdout.len(), 100_000);
        let unlimited = RunCmdOptions { max_output: None, ..RunCmdOptions::default() };
        let out = client.run_cmd_with("head -c 300000 /dev/zero", &[], &unlimited).await.unwrap();
        assert_eq!(out.stdout.len(), 300_000);
        assert_eq!(RunCmdOptions::default().max_output, Some(psremote::client::DEFAULT_MAX_OUTPUT));
        assert_eq!(psremote::client::DEFAULT_MAX_OUTPUT, 64 * 1024 * 1024);
        // The streaming API has no limit, and wait_limited applies one to a shell's command.
        let shell = client.open_cmd_shell(Default::default()).await.unwrap();
        let mut p = shell.start("head -c 300000 /dev/zero", &[]).await.unwrap();
        let mut streamed = 0;
        while let Some(chunk) = p.next_output().await.unwrap() {
            if let psremote::client::OutputChunk::Stdout(d) = chunk {
                streamed += d.len();
            }
        }
        assert_eq!(streamed, 300_000);
        let p = shell.start("head -c 300000 /dev/zero; sleep 60", &[]).await.unwrap();
        let err = p.wait_limited(Some(1000)).await.unwrap_err();
        assert!(matches!(err, Error::OutputTooLarge { limit: 1000 }), "{err}");
        // The command over the limit was terminated: only the shell is left, then nothing.
        assert_eq!(ep.wait_counter("commands", 0), 0, "{}", ep.state());
        shell.close().await.unwrap();
    });
    assert_nothing_left(&ep);
}

#[test]
fn a_pool_that_never_finishes_opening_fails_at_its_deadline_and_is_deleted() {
    let ep = Endpoint::start(&["--misbehave", "stalled-receives"]);
    let err = block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let pool = PoolConfig { open_timeout: Some(Duration::from_secs(3)), ..PoolConfig::default() };
        RunspacePool::open(&client, pool).await.unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.to_string().contains("opening a runspace pool"), "{err}");
    assert_nothing_left(&ep);
    assert!(ep.action("Delete") >= 1, "{}", ep.state());
    assert_no_more_receives(&ep);
}

#[test]
fn a_stalled_command_fails_at_run_cmd_deadline() {
    let ep = Endpoint::start(&["--misbehave", "stalled-receives"]);
    let err = block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let options = RunCmdOptions { timeout: Some(Duration::from_secs(3)), ..RunCmdOptions::default() };
        client.run_cmd_with("echo", &["never", "read"], &options).await.unwrap_err()
    });
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_nothing_left(&ep);
    assert_no_more_receives(&ep);
}

#[test]
fn invoke_within_stops_the_pipeline_and_keeps_the_pool() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let spec = PipelineSpec::script("Start-Sleep -Seconds 60");
        let err = pool.invoke_within(&spec, Duration::from_secs(2)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_eq!(ep.wait_counter("pipelines", 0), 0, "{}", ep.state());
        // The pool is still usable.
        let r = pool.invoke_within(&PipelineSpec::script("Write-Output 5"), Duration::from_secs(60)).await.unwrap();
        assert_eq!(r.output.len(), 1);
        pool.close().await.unwrap();
    });
    assert_nothing_left(&ep);
}

#[test]
fn a_deadline_during_the_create_leaves_no_shell() {
    // Deadlines of a few milliseconds end the calls while their Create is on the wire, or just
    // after: the shell the server creates then must be deleted all the same.
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        for ms in 1..=12u64 {
            let limit = Some(Duration::from_millis(ms));
            let pool = PoolConfig { open_timeout: limit, ..PoolConfig::default() };
            if let Ok(p) = RunspacePool::open(&client, pool).await {
                p.close().await.unwrap();
            }
            let options = RunCmdOptions { timeout: limit, ..RunCmdOptions::default() };
            let _ = client.run_cmd_with("echo", &["x"], &options).await;
        }
        assert!(psremote::client::cleanup_finished(Duration::from_secs(60)).await, "cleanup still pending");
    });
    assert_nothing_left(&ep);
}
