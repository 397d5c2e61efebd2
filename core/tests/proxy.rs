//! Proxies between the client and the endpoint, started by each test on 127.0.0.1: tinyproxy
//! (HTTP CONNECT, with and without Basic authentication) and microsocks (SOCKS5, with and
//! without user/password; socks5 and socks5h), both from Debian. NTLM over HTTP (sealed), NTLM
//! and Kerberos over HTTPS with channel binding run through the tunnels unchanged; the
//! connection info and the audit `connect` event name the proxy without its credentials.
//! Misbehaving proxies (refusing, closing, 407 forever, garbage, silent) are a small fake
//! here: each gives a typed error naming the proxy, and none hangs.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Endpoint, Realm, TempDir, block_on, ntlm_config, stop_child};
use psremote::client::{Client, ClientConfig, EncryptionLayer, KerberosOptions, Mechanism, TlsOptions};
use psremote::proxy::{ProxyCredentials, ProxyFailure};
use psremote::{Error, ErrorKind};

const PROXY_USER: &str = "proxyuser";
const PROXY_PASS: &str = "s3cret-proxy-pass";
const SOCKS_USER: &str = "sockuser";
const SOCKS_PASS: &str = "s0ck pass:x";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A real proxy process, stopped on drop.
struct Proxyd {
    child: Child,
    port: u16,
    log: PathBuf,
    stopped: bool,
    _dir: TempDir,
}

