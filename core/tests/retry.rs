//! A request whose connection closes before any reply arrives is sent again on a new connection
//! when it may run twice (a Receive), and surfaces as an error when it may not (a Send). The
//! endpoint's `--drop-connection` reads the chosen request and closes the connection unanswered.

mod common;

use common::{Endpoint, block_on, ntlm_config};
use psremote::client::{Client, PoolConfig, RunspacePool};
use psremote::clixml::Value;
use psremote::psrp::PipelineSpec;

async fn client(ep: &Endpoint) -> Client {
    Client::connect(ntlm_config(ep)).await.unwrap()
}

fn assert_clean(ep: &Endpoint) {
    for counter in ["pipelines", "pools", "shells", "commands"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{counter} left: {}", ep.state());
    }
}

#[test]
fn a_dropped_receive_is_sent_again() {
    let ep = Endpoint::start(&["--drop-connection", "receive:1"]);
    block_on(async {
        let client = client(&ep).await;
        let out = client.run_cmd("echo", &["hello"]).await.unwrap();
        assert_eq!((out.stdout.as_slice(), out.exit_code), (&b"hello\n"[..], 0));
    });
    assert_eq!(ep.counter("connections_dropped"), 1, "{}", ep.state());
    assert_clean(&ep);

    let ep = Endpoint::start(&["--drop-connection", "receive:1"]);
    block_on(async {
        let client = client(&ep).await;
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let result = pool.invoke(&PipelineSpec::script("Write-Output 'hello'")).await.unwrap();
        assert_eq!(result.output, vec![Value::Str("hello".into())]);
        pool.close().await.unwrap();
    });
    assert_eq!(ep.counter("connections_dropped"), 1, "{}", ep.state());
    assert_clean(&ep);
}

#[test]
fn a_dropped_send_is_not_sent_again() {
    let ep = Endpoint::start(&["--drop-connection", "send:1"]);
    block_on(async {
        let client = client(&ep).await;
        let shell = client.open_cmd_shell(Default::default()).await.unwrap();
        let process = shell.start("findstr", &["x"]).await.unwrap();
        let e = process.send_stdin(b"x\r\n", true).await.unwrap_err();
        assert_eq!(e.kind(), psremote::ErrorKind::Transport, "{e:?}");
        drop(process);
        shell.close().await.unwrap();
    });
    assert_eq!(ep.counter("connections_dropped"), 1, "{}", ep.state());
    assert_clean(&ep);
}
