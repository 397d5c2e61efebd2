//! The server's limits: reading winrm/config, sizing requests to the server's
//! MaxEnvelopeSizekb when asked, never overriding a size the user set, and a request refused
//! for its size saying so. Against the loopback endpoint, whose config answer follows the
//! recorded Windows one.

mod common;

use common::{DOMAIN_USER, Endpoint, PASSWORD, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, PoolConfig, RunspacePool};
use psremote::clixml::Value;
use psremote::psrp::{Command, PipelineSpec, PipelineState};

fn config(ep: &Endpoint) -> ClientConfig {
    ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm)
}

/// 400 KB of input: one 512000-byte envelope's worth of fragments, several 150 KB ones.
async fn send_big_input(pool: &RunspacePool) -> psremote::Result<PipelineState> {
    let spec = PipelineSpec { has_input: true, ..PipelineSpec::command(Command::new("Measure-Input")) };
    Ok(pool.invoke_with_input(&spec, vec![Value::Str("x".repeat(400_000))]).await?.state)
}

#[test]
fn server_config_reports_the_limits() {
    let ep = Endpoint::start(&["--max-envelope-kb", "150", "--max-timeout-ms", "45000"]);
    block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let cfg = client.server_config().await.unwrap();
        assert_eq!(cfg.max_envelope_size_kb, Some(150));
        assert_eq!(cfg.max_envelope_size(), Some(153_600));
        assert_eq!(cfg.max_timeout_ms, Some(45_000));
        assert!(cfg.get("Service/AllowUnencrypted").is_some(), "{:?}", cfg.entries);
    });
}

#[test]
fn requests_fit_the_server_when_asked_and_an_oversized_one_says_why() {
    let ep = Endpoint::start(&["--max-envelope-kb", "150"]);
    block_on(async {
        // Left to itself psremote raises the size for a protocol 2.3 server, and this server
        // refuses the 500 KB requests that follow: the error says why and what to do.
        let client = Client::connect(config(&ep)).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_eq!(pool.max_envelope_size(), 512_000);
        let err = send_big_input(&pool).await.unwrap_err();
        let text = err.to_string();
        assert!(text.contains("HTTP 413") && text.contains("MaxEnvelopeSizekb"), "{text}");
        assert!(text.contains("fit_envelope_to_server"), "{text}");
        drop(pool);

        // Asked to, the client reads the server's limit and keeps every later pool under it.
        let client = Client::connect(config(&ep)).await.unwrap();
        assert_eq!(client.fit_envelope_to_server().await.unwrap(), 153_600);
        assert_eq!(client.envelope_size(), 153_600);
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_eq!(pool.max_envelope_size(), 153_600);
        assert_eq!(send_big_input(&pool).await.unwrap(), PipelineState::Completed);
        pool.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("pools", 0), 0);
}

#[test]
fn a_size_the_user_set_is_never_changed() {
    let ep = Endpoint::start(&["--max-envelope-kb", "300"]);
    block_on(async {
        let mut cfg = config(&ep);
        cfg.max_envelope_size = Some(100 * 1024);
        let client = Client::connect(cfg).await.unwrap();
        assert_eq!(client.fit_envelope_to_server().await.unwrap(), 100 * 1024);
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        assert_eq!(pool.max_envelope_size(), 100 * 1024);
        assert_eq!(send_big_input(&pool).await.unwrap(), PipelineState::Completed);
        pool.close().await.unwrap();
    });
}