impl Proxyd {
    /// tinyproxy on a free port; `auth` adds `BasicAuth`.
    fn tinyproxy(auth: bool) -> Self {
        let dir = TempDir::new("tinyproxy");
        let port = free_port();
        let mut conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 50\nLogLevel Info\nAllow 127.0.0.1\n\
             DisableViaHeader Yes\n"
        );
        if auth {
            conf.push_str(&format!("BasicAuth {PROXY_USER} {PROXY_PASS}\n"));
        }
        let conf_path = dir.0.join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let log = dir.0.join("tinyproxy.log");
        let mut cmd = Command::new("tinyproxy");
        cmd.arg("-d").arg("-c").arg(&conf_path);
        Self::spawn(cmd, dir, port, log, true)
    }

    /// microsocks on a free port; `auth` sets a user and password.
    fn microsocks(auth: bool) -> Self {
        let dir = TempDir::new("microsocks");
        let port = free_port();
        let mut cmd = Command::new("microsocks");
        cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()]);
        if auth {
            cmd.args(["-u", SOCKS_USER, "-P", SOCKS_PASS]);
        }
        let log = dir.0.join("microsocks.log");
        Self::spawn(cmd, dir, port, log, false)
    }

    fn spawn(mut cmd: Command, dir: TempDir, port: u16, log: PathBuf, log_is_stdout: bool) -> Self {
        let file = std::fs::File::create(&log).unwrap();
        let (out, err) =
            if log_is_stdout { (Stdio::from(file), Stdio::null()) } else { (Stdio::null(), Stdio::from(file)) };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("start the proxy (make test installs tinyproxy-bin and microsocks)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the proxy exited at start ({status}): {}", std::fs::read_to_string(&log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "the proxy did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Proxyd { child, port, log, stopped: false, _dir: dir }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Stops the proxy and returns its log (tinyproxy flushes its log on exit).
    fn stop(&mut self) -> String {
        stop_child(&mut self.child);
        self.stopped = true;
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl Drop for Proxyd {
    fn drop(&mut self) {
        if !self.stopped {
            stop_child(&mut self.child);
        }
    }
}

fn echo(cfg: ClientConfig) -> psremote::Result<Client> {
    block_on(async move {
        let client = Client::connect(cfg).await?;
        let out = client.run_cmd("echo", &["through-the-proxy"]).await?;
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "through-the-proxy");
        Ok(client)
    })
}

fn last_logon(ep: &Endpoint) -> serde_json::Value {
    let st: serde_json::Value = serde_json::from_str(&ep.state()).unwrap();
    st["logons"].as_array().and_then(|l| l.last().cloned()).expect("a logon was recorded")
}

fn https_config(ep: &Endpoint, host: &str, mechanism: Mechanism) -> ClientConfig {
    ClientConfig::new("x", common::DOMAIN_USER, common::PASSWORD)
        .with_url(&ep.url.replace("127.0.0.1", host))
        .unwrap()
        .with_mechanism(mechanism)
        .with_tls(TlsOptions { ca_file: ep.ca_file.clone(), ..TlsOptions::default() })
}

fn with_proxy(mut cfg: ClientConfig, url: &str) -> ClientConfig {
    cfg.ignore_proxy = true;
    cfg.with_proxy(url).unwrap()
}

fn proxy_failure(err: &Error) -> &ProxyFailure {
    match err {
        Error::Proxy { failure, .. } => failure,
        other => panic!("expected a proxy error, got {other:?}"),
    }
}

/// The audit `connect` events captured so far that name `proxy`.
fn audit_connects_through(proxy: &str) -> usize {
    common::capture::capture()
        .text()
        .lines()
        .filter(|l| {
            l.contains("psremote::audit") && l.contains("event=connect") && l.contains(&format!("proxy={proxy}"))
        })
        .count()
}

fn assert_no_proxy_secret_logged() {
    let text = common::capture::capture().text();
    for secret in [PROXY_PASS, SOCKS_PASS, "czNjcmV0", "c3NjcmV0"] {
        assert!(!text.contains(secret), "a proxy secret reached the log");
    }
}

#[test]
fn ntlm_over_http_is_sealed_through_tinyproxy() {
    common::capture::capture();
    let ep = Endpoint::start(&[]);
    let mut proxy = Proxyd::tinyproxy(false);
    let url = proxy.url("http");
    let client = echo(with_proxy(ntlm_config(&ep), &url)).unwrap();
    let info = client.connection_info().unwrap();
    assert_eq!(info.proxy.as_deref(), Some(url.as_str()));
    assert_eq!(info.encryption, EncryptionLayer::Message);
    assert_eq!(info.negotiated, "ntlm");
    drop(client);
    assert!(audit_connects_through(&url) >= 1);
    let log = proxy.stop();
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{}", ep.port)), "{log}");
}

#[test]
fn tinyproxy_with_basic_auth_takes_the_credentials_from_the_url_or_apart() {
    common::capture::capture();
    let ep = Endpoint::start(&[]);
    let proxy = Proxyd::tinyproxy(true);
    let plain = proxy.url("http");
    let in_url = format!("http://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{}", proxy.port);
    let client = echo(with_proxy(ntlm_config(&ep), &in_url)).unwrap();
    assert_eq!(client.connection_info().unwrap().proxy.as_deref(), Some(plain.as_str()));
    drop(client);

    let mut cfg = with_proxy(ntlm_config(&ep), &plain);
    cfg.proxy_credentials = Some(ProxyCredentials::new(PROXY_USER, PROXY_PASS));
    echo(cfg).unwrap();

    // No credentials: tinyproxy's 407. A wrong password: its 401, read as the proxy's refusal.
    let err = echo(with_proxy(ntlm_config(&ep), &plain)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Proxy);
    assert_eq!(proxy_failure(&err), &ProxyFailure::Authentication { had_credentials: false, status: Some(407) });
    assert!(err.to_string().contains(&plain), "{err}");
    let mut cfg = with_proxy(ntlm_config(&ep), &plain);
    cfg.proxy_credentials = Some(ProxyCredentials::new(PROXY_USER, "wrong-pass"));
    let err = echo(cfg).unwrap_err();
    assert_eq!(proxy_failure(&err), &ProxyFailure::Authentication { had_credentials: true, status: Some(401) });
    assert!(!err.to_string().contains("wrong-pass") && !format!("{err:?}").contains("wrong-pass"));
    assert_no_proxy_secret_logged();
}

#[test]
fn ntlm_over_https_binds_the_channel_through_connect() {
    let ep = Endpoint::start_https("server", &["--cbt", "strict"]);
    let proxy = Proxyd::tinyproxy(true);
    let url = format!("http://{PROXY_USER}:{PROXY_PASS}@127.0.0.1:{}", proxy.port);
    let client = echo(with_proxy(https_config(&ep, "127.0.0.1", Mechanism::Ntlm), &url)).unwrap();
    let info = client.connection_info().unwrap();
    assert_eq!(info.encryption, EncryptionLayer::Tls);
    assert!(info.channel_binding);
    assert_eq!(info.proxy, Some(proxy.url("http")));
    assert_eq!(last_logon(&ep)["channel_binding"], "match");
}

#[test]
fn ntlm_over_https_through_socks5h_with_a_logon() {
    let ep = Endpoint::start_https("server", &["--cbt", "strict"]);
    let mut proxy = Proxyd::microsocks(true);
    let url = format!(
        "socks5h://{SOCKS_USER}:{}@127.0.0.1:{}",
        SOCKS_PASS.replace(' ', "%20").replace(':', "%3A"),
        proxy.port
    );
    let client = echo(with_proxy(https_config(&ep, "localhost", Mechanism::Ntlm), &url)).unwrap();
    let info = client.connection_info().unwrap();
    assert!(info.channel_binding);
    assert_eq!(info.proxy, Some(proxy.url("socks5h")));
    assert_eq!(last_logon(&ep)["channel_binding"], "match");
    drop(client);
    // socks5h sends the name: microsocks logs what it was asked to reach.
    let log = proxy.stop();
    assert!(log.contains(&format!("connected to localhost:{}", ep.port)), "{log}");
}

#[test]
fn socks5_sends_addresses_and_resolves_names_here() {
    let ep = Endpoint::start(&[]);
    let mut proxy = Proxyd::microsocks(false);
    let url = proxy.url("socks5");
    let client = echo(with_proxy(ntlm_config(&ep), &url)).unwrap();
    assert_eq!(client.connection_info().unwrap().encryption, EncryptionLayer::Message);
    drop(client);
    // A name is resolved by the client: the proxy sees an address, never "localhost".
    let named = ntlm_config(&ep).with_url(&ep.url.replace("127.0.0.1", "localhost")).unwrap();
    echo(with_proxy(named.with_trusted_hosts(["localhost"]), &url)).unwrap();
    let log = proxy.stop();
    assert!(log.contains(&format!("connected to 127.0.0.1:{}", ep.port)), "{log}");
    assert!(!log.contains("connected to localhost"), "{log}");
}

#[test]
fn socks5_with_a_logon_and_wrong_or_missing_credentials() {
    common::capture::capture();
    let ep = Endpoint::start(&[]);
    let proxy = Proxyd::microsocks(true);
    let plain = proxy.url("socks5");
    let mut cfg = with_proxy(ntlm_config(&ep), &plain);
    cfg.proxy_credentials = Some(ProxyCredentials::new(SOCKS_USER, SOCKS_PASS));
    let client = echo(cfg).unwrap();
    assert_eq!(client.connection_info().unwrap().proxy, Some(plain.clone()));
    drop(client);

    let err = echo(with_proxy(ntlm_config(&ep), &plain)).unwrap_err();
    assert_eq!(proxy_failure(&err), &ProxyFailure::Authentication { had_credentials: false, status: None });
    let mut cfg = with_proxy(ntlm_config(&ep), &plain);
    cfg.proxy_credentials = Some(ProxyCredentials::new(SOCKS_USER, "wrong"));
    let err = echo(cfg).unwrap_err();
    assert_eq!(proxy_failure(&err), &ProxyFailure::Authentication { had_credentials: true, status: None });
    assert!(err.to_string().contains(&plain), "{err}");
    assert_no_proxy_secret_logged();
}

#[test]
fn kerberos_over_https_through_connect_and_socks5h() {
    let realm = Realm::start();
    let users = TempDir::new("krb-users");
    let users_file = users.0.join("users");
    std::fs::write(&users_file, format!("{}:user:{}\n", realm.realm, common::PASSWORD)).unwrap();
    let keytab = realm.keytab.to_str().unwrap().to_owned();
    let conf = realm.krb5_conf.to_str().unwrap().to_owned();
    let ep = Endpoint::start_https_env(
        "server",
        &["--users", users_file.to_str().unwrap(), "--keytab", &keytab, "--auth", "kerberos,negotiate"],
        &[("KRB5_CONFIG", conf.as_str())],
    );
    let tiny = Proxyd::tinyproxy(false);
    let mut socks = Proxyd::microsocks(false);
    for proxy in [tiny.url("http"), socks.url("socks5h")] {
        let mut cfg = ClientConfig::new("x", format!("{}\\user", realm.realm), common::PASSWORD)
            .with_url(&ep.url.replace("127.0.0.1", "localhost"))
            .unwrap()
            .with_mechanism(Mechanism::Kerberos)
            .with_tls(TlsOptions { ca_file: ep.ca_file.clone(), ..TlsOptions::default() });
        cfg.kerberos = KerberosOptions { kdc: Some(realm.kdc.clone()), ..KerberosOptions::default() };
        let client = echo(with_proxy(cfg, &proxy)).unwrap();
        let info = client.connection_info().unwrap();
        assert_eq!((info.negotiated, info.channel_binding), ("kerberos", true), "{proxy}");
        assert_eq!(info.proxy, Some(proxy.clone()));
        let logon = last_logon(&ep);
        assert_eq!((logon["mechanism"].as_str(), logon["channel_binding"].as_str()), (Some("kerberos"), Some("match")));
    }
    let log = socks.stop();
    assert!(log.contains(&format!("connected to localhost:{}", ep.port)), "{log}");
}

#[test]
fn a_proxy_from_the_environment_is_used_unless_ignored_or_bypassed() {
    let ep = Endpoint::start(&[]);
    let proxy = Proxyd::tinyproxy(false);
    let url = proxy.url("http");
    let env = |no_proxy: &'static str| {
        let url = url.clone();
        move |name: &str| match name {
            "http_proxy" => Some(url.clone()),
            "no_proxy" => Some(no_proxy.to_owned()),
            _ => None,
        }
    };
    let mut cfg = ntlm_config(&ep);
    cfg.proxy = cfg.resolve_proxy_with(&env("")).unwrap();
    assert_eq!(cfg.proxy.as_ref().map(|p| p.url()), Some(url.clone()));
    cfg.ignore_proxy = true;
    let client = echo(cfg).unwrap();
    assert_eq!(client.connection_info().unwrap().proxy, Some(url.clone()));
    drop(client);

    let mut cfg = ntlm_config(&ep);
    assert_eq!(cfg.resolve_proxy_with(&env("127.0.0.0/8")).unwrap(), None);
    cfg.ignore_proxy = true;
    assert_eq!(cfg.resolve_proxy_with(&env("")).unwrap(), None);
    // An explicit proxy ignores no_proxy.
    let cfg = ntlm_config(&ep).with_proxy(&url).unwrap();
    assert_eq!(cfg.resolve_proxy_with(&env("*")).unwrap().map(|p| p.url()), Some(url.clone()));
}

#[test]
fn a_real_proxy_refusing_the_tunnel_names_itself_and_the_status() {
    let dead = free_port();
    let tiny = Proxyd::tinyproxy(false);
    let cfg = ClientConfig::new("x", common::DOMAIN_USER, common::PASSWORD)
        .with_url(&format!("http://127.0.0.1:{dead}/wsman"))
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm);
    let err = echo(with_proxy(cfg.clone(), &tiny.url("http"))).unwrap_err();
    assert!(matches!(proxy_failure(&err), ProxyFailure::Refused { status: Some(500), .. }), "{err}");
    assert!(err.to_string().contains(&tiny.url("http")) && err.to_string().contains(&format!("127.0.0.1:{dead}")));

    let socks = Proxyd::microsocks(false);
    let err = echo(with_proxy(cfg, &socks.url("socks5"))).unwrap_err();
    assert_eq!(
        proxy_failure(&err),
        &ProxyFailure::Refused {
            target: format!("127.0.0.1:{dead}"),
            status: Some(5),
            reason: "connection refused".into()
        }
    );
}

#[test]
fn an_unreachable_proxy_is_a_proxy_error() {
    let ep = Endpoint::start(&[]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let err = echo(with_proxy(ntlm_config(&ep), &dead)).unwrap_err();
    assert!(matches!(proxy_failure(&err), ProxyFailure::Unreachable { .. }), "{err}");
    assert!(err.to_string().starts_with(&format!("proxy {dead}: cannot connect to the proxy")), "{err}");
    assert!(err.is_connect_failure());
}

// ---- misbehaving proxies -------------------------------------------------------------------

/// A fake proxy on a free port: each connection is handed to `serve` on a thread of its own.
struct Fake {
    port: u16,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

fn fake(serve: fn(TcpStream, &AtomicUsize)) -> Fake {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (c, r) = (connections.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            std::thread::spawn(move || serve(stream, &r));
        }
    });
    Fake { port, connections, requests }
}

/// Reads one request head (up to the blank line); false at end of stream.
fn read_head(s: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return false,
        }
    }
    true
}

