//! A server whose ReceiveResponse is not the answer to the Receive (issue 12 items 3 and 4):
//! a Done without an exit code, or another command's output, is a protocol error, never a
//! result, and nothing is left behind on the server.

mod common;

use common::{Endpoint, block_on, ntlm_config};
use psremote::ErrorKind;
use psremote::client::{Client, PoolConfig, RunspacePool};
use psremote::psrp::PipelineSpec;

async fn client(ep: &Endpoint) -> Client {
    Client::connect(ntlm_config(ep)).await.unwrap()
}

fn nothing_left(ep: &Endpoint, mode: &str) {
    for counter in ["commands", "pipelines", "pools", "shells"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{mode}: {counter} left on the server: {}", ep.state());
    }
}

#[test]
fn a_done_without_an_exit_code_is_not_exit_code_zero() {
    let ep = Endpoint::start(&["--misbehave", "no-exit-code"]);
    block_on(async {
        let client = client(&ep).await;
        let err = client.run_cmd("echo", &["hi"]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(err.to_string().contains("exit code"), "{err}");
        // Only that reply was broken: the next command reports its real exit code.
        let out = client.run_cmd("exit 3", &[]).await.unwrap();
        assert_eq!(out.exit_code, 3);
    });
    nothing_left(&ep, "no-exit-code");
}

#[test]
fn a_streamed_done_without_an_exit_code_ends_in_an_error_with_no_exit_code() {
    let ep = Endpoint::start(&["--misbehave", "no-exit-code"]);
    block_on(async {
        let client = client(&ep).await;
        let shell = client.open_cmd_shell(Default::default()).await.unwrap();
        let mut p = shell.start("echo", &["hi"]).await.unwrap();
        let err = loop {
            match p.next_output().await {
                Ok(Some(_)) => {}
                Ok(None) => panic!("the output ended as if the command had succeeded"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert_eq!(p.exit_code(), None);
        assert!(p.next_output().await.unwrap().is_none());
        assert_eq!(p.exit_code(), None);
        drop(p);
        shell.close().await.unwrap();
    });
    nothing_left(&ep, "no-exit-code");
}

#[test]
fn another_commands_output_is_refused_for_cmd() {
    let ep = Endpoint::start(&["--misbehave", "foreign-command-id"]);
    block_on(async {
        let client = client(&ep).await;
        let err = client.run_cmd("echo", &["hi"]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(err.to_string().contains("another command"), "{err}");
        let out = client.run_cmd("echo", &["again"]).await.unwrap();
        assert_eq!((out.stdout.as_slice(), out.exit_code), (b"again\n".as_slice(), 0));
    });
    nothing_left(&ep, "foreign-command-id");
}

#[test]
fn another_pipelines_output_is_refused_for_psrp() {
    let ep = Endpoint::start(&["--misbehave", "foreign-command-id"]);
    block_on(async {
        let client = client(&ep).await;
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let err = pool.invoke(&PipelineSpec::script("Write-Output hello")).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        assert!(err.to_string().contains("another command"), "{err}");
        pool.close().await.unwrap();
    });
    nothing_left(&ep, "foreign-command-id");
}
