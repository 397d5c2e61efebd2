//! Starts the loopback WinRM endpoint (`python -m psremote_testserver`) for a test and stops it
//! when the handle drops.

#![allow(dead_code)]

pub mod capture;
pub mod transcripts;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const USER: &str = "user";
pub const DOMAIN_USER: &str = "DOMAIN\\user";
pub const PASSWORD: &str = "Passw0rd!";

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn python_path() -> PathBuf {
    python()
}

fn python() -> PathBuf {
    match std::env::var_os("PSREMOTE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => workspace_root().join(".venv/bin/python"),
    }
}

pub struct Endpoint {
    child: Child,
    pub url: String,
    pub port: u16,
    _dir: TempDir,
    pub capture: Option<PathBuf>,
    /// The CA that signed the endpoint's certificate, for https endpoints.
    pub ca_file: Option<PathBuf>,
}

/// Test certificates made once per test binary by `python -m psremote_testserver.certs`.
pub fn certs() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("psremote-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new(python())
            .args(["-m", "psremote_testserver.certs"])
            .arg(&dir)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .output()
            .expect("run psremote_testserver.certs");
        assert!(out.status.success(), "certificate generation failed: {}", String::from_utf8_lossy(&out.stderr));
        dir
    })
}

/// A file in the test certificate folder.
pub fn cert(name: &str) -> PathBuf {
    certs().join(name)
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("psremote-{tag}-{}-{}", std::process::id(), uuid_like()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> u128 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    t ^ u128::from(N.fetch_add(1, Ordering::Relaxed))
}

impl Endpoint {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(extra, false)
    }

    /// An https endpoint serving `cert_name` (e.g. `server`: server.pem and server-key.pem).
    pub fn start_https(cert_name: &str, extra: &[&str]) -> Self {
        Self::start_https_env(cert_name, extra, &[])
    }

    /// [`Endpoint::start_https`] with environment variables.
    pub fn start_https_env(cert_name: &str, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let certificate = cert(&format!("{cert_name}.pem"));
        let key = cert(&format!("{cert_name}-key.pem"));
        let mut args: Vec<&str> = vec!["--tls-cert", certificate.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut ep = Self::launch(&args, false, env);
        ep.ca_file = Some(cert("ca.pem"));
        ep
    }

    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }

    pub fn start_with(extra: &[&str], capture: bool) -> Self {
        Self::launch(extra, capture, &[])
    }

    /// Starts the endpoint with extra arguments and environment variables.
    pub fn launch(extra: &[&str], capture: bool, env: &[(&str, &str)]) -> Self {
        let dir = TempDir::new("endpoint");
        let users = dir.0.join("users");
        std::fs::write(&users, format!("DOMAIN:{USER}:{PASSWORD}\n")).unwrap();
        let mut cmd = Command::new(python());
        cmd.args(["-m", "psremote_testserver", "--port", "0", "--control", "--users"])
            .arg(&users)
            .args(extra)
            .envs(env.iter().copied())
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let capture_dir = if capture {
            let c = dir.0.join("capture");
            std::fs::create_dir_all(&c).unwrap();
            cmd.arg("--capture").arg(&c);
            Some(c)
        } else {
            None
        };
        let mut child = cmd.spawn().expect("start the loopback endpoint (run `make venv` first)");
        let url = first_line(&mut child, Duration::from_secs(30), "the endpoint");
        let rest = url
            .strip_prefix("http://127.0.0.1:")
            .or_else(|| url.strip_prefix("https://127.0.0.1:"))
            .unwrap_or_else(|| panic!("unexpected endpoint line {url:?}"));
        let port: u16 = rest.split('/').next().unwrap().parse().unwrap();
        Endpoint { child, url, port, _dir: dir, capture: capture_dir, ca_file: None }
    }

    /// The endpoint's `/_control/state` counters.
    pub fn state(&self) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let request = "GET /_control/state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let mut resp = String::new();
        if self.is_https() {
            let mut tls = tls_client(s);
            tls.write_all(request.as_bytes()).unwrap();
            let _ = tls.read_to_string(&mut resp);
        } else {
            s.write_all(request.as_bytes()).unwrap();
            s.read_to_string(&mut resp).unwrap();
        }
        resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }

    /// One integer counter from the state.
    pub fn counter(&self, name: &str) -> i64 {
        let st = self.state();
        let key = format!("\"{name}\":");
        let at = st.find(&key).unwrap_or_else(|| panic!("no {name} in {st}")) + key.len();
        st[at..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '-')
            .collect::<String>()
            .parse()
            .unwrap()
    }

    /// Requests of one WS-Man action (`Send`, `Receive`, ...) the endpoint answered so far.
    pub fn action(&self, name: &str) -> i64 {
        let state = self.state();
        let Some(at) = state.find("\"actions\":") else { panic!("no actions in {state}") };
        let actions = &state[at..];
        let key = format!("\"{name}\":");
        match actions.find(&key) {
            None => 0,
            Some(k) => actions[k + key.len()..]
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap(),
        }
    }

    /// Logons the endpoint recorded so far (one per authenticated connection).
    pub fn logons(&self) -> usize {
        self.state().matches("\"mechanism\":").count()
    }

    /// Waits until `name` reaches `want` (background cleanup runs asynchronously).
    pub fn wait_counter(&self, name: &str, want: i64) -> i64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.counter(name);
            if v == want || Instant::now() > deadline {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A TLS client stream trusting the test CA, for the control URL of https endpoints.
fn tls_client(tcp: TcpStream) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_file_iter(cert("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// Waits up to `timeout` for the first line `child` prints; the rest of its output is drained in
/// the background so it never blocks on a full pipe. Kills the child and panics if no line comes.
pub fn first_line(child: &mut Child, timeout: Duration, what: &str) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let mut r = BufReader::new(stdout);
        let _ = r.read_line(&mut line);
        let _ = tx.send(line);
        let mut sink = Vec::new();
        let _ = r.read_to_end(&mut sink);
    });
    match rx.recv_timeout(timeout) {
        Ok(line) if !line.is_empty() => line.trim().to_owned(),
        _ => {
            let _ = child.kill();
            panic!("{what} printed nothing within {timeout:?}");
        }
    }
}

