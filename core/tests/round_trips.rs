//! The requests and connections an operation costs, pinned against the endpoint's counters
//! (what users feel on a network with latency is round trips, connections and logons; no time is
//! measured here). A pool opens and closes over the one connection (and logon) the client made
//! at connect; an invocation on an open pool is a Command and a Receive on the caller's path,
//! then the Signal that releases the pipeline.

mod common;

use common::{Endpoint, block_on, ntlm_config};
use psremote::client::{Client, PoolConfig, RunspacePool};
use psremote::psrp::PipelineSpec;

#[test]
fn a_pool_opens_and_closes_over_the_connection_of_the_connect() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(ntlm_config(&ep)).await.unwrap();
        assert_eq!(ep.logons(), 1, "{}", ep.state());
        for _ in 0..3 {
            let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
            pool.close().await.unwrap();
        }
        assert_eq!(ep.action("Create"), 3);
        assert_eq!(ep.action("Delete"), 3);
        eprintln!("receives for three opens: {}", ep.action("Receive"));
        assert_eq!(ep.logons(), 1, "one connection, one logon: {}", ep.state());
    });
}

/// A pool that runs one pipeline and closes at once (the fan-out of a fleet) does it all on the
/// connect's connection: the Delete waits for the pipeline's Signal Terminate, a round trip
/// already under way, instead of opening a connection (and logging on) beside it.
#[test]
fn a_pool_that_runs_one_pipeline_and_closes_uses_one_connection() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(ntlm_config(&ep)).await.unwrap();
        for _ in 0..5 {
            let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
            let result = pool.invoke(&PipelineSpec::script("Write-Output 'hello'")).await.unwrap();
            assert_eq!(result.output.len(), 1);
            pool.close().await.unwrap();
        }
        assert_eq!(ep.action("Delete"), 5);
        assert_eq!(ep.wait_counter("pools", 0), 0);
        assert_eq!(ep.logons(), 1, "one connection, one logon: {}", ep.state());
    });
}

#[test]
fn an_invocation_is_a_command_and_a_receive_then_the_signal_that_releases_it() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(ntlm_config(&ep)).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let receives = ep.action("Receive");
        let runs = 10;
        for _ in 0..runs {
            let result = pool.invoke(&PipelineSpec::script("Write-Output 'hello'")).await.unwrap();
            assert_eq!(result.output.len(), 1);
        }
        pool.close().await.unwrap();
        assert_eq!(ep.action("Command"), runs);
        assert_eq!(ep.wait_counter("commands", 0), 0);
        // One Signal Terminate per pipeline, the last one answered before the pool's Delete.
        assert_eq!(ep.action("Signal"), runs, "one Signal Terminate per pipeline: {}", ep.state());
        let per_run = ep.action("Receive") - receives;
        eprintln!("receives for {runs} invocations: {per_run}; logons {}", ep.logons());
        assert!(per_run >= runs && per_run <= runs * 2, "{per_run} Receives for {runs} invocations");
        // The Signal of one invocation may still be on its way when the next Command goes out:
        // two connections at most, each with its one logon (the endpoint's control requests
        // open connections of their own, so logons count the client's). A pipeline that took
        // longer than a second (a loaded machine) has the pool's Receive run beside it, on a
        // third; its Receives show it.
        let allowed = if per_run == runs { 2 } else { 3 };
        assert!(ep.logons() <= allowed, "{} logons, {per_run} Receives: {}", ep.logons(), ep.state());
    });
}
