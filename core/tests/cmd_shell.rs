//! The cmd shell over NTLM/Negotiate with message encryption, against the loopback endpoint
//! (pyspnego acceptors and `wrap_winrm`/`unwrap_winrm` on the server side).

mod common;

use common::{DOMAIN_USER, Endpoint, PASSWORD, USER, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, CmdShellOptions, OutputChunk};
use std::time::Duration;

fn config(ep: &Endpoint, mechanism: Mechanism) -> ClientConfig {
    ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(mechanism)
}

#[test]
fn ntlm_runs_a_command_sealed() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let out = client.run_cmd("echo", &["hello", "world"]).await.unwrap();
        assert_eq!(out.stdout, b"hello world\n");
        assert_eq!(out.stderr, b"");
        assert_eq!(out.exit_code, 0);
    });
    assert_eq!(ep.wait_counter("shells", 0), 0);
    assert_eq!(ep.counter("commands"), 0);
}

#[test]
fn negotiate_runs_a_command_with_stderr_and_exit_code() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Negotiate)).await.unwrap();
        let out = client.run_cmd("echo out; echo err 1>&2; exit 7", &[]).await.unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.exit_code, 7);
    });
}

#[test]
fn user_without_domain_authenticates() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let cfg = ClientConfig::new("x", USER, PASSWORD)
            .with_url(&ep.url)
            .unwrap()
            .with_trusted_hosts(["127.0.0.1"])
            .with_mechanism(Mechanism::Ntlm);
        let out = Client::connect(cfg).await.unwrap().run_cmd("echo", &["ok"]).await.unwrap();
        assert_eq!(out.stdout, b"ok\n");
    });
}

#[test]
fn output_streams_as_it_arrives_and_stdin_is_sent() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let shell = client.open_cmd_shell(CmdShellOptions::default()).await.unwrap();

        // Streaming: the first line arrives while the command is still running.
        let mut p = shell.start("echo first; read line; echo got:$line", &[]).await.unwrap();
        let first = p.next_output().await.unwrap().unwrap();
        assert_eq!(first, OutputChunk::Stdout(b"first\n".to_vec()));
        assert_eq!(p.exit_code(), None, "the command must still be waiting for stdin");
        p.send_stdin(b"abc\n", true).await.unwrap();
        let rest = p.wait().await.unwrap();
        assert_eq!(rest.stdout, b"got:abc\n");

        // A larger stdin payload split over several Sends comes back intact.
        let cat = shell.start("cat", &[]).await.unwrap();
        let payload: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        cat.send_stdin(&payload, true).await.unwrap();
        let out = cat.wait().await.unwrap();
        assert_eq!(out.stdout.len(), payload.len());
        assert!(out.stdout == payload);
        shell.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("shells", 0), 0);
}

#[test]
fn environment_and_working_directory_apply() {
    let ep = Endpoint::start(&[]);
    let dir = common::TempDir::new("wd");
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let opts = CmdShellOptions {
            environment: vec![("PSR_TEST_VAR".into(), "value with spaces & <xml>".into())],
            working_directory: Some(dir.0.to_string_lossy().into_owned()),
            ..Default::default()
        };
        let shell = client.open_cmd_shell(opts).await.unwrap();
        let out = shell.run("echo \"$PSR_TEST_VAR\"; pwd", &[]).await.unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("value with spaces & <xml>"));
        assert_eq!(std::fs::canonicalize(lines.next().unwrap()).unwrap(), std::fs::canonicalize(&dir.0).unwrap());
        shell.close().await.unwrap();
    });
}

#[test]
fn receive_polls_again_after_the_operation_timeout() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let mut cfg = config(&ep, Mechanism::Ntlm);
        cfg.operation_timeout = Duration::from_secs(1);
        let client = Client::connect(cfg).await.unwrap();
        let out = client.run_cmd("sleep 2.5; echo done", &[]).await.unwrap();
        assert_eq!(out.stdout, b"done\n");
    });
}

#[test]
fn terminate_stops_a_running_command() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let shell = client.open_cmd_shell(CmdShellOptions::default()).await.unwrap();
        let mut p = shell.start("echo started; sleep 60", &[]).await.unwrap();
        assert_eq!(p.next_output().await.unwrap(), Some(OutputChunk::Stdout(b"started\n".to_vec())));
        p.terminate().await.unwrap();
        assert_eq!(ep.counter("commands"), 0);
        shell.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("shells", 0), 0);
}

