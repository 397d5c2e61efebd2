//! Kerberos against a real MIT KDC (a throwaway realm on 127.0.0.1, started per test) and the
//! endpoint's gssapi acceptor (pyspnego with the realm's keytab): logon, mutual authentication,
//! message encryption both ways, UDP and TCP to the KDC, SPN service classes, Negotiate choosing
//! Kerberos first and refusing an NTLM fallback the policy does not allow, and Kerberos over
//! HTTPS with channel binding (the AP-REQ repair that MIT needs).

mod common;

use common::{Endpoint, Realm, TempDir, block_on, cert};
use psremote::ErrorKind;
use psremote::client::{
    Client, ClientConfig, EncryptionLayer, KerberosOptions, Mechanism, PoolConfig, RunspacePool, TlsOptions,
};
use psremote::clixml::Value;
use psremote::psrp::{Command, PipelineSpec};

const KRB_PASSWORD: &str = "Passw0rd!";

struct Setup {
    realm: Realm,
    ep: Endpoint,
    _users: TempDir,
}

/// A realm and an endpoint that accepts its tickets (and NTLM for the same user).
fn setup(https: bool, extra: &[&str]) -> Setup {
    let realm = Realm::start();
    let users = TempDir::new("krb-users");
    let users_file = users.0.join("users");
    std::fs::write(&users_file, format!("{}:user:{KRB_PASSWORD}\nDOMAIN:user:{KRB_PASSWORD}\n", realm.realm)).unwrap();
    let keytab = realm.keytab.to_str().unwrap().to_owned();
    let mut args = vec!["--users", users_file.to_str().unwrap(), "--keytab", keytab.as_str()];
    args.extend_from_slice(extra);
    let conf = realm.krb5_conf.to_str().unwrap().to_owned();
    let env = [("KRB5_CONFIG", conf.as_str())];
    let ep =
        if https { Endpoint::start_https_env("server", &args, &env) } else { Endpoint::launch(&args, false, &env) };
    Setup { realm, ep, _users: users }
}

fn config(s: &Setup, mechanism: Mechanism, user: &str) -> ClientConfig {
    let url = s.ep.url.replace("127.0.0.1", "localhost");
    let mut cfg = ClientConfig::new("x", user, KRB_PASSWORD).with_url(&url).unwrap().with_mechanism(mechanism);
    cfg.kerberos = KerberosOptions { kdc: Some(s.realm.kdc.clone()), ..KerberosOptions::default() };
    if s.ep.is_https() {
        cfg.tls = TlsOptions { ca_file: s.ep.ca_file.clone(), ..TlsOptions::default() };
    }
    cfg
}

fn last_logon(ep: &Endpoint) -> serde_json::Value {
    let st: serde_json::Value = serde_json::from_str(&ep.state()).unwrap();
    st["logons"].as_array().and_then(|l| l.last().cloned()).expect("a logon was recorded")
}

fn echo(cfg: ClientConfig) -> psremote::Result<Client> {
    block_on(async move {
        let client = Client::connect(cfg).await?;
        let out = client.run_cmd("echo", &["kerberos-ok"]).await?;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "kerberos-ok");
        Ok(client)
    })
}

#[test]
fn kerberos_logs_on_and_seals_both_ways() {
    let s = setup(false, &["--auth", "kerberos,negotiate"]);
    let user = format!("{}\\user", s.realm.realm);
    let client = echo(config(&s, Mechanism::Kerberos, &user)).unwrap();
    let info = client.connection_info().unwrap();
    assert_eq!(info.negotiated, "kerberos");
    assert_eq!(info.encryption, EncryptionLayer::Message);
    let logon = last_logon(&s.ep);
    assert_eq!(logon["scheme"], "kerberos", "{logon}");
    assert_eq!(logon["mechanism"], "kerberos", "{logon}");
    // A PowerShell round trip bigger than one fragment: sealing holds for long bodies too.
    block_on(async {
        let pool = RunspacePool::open(&client, PoolConfig::default()).await.unwrap();
        let big = "k".repeat(200_000);
        let mut cmd = Command::new("Write-Output");
        cmd.parameters.push((Some("InputObject".into()), Value::Str(big.clone())));
        let r = pool.invoke(&PipelineSpec::command(cmd)).await.unwrap();
        assert_eq!(r.output, vec![Value::Str(big)]);
        pool.close().await.unwrap();
    });
    let st: serde_json::Value = serde_json::from_str(&s.ep.state()).unwrap();
    assert!(st["sealed_requests"].as_i64().unwrap() > 3, "{st}");
    assert_eq!(st["plain_requests"].as_i64(), Some(0), "{st}");
}

#[test]
fn negotiate_chooses_kerberos_and_needs_no_trusted_hosts() {
    let s = setup(false, &["--auth", "negotiate"]);
    // user@REALM is sent to MIT as a plain principal (sspi would send an enterprise name).
    let user = format!("user@{}", s.realm.realm);
    let client = echo(config(&s, Mechanism::Negotiate, &user)).unwrap();
    assert_eq!(client.connection_info().unwrap().negotiated, "kerberos");
    assert_eq!(last_logon(&s.ep)["mechanism"], "kerberos");
}

#[test]
fn the_kdc_may_be_reached_over_udp() {
    let s = setup(false, &["--auth", "kerberos"]);
    let user = format!("{}\\user", s.realm.realm);
    let mut cfg = config(&s, Mechanism::Kerberos, &user);
    cfg.kerberos.kdc = Some(format!("udp://{}", s.realm.kdc));
    echo(cfg).unwrap();
}

