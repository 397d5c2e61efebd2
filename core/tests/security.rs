//! The security rules against the loopback endpoint: HTTPS verification (CA, name, pins, TLS
//! versions), channel binding checked by the endpoint's pyspnego acceptor, the NTLM and Basic
//! policy, message encryption inside TLS, client certificates. One test per rule and refusal.

mod common;

use common::{DOMAIN_USER, Endpoint, PASSWORD, block_on, cert};
use psremote::ErrorKind;
use psremote::client::{
    Client, ClientCertificate, ClientConfig, EncryptionLayer, Mechanism, MessageEncryption, TlsOptions, TlsVersion,
    parse_pin,
};

fn state_json(ep: &Endpoint) -> serde_json::Value {
    serde_json::from_str(&ep.state()).expect("state is JSON")
}

fn last_logon(ep: &Endpoint) -> serde_json::Value {
    state_json(ep)["logons"].as_array().and_then(|l| l.last().cloned()).expect("a logon was recorded")
}

fn https_config(ep: &Endpoint, mechanism: Mechanism) -> ClientConfig {
    ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_mechanism(mechanism)
        .with_tls(TlsOptions { ca_file: ep.ca_file.clone(), ..TlsOptions::default() })
}

fn run_echo(cfg: ClientConfig) -> psremote::Result<(String, Client)> {
    block_on(async move {
        let client = Client::connect(cfg).await?;
        let out = client.run_cmd("echo", &["over-tls"]).await?;
        Ok((String::from_utf8_lossy(&out.stdout).into_owned(), client))
    })
}

#[test]
fn ntlm_over_verified_https_needs_no_trusted_hosts_and_sends_channel_binding() {
    let ep = Endpoint::start_https("server", &["--cbt", "strict"]);
    let (out, client) = run_echo(https_config(&ep, Mechanism::Ntlm)).unwrap();
    assert_eq!(out.trim(), "over-tls");
    let info = client.connection_info().unwrap();
    assert_eq!(info.encryption, EncryptionLayer::Tls);
    assert!(info.channel_binding);
    let tls = info.tls.unwrap();
    assert_eq!(tls.certificate_sha256.len(), 64);
    let logon = last_logon(&ep);
    assert_eq!(logon["channel_binding"], "match", "{logon}");
    assert_eq!(logon["tls"], tls.version.name(), "{logon}");
}

#[test]
fn channel_binding_hash_follows_the_certificate_signature() {
    // server-sha384.pem is signed with sha384WithRSAEncryption: the binding must use SHA-384,
    // and the strict endpoint refuses a SHA-256 one.
    let ep = Endpoint::start_https("server-sha384", &["--cbt", "strict"]);
    let (out, _) = run_echo(https_config(&ep, Mechanism::Negotiate)).unwrap();
    assert_eq!(out.trim(), "over-tls");
    assert_eq!(last_logon(&ep)["channel_binding"], "match");
}

#[test]
fn an_untrusted_issuer_is_refused_with_host_and_reason() {
    let ep = Endpoint::start_https("untrusted", &[]);
    let err = run_echo(https_config(&ep, Mechanism::Ntlm)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&format!("127.0.0.1:{}", ep.port)), "{msg}");
    assert!(msg.contains("not issued by a trusted CA"), "{msg}");
}

#[test]
fn a_certificate_for_another_name_is_refused_unless_server_name_says_so() {
    let ep = Endpoint::start_https("wrong-host", &[]);
    let err = run_echo(https_config(&ep, Mechanism::Ntlm)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("not valid for the name \"127.0.0.1\""), "{err}");

    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls.server_name = Some("elsewhere.test".into());
    assert_eq!(run_echo(cfg).unwrap().0.trim(), "over-tls");
}