/// Waits until the client closes.
fn until_closed(mut s: TcpStream) {
    let mut sink = [0u8; 512];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

fn fake_error(serve: fn(TcpStream, &AtomicUsize), scheme: &str, credentials: bool) -> (Error, Fake) {
    let ep_port = free_port();
    let f = fake(serve);
    let user = if credentials { "u:p@" } else { "" };
    let mut cfg = ClientConfig::new("x", common::DOMAIN_USER, common::PASSWORD)
        .with_url(&format!("http://127.0.0.1:{ep_port}/wsman"))
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(Mechanism::Ntlm);
    cfg.connect_timeout = Duration::from_secs(3);
    let err = echo(with_proxy(cfg, &format!("{scheme}://{user}127.0.0.1:{}", f.port))).unwrap_err();
    assert!(err.to_string().contains(&format!("127.0.0.1:{}", f.port)), "{err}");
    (err, f)
}

#[test]
fn a_proxy_closing_at_once_or_after_opening_the_tunnel() {
    let (err, _) = fake_error(|s, _| drop(s), "http", false);
    assert_eq!(proxy_failure(&err), &ProxyFailure::Closed);
    let (err, _) = fake_error(|s, _| drop(s), "socks5", false);
    assert_eq!(proxy_failure(&err), &ProxyFailure::Closed);
    // The tunnel opens, then closes before the server says anything.
    let (err, _) = fake_error(
        |mut s, _| {
            if read_head(&mut s) {
                let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n");
            }
        },
        "http",
        false,
    );
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.to_string().contains("through the proxy http://127.0.0.1:"), "{err}");
}