#[test]
fn wrong_passwords_and_unknown_services_are_refused() {
    let s = setup(false, &["--auth", "kerberos"]);
    let user = format!("{}\\user", s.realm.realm);
    let mut cfg = config(&s, Mechanism::Kerberos, &user);
    cfg.credentials = psremote::auth::Credentials::new(user.clone(), "Not-The-Password");
    let err = echo(cfg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    assert!(!err.to_string().contains("Not-The-Password"));

    // The KDC issues tickets for HTTP/elsewhere, but the endpoint has no key for it.
    let mut cfg = config(&s, Mechanism::Kerberos, &user);
    cfg.kerberos.hostname = Some("elsewhere".into());
    assert_eq!(echo(cfg).unwrap_err().kind(), ErrorKind::Authentication);

    // Other service classes the keytab holds are accepted.
    for service in ["WSMAN", "host"] {
        let mut cfg = config(&s, Mechanism::Kerberos, &user);
        cfg.kerberos.service = service.into();
        echo(cfg).unwrap_or_else(|e| panic!("{service}: {e}"));
    }
}

#[test]
fn negotiate_refuses_an_ntlm_fallback_the_policy_does_not_allow() {
    let s = setup(false, &["--auth", "negotiate"]);
    let user = format!("{}\\user", s.realm.realm);
    // No KDC answers on port 1.
    let mut cfg = config(&s, Mechanism::Negotiate, &user);
    cfg.kerberos.kdc = Some("tcp://127.0.0.1:1".into());
    let err = echo(cfg.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");
    eprintln!("no KDC, no NTLM: {err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&s.ep.state()).unwrap()["logons"].as_array().map(Vec::len),
        Some(0)
    );
    // With the host in trusted_hosts the fallback to NTLM is allowed, and reported.
    let client = echo(cfg.with_trusted_hosts(["localhost"])).unwrap();
    assert_eq!(client.connection_info().unwrap().negotiated, "ntlm");
    assert_eq!(last_logon(&s.ep)["mechanism"], "ntlm");

    // Towards an IP address Kerberos cannot work: refused before anything is sent.
    let mut cfg = config(&s, Mechanism::Negotiate, &user);
    cfg.host = "127.0.0.1".into();
    assert_eq!(echo(cfg).unwrap_err().kind(), ErrorKind::Policy);
}

#[test]
fn kerberos_over_https_sends_channel_bindings_mit_accepts() {
    // Without the AP-REQ repair MIT rejects every channel-bound AP-REQ sspi 0.23.1 builds
    // ("Invalid message type"): this is the regression test for it.
    let s = setup(true, &["--auth", "kerberos,negotiate", "--cbt", "strict"]);
    let user = format!("{}\\user", s.realm.realm);
    for mech in [Mechanism::Kerberos, Mechanism::Negotiate] {
        let client = echo(config(&s, mech, &user)).unwrap_or_else(|e| panic!("{mech:?}: {e}"));
        let info = client.connection_info().unwrap();
        assert!(info.channel_binding);
        assert_eq!(info.negotiated, "kerberos");
        assert_eq!(info.encryption, EncryptionLayer::Tls);
        let logon = last_logon(&s.ep);
        assert_eq!(logon["mechanism"], "kerberos", "{logon}");
        assert_eq!(logon["channel_binding"], "match", "{logon}");
    }
    // Message encryption inside TLS as well.
    let mut cfg = config(&s, Mechanism::Negotiate, &user);
    cfg.message_encryption = psremote::client::MessageEncryption::Always;
    let client = echo(cfg).unwrap();
    assert_eq!(client.connection_info().unwrap().encryption, EncryptionLayer::TlsAndMessage);
    // Both rewrites of the authenticator at once: channel binding and delegation.
    let mut cfg = config(&s, Mechanism::Kerberos, &user);
    cfg.kerberos.delegate = true;
    echo(cfg).unwrap();
    let logon = last_logon(&s.ep);
    assert_eq!((logon["channel_binding"].as_str(), logon["delegated"].as_bool()), (Some("match"), Some(true)));
    let _ = cert("ca.pem");
}

#[test]
fn delegation_hands_a_forwardable_ticket_to_the_server_only_when_asked() {
    let s = setup(false, &["--auth", "kerberos,negotiate"]);
    let user = format!("{}\\user", s.realm.realm);
    echo(config(&s, Mechanism::Kerberos, &user)).unwrap();
    let logon = last_logon(&s.ep);
    assert_eq!(logon["delegated"], false, "{logon}");

    for mech in [Mechanism::Kerberos, Mechanism::Negotiate] {
        let mut cfg = config(&s, mech, &user);
        cfg.kerberos.delegate = true;
        echo(cfg).unwrap_or_else(|e| panic!("{mech:?}: {e}"));
        let logon = last_logon(&s.ep);
        assert_eq!(logon["delegated"], true, "{mech:?}: {logon}");
        assert_eq!(logon["delegated_principal"], format!("user@{}", s.realm.realm), "{logon}");
    }
}

#[test]
fn a_server_that_does_not_prove_itself_is_refused() {
    // Mutual authentication: the endpoint accepts the AP-REQ but answers without its AP-REP.
    let s = setup(false, &["--auth", "kerberos,negotiate", "--misbehave", "no-final-token"]);
    let user = format!("{}\\user", s.realm.realm);
    for mech in [Mechanism::Kerberos, Mechanism::Negotiate] {
        let err = echo(config(&s, mech, &user)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Authentication, "{mech:?}: {err}");
        assert!(err.to_string().contains("without proving its identity"), "{err}");
    }
}
