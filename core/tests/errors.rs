//! Bad input gets a clear, typed error, never a panic, and loses nothing.

mod common;

use common::{DOMAIN_USER, Endpoint, PASSWORD, block_on};
use psremote::auth::Mechanism;
use psremote::client::{Client, ClientConfig, CmdShellOptions};
use psremote::{Error, ErrorKind};

fn config(ep: &Endpoint) -> ClientConfig {
    ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm)
}

#[test]
fn wrong_password_names_the_mechanism() {
    let ep = Endpoint::start(&[]);
    for mech in [Mechanism::Ntlm, Mechanism::Negotiate] {
        let cfg = ClientConfig::new("x", DOMAIN_USER, "wrong")
            .with_url(&ep.url)
            .unwrap()
            .with_trusted_hosts(["127.0.0.1"])
            .with_mechanism(mech);
        let err = block_on(Client::connect(cfg)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
        assert!(err.to_string().contains(mech.name()), "{err}");
        assert!(!err.to_string().contains("wrong"), "the password leaked into {err}");
    }
}

#[test]
fn nothing_listening_names_the_address() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&format!("http://127.0.0.1:{port}/wsman"))
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"]);
    let err = block_on(Client::connect(cfg)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect);
    assert!(err.to_string().contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[test]
fn misbehaving_replies_are_protocol_errors_and_the_connection_is_discarded() {
    for mode in ["truncated-xml", "bad-base64", "bad-seal", "unsealed", "wrong-relates-to"] {
        let ep = Endpoint::start(&["--misbehave", mode]);
        block_on(async {
            let client = Client::connect(config(&ep)).await.unwrap();
            let err = client.run_cmd("echo", &["hi"]).await.unwrap_err();
            eprintln!("{mode}: {err}");
            assert_eq!(err.kind(), ErrorKind::Protocol, "{mode}: {err}");
            // The bad connection was dropped: the next request authenticates a new one, and works.
            let before = ep.counter("connections_opened");
            let out = client.run_cmd("echo", &["again"]).await.unwrap();
            assert_eq!(out.stdout, b"again\n", "{mode}");
            assert!(ep.counter("connections_opened") > before, "{mode}: the broken connection was reused");
        });
        // Terminate and Delete ran on the error path: nothing is left on the server.
        assert_eq!(ep.wait_counter("commands", 0), 0, "{mode}");
        assert_eq!(ep.wait_counter("shells", 0), 0, "{mode}");
    }
}

#[test]
fn oversized_request_is_reported_with_its_status() {
    let ep = Endpoint::start(&["--max-envelope-kb", "32"]);
    block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let opts = CmdShellOptions { environment: vec![("BIG".into(), "x".repeat(64 * 1024))], ..Default::default() };
        let err = client.open_cmd_shell(opts).await.unwrap_err();
        match err {
            Error::Transport { status: Some(413), .. } => {}
            other => panic!("expected HTTP 413, got {other:?}"),
        }
    });
}

#[test]
fn faults_carry_code_machine_and_message() {
    let ep = Endpoint::start(&[]);
    block_on(async {
        let client = Client::connect(config(&ep)).await.unwrap();
        let opts = CmdShellOptions { working_directory: Some("/nonexistent/psremote".into()), ..Default::default() };
        let shell = client.open_cmd_shell(opts).await.unwrap();
        let err = shell.run("echo", &["x"]).await.unwrap_err();
        let fault = err.fault().unwrap_or_else(|| panic!("expected a fault, got {err:?}"));
        assert!(fault.code.is_some(), "{fault:?}");
        assert_eq!(fault.machine.as_deref(), Some("127.0.0.1"));
        assert!(!fault.message.is_empty());
        shell.close().await.unwrap();
    });
}

#[test]
fn invalid_configuration_says_what_to_change() {
    let err = ClientConfig::new("x", "u", "p").with_url("ftp://host:5986/wsman").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    let https = ClientConfig::new("x", "u", "p").with_url("https://host/wsman").unwrap();
    assert!(https.https && https.port == 5986);
    let mut cfg = ClientConfig::new("127.0.0.1", "u", "p").with_mechanism(Mechanism::Basic);
    let err = block_on(Client::connect(cfg.clone())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert!(err.to_string().contains("allow_unencrypted"), "{err}");
    cfg.max_envelope_size = Some(100);
    cfg.mechanism = Mechanism::Ntlm;
    assert_eq!(block_on(Client::connect(cfg)).unwrap_err().kind(), ErrorKind::InvalidConfig);
}
