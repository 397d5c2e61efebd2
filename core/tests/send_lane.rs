//! Input keeps one connection for its Sends (a lane), each next Send built and sealed while the
//! one before is in flight; counted against the endpoint (NTLM over HTTP, so every Send is
//! sealed). A server that closes the connection after every reply leaves no Send sealed for a
//! connection that is gone: such a Send never left, and goes on a new connection instead.

mod common;

use common::{Endpoint, block_on, ntlm_config};
use psremote::client::{Client, PoolConfig, RunspacePool};
use psremote::clixml::Value;
use psremote::psrp::{Command, PipelineSpec, PipelineState};

/// Sends `objects` strings of `len` characters, one `send_input` each, to Measure-Input and
/// returns its Count and Bytes.
async fn measure(client: &Client, objects: usize, len: usize) -> (i64, i64) {
    let pool = RunspacePool::open(client, PoolConfig::default()).await.unwrap();
    let spec = PipelineSpec { has_input: true, ..PipelineSpec::command(Command::new("Measure-Input")) };
    let pipeline = pool.start(&spec).await.unwrap();
    let control = pipeline.control();
    for i in 0..objects {
        let text: String = std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), len).collect();
        control.send_input(vec![Value::Str(text)]).await.unwrap();
    }
    control.end_input().await.unwrap();
    let result = pipeline.wait().await.unwrap();
    assert_eq!(result.state, PipelineState::Completed, "{:?}", result.errors);
    pool.close().await.unwrap();
    let [Value::Object(o)] = result.output.as_slice() else { panic!("{:?}", result.output) };
    let get = |name: &str| match o.property(name) {
        Some(Value::I32(n)) => i64::from(*n),
        Some(Value::I64(n)) => *n,
        other => panic!("{name}: {other:?}"),
    };
    (get("Count"), get("Bytes"))
}

#[test]
fn input_goes_out_one_send_per_chunk_over_one_connection() {
    let ep = Endpoint::start(&[]);
    let objects = 12;
    block_on(async {
        let client = Client::connect(ntlm_config(&ep)).await.unwrap();
        let (count, bytes) = measure(&client, objects, 150_000).await;
        assert_eq!(count, objects as i64);
        assert!(bytes > (objects * 150_000) as i64, "{bytes}");
    });
    // Each object is one chunk (well under the envelope): one Send each, and the end of input.
    assert_eq!(ep.action("Send"), objects as i64 + 1, "{}", ep.state());
    // The connect's connection, the pipeline's Receive beside the Sends' lane, and at most the
    // pool's Receive: never a connection (or logon) per Send.
    assert!(ep.logons() <= 3, "{} logons: {}", ep.logons(), ep.state());
    assert_eq!(ep.counter("bad_seal"), 0, "{}", ep.state());
    assert_eq!(ep.wait_counter("pools", 0), 0);
}

#[test]
fn a_server_that_closes_after_every_reply_still_gets_every_send_once() {
    let ep = Endpoint::start(&["--close-after-reply"]);
    let objects = 6;
    block_on(async {
        let client = Client::connect(ntlm_config(&ep)).await.unwrap();
        let (count, _) = measure(&client, objects, 150_000).await;
        assert_eq!(count, objects as i64);

        // A command's stdin in several pieces (96 KiB each): every piece arrives, in order.
        let shell = client.open_cmd_shell(Default::default()).await.unwrap();
        let process = shell.start("wc", &["-c"]).await.unwrap();
        let data = vec![b'x'; 5 * 96 * 1024 + 17];
        process.send_stdin(&data, true).await.unwrap();
        let out = process.wait().await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), data.len().to_string());
        shell.close().await.unwrap();
    });
    assert_eq!(ep.action("Send"), objects as i64 + 1 + 6, "{}", ep.state());
    // Each request came on a connection of its own, each sealed for the connection it came on.
    assert!(ep.logons() as i64 >= ep.action("Send"), "{} logons: {}", ep.logons(), ep.state());
    assert_eq!(ep.counter("bad_seal"), 0, "{}", ep.state());
    for counter in ["pipelines", "pools", "shells", "commands"] {
        assert_eq!(ep.wait_counter(counter, 0), 0, "{counter} left: {}", ep.state());
    }
}
