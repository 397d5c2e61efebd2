//! CredSSP against the loopback endpoint, whose acceptor is pyspnego's (its own TLS channel,
//! NTLM inside, the delegated TSCredentials checked against the users file): sealed over HTTP
//! (16 KiB chunks both ways), plaintext inside HTTPS or sealed there too, the credential that
//! arrived, refusals, and the audit warning every delegation logs.

mod common;

use common::{DOMAIN_USER, Endpoint, PASSWORD, block_on};
use psremote::ErrorKind;
use psremote::client::{
    Client, ClientConfig, EncryptionLayer, Mechanism, MessageEncryption, PoolConfig, RunspacePool, TlsOptions,
};
use psremote::clixml::Value;
use psremote::psrp::{Command, PipelineSpec};

const CREDSSP: &[&str] = &["--auth", "credssp,ntlm"];

fn state(ep: &Endpoint) -> serde_json::Value {
    serde_json::from_str(&ep.state()).expect("state is JSON")
}

fn last_logon(ep: &Endpoint) -> serde_json::Value {
    state(ep)["logons"].as_array().and_then(|l| l.last().cloned()).expect("a logon was recorded")
}

fn http_config(ep: &Endpoint) -> ClientConfig {
    ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::CredSsp)
}

fn https_config(ep: &Endpoint) -> ClientConfig {
    ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_mechanism(Mechanism::CredSsp)
        .with_tls(TlsOptions { ca_file: ep.ca_file.clone(), ..TlsOptions::default() })
}

fn echo(cfg: ClientConfig, word: &str) -> psremote::Result<(String, Client)> {
    block_on(async move {
        let client = Client::connect(cfg).await?;
        let out = client.run_cmd("echo", &[word]).await?;
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), client))
    })
}

/// The logon the endpoint recorded is a CredSSP one whose delegated credential is ours.
fn assert_delegated(ep: &Endpoint) {
    let logon = last_logon(ep);
    assert_eq!(logon["scheme"], "credssp", "{logon}");
    assert_eq!(logon["mechanism"], "ntlm", "{logon}");
    assert_eq!(logon["credssp_user"], DOMAIN_USER, "{logon}");
    assert_eq!(logon["credssp_password_ok"], true, "{logon}");
}

#[test]
fn credssp_over_http_seals_every_body_and_delegates_the_password() {
    let ep = Endpoint::start(CREDSSP);
    let (out, client) = echo(http_config(&ep), "sealed-by-credssp").unwrap();
    assert_eq!(out.trim(), "sealed-by-credssp");
    let info = client.connection_info().unwrap();
    assert_eq!(info.negotiated, "credssp");
    assert_eq!(info.mechanism, Mechanism::CredSsp);
    assert_eq!(info.encryption, EncryptionLayer::Message);
    assert!(!info.channel_binding);
    assert_delegated(&ep);
    let st = state(&ep);
    assert!(st["sealed_requests"].as_i64().unwrap() > 0, "{st}");
    assert_eq!(st["plain_requests"], 0, "{st}");
}

#[test]
fn bodies_over_16_kib_travel_in_chunks_both_ways() {
    let ep = Endpoint::start_with(&["--auth", "credssp,ntlm"], true);
    // 40 000 characters: the request is about 55 KB of base64 in its envelope, and the echoed
    // output comes back as large, so both sides seal four chunks of at most 16 KiB.
    let big: String = (0..40_000u32).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    block_on(async {
        let client = Client::connect(http_config(&ep)).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let mut cmd = Command::new("Write-Output");
        cmd.parameters.push((Some("InputObject".into()), Value::Str(big.clone())));
        let r = pool.invoke(&PipelineSpec::command(cmd)).await.unwrap();
        assert_eq!(r.output, vec![Value::Str(big.clone())]);
        let r = pool.invoke(&PipelineSpec::script("Write-Output small")).await.unwrap();
        assert_eq!(r.output, vec![Value::Str("small".into())]);
        pool.close().await.unwrap();
    });
    // The endpoint received multi-part requests (x-multi-encrypted, one OriginalContent per
    // chunk) and single-part ones.
    let captured: Vec<Vec<u8>> = std::fs::read_dir(ep.capture.as_ref().unwrap())
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let multi: Vec<&Vec<u8>> = captured.iter().filter(|c| contains(c, b"multipart/x-multi-encrypted")).collect();
    assert!(!multi.is_empty(), "no request was sent in chunks");
    for request in &multi {
        assert!(contains(request, b"protocol=\"application/HTTP-CredSSP-session-encrypted\""));
        assert!(count(request, b"Length=16384\r\n") >= 1, "a full 16 KiB chunk");
        assert_eq!(count(request, b"--Encrypted Boundary--"), 1);
    }
    assert!(
        captured
            .iter()
            .any(|c| contains(c, b"multipart/encrypted;protocol=\"application/HTTP-CredSSP-session-encrypted\"")),
        "single-part requests too"
    );
    assert_eq!(state(&ep)["bad_seal"], 0);
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    count(hay, needle) > 0
}