#[test]
fn dropped_shell_and_command_are_released() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let shell = client.open_cmd_shell(CmdShellOptions::default()).await.unwrap();
        let p = shell.start("sleep 60", &[]).await.unwrap();
        drop(p);
        drop(shell);
    });
    assert_eq!(ep.wait_counter("commands", 0), 0);
    assert_eq!(ep.wait_counter("shells", 0), 0);
}

#[test]
fn every_body_after_authentication_is_sealed() {
    let ep = Endpoint::start_with(&[], true);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Negotiate)).await.unwrap();
        let out = client.run_cmd("echo", &["secret-payload"]).await.unwrap();
        assert_eq!(out.stdout, b"secret-payload\n");
    });
    let dir = ep.capture.as_ref().unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut sealed = 0;
    for f in &files {
        let raw = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("Envelope"), "plaintext SOAP in {}", f.display());
        assert!(!text.contains("secret-payload"), "plaintext argument in {}", f.display());
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        if body.is_empty() {
            // The authentication round trips carry no body.
            assert!(head.to_ascii_lowercase().contains("authorization: negotiate"), "{head}");
            continue;
        }
        assert!(
            head.to_ascii_lowercase().contains(
                "content-type: multipart/encrypted;protocol=\"application/http-spnego-session-encrypted\";boundary=\"encrypted boundary\""
            ),
            "{head}"
        );
        assert!(raw.ends_with(b"--Encrypted Boundary--\r\n"));
        assert!(!raw.windows(26).any(|w| w == b"\r\n--Encrypted Boundary--\r\n"), "CRLF before the closing boundary");
        sealed += 1;
    }
    // Create, Command, at least one Receive, Signal, Delete.
    assert!(sealed >= 5, "only {sealed} sealed bodies captured");
}

/// A `CmdControl` reaches the command while another task waits in `next_output`: Ctrl-C ends a
/// command that writes nothing, and stdin goes in while a Receive is pending.
#[test]
fn control_works_while_another_task_reads() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let shell = client.open_cmd_shell(CmdShellOptions::default()).await.unwrap();

        let mut p = shell.start("read x; echo got $x", &[]).await.unwrap();
        let control = p.control();
        let reader = tokio::spawn(async move { (p.next_output().await, p) });
        control.send_stdin(b"it\n", true).await.unwrap();
        let (first, p) = reader.await.unwrap();
        assert_eq!(first.unwrap(), Some(OutputChunk::Stdout(b"got it\n".to_vec())));
        assert_eq!(p.wait().await.unwrap().exit_code, 0);

        let mut p = shell.start("sleep 60", &[]).await.unwrap();
        let control = p.control();
        let reader = tokio::spawn(async move { (p.next_output().await, p) });
        control.ctrl_c().await.unwrap();
        let (end, p) = reader.await.unwrap();
        assert_eq!(end.unwrap(), None);
        assert_eq!(p.exit_code(), Some(128 + 2), "the endpoint reports a SIGINT as a POSIX shell would");
        shell.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("commands", 0), 0);
    assert_eq!(ep.wait_counter("shells", 0), 0);
}

/// `next_output` is cancel-safe: a timeout while the Receive is pending loses no output.
#[test]
fn next_output_under_a_timeout_loses_nothing() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let shell = client.open_cmd_shell(CmdShellOptions::default()).await.unwrap();
        let mut p = shell.start("read x; echo got $x", &[]).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), p.next_output()).await.is_err());
        p.send_stdin(b"late\n", true).await.unwrap();
        let out = p.wait().await.unwrap();
        assert_eq!(out.stdout, b"got late\n");
        shell.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("shells", 0), 0);
}

/// After a terminate through a `CmdControl`, a reader's output ends instead of failing.
#[test]
fn terminate_through_control_ends_the_output() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep, Mechanism::Ntlm)).await.unwrap();
        let shell = client.open_cmd_shell(CmdShellOptions::default()).await.unwrap();
        let mut p = shell.start("sleep 60", &[]).await.unwrap();
        let control = p.control();
        let reader = tokio::spawn(async move { (p.next_output().await, p) });
        control.terminate().await.unwrap();
        let (end, p) = reader.await.unwrap();
        assert_eq!(end.unwrap(), None);
        assert!(matches!(p.exit_code(), None | Some(137)), "{:?}", p.exit_code());
        assert!(matches!(control.send_stdin(b"x", false).await, Err(psremote::Error::Closed(_))));
        control.ctrl_c().await.unwrap();
        assert_eq!(ep.counter("commands"), 0);
        shell.close().await.unwrap();
    });
    assert_eq!(ep.wait_counter("shells", 0), 0);
}
