//! Secrets never reach the logs: a full session (NTLM logon with message encryption, a runspace
//! pool, the session-key exchange, a SecureString both ways, a cmd command) runs with every
//! tracing event of every crate captured at TRACE, and the password, the session key the
//! endpoint generated and the SecureString's plaintext appear nowhere in what was captured, nor
//! in any error or Debug output produced on the way.

mod common;

use std::fmt::Write as _;

use common::{DOMAIN_USER, Endpoint, Realm, block_on};
use psremote::client::{Client, ClientConfig, KerberosOptions, Mechanism, PoolConfig, RunspacePool};
use psremote::clixml::Value;
use psremote::psrp::{Command, PipelineSpec};

/// Distinct from the shared test password so that no other test's text can match by accident.
const SECRET_PASSWORD: &str = "Zq7!unique-Pa55word";
const SECURE_PLAINTEXT: &str = "launch-code-4471-xyzzy";
/// The test realm's password for `user` (psremote_testserver.kdc).
const KRB_PASSWORD: &str = "Passw0rd!";

fn endpoint_session_keys(ep: &Endpoint) -> Vec<String> {
    let state: serde_json::Value = serde_json::from_str(&ep.state()).unwrap();
    state["session_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_owned()).collect()
}

#[test]
fn no_secret_reaches_the_logs_at_trace_level() {
    let capture = common::capture::capture();

    let dir = common::TempDir::new("secrets-users");
    let users = dir.0.join("users");
    std::fs::write(&users, format!("DOMAIN:user:{SECRET_PASSWORD}\n")).unwrap();
    let ep = Endpoint::start(&["--users", users.to_str().unwrap()]);

    let mut leaked_text = String::new();
    block_on(async {
        // A wrong password first: its error must not echo what was typed.
        let wrong = ClientConfig::new("x", DOMAIN_USER, "Wrong-Typed-Secret-991")
            .with_url(&ep.url)
            .unwrap()
            .with_trusted_hosts(["127.0.0.1"])
            .with_mechanism(Mechanism::Ntlm);
        let _ = write!(leaked_text, "{wrong:?}");
        let err = Client::connect(wrong).await.unwrap_err();
        let _ = write!(leaked_text, "{err} {err:?}");

        let cfg = ClientConfig::new("x", DOMAIN_USER, SECRET_PASSWORD)
            .with_url(&ep.url)
            .unwrap()
            .with_trusted_hosts(["127.0.0.1"])
            .with_mechanism(Mechanism::Negotiate);
        let _ = write!(leaked_text, "{cfg:?}");
        let client = Client::connect(cfg).await.unwrap();
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let secret = pool.secure_string(SECURE_PLAINTEXT).await.unwrap();
        let _ = write!(leaked_text, "{secret:?} {pool:?}");
        let mut cmd = Command::new("Write-Output");
        cmd.parameters.push((Some("InputObject".into()), secret));
        let r = pool.invoke(&PipelineSpec::command(cmd)).await.unwrap();
        let _ = write!(leaked_text, "{r:?}");
        let Some(Value::SecureString(back)) = r.output.first() else { panic!("{:?}", r.output) };
        assert_eq!(pool.decrypt_secure_string(back).unwrap().as_str(), SECURE_PLAINTEXT);
        let out = client.run_cmd("echo", &["unlogged-arg-8812"]).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "unlogged-arg-8812");
        pool.close().await.unwrap();
    });

    // Kerberos too, with delegation: AS and TGS exchanges, the AP-REQ rewrite, sealing. The test
    // realm's user has its own password, added to the needles below.
    let realm = Realm::start();
    let conf = realm.krb5_conf.to_str().unwrap().to_owned();
    let keytab = realm.keytab.to_str().unwrap().to_owned();
    let krb_ep = Endpoint::launch(
        &["--auth", "kerberos", "--keytab", keytab.as_str()],
        false,
        &[("KRB5_CONFIG", conf.as_str())],
    );
    block_on(async {
        let url = krb_ep.url.replace("127.0.0.1", "localhost");
        let mut cfg = ClientConfig::new("x", format!("{}\\user", realm.realm), KRB_PASSWORD)
            .with_url(&url)
            .unwrap()
            .with_mechanism(Mechanism::Kerberos);
        cfg.kerberos = KerberosOptions { kdc: Some(realm.kdc.clone()), delegate: true, ..KerberosOptions::default() };
        let _ = write!(leaked_text, "{cfg:?}");
        let client = Client::connect(cfg).await.unwrap();
        let out = client.run_cmd("echo", &["kerberos"]).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kerberos");
    });
    // Arguments reach the audit trail only when the configuration opts in.
    block_on(async {
        let mut cfg = ClientConfig::new("x", DOMAIN_USER, SECRET_PASSWORD)
            .with_url(&ep.url)
            .unwrap()
            .with_trusted_hosts(["127.0.0.1"])
            .with_mechanism(Mechanism::Ntlm);
        cfg.audit_arguments = true;
        let client = Client::connect(cfg).await.unwrap();
        client.run_cmd("echo", &["opted-in-arg-5521"]).await.unwrap();
    });
    assert!(krb_ep.state().contains("\"delegated\": true"), "{}", krb_ep.state());

    let keys = endpoint_session_keys(&ep);
    assert!(!keys.is_empty(), "the endpoint reported no session key: the key exchange did not happen");
    let logs = capture.text();
    // The capture really saw the session: audit events and trace-level detail are present.
    assert!(logs.contains("psremote::audit") && logs.contains("event=connect"), "{logs}");
    assert!(logs.contains("TRACE"), "nothing was captured at TRACE");
    // The audit trail: every event kind, command names but not their arguments (not opted in).
    for event in [
        "event=connect",
        "event=pool_open",
        "event=pipeline_start",
        "event=pipeline_end",
        "event=pool_close",
        "event=shell_open",
        "event=command_start",
        "event=command_end",
        "event=shell_close",
        "event=disconnect",
    ] {
        assert!(logs.lines().any(|l| l.contains("psremote::audit") && l.contains(event)), "no {event} in {logs}");
    }
    assert!(logs.contains("commands=Write-Output"), "{logs}");
    let audit: Vec<&str> = logs.lines().filter(|l| l.contains("psremote::audit")).collect();
    assert!(audit.iter().any(|l| l.contains("opted-in-arg-5521")), "{logs}");
    assert!(!audit.iter().any(|l| l.contains("unlogged-arg-8812")), "{logs}");
    assert!(logs.contains("negotiated=\"kerberos\"") || logs.contains("negotiated=kerberos"), "{logs}");
    assert!(logs.contains("delegating a forwardable Kerberos ticket"), "{logs}");

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut needles = vec![
        SECRET_PASSWORD.to_owned(),
        KRB_PASSWORD.to_owned(),
        b64.encode(KRB_PASSWORD),
        "Wrong-Typed-Secret-991".to_owned(),
        SECURE_PLAINTEXT.to_owned(),
        b64.encode(SECRET_PASSWORD),
        // UTF-16LE, as NTLM and SecureStrings carry text.
        SECRET_PASSWORD.encode_utf16().map(|u| format!("{:?}", u.to_le_bytes())).collect::<String>(),
    ];
    for key in &keys {
        let bytes: Vec<u8> =
            (0..key.len()).step_by(2).map(|i| u8::from_str_radix(&key[i..i + 2], 16).unwrap()).collect();
        needles.push(key.clone());
        needles.push(key.to_uppercase());
        needles.push(b64.encode(&bytes));
        needles.push(format!("{:?}", bytes));
        needles.push(format!("{:?}", &bytes[..16]));
    }
    for needle in &needles {
        assert!(!logs.contains(needle.as_str()), "a secret ({} chars) is in the logs", needle.len());
        assert!(
            !leaked_text.contains(needle.as_str()),
            "a secret ({} chars) is in an error or Debug output",
            needle.len()
        );
    }
}