/// SIGTERM (so the child can stop its own children), then SIGKILL after five seconds.
pub fn stop_child(child: &mut Child) {
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Runs a future on psremote's runtime. A watchdog aborts the test binary after two minutes so
/// that a hang is reported instead of stalling the suite.
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = Arc::new(AtomicBool::new(false));
    let flag = done.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if flag.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("test hung for 120 s; aborting");
        std::process::abort();
    });
    let out = psremote::client::runtime().block_on(fut);
    done.store(true, Ordering::Relaxed);
    out
}

/// A throwaway MIT Kerberos realm (`python -m psremote_testserver.kdc`), stopped on drop.
pub struct Realm {
    child: Child,
    _dir: TempDir,
    pub realm: String,
    /// `127.0.0.1:PORT`, UDP and TCP.
    pub kdc: String,
    pub krb5_conf: PathBuf,
    pub keytab: PathBuf,
}

impl Realm {
    pub fn start() -> Self {
        let dir = TempDir::new("realm");
        let mut child = Command::new(python())
            .args(["-m", "psremote_testserver.kdc"])
            .arg(&dir.0)
            .current_dir(workspace_root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the test KDC (run `make venv` first)");
        let line = first_line(&mut child, Duration::from_secs(60), "the test KDC");
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => {
                let _ = child.kill();
                panic!("the test KDC did not start (printed {line:?})");
            }
        };
        let s = |k: &str| v[k].as_str().unwrap().to_owned();
        Realm {
            realm: s("realm"),
            kdc: s("kdc"),
            krb5_conf: PathBuf::from(s("krb5_conf")),
            keytab: PathBuf::from(s("keytab")),
            child,
            _dir: dir,
        }
    }
}

impl Drop for Realm {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}

/// A configuration for `ep` as most tests use it: NTLM (the endpoint is http on 127.0.0.1, named
/// as a trusted host) with message encryption.
pub fn ntlm_config(ep: &Endpoint) -> psremote::client::ClientConfig {
    psremote::client::ClientConfig::new("x", DOMAIN_USER, PASSWORD)
        .with_url(&ep.url)
        .unwrap()
        .with_trusted_hosts(["127.0.0.1"])
        .with_mechanism(psremote::auth::Mechanism::Ntlm)
}
