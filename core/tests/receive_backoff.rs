//! A server that answers every Receive at once with the OperationTimeout fault (the endpoint's
//! `--misbehave immediate-timeout`, for its first three seconds) gets a handful of Receives, not
//! hundreds a second: each Receive loop (a command's, a pool's while it opens and after, a
//! pipeline's) waits between such Receives, doubling the wait. The assertions count requests;
//! none measures time.

mod common;

use std::time::Duration;

use common::{Endpoint, block_on, ntlm_config};
use psremote::client::{Client, PoolConfig, RunspacePool};
use psremote::psrp::PipelineSpec;

/// Receives a client may send in the endpoint's three seconds of immediate faults, per Receive
/// loop. With the back-off (50, 100, 200, 400, 800, 1600 ms) a loop sends 7 or 8; generous.
const RECEIVES_PER_LOOP: i64 = 20;

async fn client(ep: &Endpoint) -> Client {
    Client::connect(ntlm_config(ep)).await.unwrap()
}

fn nothing_left(ep: &Endpoint) {
    for counter in ["commands", "pipelines", "pools", "shells"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{counter} left on the server: {}", ep.state());
    }
}

/// Runs `f` with a generous hang guard.
async fn guarded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), f).await.expect("hang guard: no answer within 60 s")
}

#[test]
fn a_command_backs_off_from_immediate_timeouts_and_then_finishes() {
    let ep = Endpoint::start(&["--misbehave", "immediate-timeout"]);
    block_on(async {
        let client = client(&ep).await;
        let out = guarded(client.run_cmd("echo", &["hi"])).await.unwrap();
        assert_eq!((out.stdout.as_slice(), out.exit_code), (b"hi\n".as_slice(), 0));
    });
    let receives = ep.counter("timeouts_injected");
    // Without the back-off: about 500 a second, over a thousand in the three seconds.
    assert!(receives <= RECEIVES_PER_LOOP, "{receives} Receives: {}", ep.state());
    nothing_left(&ep);
}

#[test]
fn a_pool_and_its_pipeline_back_off_from_immediate_timeouts() {
    let ep = Endpoint::start(&["--misbehave", "immediate-timeout"]);
    block_on(async {
        let client = client(&ep).await;
        // The open's own Receives meet the immediate faults first.
        let pool = guarded(RunspacePool::open(&client, PoolConfig::default())).await.unwrap();
        let result = guarded(pool.invoke(&PipelineSpec::script("Write-Output hello"))).await.unwrap();
        assert_eq!(result.output.len(), 1, "{result:?}");
        pool.close().await.unwrap();
    });
    let receives = ep.counter("timeouts_injected");
    // The open's loop, then the pool's and the pipeline's (if the pipeline starts in time).
    assert!(receives <= 3 * RECEIVES_PER_LOOP, "{receives} Receives: {}", ep.state());
    nothing_left(&ep);
}

#[test]
fn terminating_a_command_ends_its_back_off_at_once() {
    let ep = Endpoint::start(&["--misbehave", "immediate-timeout"]);
    block_on(async {
        let client = client(&ep).await;
        let shell = client.open_cmd_shell(Default::default()).await.unwrap();
        let mut process = shell.start("echo", &["hi"]).await.unwrap();
        let control = process.control();
        // Long enough for a few immediate faults and a wait of several hundred ms.
        assert!(tokio::time::timeout(Duration::from_millis(1500), process.next_output()).await.is_err());
        control.terminate().await.unwrap();
        // The reader's pending wait ends with the terminate: no further output, no exit code.
        assert!(guarded(process.next_output()).await.unwrap().is_none());
        assert_eq!(process.exit_code(), None);
        let receives = ep.counter("timeouts_injected");
        drop(process);
        shell.close().await.unwrap();
        // Nothing polls the released command afterwards.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ep.counter("timeouts_injected"), receives, "{}", ep.state());
    });
    nothing_left(&ep);
}