#[test]
fn pins_must_match_the_public_key() {
    let ep = Endpoint::start_https("server", &[]);
    let good = spki_pin_of(&cert("server.pem"));
    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls.pinned_spki_sha256 = vec![parse_pin(&good).unwrap()];
    assert!(run_echo(cfg).is_ok());

    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls.pinned_spki_sha256 = vec![[7u8; 32]];
    let err = run_echo(cfg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls);
    assert!(err.to_string().contains("matches none of the pinned keys"), "{err}");

    // A pin alone (no CA) proves the server too, so NTLM needs no trusted_hosts.
    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls = TlsOptions {
        insecure_skip_verify: true,
        pinned_spki_sha256: vec![parse_pin(&good).unwrap()],
        ..TlsOptions::default()
    };
    assert!(run_echo(cfg).is_ok());
}

/// The SHA-256 of the certificate's SubjectPublicKeyInfo, computed by openssl-free means: the
/// endpoint's certificate tool reports it.
fn spki_pin_of(path: &std::path::Path) -> String {
    let out = std::process::Command::new(common::python_path())
        .args([
            "-c",
            "import sys,hashlib;from cryptography import x509;from cryptography.hazmat.primitives import \
             serialization as s;c=x509.load_pem_x509_certificate(open(sys.argv[1],'rb').read());\
             print(hashlib.sha256(c.public_key().public_bytes(s.Encoding.DER,s.PublicFormat.SubjectPublicKeyInfo)).hexdigest())",
        ])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn skipping_verification_leaves_ntlm_to_trusted_hosts() {
    let ep = Endpoint::start_https("untrusted", &[]);
    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls = TlsOptions { insecure_skip_verify: true, ..TlsOptions::default() };
    let err = run_echo(cfg.clone()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
    let cfg = cfg.with_trusted_hosts(["127.0.0.1"]);
    assert_eq!(run_echo(cfg).unwrap().0.trim(), "over-tls");
}

#[test]
fn tls_versions_are_negotiated_and_limits_hold() {
    let ep = Endpoint::start_https("server", &["--tls-max", "1.2"]);
    let (_, client) = run_echo(https_config(&ep, Mechanism::Ntlm)).unwrap();
    assert_eq!(client.connection_info().unwrap().tls.unwrap().version, TlsVersion::Tls12);
    assert_eq!(last_logon(&ep)["tls"], "TLSv1.2");

    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls.min_version = Some(TlsVersion::Tls13);
    assert_eq!(run_echo(cfg).unwrap_err().kind(), ErrorKind::Tls);
}

#[test]
fn basic_is_accepted_over_https_and_refused_over_http() {
    let ep = Endpoint::start_https("server", &[]);
    let (out, client) = run_echo(https_config(&ep, Mechanism::Basic)).unwrap();
    assert_eq!(out.trim(), "over-tls");
    assert_eq!(client.connection_info().unwrap().encryption, EncryptionLayer::Tls);

    let http = Endpoint::start(&[]);
    let cfg =
        ClientConfig::new("x", DOMAIN_USER, PASSWORD).with_url(&http.url).unwrap().with_mechanism(Mechanism::Basic);
    let err = run_echo(cfg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Policy);
    assert!(err.to_string().contains("https"), "{err}");
}

#[test]
fn ntlm_over_http_needs_the_host_in_trusted_hosts() {
    let ep = Endpoint::start(&[]);
    for mech in [Mechanism::Ntlm, Mechanism::Negotiate] {
        let cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD).with_url(&ep.url).unwrap().with_mechanism(mech);
        let err = run_echo(cfg.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Policy, "{err}");
        let msg = err.to_string();
        for way in ["Kerberos", "HTTPS", "trusted_hosts"] {
            assert!(msg.contains(way), "{msg} should name {way}");
        }
        assert!(run_echo(cfg.clone().with_trusted_hosts(["127.0.0.*"])).is_ok());
        assert_eq!(run_echo(cfg.with_trusted_hosts(["10.*", "*.example"])).unwrap_err().kind(), ErrorKind::Policy);
    }
    // Nothing was sent for the refused attempts: only the two accepted logons reached the server.
    assert_eq!(state_json(&ep)["logons"].as_array().map(Vec::len), Some(2));
}

#[test]
fn message_encryption_always_seals_inside_tls() {
    let ep = Endpoint::start_https("server", &[]);
    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.message_encryption = MessageEncryption::Always;
    let (out, client) = run_echo(cfg).unwrap();
    assert_eq!(out.trim(), "over-tls");
    assert_eq!(client.connection_info().unwrap().encryption, EncryptionLayer::TlsAndMessage);
    let st = state_json(&ep);
    assert!(st["sealed_requests"].as_i64().unwrap() > 0, "{st}");
}

fn cert_config(ep: &Endpoint, cert_name: &str, key_name: &str, password: Option<&str>) -> ClientConfig {
    let mut cfg = https_config(ep, Mechanism::Certificate);
    cfg.tls.client_certificate = Some(ClientCertificate {
        certificate: cert(cert_name),
        key: cert(key_name),
        key_password: password.map(|p| p.to_owned().into()),
    });
    cfg
}

#[test]
fn client_certificates_authenticate_when_mapped() {
    let ca = cert("ca.pem");
    let ep = Endpoint::start_https("server", &["--client-ca", ca.to_str().unwrap(), "--auth", "certificate,ntlm"]);
    let (out, _) = run_echo(cert_config(&ep, "client.pem", "client-key.pem", None)).unwrap();
    assert_eq!(out.trim(), "over-tls");
    let logon = last_logon(&ep);
    assert_eq!(logon["scheme"], "certificate", "{logon}");

    let (out, _) = run_echo(cert_config(&ep, "client.pem", "client-key-encrypted.pem", Some("keypass"))).unwrap();
    assert_eq!(out.trim(), "over-tls");

    let err = run_echo(cert_config(&ep, "client-unmapped.pem", "client-unmapped-key.pem", None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Authentication, "{err}");

    let err = run_echo(cert_config(&ep, "client.pem", "client-key-encrypted.pem", Some("Wrong-Key-Pass"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(!err.to_string().contains("Wrong-Key-Pass"), "{err}");
    assert!(!format!("{err:?}").contains("Wrong-Key-Pass"), "{err:?}");

    let err = run_echo(cert_config(&ep, "client.pem", "client-key-encrypted.pem", None)).unwrap_err();
    assert!(err.to_string().contains("password"), "{err}");

    // A certificate from a CA the server does not trust: the server's TLS alert is a TLS error.
    let err = run_echo(cert_config(&ep, "client-foreign.pem", "client-foreign-key.pem", None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Tls, "{err}");
    assert!(err.to_string().contains("refused the client certificate"), "{err}");
}

#[test]
fn sealing_needs_a_mechanism_with_keys() {
    let ep = Endpoint::start_https("server", &[]);
    let mut cfg = https_config(&ep, Mechanism::Basic);
    cfg.message_encryption = MessageEncryption::Always;
    let err = run_echo(cfg).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
}

#[test]
fn certificate_authentication_needs_https() {
    let ep = Endpoint::start(&[]);
    let mut cfg = ClientConfig::new("x", DOMAIN_USER, PASSWORD).with_url(&ep.url).unwrap();
    cfg.mechanism = Mechanism::Certificate;
    assert_eq!(run_echo(cfg).unwrap_err().kind(), ErrorKind::Policy);
}

#[test]
fn a_ca_folder_is_a_trust_store_too() {
    let ep = Endpoint::start_https("server", &[]);
    let dir = common::TempDir::new("ca-dir");
    std::fs::copy(cert("ca.pem"), dir.0.join("test-ca.pem")).unwrap();
    std::fs::write(dir.0.join("README"), "not a certificate").unwrap();
    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls = TlsOptions { ca_dir: Some(dir.0.clone()), ..TlsOptions::default() };
    assert_eq!(run_echo(cfg).unwrap().0.trim(), "over-tls");

    // A folder with only the other CA does not vouch for the server.
    let other = common::TempDir::new("ca-dir-other");
    std::fs::copy(cert("other-ca.pem"), other.0.join("other.pem")).unwrap();
    let mut cfg = https_config(&ep, Mechanism::Ntlm);
    cfg.tls = TlsOptions { ca_dir: Some(other.0.clone()), ..TlsOptions::default() };
    assert_eq!(run_echo(cfg).unwrap_err().kind(), ErrorKind::Tls);
}