#[test]
fn a_proxy_answering_407_forever_is_asked_once() {
    let serve: fn(TcpStream, &AtomicUsize) = |mut s, requests| {
        while read_head(&mut s) {
            requests.fetch_add(1, Ordering::SeqCst);
            let reply = b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\
                          Content-Length: 0\r\nConnection: keep-alive\r\n\r\n";
            if s.write_all(reply).is_err() {
                return;
            }
        }
    };
    for credentials in [false, true] {
        let (err, f) = fake_error(serve, "http", credentials);
        assert_eq!(
            proxy_failure(&err),
            &ProxyFailure::Authentication { had_credentials: credentials, status: Some(407) }
        );
        assert_eq!(f.requests.load(Ordering::SeqCst), f.connections.load(Ordering::SeqCst));
        assert_eq!(f.connections.load(Ordering::SeqCst), 1);
    }
}

#[test]
fn a_proxy_speaking_garbage_is_a_protocol_error() {
    let cases: [fn(TcpStream, &AtomicUsize); 3] = [
        |mut s, _| {
            if read_head(&mut s) {
                let _ = s.write_all(b"garbage\r\n\r\n");
                until_closed(s);
            }
        },
        |mut s, _| {
            // A head that never ends.
            if read_head(&mut s) && s.write_all(b"HTTP/1.1 200 OK\r\n").is_ok() {
                while s.write_all(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n").is_ok() {}
            }
        },
        |mut s, _| {
            // Bytes after the tunnel opened, before the server could have spoken.
            if read_head(&mut s) {
                let _ = s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-OpenSSH_9.2\r\n");
                until_closed(s);
            }
        },
    ];
    for serve in cases {
        let (err, _) = fake_error(serve, "http", false);
        assert!(matches!(proxy_failure(&err), ProxyFailure::Protocol(_)), "{err}");
    }
    let socks: [fn(TcpStream, &AtomicUsize); 2] = [
        |mut s, _| {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
            until_closed(s);
        },
        |mut s, _| {
            let mut greeting = [0u8; 3];
            if s.read_exact(&mut greeting).is_ok() {
                let _ = s.write_all(&[5, 2]);
                until_closed(s);
            }
        },
    ];
    for serve in socks {
        let (err, _) = fake_error(serve, "socks5", false);
        assert!(matches!(proxy_failure(&err), ProxyFailure::Protocol(_)), "{err}");
    }
}

#[test]
fn a_silent_proxy_is_bounded_by_the_connect_timeout() {
    for scheme in ["http", "socks5h"] {
        let (err, _) = fake_error(
            |s, _| {
                until_closed(s);
            },
            scheme,
            false,
        );
        assert_eq!(proxy_failure(&err), &ProxyFailure::Timeout { millis: 3000 });
    }
}

#[test]
fn credssp_over_http_and_https_through_the_proxies() {
    let plain = Endpoint::start(&["--auth", "credssp,ntlm"]);
    let tls = Endpoint::start_https("server", &["--auth", "credssp,ntlm"]);
    let tiny = Proxyd::tinyproxy(false);
    let socks = Proxyd::microsocks(false);
    for proxy in [tiny.url("http"), socks.url("socks5")] {
        let cfg = ntlm_config(&plain).with_mechanism(Mechanism::CredSsp);
        let client = echo(with_proxy(cfg, &proxy)).unwrap();
        let info = client.connection_info().unwrap();
        assert_eq!((info.encryption, info.proxy.as_deref()), (EncryptionLayer::Message, Some(proxy.as_str())));
        let logon = last_logon(&plain);
        assert_eq!((logon["scheme"].as_str(), logon["credssp_password_ok"].as_bool()), (Some("credssp"), Some(true)));

        let client = echo(with_proxy(https_config(&tls, "127.0.0.1", Mechanism::CredSsp), &proxy)).unwrap();
        assert_eq!(client.connection_info().unwrap().encryption, EncryptionLayer::Tls);
        assert_eq!(last_logon(&tls)["credssp_password_ok"], true);
    }
}