#[test]
fn every_user_name_form_delegates() {
    let ep = Endpoint::start(CREDSSP);
    for name in ["user@DOMAIN", "user"] {
        let cfg = ClientConfig::new("x", name, PASSWORD)
            .with_url(&ep.url)
            .unwrap()
            .with_trusted_hosts(["127.0.0.1"])
            .with_mechanism(Mechanism::CredSsp);
        assert_eq!(echo(cfg, name).unwrap().0.trim(), name);
        let logon = last_logon(&ep);
        assert_eq!(logon["credssp_password_ok"], true, "{name}: {logon}");
    }
}

#[test]
fn credssp_over_https_sends_plaintext_inside_tls() {
    let ep = Endpoint::start_https("server", CREDSSP);
    // A verified certificate proves the server: no trusted_hosts needed.
    let (out, client) = echo(https_config(&ep), "inside-tls").unwrap();
    assert_eq!(out.trim(), "inside-tls");
    let info = client.connection_info().unwrap();
    assert_eq!(info.negotiated, "credssp");
    assert_eq!(info.encryption, EncryptionLayer::Tls);
    assert_delegated(&ep);
    let st = state(&ep);
    assert_eq!(st["sealed_requests"], 0, "{st}");
    assert!(st["plain_requests"].as_i64().unwrap() > 0, "{st}");
    assert_eq!(last_logon(&ep)["tls"], info.tls.unwrap().version.name());
}

#[test]
fn credssp_over_https_seals_too_when_asked() {
    let ep = Endpoint::start_https("server", CREDSSP);
    let mut cfg = https_config(&ep);
    cfg.message_encryption = MessageEncryption::Always;
    let (out, client) = echo(cfg, "tls-and-credssp").unwrap();
    assert_eq!(out.trim(), "tls-and-credssp");
    assert_eq!(client.connection_info().unwrap().encryption, EncryptionLayer::TlsAndMessage);
    assert_delegated(&ep);
    let st = state(&ep);
    assert!(st["sealed_requests"].as_i64().unwrap() > 0, "{st}");
    assert_eq!(st["plain_requests"], 0, "{st}");
}

#[test]
fn a_wrong_password_is_an_authentication_error() {
    let ep = Endpoint::start(CREDSSP);
    let cfg = ClientConfig::new("x", DOMAIN_USER, "Not-The-Passw0rd")
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::CredSsp);
    let err = echo(cfg, "never").unwrap_err();
    eprintln!("wrong password: {err}");
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("credssp") && msg.contains("wrong user name or password"), "{msg}");
    assert!(!msg.contains("Not-The-Passw0rd"), "{msg}");
    assert!(state(&ep)["logons"].as_array().unwrap().is_empty(), "no logon completed");
}

#[test]
fn credssp_over_http_needs_the_host_in_trusted_hosts() {
    let ep = Endpoint::start(CREDSSP);
    let cfg =
        ClientConfig::new("x", DOMAIN_USER, PASSWORD).with_url(&ep.url).unwrap().with_mechanism(Mechanism::CredSsp);
    let err = echo(cfg, "never").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
    assert!(err.to_string().contains("credssp"), "{err}");
    assert!(err.to_string().contains("trusted_hosts"), "{err}");
    assert_eq!(ep.counter("requests"), 0, "nothing may reach the server");
}

#[test]
fn a_corrupted_sealed_reply_is_a_protocol_error() {
    let ep = Endpoint::start(&["--auth", "credssp,ntlm", "--misbehave", "bad-seal"]);
    block_on(async {
        let client = Client::connect(http_config(&ep)).await.unwrap();
        let err = client.run_cmd("echo", &["hi"]).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
        // The broken connection was dropped; a new one authenticates and works.
        let out = client.run_cmd("echo", &["again"]).await.unwrap();
        assert_eq!(out.stdout, b"again\n");
    });
}

#[test]
fn every_delegation_is_logged_as_an_audit_warning_without_the_password() {
    let capture = common::capture::capture();
    let ep = Endpoint::start(CREDSSP);
    let endpoint = format!("endpoint={}", ep.url);
    echo(http_config(&ep), "audited").unwrap();
    let logs = capture.text();
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.starts_with("WARN psremote::audit") && l.contains("event=credssp_delegation"))
        .filter(|l| l.contains(&endpoint))
        .collect();
    assert_eq!(warnings.len(), 1, "{logs}");
    assert!(warnings[0].contains(&format!("user={DOMAIN_USER}")), "{}", warnings[0]);
    assert!(warnings[0].contains("hands the user's credentials to the server"), "{}", warnings[0]);
    // Nothing captured at any level, from any crate, carries the password.
    use base64::Engine as _;
    let utf16: Vec<u8> = PASSWORD.encode_utf16().flat_map(u16::to_le_bytes).collect();
    for needle in [
        PASSWORD.to_owned(),
        base64::engine::general_purpose::STANDARD.encode(PASSWORD),
        format!("{utf16:?}"),
        format!("{:?}", PASSWORD.as_bytes()),
    ] {
        assert!(!logs.contains(&needle), "the password ({} chars) is in the logs", needle.len());
    }
}
